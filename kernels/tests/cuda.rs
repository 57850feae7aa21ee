//! CUDA kernels against float64 CPU references on random inputs, odd sizes included. Runs only
//! with `--features cuda`; without a GPU it prints why and passes, unless NEXUS_REQUIRE_CUDA=1
//! (the GPU machine's test script sets it) makes an absent GPU a failure.
#![cfg(feature = "cuda")]

use half::f16;
use nexus_kernels::cuda::{AttnDecode, AttnPrefill, DeviceWeight, MatvecJob, MatvecMode, QkvRole, QkvRope, RopeStore, ARGMAX_SCRATCH};
use nexus_kernels::GgmlType;
use rand::SeedableRng;
use rand_chacha::ChaCha8Rng;

mod cuda_common;
use cuda_common::{dequantize, gpu, quantize, random, rel_err};

/// x as the kernels see it: per 32 elements, scaled to ±127 and rounded half to even.
fn q8_roundtrip(x: &[f32]) -> Vec<f64> {
    x.chunks(32)
        .flat_map(|b| {
            let amax = b.iter().fold(0f32, |m, v| m.max(v.abs()));
            let d = amax / 127.0;
            let id = if d != 0.0 { 1.0 / d } else { 0.0 };
            b.iter().map(move |&v| (v * id).round_ties_even() as f64 * d as f64).collect::<Vec<_>>()
        })
        .collect()
}

fn is_float(ty: GgmlType) -> bool {
    matches!(ty, GgmlType::F32 | GgmlType::F16 | GgmlType::BF16)
}

fn rms(x: &[f32], w: &[f32], eps: f32) -> Vec<f32> {
    let ss: f64 = x.iter().map(|&v| v as f64 * v as f64).sum();
    let rs = 1.0 / (ss / x.len() as f64 + eps as f64).sqrt();
    x.iter().zip(w).map(|(&v, &g)| (v as f64 * rs * g as f64) as f32).collect()
}

const TYPES: [GgmlType; 10] = [
    GgmlType::F32,
    GgmlType::F16,
    GgmlType::BF16,
    GgmlType::Q8_0,
    GgmlType::Q4_0,
    GgmlType::Q4_1,
    GgmlType::Q5_0,
    GgmlType::Q4_K,
    GgmlType::Q5_K,
    GgmlType::Q6_K,
];

fn widths(ty: GgmlType) -> Vec<usize> {
    match ty.block_size() {
        1 => vec![203, 576, 1000],
        32 => vec![32 * 7, 576, 2080],
        _ => vec![256, 768, 2304],
    }
}

#[test]
fn matvec_matches_f64_reference() {
    let Some(gpu) = gpu() else { return };
    let mut rng = ChaCha8Rng::seed_from_u64(7);
    for ty in TYPES {
        for cols in widths(ty) {
            for (rows, with_norm) in [(37usize, false), (300, true)] {
                let w = random(&mut rng, rows * cols, 1.0);
                let data = quantize(ty, &w, rows, cols);
                let wd = dequantize(ty, &data, rows, cols);
                let x = random(&mut rng, cols, 2.0);
                let norm_w = random(&mut rng, cols, 1.5);
                let xs = if with_norm { rms(&x, &norm_w, 1e-5) } else { x.clone() };
                let xr: Vec<f64> = if is_float(ty) { xs.iter().map(|&v| v as f64).collect() } else { q8_roundtrip(&xs) };
                let want: Vec<f64> =
                    (0..rows).map(|r| (0..cols).map(|c| wd[r * cols + c] * xr[c]).sum()).collect();
                let dw = DeviceWeight::upload(&gpu, ty, rows, cols, &data).unwrap();
                let xb = gpu.upload(&x).unwrap();
                let nb = gpu.upload(&norm_w).unwrap();
                let y = gpu.upload(&vec![f32::NAN; rows]).unwrap();
                gpu.matvec(&MatvecJob {
                    mats: vec![(&dw, y.ptr())],
                    x: xb.ptr(),
                    norm: with_norm.then(|| nb.ptr()),
                    eps: 1e-5,
                    mode: MatvecMode::Store,
                })
                .unwrap();
                gpu.sync().unwrap();
                let got = gpu.read(&y, rows).unwrap();
                assert!(got.iter().all(|v| v.is_finite()), "{ty} {rows}x{cols}: unwritten or non-finite output");
                let e = rel_err(&got, &want);
                // The norm is computed in f32 on the GPU: one 8-bit activation step may differ.
                let bound = if with_norm && !is_float(ty) { 2e-3 } else { 2e-5 };
                assert!(e < bound, "{ty} {rows}x{cols} norm={with_norm}: relative error {e:.2e} > {bound:.0e}");
                eprintln!("matvec {ty} {rows}x{cols} norm={with_norm}: rel err {e:.2e}");
            }
        }
    }
}

#[test]
fn fused_matvec_modes() {
    let Some(gpu) = gpu() else { return };
    let mut rng = ChaCha8Rng::seed_from_u64(8);
    for ty in [GgmlType::Q4_1, GgmlType::Q8_0, GgmlType::F16, GgmlType::Q6_K] {
        let cols = if ty.block_size() == 256 { 512 } else { 576 };
        let x = random(&mut rng, cols, 1.0);
        let xr: Vec<f64> = if is_float(ty) { x.iter().map(|&v| v as f64).collect() } else { q8_roundtrip(&x) };
        let mk = |rng: &mut ChaCha8Rng, rows: usize| {
            let w = random(rng, rows * cols, 1.0);
            let data = quantize(ty, &w, rows, cols);
            let wd = dequantize(ty, &data, rows, cols);
            let y: Vec<f64> = (0..rows).map(|r| (0..cols).map(|c| wd[r * cols + c] * xr[c]).sum()).collect();
            (DeviceWeight::upload(&gpu, ty, rows, cols, &data).unwrap(), y)
        };
        let xb = gpu.upload(&x).unwrap();
        // Q/K/V of different heights in one launch, with a bias on the second.
        let (wq, yq) = mk(&mut rng, 96);
        let (wk, mut yk) = mk(&mut rng, 33);
        let (wv, yv) = mk(&mut rng, 33);
        let bias = random(&mut rng, 33, 1.0);
        let wk = wk.with_bias(&gpu, &bias).unwrap();
        yk.iter_mut().zip(&bias).for_each(|(y, b)| *y += *b as f64);
        let outs: Vec<_> = [96, 33, 33].iter().map(|&n| gpu.upload(&vec![f32::NAN; n]).unwrap()).collect();
        gpu.matvec(&MatvecJob {
            mats: vec![(&wq, outs[0].ptr()), (&wk, outs[1].ptr()), (&wv, outs[2].ptr())],
            x: xb.ptr(),
            norm: None,
            eps: 0.0,
            mode: MatvecMode::Store,
        })
        .unwrap();
        // Residual add.
        let (wo, yo) = mk(&mut rng, 45);
        let resid = random(&mut rng, 45, 1.0);
        let ob = gpu.upload(&resid).unwrap();
        gpu.matvec(&MatvecJob { mats: vec![(&wo, ob.ptr())], x: xb.ptr(), norm: None, eps: 0.0, mode: MatvecMode::Add })
            .unwrap();
        // SwiGLU.
        let (wg, yg) = mk(&mut rng, 70);
        let (wu, yu) = mk(&mut rng, 70);
        let sb = gpu.upload(&vec![f32::NAN; 70]).unwrap();
        gpu.matvec(&MatvecJob {
            mats: vec![(&wg, sb.ptr()), (&wu, 0)],
            x: xb.ptr(),
            norm: None,
            eps: 0.0,
            mode: MatvecMode::SwiGlu,
        })
        .unwrap();
        gpu.sync().unwrap();
        for (buf, want, what) in [(&outs[0], &yq, "q"), (&outs[1], &yk, "k+bias"), (&outs[2], &yv, "v")] {
            let e = rel_err(&gpu.read(buf, want.len()).unwrap(), want);
            assert!(e < 2e-5, "{ty} fused {what}: {e:.2e}");
        }
        let want_o: Vec<f64> = yo.iter().zip(&resid).map(|(y, r)| y + *r as f64).collect();
        let e = rel_err(&gpu.read(&ob, 45).unwrap(), &want_o);
        assert!(e < 2e-5, "{ty} residual add: {e:.2e}");
        let want_s: Vec<f64> = yg.iter().zip(&yu).map(|(g, u)| g / (1.0 + (-g).exp()) * u).collect();
        let e = rel_err(&gpu.read(&sb, 70).unwrap(), &want_s);
        assert!(e < 5e-5, "{ty} swiglu: {e:.2e}");
    }
}

/// Q/K/V products with RoPE and the cache store fused give what the separate launches give
/// (products stored, then `rope_store`), as one launch and as a launch split by weight type,
/// with a bias, partial rotation and a frequency scale.
#[test]
fn fused_qkv_rope_matches_separate_launches() {
    let Some(gpu) = gpu() else { return };
    let mut rng = ChaCha8Rng::seed_from_u64(11);
    for (ty, ty_v, cols, n_head, n_kv, hd, rope_dim, pos) in [
        (GgmlType::Q8_0, GgmlType::Q8_0, 576usize, 9usize, 3usize, 64usize, 64usize, 0usize),
        (GgmlType::Q4_K, GgmlType::Q6_K, 512, 4, 2, 64, 32, 37),
        (GgmlType::F16, GgmlType::F16, 96, 3, 1, 32, 32, 1000),
    ] {
        let (qd, kvd, n_pos) = (n_head * hd, n_kv * hd, pos + 1);
        let mk = |rng: &mut ChaCha8Rng, ty: GgmlType, rows: usize| {
            let data = quantize(ty, &random(rng, rows * cols, 1.0), rows, cols);
            DeviceWeight::upload(&gpu, ty, rows, cols, &data).unwrap()
        };
        let wq = mk(&mut rng, ty, qd);
        let wk = mk(&mut rng, ty, kvd).with_bias(&gpu, &random(&mut rng, kvd, 1.0)).unwrap();
        let wv = mk(&mut rng, ty_v, kvd);
        let xb = gpu.upload(&random(&mut rng, cols, 1.0)).unwrap();
        let norm = gpu.upload(&random(&mut rng, cols, 1.0)).unwrap();
        let inv_freq: Vec<f64> = (0..rope_dim / 2).map(|i| 10000f64.powf(-2.0 * i as f64 / rope_dim as f64)).collect();
        let freq = gpu.upload(&inv_freq).unwrap();
        let mut state = gpu.alloc::<i32>(2).unwrap();
        gpu.write(&mut state, &[0, pos as i32]).unwrap();
        let bufs = || {
            let q = gpu.upload(&vec![f32::NAN; qd]).unwrap();
            let kc = gpu.upload(&vec![f16::NAN; n_pos * kvd]).unwrap();
            let vc = gpu.upload(&vec![f16::NAN; n_pos * kvd]).unwrap();
            (q, kc, vc)
        };
        let job = |mats, mode| MatvecJob { mats, x: xb.ptr(), norm: Some(norm.ptr()), eps: 1e-5, mode };
        let (q1, kc1, vc1) = bufs();
        let (kb, vb) = (gpu.alloc::<f32>(kvd).unwrap(), gpu.alloc::<f32>(kvd).unwrap());
        gpu.matvec(&job(vec![(&wq, q1.ptr()), (&wk, kb.ptr())], MatvecMode::Store)).unwrap();
        gpu.matvec(&job(vec![(&wv, vb.ptr())], MatvecMode::Store)).unwrap();
        gpu.rope_store(&RopeStore {
            q: q1.ptr(),
            k: kb.ptr(),
            v: vb.ptr(),
            k_cache: kc1.ptr(),
            v_cache: vc1.ptr(),
            k_scales: 0,
            v_scales: 0,
            inv_freq: freq.ptr(),
            state: state.ptr(),
            freq_scale: 0.5,
            n_head,
            n_kv,
            hd,
            rope_dim,
            neox: false,
            n_tok: 1,
        })
        .unwrap();
        let (q2, kc2, vc2) = bufs();
        let rope = QkvRope {
            roles: [QkvRole::Q, QkvRole::K, QkvRole::V],
            k_cache: kc2.ptr(),
            v_cache: vc2.ptr(),
            inv_freq: freq.ptr(),
            state: state.ptr(),
            freq_scale: 0.5,
            hd,
            rope_dim,
            kv_dim: kvd,
        };
        if ty == ty_v {
            gpu.matvec(&job(vec![(&wq, q2.ptr()), (&wk, 0), (&wv, 0)], MatvecMode::QkvRope(rope))).unwrap();
        } else {
            gpu.matvec(&job(vec![(&wq, q2.ptr()), (&wk, 0)], MatvecMode::QkvRope(rope.roles_of(0..2)))).unwrap();
            gpu.matvec(&job(vec![(&wv, 0)], MatvecMode::QkvRope(rope.roles_of(2..3)))).unwrap();
        }
        gpu.sync().unwrap();
        let want_q: Vec<f64> = gpu.read(&q1, qd).unwrap().iter().map(|&v| v as f64).collect();
        let e = rel_err(&gpu.read(&q2, qd).unwrap(), &want_q);
        assert!(e < 1e-6, "{ty}/{ty_v} fused q: {e:.2e}");
        for (got, want, what) in [(&kc2, &kc1, "k"), (&vc2, &vc1, "v")] {
            // Only position `pos` is written; every other slot must still hold NaN.
            let (g, w) = (gpu.read(got, n_pos * kvd).unwrap(), gpu.read(want, n_pos * kvd).unwrap());
            assert!(g[..pos * kvd].iter().all(|v| v.is_nan()), "{ty} fused {what} wrote outside its position");
            let gf: Vec<f32> = g[pos * kvd..].iter().map(|v| v.to_f32()).collect();
            let wf: Vec<f64> = w[pos * kvd..].iter().map(|v| v.to_f64()).collect();
            let e = rel_err(&gf, &wf);
            assert!(e < 1e-3, "{ty}/{ty_v} fused {what} cache: {e:.2e}");
        }
        eprintln!("fused qkv+rope {ty}/{ty_v} heads={n_head}/{n_kv} hd={hd} rope_dim={rope_dim} pos={pos}: q err {e:.1e}");
    }
}

/// Prompt attention (both kernels: tiled and one warp per query) against float64: queries at
/// positions base..base+n_tok over an f16 cache holding 0..base+n_tok, causal, GQA, with tile
/// edges that do not line up (odd token counts, a base that is not a multiple of the tile).
#[test]
fn prefill_attention_matches_reference() {
    let Some(mut gpu) = gpu() else { return };
    let mut rng = ChaCha8Rng::seed_from_u64(12);
    for (n_head, n_kv, hd, base, n_tok) in
        [(9usize, 3usize, 64usize, 0usize, 40usize), (8, 2, 128, 37, 77), (4, 4, 32, 5, 1), (6, 2, 64, 100, 129)]
    {
        let (qd, kvd, n_pos) = (n_head * hd, n_kv * hd, base + n_tok);
        let keys: Vec<f16> = random(&mut rng, n_pos * kvd, 1.0).into_iter().map(f16::from_f32).collect();
        let vals: Vec<f16> = random(&mut rng, n_pos * kvd, 1.0).into_iter().map(f16::from_f32).collect();
        let q = random(&mut rng, n_tok * qd, 1.0);
        let (kc, vc, qb) = (gpu.upload(&keys).unwrap(), gpu.upload(&vals).unwrap(), gpu.upload(&q).unwrap());
        let mut state = gpu.alloc::<i32>(2).unwrap();
        gpu.write(&mut state, &[0, base as i32]).unwrap();
        let scale = 1.0 / (hd as f32).sqrt();
        let mut want = vec![0f64; n_tok * qd];
        for t in 0..n_tok {
            for h in 0..n_head {
                let kvh = h / (n_head / n_kv);
                let qh = &q[(t * n_head + h) * hd..][..hd];
                let s: Vec<f64> = (0..=base + t)
                    .map(|p| (0..hd).map(|i| qh[i] as f64 * keys[p * kvd + kvh * hd + i].to_f64()).sum::<f64>() * scale as f64)
                    .collect();
                let m = s.iter().cloned().fold(f64::MIN, f64::max);
                let z: f64 = s.iter().map(|v| (v - m).exp()).sum();
                for (p, sv) in s.iter().enumerate() {
                    for i in 0..hd {
                        want[(t * n_head + h) * hd + i] += (sv - m).exp() / z * vals[p * kvd + kvh * hd + i].to_f64();
                    }
                }
            }
        }
        for tiled in [true, false] {
            gpu.set_tiled_prefill(tiled);
            let out = gpu.upload(&vec![f32::NAN; n_tok * qd]).unwrap();
            gpu.attn_prefill(&AttnPrefill {
                q: qb.ptr(),
                k_cache: kc.ptr(),
                v_cache: vc.ptr(),
                k_scales: 0,
                v_scales: 0,
                out: out.ptr(),
                state: state.ptr(),
                scale,
                n_head,
                n_kv,
                hd,
                n_tok,
            })
            .unwrap();
            gpu.sync().unwrap();
            let e = rel_err(&gpu.read(&out, n_tok * qd).unwrap(), &want);
            assert!(e < 1e-5, "prefill attention (tiled {tiled}) heads={n_head}/{n_kv} hd={hd} base={base} n={n_tok}: {e:.2e}");
            eprintln!("prefill attention (tiled {tiled}) heads={n_head}/{n_kv} hd={hd} base={base} n={n_tok}: rel err {e:.2e}");
        }
    }
}

#[test]
fn embed_rows_match_dequantize() {
    let Some(gpu) = gpu() else { return };
    let mut rng = ChaCha8Rng::seed_from_u64(9);
    for ty in TYPES {
        let cols = widths(ty)[1];
        let rows = 11;
        let data = quantize(ty, &random(&mut rng, rows * cols, 1.0), rows, cols);
        let wd = dequantize(ty, &data, rows, cols);
        let dw = DeviceWeight::upload(&gpu, ty, rows, cols, &data).unwrap();
        let state = gpu.upload(&[7i32, 0]).unwrap();
        let out = gpu.upload(&vec![f32::NAN; cols]).unwrap();
        gpu.embed(&dw, state.ptr(), out.ptr()).unwrap();
        gpu.sync().unwrap();
        let got = gpu.read(&out, cols).unwrap();
        for c in 0..cols {
            assert_eq!(got[c] as f64, wd[7 * cols + c] as f32 as f64, "{ty} column {c}");
        }
    }
}

/// RoPE + cache store, then split attention over the cache, against f64.
#[test]
fn rope_and_attention_match_reference() {
    let Some(gpu) = gpu() else { return };
    let mut rng = ChaCha8Rng::seed_from_u64(10);
    for (n_head, n_kv, hd, neox, n_pos, split) in
        [(9usize, 3usize, 64usize, false, 1usize, 256usize), (8, 2, 128, true, 300, 64), (4, 4, 64, false, 37, 16)]
    {
        let (qd, kvd) = (n_head * hd, n_kv * hd);
        let base = 10000f64;
        let inv_freq: Vec<f64> = (0..hd / 2).map(|i| base.powf(-2.0 * i as f64 / hd as f64)).collect();
        let freq = gpu.upload(&inv_freq).unwrap();
        let kc = gpu.alloc::<f16>(n_pos * kvd).unwrap();
        let vc = gpu.alloc::<f16>(n_pos * kvd).unwrap();
        let (mut keys, mut vals) = (Vec::new(), Vec::new());
        let rot = |x: &mut [f32], pos: usize| {
            for h in x.chunks_exact_mut(hd) {
                for (i, f) in inv_freq.iter().enumerate() {
                    let (s, c) = (pos as f64 * f).sin_cos();
                    let (a, b) = if neox { (i, i + hd / 2) } else { (2 * i, 2 * i + 1) };
                    let (x0, x1) = (h[a] as f64, h[b] as f64);
                    h[a] = (x0 * c - x1 * s) as f32;
                    h[b] = (x0 * s + x1 * c) as f32;
                }
            }
        };
        let mut q_last = Vec::new();
        let state = gpu.alloc::<i32>(2).unwrap();
        let (qb, kb, vb) = (gpu.alloc::<f32>(qd).unwrap(), gpu.alloc::<f32>(kvd).unwrap(), gpu.alloc::<f32>(kvd).unwrap());
        let (mut qb, mut kb, mut vb, mut state) = (qb, kb, vb, state);
        for pos in 0..n_pos {
            let (q, k, v) = (random(&mut rng, qd, 1.0), random(&mut rng, kvd, 1.0), random(&mut rng, kvd, 1.0));
            gpu.write(&mut qb, &q).unwrap();
            gpu.write(&mut kb, &k).unwrap();
            gpu.write(&mut vb, &v).unwrap();
            gpu.write(&mut state, &[0, pos as i32]).unwrap();
            gpu.rope_store(&RopeStore {
                q: qb.ptr(),
                k: kb.ptr(),
                v: vb.ptr(),
                k_cache: kc.ptr(),
                v_cache: vc.ptr(),
                k_scales: 0,
                v_scales: 0,
                inv_freq: freq.ptr(),
                state: state.ptr(),
                freq_scale: 1.0,
                n_head,
                n_kv,
                hd,
                rope_dim: hd,
                neox,
                n_tok: 1,
            })
            .unwrap();
            let (mut qr, mut kr) = (q.clone(), k.clone());
            rot(&mut qr, pos);
            rot(&mut kr, pos);
            keys.push(kr.iter().map(|&v| f16::from_f32(v).to_f64()).collect::<Vec<_>>());
            vals.push(v.iter().map(|&v| f16::from_f32(v).to_f64()).collect::<Vec<_>>());
            q_last = qr;
        }
        gpu.sync().unwrap();
        let q_gpu = gpu.read(&qb, qd).unwrap();
        let e = rel_err(&q_gpu, &q_last.iter().map(|&v| v as f64).collect::<Vec<_>>());
        assert!(e < 1e-6, "rope on q: {e:.2e}");
        let splits = n_pos.div_ceil(split);
        let part = gpu.alloc::<f32>(n_head * splits * (hd + 2)).unwrap();
        let counter = gpu.alloc::<i32>(n_head).unwrap();
        let out = gpu.upload(&vec![f32::NAN; qd]).unwrap();
        let scale = 1.0 / (hd as f32).sqrt();
        let attn = AttnDecode {
            q: qb.ptr(),
            k_cache: kc.ptr(),
            v_cache: vc.ptr(),
            k_scales: 0,
            v_scales: 0,
            out: out.ptr(),
            part: part.ptr(),
            counter: counter.ptr(),
            state: state.ptr(),
            scale,
            n_head,
            n_kv,
            hd,
            split,
        };
        // Twice: the counters must have been reset by the first run.
        for _ in 0..2 {
            gpu.attn_decode(&attn, splits).unwrap();
        }
        gpu.sync().unwrap();
        let got = gpu.read(&out, qd).unwrap();
        let mut want = vec![0f64; qd];
        for h in 0..n_head {
            let kvh = h / (n_head / n_kv);
            let qh = &q_last[h * hd..(h + 1) * hd];
            let s: Vec<f64> = keys
                .iter()
                .map(|k| (0..hd).map(|i| qh[i] as f64 * k[kvh * hd + i]).sum::<f64>() * scale as f64)
                .collect();
            let m = s.iter().cloned().fold(f64::MIN, f64::max);
            let z: f64 = s.iter().map(|v| (v - m).exp()).sum();
            for (p, sv) in s.iter().enumerate() {
                for i in 0..hd {
                    want[h * hd + i] += (sv - m).exp() / z * vals[p][kvh * hd + i];
                }
            }
        }
        let e = rel_err(&got, &want);
        assert!(e < 1e-5, "attention heads={n_head}/{n_kv} hd={hd} pos={n_pos} split={split}: {e:.2e}");
        eprintln!("attention heads={n_head}/{n_kv} hd={hd} pos={n_pos} splits={splits}: rel err {e:.2e}");
    }
}

#[test]
fn argmax_picks_first_maximum() {
    let Some(gpu) = gpu() else { return };
    let mut rng = ChaCha8Rng::seed_from_u64(11);
    for n in [1usize, 1000, 49152, 128256] {
        let mut v = random(&mut rng, n, 10.0);
        let hi = n / 3;
        v[hi] = 100.0;
        if n > 10 {
            v[n - 1] = 100.0; // a tie resolves to the lower index, as on the CPU
        }
        let b = gpu.upload(&v).unwrap();
        let state = gpu.upload(&[-1i32, 0]).unwrap();
        let scratch = gpu.alloc::<f32>(ARGMAX_SCRATCH).unwrap();
        // Twice: the first run must leave its counter reset.
        gpu.argmax(b.ptr(), n, state.ptr(), scratch.ptr()).unwrap();
        gpu.argmax(b.ptr(), n, state.ptr(), scratch.ptr()).unwrap();
        gpu.sync().unwrap();
        assert_eq!(gpu.read(&state, 2).unwrap()[0], hi as i32, "n = {n}");
    }
}

#[test]
fn top_k_slices_match_the_cpu_reference() {
    let Some(gpu) = gpu() else { return };
    let mut rng = ChaCha8Rng::seed_from_u64(12);
    for (n, k) in [(1usize, 1usize), (700, 40), (1024, 1024), (3000, 128), (49152, 40), (128256, 64), (5000, 1)] {
        let mut v = random(&mut rng, n, 4.0);
        // Ties (which the lower id wins), NaN (counted as −∞) and −∞ itself.
        for i in (0..n).step_by(97) {
            v[i] = 3.5;
        }
        for i in (5..n).step_by(331) {
            v[i] = f32::NAN;
        }
        for i in (9..n).step_by(211) {
            v[i] = f32::NEG_INFINITY;
        }
        let b = gpu.upload(&v).unwrap();
        let len = nexus_kernels::cuda::top_k_len(n, k);
        let vals = gpu.alloc::<f32>(len).unwrap();
        let ids = gpu.alloc::<i32>(len).unwrap();
        gpu.top_k(b.ptr(), n, k, vals.ptr(), ids.ptr()).unwrap();
        gpu.sync().unwrap();
        let (gv, gi) = (gpu.read(&vals, len).unwrap(), gpu.read(&ids, len).unwrap());
        let got: Vec<(u32, f32)> = gi.iter().zip(&gv).filter(|(&i, _)| i >= 0).map(|(&i, &v)| (i as u32, v)).collect();
        let want = nexus_kernels::ops::slice_top_k(&v, k);
        assert_eq!(got.len(), want.len(), "n = {n}, k = {k}");
        for (g, w) in got.iter().zip(&want) {
            assert!(g.0 == w.0 && g.1.to_bits() == w.1.to_bits(), "n = {n}, k = {k}: {g:?} vs {w:?}");
        }
        assert!(gi.iter().zip(&gv).filter(|(&i, _)| i < 0).all(|(_, v)| *v == f32::NEG_INFINITY));
    }
}
