//! AVX2 + FMA + F16C dot products, modelled on ggml's x86 kernels: integer dot products per
//! block via `maddubs` (u8 x i8 -> i16 pairs) then `madd` against ones/scales (-> i32), one
//! float FMA per block. Callers guarantee the CPU features and the slice lengths (see the
//! safe wrappers in `simd::mod`); every load is unaligned because ggml blocks are packed.

use crate::ggml_type::QK_K;
use std::arch::x86_64::*;

// The 2/3-bit K-quant kernels live apart for size; re-exported so the table sees one module.
pub(crate) use super::avx2_klow::{dot_q2_k, dot_q3_k};

#[inline]
#[target_feature(enable = "avx2,fma,f16c")]
pub(super) unsafe fn h2f(p: *const u8) -> f32 {
    let bits = (p as *const u16).read_unaligned();
    _mm_cvtss_f32(_mm_cvtph_ps(_mm_cvtsi32_si128(bits as i32)))
}

/// The two f16 at `p`, `p+2` in lanes 0 and 1. A full 32-bit load (never a 16-bit insert)
/// because LLVM lowers the latter to `vpinsrw` into whatever register is free, often an
/// accumulator, which chains every block onto the previous FMA.
#[inline]
#[target_feature(enable = "avx2,fma,f16c")]
pub(super) unsafe fn h2f_pair(p: *const u8) -> __m128 {
    _mm_cvtph_ps(_mm_cvtsi32_si128((p as *const i32).read_unaligned()))
}

#[inline]
#[target_feature(enable = "avx2,fma,f16c")]
pub(super) unsafe fn hsum(x: __m256) -> f32 {
    let mut r = _mm_add_ps(_mm256_extractf128_ps(x, 1), _mm256_castps256_ps128(x));
    r = _mm_add_ps(r, _mm_movehl_ps(r, r));
    r = _mm_add_ss(r, _mm_movehdup_ps(r));
    _mm_cvtss_f32(r)
}

#[inline]
#[target_feature(enable = "avx2,fma,f16c")]
pub(super) unsafe fn sum_i16_pairs_float(x: __m256i) -> __m256 {
    _mm256_cvtepi32_ps(_mm256_madd_epi16(x, _mm256_set1_epi16(1)))
}

/// Unsigned x signed bytes, summed in groups of 4 to f32 lanes.
#[inline]
#[target_feature(enable = "avx2,fma,f16c")]
pub(super) unsafe fn mul_sum_us8_pairs_float(ax: __m256i, sy: __m256i) -> __m256 {
    sum_i16_pairs_float(_mm256_maddubs_epi16(ax, sy))
}

/// Signed x signed: `maddubs` wants one unsigned operand, so move x's sign onto y.
#[inline]
#[target_feature(enable = "avx2,fma,f16c")]
unsafe fn mul_sum_i8_pairs_float(x: __m256i, y: __m256i) -> __m256 {
    mul_sum_us8_pairs_float(_mm256_sign_epi8(x, x), _mm256_sign_epi8(y, x))
}

/// 16 packed bytes -> 32 nibbles: low nibbles in bytes 0..16, high nibbles in 16..32,
/// which is exactly the element order of Q4_0/Q4_1/Q5_x blocks.
#[inline]
#[target_feature(enable = "avx2,fma,f16c")]
pub(super) unsafe fn bytes_from_nibbles_32(p: *const u8) -> __m256i {
    let tmp = _mm_loadu_si128(p as *const __m128i);
    let bytes = _mm256_set_m128i(_mm_srli_epi16(tmp, 4), tmp);
    _mm256_and_si256(bytes, _mm256_set1_epi8(0xf))
}

/// 32 bits -> 32 bytes of 0xff (bit set) or 0x00.
#[inline]
#[target_feature(enable = "avx2,fma,f16c")]
pub(super) unsafe fn bytes_from_bits_32(p: *const u8) -> __m256i {
    let x32 = (p as *const u32).read_unaligned();
    let shuf = _mm256_set_epi64x(
        0x0303030303030303,
        0x0202020202020202,
        0x0101010101010101,
        0,
    );
    let bytes = _mm256_shuffle_epi8(_mm256_set1_epi32(x32 as i32), shuf);
    let bytes = _mm256_or_si256(bytes, _mm256_set1_epi64x(0x7fbfdfeff7fbfdfe));
    _mm256_cmpeq_epi8(bytes, _mm256_set1_epi64x(-1))
}

#[inline]
#[target_feature(enable = "avx2,fma,f16c")]
pub(super) unsafe fn loadu(p: *const u8) -> __m256i {
    _mm256_loadu_si256(p as *const __m256i)
}

/// Shared driver of the 32-element formats. `block(wb, ab)` returns the integer-dot lanes (as
/// f32). Lane 0 of (f16 pair at wb) * (f16 pair at ab) is the block scale, lane 1 is `m * s`
/// for Q4_1/Q5_1 x Q8_1; the lane sums come back as the second value.
///
/// One accumulator over the blocks in order and the side sum in a scalar chain, as ggml's AVX2
/// `ggml_vec_dot_*` kernels do: the result is then bitwise llama.cpp's on the same activations
/// (a second accumulator for even blocks hides the FMA latency, but its different rounding was
/// enough to part our greedy text from llama.cpp's at close calls; see tests/tests/smollm2.rs).
#[inline]
#[target_feature(enable = "avx2,fma,f16c")]
unsafe fn dot_blocks32(
    w: *const u8,
    a: *const u8,
    nb: usize,
    wsz: usize,
    asz: usize,
    block: impl Fn(*const u8, *const u8) -> __m256,
) -> (f32, f32) {
    let mut acc = _mm256_setzero_ps();
    let mut acc_m = 0f32;
    for i in 0..nb {
        let (w0, a0) = (w.add(i * wsz), a.add(i * asz));
        let dw = h2f_pair(w0);
        let da = h2f_pair(a0);
        let s0 = _mm_mul_ps(dw, da);
        acc = _mm256_fmadd_ps(_mm256_broadcastss_ps(s0), block(w0, a0), acc);
        acc_m = side_sum(acc_m, dw, da);
    }
    (hsum(acc), acc_m)
}

/// `acc + m·s` from lane 1 of the two f16 pairs, as ggml's `summs += m * s` compiles (GCC
/// contracts it into one fused multiply-add).
#[inline]
#[target_feature(enable = "avx2,fma,f16c")]
pub(super) unsafe fn side_sum(acc: f32, dw: __m128, da: __m128) -> f32 {
    let m = _mm_movehdup_ps(dw);
    let s = _mm_movehdup_ps(da);
    _mm_cvtss_f32(_mm_fmadd_ss(m, s, _mm_set_ss(acc)))
}

#[target_feature(enable = "avx2,fma,f16c")]
pub(crate) unsafe fn dot_q8_0(w: *const u8, a: *const u8, n: usize) -> f32 {
    let acc = dot_blocks32(w, a, n / 32, 34, 34, |wb, ab| {
        mul_sum_i8_pairs_float(loadu(wb.add(2)), loadu(ab.add(2)))
    });
    acc.0
}

#[target_feature(enable = "avx2,fma,f16c")]
pub(crate) unsafe fn dot_q4_0(w: *const u8, a: *const u8, n: usize) -> f32 {
    let acc = dot_blocks32(w, a, n / 32, 18, 34, |wb, ab| {
        let qx = _mm256_sub_epi8(bytes_from_nibbles_32(wb.add(2)), _mm256_set1_epi8(8));
        mul_sum_i8_pairs_float(qx, loadu(ab.add(2)))
    });
    acc.0
}

#[target_feature(enable = "avx2,fma,f16c")]
pub(crate) unsafe fn dot_q5_0(w: *const u8, a: *const u8, n: usize) -> f32 {
    let acc = dot_blocks32(w, a, n / 32, 22, 34, |wb, ab| {
        // Missing 5th bit means value - 16 < 0: OR-ing 0xF0 into the nibble gives exactly
        // that as a signed byte, so no subtract is needed.
        let hi = _mm256_andnot_si256(bytes_from_bits_32(wb.add(2)), _mm256_set1_epi8(-16));
        let qx = _mm256_or_si256(bytes_from_nibbles_32(wb.add(6)), hi);
        mul_sum_i8_pairs_float(qx, loadu(ab.add(2)))
    });
    acc.0
}

#[target_feature(enable = "avx2,fma,f16c")]
pub(crate) unsafe fn dot_q4_1(w: *const u8, a: *const u8, n: usize) -> f32 {
    let nb = n / 32;
    let acc = dot_blocks32(w, a, nb, 20, 36, |wb, ab| {
        mul_sum_us8_pairs_float(bytes_from_nibbles_32(wb.add(4)), loadu(ab.add(4)))
    });
    acc.0 + acc.1
}

#[target_feature(enable = "avx2,fma,f16c")]
pub(crate) unsafe fn dot_q5_1(w: *const u8, a: *const u8, n: usize) -> f32 {
    let nb = n / 32;
    let acc = dot_blocks32(w, a, nb, 24, 36, |wb, ab| {
        let hi = _mm256_and_si256(bytes_from_bits_32(wb.add(4)), _mm256_set1_epi8(0x10));
        let qx = _mm256_or_si256(bytes_from_nibbles_32(wb.add(8)), hi);
        mul_sum_us8_pairs_float(qx, loadu(ab.add(4)))
    });
    acc.0 + acc.1
}

/// Unpacks the 12-byte Q4_K/Q5_K scale field into 16 u16 lanes: scales 0..8 in the low
/// half, mins 0..8 in the high half (ggml's kmask shuffle).
#[inline]
#[target_feature(enable = "avx2,fma,f16c")]
pub(super) unsafe fn k4_scales_mins(p: *const u8) -> __m256i {
    const KMASK1: u32 = 0x3f3f3f3f;
    const KMASK2: u32 = 0x0f0f0f0f;
    const KMASK3: u32 = 0x03030303;
    let p = p as *const u32;
    let mut u = [
        p.read_unaligned(),
        p.add(1).read_unaligned(),
        p.add(2).read_unaligned(),
        0,
    ];
    u[3] = ((u[2] >> 4) & KMASK2) | (((u[1] >> 6) & KMASK3) << 4);
    let uaux = u[1] & KMASK1;
    u[1] = (u[2] & KMASK2) | (((u[0] >> 6) & KMASK3) << 4);
    u[2] = uaux;
    u[0] &= KMASK1;
    _mm256_cvtepu8_epi16(_mm_set_epi32(
        u[3] as i32,
        u[2] as i32,
        u[1] as i32,
        u[0] as i32,
    ))
}

/// Broadcasts 16-bit lane `i` of a 128-bit half to all lanes.
#[inline]
#[target_feature(enable = "avx2,fma,f16c")]
pub(super) unsafe fn bcast16(v: __m256i, i: i32) -> __m256i {
    let lo = (2 * i) as u16 | (((2 * i + 1) as u16) << 8);
    _mm256_shuffle_epi8(v, _mm256_set1_epi16(lo as i16))
}

/// A Q4_K or Q5_K super-block unpacked for [`k_chunk_lanes_of`]: its sub-block scales (in
/// both halves), minimums, and each 64-element chunk's levels. Unpacked once, it serves any
/// number of activation blocks.
#[derive(Clone, Copy)]
pub(super) struct KBlock {
    scales: __m256i,
    mins: __m128i,
    quants: [(__m256i, __m256i); 4],
}

#[inline]
#[target_feature(enable = "avx2,fma,f16c")]
pub(super) unsafe fn k_block(wb: *const u8, quants: impl Fn(*const u8, usize) -> (__m256i, __m256i)) -> KBlock {
    let mins_and_scales = k4_scales_mins(wb.add(4));
    let sc128 = _mm256_castsi256_si128(mins_and_scales);
    KBlock {
        scales: _mm256_set_m128i(sc128, sc128),
        mins: _mm256_extracti128_si256(mins_and_scales, 1),
        quants: [quants(wb, 0), quants(wb, 1), quants(wb, 2), quants(wb, 3)],
    }
}

/// One Q4_K or Q5_K super-block (`quants(wb, c)`: chunk c's levels) against one Q8_K block,
/// per 64-element chunk: eight i32 lanes summing to the exact `Σ scale·Σ level·q8` of its two
/// sub-blocks, and (lane c) the exact `Σ min·(32-element activation sum)` of chunk c's two.
#[inline]
#[target_feature(enable = "avx2,fma,f16c")]
pub(super) unsafe fn k_chunk_lanes(
    wb: *const u8,
    ab: *const u8,
    quants: impl Fn(*const u8, usize) -> (__m256i, __m256i),
) -> ([__m256i; 4], __m128i) {
    k_chunk_lanes_of(&k_block(wb, quants), ab)
}

/// [`k_chunk_lanes`] of an unpacked super-block.
#[inline]
#[target_feature(enable = "avx2,fma,f16c")]
pub(super) unsafe fn k_chunk_lanes_of(k: &KBlock, ab: *const u8) -> ([__m256i; 4], __m128i) {
    let q8sums = loadu(ab.add(4 + QK_K));
    // Pairs of 16-element sums make the eight 32-element ones the minimums go with.
    let q8s = _mm_hadd_epi16(_mm256_castsi256_si128(q8sums), _mm256_extracti128_si256(q8sums, 1));
    let mins = _mm_madd_epi16(k.mins, q8s);
    let q8 = ab.add(4);
    let mut lanes = [_mm256_setzero_si256(); 4];
    for (c, l) in lanes.iter_mut().enumerate() {
        let (ql, qh) = k.quants[c];
        let p_l = _mm256_madd_epi16(bcast16(k.scales, 2 * c as i32), _mm256_maddubs_epi16(ql, loadu(q8.add(64 * c))));
        let p_h = _mm256_madd_epi16(bcast16(k.scales, 2 * c as i32 + 1), _mm256_maddubs_epi16(qh, loadu(q8.add(64 * c + 32))));
        *l = _mm256_add_epi32(p_l, p_h);
    }
    (lanes, mins)
}

/// The minimum terms `Σ dmin·(Σ min·bsum)` of a Q4_K or Q5_K dot product, summed as ggml sums
/// them: for Q4_K in four float lanes (one FMA each per super-block, reduced at the end), for
/// Q5_K in one scalar (`summs += dmin·Σ`, which GCC fuses). Either total is added after the
/// main lanes' sum.
#[derive(Clone, Copy)]
pub(super) struct MinTerms {
    in_scalar: bool,
    lanes: __m128,
    scalar: f32,
}

impl MinTerms {
    /// `in_scalar`: Q5_K's order (one scalar); Q4_K's otherwise.
    #[inline]
    #[target_feature(enable = "avx2,fma,f16c")]
    pub(super) unsafe fn new(in_scalar: bool) -> Self {
        MinTerms { in_scalar, lanes: _mm_setzero_ps(), scalar: 0.0 }
    }

    /// One super-block: `dmin` (already negated and times the activation scale) by the four
    /// exact `Σ min·bsum` lanes of `prod`.
    #[inline]
    #[target_feature(enable = "avx2,fma,f16c")]
    pub(super) unsafe fn add(&mut self, dmin: f32, prod: __m128i) {
        if self.in_scalar {
            self.scalar = dmin.mul_add(hsum_i32x4(prod) as f32, self.scalar);
        } else {
            self.lanes = _mm_fmadd_ps(_mm_set1_ps(dmin), _mm_cvtepi32_ps(prod), self.lanes);
        }
    }

    #[inline]
    #[target_feature(enable = "avx2,fma,f16c")]
    pub(super) unsafe fn total(self) -> f32 {
        if self.in_scalar {
            return self.scalar;
        }
        let m = _mm_add_ps(self.lanes, _mm_movehl_ps(self.lanes, self.lanes));
        _mm_cvtss_f32(_mm_add_ss(m, _mm_movehdup_ps(m)))
    }
}

/// Q4_K and Q5_K against Q8_K; `quants(c)` yields the 64 unsigned levels of chunk `c` as
/// (first 32, second 32); `scalar_mins` picks Q5_K's order of the minimum terms ([`MinTerms`]).
#[inline]
#[target_feature(enable = "avx2,fma,f16c")]
unsafe fn dot_k_scale_min(
    w: *const u8,
    a: *const u8,
    n: usize,
    wsz: usize,
    scalar_mins: bool,
    quants: impl Fn(*const u8, usize) -> (__m256i, __m256i),
) -> f32 {
    let mut acc = _mm256_setzero_ps();
    let mut mins = MinTerms::new(scalar_mins);
    for i in 0..n / QK_K {
        let (wb, ab) = (w.add(i * wsz), a.add(i * 292));
        let d8 = (ab as *const f32).read_unaligned();
        let dm = h2f_pair(wb);
        let d = d8 * _mm_cvtss_f32(dm);
        let dmin = -d8 * _mm_cvtss_f32(_mm_movehdup_ps(dm));
        let (l, prod) = k_chunk_lanes(wb, ab, &quants);
        mins.add(dmin, prod);
        // Integer lanes: any order of these adds gives ggml's lanes exactly.
        let sumi = _mm256_add_epi32(_mm256_add_epi32(l[0], l[1]), _mm256_add_epi32(l[2], l[3]));
        acc = _mm256_fmadd_ps(_mm256_set1_ps(d), _mm256_cvtepi32_ps(sumi), acc);
    }
    hsum(acc) + mins.total()
}

/// Chunk `c` (64 weights) of a Q4_K superblock as two vectors of 4-bit values.
#[inline]
#[target_feature(enable = "avx2,fma,f16c")]
pub(super) unsafe fn q4k_quants(wb: *const u8, c: usize) -> (__m256i, __m256i) {
    let bits = loadu(wb.add(16 + 32 * c));
    let m4 = _mm256_set1_epi8(0xf);
    (_mm256_and_si256(bits, m4), _mm256_and_si256(_mm256_srli_epi16(bits, 4), m4))
}

/// Chunk `c` (64 weights) of a Q5_K superblock as two vectors of 5-bit values.
#[inline]
#[target_feature(enable = "avx2,fma,f16c")]
pub(super) unsafe fn q5k_quants(wb: *const u8, c: usize) -> (__m256i, __m256i) {
    let bits = loadu(wb.add(48 + 32 * c));
    let hbits = loadu(wb.add(16));
    let m4 = _mm256_set1_epi8(0xf);
    let one = _mm256_set1_epi8(1);
    // Bit 2c of each qh byte extends the low half, bit 2c+1 the high half, to 5 bits.
    let shift = _mm_cvtsi32_si128(2 * c as i32);
    let h = _mm256_srl_epi16(hbits, shift);
    let h_l = _mm256_slli_epi16(_mm256_and_si256(h, one), 4);
    let h_h = _mm256_slli_epi16(_mm256_and_si256(_mm256_srli_epi16(h, 1), one), 4);
    (
        _mm256_or_si256(_mm256_and_si256(bits, m4), h_l),
        _mm256_or_si256(_mm256_and_si256(_mm256_srli_epi16(bits, 4), m4), h_h),
    )
}

#[target_feature(enable = "avx2,fma,f16c")]
pub(crate) unsafe fn dot_q4_k(w: *const u8, a: *const u8, n: usize) -> f32 {
    dot_k_scale_min(w, a, n, 144, false, |wb, c| q4k_quants(wb, c))
}

#[target_feature(enable = "avx2,fma,f16c")]
pub(crate) unsafe fn dot_q5_k(w: *const u8, a: *const u8, n: usize) -> f32 {
    dot_k_scale_min(w, a, n, 176, true, |wb, c| q5k_quants(wb, c))
}

/// One Q6_K super-block against one Q8_K block as ggml's AVX2 `vec_dot_q6_K_q8_K` lays it out:
/// eight i32 lanes whose sum is the exact integer dot product. The levels enter `maddubs`
/// unsigned (0..63) and the offset of 32 comes off afterwards as `32·Σ scale·bsum`, lane by
/// lane. The lanes' integers (and so their rounding to f32 before the per-block FMA) depend on
/// where the offset is taken, so taking it per element, as an older ggml did, is not bitwise
/// the same.
#[inline]
#[target_feature(enable = "avx2,fma,f16c")]
unsafe fn q6_k_lanes(wb: *const u8, ab: *const u8) -> __m256i {
    let m4 = _mm256_set1_epi8(0xf);
    let m2 = _mm256_set1_epi8(3);
    let scales = _mm_loadu_si128(wb.add(192) as *const __m128i);
    // Lane j: 32·(bsum[2j]·scale[2j] + bsum[2j+1]·scale[2j+1]).
    let bsums = loadu(ab.add(4 + QK_K));
    let offset = _mm256_slli_epi32(_mm256_madd_epi16(bsums, _mm256_cvtepi8_epi16(scales)), 5);
    let mut sumi = _mm256_setzero_si256();
    for h in 0..2 {
        let ql = wb.add(64 * h);
        let qh = loadu(wb.add(128 + 32 * h));
        let q8 = ab.add(4 + 128 * h);
        let bits1 = loadu(ql);
        let bits2 = loadu(ql.add(32));
        let lows = [
            _mm256_and_si256(bits1, m4),
            _mm256_and_si256(bits2, m4),
            _mm256_and_si256(_mm256_srli_epi16(bits1, 4), m4),
            _mm256_and_si256(_mm256_srli_epi16(bits2, 4), m4),
        ];
        for (k, low) in lows.iter().enumerate() {
            let hk = match k {
                0 => qh,
                1 => _mm256_srli_epi16(qh, 2),
                2 => _mm256_srli_epi16(qh, 4),
                _ => _mm256_srli_epi16(qh, 6),
            };
            let q6 = _mm256_or_si256(*low, _mm256_slli_epi16(_mm256_and_si256(hk, m2), 4));
            // 0..63 × int8, two at a time: at most 16 002, so no i16 saturates.
            let p = _mm256_maddubs_epi16(q6, loadu(q8.add(32 * k)));
            let s = (8 * h + 2 * k) as i8;
            let shuf = _mm_set_epi8(s + 1, s + 1, s + 1, s + 1, s + 1, s + 1, s + 1, s + 1, s, s, s, s, s, s, s, s);
            let sc = _mm256_cvtepi8_epi16(_mm_shuffle_epi8(scales, shuf));
            sumi = _mm256_add_epi32(sumi, _mm256_madd_epi16(sc, p));
        }
    }
    _mm256_sub_epi32(sumi, offset)
}

#[target_feature(enable = "avx2,fma,f16c")]
pub(crate) unsafe fn dot_q6_k(w: *const u8, a: *const u8, n: usize) -> f32 {
    let mut acc = _mm256_setzero_ps();
    for i in 0..n / QK_K {
        let (wb, ab) = (w.add(i * 210), a.add(i * 292));
        let d = (ab as *const f32).read_unaligned() * h2f(wb.add(208));
        acc = _mm256_fmadd_ps(_mm256_set1_ps(d), _mm256_cvtepi32_ps(q6_k_lanes(wb, ab)), acc);
    }
    hsum(acc)
}

/// [`dot_q6_k`] in the order of llama.cpp's tiled K-quant product (`ggml-cpu/tiled`, its AVX2
/// kernel, taken for batches of 8 or more tokens): per super-block the exact integer sum times
/// the weight scale, then one fused multiply-add by the activation scale.
#[target_feature(enable = "avx2,fma,f16c")]
pub(crate) unsafe fn dot_q6_k_tiled(w: *const u8, a: *const u8, n: usize) -> f32 {
    let mut acc = 0f32;
    for i in 0..n / QK_K {
        let (wb, ab) = (w.add(i * 210), a.add(i * 292));
        let s = hsum_i32(q6_k_lanes(wb, ab)) as f32;
        acc = (s * h2f(wb.add(208))).mul_add((ab as *const f32).read_unaligned(), acc);
    }
    acc
}

/// Q4_K or Q5_K (`wsz` bytes a super-block, `quants` its levels) in the order of llama.cpp's
/// tiled product (AVX2 kernel): per super-block `r = d·s1`, `r = r − dmin·s2` fused, then one
/// fused multiply-add by the activation scale.
#[inline]
#[target_feature(enable = "avx2,fma,f16c")]
unsafe fn dot_k_min_tiled(
    w: *const u8,
    a: *const u8,
    n: usize,
    wsz: usize,
    quants: impl Fn(*const u8, usize) -> (__m256i, __m256i) + Copy,
) -> f32 {
    let mut acc = 0f32;
    for i in 0..n / QK_K {
        let (wb, ab) = (w.add(i * wsz), a.add(i * 292));
        let (s1, s2) = super::avx2_repacked::k_block_sums(wb, ab, quants);
        let (s1, s2) = (s1 as f32, s2 as f32);
        let r = (-h2f(wb.add(2))).mul_add(s2, h2f(wb) * s1);
        acc = r.mul_add((ab as *const f32).read_unaligned(), acc);
    }
    acc
}

#[target_feature(enable = "avx2,fma,f16c")]
pub(crate) unsafe fn dot_q4_k_tiled(w: *const u8, a: *const u8, n: usize) -> f32 {
    dot_k_min_tiled(w, a, n, 144, |wb, c| q4k_quants(wb, c))
}

#[target_feature(enable = "avx2,fma,f16c")]
pub(crate) unsafe fn dot_q5_k_tiled(w: *const u8, a: *const u8, n: usize) -> f32 {
    dot_k_min_tiled(w, a, n, 176, |wb, c| q5k_quants(wb, c))
}

/// `vpdpbusd` multiplies unsigned by signed bytes. For signed weights `x` (quants within ±127)
/// against signed activations `y`, the activations go in offset by 128 ([`vnni_offset`], once
/// per activation block) and each i32 lane starts at −128 × the sum of its four weights (this,
/// once per weight block): Σ(y + 128)·x − 128·Σx = Σ y·x, exactly the lanes AVX2's `maddubs` +
/// `madd` give (whose 16-bit pair sums, at most 2·127·127, never saturate).
#[inline]
#[target_feature(enable = "avx2,fma,f16c,avx512vnni,avx512vl")]
pub(super) unsafe fn vnni_correction(x: __m256i) -> __m256i {
    let sum = _mm256_dpbusd_epi32(_mm256_setzero_si256(), _mm256_set1_epi8(1), x);
    _mm256_sub_epi32(_mm256_setzero_si256(), _mm256_slli_epi32(sum, 7))
}

/// Signed activation bytes as `y + 128`, for [`vnni_correction`].
#[inline]
#[target_feature(enable = "avx2,fma,f16c,avx512vnni,avx512vl")]
pub(super) unsafe fn vnni_offset(y: __m256i) -> __m256i {
    _mm256_xor_si256(y, _mm256_set1_epi8(-128))
}

/// The exact sum of eight i32 lanes.
#[inline]
#[target_feature(enable = "avx2,fma,f16c")]
pub(super) unsafe fn hsum_i32(v: __m256i) -> i32 {
    hsum_i32x4(_mm_add_epi32(_mm256_castsi256_si128(v), _mm256_extracti128_si256(v, 1)))
}

/// The exact sum of four i32 lanes.
#[inline]
#[target_feature(enable = "avx2,fma,f16c")]
pub(super) unsafe fn hsum_i32x4(s: __m128i) -> i32 {
    let s = _mm_add_epi32(s, _mm_unpackhi_epi64(s, s));
    _mm_cvtsi128_si32(_mm_add_epi32(s, _mm_shuffle_epi32(s, 1)))
}

/// Dense dot with four accumulators; `load(i)` yields 8 weights starting at element i.
#[inline]
#[target_feature(enable = "avx2,fma,f16c")]
unsafe fn dot_dense(
    a: *const f32,
    n: usize,
    load: impl Fn(usize) -> __m256,
    tail: impl Fn(usize) -> f32,
) -> f32 {
    let mut acc = [_mm256_setzero_ps(); 4];
    let mut i = 0;
    while i + 32 <= n {
        for (k, acc_k) in acc.iter_mut().enumerate() {
            *acc_k = _mm256_fmadd_ps(load(i + 8 * k), _mm256_loadu_ps(a.add(i + 8 * k)), *acc_k);
        }
        i += 32;
    }
    while i + 8 <= n {
        acc[0] = _mm256_fmadd_ps(load(i), _mm256_loadu_ps(a.add(i)), acc[0]);
        i += 8;
    }
    let sum = _mm256_add_ps(_mm256_add_ps(acc[0], acc[1]), _mm256_add_ps(acc[2], acc[3]));
    let mut s = hsum(sum);
    while i < n {
        s += tail(i) * *a.add(i);
        i += 1;
    }
    s
}

#[target_feature(enable = "avx2,fma,f16c")]
pub(crate) unsafe fn dot_f32(w: *const u8, a: *const u8, n: usize) -> f32 {
    let w = w as *const f32;
    dot_dense(
        a as *const f32,
        n,
        |i| _mm256_loadu_ps(w.add(i)),
        |i| w.add(i).read_unaligned(),
    )
}

#[target_feature(enable = "avx2,fma,f16c")]
pub(crate) unsafe fn dot_f16(w: *const u8, a: *const u8, n: usize) -> f32 {
    dot_dense(
        a as *const f32,
        n,
        |i| _mm256_cvtph_ps(_mm_loadu_si128(w.add(2 * i) as *const __m128i)),
        |i| h2f(w.add(2 * i)),
    )
}

#[target_feature(enable = "avx2,fma,f16c")]
pub(crate) unsafe fn dot_bf16(w: *const u8, a: *const u8, n: usize) -> f32 {
    dot_dense(
        a as *const f32,
        n,
        |i| {
            let v = _mm256_cvtepu16_epi32(_mm_loadu_si128(w.add(2 * i) as *const __m128i));
            _mm256_castsi256_ps(_mm256_slli_epi32(v, 16))
        },
        |i| f32::from_bits(((w.add(2 * i) as *const u16).read_unaligned() as u32) << 16),
    )
}

/// `y[i] += alpha · x[i]` for `n` elements.
#[target_feature(enable = "avx2,fma,f16c")]
pub(crate) unsafe fn axpy_f32(y: *mut f32, alpha: f32, x: *const f32, n: usize) {
    let va = _mm256_set1_ps(alpha);
    let mut i = 0;
    while i + 8 <= n {
        let v = _mm256_fmadd_ps(va, _mm256_loadu_ps(x.add(i)), _mm256_loadu_ps(y.add(i)));
        _mm256_storeu_ps(y.add(i), v);
        i += 8;
    }
    while i < n {
        *y.add(i) += alpha * *x.add(i);
        i += 1;
    }
}

/// `y += alpha · x` for `n` f16 values at `x`.
#[target_feature(enable = "avx2,fma,f16c")]
pub(crate) unsafe fn axpy_f16(y: *mut f32, alpha: f32, x: *const u8, n: usize) {
    let va = _mm256_set1_ps(alpha);
    let mut i = 0;
    while i + 8 <= n {
        let v = _mm256_cvtph_ps(_mm_loadu_si128(x.add(2 * i) as *const __m128i));
        _mm256_storeu_ps(y.add(i), _mm256_fmadd_ps(va, v, _mm256_loadu_ps(y.add(i))));
        i += 8;
    }
    while i < n {
        *y.add(i) += alpha * h2f(x.add(2 * i));
        i += 1;
    }
}

/// `y += alpha · x` for `n / 32` Q8_0 blocks at `x` (each an f16 scale and 32 int8 values).
#[target_feature(enable = "avx2,fma,f16c")]
pub(crate) unsafe fn axpy_q8_0(y: *mut f32, alpha: f32, x: *const u8, n: usize) {
    for b in 0..n / 32 {
        let block = x.add(34 * b);
        let scale = _mm256_set1_ps(alpha * h2f(block));
        for g in 0..4 {
            let q = _mm256_cvtepi8_epi32(_mm_loadl_epi64(block.add(2 + 8 * g) as *const __m128i));
            let out = y.add(32 * b + 8 * g);
            _mm256_storeu_ps(out, _mm256_fmadd_ps(scale, _mm256_cvtepi32_ps(q), _mm256_loadu_ps(out)));
        }
    }
}
