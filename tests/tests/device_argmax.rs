//! The generation loop's argmax hook (`Decoder::forward_argmax`, which the CUDA backend
//! implements so greedy decoding reads back one id per token instead of the logits): greedy
//! text through the hook equals the text through the logits, and the hook is used exactly
//! when the sampler is plain greedy. Checked on the CPU with a backend that answers the hook
//! from its own logits; the CUDA backend's own answers are checked in `cuda_model.rs`.

use std::sync::atomic::AtomicBool;

use nexus_runtime::decoder::{CpuDecoder, Decoder};
use nexus_runtime::generate::{generate, GenerateParams};
use nexus_runtime::gguf::GgufFile;
use nexus_runtime::model::{Logits, Model, ModelError};
use nexus_runtime::sampling::{Sampler, SamplingParams};
use nexus_runtime::tokenizer::Tokenizer;
use nexus_tests::root;

/// The CPU backend, answering `forward_argmax` from its logits and counting the calls;
/// `offset` shifts the answer to show that the loop really takes it.
struct ArgmaxCpu<'a> {
    inner: CpuDecoder<'a>,
    calls: usize,
    offset: u32,
}

impl Decoder for ArgmaxCpu<'_> {
    fn forward(&mut self, tokens: &[u32], logits: Logits) -> Result<Vec<f32>, ModelError> {
        self.inner.forward(tokens, logits)
    }
    fn len(&self) -> usize {
        self.inner.len()
    }
    fn capacity(&self) -> usize {
        self.inner.capacity()
    }
    fn truncate(&mut self, len: usize) {
        self.inner.truncate(len);
    }
    fn forward_argmax(&mut self, token: u32) -> Option<Result<u32, ModelError>> {
        self.calls += 1;
        Some(self.inner.forward(&[token], Logits::Last).map(|l| (Sampler::greedy(&l) + self.offset) % l.len() as u32))
    }
}

fn run(model: &Model, tok: &Tokenizer, sampling: SamplingParams, hook: Option<u32>) -> (Vec<u32>, usize) {
    let prompt = [1u32, 15, 27, 3, 99, 42];
    let params = GenerateParams { max_tokens: Some(24), sampling, stop: Vec::new() };
    let mut cache = model.new_cache(64);
    let inner = CpuDecoder { model, cache: &mut cache };
    let cancel = AtomicBool::new(false);
    match hook {
        None => {
            let mut b = inner;
            (generate(&mut b, tok, &prompt, &params, &cancel, |_| {}).unwrap().tokens, 0)
        }
        Some(offset) => {
            let mut b = ArgmaxCpu { inner, calls: 0, offset };
            let g = generate(&mut b, tok, &prompt, &params, &cancel, |_| {}).unwrap();
            (g.tokens, b.calls)
        }
    }
}

#[test]
fn greedy_through_the_argmax_hook_equals_greedy_through_logits() {
    let path = root().join("tests/fixtures/golden/llama-spm-gqa.f32.gguf");
    let model = Model::load(&path).unwrap();
    let tok = Tokenizer::from_gguf(&GgufFile::open(&path).unwrap()).unwrap();

    let (plain, _) = run(&model, &tok, SamplingParams::greedy(), None);
    let (hooked, calls) = run(&model, &tok, SamplingParams::greedy(), Some(0));
    assert!(plain.len() > 2, "too short a generation to compare: {plain:?}");
    assert_eq!(hooked, plain);
    // Every token after the first comes from the hook, and the last one is run too (the cache
    // holds every generated token, as with the logits).
    assert_eq!(calls, plain.len());

    // A hook that answers differently changes the text: the loop does take its answer.
    let (shifted, _) = run(&model, &tok, SamplingParams::greedy(), Some(1));
    assert_eq!(shifted[0], plain[0], "the first token comes from the prompt's logits");
    assert_ne!(shifted, plain);

    // Sampling, or a repetition penalty, needs the logits: the hook stays unused.
    for sampling in [
        SamplingParams { temperature: 0.7, seed: 3, ..SamplingParams::default() },
        SamplingParams { repeat_penalty: 1.3, ..SamplingParams::greedy() },
    ] {
        let (want, _) = run(&model, &tok, sampling.clone(), None);
        let (got, calls) = run(&model, &tok, sampling, Some(1));
        assert_eq!(calls, 0);
        assert_eq!(got, want);
    }
}
