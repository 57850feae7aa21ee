//! The 8-bit CUDA paths against float64: the Q8_0 KV cache (store, decode and prompt
//! attention) and the int8 tensor-core GEMM over Q8_0 weights. Runs only with `--features
//! cuda`; without a GPU it prints why and passes, unless NEXUS_REQUIRE_CUDA=1.
#![cfg(feature = "cuda")]

use half::f16;
use nexus_kernels::cuda::{AttnDecode, AttnPrefill, DeviceWeight, GpuBuffer, KvStore, RopeStore};
use nexus_kernels::{quantize_activation_row, GgmlType};
use rand::SeedableRng;
use rand_chacha::ChaCha8Rng;

mod cuda_common;
use cuda_common::{dequantize, gpu, quantize, random, rel_err};

/// Rows of `kv_dim` values as a Q8_0 cache side holds them (the CPU cache's bytes,
/// `quantize_activation_row`): int8 quants, f16 scales, and the values they stand for.
fn q8_side(x: &[f32], kv_dim: usize) -> (Vec<u8>, Vec<f16>, Vec<f64>) {
    let (mut quants, mut scales, mut values) = (Vec::new(), Vec::new(), Vec::new());
    for row in x.chunks(kv_dim) {
        let mut q = vec![0u8; kv_dim / 32 * 34];
        quantize_activation_row(GgmlType::Q8_0, row, &mut q).unwrap();
        for b in q.chunks(34) {
            let d = f16::from_le_bytes([b[0], b[1]]);
            scales.push(d);
            quants.extend_from_slice(&b[2..]);
            values.extend(b[2..].iter().map(|&v| v as i8 as f64 * d.to_f64()));
        }
    }
    (quants, scales, values)
}

/// softmax(q·K / √hd)·V per head in f64, over positions `0..=last` of rows `keys`/`vals`.
#[allow(clippy::too_many_arguments)]
fn attention_f64(q: &[f64], keys: &[f64], vals: &[f64], n_head: usize, n_kv: usize, hd: usize, last: usize, out: &mut [f64]) {
    let kvd = n_kv * hd;
    let scale = 1.0 / (hd as f64).sqrt();
    for h in 0..n_head {
        let kvh = h / (n_head / n_kv);
        let s: Vec<f64> = (0..=last)
            .map(|p| (0..hd).map(|i| q[h * hd + i] * keys[p * kvd + kvh * hd + i]).sum::<f64>() * (scale as f32) as f64)
            .collect();
        let m = s.iter().cloned().fold(f64::MIN, f64::max);
        let z: f64 = s.iter().map(|v| (v - m).exp()).sum();
        for (p, sv) in s.iter().enumerate() {
            for i in 0..hd {
                out[h * hd + i] += (sv - m).exp() / z * vals[p * kvd + kvh * hd + i];
            }
        }
    }
}

/// A query as attention over Q8_0 keys uses it: each head's blocks of 32 rounded through Q8_0.
fn q8_query(q: &[f32], hd: usize) -> Vec<f64> {
    q.chunks(hd).flat_map(|h| q8_side(h, hd).2).collect()
}

/// The Q8_0 cache (`--cache-type-k/-v q8_0` on the GPU), keys, values or both: rope_store +
/// kv_store_q8 store exactly the bytes the CPU cache stores for the rotated values, and decode
/// attention (split) and prompt attention (tiled and not) over it match float64 over the same
/// stored values, with the query rounded through Q8_0 where the keys are Q8_0.
#[test]
fn q8_0_cache_store_and_attention_match_reference() {
    let Some(mut gpu) = gpu() else { return };
    let mut rng = ChaCha8Rng::seed_from_u64(13);
    for (n_head, n_kv, hd, n_pos, split) in [(9usize, 3usize, 64usize, 1usize, 256usize), (8, 2, 128, 300, 64), (4, 4, 32, 37, 16)] {
        for (kq8, vq8) in [(true, true), (true, false), (false, true)] {
            let (qd, kvd) = (n_head * hd, n_kv * hd);
            let inv_freq: Vec<f64> = (0..hd / 2).map(|i| 10000f64.powf(-2.0 * i as f64 / hd as f64)).collect();
            let freq = gpu.upload(&inv_freq).unwrap();
            // A side: f16 rows, or Q8_0 quants and scales.
            let side = |q8: bool| {
                if q8 {
                    (gpu.alloc::<u8>(n_pos * kvd).unwrap(), Some(gpu.alloc::<f16>(n_pos * kvd / 32).unwrap()))
                } else {
                    (gpu.alloc::<u8>(2 * n_pos * kvd).unwrap(), None)
                }
            };
            let ((kc, ks), (vc, vs)) = (side(kq8), side(vq8));
            let sp = |s: &Option<GpuBuffer<f16>>| s.as_ref().map_or(0, |b| b.ptr());
            let (mut qb, mut kb, mut vb) = (gpu.alloc::<f32>(qd).unwrap(), gpu.alloc::<f32>(kvd).unwrap(), gpu.alloc::<f32>(kvd).unwrap());
            let mut state = gpu.alloc::<i32>(2).unwrap();
            let (mut keys, mut vals) = (Vec::new(), Vec::new());
            let mut q_last = Vec::new();
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
                    k_scales: sp(&ks),
                    v_scales: sp(&vs),
                    inv_freq: freq.ptr(),
                    state: state.ptr(),
                    freq_scale: 1.0,
                    n_head,
                    n_kv,
                    hd,
                    rope_dim: hd,
                    neox: false,
                    n_tok: 1,
                })
                .unwrap();
                gpu.kv_store_q8(&KvStore {
                    k: kb.ptr(),
                    v: vb.ptr(),
                    k_cache: kc.ptr(),
                    k_scales: sp(&ks),
                    v_cache: vc.ptr(),
                    v_scales: sp(&vs),
                    state: state.ptr(),
                    kv_dim: kvd,
                    n_tok: 1,
                })
                .unwrap();
                gpu.sync().unwrap();
                // A Q8_0 side was left in f32 (keys rotated) for kv_store_q8.
                let kr = if kq8 { gpu.read(&kb, kvd).unwrap() } else { k };
                keys.push(kr);
                vals.push(v);
                q_last = gpu.read(&qb, qd).unwrap();
            }
            // What each side holds, read back: Q8_0 sides byte for byte the CPU cache's.
            let stored = |q8: bool, rows: &[Vec<f32>], data: &GpuBuffer<u8>, sc: &Option<GpuBuffer<f16>>| {
                let flat: Vec<f32> = rows.concat();
                if q8 {
                    let (quants, scales, values) = q8_side(&flat, kvd);
                    assert_eq!(gpu.read(data, n_pos * kvd).unwrap(), quants, "Q8_0 quants, hd={hd} pos={n_pos}");
                    let got: Vec<u16> = gpu.read(sc.as_ref().unwrap(), n_pos * kvd / 32).unwrap().iter().map(|d| d.to_bits()).collect();
                    assert_eq!(got, scales.iter().map(|d| d.to_bits()).collect::<Vec<_>>(), "Q8_0 scales");
                    values
                } else {
                    flat.iter().map(|&v| f16::from_f32(v).to_f64()).collect()
                }
            };
            // The f16 keys came out of rope_store's own rotation: rotate them here as it does.
            let keys_f64 = if kq8 {
                stored(true, &keys, &kc, &ks)
            } else {
                let rotated: Vec<Vec<f32>> = keys
                    .iter()
                    .enumerate()
                    .map(|(pos, k)| {
                        let mut k = k.clone();
                        for h in k.chunks_exact_mut(hd) {
                            for (i, f) in inv_freq.iter().enumerate() {
                                let (s, c) = (pos as f64 * f).sin_cos();
                                let (x0, x1) = (h[2 * i] as f64, h[2 * i + 1] as f64);
                                h[2 * i] = (x0 * c - x1 * s) as f32;
                                h[2 * i + 1] = (x0 * s + x1 * c) as f32;
                            }
                        }
                        k
                    })
                    .collect();
                stored(false, &rotated, &kc, &ks)
            };
            let vals_f64 = stored(vq8, &vals, &vc, &vs);
            let qf: Vec<f64> = if kq8 { q8_query(&q_last, hd) } else { q_last.iter().map(|&v| v as f64).collect() };
            let mut want = vec![0f64; qd];
            attention_f64(&qf, &keys_f64, &vals_f64, n_head, n_kv, hd, n_pos - 1, &mut want);

            let splits = n_pos.div_ceil(split);
            let part = gpu.alloc::<f32>(n_head * splits * (hd + 2)).unwrap();
            let counter = gpu.alloc::<i32>(n_head).unwrap();
            let out = gpu.upload(&vec![f32::NAN; qd]).unwrap();
            let attn = AttnDecode {
                q: qb.ptr(),
                k_cache: kc.ptr(),
                v_cache: vc.ptr(),
                k_scales: sp(&ks),
                v_scales: sp(&vs),
                out: out.ptr(),
                part: part.ptr(),
                counter: counter.ptr(),
                state: state.ptr(),
                scale: 1.0 / (hd as f32).sqrt(),
                n_head,
                n_kv,
                hd,
                split,
            };
            gpu.attn_decode(&attn, splits).unwrap();
            gpu.sync().unwrap();
            let bound = 1e-5;
            let e = rel_err(&gpu.read(&out, qd).unwrap(), &want);
            assert!(e < bound, "decode attention kq8={kq8} vq8={vq8} hd={hd} pos={n_pos}: {e:.2e}");
            eprintln!("Q8_0 cache kq8={kq8} vq8={vq8} heads={n_head}/{n_kv} hd={hd} pos={n_pos}: decode rel err {e:.2e}");

            // Prompt attention: the last min(n_pos, 20) positions as queries over the same cache.
            let n_tok = n_pos.min(20);
            let base = n_pos - n_tok;
            let qs = random(&mut rng, n_tok * qd, 1.0);
            let qsb = gpu.upload(&qs).unwrap();
            gpu.write(&mut state, &[0, base as i32]).unwrap();
            let mut want = vec![0f64; n_tok * qd];
            for t in 0..n_tok {
                let qt = &qs[t * qd..(t + 1) * qd];
                let qf: Vec<f64> = if kq8 { q8_query(qt, hd) } else { qt.iter().map(|&v| v as f64).collect() };
                attention_f64(&qf, &keys_f64, &vals_f64, n_head, n_kv, hd, base + t, &mut want[t * qd..(t + 1) * qd]);
            }
            for tiled in [true, false] {
                gpu.set_tiled_prefill(tiled);
                let out = gpu.upload(&vec![f32::NAN; n_tok * qd]).unwrap();
                gpu.attn_prefill(&AttnPrefill {
                    q: qsb.ptr(),
                    k_cache: kc.ptr(),
                    v_cache: vc.ptr(),
                    k_scales: sp(&ks),
                    v_scales: sp(&vs),
                    out: out.ptr(),
                    state: state.ptr(),
                    scale: 1.0 / (hd as f32).sqrt(),
                    n_head,
                    n_kv,
                    hd,
                    n_tok,
                })
                .unwrap();
                gpu.sync().unwrap();
                let e = rel_err(&gpu.read(&out, n_tok * qd).unwrap(), &want);
                assert!(e < bound, "prompt attention (tiled {tiled}) kq8={kq8} vq8={vq8} hd={hd}: {e:.2e}");
                eprintln!("Q8_0 cache kq8={kq8} vq8={vq8} hd={hd}: prompt (tiled {tiled}) rel err {e:.2e}");
            }
            gpu.set_tiled_prefill(true);
        }
    }
}

/// The int8 tensor-core GEMM over Q8_0 weights (`mmq_q8_0`, prompts with NEXUS_CUDA_MMQ=1):
/// activations quantized on the device exactly as the CPU quantizes them, then the product
/// against float64 over the same 8-bit values, on sizes that are not multiples of the tiles
/// (rows, tokens) nor of the two-block stage (columns), storing and accumulating.
#[test]
fn int8_gemm_over_q8_0_matches_f64_reference() {
    let Some(gpu) = gpu() else { return };
    if !gpu.has_int8_mma() {
        eprintln!("skipped: {} has no int8 mma", gpu.arch);
        return;
    }
    let mut rng = ChaCha8Rng::seed_from_u64(14);
    for (rows, cols, n_tok) in [(203usize, 224usize, 7usize), (576, 576, 77), (1000, 2080, 130), (128, 64, 1), (64, 32, 65)] {
        let data = quantize(GgmlType::Q8_0, &random(&mut rng, rows * cols, 1.0), rows, cols);
        let w = dequantize(GgmlType::Q8_0, &data, rows, cols);
        let dw = DeviceWeight::upload(&gpu, GgmlType::Q8_0, rows, cols, &data).unwrap();
        let x16: Vec<f16> = random(&mut rng, n_tok * cols, 3.0).into_iter().map(f16::from_f32).collect();
        let xb = gpu.upload(&x16).unwrap();
        let (xq, xd) = (gpu.alloc::<u8>(n_tok * cols).unwrap(), gpu.alloc::<f32>(n_tok * cols / 32).unwrap());
        gpu.quantize_q8_rows(xb.ptr(), xq.ptr(), xd.ptr(), n_tok, cols).unwrap();
        gpu.sync().unwrap();
        // The quants are the CPU activation quantizer's, byte for byte; the scale stays f32.
        let (gq, gd) = (gpu.read(&xq, n_tok * cols).unwrap(), gpu.read(&xd, n_tok * cols / 32).unwrap());
        let xf: Vec<f32> = x16.iter().map(|v| v.to_f32()).collect();
        let mut cpu = vec![0u8; n_tok * cols / 32 * 34];
        quantize_activation_row(GgmlType::Q8_0, &xf, &mut cpu).unwrap();
        for (b, blk) in cpu.chunks(34).enumerate() {
            assert_eq!(&gq[b * 32..(b + 1) * 32], &blk[2..], "block {b}: quants");
            let amax = xf[b * 32..(b + 1) * 32].iter().fold(0f32, |m, v| m.max(v.abs()));
            assert_eq!(gd[b], amax / 127.0, "block {b}: scale");
        }
        let xv: Vec<f64> = gq.iter().enumerate().map(|(i, &q)| q as i8 as f64 * gd[i / 32] as f64).collect();
        let mut want = vec![0f64; n_tok * rows];
        for t in 0..n_tok {
            for r in 0..rows {
                want[t * rows + r] = (0..cols).map(|c| w[r * cols + c] * xv[t * cols + c]).sum();
            }
        }
        let y = gpu.upload(&vec![f32::NAN; n_tok * rows]).unwrap();
        gpu.mmq_q8_0(&dw, xq.ptr(), xd.ptr(), y.ptr(), n_tok, rows, false).unwrap();
        gpu.sync().unwrap();
        let e = rel_err(&gpu.read(&y, n_tok * rows).unwrap(), &want);
        assert!(e < 1e-6, "int8 GEMM {rows}×{cols}, {n_tok} tokens: {e:.2e}");
        // Accumulating onto what y holds: twice the product.
        gpu.mmq_q8_0(&dw, xq.ptr(), xd.ptr(), y.ptr(), n_tok, rows, true).unwrap();
        gpu.sync().unwrap();
        let twice: Vec<f64> = want.iter().map(|v| 2.0 * v).collect();
        let e2 = rel_err(&gpu.read(&y, n_tok * rows).unwrap(), &twice);
        assert!(e2 < 1e-6, "int8 GEMM accumulating {rows}×{cols}, {n_tok} tokens: {e2:.2e}");
        eprintln!("int8 GEMM {rows}×{cols}, {n_tok} tokens: rel err {e:.2e}, accumulated {e2:.2e}");
    }
}
