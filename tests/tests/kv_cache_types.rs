//! KV caches in f16 and Q8_0 (`--cache-type-k/-v`) against the float64 reference whose keys
//! and values are rounded the same way, and their errors.

use half::f16;
use nexus_kernels::{dequantize_row, quantize_activation_row, GgmlType};
use nexus_runtime::gguf::GgufFile;
use nexus_runtime::kv_cache::{CacheTypes, KvType};
use nexus_runtime::model::{Logits, Model};
use nexus_tests::reference::{forward_f64, forward_f64_kv_rounded};
use nexus_tests::{smollm2_path, TinyModel};

/// A tiny llama with heads of 32 (one Q8_0 block), 4 query heads on 2 KV heads.
fn tiny(dir: &std::path::Path) -> std::path::PathBuf {
    let path = dir.join("tiny.gguf");
    TinyModel { n_embd: 128, n_head: 4, n_head_kv: 2, n_ff: 160, seed: 11, ..TinyModel::default() }.write(&path);
    path
}

/// What storing a row as `ty` does to it: the cache's own rounding, in f64.
fn round_as(ty: KvType, row: &mut [f64]) {
    let x: Vec<f32> = row.iter().map(|&v| v as f32).collect();
    let back: Vec<f32> = match ty {
        KvType::F32 => x,
        KvType::F16 => x.iter().map(|&v| f16::from_f32(v).to_f32()).collect(),
        KvType::Q8_0 => {
            let mut q = vec![0u8; x.len() / 32 * 34];
            quantize_activation_row(GgmlType::Q8_0, &x, &mut q).unwrap();
            let mut out = vec![0f32; x.len()];
            dequantize_row(GgmlType::Q8_0, &q, &mut out).unwrap();
            out
        }
    };
    row.iter_mut().zip(back).for_each(|(r, b)| *r = b as f64);
}

/// Max |ours − reference| over the largest |reference| logit.
fn rel_err(ours: &[f32], reference: &[Vec<f64>]) -> f64 {
    let v = reference[0].len();
    let (mut diff, mut scale) = (0f64, 0f64);
    for (t, want) in reference.iter().enumerate() {
        for (a, b) in ours[t * v..(t + 1) * v].iter().zip(want) {
            diff = diff.max((*a as f64 - b).abs());
            scale = scale.max(b.abs());
        }
    }
    diff / scale
}

fn logits(model: &Model, types: CacheTypes, tokens: &[u32]) -> Vec<f32> {
    let mut cache = model.new_cache_typed(tokens.len(), types).unwrap();
    model.forward(tokens, &mut cache, Logits::All).unwrap()
}

/// Each cache type runs the function the reference computes with its rounding — keys and
/// values stored as the type, and with Q8_0 keys the query rounded to Q8_0 for the dot
/// product, as llama.cpp's CPU backend does — up to f32 arithmetic; and the rounding is really
/// applied: a quantized cache's logits are further from the unrounded reference.
#[test]
fn each_cache_type_matches_the_reference_with_its_rounding() {
    let dir = tempfile::tempdir().unwrap();
    let path = tiny(dir.path());
    let (file, model) = (GgufFile::open(&path).unwrap(), Model::load(&path).unwrap());
    let tokens: Vec<u32> = (0..40).map(|i| (i * 37 + 5) % 300).collect();
    let exact = forward_f64(&file, &tokens);
    assert!(rel_err(&logits(&model, CacheTypes::default(), &tokens), &exact) < 1e-5);
    use KvType::*;
    // Bounds a few times the measured errors (printed). An f16 store is looser: the values
    // reaching it are our f32 products, the reference's f64 ones rounded to f32, and the few
    // that differ in the last f32 bit near an f16 rounding boundary land a whole f16 step
    // apart (measured 5e-6–2e-4; Q8_0's steps are 256× coarser, so this happens far less).
    for (k, v, bound) in [(F32, F16, 5e-4), (F16, F32, 5e-4), (F16, F16, 5e-4), (Q8_0, Q8_0, 1e-5), (Q8_0, F16, 5e-4), (F32, Q8_0, 1e-5), (F16, Q8_0, 5e-4)] {
        let ours = logits(&model, CacheTypes { k: Some(k), v: Some(v) }, &tokens);
        // The query meets keys in the row kernel's activation format: Q8_0 for Q8_0 keys, f32
        // (exact here) for f16 ones.
        let q_as = if k == Q8_0 { Q8_0 } else { F32 };
        let reference = forward_f64_kv_rounded(
            &file,
            &tokens,
            &|r: &mut [f64]| round_as(q_as, r),
            &|r: &mut [f64]| round_as(k, r),
            &|r: &mut [f64]| round_as(v, r),
        );
        let (err, err_exact) = (rel_err(&ours, &reference), rel_err(&ours, &exact));
        eprintln!("k {} v {}: against the rounded reference {err:.1e}, the exact one {err_exact:.1e}", k.name(), v.name());
        assert!(err < bound, "k {} v {}: {err}", k.name(), v.name());
        assert!(err_exact > 2.0 * err, "k {} v {}: rounding not visible ({err_exact} vs {err})", k.name(), v.name());
    }
}

/// A prompt run in one batch and the same tokens decoded one at a time read the same cache
/// rows: with a Q8_0 cache the last position's logits agree closely (the projections' batch
/// and single-token kernels differ in the last bits, as with an f32 cache).
#[test]
fn decoding_a_token_at_a_time_reads_the_same_q8_0_cache() {
    let dir = tempfile::tempdir().unwrap();
    let model = Model::load(tiny(dir.path())).unwrap();
    let tokens: Vec<u32> = (0..24).map(|i| (i * 53 + 3) % 300).collect();
    let types = CacheTypes { k: Some(KvType::Q8_0), v: Some(KvType::Q8_0) };
    let batch = logits(&model, types, &tokens);
    let mut cache = model.new_cache_typed(tokens.len(), types).unwrap();
    let mut last = Vec::new();
    for &t in &tokens {
        last = model.forward(&[t], &mut cache, Logits::Last).unwrap();
    }
    let v = model.config.n_vocab;
    let want = &batch[(tokens.len() - 1) * v..];
    let scale = want.iter().fold(0f32, |m, x| m.max(x.abs()));
    let diff = last.iter().zip(want).fold(0f32, |m, (a, b)| m.max((a - b).abs()));
    assert!(diff / scale < 1e-3, "{diff} / {scale}");
}

#[test]
fn a_cache_type_the_model_cannot_hold_is_a_clear_error() {
    let err = KvType::parse("q4_0").unwrap_err().to_string();
    assert!(err.contains("q4_0") && err.contains("f32, f16 or q8_0"), "{err}");
    assert_eq!(KvType::parse("Q8_0").unwrap(), KvType::Q8_0);
    // Heads of 16: not one Q8_0 block.
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("h16.gguf");
    TinyModel::default().write(&path);
    let model = Model::load(&path).unwrap();
    let err = model.new_cache_typed(8, CacheTypes { k: None, v: Some(KvType::Q8_0) }).err().unwrap().to_string();
    assert!(err.contains("q8_0") && err.contains("32") && err.contains("16"), "{err}");
    assert!(model.new_cache_typed(8, CacheTypes { k: Some(KvType::F16), v: Some(KvType::F16) }).is_ok());
}

/// SmolLM2 (`models/fetch.sh`): a Q8_0 cache against the f32 one over a prompt, and against
/// the exact reference, printed for docs/PERF.md.
#[test]
fn smollm2_with_a_q8_0_cache_stays_near_the_f32_cache() {
    let Some(path) = smollm2_path() else { return };
    let (file, model) = (GgufFile::open(&path).unwrap(), Model::load(&path).unwrap());
    let tokenizer = nexus_runtime::tokenizer::Tokenizer::from_gguf(&file).unwrap();
    let tokens = tokenizer.encode("The quick brown fox jumps over the lazy dog because it wanted to see the river", true, true);
    let f32_cache = logits(&model, CacheTypes::default(), &tokens);
    let q8 = logits(&model, CacheTypes { k: Some(KvType::Q8_0), v: Some(KvType::Q8_0) }, &tokens);
    let v = model.config.n_vocab;
    let argmax = |x: &[f32]| (0..v).max_by(|&i, &j| x[i].total_cmp(&x[j])).unwrap();
    let same = (0..tokens.len()).filter(|&t| argmax(&f32_cache[t * v..(t + 1) * v]) == argmax(&q8[t * v..(t + 1) * v])).count();
    let as_rows: Vec<Vec<f64>> = f32_cache.chunks(v).map(|r| r.iter().map(|&x| x as f64).collect()).collect();
    let err = rel_err(&q8, &as_rows);
    eprintln!("SmolLM2 Q4_1, {} tokens: q8_0 cache vs f32 cache max relative error {err:.2e}, argmax equal at {same}", tokens.len());
    // Measured 6.5e-2 (SmolLM2's keys have large outliers that a 32-value block rounds
    // coarsely; the Q4_1 weights' own activation rounding costs 5e-2, tests/float_reference.rs).
    assert!(err < 0.15, "{err}");
    assert!(same + 1 >= tokens.len(), "argmax equal at {same} of {}", tokens.len());
}
