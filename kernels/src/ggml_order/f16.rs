//! ggml's products with F16 weights, as llama.cpp's CPU backend computes an F16 LoRA adapter's
//! `A·x` and `B·(A·x)`: the f32 operand is first rounded to f16 (F16 weights take F16
//! activations, ggml's `vec_dot_type`), each product of two halves is exact in f32, and the sums
//! run in the lane orders of the f32 products of the parent module — except that
//! `ggml_vec_dot_f16` finishes in f64: its reduced lanes and every leftover product past the last
//! 64-wide step are added to an f64 sum, which is rounded to f32 once at the end.
//!
//! Keeping an F16 adapter in F16 is also what makes it cheap: a decoded token reads every
//! adapter byte once, and these are half the bytes of the f32 copy.

#[cfg(target_arch = "x86_64")]
use std::arch::x86_64::*;

use half::f16;

use super::{has_avx2, hsum16, reduce4x16};

/// `x` rounded to f16 (to nearest even, as F16C's `vcvtps2ph` with mode 0, which ggml's
/// `ggml_cpu_fp32_to_fp16` uses) and widened back to f32, exactly, into `out`. The products
/// below take their f16 operand in this form: widened once, not once per use.
pub fn round_through_f16(x: &[f32], out: &mut Vec<f32>) {
    out.clear();
    out.resize(x.len(), 0.0);
    #[cfg(target_arch = "x86_64")]
    if has_avx2() {
        // SAFETY: F16C detected (with AVX2); both slices hold x.len() values.
        unsafe { round_through_f16_f16c(x, out) };
        return;
    }
    for (o, &v) in out.iter_mut().zip(x) {
        *o = f16::from_f32(v).to_f32();
    }
}

/// The `half` crate converts in software unless F16C is enabled at compile time, which our
/// portable builds do not do; this one is the instruction ggml uses.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2,fma,f16c")]
unsafe fn round_through_f16_f16c(x: &[f32], out: &mut [f32]) {
    let full = x.len() & !7;
    for i in (0..full).step_by(8) {
        let h = _mm256_cvtps_ph::<_MM_FROUND_TO_NEAREST_INT>(_mm256_loadu_ps(x.as_ptr().add(i)));
        _mm256_storeu_ps(out.as_mut_ptr().add(i), _mm256_cvtph_ps(h));
    }
    for i in full..x.len() {
        let h = _mm_cvtps_ph::<_MM_FROUND_TO_NEAREST_INT>(_mm_set_ss(x[i]));
        out[i] = _mm_cvtss_f32(_mm_cvtph_ps(h));
    }
}

/// `Σ a·x` in the order of `ggml_vec_dot_f16` (AVX-512 build): four 16-lane f32 accumulators
/// over steps of 64, reduced as the f32 dot product's, then in f64 with the leftovers.
pub fn dot_f16(a: &[f16], x: &[f32]) -> f32 {
    let n = a.len().min(x.len());
    let (a, x) = (&a[..n], &x[..n]);
    let np = n & !63;
    let mut sum = if np > 0 { steps_f16(&a[..np], &x[..np]) as f64 } else { 0.0 };
    for e in np..n {
        sum += (a[e].to_f32() * x[e]) as f64;
    }
    sum as f32
}

/// The 64-wide steps of [`dot_f16`] (whole steps only), reduced to one f32.
fn steps_f16(a: &[f16], x: &[f32]) -> f32 {
    #[cfg(target_arch = "x86_64")]
    if has_avx2() {
        // SAFETY: AVX2, FMA and F16C detected; both slices hold a.len() values, whole steps.
        return unsafe { steps_f16_avx2(a, x) };
    }
    steps_f16_lanes(a, x)
}

fn steps_f16_lanes(a: &[f16], x: &[f32]) -> f32 {
    let mut s = [[0f32; 16]; 4];
    for i in (0..a.len()).step_by(64) {
        for (j, acc) in s.iter_mut().enumerate() {
            for (l, v) in acc.iter_mut().enumerate() {
                let e = i + 16 * j + l;
                *v = a[e].to_f32().mul_add(x[e], *v);
            }
        }
    }
    reduce4x16(&s)
}

/// `Σ a·x` as llamafile's tiled GEMM sums one output of an F16 product (inner length a multiple
/// of 16): one 16-lane fused accumulator, then the horizontal sum, all in f32.
pub fn dot_f16_tiled(a: &[f16], x: &[f32]) -> f32 {
    let n = a.len().min(x.len());
    let n = n - n % 16;
    #[cfg(target_arch = "x86_64")]
    if has_avx2() {
        // SAFETY: AVX2, FMA and F16C detected; both slices hold n values, a multiple of 16.
        return unsafe { dot_f16_tiled_avx2(&a[..n], &x[..n]) };
    }
    dot_f16_tiled_lanes(&a[..n], &x[..n])
}

fn dot_f16_tiled_lanes(a: &[f16], x: &[f32]) -> f32 {
    let n = a.len().min(x.len());
    let mut s = [0f32; 16];
    for i in (0..n - n % 16).step_by(16) {
        for (l, v) in s.iter_mut().enumerate() {
            *v = a[i + l].to_f32().mul_add(x[i + l], *v);
        }
    }
    hsum16(&s)
}

/// Outputs per panel of [`to_panels`]: four 8-lane blocks side by side.
pub const PANEL: usize = 32;

/// B `[n_out][rank]` rearranged for [`panel_dots`]: panels of [`PANEL`] consecutive outputs,
/// each `[rank][PANEL]`, the last one padded with zeros. One token's `B·t` then reads the matrix
/// front to back.
pub fn to_panels(b: &[f16], n_out: usize, rank: usize) -> Vec<f16> {
    let mut out = vec![f16::ZERO; n_out.div_ceil(PANEL) * PANEL * rank];
    for (o, row) in b.chunks_exact(rank).take(n_out).enumerate() {
        for (r, &v) in row.iter().enumerate() {
            out[panel_index(o, r, rank)] = v;
        }
    }
    out
}

/// Where B's element (output `o`, column `r`) lies in [`to_panels`]'s layout.
pub fn panel_index(o: usize, r: usize, rank: usize) -> usize {
    (o / PANEL) * PANEL * rank + r * PANEL + o % PANEL
}

/// The order in which [`panel_dots`] sums each output's `Σ_r B[o][r]·t[r]`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PanelOrder {
    /// `ggml_vec_dot_f16` when the whole product is its leftover loop (rank below 64): one
    /// exact f32 product at a time added to an f64 sum, in order of r.
    Leftover,
    /// [`dot_f16_tiled`]: llamafile's tiled order (rank a multiple of 16), as a batch of tokens
    /// multiplies B.
    Tiled,
}

/// The [`PANEL`] outputs of panel `p` (outputs `p·PANEL ..`) of B in [`to_panels`]'s layout
/// times `t` (`rank = t.len()`), summed in `order`; past `n_out` the padding gives zeros.
pub fn panel_dots(panels: &[f16], t: &[f32], p: usize, order: PanelOrder) -> [f32; PANEL] {
    let rank = t.len();
    match order {
        PanelOrder::Leftover => assert!(rank < 64, "panel_dots: rank {rank} is not a leftover loop (below 64)"),
        PanelOrder::Tiled => assert!(rank.is_multiple_of(16), "panel_dots: rank {rank} is not a multiple of 16"),
    }
    let panel = &panels[p * PANEL * rank..][..PANEL * rank];
    let mut sums = [0f32; PANEL];
    #[cfg(target_arch = "x86_64")]
    if has_avx2() {
        // SAFETY: AVX2, FMA and F16C detected; the panel holds rank × PANEL values.
        unsafe {
            match order {
                PanelOrder::Leftover => panel_leftover_avx2(panel, t, &mut sums),
                PanelOrder::Tiled => panel_tiled_avx2(panel, t, &mut sums),
            }
        }
        return sums;
    }
    panel_dots_scalar(panel, t, order, &mut sums);
    sums
}

fn panel_dots_scalar(panel: &[f16], t: &[f32], order: PanelOrder, sums: &mut [f32; PANEL]) {
    let mut row = vec![f16::ZERO; t.len()];
    for (j, v) in sums.iter_mut().enumerate() {
        row.iter_mut().enumerate().for_each(|(r, e)| *e = panel[r * PANEL + j]);
        *v = match order {
            // dot_f16 of a row shorter than 64 is exactly its leftover loop.
            PanelOrder::Leftover => dot_f16(&row, t),
            PanelOrder::Tiled => dot_f16_tiled_lanes(&row, t),
        };
    }
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2,fma,f16c")]
unsafe fn steps_f16_avx2(a: &[f16], x: &[f32]) -> f32 {
    let load = |p: *const f16| _mm256_cvtph_ps(_mm_loadu_si128(p as *const __m128i));
    let mut s = [_mm256_setzero_ps(); 8];
    for i in (0..a.len()).step_by(64) {
        for (k, acc) in s.iter_mut().enumerate() {
            *acc = _mm256_fmadd_ps(load(a.as_ptr().add(i + 8 * k)), _mm256_loadu_ps(x.as_ptr().add(i + 8 * k)), *acc);
        }
    }
    // Accumulator j is registers 2j (lanes 0..8) and 2j+1 (lanes 8..16), as in dot_f32_avx2.
    let lo = _mm256_add_ps(_mm256_add_ps(s[0], s[4]), _mm256_add_ps(s[2], s[6]));
    let hi = _mm256_add_ps(_mm256_add_ps(s[1], s[5]), _mm256_add_ps(s[3], s[7]));
    super::hsum_halves(lo, hi)
}

/// [`dot_f16_tiled`] with the f16 values widened eight at a time.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2,fma,f16c")]
unsafe fn dot_f16_tiled_avx2(a: &[f16], x: &[f32]) -> f32 {
    let load = |i: usize| _mm256_cvtph_ps(_mm_loadu_si128(a.as_ptr().add(i) as *const __m128i));
    hsum16(&super::lanes16_avx2(a.len(), load, x))
}

/// One panel's 32 outputs in llamafile's tiled order: for each block of 8 outputs, the 16 lane
/// accumulators (lane l sums `B[o][k + l]·t[k + l]` over steps k of 16) are 16 registers, one
/// output per element, and [`hsum16`]'s tree runs across them.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2,fma,f16c")]
unsafe fn panel_tiled_avx2(panel: &[f16], t: &[f32], out: &mut [f32; PANEL]) {
    for blk in 0..PANEL / 8 {
        let mut acc = [_mm256_setzero_ps(); 16];
        for k in (0..t.len()).step_by(16) {
            for (l, a) in acc.iter_mut().enumerate() {
                let b = _mm256_cvtph_ps(_mm_loadu_si128(panel.as_ptr().add((k + l) * PANEL + 8 * blk) as *const __m128i));
                *a = _mm256_fmadd_ps(b, _mm256_set1_ps(t[k + l]), *a);
            }
        }
        // hsum16: t_i = v[8 + i] + v[i]; r = [t4 + t0, t5 + t1, t6 + t2, t7 + t3]; (r0 + r2) + (r1 + r3).
        let h: [__m256; 8] = std::array::from_fn(|i| _mm256_add_ps(acc[8 + i], acc[i]));
        let r: [__m256; 4] = std::array::from_fn(|i| _mm256_add_ps(h[4 + i], h[i]));
        let v = _mm256_add_ps(_mm256_add_ps(r[0], r[2]), _mm256_add_ps(r[1], r[3]));
        _mm256_storeu_ps(out.as_mut_ptr().add(8 * blk), v);
    }
}

/// One panel's 32 sums in [`PanelOrder::Leftover`]. Each output's sum is one chain of dependent
/// f64 adds, so the panel's eight 4-lane chains run side by side to hide the adds' latency. A
/// product of two halves is exact in f32, so adding it with an f64 FMA of the widened factors is
/// the same addition.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2,fma,f16c")]
unsafe fn panel_leftover_avx2(panel: &[f16], t: &[f32], out: &mut [f32; PANEL]) {
    let mut acc = [_mm256_setzero_pd(); 8];
    for (r, &tr) in t.iter().enumerate() {
        let tv = _mm256_set1_pd(tr as f64);
        let row = panel.as_ptr().add(r * PANEL);
        for k in 0..4 {
            let b = _mm256_cvtph_ps(_mm_loadu_si128(row.add(8 * k) as *const __m128i));
            acc[2 * k] = _mm256_fmadd_pd(_mm256_cvtps_pd(_mm256_castps256_ps128(b)), tv, acc[2 * k]);
            acc[2 * k + 1] = _mm256_fmadd_pd(_mm256_cvtps_pd(_mm256_extractf128_ps::<1>(b)), tv, acc[2 * k + 1]);
        }
    }
    for k in 0..4 {
        let v = _mm256_set_m128(_mm256_cvtpd_ps(acc[2 * k + 1]), _mm256_cvtpd_ps(acc[2 * k]));
        _mm256_storeu_ps(out.as_mut_ptr().add(8 * k), v);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn halves(n: usize, seed: &mut u64) -> Vec<f16> {
        (0..n)
            .map(|_| {
                *seed = seed.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
                f16::from_f32(((*seed >> 40) as f32 / (1u64 << 24) as f32) * 2.0 - 1.0)
            })
            .collect()
    }

    fn widen(h: &[f16]) -> Vec<f32> {
        h.iter().map(|v| v.to_f32()).collect()
    }

    #[test]
    fn the_simd_dot_equals_the_lane_order_and_the_f64_sum_closely() {
        let mut seed = 7;
        for n in [1, 15, 16, 63, 64, 65, 128, 576, 1000, 1536] {
            let (a, x) = (halves(n, &mut seed), widen(&halves(n, &mut seed)));
            let np = n & !63;
            let mut lanes = if np > 0 { steps_f16_lanes(&a[..np], &x[..np]) as f64 } else { 0.0 };
            for e in np..n {
                lanes += (a[e].to_f32() * x[e]) as f64;
            }
            assert_eq!(dot_f16(&a, &x).to_bits(), (lanes as f32).to_bits(), "n = {n}");
            let exact: f64 = a.iter().zip(&x).map(|(p, &q)| p.to_f64() * q as f64).sum();
            assert!((dot_f16(&a, &x) as f64 - exact).abs() <= 1e-5 * (n as f64).sqrt() + 1e-6, "n = {n}");
            if n % 16 == 0 {
                assert!((dot_f16_tiled(&a, &x) as f64 - exact).abs() <= 1e-5 * (n as f64).sqrt() + 1e-6, "n = {n}");
            }
        }
    }

    /// Every output of every panel of B (`n_out × rank`) in `order` against `want` of its row,
    /// and the portable panel loop against the one `panel_dots` dispatched to.
    fn check_panels(rank: usize, n_out: usize, order: PanelOrder, seed: &mut u64, want: fn(&[f16], &[f32]) -> f32) {
        let b = halves(n_out * rank, seed);
        let t = widen(&halves(rank, seed));
        let panels = to_panels(&b, n_out, rank);
        for p in 0..n_out.div_ceil(PANEL) {
            let sums = panel_dots(&panels, &t, p, order);
            for (j, v) in sums.iter().enumerate().take(n_out - p * PANEL) {
                let o = p * PANEL + j;
                assert_eq!(v.to_bits(), want(&b[o * rank..(o + 1) * rank], &t).to_bits(), "{order:?} rank {rank}, output {o}");
            }
            let mut portable = [0f32; PANEL];
            panel_dots_scalar(&panels[p * PANEL * rank..][..PANEL * rank], &t, order, &mut portable);
            assert_eq!(portable, sums, "{order:?} rank {rank}, panel {p}");
        }
    }

    #[test]
    fn leftover_panels_equal_the_short_dot_products() {
        let mut seed = 11;
        for (rank, n_out) in [(1, 5), (8, 19), (16, 576), (16, 1537), (63, 40)] {
            check_panels(rank, n_out, PanelOrder::Leftover, &mut seed, dot_f16);
        }
    }

    #[test]
    fn tiled_products_equal_their_lane_order() {
        let mut seed = 5;
        for n in [16, 32, 576, 1536] {
            let (a, x) = (halves(n, &mut seed), widen(&halves(n, &mut seed)));
            assert_eq!(dot_f16_tiled(&a, &x).to_bits(), dot_f16_tiled_lanes(&a, &x).to_bits(), "n = {n}");
        }
        for (rank, n_out) in [(16, 40), (16, 576), (32, 100)] {
            check_panels(rank, n_out, PanelOrder::Tiled, &mut seed, dot_f16_tiled_lanes);
        }
    }

    #[test]
    fn rounding_to_f16_is_to_nearest_even() {
        let mut out = Vec::new();
        // 1 + 2^-11 lies halfway between 1 and the next half, 1 + 2^-10: it rounds to the even 1.
        let x = [1.0 + 2f32.powi(-11), 1.0 + 3.0 * 2f32.powi(-11), 70000.0, -0.1, 1e-8, 3.0];
        round_through_f16(&x, &mut out);
        assert_eq!(&out[..3], [1.0, 1.0 + 2.0 * 2f32.powi(-10), f32::INFINITY]);
        // The same as the software conversion, over the vector part and the tail.
        let mut seed = 3;
        let many: Vec<f32> = (0..1003).map(|i| halves(1, &mut seed)[0].to_f32() * (1.0 + i as f32 * 1e-4) * 300.0).collect();
        round_through_f16(&many, &mut out);
        let soft: Vec<f32> = many.iter().map(|&v| f16::from_f32(v).to_f32()).collect();
        assert_eq!(out, soft);
    }
}
