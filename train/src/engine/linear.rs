//! A bias-free linear layer `y = x·Wᵀ` with W stored `[d_out][d_in]` (GGUF's layout), and its
//! two gradients. The transposes are folded into the GEMM's packing (`sgemm_t`), so neither W
//! nor the activations are ever copied transposed.
//!
//! # Panics
//! All three panic if a slice is shorter than its dimensions say (an internal error: the
//! student's forward and backward check shapes before calling them).

use nexus_kernels::gemm::{sgemm, sgemm_t};

/// `y[n][d_out] = x[n][d_in] · wᵀ`, overwriting `y` (or adding to it when `accumulate`, which
/// is how a residual branch lands in the stream without a separate pass).
pub fn forward(
    x: &[f32],
    w: &[f32],
    n: usize,
    d_in: usize,
    d_out: usize,
    y: &mut [f32],
    accumulate: bool,
) {
    sgemm_t(
        false, true, n, d_out, d_in, x, d_in, w, d_in, y, d_out, accumulate,
    );
}

/// `dx[n][d_in] (= or +=) dy[n][d_out] · w`.
pub fn backward_input(
    dy: &[f32],
    w: &[f32],
    n: usize,
    d_in: usize,
    d_out: usize,
    dx: &mut [f32],
    accumulate: bool,
) {
    sgemm(n, d_in, d_out, dy, d_out, w, d_in, dx, d_in, accumulate);
}

/// `dw[d_out][d_in] += dyᵀ · x`.
pub fn backward_weight(x: &[f32], dy: &[f32], n: usize, d_in: usize, d_out: usize, dw: &mut [f32]) {
    sgemm_t(
        true, false, d_out, d_in, n, dy, d_out, x, d_in, dw, d_in, true,
    );
}
