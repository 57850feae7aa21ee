//! f32 vector helpers for the model forward pass. Only the reductions get explicit SIMD
//! (`dot_f32`); the element-wise loops are left to the compiler, which vectorizes them.

use crate::simd;
use crate::{GgmlType, KernelError};

/// `out = x / rms(x) * weight` with ggml's rounding: each square rounded to f32, then summed
/// in f64 in order; `(x * scale) * weight`.
pub fn rms_norm(x: &[f32], weight: &[f32], eps: f32, out: &mut [f32]) {
    let n = x.len().min(weight.len()).min(out.len());
    if n == 0 {
        return;
    }
    let sum: f64 = x[..n].iter().map(|&v| (v * v) as f64).sum();
    let mean = (sum / n as f64) as f32;
    let scale = 1.0 / (mean + eps).sqrt();
    for ((o, &v), &g) in out[..n].iter_mut().zip(&x[..n]).zip(&weight[..n]) {
        *o = v * scale * g;
    }
}

/// Numerically stable softmax (max subtracted); the sum is accumulated in f64.
pub fn softmax_inplace(x: &mut [f32]) {
    if x.is_empty() {
        return;
    }
    let max = x.iter().copied().fold(f32::NEG_INFINITY, f32::max);
    let mut sum = 0.0f64;
    for v in x.iter_mut() {
        *v = (*v - max).exp();
        sum += *v as f64;
    }
    let inv = (1.0 / sum) as f32;
    for v in x.iter_mut() {
        *v *= inv;
    }
}

/// `gate[i] = silu(gate[i]) * up[i]` (SwiGLU).
pub fn silu_mul_inplace(gate: &mut [f32], up: &[f32]) {
    for (g, &u) in gate.iter_mut().zip(up) {
        *g = *g / (1.0 + (-*g).exp()) * u;
    }
}

pub fn add_inplace(a: &mut [f32], b: &[f32]) {
    for (x, &y) in a.iter_mut().zip(b) {
        *x += y;
    }
}

/// Dot product over the common length of `a` and `b`.
pub fn dot_f32(a: &[f32], b: &[f32]) -> f32 {
    simd::dot_f32_slices(a, b)
}

/// `y += alpha * x`. Inlined plain loop: the attention's 64-element rows run faster this way
/// than through a call (docs/PERF.md), and its rounding is what the fixtures were made with.
pub fn axpy_inplace(y: &mut [f32], alpha: f32, x: &[f32]) {
    for (v, &u) in y.iter_mut().zip(x) {
        *v += alpha * u;
    }
}

/// `y += alpha * x` over the common length with fused multiply-adds where the CPU has them,
/// for long rows (a LoRA's `B·t` during decoding).
pub fn axpy_fma(y: &mut [f32], alpha: f32, x: &[f32]) {
    simd::axpy_f32_slices(y, alpha, x);
}

/// `y += alpha · x` for one row `x` of F32, F16 or Q8_0 values, `y.len()` of them: a value
/// row of a KV cache added into an attention output without widening it first.
pub fn axpy_row(ty: GgmlType, y: &mut [f32], alpha: f32, x: &[u8]) -> Result<(), KernelError> {
    crate::quant::check_sizes(ty, y.len(), x.len(), "axpy_row")?;
    if simd::axpy_row(ty, y, alpha, x) {
        Ok(())
    } else {
        Err(KernelError::Unsupported { ty, what: "axpy_row" })
    }
}

pub fn scale_inplace(x: &mut [f32], s: f32) {
    for v in x.iter_mut() {
        *v *= s;
    }
}

/// Logits per slice of [`slice_top_k`] (`TOPK_SLICE` of the CUDA kernel `topk_slices`).
pub const TOP_K_SLICE: usize = 1024;

/// The `k` largest logits of each slice of [`TOP_K_SLICE`], as (id, value) pairs, the slice's
/// best first in the sampler's order: larger value first, lower id first on ties, NaN counted
/// (and given) as −∞, +∞ level with `f32::MAX`. A slice with fewer than `k` logits gives all of them. The `k` largest overall are
/// among these, so a sampler that keeps only the top `k` can choose from them instead of the
/// whole vocabulary. The CPU reference of the CUDA kernel, which pads short slices with id −1.
pub fn slice_top_k(logits: &[f32], k: usize) -> Vec<(u32, f32)> {
    let mut out = Vec::new();
    for (s, slice) in logits.chunks(TOP_K_SLICE).enumerate() {
        let base = s * TOP_K_SLICE;
        let mut c: Vec<(u32, f32)> =
            slice.iter().enumerate().map(|(i, &v)| ((base + i) as u32, if v.is_nan() { f32::NEG_INFINITY } else { v })).collect();
        let key = |v: f32| v.min(f32::MAX);
        c.sort_by(|a, b| key(b.1).total_cmp(&key(a.1)).then(a.0.cmp(&b.0)));
        c.truncate(k);
        out.extend(c);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn slice_top_k_holds_the_overall_top_k_in_order() {
        // Logits with ties across slices and NaN; the overall top k by (value desc, id asc).
        let n = 3 * TOP_K_SLICE + 77;
        let logits: Vec<f32> = (0..n).map(|i| if i % 101 == 0 { f32::NAN } else { ((i * 7919) % 503) as f32 / 10.0 }).collect();
        for k in [1, 5, 40, 600] {
            let cands = slice_top_k(&logits, k);
            assert_eq!(cands.len(), 3 * k + k.min(77));
            let mut all: Vec<(u32, f32)> = (0..n as u32).map(|i| (i, sanitize(logits[i as usize]))).collect();
            all.sort_by(|a, b| b.1.total_cmp(&a.1).then(a.0.cmp(&b.0)));
            let mut got = cands.clone();
            got.sort_by(|a, b| b.1.total_cmp(&a.1).then(a.0.cmp(&b.0)));
            assert_eq!(&got[..k], &all[..k], "k = {k}");
            // Each slice's part is in the sampler's order already.
            for part in cands.chunks(k) {
                assert!(part.windows(2).all(|w| w[0].1 > w[1].1 || (w[0].1 == w[1].1 && w[0].0 < w[1].0)));
            }
        }
    }

    fn sanitize(v: f32) -> f32 {
        if v.is_nan() {
            f32::NEG_INFINITY
        } else {
            v
        }
    }
}
