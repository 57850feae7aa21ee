//! Four-token AVX2 dot products for the 32-element block formats, used by prompt processing:
//! each weight block is loaded and unpacked once and multiplied with four activation rows,
//! so the weight side's loads and sign/nibble work are shared (ggml gets the same effect
//! from llamafile's tiled sgemm).

use super::avx2::{
    bcast16, bytes_from_bits_32, bytes_from_nibbles_32, h2f, h2f_pair, hsum, hsum_i32, hsum_i32x4, k4_scales_mins, k_block,
    k_chunk_lanes_of, loadu, mul_sum_us8_pairs_float, q4k_quants, q5k_quants, side_sum, sum_i16_pairs_float, vnni_correction,
    vnni_offset, MinTerms,
};
use crate::ggml_type::QK_K;
use std::arch::x86_64::*;

/// `prep(weight_block)` unpacks a weight block once; `block(prepped, act_block)` gives the
/// integer-dot lanes for one activation row. Returns per token the dot product and the
/// side sums (`m * s` for Q4_1/Q5_1). One accumulator per token and the side sum in a scalar
/// fused chain, like the single-token kernel and ggml's, so every token's result is bitwise
/// what decoding it alone gives.
#[inline]
#[target_feature(enable = "avx2,fma,f16c")]
unsafe fn dot_blocks32_x4<P: Copy>(
    w: *const u8,
    a: [*const u8; 4],
    nb: usize,
    wsz: usize,
    asz: usize,
    prep: impl Fn(*const u8) -> P,
    block: impl Fn(P, *const u8) -> __m256,
) -> ([f32; 4], [f32; 4]) {
    let mut acc = [_mm256_setzero_ps(); 4];
    let mut acc_m = [0f32; 4];
    for i in 0..nb {
        let wb = w.add(i * wsz);
        let p = prep(wb);
        let dw = h2f_pair(wb);
        for t in 0..4 {
            let ab = a[t].add(i * asz);
            let da = h2f_pair(ab);
            let s = _mm_mul_ps(dw, da);
            acc[t] = _mm256_fmadd_ps(_mm256_broadcastss_ps(s), block(p, ab), acc[t]);
            acc_m[t] = side_sum(acc_m[t], dw, da);
        }
    }
    let mut dots = [0f32; 4];
    let mut mins = [0f32; 4];
    for t in 0..4 {
        dots[t] = hsum(acc[t]);
        mins[t] = acc_m[t];
    }
    (dots, mins)
}

/// Signed weights: keep |x| and x (for moving x's sign onto y, as `maddubs` needs).
#[inline]
#[target_feature(enable = "avx2,fma,f16c")]
unsafe fn signed(x: __m256i) -> (__m256i, __m256i) {
    (_mm256_sign_epi8(x, x), x)
}

#[inline]
#[target_feature(enable = "avx2,fma,f16c")]
unsafe fn signed_block((ax, x): (__m256i, __m256i), y: __m256i) -> __m256 {
    sum_i16_pairs_float(_mm256_maddubs_epi16(ax, _mm256_sign_epi8(y, x)))
}

#[target_feature(enable = "avx2,fma,f16c")]
pub(crate) unsafe fn dot4_q8_0(w: *const u8, a: [*const u8; 4], n: usize) -> [f32; 4] {
    dot_blocks32_x4(w, a, n / 32, 34, 34, |wb| signed(loadu(wb.add(2))), |p, ab| signed_block(p, loadu(ab.add(2)))).0
}

#[target_feature(enable = "avx2,fma,f16c")]
pub(crate) unsafe fn dot4_q4_0(w: *const u8, a: [*const u8; 4], n: usize) -> [f32; 4] {
    let prep = |wb: *const u8| signed(_mm256_sub_epi8(bytes_from_nibbles_32(wb.add(2)), _mm256_set1_epi8(8)));
    dot_blocks32_x4(w, a, n / 32, 18, 34, prep, |p, ab| signed_block(p, loadu(ab.add(2)))).0
}

#[target_feature(enable = "avx2,fma,f16c")]
pub(crate) unsafe fn dot4_q5_0(w: *const u8, a: [*const u8; 4], n: usize) -> [f32; 4] {
    let prep = |wb: *const u8| {
        let hi = _mm256_andnot_si256(bytes_from_bits_32(wb.add(2)), _mm256_set1_epi8(-16));
        signed(_mm256_or_si256(bytes_from_nibbles_32(wb.add(6)), hi))
    };
    dot_blocks32_x4(w, a, n / 32, 22, 34, prep, |p, ab| signed_block(p, loadu(ab.add(2)))).0
}

/// Unsigned weights (Q4_1/Q5_1) against Q8_1: the minimum enters through lane 1.
#[inline]
#[target_feature(enable = "avx2,fma,f16c")]
unsafe fn with_mins((dots, mins): ([f32; 4], [f32; 4])) -> [f32; 4] {
    [dots[0] + mins[0], dots[1] + mins[1], dots[2] + mins[2], dots[3] + mins[3]]
}

#[target_feature(enable = "avx2,fma,f16c")]
pub(crate) unsafe fn dot4_q4_1(w: *const u8, a: [*const u8; 4], n: usize) -> [f32; 4] {
    with_mins(dot_blocks32_x4(w, a, n / 32, 20, 36, |wb| prep_q4_1(wb), |q, ab| mul_sum_us8_pairs_float(q, loadu(ab.add(4)))))
}

#[target_feature(enable = "avx2,fma,f16c")]
pub(crate) unsafe fn dot4_q5_1(w: *const u8, a: [*const u8; 4], n: usize) -> [f32; 4] {
    with_mins(dot_blocks32_x4(w, a, n / 32, 24, 36, |wb| prep_q5_1(wb), |q, ab| mul_sum_us8_pairs_float(q, loadu(ab.add(4)))))
}

/// Two weight rows × four tokens for the signed 32-element formats (Q8_0, Q4_0, Q5_0): each
/// activation block is loaded once for both rows and each weight block once for all four
/// tokens, with the eight partial sums kept in registers. Returns `[row][token]`.
#[inline]
#[target_feature(enable = "avx2,fma,f16c")]
unsafe fn dot_blocks32_2x4(
    w: [*const u8; 2],
    a: [*const u8; 4],
    nb: usize,
    wsz: usize,
    asz: usize,
    prep: impl Fn(*const u8) -> (__m256i, __m256i),
    qoff: usize,
) -> [[f32; 4]; 2] {
    let mut acc = [[_mm256_setzero_ps(); 4]; 2];
    for i in 0..nb {
        let (w0, w1) = (w[0].add(i * wsz), w[1].add(i * wsz));
        let (p0, p1) = (prep(w0), prep(w1));
        let (d0, d1) = (_mm_cvtph_ps(_mm_set1_epi16((w0 as *const i16).read_unaligned())), _mm_cvtph_ps(_mm_set1_epi16((w1 as *const i16).read_unaligned())));
        for t in 0..4 {
            let ab = a[t].add(i * asz);
            let y = loadu(ab.add(qoff));
            let da = _mm_cvtph_ps(_mm_set1_epi16((ab as *const i16).read_unaligned()));
            let s0 = _mm256_broadcastss_ps(_mm_mul_ps(d0, da));
            let s1 = _mm256_broadcastss_ps(_mm_mul_ps(d1, da));
            acc[0][t] = _mm256_fmadd_ps(s0, signed_block(p0, y), acc[0][t]);
            acc[1][t] = _mm256_fmadd_ps(s1, signed_block(p1, y), acc[1][t]);
        }
    }
    let mut out = [[0f32; 4]; 2];
    for r in 0..2 {
        for t in 0..4 {
            out[r][t] = hsum(acc[r][t]);
        }
    }
    out
}

/// [`dot_blocks32_2x4`] with AVX-512 VNNI for `R` weight rows (2 or 4: AVX-512VL's 32 vector
/// registers hold the 4 × 4 tile), bitwise the same: one `vpdpbusd` per (row, token, block) in
/// the offset form of [`vnni_correction`] (the offset activations shared by the rows, each
/// weight block's correction by the four tokens), the same exact integers the AVX2 tile
/// reaches, then the same conversion, scale product and FMA. The scales are multiplied as
/// whole vectors, one product per (row, token) instead of a product and a broadcast.
#[inline]
#[target_feature(enable = "avx2,fma,f16c,avx512vnni,avx512vl")]
unsafe fn dot_blocks32_rx4_vnni<const R: usize>(
    w: [*const u8; R],
    a: [*const u8; 4],
    nb: usize,
    wsz: usize,
    asz: usize,
    prep: impl Fn(*const u8) -> (__m256i, __m256i),
    qoff: usize,
) -> [[f32; 4]; R] {
    let mut acc = [[_mm256_setzero_ps(); 4]; R];
    for i in 0..nb {
        let mut x = [_mm256_setzero_si256(); R];
        let mut c = [_mm256_setzero_si256(); R];
        let mut d = [_mm256_setzero_ps(); R];
        for r in 0..R {
            let wb = w[r].add(i * wsz);
            x[r] = prep(wb).1;
            c[r] = vnni_correction(x[r]);
            d[r] = _mm256_cvtph_ps(_mm_set1_epi16((wb as *const i16).read_unaligned()));
        }
        for t in 0..4 {
            let ab = a[t].add(i * asz);
            let yu = vnni_offset(loadu(ab.add(qoff)));
            let da = _mm256_cvtph_ps(_mm_set1_epi16((ab as *const i16).read_unaligned()));
            for r in 0..R {
                let dot = _mm256_cvtepi32_ps(_mm256_dpbusd_epi32(c[r], yu, x[r]));
                acc[r][t] = _mm256_fmadd_ps(_mm256_mul_ps(d[r], da), dot, acc[r][t]);
            }
        }
    }
    let mut out = [[0f32; 4]; R];
    for r in 0..R {
        for t in 0..4 {
            out[r][t] = hsum(acc[r][t]);
        }
    }
    out
}

/// [`dot_blocks32_x4`] for the unsigned formats (Q4_1, Q5_1 against Q8_1) with AVX-512 VNNI,
/// for `R` weight rows at once, each (row, token) bitwise what `dot_blocks32_x4` gives: the
/// weights are already unsigned, so one `vpdpbusd` replaces `maddubs` + `madd` with the same
/// exact integers (pair sums at most 2·31·127, no saturation), and the scale product, FMA and
/// the scalar chain of the minimum's term are the same operations in the same order.
#[inline]
#[target_feature(enable = "avx2,fma,f16c,avx512vnni,avx512vl")]
unsafe fn dot_blocks32_unsigned_rx4_vnni<const R: usize>(
    w: [*const u8; R],
    a: [*const u8; 4],
    nb: usize,
    wsz: usize,
    prep: impl Fn(*const u8) -> __m256i,
) -> [[f32; 4]; R] {
    let mut acc = [[_mm256_setzero_ps(); 4]; R];
    let mut acc_m = [[0f32; 4]; R];
    for i in 0..nb {
        let mut q = [_mm256_setzero_si256(); R];
        let mut dw = [_mm_setzero_ps(); R];
        for r in 0..R {
            let wb = w[r].add(i * wsz);
            q[r] = prep(wb);
            dw[r] = h2f_pair(wb);
        }
        for t in 0..4 {
            let ab = a[t].add(i * 36);
            let y = loadu(ab.add(4));
            let da = h2f_pair(ab);
            for r in 0..R {
                let s = _mm_mul_ps(dw[r], da);
                let dot = _mm256_cvtepi32_ps(_mm256_dpbusd_epi32(_mm256_setzero_si256(), q[r], y));
                acc[r][t] = _mm256_fmadd_ps(_mm256_broadcastss_ps(s), dot, acc[r][t]);
                acc_m[r][t] = side_sum(acc_m[r][t], dw[r], da);
            }
        }
    }
    let mut out = [[0f32; 4]; R];
    for r in 0..R {
        for t in 0..4 {
            out[r][t] = hsum(acc[r][t]) + acc_m[r][t];
        }
    }
    out
}

/// Q4_1's quants as unsigned bytes (0..15).
#[inline]
#[target_feature(enable = "avx2,fma,f16c")]
unsafe fn prep_q4_1(wb: *const u8) -> __m256i {
    bytes_from_nibbles_32(wb.add(4))
}

/// Q5_1's quants as unsigned bytes (0..31).
#[inline]
#[target_feature(enable = "avx2,fma,f16c")]
unsafe fn prep_q5_1(wb: *const u8) -> __m256i {
    let hi = _mm256_and_si256(bytes_from_bits_32(wb.add(4)), _mm256_set1_epi8(0x10));
    _mm256_or_si256(bytes_from_nibbles_32(wb.add(8)), hi)
}

#[target_feature(enable = "avx2,fma,f16c,avx512vnni,avx512vl")]
pub(crate) unsafe fn dot4x4_q4_1_vnni(w: [*const u8; 4], a: [*const u8; 4], n: usize) -> [[f32; 4]; 4] {
    dot_blocks32_unsigned_rx4_vnni(w, a, n / 32, 20, |wb| prep_q4_1(wb))
}

#[target_feature(enable = "avx2,fma,f16c,avx512vnni,avx512vl")]
pub(crate) unsafe fn dot4x4_q5_1_vnni(w: [*const u8; 4], a: [*const u8; 4], n: usize) -> [[f32; 4]; 4] {
    dot_blocks32_unsigned_rx4_vnni(w, a, n / 32, 24, |wb| prep_q5_1(wb))
}

/// Unpacks a Q4_0 block's quants to signed bytes (−8..7).
#[inline]
#[target_feature(enable = "avx2,fma,f16c")]
unsafe fn prep_q4_0(wb: *const u8) -> (__m256i, __m256i) {
    signed(_mm256_sub_epi8(bytes_from_nibbles_32(wb.add(2)), _mm256_set1_epi8(8)))
}

/// Unpacks a Q5_0 block's quants to signed bytes (−16..15).
#[inline]
#[target_feature(enable = "avx2,fma,f16c")]
unsafe fn prep_q5_0(wb: *const u8) -> (__m256i, __m256i) {
    let hi = _mm256_andnot_si256(bytes_from_bits_32(wb.add(2)), _mm256_set1_epi8(-16));
    signed(_mm256_or_si256(bytes_from_nibbles_32(wb.add(6)), hi))
}

#[target_feature(enable = "avx2,fma,f16c")]
pub(crate) unsafe fn dot2x4_q8_0(w: [*const u8; 2], a: [*const u8; 4], n: usize) -> [[f32; 4]; 2] {
    dot_blocks32_2x4(w, a, n / 32, 34, 34, |wb| signed(loadu(wb.add(2))), 2)
}

#[target_feature(enable = "avx2,fma,f16c")]
pub(crate) unsafe fn dot2x4_q4_0(w: [*const u8; 2], a: [*const u8; 4], n: usize) -> [[f32; 4]; 2] {
    dot_blocks32_2x4(w, a, n / 32, 18, 34, |wb| prep_q4_0(wb), 2)
}

#[target_feature(enable = "avx2,fma,f16c")]
pub(crate) unsafe fn dot2x4_q5_0(w: [*const u8; 2], a: [*const u8; 4], n: usize) -> [[f32; 4]; 2] {
    dot_blocks32_2x4(w, a, n / 32, 22, 34, |wb| prep_q5_0(wb), 2)
}

/// The VNNI tiles of `R` rows (2 or 4) × four tokens: `[row][token]`.
#[target_feature(enable = "avx2,fma,f16c,avx512vnni,avx512vl")]
pub(crate) unsafe fn tile_q8_0_vnni<const R: usize>(w: [*const u8; R], a: [*const u8; 4], n: usize) -> [[f32; 4]; R] {
    dot_blocks32_rx4_vnni(w, a, n / 32, 34, 34, |wb| signed(loadu(wb.add(2))), 2)
}

#[target_feature(enable = "avx2,fma,f16c,avx512vnni,avx512vl")]
pub(crate) unsafe fn tile_q4_0_vnni<const R: usize>(w: [*const u8; R], a: [*const u8; 4], n: usize) -> [[f32; 4]; R] {
    dot_blocks32_rx4_vnni(w, a, n / 32, 18, 34, |wb| prep_q4_0(wb), 2)
}

#[target_feature(enable = "avx2,fma,f16c,avx512vnni,avx512vl")]
pub(crate) unsafe fn tile_q5_0_vnni<const R: usize>(w: [*const u8; R], a: [*const u8; 4], n: usize) -> [[f32; 4]; R] {
    dot_blocks32_rx4_vnni(w, a, n / 32, 22, 34, |wb| prep_q5_0(wb), 2)
}

/// Float weights against four f32 activation rows: each group of eight weights is loaded and
/// converted to f32 once (`load(i)`) and multiplied into four accumulators. `scalar(i)` reads
/// one weight for the tail.
#[inline]
#[target_feature(enable = "avx2,fma,f16c")]
unsafe fn dot_dense_x4(
    a: [*const u8; 4],
    n: usize,
    load: impl Fn(usize) -> __m256,
    scalar: impl Fn(usize) -> f32,
) -> [f32; 4] {
    let a = a.map(|p| p as *const f32);
    let mut acc = [_mm256_setzero_ps(); 4];
    let mut i = 0;
    while i + 8 <= n {
        let w = load(i);
        for t in 0..4 {
            acc[t] = _mm256_fmadd_ps(w, _mm256_loadu_ps(a[t].add(i)), acc[t]);
        }
        i += 8;
    }
    let mut out = acc.map(|v| hsum(v));
    while i < n {
        let w = scalar(i);
        for t in 0..4 {
            out[t] += w * *a[t].add(i);
        }
        i += 1;
    }
    out
}

#[target_feature(enable = "avx2,fma,f16c")]
pub(crate) unsafe fn dot4_f32(w: *const u8, a: [*const u8; 4], n: usize) -> [f32; 4] {
    let w = w as *const f32;
    dot_dense_x4(a, n, |i| _mm256_loadu_ps(w.add(i)), |i| w.add(i).read_unaligned())
}

#[target_feature(enable = "avx2,fma,f16c")]
pub(crate) unsafe fn dot4_f16(w: *const u8, a: [*const u8; 4], n: usize) -> [f32; 4] {
    dot_dense_x4(a, n, |i| _mm256_cvtph_ps(_mm_loadu_si128(w.add(2 * i) as *const __m128i)), |i| h2f(w.add(2 * i)))
}

#[target_feature(enable = "avx2,fma,f16c")]
pub(crate) unsafe fn dot4_bf16(w: *const u8, a: [*const u8; 4], n: usize) -> [f32; 4] {
    let load = |i: usize| {
        let v = _mm256_cvtepu16_epi32(_mm_loadu_si128(w.add(2 * i) as *const __m128i));
        _mm256_castsi256_ps(_mm256_slli_epi32(v, 16))
    };
    dot_dense_x4(a, n, load, |i| f32::from_bits(((w.add(2 * i) as *const u16).read_unaligned() as u32) << 16))
}

/// Q4_K/Q5_K weights against four Q8_K activation rows: each superblock's scales, minimums and
/// quants are unpacked once and applied to all four tokens (see `avx2::dot_k_scale_min` for
/// the single-token form this mirrors).
#[inline]
#[target_feature(enable = "avx2,fma,f16c")]
unsafe fn dot_k_scale_min_x4(
    w: *const u8,
    a: [*const u8; 4],
    n: usize,
    wsz: usize,
    scalar_mins: bool,
    quants: impl Fn(*const u8, usize) -> (__m256i, __m256i),
) -> [f32; 4] {
    const ASZ: usize = 4 + QK_K + 2 * QK_K / 16; // Q8_K block: d, quants, bsums
    let mut acc = [_mm256_setzero_ps(); 4];
    let mut mins_acc = [MinTerms::new(scalar_mins); 4];
    for i in 0..n / QK_K {
        let wb = w.add(i * wsz);
        let dm = h2f_pair(wb);
        let mins_and_scales = k4_scales_mins(wb.add(4));
        let mins = _mm256_extracti128_si256(mins_and_scales, 1);
        let sc128 = _mm256_castsi256_si128(mins_and_scales);
        let scales = _mm256_set_m128i(sc128, sc128);
        let mut sumi = [_mm256_setzero_si256(); 4];
        for c in 0..4 {
            let (ql, qh) = quants(wb, c);
            let (s_l, s_h) = (bcast16(scales, 2 * c as i32), bcast16(scales, 2 * c as i32 + 1));
            for t in 0..4 {
                let q8 = a[t].add(i * ASZ + 4);
                let p_l = _mm256_madd_epi16(s_l, _mm256_maddubs_epi16(ql, loadu(q8.add(64 * c))));
                let p_h = _mm256_madd_epi16(s_h, _mm256_maddubs_epi16(qh, loadu(q8.add(64 * c + 32))));
                sumi[t] = _mm256_add_epi32(sumi[t], _mm256_add_epi32(p_l, p_h));
            }
        }
        for t in 0..4 {
            let ab = a[t].add(i * ASZ);
            let d8 = (ab as *const f32).read_unaligned();
            let d = d8 * _mm_cvtss_f32(dm);
            let dmin = -d8 * _mm_cvtss_f32(_mm_movehdup_ps(dm));
            let q8sums = loadu(ab.add(4 + QK_K));
            let q8s = _mm_hadd_epi16(_mm256_castsi256_si128(q8sums), _mm256_extracti128_si256(q8sums, 1));
            mins_acc[t].add(dmin, _mm_madd_epi16(mins, q8s));
            acc[t] = _mm256_fmadd_ps(_mm256_set1_ps(d), _mm256_cvtepi32_ps(sumi[t]), acc[t]);
        }
    }
    let mut out = [0f32; 4];
    for t in 0..4 {
        out[t] = hsum(acc[t]) + mins_acc[t].total();
    }
    out
}

#[target_feature(enable = "avx2,fma,f16c")]
pub(crate) unsafe fn dot4_q4_k(w: *const u8, a: [*const u8; 4], n: usize) -> [f32; 4] {
    dot_k_scale_min_x4(w, a, n, 144, false, |wb, c| q4k_quants(wb, c))
}

#[target_feature(enable = "avx2,fma,f16c")]
pub(crate) unsafe fn dot4_q5_k(w: *const u8, a: [*const u8; 4], n: usize) -> [f32; 4] {
    dot_k_scale_min_x4(w, a, n, 176, true, |wb, c| q5k_quants(wb, c))
}

/// `avx2::dot_k_min_tiled` (Q4_K/Q5_K in llama.cpp's tiled order) for four activation rows,
/// each super-block unpacked once for the four (bitwise `dot_k_min_tiled` for each token).
#[inline]
#[target_feature(enable = "avx2,fma,f16c")]
unsafe fn dot4_k_min_tiled(
    w: *const u8,
    a: [*const u8; 4],
    n: usize,
    wsz: usize,
    quants: impl Fn(*const u8, usize) -> (__m256i, __m256i) + Copy,
) -> [f32; 4] {
    let mut acc = [0f32; 4];
    for i in 0..n / QK_K {
        let wb = w.add(i * wsz);
        let k = k_block(wb, quants);
        let (d, dmin) = (h2f(wb), h2f(wb.add(2)));
        for t in 0..4 {
            let ab = a[t].add(i * 292);
            let (l, mins) = k_chunk_lanes_of(&k, ab);
            let total = _mm256_add_epi32(_mm256_add_epi32(l[0], l[1]), _mm256_add_epi32(l[2], l[3]));
            let (s1, s2) = (hsum_i32(total) as f32, hsum_i32x4(mins) as f32);
            let r = (-dmin).mul_add(s2, d * s1);
            acc[t] = r.mul_add((ab as *const f32).read_unaligned(), acc[t]);
        }
    }
    acc
}

#[target_feature(enable = "avx2,fma,f16c")]
pub(crate) unsafe fn dot4_q4_k_tiled(w: *const u8, a: [*const u8; 4], n: usize) -> [f32; 4] {
    dot4_k_min_tiled(w, a, n, 144, |wb, c| q4k_quants(wb, c))
}

#[target_feature(enable = "avx2,fma,f16c")]
pub(crate) unsafe fn dot4_q5_k_tiled(w: *const u8, a: [*const u8; 4], n: usize) -> [f32; 4] {
    dot4_k_min_tiled(w, a, n, 176, |wb, c| q5k_quants(wb, c))
}
