//! The forward pass on tiny random models written by our own writer: KV-cache consistency,
//! quantized-vs-F32 agreement, and bad model files.

use nexus_kernels::GgmlType;
use nexus_runtime::model::{Logits, Model, ModelError};
use nexus_tests::TinyModel;

fn load(m: &TinyModel) -> (tempfile::TempDir, Model) {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("tiny.gguf");
    m.write(&path);
    let model = Model::load(&path).unwrap();
    (dir, model)
}

fn max_rel_err(a: &[f32], b: &[f32]) -> f32 {
    let scale = b.iter().fold(0f32, |m, x| m.max(x.abs()));
    a.iter().zip(b).fold(0f32, |m, (x, y)| m.max((x - y).abs())) / scale
}

const PROMPT: [u32; 11] = [5, 17, 200, 33, 33, 290, 1, 0, 64, 128, 7];

#[test]
fn decoding_token_by_token_equals_one_prefill() {
    for arch in ["llama", "qwen2"] {
        let (_d, model) = load(&TinyModel { arch, ..Default::default() });
        let v = model.config.n_vocab;
        let mut cache = model.new_cache(64);
        let all = model.forward(&PROMPT, &mut cache, Logits::All).unwrap();
        assert_eq!(all.len(), PROMPT.len() * v);
        assert_eq!(cache.len(), PROMPT.len());

        let mut cache = model.new_cache(64);
        for (t, &id) in PROMPT.iter().enumerate() {
            let step = model.forward(&[id], &mut cache, Logits::Last).unwrap();
            let err = max_rel_err(&step, &all[t * v..(t + 1) * v]);
            assert!(err < 1e-5, "{arch}: position {t} differs by {err}");
        }

        // A prefix in one batch, the rest in another: the same again.
        let mut cache = model.new_cache(64);
        model.forward(&PROMPT[..4], &mut cache, Logits::Last).unwrap();
        let rest = model.forward(&PROMPT[4..], &mut cache, Logits::All).unwrap();
        assert!(max_rel_err(&rest, &all[4 * v..]) < 1e-5);
    }
}

#[test]
fn long_prompts_are_processed_in_chunks_with_the_same_result() {
    let m = TinyModel { n_ctx: 1200, n_layer: 1, ..Default::default() };
    let (_d, model) = load(&m);
    let tokens: Vec<u32> = (0..600).map(|i| (i * 37 % 299) as u32).collect();
    let mut cache = model.new_cache(700);
    let last = model.forward(&tokens, &mut cache, Logits::Last).unwrap();
    let mut cache = model.new_cache(700);
    model.forward(&tokens[..599], &mut cache, Logits::Last).unwrap();
    let step = model.forward(&tokens[599..], &mut cache, Logits::Last).unwrap();
    assert!(max_rel_err(&last, &step) < 1e-5);
}

#[test]
fn quantized_weights_stay_close_to_f32() {
    let base = TinyModel { n_embd: 256, n_ff: 512, n_head: 4, n_head_kv: 2, ..Default::default() };
    let (_d, f32_model) = load(&base);
    let mut cache = f32_model.new_cache(32);
    let reference = f32_model.forward(&PROMPT, &mut cache, Logits::All).unwrap();
    // Bounds relative to the largest logit, about twice what was measured (errors printed);
    // the tolerances against transformers are in the golden tests.
    for (ty, bound) in [(GgmlType::F16, 2e-3), (GgmlType::Q8_0, 4e-2), (GgmlType::Q4_0, 0.4), (GgmlType::Q4_K, 0.3), (GgmlType::Q6_K, 8e-2)] {
        let (_d, model) = load(&TinyModel { ty, ..base.clone() });
        let mut cache = model.new_cache(32);
        let logits = model.forward(&PROMPT, &mut cache, Logits::All).unwrap();
        let err = max_rel_err(&logits, &reference);
        eprintln!("{ty}: max relative logit error {err}");
        assert!(err < bound, "{ty}: relative error {err} over {bound}");
        assert!(err > 0.0 || ty == GgmlType::F32, "{ty}: identical to f32 is suspicious");
    }
}

#[test]
fn context_overflow_and_bad_token_are_errors() {
    let (_d, model) = load(&TinyModel::default());
    let mut cache = model.new_cache(4);
    let e = model.forward(&PROMPT, &mut cache, Logits::Last).unwrap_err();
    assert!(matches!(e, ModelError::ContextOverflow { needed: 11, capacity: 4 }), "{e}");
    let mut cache = model.new_cache(4);
    let e = model.forward(&[1, 5000], &mut cache, Logits::Last).unwrap_err();
    assert!(matches!(e, ModelError::BadToken { id: 5000, .. }), "{e}");
    assert_eq!(cache.len(), 0, "a refused batch leaves the cache as it was");
}

/// Writes a tiny model with keys/tensors left out or changed, and returns the load error text.
fn load_error(m: &TinyModel, skip: &[&str]) -> String {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("broken.gguf");
    m.writer(skip).write(&path).unwrap();
    let msg = Model::load(&path).err().expect("loading must fail").to_string();
    assert!(msg.contains("broken.gguf"), "the error must name the file: {msg}");
    msg
}

#[test]
fn bad_model_files_give_errors_naming_the_problem() {
    let m = TinyModel::default();
    let msg = load_error(&m, &["llama.block_count"]);
    assert!(msg.contains("llama.block_count"), "{msg}");
    let msg = load_error(&m, &["blk.1.ffn_up.weight"]);
    assert!(msg.contains("blk.1.ffn_up.weight"), "{msg}");
    let msg = load_error(&TinyModel { arch: "qwen2", ..m.clone() }, &["blk.0.attn_k.bias"]);
    assert!(msg.contains("blk.0.attn_k.bias"), "{msg}");
    let msg = load_error(&TinyModel { arch: "gpt-j", ..m.clone() }, &[]);
    assert!(msg.contains("gpt-j") && msg.contains("not supported"), "{msg}");

    // Shape mismatch: metadata says 3 KV heads, the tensors were made for 2.
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("broken.gguf");
    let mut w = m.writer(&[]);
    w.set("llama.attention.head_count_kv", nexus_runtime::gguf::Value::U32(1));
    w.write(&path).unwrap();
    let msg = Model::load(&path).err().unwrap().to_string();
    assert!(msg.contains("broken.gguf") && msg.contains("attn_k.weight") && msg.contains("shape"), "{msg}");
}
