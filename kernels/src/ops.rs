//! f32 vector helpers for the model forward pass. Only the reductions get explicit SIMD
//! (`dot_f32`); the element-wise loops are left to the compiler, which vectorizes them.

use crate::simd;

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

pub fn scale_inplace(x: &mut [f32], s: f32) {
    for v in x.iter_mut() {
        *v *= s;
    }
}
