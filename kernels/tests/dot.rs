//! SIMD vs scalar vs an f64 reference (dequantized weights, dequantized activations).

use nexus_kernels::matmul::{matmul_with, matvec_with};
use nexus_kernels::simd::{available, Isa};
use nexus_kernels::{dequantize_row, matmul, matmul_rowwise, matvec, quantize_row, DotOrder, GgmlType};
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;

const TYPES: [GgmlType; 13] = [
    GgmlType::F32,
    GgmlType::F16,
    GgmlType::BF16,
    GgmlType::Q8_0,
    GgmlType::Q4_0,
    GgmlType::Q4_1,
    GgmlType::Q5_0,
    GgmlType::Q5_1,
    GgmlType::Q2_K,
    GgmlType::Q3_K,
    GgmlType::Q4_K,
    GgmlType::Q5_K,
    GgmlType::Q6_K,
];

fn act_type(ty: GgmlType) -> Option<GgmlType> {
    use GgmlType::*;
    match ty {
        F32 | F16 | BF16 => None,
        Q4_1 | Q5_1 => Some(Q8_1),
        Q2_K | Q3_K | Q4_K | Q5_K | Q6_K => Some(Q8_K),
        _ => Some(Q8_0),
    }
}

/// An odd number of blocks, plus a ragged tail for the dense types.
fn cols_for(ty: GgmlType) -> usize {
    match ty.block_size() {
        1 => 203,
        b => b * if b == 256 { 3 } else { 7 },
    }
}

fn random(rng: &mut ChaCha8Rng, n: usize, scale: f32) -> Vec<f32> {
    (0..n)
        .map(|_| (rng.gen::<f32>() - 0.5) * 2.0 * scale)
        .collect()
}

fn quantize_matrix(ty: GgmlType, w: &[f32], rows: usize, cols: usize) -> Vec<u8> {
    let rb = ty.row_size(cols as u64).unwrap() as usize;
    let mut out = vec![0u8; rows * rb];
    for r in 0..rows {
        quantize_row(
            ty,
            &w[r * cols..(r + 1) * cols],
            &mut out[r * rb..(r + 1) * rb],
        )
        .unwrap();
    }
    out
}

/// f64 dot of the dequantized weight row with the activations as the kernel sees them.
fn reference(ty: GgmlType, wq: &[u8], cols: usize, x: &[f32]) -> (f64, f64) {
    let mut wd = vec![0f32; cols];
    dequantize_row(ty, wq, &mut wd).unwrap();
    let mut q = vec![];
    let xd = match act_type(ty) {
        None => x.to_vec(),
        Some(at) => {
            q = vec![0u8; at.row_size(cols as u64).unwrap() as usize];
            quantize_row(at, x, &mut q).unwrap();
            let mut d = vec![0f32; cols];
            dequantize_row(at, &q, &mut d).unwrap();
            d
        }
    };
    let mut dot: f64 = wd.iter().zip(&xd).map(|(a, b)| *a as f64 * *b as f64).sum();
    if act_type(ty) == Some(GgmlType::Q8_1) {
        // Q4_1/Q5_1 x Q8_1 use the activation's stored f16 `s = d*sum(q)` for the minimum
        // term (ggml's semantics), so swap the exact term for that rounded one.
        let h = |b: &[u8], o: usize| half::f16::from_le_bytes([b[o], b[o + 1]]).to_f64();
        for (wb, ab) in wq.chunks_exact(ty.type_size()).zip(q.chunks_exact(36)) {
            let sum_q: i32 = ab[4..].iter().map(|&v| v as i8 as i32).sum();
            dot += h(wb, 2) * (h(ab, 2) - h(ab, 0) * sum_q as f64);
        }
    }
    let mag = wd
        .iter()
        .zip(&xd)
        .map(|(a, b)| (*a as f64 * *b as f64).abs())
        .sum();
    (dot, mag)
}

#[test]
fn matvec_matches_reference_on_all_isas() {
    let mut rng = ChaCha8Rng::seed_from_u64(7);
    for ty in TYPES {
        let (rows, cols) = (37, cols_for(ty));
        let w = random(&mut rng, rows * cols, 1.0);
        let x = random(&mut rng, cols, 3.0);
        let wq = quantize_matrix(ty, &w, rows, cols);
        let rb = wq.len() / rows;
        let mut ys = Vec::new();
        for isa in [Isa::Scalar, Isa::Avx2] {
            if !available(isa) {
                continue;
            }
            let mut y = vec![0f32; rows];
            matvec_with(isa, DotOrder::VecDot, ty, &wq, rows, cols, &x, &mut y).unwrap();
            for r in 0..rows {
                let (want, mag) = reference(ty, &wq[r * rb..(r + 1) * rb], cols, &x);
                let err = (y[r] as f64 - want).abs();
                assert!(
                    err <= 2e-6 * mag + 1e-6,
                    "{ty} {isa:?} row {r}: {} vs {want}",
                    y[r]
                );
            }
            ys.push(y);
        }
        let mut y = vec![0f32; rows];
        matvec(ty, &wq, rows, cols, &x, &mut y).unwrap();
        assert!(
            ys.contains(&y),
            "{ty}: default isa differs from both"
        );
    }
}

#[test]
fn matmul_equals_per_token_matvec() {
    let mut rng = ChaCha8Rng::seed_from_u64(11);
    for ty in TYPES {
        let (rows, cols, n) = (53, cols_for(ty), 9); // two four-token groups and a remainder
        let w = random(&mut rng, rows * cols, 0.5);
        let x = random(&mut rng, n * cols, 1.0);
        let wq = quantize_matrix(ty, &w, rows, cols);
        for isa in [Isa::Scalar, Isa::Avx2] {
            let mut y = vec![0f32; n * rows];
            matmul_with(isa, DotOrder::VecDot, ty, &wq, rows, cols, &x, n, &mut y).unwrap();
            for t in 0..n {
                let mut yt = vec![0f32; rows];
                matvec_with(
                    isa,
                    DotOrder::VecDot,
                    ty,
                    &wq,
                    rows,
                    cols,
                    &x[t * cols..(t + 1) * cols],
                    &mut yt,
                )
                .unwrap();
                // The four-token kernels accumulate in another order than the single-token
                // one: equal up to float rounding, not bit for bit.
                let scale = yt.iter().fold(0f32, |m, v| m.max(v.abs()));
                for (a, b) in y[t * rows..(t + 1) * rows].iter().zip(&yt) {
                    assert!(
                        (a - b).abs() <= 1e-6 * scale,
                        "{ty} {isa:?} token {t}: {a} vs {b}"
                    );
                }
            }
        }
        let mut y1 = vec![0f32; rows];
        matmul(ty, &wq, rows, cols, &x[..cols], 1, &mut y1).unwrap();
    }
}

/// Speculative decoding verifies drafted tokens in one batch and needs each row bit for bit as
/// decoding gives it: `matmul_rowwise` must equal `matvec` exactly, for every batch size
/// (below, at and past the four-token tiles).
#[test]
fn matmul_rowwise_equals_matvec_bit_for_bit() {
    let mut rng = ChaCha8Rng::seed_from_u64(12);
    for ty in TYPES {
        let (rows, cols) = (53, cols_for(ty));
        let wq = quantize_matrix(ty, &random(&mut rng, rows * cols, 0.5), rows, cols);
        for n in [1, 2, 4, 9, 17] {
            let x = random(&mut rng, n * cols, 1.0);
            let mut y = vec![0f32; n * rows];
            matmul_rowwise(ty, &wq, rows, cols, &x, n, &mut y).unwrap();
            for t in 0..n {
                let mut yt = vec![0f32; rows];
                matvec(ty, &wq, rows, cols, &x[t * cols..(t + 1) * cols], &mut yt).unwrap();
                let row: Vec<u32> = y[t * rows..(t + 1) * rows].iter().map(|v| v.to_bits()).collect();
                let want: Vec<u32> = yt.iter().map(|v| v.to_bits()).collect();
                assert_eq!(row, want, "{ty} n={n} token {t}");
            }
        }
    }
}

#[test]
fn large_parallel_matvec_matches_scalar() {
    let mut rng = ChaCha8Rng::seed_from_u64(3);
    for ty in [
        GgmlType::Q8_0,
        GgmlType::Q4_K,
        GgmlType::Q6_K,
        GgmlType::Q4_1,
    ] {
        let (rows, cols) = (1000, 512);
        let w = random(&mut rng, rows * cols, 1.0);
        let x = random(&mut rng, cols, 1.0);
        let wq = quantize_matrix(ty, &w, rows, cols);
        let (mut a, mut b) = (vec![0f32; rows], vec![0f32; rows]);
        matvec_with(Isa::Scalar, DotOrder::VecDot, ty, &wq, rows, cols, &x, &mut a).unwrap();
        matvec(ty, &wq, rows, cols, &x, &mut b).unwrap();
        for r in 0..rows {
            assert!(
                (a[r] - b[r]).abs() <= 1e-4 * (1.0 + a[r].abs()),
                "{ty} row {r}"
            );
        }
    }
}

#[test]
fn bad_shapes_are_errors_not_panics() {
    let w = vec![0u8; 2 * 34];
    let mut y = vec![0f32; 2];
    assert!(matvec(GgmlType::Q8_0, &w, 2, 32, &[0.0; 31], &mut y).is_err());
    assert!(matvec(GgmlType::Q8_0, &w, 3, 32, &[0.0; 32], &mut y).is_err());
    assert!(matvec(GgmlType::Q8_0, &w, 2, 33, &[0.0; 33], &mut y).is_err());
    assert!(matvec(GgmlType::Q8_0, &w, 2, 32, &[0.0; 32], &mut y[..1]).is_err());
    assert!(matvec(GgmlType::IQ2_XXS, &w, 2, 32, &[0.0; 32], &mut y).is_err());
    assert!(matmul(GgmlType::Q8_0, &w, 2, 32, &[0.0; 64], 3, &mut [0.0; 6]).is_err());
    assert!(matmul(GgmlType::Q8_0, &w, usize::MAX, 32, &[0.0; 32], 2, &mut y).is_err());
    assert!(matvec(GgmlType::Q8_0, &w, 2, 32, &[0.0; 32], &mut y).is_ok());
}

/// llama.cpp's other orders (repacked Q4_0 and Q4_K, tiled Q6_K) add exact integer block sums
/// with scalar float chains, so the AVX2 kernels must equal the portable ones bit for bit — for
/// a token alone, for tokens in groups of four and for the ones left over — and stay within f32
/// rounding of the f64 reference.
#[test]
fn llama_cpp_orders_agree_on_every_path_and_with_the_reference() {
    let mut rng = ChaCha8Rng::seed_from_u64(21);
    let cases = [
        (GgmlType::Q4_0, DotOrder::Repacked, vec![32, 96, 128, 160, 576, 1536]),
        (GgmlType::Q4_K, DotOrder::Repacked, vec![256, 768, 1536]),
        (GgmlType::Q6_K, DotOrder::Tiled, vec![256, 768, 1536]),
        (GgmlType::Q5_K, DotOrder::Tiled, vec![256, 768]),
        (GgmlType::Q4_K, DotOrder::Tiled, vec![256, 768]),
    ];
    let bits = |v: &[f32]| v.iter().map(|f| f.to_bits()).collect::<Vec<_>>();
    for (ty, order, all_cols) in cases {
        for cols in all_cols {
            let rows = 24;
            let n = 9;
            let wq = quantize_matrix(ty, &random(&mut rng, rows * cols, 0.5), rows, cols);
            let x = random(&mut rng, n * cols, 1.0);
            let mut scalar = vec![0f32; n * rows];
            matmul_with(Isa::Scalar, order, ty, &wq, rows, cols, &x, n, &mut scalar).unwrap();
            let rb = ty.row_size(cols as u64).unwrap() as usize;
            for t in 0..n {
                let xt = &x[t * cols..(t + 1) * cols];
                for r in 0..rows {
                    let (want, mag) = reference(ty, &wq[r * rb..(r + 1) * rb], cols, xt);
                    let got = scalar[t * rows + r] as f64;
                    assert!((got - want).abs() <= 1e-5 * mag + 1e-6, "{ty} cols={cols} t={t} r={r}: {got} vs {want}");
                }
            }
            for isa in [Isa::Avx2, Isa::Avx512] {
                if !available(isa) {
                    continue;
                }
                let mut batch = vec![0f32; n * rows];
                matmul_with(isa, order, ty, &wq, rows, cols, &x, n, &mut batch).unwrap();
                assert_eq!(bits(&batch), bits(&scalar), "{ty} {isa:?} cols={cols}: batch vs portable");
                let mut alone = vec![0f32; rows];
                matvec_with(isa, order, ty, &wq, rows, cols, &x[8 * cols..], &mut alone).unwrap();
                let mut alone_scalar = vec![0f32; rows];
                matvec_with(Isa::Scalar, order, ty, &wq, rows, cols, &x[8 * cols..], &mut alone_scalar).unwrap();
                assert_eq!(bits(&alone), bits(&alone_scalar), "{ty} {isa:?} cols={cols}: one token");
                // The token left over after the groups of four is summed as a token alone.
                assert_eq!(bits(&alone), bits(&batch[8 * rows..]), "{ty} {isa:?} cols={cols}: leftover token");
            }
        }
    }
}

/// llama.cpp multiplies K-quant weights with its tiled product from eight tokens on; fewer,
/// and the row-wise product (speculative verification), keep the single-token order.
#[test]
fn matmul_takes_the_tiled_order_from_eight_tokens_and_never_row_wise() {
    let mut rng = ChaCha8Rng::seed_from_u64(22);
    let (ty, rows, cols) = (GgmlType::Q6_K, 16, 512);
    let wq = quantize_matrix(ty, &random(&mut rng, rows * cols, 0.5), rows, cols);
    let bits = |v: &[f32]| v.iter().map(|f| f.to_bits()).collect::<Vec<_>>();
    for n in [7, 8, 12] {
        let x = random(&mut rng, n * cols, 1.0);
        let mut got = vec![0f32; n * rows];
        nexus_kernels::matmul_in(DotOrder::VecDot, ty, &wq, rows, cols, &x, n, &mut got).unwrap();
        let want_order = if n >= nexus_kernels::TILED_MIN_BATCH { DotOrder::Tiled } else { DotOrder::VecDot };
        let mut rowwise = vec![0f32; n * rows];
        nexus_kernels::matmul_rowwise_in(DotOrder::VecDot, ty, &wq, rows, cols, &x, n, &mut rowwise).unwrap();
        for t in 0..n {
            let xt = &x[t * cols..(t + 1) * cols];
            let mut want = vec![0f32; rows];
            matvec_with(nexus_kernels::simd::detected(), want_order, ty, &wq, rows, cols, xt, &mut want).unwrap();
            assert_eq!(bits(&got[t * rows..(t + 1) * rows]), bits(&want), "n={n} token {t}");
            let mut single = vec![0f32; rows];
            matvec(ty, &wq, rows, cols, xt, &mut single).unwrap();
            assert_eq!(bits(&rowwise[t * rows..(t + 1) * rows]), bits(&single), "n={n} token {t}: row-wise");
        }
    }
}

#[test]
fn llama_cpp_repacks_q4_0_and_q4_k_only_in_whole_groups_of_eight_rows() {
    assert_eq!(DotOrder::llama_cpp(GgmlType::Q4_0, 576), DotOrder::Repacked);
    assert_eq!(DotOrder::llama_cpp(GgmlType::Q4_K, 576), DotOrder::Repacked);
    assert_eq!(DotOrder::llama_cpp(GgmlType::Q4_0, 577), DotOrder::VecDot);
    assert_eq!(DotOrder::llama_cpp(GgmlType::Q8_0, 576), DotOrder::VecDot);
    assert_eq!(DotOrder::llama_cpp(GgmlType::Q6_K, 576), DotOrder::VecDot);
}

/// With AVX-512 VNNI the prompt tiles take `vpdpbusd` (for the signed formats the activations
/// offset by 128 and a per-block correction; Q4_1/Q5_1 are unsigned already): the same
/// integers as the AVX2 tiles, so the same bits, including at the extremes of the quants
/// (±127 weights against ±127 activations).
#[test]
fn vnni_prompt_tiles_equal_the_avx2_tiles_bit_for_bit() {
    if !available(Isa::Avx512) {
        eprintln!("skipped: no AVX-512 on this CPU");
        return;
    }
    let mut rng = ChaCha8Rng::seed_from_u64(23);
    let bits = |v: &[f32]| v.iter().map(|f| f.to_bits()).collect::<Vec<_>>();
    for ty in [GgmlType::Q8_0, GgmlType::Q4_0, GgmlType::Q5_0, GgmlType::Q4_1, GgmlType::Q5_1] {
        let (rows, cols, n) = (37, 576, 13);
        let mut w = random(&mut rng, rows * cols, 0.5);
        let mut x = random(&mut rng, n * cols, 1.0);
        // Blocks at the edges of the range: every quant ±127 (or the type's extremes).
        for v in w[..64].iter_mut().chain(&mut x[..64]) {
            *v = if v.is_sign_negative() { -1.0 } else { 1.0 };
        }
        let wq = quantize_matrix(ty, &w, rows, cols);
        let (mut avx2, mut vnni) = (vec![0f32; n * rows], vec![0f32; n * rows]);
        matmul_with(Isa::Avx2, DotOrder::VecDot, ty, &wq, rows, cols, &x, n, &mut avx2).unwrap();
        matmul_with(Isa::Avx512, DotOrder::VecDot, ty, &wq, rows, cols, &x, n, &mut vnni).unwrap();
        assert_eq!(bits(&vnni), bits(&avx2), "{ty}");
    }
}
