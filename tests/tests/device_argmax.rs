//! The generation loop's device hooks, which the CUDA backend implements so a token reads back
//! one id (`Decoder::forward_argmax`, greedy) or a few candidates (`Decoder::forward_top_k`,
//! top-k sampling) instead of the logits: text through a hook equals the text through the
//! logits, and each hook is used exactly when the sampler allows it. Checked on the CPU with
//! a backend that answers the hooks from its own logits; the CUDA backend's own answers are
//! checked in `cuda_model.rs`.

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
    top_k_calls: usize,
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
    /// Each slice's k best, as the GPU gives them, listed worst first to show that order does
    /// not matter; `offset` > 0 drops the best candidate, to show the loop takes these.
    fn forward_top_k(&mut self, token: u32, k: usize) -> Option<Result<Vec<(u32, f32)>, ModelError>> {
        self.top_k_calls += 1;
        let offset = self.offset as usize;
        Some(self.inner.forward(&[token], Logits::Last).map(|l| {
            let mut c = nexus_kernels::ops::slice_top_k(&l, k);
            c.sort_by(|a, b| a.1.total_cmp(&b.1));
            c.truncate(c.len() - offset.min(c.len() - 1));
            c
        }))
    }
}

fn run(model: &Model, tok: &Tokenizer, sampling: SamplingParams, hook: Option<u32>) -> (Vec<u32>, usize) {
    let (tokens, calls, _) = run_counted(model, tok, sampling, hook);
    (tokens, calls)
}

/// Tokens generated, and the calls of each hook (argmax, top-k).
fn run_counted(model: &Model, tok: &Tokenizer, sampling: SamplingParams, hook: Option<u32>) -> (Vec<u32>, usize, usize) {
    let prompt = [1u32, 15, 27, 3, 99, 42];
    let params = GenerateParams { max_tokens: Some(24), sampling, stop: Vec::new() };
    let mut cache = model.new_cache(64);
    let inner = CpuDecoder { model, cache: &mut cache };
    let cancel = AtomicBool::new(false);
    match hook {
        None => {
            let mut b = inner;
            (generate(&mut b, tok, &prompt, &params, &cancel, |_| {}).unwrap().tokens, 0, 0)
        }
        Some(offset) => {
            let mut b = ArgmaxCpu { inner, calls: 0, top_k_calls: 0, offset };
            let g = generate(&mut b, tok, &prompt, &params, &cancel, |_| {}).unwrap();
            (g.tokens, b.calls, b.top_k_calls)
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
        SamplingParams { temperature: 0.7, top_k: 0, seed: 3, ..SamplingParams::default() },
        SamplingParams { repeat_penalty: 1.3, ..SamplingParams::greedy() },
    ] {
        let (want, _) = run(&model, &tok, sampling.clone(), None);
        let (got, calls) = run(&model, &tok, sampling, Some(1));
        assert_eq!(calls, 0);
        assert_eq!(got, want);
    }
}

#[test]
fn top_k_sampling_through_the_candidates_hook_equals_sampling_through_logits() {
    let path = root().join("tests/fixtures/golden/llama-spm-gqa.f32.gguf");
    let model = Model::load(&path).unwrap();
    let tok = Tokenizer::from_gguf(&GgufFile::open(&path).unwrap()).unwrap();

    for seed in [3, 4, 5] {
        for top_k in [1, 5, 40] {
            // min-p off so a candidate dropped by the shifted hook below can change the draw.
            let sampling = SamplingParams { temperature: 1.5, top_k, min_p: 0.0, top_p: 1.0, seed, ..SamplingParams::default() };
            let (want, _, _) = run_counted(&model, &tok, sampling.clone(), None);
            let (got, argmax_calls, calls) = run_counted(&model, &tok, sampling, Some(0));
            assert_eq!(got, want, "seed {seed}, top-k {top_k}");
            // Every token after the first came through the hook (an end-of-generation token
            // is not run).
            assert_eq!(argmax_calls, 0);
            assert!(calls > 0 && calls + 1 >= want.len() && calls <= want.len(), "{calls} calls for {} tokens", want.len());
        }
    }
    // A hook that leaves out the best candidate changes the text: the loop takes its answer.
    // (A low temperature, so the best token nearly always wins when it is there.)
    let sampling = SamplingParams { temperature: 0.05, top_k: 5, seed: 3, ..SamplingParams::default() };
    let (want, _, _) = run_counted(&model, &tok, sampling.clone(), None);
    let (got, _, _) = run_counted(&model, &tok, sampling, Some(1));
    assert_ne!(got, want);

    // Top-k off, a repetition penalty or greedy: the candidates hook stays unused.
    for sampling in [
        SamplingParams { temperature: 0.7, top_k: 0, seed: 3, ..SamplingParams::default() },
        SamplingParams { temperature: 0.7, repeat_penalty: 1.3, seed: 3, ..SamplingParams::default() },
        SamplingParams::greedy(),
    ] {
        let (want, _, _) = run_counted(&model, &tok, sampling.clone(), None);
        let (got, _, calls) = run_counted(&model, &tok, sampling, Some(0));
        assert_eq!(calls, 0);
        assert_eq!(got, want);
    }
}
