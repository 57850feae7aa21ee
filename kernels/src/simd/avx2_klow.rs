//! AVX2 dot products of Q2_K and Q3_K weights against Q8_K activations, after ggml's x86
//! kernels: the 2-bit planes are split with shifts and masks, multiplied as unsigned bytes
//! against the signed activations (`maddubs`), then weighted by the 16 sub-block scales with
//! `madd`. Callers guarantee the CPU features and slice lengths (see `simd::mod`).

use super::avx2::{h2f, hsum, loadu};
use crate::ggml_type::QK_K;
use std::arch::x86_64::*;

/// Byte shuffles that spread sub-block scales 2k (low 16 lanes) and 2k+1 (high 16 lanes) of a
/// register holding eight i16 scales duplicated in both halves.
const fn scale_shuffles() -> [[u8; 32]; 4] {
    let mut t = [[0u8; 32]; 4];
    let mut k = 0;
    while k < 4 {
        let mut b = 0;
        while b < 32 {
            let s = if b < 16 { 2 * k } else { 2 * k + 1 };
            t[k][b] = (2 * s + (b % 2)) as u8;
            b += 1;
        }
        k += 1;
    }
    t
}
static SCALE_SHUFFLE: [[u8; 32]; 4] = scale_shuffles();

/// Sixteen i8 scales widened to i16, as two registers each holding eight of them twice.
#[inline]
#[target_feature(enable = "avx2,fma,f16c")]
unsafe fn split_scales(scales8: __m128i) -> [__m256i; 2] {
    let all = _mm256_cvtepi8_epi16(scales8);
    let (lo, hi) = (
        _mm256_castsi256_si128(all),
        _mm256_extracti128_si256(all, 1),
    );
    [_mm256_set_m128i(lo, lo), _mm256_set_m128i(hi, hi)]
}

/// Sum over one 128-element half: `p[k]` are the i16 pair products of 2-bit plane k.
#[inline]
#[target_feature(enable = "avx2,fma,f16c")]
unsafe fn scale_planes(scales: __m256i, p: [__m256i; 4]) -> __m256i {
    let mut s = _mm256_setzero_si256();
    for (k, pk) in p.iter().enumerate() {
        let shuf = loadu(SCALE_SHUFFLE[k].as_ptr());
        s = _mm256_add_epi32(s, _mm256_madd_epi16(_mm256_shuffle_epi8(scales, shuf), *pk));
    }
    s
}

#[target_feature(enable = "avx2,fma,f16c")]
pub(crate) unsafe fn dot_q2_k(w: *const u8, a: *const u8, n: usize) -> f32 {
    let m3 = _mm256_set1_epi8(3);
    let m4 = _mm_set1_epi8(0xf);
    let mut acc = _mm256_setzero_ps();
    for i in 0..n / QK_K {
        let (wb, ab) = (w.add(i * 84), a.add(i * 292));
        let d8 = (ab as *const f32).read_unaligned();
        let d = d8 * h2f(wb.add(80));
        let dmin = -d8 * h2f(wb.add(82));
        let mins_and_scales = _mm_loadu_si128(wb as *const __m128i);
        let scales8 = _mm_and_si128(mins_and_scales, m4);
        let mins8 = _mm_and_si128(_mm_srli_epi16(mins_and_scales, 4), m4);
        // The minimum term needs only the per-16 activation sums Q8_K already carries.
        let prod = _mm256_madd_epi16(_mm256_cvtepi8_epi16(mins8), loadu(ab.add(260)));
        acc = _mm256_fmadd_ps(_mm256_set1_ps(dmin), _mm256_cvtepi32_ps(prod), acc);
        let scales = split_scales(scales8);
        let mut sumi = _mm256_setzero_si256();
        for (h, sc) in scales.iter().enumerate() {
            let q2bits = loadu(wb.add(16 + 32 * h));
            let q8 = ab.add(4 + 128 * h);
            let mut p = [_mm256_setzero_si256(); 4];
            for (k, pk) in p.iter_mut().enumerate() {
                let plane = match k {
                    0 => q2bits,
                    1 => _mm256_srli_epi16(q2bits, 2),
                    2 => _mm256_srli_epi16(q2bits, 4),
                    _ => _mm256_srli_epi16(q2bits, 6),
                };
                *pk = _mm256_maddubs_epi16(_mm256_and_si256(plane, m3), loadu(q8.add(32 * k)));
            }
            sumi = _mm256_add_epi32(sumi, scale_planes(*sc, p));
        }
        acc = _mm256_fmadd_ps(_mm256_set1_ps(d), _mm256_cvtepi32_ps(sumi), acc);
    }
    hsum(acc)
}

#[target_feature(enable = "avx2,fma,f16c")]
pub(crate) unsafe fn dot_q3_k(w: *const u8, a: *const u8, n: usize) -> f32 {
    let m3 = _mm256_set1_epi8(3);
    let mone = _mm256_set1_epi8(1);
    let m32 = _mm_set1_epi8(32);
    let mut acc = _mm256_setzero_ps();
    for i in 0..n / QK_K {
        let (wb, ab) = (w.add(i * 110), a.add(i * 292));
        let d = (ab as *const f32).read_unaligned() * h2f(wb.add(108));
        let mut sc = [0u8; 16];
        let raw = std::slice::from_raw_parts(wb.add(96), 12);
        for (j, s) in sc.iter_mut().enumerate() {
            *s = crate::quant::q3k_scale(raw, j) as u8;
        }
        let scales8 = _mm_sub_epi8(_mm_loadu_si128(sc.as_ptr() as *const __m128i), m32);
        let scales = split_scales(scales8);
        let hbits = loadu(wb);
        let mut sumi = _mm256_setzero_si256();
        for (h, scv) in scales.iter().enumerate() {
            let q3bits = loadu(wb.add(32 + 32 * h));
            let q8 = ab.add(4 + 128 * h);
            let mut p = [_mm256_setzero_si256(); 4];
            for (k, pk) in p.iter_mut().enumerate() {
                let plane = match k {
                    0 => q3bits,
                    1 => _mm256_srli_epi16(q3bits, 2),
                    2 => _mm256_srli_epi16(q3bits, 4),
                    _ => _mm256_srli_epi16(q3bits, 6),
                };
                let low = _mm256_and_si256(plane, m3);
                // 4 where the high bit is clear: the level is low - 4 there. Two unsigned
                // products subtracted keep maddubs in its unsigned x signed form.
                let bit = (4 * h + k) as i32;
                let cleared =
                    _mm256_andnot_si256(hbits, _mm256_sll_epi16(mone, _mm_cvtsi32_si128(bit)));
                let high = _mm256_slli_epi16(_mm256_srl_epi16(cleared, _mm_cvtsi32_si128(bit)), 2);
                let y = loadu(q8.add(32 * k));
                *pk = _mm256_sub_epi16(_mm256_maddubs_epi16(low, y), _mm256_maddubs_epi16(high, y));
            }
            sumi = _mm256_add_epi32(sumi, scale_planes(*scv, p));
        }
        acc = _mm256_fmadd_ps(_mm256_set1_ps(d), _mm256_cvtepi32_ps(sumi), acc);
    }
    hsum(acc)
}
