//! Dot products in the order of llama.cpp's repacked CPU weights. At load time ggml-cpu
//! interleaves the rows of some weight types eight at a time (`repack.cpp`: Q4_0 and Q4_K on
//! AVX2 CPUs, when the row count is a multiple of 8) and multiplies them with kernels that keep
//! one output per float lane: each block's integer dot product is summed exactly, then added
//! with one fused multiply-add by the product of the two block scales — a single scalar chain
//! per output, where `vec_dot` keeps eight partial lanes and adds them at the end. Which rows
//! share a register does not change any output's value, so these kernels go row by row.

use super::avx2::{
    bytes_from_nibbles_32, h2f, hsum_i32, hsum_i32x4, k_block, k_chunk_lanes, k_chunk_lanes_of, loadu, q4k_quants, vnni_correction,
    vnni_offset,
};
use crate::ggml_type::QK_K;
use std::arch::x86_64::*;

/// The exact integer dot product of one Q4_0 block (`qx`, values in -8..=7) with the 32 int8
/// of an activation block, as eight i32 partial sums.
#[inline]
#[target_feature(enable = "avx2,fma,f16c")]
unsafe fn block_lanes(qx: __m256i, qy: __m256i) -> __m256i {
    // |qx| ≤ 8 and |qy| ≤ 127, so no i16 pair sum saturates: every step is exact.
    let pairs = _mm256_maddubs_epi16(_mm256_sign_epi8(qx, qx), _mm256_sign_epi8(qy, qx));
    _mm256_madd_epi16(pairs, _mm256_set1_epi16(1))
}

/// The four blocks' sums of their eight lanes, exactly, as four i32 (`[v0, v1, v2, v3]`).
#[inline]
#[target_feature(enable = "avx2,fma,f16c")]
unsafe fn sums4(v: [__m256i; 4]) -> __m128i {
    let c = _mm256_hadd_epi32(_mm256_hadd_epi32(v[0], v[1]), _mm256_hadd_epi32(v[2], v[3]));
    _mm_add_epi32(_mm256_castsi256_si128(c), _mm256_extracti128_si256(c, 1))
}

#[inline]
#[target_feature(enable = "avx2,fma,f16c")]
unsafe fn q4_0_values(wb: *const u8) -> __m256i {
    _mm256_sub_epi8(bytes_from_nibbles_32(wb.add(2)), _mm256_set1_epi8(8))
}

/// The f16 scales of four blocks `stride` bytes apart, as four f32.
#[inline]
#[target_feature(enable = "avx2,fma,f16c")]
unsafe fn scales4(p: *const u8, stride: usize) -> __m128 {
    let h = |k: usize| (p.add(k * stride) as *const i16).read_unaligned();
    _mm_cvtph_ps(_mm_set_epi16(0, 0, 0, 0, h(3), h(2), h(1), h(0)))
}

/// `acc` followed by four fused multiply-adds `acc = s[k]·d[k] + acc`, k = 0..4 in order.
#[inline]
#[target_feature(enable = "avx2,fma,f16c")]
unsafe fn chain4(s: __m128, d: __m128, acc: __m128) -> __m128 {
    let acc = _mm_fmadd_ss(s, d, acc);
    let acc = _mm_fmadd_ss(_mm_movehdup_ps(s), _mm_movehdup_ps(d), acc);
    let acc = _mm_fmadd_ss(_mm_movehl_ps(s, s), _mm_movehl_ps(d, d), acc);
    _mm_fmadd_ss(_mm_shuffle_ps(s, s, 3), _mm_shuffle_ps(d, d, 3), acc)
}

/// One Q4_0 weight row against several Q8_0 activation rows (`T` of them): per output
/// `acc = fma(Σ block, d_w·d_a, acc)` over the blocks in order.
#[inline]
#[target_feature(enable = "avx2,fma,f16c")]
unsafe fn q4_0_rows<const T: usize>(w: *const u8, a: [*const u8; T], n: usize) -> [f32; T] {
    let nb = n / 32;
    let mut acc = [_mm_setzero_ps(); T];
    let mut i = 0;
    while i + 4 <= nb {
        let mut qx = [_mm256_setzero_si256(); 4];
        for (k, q) in qx.iter_mut().enumerate() {
            *q = q4_0_values(w.add((i + k) * 18));
        }
        let dw = scales4(w.add(i * 18), 18);
        for t in 0..T {
            let at = a[t].add(i * 34);
            let lanes = [
                block_lanes(qx[0], loadu(at.add(2))),
                block_lanes(qx[1], loadu(at.add(36))),
                block_lanes(qx[2], loadu(at.add(70))),
                block_lanes(qx[3], loadu(at.add(104))),
            ];
            let d = _mm_mul_ps(dw, scales4(at, 34));
            acc[t] = chain4(_mm_cvtepi32_ps(sums4(lanes)), d, acc[t]);
        }
        i += 4;
    }
    let mut out = [0f32; T];
    for t in 0..T {
        out[t] = _mm_cvtss_f32(acc[t]);
    }
    for i in i..nb {
        let wb = w.add(i * 18);
        let (qx, dw) = (q4_0_values(wb), h2f(wb));
        for t in 0..T {
            let ab = a[t].add(i * 34);
            let s = hsum_i32(block_lanes(qx, loadu(ab.add(2)))) as f32;
            out[t] = s.mul_add(dw * h2f(ab), out[t]);
        }
    }
    out
}

/// Four Q4_0 weight rows × four activation rows (`[token][row]`): each weight block unpacked
/// once for the four tokens, each row's chain in a float lane (bitwise [`dot_q4_0_repacked`]).
#[target_feature(enable = "avx2,fma,f16c")]
pub(crate) unsafe fn dot4x4_q4_0_repacked(w: [*const u8; 4], a: [*const u8; 4], n: usize) -> [[f32; 4]; 4] {
    let mut acc = [_mm_setzero_ps(); 4];
    for i in 0..n / 32 {
        let mut qx = [_mm256_setzero_si256(); 4];
        let mut dw = [0f32; 4];
        for r in 0..4 {
            let wb = w[r].add(i * 18);
            qx[r] = q4_0_values(wb);
            dw[r] = h2f(wb);
        }
        let dw = _mm_loadu_ps(dw.as_ptr());
        for t in 0..4 {
            let ab = a[t].add(i * 34);
            let qy = loadu(ab.add(2));
            let lanes = [block_lanes(qx[0], qy), block_lanes(qx[1], qy), block_lanes(qx[2], qy), block_lanes(qx[3], qy)];
            let d = _mm_mul_ps(dw, _mm_set1_ps(h2f(ab)));
            acc[t] = _mm_fmadd_ps(_mm_cvtepi32_ps(sums4(lanes)), d, acc[t]);
        }
    }
    let mut out = [[0f32; 4]; 4];
    for t in 0..4 {
        _mm_storeu_ps(out[t].as_mut_ptr(), acc[t]);
    }
    out
}

/// [`dot4x4_q4_0_repacked`] with AVX-512 VNNI, bitwise the same: each block's eight i32 lanes
/// (sums of four consecutive products) come from one `vpdpbusd` in the offset form of
/// [`vnni_correction`] (the offset activations shared by the four rows, each weight block's
/// correction by the four tokens) — the same exact lanes `block_lanes` makes, then the same
/// sums, conversion and fused multiply-adds.
#[target_feature(enable = "avx2,fma,f16c,avx512vnni,avx512vl")]
pub(crate) unsafe fn dot4x4_q4_0_repacked_vnni(w: [*const u8; 4], a: [*const u8; 4], n: usize) -> [[f32; 4]; 4] {
    let mut acc = [_mm_setzero_ps(); 4];
    for i in 0..n / 32 {
        let mut qx = [_mm256_setzero_si256(); 4];
        let mut corr = [_mm256_setzero_si256(); 4];
        let mut dw = [0f32; 4];
        for r in 0..4 {
            let wb = w[r].add(i * 18);
            qx[r] = q4_0_values(wb);
            corr[r] = vnni_correction(qx[r]);
            dw[r] = h2f(wb);
        }
        let dw = _mm_loadu_ps(dw.as_ptr());
        for t in 0..4 {
            let ab = a[t].add(i * 34);
            let yu = vnni_offset(loadu(ab.add(2)));
            let lanes: [__m256i; 4] = std::array::from_fn(|r| _mm256_dpbusd_epi32(corr[r], yu, qx[r]));
            let d = _mm_mul_ps(dw, _mm_set1_ps(h2f(ab)));
            acc[t] = _mm_fmadd_ps(_mm_cvtepi32_ps(sums4(lanes)), d, acc[t]);
        }
    }
    let mut out = [[0f32; 4]; 4];
    for t in 0..4 {
        _mm_storeu_ps(out[t].as_mut_ptr(), acc[t]);
    }
    out
}

#[target_feature(enable = "avx2,fma,f16c")]
pub(crate) unsafe fn dot_q4_0_repacked(w: *const u8, a: *const u8, n: usize) -> f32 {
    q4_0_rows::<1>(w, [a], n)[0]
}

#[target_feature(enable = "avx2,fma,f16c")]
pub(crate) unsafe fn dot4_q4_0_repacked(w: *const u8, a: [*const u8; 4], n: usize) -> [f32; 4] {
    q4_0_rows::<4>(w, a, n)
}

/// [`k_chunk_lanes`] as exact sums per chunk.
#[inline]
#[target_feature(enable = "avx2,fma,f16c")]
pub(super) unsafe fn k_chunk_sums(
    wb: *const u8,
    ab: *const u8,
    quants: impl Fn(*const u8, usize) -> (__m256i, __m256i),
) -> ([i32; 4], [i32; 4]) {
    let (lanes, mins) = k_chunk_lanes(wb, ab, quants);
    let mut summ = [0i32; 4];
    _mm_storeu_si128(summ.as_mut_ptr() as *mut __m128i, mins);
    let mut sumi = [0i32; 4];
    _mm_storeu_si128(sumi.as_mut_ptr() as *mut __m128i, sums4(lanes));
    (sumi, summ)
}

/// [`k_chunk_lanes`] as exact sums over the whole super-block.
#[inline]
#[target_feature(enable = "avx2,fma,f16c")]
pub(super) unsafe fn k_block_sums(
    wb: *const u8,
    ab: *const u8,
    quants: impl Fn(*const u8, usize) -> (__m256i, __m256i),
) -> (i32, i32) {
    let (l, mins) = k_chunk_lanes(wb, ab, quants);
    let total = _mm256_add_epi32(_mm256_add_epi32(l[0], l[1]), _mm256_add_epi32(l[2], l[3]));
    (hsum_i32(total), hsum_i32x4(mins))
}

/// Q4_K as llama.cpp's repacked kernels sum it (see `scalar::q4_k_repacked`): per super-block
/// for a token alone (`ggml_gemv_q4_K_8x8_q8_K`), per 64-element chunk for tokens in a group
/// of four (`ggml_gemm_q4_K_8x8_q8_K`, `PER_CHUNK`).
#[inline]
#[target_feature(enable = "avx2,fma,f16c")]
unsafe fn q4_k_repacked<const PER_CHUNK: bool>(w: *const u8, a: *const u8, n: usize) -> f32 {
    let (mut acc, mut acc_m) = (0f32, 0f32);
    for i in 0..n / QK_K {
        let (wb, ab) = (w.add(i * 144), a.add(i * 292));
        let d8 = (ab as *const f32).read_unaligned();
        let (d, dmin) = (h2f(wb) * d8, h2f(wb.add(2)) * d8);
        if PER_CHUNK {
            let (sumi, summ) = k_chunk_sums(wb, ab, |wb, c| q4k_quants(wb, c));
            for c in 0..4 {
                acc = (sumi[c] as f32).mul_add(d, acc);
                acc_m = (summ[c] as f32).mul_add(dmin, acc_m);
            }
        } else {
            let (sumi, summ) = k_block_sums(wb, ab, |wb, c| q4k_quants(wb, c));
            acc = (sumi as f32).mul_add(d, acc);
            acc_m = (summ as f32).mul_add(dmin, acc_m);
        }
    }
    acc - acc_m
}

#[target_feature(enable = "avx2,fma,f16c")]
pub(crate) unsafe fn dot_q4_k_repacked(w: *const u8, a: *const u8, n: usize) -> f32 {
    q4_k_repacked::<false>(w, a, n)
}

#[target_feature(enable = "avx2,fma,f16c")]
pub(crate) unsafe fn dot_q4_k_repacked_gemm(w: *const u8, a: *const u8, n: usize) -> f32 {
    q4_k_repacked::<true>(w, a, n)
}

/// [`dot_q4_k_repacked_gemm`] for four tokens (a group of four, as llama.cpp's GEMM takes
/// them), each super-block unpacked once for the four; bitwise the one-token kernel for each.
#[target_feature(enable = "avx2,fma,f16c")]
pub(crate) unsafe fn dot4_q4_k_repacked_gemm(w: *const u8, a: [*const u8; 4], n: usize) -> [f32; 4] {
    let (mut acc, mut acc_m) = ([0f32; 4], [0f32; 4]);
    for i in 0..n / QK_K {
        let wb = w.add(i * 144);
        let k = k_block(wb, |wb, c| q4k_quants(wb, c));
        for t in 0..4 {
            let ab = a[t].add(i * 292);
            let d8 = (ab as *const f32).read_unaligned();
            let (d, dmin) = (h2f(wb) * d8, h2f(wb.add(2)) * d8);
            let (lanes, mins) = k_chunk_lanes_of(&k, ab);
            let (mut sumi, mut summ) = ([0i32; 4], [0i32; 4]);
            _mm_storeu_si128(summ.as_mut_ptr() as *mut __m128i, mins);
            _mm_storeu_si128(sumi.as_mut_ptr() as *mut __m128i, sums4(lanes));
            for c in 0..4 {
                acc[t] = (sumi[c] as f32).mul_add(d, acc[t]);
                acc_m[t] = (summ[c] as f32).mul_add(dmin, acc_m[t]);
            }
        }
    }
    std::array::from_fn(|t| acc[t] - acc_m[t])
}
