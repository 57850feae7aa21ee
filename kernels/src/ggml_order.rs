//! The attention and SwiGLU arithmetic of llama.cpp's CPU backend as built for x86-64 with
//! AVX-512 (`-march=native` on the AMD EPYC machines we develop and test on), reproduced
//! rounding for rounding: ggml's vectorized `exp` approximation, the 16-lane order of its f32
//! dot product, of its softmax sums and of llamafile's tiled f32 GEMM.
//!
//! Why: a 135M-parameter model quantizes its activations to 8 bits before every mat-vec, so a
//! one-ulp difference anywhere can move an activation across a rounding boundary and, 30
//! layers later, change which of two close tokens wins. Matching ggml's order makes our CPU
//! logits bitwise llama.cpp's on the same file (tests/tests/smollm2.rs), which is the only
//! way "same greedy text as llama.cpp" holds at every close call.
//!
//! The order is a property of the arithmetic, not of the CPU: every function has a portable
//! version that works lane by lane (`f32::mul_add` is the fused multiply-add) and an AVX2
//! version (two 8-lane registers per 16-lane ggml register) for speed; the tests check they
//! agree bit for bit, so the results are the same on any machine.

#[cfg(target_arch = "x86_64")]
use std::arch::x86_64::*;

use crate::simd;

pub mod f16;

const MAGIC_ROUND: f32 = 12_582_912.0; // 0x1.8p23
const LOG2E: u32 = 0x3fb8_aa3b; // 0x1.715476p+0
const LN2_HI: u32 = 0x3f31_7200; // 0x1.62e4p-1
const LN2_LO: u32 = 0x35bf_be8e; // 0x1.7f7d1cp-20
const P1: u32 = 0x3c07_2010; // 0x1.0e4020p-7
const P2: u32 = 0x3d2b_9f17; // 0x1.573e2ep-5
const P3: u32 = 0x3e2a_af33; // 0x1.555e66p-3
const P4: u32 = 0x3eff_fedb; // 0x1.fffdb6p-2
const P5: u32 = 0x3f7f_fff6; // 0x1.ffffecp-1

fn c(bits: u32) -> f32 {
    f32::from_bits(bits)
}

/// One lane of ggml's AVX-512 `ggml_v_expf` (vec.h): exp(x) to ~1.5 ulp as a polynomial
/// scaled by `2^n` (`vscalefps`); 0 below and ∞ above |n| > 192.
pub fn expf_lane(x: f32) -> f32 {
    let z = x.mul_add(c(LOG2E), MAGIC_ROUND);
    let n = z - MAGIC_ROUND;
    let b = (-n).mul_add(c(LN2_LO), (-n).mul_add(c(LN2_HI), x));
    let u = b * b;
    let j = c(P1).mul_add(b, c(P2)).mul_add(u, c(P3).mul_add(b, c(P4))).mul_add(u, c(P5).mul_add(b, 1.0));
    if n.abs() > 192.0 {
        return if n <= 0.0 { 0.0 } else { f32::INFINITY };
    }
    // j · 2^n with one rounding, as `vscalefps` does (exact in f64, rounded once to f32).
    (j as f64 * (n as f64).exp2()) as f32
}

/// `out[i] = exp(xs[i]·scale − shift)` with ggml's exp ([`expf_lane`]; eight lanes at a time
/// on AVX2, bitwise the same), the product and the difference each rounded as written: the
/// softmax-style exponentials of the training loss, ~4× the speed of libm's `expf` per element.
pub fn exp_affine(xs: &[f32], scale: f32, shift: f32, out: &mut [f32]) {
    let n = xs.len().min(out.len());
    let mut done = 0;
    #[cfg(target_arch = "x86_64")]
    if has_avx2() {
        done = n & !7;
        // SAFETY: AVX2 and FMA detected; both slices hold at least `done` elements.
        unsafe { exp_affine_avx2(&xs[..done], scale, shift, &mut out[..done]) };
    }
    for (o, &x) in out[done..n].iter_mut().zip(&xs[done..n]) {
        *o = expf_lane(x * scale - shift);
    }
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2,fma")]
unsafe fn exp_affine_avx2(xs: &[f32], scale: f32, shift: f32, out: &mut [f32]) {
    let (s, m) = (_mm256_set1_ps(scale), _mm256_set1_ps(shift));
    for (o, x) in out.chunks_exact_mut(8).zip(xs.chunks_exact(8)) {
        let e = v_expf(_mm256_sub_ps(_mm256_mul_ps(_mm256_loadu_ps(x.as_ptr()), s), m));
        _mm256_storeu_ps(o.as_mut_ptr(), e);
    }
}

/// One lane of ggml's `ggml_v_silu`: x / (1 + exp(-x)) with the approximate exp.
fn silu_lane(x: f32) -> f32 {
    x / (1.0 + expf_lane(0.0 - x))
}

/// `_mm512_reduce_add_ps` as GCC expands it (and so llamafile's `hsum`): halves, quarters,
/// then pairs: with t = v[8..16] + v[0..8] and r = t[4..8] + t[0..4], (r0+r2) + (r1+r3).
fn hsum16(v: &[f32; 16]) -> f32 {
    let t: [f32; 8] = std::array::from_fn(|i| v[8 + i] + v[i]);
    let r = [t[4] + t[0], t[5] + t[1], t[6] + t[2], t[7] + t[3]];
    (r[0] + r[2]) + (r[1] + r[3])
}

/// ggml's reduction of four 16-lane accumulators (`GGML_F32x16_REDUCE`): pairwise across
/// accumulators, then [`hsum16`].
fn reduce4x16(s: &[[f32; 16]; 4]) -> f32 {
    hsum16(&std::array::from_fn(|l| (s[0][l] + s[2][l]) + (s[1][l] + s[3][l])))
}

fn has_avx2() -> bool {
    simd::detected().has_avx2()
}

/// `Σ x·y` in the order of ggml's `ggml_vec_dot_f32`: four 16-lane accumulators over steps of
/// 64, reduced as [`reduce4x16`]; the tail after the last full step added one rounded product
/// at a time (GCC does not fuse that loop: measured on a rank-16 LoRA's `B·(A·x)`).
pub fn dot_f32(x: &[f32], y: &[f32]) -> f32 {
    let n = x.len().min(y.len());
    #[cfg(target_arch = "x86_64")]
    if has_avx2() {
        // SAFETY: AVX2 and FMA detected; both slices hold n values.
        return unsafe { dot_f32_avx2(&x[..n], &y[..n]) };
    }
    dot_f32_lanes(&x[..n], &y[..n])
}

fn dot_f32_lanes(x: &[f32], y: &[f32]) -> f32 {
    let np = x.len() & !63;
    let mut s = [[0f32; 16]; 4];
    for i in (0..np).step_by(64) {
        for (j, acc) in s.iter_mut().enumerate() {
            for (l, a) in acc.iter_mut().enumerate() {
                let e = i + 16 * j + l;
                *a = x[e].mul_add(y[e], *a);
            }
        }
    }
    let mut sum = reduce4x16(&s);
    for e in np..x.len() {
        sum += x[e] * y[e];
    }
    sum
}

/// `Σ x·y` as llamafile's tiled f32 GEMM sums one output (a product over several rows, inner
/// length a multiple of 16): one 16-lane fused accumulator in order, then [`hsum16`].
pub fn dot_f32_tiled(x: &[f32], y: &[f32]) -> f32 {
    let n = x.len().min(y.len());
    let mut s = [0f32; 16];
    let mut done = false;
    #[cfg(target_arch = "x86_64")]
    if has_avx2() && n.is_multiple_of(16) {
        // SAFETY: AVX2, FMA and F16C detected; both slices hold n values, a multiple of 16.
        s = unsafe { lanes16_avx2(n, |i| _mm256_loadu_ps(x.as_ptr().add(i)), y) };
        done = true;
    }
    if !done {
        for (e, (&a, &b)) in x[..n].iter().zip(&y[..n]).enumerate() {
            s[e % 16] = a.mul_add(b, s[e % 16]);
        }
    }
    hsum16(&s)
}

/// Softmax of `x` in place as ggml's `soft_max` computes it on a row padded with masked
/// (−∞) entries to a multiple of 16: approximate exp of `x − max` sixteen at a time, each
/// group's sum ([`hsum16`]) added in f64, then every value times `(1 / sum)` rounded to f32.
pub fn softmax(x: &mut [f32]) {
    if x.is_empty() {
        return;
    }
    let max = x.iter().copied().fold(f32::NEG_INFINITY, f32::max);
    let mut sum = 0f64;
    for group in x.chunks_mut(16) {
        let mut v = [f32::NEG_INFINITY; 16];
        v[..group.len()].copy_from_slice(group);
        exp_minus_max(&mut v, max);
        group.copy_from_slice(&v[..group.len()]);
        sum += hsum16(&v) as f64;
    }
    let inv = (1.0 / sum) as f32;
    for v in x.iter_mut() {
        *v *= inv;
    }
}

/// `exp(v − max)` in place: [`exp_affine`] with a scale of 1, exact in f32, so the same bits.
fn exp_minus_max(v: &mut [f32; 16], max: f32) {
    let x = *v;
    exp_affine(&x, 1.0, max, v);
}

/// `gate = silu(gate) · up`, as ggml's `ggml_vec_swiglu_f32`: the approximate exp sixteen at
/// a time, libm's `expf` for a tail shorter than sixteen.
pub fn swiglu(gate: &mut [f32], up: &[f32]) {
    let n = gate.len().min(up.len());
    let main = n & !15;
    let mut done = false;
    #[cfg(target_arch = "x86_64")]
    if has_avx2() {
        // SAFETY: AVX2 and FMA detected; both slices hold `main` values.
        unsafe { swiglu_avx2(&mut gate[..main], &up[..main]) };
        done = true;
    }
    if !done {
        for (g, &u) in gate[..main].iter_mut().zip(&up[..main]) {
            *g = silu_lane(*g) * u;
        }
    }
    for (g, &u) in gate[main..n].iter_mut().zip(&up[main..n]) {
        *g = *g / (1.0 + (-*g).exp()) * u;
    }
}

/// The order in which llama.cpp sums the attention-weighted values (`kqv`, over positions).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PositionSum {
    /// One token in the batch: `ggml_vec_dot_f32` over positions (64 residues, [`reduce4x16`]).
    Single,
    /// Several tokens: llamafile's tiled f32 GEMM (one 16-lane accumulator, [`hsum16`]).
    Batch,
}

/// `out[d] = Σ_p w[p] · values[p·stride + off + d]` in llama.cpp's order for `order`.
/// Positions are split by residue (mod 64 or mod 16) into fused chains, as ggml's lanes hold
/// them; masked positions (weight 0) add exact zeros there, so they are skipped here.
pub fn weighted_sum(w: &[f32], values: &[f32], stride: usize, off: usize, out: &mut [f32], order: PositionSum) {
    let hd = out.len();
    let residues = match order {
        PositionSum::Single => 64,
        PositionSum::Batch => 16,
    };
    // Residues no position reaches hold zeros: only the ones in use are kept.
    let used = residues.min(w.len());
    let mut s = vec![0f32; used * hd];
    let mut done = false;
    #[cfg(target_arch = "x86_64")]
    if has_avx2() && hd.is_multiple_of(8) {
        for (p, &wp) in w.iter().enumerate() {
            let row = &values[p * stride + off..p * stride + off + hd];
            let acc = &mut s[(p % residues) * hd..(p % residues + 1) * hd];
            // SAFETY: AVX2 and FMA detected; `acc` and `row` hold hd values, a multiple of 8.
            unsafe { axpy_fma_avx2(acc, wp, row) };
        }
        done = true;
    }
    if !done {
        accumulate_lanes(w, values, stride, off, hd, residues, &mut s);
    }
    // The lane reduction of every output at once: the same adds in the same order as
    // `reduce4x16` / `hsum16` on each d, as whole-row adds the compiler vectorizes.
    let zero = vec![0f32; hd];
    let row = |r: usize| if r < used { &s[r * hd..(r + 1) * hd] } else { &zero[..] };
    let add = |a: &[f32], b: &[f32]| -> Vec<f32> { a.iter().zip(b).map(|(x, y)| x + y).collect() };
    let lanes: Vec<Vec<f32>> = match order {
        PositionSum::Single => (0..16).map(|l| add(&add(row(l), row(32 + l)), &add(row(16 + l), row(48 + l)))).collect(),
        PositionSum::Batch => (0..16).map(|l| row(l).to_vec()).collect(),
    };
    let t: Vec<Vec<f32>> = (0..8).map(|i| add(&lanes[8 + i], &lanes[i])).collect();
    let r: Vec<Vec<f32>> = (0..4).map(|i| add(&t[4 + i], &t[i])).collect();
    for (d, o) in out.iter_mut().enumerate() {
        *o = (r[0][d] + r[2][d]) + (r[1][d] + r[3][d]);
    }
}

fn accumulate_lanes(w: &[f32], values: &[f32], stride: usize, off: usize, hd: usize, residues: usize, s: &mut [f32]) {
    for (p, &wp) in w.iter().enumerate() {
        let row = &values[p * stride + off..p * stride + off + hd];
        let acc = &mut s[(p % residues) * hd..(p % residues + 1) * hd];
        for (a, &v) in acc.iter_mut().zip(row) {
            *a = v.mul_add(wp, *a);
        }
    }
}

/// Eight lanes of [`expf_lane`]. The scaling by `2^n` is a plain (exact) multiplication while
/// every lane's result stays a normal number; otherwise the lanes go one by one.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2,fma")]
unsafe fn v_expf(x: __m256) -> __m256 {
    let r = _mm256_set1_ps(MAGIC_ROUND);
    let z = _mm256_fmadd_ps(x, _mm256_set1_ps(c(LOG2E)), r);
    let n = _mm256_sub_ps(z, r);
    let b = _mm256_fnmadd_ps(n, _mm256_set1_ps(c(LN2_LO)), _mm256_fnmadd_ps(n, _mm256_set1_ps(c(LN2_HI)), x));
    let u = _mm256_mul_ps(b, b);
    let j = _mm256_fmadd_ps(
        _mm256_fmadd_ps(
            _mm256_fmadd_ps(_mm256_set1_ps(c(P1)), b, _mm256_set1_ps(c(P2))),
            u,
            _mm256_fmadd_ps(_mm256_set1_ps(c(P3)), b, _mm256_set1_ps(c(P4))),
        ),
        u,
        _mm256_fmadd_ps(_mm256_set1_ps(c(P5)), b, _mm256_set1_ps(1.0)),
    );
    // |n| <= 125 keeps j·2^n (j within [0.7, 1.5)) a normal float: the product is exact.
    let abs_n = _mm256_andnot_ps(_mm256_set1_ps(-0.0), n);
    let in_range = _mm256_cmp_ps::<_CMP_LE_OQ>(abs_n, _mm256_set1_ps(125.0));
    if _mm256_movemask_ps(in_range) == 0xff {
        let e = _mm256_slli_epi32::<23>(_mm256_add_epi32(_mm256_cvtps_epi32(n), _mm256_set1_epi32(127)));
        return _mm256_mul_ps(j, _mm256_castsi256_ps(e));
    }
    let mut lanes = [0f32; 8];
    _mm256_storeu_ps(lanes.as_mut_ptr(), x);
    for v in lanes.iter_mut() {
        *v = expf_lane(*v);
    }
    _mm256_loadu_ps(lanes.as_ptr())
}

/// SwiGLU is element-wise: eight at a time gives what ggml's sixteen do.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2,fma")]
unsafe fn swiglu_avx2(gate: &mut [f32], up: &[f32]) {
    for (g, u) in gate.chunks_exact_mut(8).zip(up.chunks_exact(8)) {
        let x = _mm256_loadu_ps(g.as_ptr());
        let e = v_expf(_mm256_sub_ps(_mm256_setzero_ps(), x));
        let silu = _mm256_div_ps(x, _mm256_add_ps(_mm256_set1_ps(1.0), e));
        _mm256_storeu_ps(g.as_mut_ptr(), _mm256_mul_ps(silu, _mm256_loadu_ps(u.as_ptr())));
    }
}

/// [`dot_f32_lanes`] with each 16-lane accumulator as two 8-lane registers (`lo`, `hi`).
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2,fma")]
unsafe fn dot_f32_avx2(x: &[f32], y: &[f32]) -> f32 {
    let np = x.len() & !63;
    let mut s = [_mm256_setzero_ps(); 8];
    for i in (0..np).step_by(64) {
        for (k, acc) in s.iter_mut().enumerate() {
            let (a, b) = (_mm256_loadu_ps(x.as_ptr().add(i + 8 * k)), _mm256_loadu_ps(y.as_ptr().add(i + 8 * k)));
            *acc = _mm256_fmadd_ps(a, b, *acc);
        }
    }
    // Accumulator j is registers 2j (lanes 0..8) and 2j+1 (lanes 8..16).
    let lo = _mm256_add_ps(_mm256_add_ps(s[0], s[4]), _mm256_add_ps(s[2], s[6]));
    let hi = _mm256_add_ps(_mm256_add_ps(s[1], s[5]), _mm256_add_ps(s[3], s[7]));
    let mut sum = hsum_halves(lo, hi);
    for e in np..x.len() {
        sum += x[e] * y[e];
    }
    sum
}

/// The 16 fused accumulators of llamafile's tiled order over the first `n` elements (a multiple
/// of 16) as two 8-lane registers: `x8(i)` gives the first operand's eight values from element
/// `i` (f32 here, f16 in `f16::dot_f16_tiled`), `y` holds at least `n` f32.
#[cfg(target_arch = "x86_64")]
#[inline]
#[target_feature(enable = "avx2,fma,f16c")]
unsafe fn lanes16_avx2(n: usize, x8: impl Fn(usize) -> __m256, y: &[f32]) -> [f32; 16] {
    let (mut lo, mut hi) = (_mm256_setzero_ps(), _mm256_setzero_ps());
    for i in (0..n).step_by(16) {
        lo = _mm256_fmadd_ps(x8(i), _mm256_loadu_ps(y.as_ptr().add(i)), lo);
        hi = _mm256_fmadd_ps(x8(i + 8), _mm256_loadu_ps(y.as_ptr().add(i + 8)), hi);
    }
    let mut s = [0f32; 16];
    _mm256_storeu_ps(s.as_mut_ptr(), lo);
    _mm256_storeu_ps(s.as_mut_ptr().add(8), hi);
    s
}

/// [`hsum16`] of the 16 lanes held as `lo` (0..8) and `hi` (8..16).
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2,fma")]
unsafe fn hsum_halves(lo: __m256, hi: __m256) -> f32 {
    let t = _mm256_add_ps(hi, lo);
    let r = _mm_add_ps(_mm256_extractf128_ps::<1>(t), _mm256_castps256_ps128(t));
    let q = _mm_add_ps(r, _mm_movehl_ps(r, r));
    _mm_cvtss_f32(_mm_add_ss(q, _mm_movehdup_ps(q)))
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2,fma")]
unsafe fn axpy_fma_avx2(acc: &mut [f32], w: f32, row: &[f32]) {
    let wv = _mm256_set1_ps(w);
    for (a, r) in acc.chunks_exact_mut(8).zip(row.chunks_exact(8)) {
        let v = _mm256_fmadd_ps(_mm256_loadu_ps(r.as_ptr()), wv, _mm256_loadu_ps(a.as_ptr()));
        _mm256_storeu_ps(a.as_mut_ptr(), v);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rand(seed: &mut u64) -> f32 {
        *seed = seed.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
        ((*seed >> 40) as f32 / (1u64 << 24) as f32) * 2.0 - 1.0
    }

    fn bits(v: &[f32]) -> Vec<u32> {
        v.iter().map(|x| x.to_bits()).collect()
    }

    #[test]
    fn approximate_exp_is_close_to_exp_and_handles_the_ends() {
        let mut seed = 1;
        for _ in 0..20_000 {
            let x = rand(&mut seed) * 87.0;
            let (got, want) = (expf_lane(x) as f64, (x as f64).exp());
            assert!(((got - want) / want).abs() < 4e-7, "exp({x}) = {got}, want {want}");
        }
        assert_eq!(expf_lane(f32::NEG_INFINITY), 0.0);
        assert_eq!(expf_lane(-200.0), 0.0);
        assert_eq!(expf_lane(0.0), 1.0);
        assert!(expf_lane(100.0).is_infinite());
        // Subnormal results are rounded once, not flushed.
        let tiny = expf_lane(-90.0) as f64;
        assert!((tiny / (-90f64).exp() - 1.0).abs() < 1e-3, "{tiny}");
    }

    /// `exp_affine` over odd lengths (AVX2 body and scalar tail), underflowing and NaN-free
    /// ends included: each element is `expf_lane` of the rounded affine input, bit for bit.
    #[test]
    fn exp_affine_is_the_lane_exp_of_each_element() {
        let mut seed = 7;
        for n in [0, 1, 7, 8, 9, 61, 1000] {
            let xs: Vec<f32> = (0..n).map(|i| if i % 13 == 5 { -1e30 } else { rand(&mut seed) * 40.0 }).collect();
            let (scale, shift) = (0.7f32, 3.25f32);
            let mut out = vec![f32::NAN; n];
            exp_affine(&xs, scale, shift, &mut out);
            let want: Vec<f32> = xs.iter().map(|&x| expf_lane(x * scale - shift)).collect();
            assert_eq!(bits(&out), bits(&want), "n = {n}");
            for (&x, &o) in xs.iter().zip(&out) {
                let exact = ((x * scale - shift) as f64).exp();
                assert!(o as f64 == exact || ((o as f64 - exact) / exact).abs() < 4e-7, "exp({x}·{scale} − {shift}) = {o}, want {exact}");
            }
        }
    }

    #[test]
    fn simd_paths_equal_the_lane_emulation_bit_for_bit() {
        if !has_avx2() {
            eprintln!("skipped: no AVX2 here");
            return;
        }
        let mut seed = 7;
        for n in [1usize, 7, 8, 15, 16, 17, 63, 64, 65, 100, 128, 257] {
            let x: Vec<f32> = (0..n).map(|_| rand(&mut seed) * 30.0).collect();
            let y: Vec<f32> = (0..n).map(|_| rand(&mut seed)).collect();
            assert_eq!(dot_f32(&x, &y).to_bits(), dot_f32_lanes(&x, &y).to_bits(), "dot n={n}");
            let mut lanes = [0f32; 16];
            for e in 0..n {
                lanes[e % 16] = x[e].mul_add(y[e], lanes[e % 16]);
            }
            assert_eq!(dot_f32_tiled(&x, &y).to_bits(), hsum16(&lanes).to_bits(), "tiled dot n={n}");
            let mut a = x.clone();
            swiglu(&mut a, &y);
            let b: Vec<f32> = x
                .iter()
                .zip(&y)
                .enumerate()
                .map(|(i, (&g, &u))| if i < n & !15 { silu_lane(g) * u } else { g / (1.0 + (-g).exp()) * u })
                .collect();
            assert_eq!(bits(&a), bits(&b), "swiglu n={n}");
            // Wide inputs reach the lanes that leave the fast scaling path.
            let mut wide = [0f32; 16];
            for (i, w) in wide.iter_mut().enumerate() {
                *w = x[i % n] * 5.0;
            }
            let mut fast = wide;
            unsafe { exp_affine_avx2(&wide, 1.0, 3.0, &mut fast) };
            let slow: Vec<f32> = wide.iter().map(|&v| expf_lane(v - 3.0)).collect();
            assert_eq!(bits(&fast), bits(&slow), "exp n={n}");
            for order in [PositionSum::Single, PositionSum::Batch] {
                let (stride, off, hd) = (40usize, 8usize, 16usize);
                let values: Vec<f32> = (0..n * stride).map(|_| rand(&mut seed)).collect();
                let mut fast = vec![0f32; hd];
                weighted_sum(&y, &values, stride, off, &mut fast, order);
                let residues = if order == PositionSum::Single { 64 } else { 16 };
                let mut s = vec![0f32; residues * hd];
                accumulate_lanes(&y, &values, stride, off, hd, residues, &mut s);
                for d in 0..hd {
                    let want = match order {
                        PositionSum::Single => reduce4x16(&std::array::from_fn(|j| std::array::from_fn(|l| s[(16 * j + l) * hd + d]))),
                        PositionSum::Batch => hsum16(&std::array::from_fn(|l| s[l * hd + d])),
                    };
                    assert_eq!(fast[d].to_bits(), want.to_bits(), "{order:?} n={n} d={d}");
                }
            }
        }
    }

    #[test]
    fn orders_agree_with_float64_sums() {
        let mut seed = 3;
        let n = 300;
        let x: Vec<f32> = (0..n).map(|_| rand(&mut seed)).collect();
        let y: Vec<f32> = (0..n).map(|_| rand(&mut seed)).collect();
        let want: f64 = x.iter().zip(&y).map(|(&a, &b)| a as f64 * b as f64).sum();
        assert!((dot_f32(&x, &y) as f64 - want).abs() < 1e-4);
        let mut p = x.clone();
        softmax(&mut p);
        let m = x.iter().copied().fold(f32::MIN, f32::max) as f64;
        let z: f64 = x.iter().map(|&v| (v as f64 - m).exp()).sum();
        for (&pi, &xi) in p.iter().zip(&x) {
            assert!((pi as f64 - (xi as f64 - m).exp() / z).abs() < 1e-7);
        }
        let (stride, hd) = (8usize, 8usize);
        let values: Vec<f32> = (0..n * stride).map(|_| rand(&mut seed)).collect();
        for order in [PositionSum::Single, PositionSum::Batch] {
            let mut out = vec![0f32; hd];
            weighted_sum(&p, &values, stride, 0, &mut out, order);
            for d in 0..hd {
                let want: f64 = (0..n).map(|t| p[t] as f64 * values[t * stride + d] as f64).sum();
                assert!((out[d] as f64 - want).abs() < 1e-6, "{order:?} d={d}");
            }
        }
    }
}
