//! LoRA adapters on the CUDA backend: the decode kernels (`lora_down`, then the `*_lora`
//! mat-vec's epilogue) against a float64 reference on random inputs with odd sizes and ranks,
//! and whole models with adapters attached against the CPU backend with the same adapters, by
//! the decode graph and by the batched prompt path. Runs only with `--features cuda`; without
//! a GPU it prints why and passes, unless NEXUS_REQUIRE_CUDA=1 makes an absent GPU a failure.
#![cfg(feature = "cuda")]

use std::path::{Path, PathBuf};

use nexus_convert::quantize::QuantType;
use nexus_kernels::cuda::{DeviceWeight, Gpu, MatvecJob, MatvecMode};
use nexus_kernels::{dequantize_row, quantize_row, GgmlType};
use nexus_runtime::adapter::LoraAdapter;
use nexus_runtime::gguf::GgufFile;
use nexus_runtime::kv_cache::CacheTypes;
use nexus_runtime::model::{CudaModel, Logits, Model};
use nexus_tests::lora::LoraSpec;
use nexus_tests::root;
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;

fn gpu() -> Option<Gpu> {
    match Gpu::open(0) {
        Ok(g) => Some(g),
        Err(e) if std::env::var_os("NEXUS_REQUIRE_CUDA").is_none() => {
            eprintln!("skipped: {e}");
            None
        }
        Err(e) => panic!("NEXUS_REQUIRE_CUDA is set but the GPU cannot be used: {e}"),
    }
}

fn random(rng: &mut ChaCha8Rng, n: usize, scale: f32) -> Vec<f32> {
    (0..n).map(|_| (rng.gen::<f32>() - 0.5) * 2.0 * scale).collect()
}

/// `v` through `ty` and back: what the device holds of it.
fn roundtrip(ty: GgmlType, v: &[f32], rows: usize) -> (Vec<u8>, Vec<f64>) {
    let cols = v.len() / rows;
    let rb = ty.row_size(cols as u64).unwrap() as usize;
    let mut data = vec![0u8; rows * rb];
    let mut back = vec![0f32; v.len()];
    for r in 0..rows {
        quantize_row(ty, &v[r * cols..(r + 1) * cols], &mut data[r * rb..(r + 1) * rb]).unwrap();
        dequantize_row(ty, &data[r * rb..(r + 1) * rb], &mut back[r * cols..(r + 1) * cols]).unwrap();
    }
    (data, back.into_iter().map(f64::from).collect())
}

fn rel_err(got: &[f64], want: &[f64]) -> f64 {
    let num: f64 = got.iter().zip(want).map(|(g, w)| (g - w).powi(2)).sum();
    let den: f64 = want.iter().map(|w| w * w).sum();
    (num / den.max(1e-300)).sqrt()
}

/// One matrix with and without an adapter, and the f64 update `B·(A·x)` it should add.
struct Case {
    base: DeviceWeight,
    adapted: DeviceWeight,
    rows: usize,
}

/// A random `rows × cols` weight of `ty` and a rank-`rank` pair (scale folded into A, as
/// `CudaModel` uploads it); returns the case and the f64 update for input `xn` (f16 A and B).
fn case(gpu: &Gpu, rng: &mut ChaCha8Rng, ty: GgmlType, rows: usize, cols: usize, rank: usize, xn: &[f64]) -> (Case, Vec<f64>) {
    let w = random(rng, rows * cols, 1.0);
    let (data, _) = roundtrip(ty, &w, rows);
    let a = random(rng, rank * cols, 0.7 / (cols as f32).sqrt());
    let b = random(rng, rows * rank, 1.0);
    let (_, a16) = roundtrip(GgmlType::F16, &a, rank);
    let (_, b16) = roundtrip(GgmlType::F16, &b, rows);
    let u: Vec<f64> = (0..rank).map(|j| (0..cols).map(|c| a16[j * cols + c] * xn[c]).sum()).collect();
    let delta = (0..rows).map(|r| (0..rank).map(|j| b16[r * rank + j] * u[j]).sum()).collect();
    let up = || DeviceWeight::upload(gpu, ty, rows, cols, &data).unwrap();
    let adapted = up().with_lora(gpu, rank, &a, &b).unwrap();
    (Case { base: up(), adapted, rows }, delta)
}

/// The decode kernels with adapters: several matrices of one launch (one without an adapter,
/// ranks below and above a warp), with and without the fused RMSNorm, the residual add and
/// SwiGLU, against the base kernel (checked by kernels/tests/cuda.rs) plus the f64 update.
#[test]
fn lora_matvec_matches_f64_reference() {
    let Some(gpu) = gpu() else { return };
    let mut rng = ChaCha8Rng::seed_from_u64(31);
    // F32 at 203 columns takes lora_down's scalar path (not a multiple of 8).
    for (ty, cols) in [(GgmlType::F32, 203), (GgmlType::F16, 576), (GgmlType::Q8_0, 224), (GgmlType::Q4_0, 576), (GgmlType::Q4_K, 512), (GgmlType::Q6_K, 768)] {
        for with_norm in [false, true] {
            let x = random(&mut rng, cols, 2.0);
            let norm_w = random(&mut rng, cols, 1.5);
            let xn: Vec<f64> = if with_norm {
                let ss: f64 = x.iter().map(|&v| v as f64 * v as f64).sum();
                let rs = 1.0 / (ss / cols as f64 + 1e-5).sqrt();
                x.iter().zip(&norm_w).map(|(&v, &g)| v as f64 * rs * g as f64).collect()
            } else {
                x.iter().map(|&v| v as f64).collect()
            };
            let (xb, nb) = (gpu.upload(&x).unwrap(), gpu.upload(&norm_w).unwrap());
            let norm = with_norm.then(|| nb.ptr());
            let run = |mats: Vec<(&DeviceWeight, u64)>, mode| {
                gpu.matvec(&MatvecJob { mats, x: xb.ptr(), norm, eps: 1e-5, mode }).unwrap();
                gpu.sync().unwrap();
            };
            let read = |b: &nexus_kernels::cuda::GpuBuffer<f32>, n: usize| -> Vec<f64> {
                gpu.read(b, n).unwrap().into_iter().map(f64::from).collect()
            };
            let what = format!("{ty} cols={cols} norm={with_norm}");

            // Three matrices in one launch: rank 5, no adapter, rank 37 (two passes of a warp).
            let (c0, d0) = case(&gpu, &mut rng, ty, 45, cols, 5, &xn);
            let (c1, _) = case(&gpu, &mut rng, ty, 33, cols, 3, &xn);
            let (c2, d2) = case(&gpu, &mut rng, ty, 64, cols, 37, &xn);
            let deltas = [d0, vec![0.0; 33], d2];
            let outs = |n: [usize; 3]| n.map(|r| gpu.upload(&vec![f32::NAN; r]).unwrap());
            let (base, lora) = (outs([45, 33, 64]), outs([45, 33, 64]));
            run(vec![(&c0.base, base[0].ptr()), (&c1.base, base[1].ptr()), (&c2.base, base[2].ptr())], MatvecMode::Store);
            run(vec![(&c0.adapted, lora[0].ptr()), (&c1.base, lora[1].ptr()), (&c2.adapted, lora[2].ptr())], MatvecMode::Store);
            for i in 0..3 {
                let (b, l) = (read(&base[i], deltas[i].len()), read(&lora[i], deltas[i].len()));
                let got: Vec<f64> = l.iter().zip(&b).map(|(l, b)| l - b).collect();
                if i == 1 {
                    assert_eq!(got.iter().fold(0f64, |m, v| m.max(v.abs())), 0.0, "{what}: the matrix without an adapter changed");
                    continue;
                }
                let e = rel_err(&got, &deltas[i]);
                eprintln!("lora {what} matrix {i}: update rel err {e:.2e}");
                assert!(e < 1e-4, "{what} matrix {i}: update relative error {e:.2e}");
            }

            // Residual add: y += W·x + B·(A·x).
            let (c, d) = case(&gpu, &mut rng, ty, 47, cols, 16, &xn);
            let resid = random(&mut rng, c.rows, 1.0);
            let (yb, yl) = (gpu.upload(&resid).unwrap(), gpu.upload(&resid).unwrap());
            run(vec![(&c.base, yb.ptr())], MatvecMode::Add);
            run(vec![(&c.adapted, yl.ptr())], MatvecMode::Add);
            let got: Vec<f64> = read(&yl, c.rows).iter().zip(read(&yb, c.rows)).map(|(l, b)| l - b).collect();
            let e = rel_err(&got, &d);
            assert!(e < 1e-4, "{what} add: update relative error {e:.2e}");

            // SwiGLU: the updates go into gate and up before silu(gate)·up.
            let (cg, dg) = case(&gpu, &mut rng, ty, 70, cols, 16, &xn);
            let (cu, du) = case(&gpu, &mut rng, ty, 70, cols, 7, &xn);
            let (gb, sl) = (outs([70; 3]), gpu.upload(&vec![f32::NAN; 70]).unwrap());
            run(vec![(&cg.base, gb[0].ptr()), (&cu.base, gb[1].ptr())], MatvecMode::Store);
            run(vec![(&cg.adapted, sl.ptr()), (&cu.adapted, 0)], MatvecMode::SwiGlu);
            let (g, u) = (read(&gb[0], 70), read(&gb[1], 70));
            let want: Vec<f64> = (0..70)
                .map(|r| {
                    let (g, u) = (g[r] + dg[r], u[r] + du[r]);
                    g / (1.0 + (-g).exp()) * u
                })
                .collect();
            let e = rel_err(&read(&sl, 70), &want);
            eprintln!("lora {what} swiglu: rel err {e:.2e}");
            assert!(e < 1e-4, "{what} swiglu: relative error {e:.2e}");
        }
    }
}

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

const PROJECTIONS: [&str; 7] = ["attn_q", "attn_k", "attn_v", "attn_output", "ffn_gate", "ffn_up", "ffn_down"];

/// A random adapter (llama.cpp's LoRA GGUF) on every projection of every layer and, with
/// `head`, on the output head when the model has its own; or on `every`-th of those only.
fn write_adapter(model: &Path, out: &Path, rank: usize, alpha: f32, every: usize, head: bool, seed: u64) -> PathBuf {
    let file = GgufFile::open(model).unwrap();
    let targets: Vec<(String, usize, usize)> = file
        .tensors()
        .iter()
        .filter(|t| (head && t.name == "output.weight") || PROJECTIONS.iter().any(|p| t.name.ends_with(&format!(".{p}.weight"))))
        .step_by(every)
        .map(|t| (t.name.clone(), t.dims[0] as usize, t.dims[1] as usize))
        .collect();
    let arch = file.get_str("general.architecture").unwrap().to_string();
    LoraSpec { arch, alpha, rank, ty: GgmlType::F16, seed, targets }.write(out);
    out.to_path_buf()
}

fn rel(a: &[f32], b: &[f32]) -> f32 {
    let scale = b.iter().fold(0f32, |m, v| m.max(v.abs())).max(1e-6);
    a.iter().zip(b).fold(0f32, |m, (x, y)| m.max((x - y).abs())) / scale
}

/// The model at `path` with a rank-16 adapter on all projections plus a second, smaller one
/// at scale 0.5 on some (two adapters on one projection add up): the CPU's greedy tokens,
/// then the GPU teacher-forced along them through the decode graph, and the batched prompt
/// path against that. Returns (GPU vs CPU, prompt vs decode) relative logit differences.
fn compare(path: &Path, dir: &Path, prompt: &[u32], steps: usize) -> (f32, f32) {
    let stem = path.file_stem().unwrap().to_string_lossy().into_owned();
    let first = LoraAdapter::load(write_adapter(path, &dir.join(format!("{stem}.a.gguf")), 16, 32.0, 1, true, 3)).unwrap();
    let second = LoraAdapter::load(write_adapter(path, &dir.join(format!("{stem}.b.gguf")), 3, 0.0, 3, true, 4)).unwrap();
    let mut model = Model::load(path).unwrap();
    let n_ctx = prompt.len() + steps + 1;
    let base_logits = {
        let mut cache = model.new_cache(n_ctx);
        model.forward(prompt, &mut cache, Logits::Last).unwrap()
    };
    model.apply_lora(&[(&first, 1.0), (&second, 0.5)]).unwrap();
    let mut cache = model.new_cache(n_ctx);
    let mut tokens = prompt.to_vec();
    let mut cpu_logits = Vec::new();
    let mut logits = model.forward(prompt, &mut cache, Logits::Last).unwrap();
    let moved = rel(&logits, &base_logits);
    for _ in 0..steps {
        let id = logits.iter().enumerate().fold(0, |b, (i, &v)| if v > logits[b] { i } else { b });
        cpu_logits.push(logits.clone());
        tokens.push(id as u32);
        logits = model.forward(&[id as u32], &mut cache, Logits::Last).unwrap();
    }
    let mut gpu = CudaModel::load(&model, n_ctx, 0, CacheTypes::default()).unwrap();
    gpu.set_batched_prompts(false);
    let stepped = gpu.forward(&tokens[..tokens.len() - 1], Logits::All).unwrap();
    let nv = model.config.n_vocab;
    let mut worst = 0f32;
    for (s, cpu) in cpu_logits.iter().enumerate() {
        let g = &stepped[(prompt.len() - 1 + s) * nv..(prompt.len() + s) * nv];
        assert!(g.iter().all(|v| v.is_finite()), "{stem}: step {s}: non-finite GPU logits");
        worst = worst.max(rel(g, cpu));
    }
    gpu.truncate(0);
    gpu.set_batched_prompts(true);
    let batched = gpu.forward(&tokens[..tokens.len() - 1], Logits::All).unwrap();
    let prefill = rel(&batched, &stepped);
    eprintln!(
        "{stem}: adapters move the logits by {moved:.2e} of the largest; GPU decode vs CPU {worst:.2e} over {steps} steps; \
         GPU prompt path vs decode {prefill:.2e}"
    );
    // The adapters must matter far beyond the tolerances, or the comparison proves nothing.
    assert!(moved > 0.1, "{stem}: the adapters barely change the logits ({moved:.2e})");
    (worst, prefill)
}

#[test]
fn golden_fixtures_with_adapters_match_cpu() {
    if !gpu_available() {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    // llama files take the Q/K/V launch with fused RoPE, qwen2 the separate rope_store and
    // biases. Bounds: the base's (cuda_model.rs) with room for f16 A and B on the device.
    for name in ["llama-spm-gqa.f32", "llama-spm-gqa.q8_0", "llama3-scaled.f32", "qwen2-bias.f32"] {
        let path = root().join(format!("tests/fixtures/golden/{name}.gguf"));
        let (decode, prefill) = compare(&path, dir.path(), &[1, 15, 27, 3, 99, 42], 32);
        let (tol, tol_prefill) = if name.ends_with("q8_0") { (8e-2, 8e-2) } else { (1e-2, 1.5e-2) };
        assert!(decode <= tol, "{name}: GPU decode with adapters vs CPU {decode:.2e} (bound {tol:.0e})");
        assert!(prefill <= tol_prefill, "{name}: prompt path vs decode with adapters {prefill:.2e} (bound {tol_prefill:.0e})");
    }
}

#[test]
fn synthetic_smollm2_shapes_with_adapters_match_cpu() {
    if !gpu_available() {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let cfg = nexus_convert::synth::config("smollm2-135m").unwrap();
    for ty in ["q4_1", "q4_k_m", "f16"] {
        let path = dir.path().join(format!("smollm2-{ty}.gguf"));
        nexus_convert::synth::synth(cfg, QuantType::from_name(ty).unwrap(), &path, 5).unwrap();
        let (decode, prefill) = compare(&path, dir.path(), &[1, 200, 3000, 17, 9000, 45000, 12], 24);
        assert!(decode <= 5e-2, "smollm2 {ty}: GPU decode with adapters vs CPU {decode:.2e} (bound 5e-2)");
        assert!(prefill <= 8e-2, "smollm2 {ty}: prompt path vs decode with adapters {prefill:.2e} (bound 8e-2)");
    }
}

/// Not a check: writes the adapter scripts/cuda/device_check.sh times against the base
/// (`NEXUS_LORA_BASE`, `NEXUS_LORA_OUT`, `NEXUS_LORA_RANK`; all seven projections of every
/// layer, alpha 32), so the GPU machine needs no Python to make one.
#[test]
#[ignore]
fn write_bench_adapter() {
    let var = |k: &str| std::env::var(k).unwrap_or_else(|_| panic!("{k} is not set"));
    let rank = var("NEXUS_LORA_RANK").parse().expect("NEXUS_LORA_RANK is a number");
    let out = write_adapter(Path::new(&var("NEXUS_LORA_BASE")), Path::new(&var("NEXUS_LORA_OUT")), rank, 32.0, 1, false, 9);
    eprintln!("wrote {}", out.display());
}
