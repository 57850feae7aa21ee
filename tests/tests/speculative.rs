//! Speculative decoding against the target alone: at temperature 0 the tokens must be the
//! target's own, token for token, whatever the draft proposes (a near copy of the target that
//! is mostly right, an unrelated model that is mostly wrong, the distilled student), through
//! the token limit, the end of the context and end-of-generation tokens. Drafts must share the
//! target's vocabulary.

use std::path::Path;
use std::sync::atomic::AtomicBool;
use std::sync::Arc;

use nexus_kernels::GgmlType;
use nexus_runtime::decoder::CpuDecoder;
use nexus_runtime::generate::{generate, Generation, GenerateParams, StopReason};
use nexus_runtime::gguf::GgufFile;
use nexus_runtime::model::{Logits, Model};
use nexus_runtime::sampling::SamplingParams;
use nexus_runtime::speculative::{check_vocabularies, DraftParams, Speculative, SpeculativeError, SpeculativeStats};
use nexus_runtime::tokenizer::Tokenizer;
use nexus_tests::{root, smollm2_path, TinyModel};

fn load(path: &Path) -> (Model, Tokenizer) {
    let file = Arc::new(GgufFile::open(path).unwrap());
    let tokenizer = Tokenizer::from_gguf(&file).unwrap();
    (Model::from_file(file).unwrap(), tokenizer)
}

fn params(max_tokens: usize, temperature: f32, seed: u64) -> GenerateParams {
    GenerateParams {
        max_tokens: Some(max_tokens),
        sampling: SamplingParams { temperature, seed, ..SamplingParams::default() },
        stop: Vec::new(),
    }
}

fn alone(target: &Model, tok: &Tokenizer, prompt: &[u32], n_ctx: usize, params: &GenerateParams) -> Generation {
    let mut cache = target.new_cache(n_ctx);
    let mut backend = CpuDecoder { model: target, cache: &mut cache };
    generate(&mut backend, tok, prompt, params, &AtomicBool::new(false), |_| {}).unwrap()
}

#[allow(clippy::too_many_arguments)]
fn speculative(
    target: &Model,
    draft: &Model,
    tok: &Tokenizer,
    prompt: &[u32],
    n_ctx: usize,
    params: &GenerateParams,
    draft_params: DraftParams,
) -> (Generation, SpeculativeStats) {
    let (mut target_cache, mut draft_cache) = (target.new_cache(n_ctx), draft.new_cache(n_ctx));
    let mut target = CpuDecoder { model: target, cache: &mut target_cache };
    let mut draft = CpuDecoder { model: draft, cache: &mut draft_cache };
    let mut spec = Speculative { target: &mut target, draft: &mut draft, params: draft_params };
    let mut streamed = String::new();
    let (generation, stats) = spec.generate(tok, prompt, params, &AtomicBool::new(false), |s| streamed.push_str(s)).unwrap();
    assert_eq!(streamed, generation.text, "the streamed text is the returned text");
    (generation, stats)
}

/// Greedy speculative decoding equals the target alone for each draft setting; returns the
/// summed statistics.
fn assert_greedy_identical(
    target: &Model,
    draft: &Model,
    tok: &Tokenizer,
    prompts: &[Vec<u32>],
    n_ctx: usize,
    max_tokens: usize,
    settings: &[DraftParams],
) -> SpeculativeStats {
    let params = params(max_tokens, 0.0, 0);
    let mut total = SpeculativeStats::default();
    for prompt in prompts {
        let want = alone(target, tok, prompt, n_ctx, &params);
        for setting in settings {
            let (got, stats) = speculative(target, draft, tok, prompt, n_ctx, &params, setting.clone());
            assert_eq!(got.tokens, want.tokens, "prompt {prompt:?}, {setting:?}: {stats:?}");
            assert_eq!(got.text, want.text);
            assert_eq!(got.stats.stop_reason, want.stats.stop_reason);
            total.rounds += stats.rounds;
            total.drafted += stats.drafted;
            total.accepted += stats.accepted;
        }
    }
    eprintln!("{total:?}: acceptance {:.1}%", 100.0 * total.acceptance_rate());
    total
}

fn every_draft_setting() -> Vec<DraftParams> {
    vec![
        DraftParams { max: 16, min: 0, p_min: 0.0 },
        DraftParams { max: 3, min: 0, p_min: 0.0 },
        DraftParams { max: 1, min: 0, p_min: 0.0 },
        DraftParams { max: 5, min: 2, p_min: 0.1 },
        DraftParams::default(),
    ]
}

fn tiny(dir: &Path, name: &str, model: TinyModel) -> (Model, Tokenizer) {
    let path = dir.join(name);
    model.write(&path);
    load(&path)
}

fn tiny_prompts(n_vocab: usize) -> Vec<Vec<u32>> {
    let n = n_vocab as u32 - 1; // the last id is the end-of-generation token
    vec![vec![5, 17, 42], (0..40).map(|i| (i * 37 + 11) % n).collect(), vec![n - 1]]
}

/// The verification forward gives, row for row and bit for bit, the logits of decoding the
/// tokens one at a time: what makes greedy output exact rather than equal up to near ties.
#[test]
fn rowwise_forward_equals_one_token_decoding_bit_for_bit() {
    let dir = tempfile::tempdir().unwrap();
    let mut models: Vec<Model> = [GgmlType::F32, GgmlType::Q8_0, GgmlType::Q4_1]
        .into_iter()
        .map(|ty| tiny(dir.path(), &format!("{ty}.gguf"), TinyModel { ty, ..TinyModel::default() }).0)
        .collect();
    models.extend(smollm2_path().map(|p| load(&p).0));
    let prompt: Vec<u32> = (0..11).map(|i| i * 7 + 1).collect();
    let batch: Vec<u32> = (0..9).map(|i| i * 5 + 2).collect();
    for model in &models {
        let mut cache = model.new_cache(64);
        model.forward(&prompt, &mut cache, Logits::Last).unwrap();
        let rows = model.forward_rowwise(&batch, &mut cache).unwrap();
        cache.truncate(prompt.len());
        for (t, row) in rows.chunks_exact(model.config.n_vocab).enumerate() {
            let one = model.forward(&[batch[t]], &mut cache, Logits::Last).unwrap();
            let bits = |v: &[f32]| v.iter().map(|x| x.to_bits()).collect::<Vec<_>>();
            assert!(bits(row) == bits(&one), "{:?}: row {t} differs from decoding", model.config.arch);
        }
    }
}

#[test]
fn greedy_equals_target_with_good_and_bad_tiny_drafts() {
    let dir = tempfile::tempdir().unwrap();
    let base = TinyModel::default();
    let (target, tok) = tiny(dir.path(), "target.gguf", base.clone());
    // The same weights in Q8_0: agrees with the target most of the time.
    let (close, _) = tiny(dir.path(), "close.gguf", TinyModel { ty: GgmlType::Q8_0, ..base.clone() });
    // Other random weights: almost never agrees.
    let (unrelated, _) = tiny(dir.path(), "unrelated.gguf", TinyModel { seed: 99, ..base.clone() });
    let prompts = tiny_prompts(base.n_vocab);
    let good = assert_greedy_identical(&target, &close, &tok, &prompts, 256, 60, &every_draft_setting());
    let bad = assert_greedy_identical(&target, &unrelated, &tok, &prompts, 256, 60, &every_draft_setting());
    // Both paths of the rule were taken: many drafts kept by one pair, many replaced by the other.
    assert!(good.acceptance_rate() > 0.5, "{good:?}");
    assert!(bad.acceptance_rate() < 0.2 && bad.drafted > 100, "{bad:?}");
}

#[test]
fn greedy_equals_target_up_to_a_full_context() {
    let dir = tempfile::tempdir().unwrap();
    let base = TinyModel::default();
    let (target, tok) = tiny(dir.path(), "target.gguf", base.clone());
    let (close, _) = tiny(dir.path(), "close.gguf", TinyModel { ty: GgmlType::Q8_0, ..base.clone() });
    let prompt: Vec<u32> = (0..20).map(|i| (i * 13 + 3) % 299).collect();
    for n_ctx in [21, 22, 30, 37] {
        let params = params(1000, 0.0, 0);
        let want = alone(&target, &tok, &prompt, n_ctx, &params);
        for setting in every_draft_setting() {
            let (got, _) = speculative(&target, &close, &tok, &prompt, n_ctx, &params, setting);
            assert_eq!(got.tokens, want.tokens, "n_ctx {n_ctx}");
            assert_eq!(got.stats.stop_reason, want.stats.stop_reason, "n_ctx {n_ctx}");
        }
    }
}

#[test]
fn greedy_equals_target_on_golden_models() {
    let golden = root().join("tests/fixtures/golden");
    let (target, tok) = load(&golden.join("llama-spm-gqa.f32.gguf"));
    let (draft, draft_tok) = load(&golden.join("llama-spm-gqa.q8_0.gguf"));
    check_vocabularies((&target, &tok), (&draft, &draft_tok)).unwrap();
    let prompts: Vec<Vec<u32>> =
        ["Hello world", "The capital of France is", "1, 2, 3,"].iter().map(|p| tok.encode(p, true, false)).collect();
    let stats = assert_greedy_identical(&target, &draft, &tok, &prompts, 128, 48, &every_draft_setting());
    assert!(stats.drafted > 0, "{stats:?}");
}

#[test]
fn greedy_equals_smollm2_alone_with_the_student_as_draft() {
    let Some(teacher) = smollm2_path() else { return };
    let student = root().join("models/smollm2-student.q8_0.gguf");
    if !student.exists() {
        eprintln!("skipped: {} is absent", student.display());
        return;
    }
    let (target, tok) = load(&teacher);
    let (draft, draft_tok) = load(&student);
    check_vocabularies((&target, &tok), (&draft, &draft_tok)).unwrap();
    let prompts: Vec<Vec<u32>> = [
        "<|im_start|>user\nWhat is the capital of France?<|im_end|>\n<|im_start|>assistant\n",
        "Once upon a time, there was a little",
    ]
    .iter()
    .map(|p| tok.encode(p, true, true))
    .collect();
    let settings = [DraftParams { max: 16, min: 0, p_min: 0.0 }, DraftParams::default()];
    let stats = assert_greedy_identical(&target, &draft, &tok, &prompts, 512, 64, &settings);
    assert!(stats.accepted > 0, "{stats:?}");
}

#[test]
fn sampling_is_seeded_and_respects_the_token_limit() {
    let dir = tempfile::tempdir().unwrap();
    let base = TinyModel::default();
    let (target, tok) = tiny(dir.path(), "target.gguf", base.clone());
    let (close, _) = tiny(dir.path(), "close.gguf", TinyModel { ty: GgmlType::Q8_0, ..base.clone() });
    // Filters off, so no token is certain and the run cannot end early on an end of generation
    // picked by chance less often than it would without a draft.
    let sampling = SamplingParams { temperature: 1.0, top_k: 0, top_p: 1.0, min_p: 0.0, seed: 5, ..SamplingParams::default() };
    let params = GenerateParams { max_tokens: Some(30), sampling, stop: Vec::new() };
    let prompt = vec![5, 17, 42];
    let setting = DraftParams { max: 4, min: 0, p_min: 0.0 };
    let (a, stats) = speculative(&target, &close, &tok, &prompt, 256, &params, setting.clone());
    let (b, _) = speculative(&target, &close, &tok, &prompt, 256, &params, setting.clone());
    assert_eq!(a.tokens, b.tokens, "same seed, same tokens");
    assert!(a.tokens.len() == 30 || a.stats.stop_reason == StopReason::EndOfGeneration, "{:?}", a.stats);
    assert!(stats.drafted > 0 && stats.accepted > 0, "{stats:?}");
    let reseeded = GenerateParams { sampling: SamplingParams { seed: 6, ..params.sampling.clone() }, ..params.clone() };
    let (c, _) = speculative(&target, &close, &tok, &prompt, 256, &reseeded, setting);
    assert_ne!(a.tokens, c.tokens, "another seed, other tokens");
}

#[test]
fn drafts_with_another_vocabulary_are_refused() {
    let dir = tempfile::tempdir().unwrap();
    let base = TinyModel::default();
    let (target, tok) = tiny(dir.path(), "target.gguf", base.clone());
    let (bigger, bigger_tok) = tiny(dir.path(), "bigger.gguf", TinyModel { n_vocab: 301, ..base.clone() });
    let err = check_vocabularies((&target, &tok), (&bigger, &bigger_tok)).unwrap_err();
    assert!(matches!(err, SpeculativeError::VocabSize { target: 300, draft: 301 }), "{err}");
    // Same size, other texts: llama's SentencePiece vocabulary against qwen2's byte-level one.
    let golden = root().join("tests/fixtures/golden");
    let (llama, llama_tok) = load(&golden.join("llama-spm-gqa.f32.gguf"));
    let (qwen, qwen_tok) = load(&golden.join("qwen2-bias.f32.gguf"));
    match check_vocabularies((&llama, &llama_tok), (&qwen, &qwen_tok)) {
        Err(SpeculativeError::TokenText { id, target, draft }) => assert_ne!(target, draft, "token {id}"),
        Err(SpeculativeError::VocabSize { target, draft }) => assert_ne!(target, draft),
        other => panic!("llama and qwen2 vocabularies accepted as one: {other:?}"),
    }
}
