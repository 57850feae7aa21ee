//! Portable dot products: the fallback on CPUs without AVX2 and the reference the SIMD
//! kernels are tested against. Weights are one row of ggml blocks, activations one row of
//! the matching activation format (f32, Q8_0, Q8_1 or Q8_K), `n` the element count.

use crate::ggml_type::QK_K;
use crate::GgmlType;
use crate::quant::{f16_at, f32_at, Q8K_BSUMS, Q8K_QS};
use half::f16;

#[inline(always)]
fn f32_le(b: &[u8], i: usize) -> f32 {
    f32_at(b, 4 * i)
}

/// f32 activations are our own in-memory floats viewed as bytes, hence native order.
#[inline(always)]
fn f32_ne(b: &[u8], i: usize) -> f32 {
    f32::from_ne_bytes([b[4 * i], b[4 * i + 1], b[4 * i + 2], b[4 * i + 3]])
}

/// Eight independent partial sums keep the loop free of a serial dependency chain, which
/// lets the compiler vectorize it without reassociating.
#[inline(always)]
fn dot_lanes(n: usize, mut f: impl FnMut(usize) -> f32) -> f32 {
    let mut acc = [0.0f32; 8];
    let main = n / 8 * 8;
    for i in (0..main).step_by(8) {
        for (k, a) in acc.iter_mut().enumerate() {
            *a += f(i + k);
        }
    }
    let mut s = ((acc[0] + acc[4]) + (acc[1] + acc[5])) + ((acc[2] + acc[6]) + (acc[3] + acc[7]));
    for i in main..n {
        s += f(i);
    }
    s
}

pub fn dot_f32_slices(a: &[f32], b: &[f32]) -> f32 {
    let n = a.len().min(b.len());
    dot_lanes(n, |i| a[i] * b[i])
}

pub(crate) fn dot_f32(w: &[u8], a: &[u8], n: usize) -> f32 {
    dot_lanes(n, |i| f32_le(w, i) * f32_ne(a, i))
}

pub(crate) fn dot_f16(w: &[u8], a: &[u8], n: usize) -> f32 {
    dot_lanes(n, |i| {
        f16::from_bits(u16::from_le_bytes([w[2 * i], w[2 * i + 1]])).to_f32() * f32_ne(a, i)
    })
}

pub(crate) fn dot_bf16(w: &[u8], a: &[u8], n: usize) -> f32 {
    dot_lanes(n, |i| {
        f32::from_bits((u16::from_le_bytes([w[2 * i], w[2 * i + 1]]) as u32) << 16) * f32_ne(a, i)
    })
}

#[inline(always)]
fn i8_dot(a: &[u8], b: &[u8]) -> i32 {
    a.iter()
        .zip(b)
        .map(|(&x, &y)| x as i8 as i32 * y as i8 as i32)
        .sum()
}

pub(crate) fn dot_q8_0(w: &[u8], a: &[u8], n: usize) -> f32 {
    let mut s = 0.0f32;
    for (wb, ab) in w.chunks_exact(34).zip(a.chunks_exact(34)).take(n / 32) {
        s += (f16_at(wb, 0) * f16_at(ab, 0)) * i8_dot(&wb[2..], &ab[2..]) as f32;
    }
    s
}

/// The exact integer dot product of one Q4_0 block with one Q8_0 block.
fn q4_0_sumi(wb: &[u8], ab: &[u8]) -> i32 {
    let (qs, q8) = (&wb[2..18], &ab[2..34]);
    let mut sumi = 0i32;
    for j in 0..16 {
        sumi += ((qs[j] & 0xf) as i32 - 8) * q8[j] as i8 as i32;
        sumi += ((qs[j] >> 4) as i32 - 8) * q8[j + 16] as i8 as i32;
    }
    sumi
}

pub(crate) fn dot_q4_0(w: &[u8], a: &[u8], n: usize) -> f32 {
    let mut s = 0.0f32;
    for (wb, ab) in w.chunks_exact(18).zip(a.chunks_exact(34)).take(n / 32) {
        s += (f16_at(wb, 0) * f16_at(ab, 0)) * q4_0_sumi(wb, ab) as f32;
    }
    s
}

/// [`dot_q4_0`] in the order of llama.cpp's repacked Q4_0 rows (`simd::avx2_repacked`): each
/// block's exact integer sum joins the output with one fused multiply-add.
pub(crate) fn dot_q4_0_repacked(w: &[u8], a: &[u8], n: usize) -> f32 {
    let mut s = 0.0f32;
    for (wb, ab) in w.chunks_exact(18).zip(a.chunks_exact(34)).take(n / 32) {
        s = (q4_0_sumi(wb, ab) as f32).mul_add(f16_at(wb, 0) * f16_at(ab, 0), s);
    }
    s
}

/// Q4_1 against Q8_1: the block minimum times the stored `d*sum(q)` replaces a per-element add.
pub(crate) fn dot_q4_1(w: &[u8], a: &[u8], n: usize) -> f32 {
    let mut s = 0.0f32;
    for (wb, ab) in w.chunks_exact(20).zip(a.chunks_exact(36)).take(n / 32) {
        let (qs, q8) = (&wb[4..20], &ab[4..36]);
        let mut sumi = 0i32;
        for j in 0..16 {
            sumi += (qs[j] & 0xf) as i32 * q8[j] as i8 as i32;
            sumi += (qs[j] >> 4) as i32 * q8[j + 16] as i8 as i32;
        }
        s += (f16_at(wb, 0) * f16_at(ab, 0)) * sumi as f32 + f16_at(wb, 2) * f16_at(ab, 2);
    }
    s
}

#[inline(always)]
fn q5_sumi(qs: &[u8], qh: u32, q8: &[u8], offset: i32) -> i32 {
    let mut sumi = 0i32;
    for j in 0..16 {
        let h0 = (((qh >> j) << 4) & 0x10) as i32;
        let h1 = ((qh >> (j + 12)) & 0x10) as i32;
        sumi += (((qs[j] & 0xf) as i32 | h0) - offset) * q8[j] as i8 as i32;
        sumi += (((qs[j] >> 4) as i32 | h1) - offset) * q8[j + 16] as i8 as i32;
    }
    sumi
}

pub(crate) fn dot_q5_0(w: &[u8], a: &[u8], n: usize) -> f32 {
    let mut s = 0.0f32;
    for (wb, ab) in w.chunks_exact(22).zip(a.chunks_exact(34)).take(n / 32) {
        let qh = u32::from_le_bytes([wb[2], wb[3], wb[4], wb[5]]);
        let sumi = q5_sumi(&wb[6..], qh, &ab[2..], 16);
        s += (f16_at(wb, 0) * f16_at(ab, 0)) * sumi as f32;
    }
    s
}

pub(crate) fn dot_q5_1(w: &[u8], a: &[u8], n: usize) -> f32 {
    let mut s = 0.0f32;
    for (wb, ab) in w.chunks_exact(24).zip(a.chunks_exact(36)).take(n / 32) {
        let qh = u32::from_le_bytes([wb[4], wb[5], wb[6], wb[7]]);
        let sumi = q5_sumi(&wb[8..], qh, &ab[4..], 0);
        s += (f16_at(wb, 0) * f16_at(ab, 0)) * sumi as f32 + f16_at(wb, 2) * f16_at(ab, 2);
    }
    s
}

#[inline(always)]
fn bsum(ab: &[u8], j: usize) -> i32 {
    i16::from_le_bytes([ab[Q8K_BSUMS + 2 * j], ab[Q8K_BSUMS + 2 * j + 1]]) as i32
}

/// Q4_K/Q5_K share the scale/min layout; `level(c, l)` yields the unsigned quant of element
/// `l` of 64-chunk `c` in its low (l < 32) or high (l >= 32) half. Returns per chunk the
/// exact integer sums `Σ scale·Σ level·q8` and `Σ min·bsum` of its two sub-blocks.
#[inline(always)]
fn k_scale_min_sums(wb: &[u8], ab: &[u8], level: impl Fn(usize, usize) -> i32) -> ([i32; 4], [i32; 4]) {
    let scales = &wb[4..16];
    let q8 = &ab[Q8K_QS..Q8K_BSUMS];
    let (mut sumi, mut summ) = ([0i32; 4], [0i32; 4]);
    for c in 0..4 {
        for half in 0..2 {
            let (sc, m) = crate::quant::scale_min_k4(2 * c + half, scales);
            let mut s = 0i32;
            for l in 0..32 {
                s += level(c, 32 * half + l) * q8[64 * c + 32 * half + l] as i8 as i32;
            }
            sumi[c] += sc as i32 * s;
            let sub = 2 * (2 * c + half);
            summ[c] += m as i32 * (bsum(ab, sub) + bsum(ab, sub + 1));
        }
    }
    (sumi, summ)
}

#[inline(always)]
fn dot_k_scale_min(wb: &[u8], ab: &[u8], level: impl Fn(usize, usize) -> i32) -> f32 {
    let (sumi, summ) = k_scale_min_sums(wb, ab, level);
    let (sumi, summ) = (sumi.iter().sum::<i32>(), summ.iter().sum::<i32>());
    let d8 = f32_at(ab, 0);
    d8 * f16_at(wb, 0) * sumi as f32 - d8 * f16_at(wb, 2) * summ as f32
}

fn q4_k_level(wb: &[u8]) -> impl Fn(usize, usize) -> i32 + '_ {
    move |c, l| {
        let q = wb[16 + 32 * c + (l & 31)];
        (if l < 32 { q & 0xf } else { q >> 4 }) as i32
    }
}

/// Q4_K in the order of llama.cpp's repacked rows: per output two chains, the exact scaled sums
/// by `d·d8` and the exact minimum sums by `dmin·d8`, subtracted at the end; one fused
/// multiply-add each per super-block for a token alone (`ggml_gemv_q4_K_8x8_q8_K`), per
/// 64-element chunk for tokens in a group of four (`ggml_gemm_q4_K_8x8_q8_K`, `PER_CHUNK`).
fn q4_k_repacked<const PER_CHUNK: bool>(w: &[u8], a: &[u8], n: usize) -> f32 {
    let (mut acc, mut acc_m) = (0.0f32, 0.0f32);
    for (wb, ab) in w.chunks_exact(144).zip(a.chunks_exact(292)).take(n / QK_K) {
        let (sumi, summ) = k_scale_min_sums(wb, ab, q4_k_level(wb));
        let d8 = f32_at(ab, 0);
        let (d, dmin) = (f16_at(wb, 0) * d8, f16_at(wb, 2) * d8);
        if PER_CHUNK {
            for c in 0..4 {
                acc = (sumi[c] as f32).mul_add(d, acc);
                acc_m = (summ[c] as f32).mul_add(dmin, acc_m);
            }
        } else {
            acc = (sumi.iter().sum::<i32>() as f32).mul_add(d, acc);
            acc_m = (summ.iter().sum::<i32>() as f32).mul_add(dmin, acc_m);
        }
    }
    acc - acc_m
}

pub(crate) fn dot_q4_k_repacked(w: &[u8], a: &[u8], n: usize) -> f32 {
    q4_k_repacked::<false>(w, a, n)
}

pub(crate) fn dot_q4_k_repacked_gemm(w: &[u8], a: &[u8], n: usize) -> f32 {
    q4_k_repacked::<true>(w, a, n)
}

pub(crate) fn dot_q4_k(w: &[u8], a: &[u8], n: usize) -> f32 {
    let mut s = 0.0f32;
    for (wb, ab) in w.chunks_exact(144).zip(a.chunks_exact(292)).take(n / QK_K) {
        s += dot_k_scale_min(wb, ab, q4_k_level(wb));
    }
    s
}

fn q5_k_level(wb: &[u8]) -> impl Fn(usize, usize) -> i32 + '_ {
    move |c, l| {
        let q = wb[48 + 32 * c + (l & 31)];
        let lo = if l < 32 { q & 0xf } else { q >> 4 };
        let bit = 2 * c + (l >= 32) as usize;
        lo as i32 + (((wb[16 + (l & 31)] >> bit) & 1) as i32) * 16
    }
}

pub(crate) fn dot_q5_k(w: &[u8], a: &[u8], n: usize) -> f32 {
    let mut s = 0.0f32;
    for (wb, ab) in w.chunks_exact(176).zip(a.chunks_exact(292)).take(n / QK_K) {
        s += dot_k_scale_min(wb, ab, q5_k_level(wb));
    }
    s
}

/// Q4_K/Q5_K in the order of llama.cpp's tiled product (see `avx2::dot_k_min_tiled`).
fn dot_k_min_tiled<'w, L: Fn(usize, usize) -> i32 + 'w>(w: &'w [u8], a: &[u8], n: usize, wsz: usize, level: impl Fn(&'w [u8]) -> L) -> f32 {
    let mut acc = 0.0f32;
    for (wb, ab) in w.chunks_exact(wsz).zip(a.chunks_exact(292)).take(n / QK_K) {
        let (sumi, summ) = k_scale_min_sums(wb, ab, level(wb));
        let (s1, s2) = (sumi.iter().sum::<i32>() as f32, summ.iter().sum::<i32>() as f32);
        let r = (-f16_at(wb, 2)).mul_add(s2, f16_at(wb, 0) * s1);
        acc = r.mul_add(f32_at(ab, 0), acc);
    }
    acc
}

pub(crate) fn dot_q4_k_tiled(w: &[u8], a: &[u8], n: usize) -> f32 {
    dot_k_min_tiled(w, a, n, 144, q4_k_level)
}

pub(crate) fn dot_q5_k_tiled(w: &[u8], a: &[u8], n: usize) -> f32 {
    dot_k_min_tiled(w, a, n, 176, q5_k_level)
}

/// The exact integer dot product of one Q6_K super-block with one Q8_K block.
fn q6_k_sumi(wb: &[u8], ab: &[u8]) -> i32 {
    let q8 = &ab[Q8K_QS..Q8K_BSUMS];
    let mut sumi = 0i32;
    for h in 0..2 {
        let (ql, qh) = (&wb[64 * h..64 * h + 64], &wb[128 + 32 * h..128 + 32 * h + 32]);
        let sc = &wb[192 + 8 * h..200 + 8 * h];
        let q8 = &q8[128 * h..128 * h + 128];
        for l in 0..32 {
            let is = l / 16;
            let q = [
                ((ql[l] & 0xf) | ((qh[l] & 3) << 4)) as i32 - 32,
                ((ql[l + 32] & 0xf) | (((qh[l] >> 2) & 3) << 4)) as i32 - 32,
                ((ql[l] >> 4) | (((qh[l] >> 4) & 3) << 4)) as i32 - 32,
                ((ql[l + 32] >> 4) | (((qh[l] >> 6) & 3) << 4)) as i32 - 32,
            ];
            for (k, qk) in q.iter().enumerate() {
                sumi += (sc[is + 2 * k] as i8 as i32) * qk * q8[l + 32 * k] as i8 as i32;
            }
        }
    }
    sumi
}

pub(crate) fn dot_q6_k(w: &[u8], a: &[u8], n: usize) -> f32 {
    let mut s = 0.0f32;
    for (wb, ab) in w.chunks_exact(210).zip(a.chunks_exact(292)).take(n / QK_K) {
        s += f32_at(ab, 0) * f16_at(wb, 208) * q6_k_sumi(wb, ab) as f32;
    }
    s
}

/// [`dot_q6_k`] in the order of llama.cpp's tiled K-quant product (see `avx2::dot_q6_k_tiled`):
/// bitwise the same as the AVX2 version, since the integer sums are exact.
pub(crate) fn dot_q6_k_tiled(w: &[u8], a: &[u8], n: usize) -> f32 {
    let mut s = 0.0f32;
    for (wb, ab) in w.chunks_exact(210).zip(a.chunks_exact(292)).take(n / QK_K) {
        s = (q6_k_sumi(wb, ab) as f32 * f16_at(wb, 208)).mul_add(f32_at(ab, 0), s);
    }
    s
}

pub(crate) fn dot_q2_k(w: &[u8], a: &[u8], n: usize) -> f32 {
    let mut s = 0.0f32;
    for (wb, ab) in w.chunks_exact(84).zip(a.chunks_exact(292)).take(n / QK_K) {
        let (sc, q2) = (&wb[..16], &wb[16..80]);
        let q8 = &ab[Q8K_QS..Q8K_BSUMS];
        let summs: i32 = (0..16).map(|j| bsum(ab, j) * (sc[j] >> 4) as i32).sum();
        let mut isum = 0i32;
        for half in 0..2 {
            for j in 0..4 {
                for part in 0..2 {
                    let mut s16 = 0i32;
                    for l in 16 * part..16 * part + 16 {
                        let q = ((q2[32 * half + l] >> (2 * j)) & 3) as i32;
                        s16 += q * q8[128 * half + 32 * j + l] as i8 as i32;
                    }
                    isum += (sc[8 * half + 2 * j + part] & 0xf) as i32 * s16;
                }
            }
        }
        let d8 = f32_at(ab, 0);
        s += d8 * f16_at(wb, 80) * isum as f32 - d8 * f16_at(wb, 82) * summs as f32;
    }
    s
}

pub(crate) fn dot_q3_k(w: &[u8], a: &[u8], n: usize) -> f32 {
    let mut s = 0.0f32;
    for (wb, ab) in w.chunks_exact(110).zip(a.chunks_exact(292)).take(n / QK_K) {
        let (hm, q3, scales) = (&wb[..32], &wb[32..96], &wb[96..108]);
        let q8 = &ab[Q8K_QS..Q8K_BSUMS];
        let mut isum = 0i32;
        for half in 0..2 {
            for j in 0..4 {
                let bit = 4 * half + j;
                for part in 0..2 {
                    let mut s16 = 0i32;
                    for l in 16 * part..16 * part + 16 {
                        let low = ((q3[32 * half + l] >> (2 * j)) & 3) as i32;
                        let q = low - if hm[l] & (1 << bit) != 0 { 0 } else { 4 };
                        s16 += q * q8[128 * half + 32 * j + l] as i8 as i32;
                    }
                    let sc = crate::quant::q3k_scale(scales, 8 * half + 2 * j + part) - 32;
                    isum += sc * s16;
                }
            }
        }
        s += f32_at(ab, 0) * f16_at(wb, 108) * isum as f32;
    }
    s
}

/// `y += alpha · x` for one row of F32, F16 or Q8_0 values (the portable path of
/// `simd::axpy_row`).
pub(crate) fn axpy_row(ty: GgmlType, y: &mut [f32], alpha: f32, x: &[u8]) {
    match ty {
        GgmlType::F32 => {
            for (i, v) in y.iter_mut().enumerate() {
                *v += alpha * f32_at(x, 4 * i);
            }
        }
        GgmlType::F16 => {
            for (i, v) in y.iter_mut().enumerate() {
                *v += alpha * f16_at(x, 2 * i);
            }
        }
        _ => {
            for (ys, block) in y.chunks_exact_mut(32).zip(x.chunks_exact(34)) {
                let s = alpha * f16_at(block, 0);
                for (v, &q) in ys.iter_mut().zip(&block[2..]) {
                    *v += s * q as i8 as f32;
                }
            }
        }
    }
}
