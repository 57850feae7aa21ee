//! The CUDA backend against the CPU backend on whole models: the golden fixtures (converted by
//! llama.cpp: GQA, llama3 rope scaling, qwen2 biases) and synthetic models of SmolLM2's real
//! shapes in several weight types. Runs only with `--features cuda`; without a GPU it prints
//! why and passes, unless NEXUS_REQUIRE_CUDA=1 makes an absent GPU a failure.
#![cfg(feature = "cuda")]

use std::path::Path;
use std::sync::atomic::AtomicBool;

use nexus_convert::quantize::QuantType;
use nexus_runtime::generate::{generate, GenerateParams};
use nexus_runtime::kv_cache::CacheTypes;
use nexus_runtime::model::{CudaModel, Logits, Model};
use nexus_runtime::sampling::{Sampler, SamplingParams};
use nexus_runtime::tokenizer::Tokenizer;
use nexus_tests::root;

fn gpu_available() -> bool {
    match nexus_kernels::cuda::device_count() {
        Ok(n) if n > 0 => true,
        other if std::env::var_os("NEXUS_REQUIRE_CUDA").is_some() => {
            panic!("NEXUS_REQUIRE_CUDA is set but no GPU is usable: {other:?}")
        }
        other => {
            eprintln!("skipped: no CUDA device ({other:?})");
            false
        }
    }
}

fn argmax(v: &[f32]) -> (usize, f32) {
    let mut best = 0;
    for (i, &x) in v.iter().enumerate() {
        if x > v[best] {
            best = i;
        }
    }
    let second = v.iter().enumerate().filter(|&(i, _)| i != best).map(|(_, &x)| x).fold(f32::MIN, f32::max);
    (best, v[best] - second)
}

/// Greedy on the CPU for `steps` tokens, then the GPU teacher-forced along the same tokens:
/// logits must agree within `tol` (relative to the largest |logit|), the picked token must agree
/// wherever the CPU's top-2 gap exceeds twice the measured difference, and the GPU's own
/// greedy run (kept on the device) must follow the CPU's text up to the first near-tie.
fn compare(path: &Path, prompt: &[u32], steps: usize, tol: f32) {
    compare_with(path, prompt, steps, tol, CacheTypes::default())
}

/// [`compare`] with the KV cache stored as `types` on both backends (where `types` says
/// nothing: f32 on the CPU, f16 on the GPU).
fn compare_with(path: &Path, prompt: &[u32], steps: usize, tol: f32, types: CacheTypes) {
    let model = Model::load(path).unwrap();
    let n_ctx = prompt.len() + steps + 1;
    let mut cache = model.new_cache_typed(n_ctx, types).unwrap();
    let mut tokens = prompt.to_vec();
    let mut cpu_logits = Vec::new();
    let mut logits = model.forward(prompt, &mut cache, Logits::Last).unwrap();
    for _ in 0..steps {
        let (id, _) = argmax(&logits);
        cpu_logits.push(logits.clone());
        tokens.push(id as u32);
        logits = model.forward(&[id as u32], &mut cache, Logits::Last).unwrap();
    }
    let mut gpu = CudaModel::load(&model, n_ctx, 0, types).unwrap();
    // Teacher-forced through the one-token decode graph (what generation runs); the batched
    // prompt path is checked against it in `prefill_matches_token_by_token_decode`.
    gpu.set_batched_prompts(false);
    let all = gpu.forward(&tokens[..tokens.len() - 1], Logits::All).unwrap();
    gpu.set_batched_prompts(true);
    let nv = model.config.n_vocab;
    let mut worst = 0f32;
    let mut first_tie = steps;
    for (s, cpu) in cpu_logits.iter().enumerate() {
        let g = &all[(prompt.len() - 1 + s) * nv..(prompt.len() + s) * nv];
        let scale = cpu.iter().fold(0f32, |m, v| m.max(v.abs())).max(1e-6);
        let diff = cpu.iter().zip(g).fold(0f32, |m, (a, b)| m.max((a - b).abs()));
        assert!(g.iter().all(|v| v.is_finite()), "{}: step {s}: non-finite GPU logits", path.display());
        worst = worst.max(diff / scale);
        let (cpu_id, gap) = argmax(cpu);
        let (gpu_id, _) = argmax(g);
        if gap > 2.0 * diff {
            assert_eq!(gpu_id, cpu_id, "{}: step {s}: GPU picks {gpu_id}, CPU {cpu_id} (gap {gap}, diff {diff})", path.display());
        } else {
            first_tie = first_tie.min(s);
        }
    }
    assert!(worst <= tol, "{}: logits differ by {worst:.2e} of the largest (bound {tol:.0e})", path.display());
    gpu.truncate(0);
    gpu.forward(&prompt[..prompt.len() - 1], Logits::Last).unwrap();
    let greedy = gpu.generate_greedy(prompt[prompt.len() - 1], steps).unwrap();
    let agree = greedy.iter().zip(&tokens[prompt.len()..]).take_while(|(a, b)| a == b).count();
    assert!(agree >= first_tie, "{}: device greedy leaves the CPU's text at step {agree}, before the first near-tie at {first_tie}", path.display());
    // The generation loop on the GPU takes the device's argmax (`Decoder::forward_argmax`):
    // from the same prompt state it must give exactly the device's greedy run.
    if let Ok(tok) = Tokenizer::from_gguf(model.file()) {
        gpu.truncate(0);
        gpu.set_batched_prompts(false);
        let params = GenerateParams { max_tokens: Some(steps), sampling: SamplingParams::greedy(), stop: Vec::new() };
        let g = generate(&mut gpu, &tok, prompt, &params, &AtomicBool::new(false), |_| {}).unwrap();
        gpu.truncate(0);
        let first = Sampler::greedy(&gpu.forward(prompt, Logits::Last).unwrap());
        let mut want = vec![first];
        want.extend(gpu.generate_greedy(first, steps - 1).unwrap());
        gpu.set_batched_prompts(true);
        assert!(!g.tokens.is_empty());
        assert_eq!(g.tokens[..], want[..g.tokens.len()], "{}: generate() on the GPU", path.display());
    }
    eprintln!(
        "{} ({types:?}): {steps} steps, max logit difference {worst:.2e} of the largest, greedy identical for {agree} steps (first near-tie at {first_tie})",
        path.file_name().unwrap().to_string_lossy()
    );
}

/// Max |a − b| over the largest |b|.
fn rel(a: &[f32], b: &[f32]) -> f32 {
    let scale = b.iter().fold(0f32, |m, v| m.max(v.abs())).max(1e-6);
    a.iter().zip(b).fold(0f32, |m, (x, y)| m.max((x - y).abs())) / scale
}

/// `prompt` and then one more token through the batched prompt path (as `gpu` is set) and
/// through the decode graph, from an empty cache each time: the logits of every prompt
/// position, then of the next step (which reads the cache the prompt left). Returns
/// `(prompt, next)` as (batched, decode graph) pairs.
#[allow(clippy::type_complexity)]
fn prefill_and_decode(gpu: &mut CudaModel, prompt: &[u32]) -> ((Vec<f32>, Vec<f32>), (Vec<f32>, Vec<f32>)) {
    gpu.truncate(0);
    let batched = gpu.forward(prompt, Logits::All).unwrap();
    let next_batched = gpu.forward(&[7], Logits::Last).unwrap();
    gpu.truncate(0);
    gpu.set_batched_prompts(false);
    let stepped = gpu.forward(prompt, Logits::All).unwrap();
    let next_stepped = gpu.forward(&[7], Logits::Last).unwrap();
    gpu.set_batched_prompts(true);
    ((batched, stepped), (next_batched, next_stepped))
}

/// A Q8_0 cache on the GPU (keys, values or both) against the CPU with the same cache: the
/// device stores the bytes the CPU stores for the same values and, with Q8_0 keys, rounds the
/// query through Q8_0 as the CPU does. Then the batched prompt path over such a cache against
/// the decode graph.
#[test]
fn q8_0_caches_match_the_cpu_with_the_same_cache() {
    if !gpu_available() {
        return;
    }
    use nexus_runtime::kv_cache::KvType::{F16, Q8_0};
    let dir = tempfile::tempdir().unwrap();
    let cfg = nexus_convert::synth::config("smollm2-135m").unwrap();
    let path = dir.path().join("smollm2-f16.gguf");
    nexus_convert::synth::synth(cfg, QuantType::from_name("f16").unwrap(), &path, 5).unwrap();
    let prompt = [1, 200, 3000, 17, 9000, 45000, 12];
    for (k, v) in [(Q8_0, Q8_0), (Q8_0, F16), (F16, Q8_0)] {
        let types = CacheTypes { k: Some(k), v: Some(v) };
        // The same bound as f16 weights with an f16 cache on both sides would need: the
        // products still sum in different orders, and a value near a rounding boundary of
        // its Q8_0 block moves a whole step on one side only.
        compare_with(&path, &prompt, 64, 5e-2, types);

        let model = Model::load(&path).unwrap();
        let long: Vec<u32> = (0..40).map(|i| (i * 37 + 5) % model.config.n_vocab as u32).collect();
        let mut gpu = CudaModel::load(&model, 64, 0, types).unwrap();
        assert_eq!(gpu.cache_types(), (k, v));
        let ((batched, stepped), (next_batched, next_stepped)) = prefill_and_decode(&mut gpu, &long);
        let (all, next) = (rel(&batched, &stepped), rel(&next_batched, &next_stepped));
        assert!(all <= 5e-2 && next <= 5e-2, "{types:?}: prefill vs decode {all:.2e}, next step {next:.2e}");
        eprintln!("{types:?}: prefill vs decode {all:.2e}, next step {next:.2e}");
    }
}

#[test]
fn golden_fixtures_match_cpu() {
    if !gpu_available() {
        return;
    }
    for name in ["llama-spm-gqa.f32", "llama-spm-gqa.f16", "llama-spm-gqa.q8_0", "llama3-scaled.f32", "qwen2-bias.f32"] {
        let path = root().join(format!("tests/fixtures/golden/{name}.gguf"));
        // The GPU's KV cache is f16 (the CPU's f32): rounding the CPU's cache to f16 alone
        // moves these logits by 1.9e-3–3.8e-3 (measured). With Q8_0 weights both quantize
        // activations to 8 bits, and a sum rounded differently before that moves a whole
        // quantization step: the CPU itself is 7.2e-2 from transformers on this file.
        let tol = if name.ends_with("q8_0") { 8e-2 } else { 5e-3 };
        compare(&path, &[1, 15, 27, 3, 99, 42], 64, tol);
    }
}

#[test]
fn synthetic_smollm2_shapes_match_cpu() {
    if !gpu_available() {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let cfg = nexus_convert::synth::config("smollm2-135m").unwrap();
    for ty in ["q4_1", "q8_0", "q4_k_m", "f16", "q6_k", "q4_0"] {
        let path = dir.path().join(format!("smollm2-{ty}.gguf"));
        nexus_convert::synth::synth(cfg, QuantType::from_name(ty).unwrap(), &path, 5).unwrap();
        // Random weights give flat logits; the CPU quantizes activations per 256 for K-quants
        // and per 32 on the GPU, so the bound is relative to the largest logit.
        compare(&path, &[1, 200, 3000, 17, 9000, 45000, 12], 64, 5e-2);
    }
}

/// The batched prompt path (f16 GEMMs, causal prefill attention) against the one-token decode
/// graph on the same prompt, which the tests above check against the CPU: the logits of every
/// position, and the cache they leave behind (the next decode step reads it).
#[test]
fn prefill_matches_token_by_token_decode() {
    if !gpu_available() {
        return;
    }
    for name in ["llama-spm-gqa.f32", "llama-spm-gqa.f16", "llama-spm-gqa.q8_0", "llama3-scaled.f32", "qwen2-bias.f32"] {
        let path = root().join(format!("tests/fixtures/golden/{name}.gguf"));
        let model = Model::load(&path).unwrap();
        let prompt: Vec<u32> = (0..40).map(|i| (i * 37 + 5) % model.config.n_vocab as u32).collect();
        let mut gpu = CudaModel::load(&model, 64, 0, CacheTypes::default()).unwrap();
        let ((batched, stepped), (next_batched, next_stepped)) = prefill_and_decode(&mut gpu, &prompt);
        let (all, next) = (rel(&batched, &stepped), rel(&next_batched, &next_stepped));
        // f16 GEMM inputs (weights and activations rounded to f16) against 8-bit (or f32)
        // decode activations; for Q8_0 the bound is the CPU's own distance from transformers
        // on this file (7.2e-2), since both sides differ from exact by about that much.
        let tol = if name.ends_with("q8_0") { 8e-2 } else { 1e-2 };
        assert!(all <= tol && next <= tol, "{name}: prefill vs decode {all:.2e}, next step {next:.2e} (bound {tol:.0e})");
        eprintln!("{name}: prefill vs decode {all:.2e}, next step {next:.2e}");
        if name.ends_with("q8_0") {
            // The int8 GEMM instead of cuBLAS: 8-bit activations, as the decode mat-vec's.
            gpu.set_int8_gemm(true);
            let ((int8, stepped), (next_int8, next_stepped)) = prefill_and_decode(&mut gpu, &prompt);
            gpu.set_int8_gemm(false);
            let (all, next) = (rel(&int8, &stepped), rel(&next_int8, &next_stepped));
            assert!(all <= tol && next <= tol, "{name}: int8 GEMM prefill vs decode {all:.2e}, next step {next:.2e} (bound {tol:.0e})");
            eprintln!("{name}: int8 GEMM prefill vs decode {all:.2e}, next step {next:.2e}");
        }
    }
}

/// Sampling candidates picked on the device (`step_top_k`) are exactly each 1024-logit slice's
/// k best of the logits the same step gives to the host (`nexus_kernels::ops::slice_top_k`),
/// and the sampler draws the same tokens from them as from the whole logits.
#[test]
fn top_k_candidates_on_the_device_match_the_logits() {
    if !gpu_available() {
        return;
    }
    let path = root().join("tests/fixtures/golden/llama-spm-gqa.f32.gguf");
    let model = Model::load(&path).unwrap();
    let prompt: Vec<u32> = (0..12).map(|i| (i * 37 + 5) % model.config.n_vocab as u32).collect();
    let mut gpu = CudaModel::load(&model, 64, 0, CacheTypes::default()).unwrap();
    gpu.forward(&prompt, Logits::Last).unwrap();
    let at = gpu.len();
    for (step, k) in [1usize, 40, 128].into_iter().enumerate() {
        let token = 11 + step as u32;
        let logits = gpu.forward(&[token], Logits::Last).unwrap();
        gpu.truncate(at);
        let cands = gpu.step_top_k(token, k).unwrap();
        gpu.truncate(at);
        let want = nexus_kernels::ops::slice_top_k(&logits, k);
        assert_eq!(cands.len(), want.len(), "k = {k}");
        for (g, w) in cands.iter().zip(&want) {
            assert!(g.0 == w.0 && g.1.to_bits() == w.1.to_bits(), "k = {k}: {g:?} vs {w:?}");
        }
        // And the sampler draws the same token from them as from the logits.
        let params = SamplingParams { seed: 3 + step as u64, top_k: k, ..SamplingParams::default() };
        let (mut a, mut b) = (Sampler::new(params.clone()), Sampler::new(params));
        for _ in 0..20 {
            assert_eq!(a.sample_candidates(&cands), b.sample(&logits, &[]));
        }
    }
    assert!(gpu.step_top_k(1, nexus_runtime::model::DEVICE_TOP_K_MAX + 1).is_err());
}
