//! RMSNorm over each row: `y = x · r · w` with `r = 1/sqrt(mean(x²) + eps)`, computed as the
//! runtime's `ops::rms_norm` does (sum of squares in f64, `r` in f32) so a trained student
//! normalizes the same way when served. The forward keeps `r` per row for the backward.
//!
//! Backward, with `g = dy ⊙ w`: `dx = r·g − x · r³/d · Σ(g ⊙ x)`, `dw += Σ_rows dy ⊙ x · r`.
//!
//! # Panics
//! If a slice is shorter than `rows × d` (internal callers check shapes first).

use super::ROWS_PER_TASK;
use rayon::prelude::*;

/// `out = rmsnorm(x) · w` row by row (`d` columns) and `rstd[row] = r`.
pub fn forward(x: &[f32], w: &[f32], d: usize, eps: f32, out: &mut [f32], rstd: &mut [f32]) {
    let rows = rstd.len();
    out[..rows * d]
        .par_chunks_mut(d)
        .zip(x[..rows * d].par_chunks(d))
        .zip(rstd.par_iter_mut())
        .with_min_len(ROWS_PER_TASK)
        .for_each(|((o, xr), r)| {
            let sum: f64 = xr.iter().map(|&v| v as f64 * v as f64).sum();
            let mean = (sum / d as f64) as f32;
            *r = 1.0 / (mean + eps).sqrt();
            for ((o, &v), &g) in o.iter_mut().zip(xr).zip(w) {
                *o = v * *r * g;
            }
        });
}

/// The forward's output again from the kept `rstd` (the backward recomputes the normalized
/// input of the next linear instead of storing it).
pub fn apply(x: &[f32], w: &[f32], rstd: &[f32], d: usize, out: &mut [f32]) {
    let rows = rstd.len();
    out[..rows * d]
        .par_chunks_mut(d)
        .zip(x[..rows * d].par_chunks(d))
        .zip(rstd.par_iter())
        .with_min_len(ROWS_PER_TASK)
        .for_each(|((o, xr), &r)| {
            for ((o, &v), &g) in o.iter_mut().zip(xr).zip(w) {
                *o = v * r * g;
            }
        });
}

/// `dx (= or +=)` the input gradient and `dw +=` the weight gradient, given `dy`.
#[allow(clippy::too_many_arguments)]
pub fn backward(
    x: &[f32],
    w: &[f32],
    rstd: &[f32],
    dy: &[f32],
    d: usize,
    dx: &mut [f32],
    accumulate: bool,
    dw: &mut [f32],
) {
    let rows = rstd.len();
    let block = ROWS_PER_TASK * d;
    // One partial dw per block of rows, summed in block order: deterministic at any thread count.
    let partials: Vec<Vec<f64>> = dx[..rows * d]
        .par_chunks_mut(block)
        .zip(x[..rows * d].par_chunks(block))
        .zip(dy[..rows * d].par_chunks(block))
        .zip(rstd.par_chunks(ROWS_PER_TASK))
        .map(|(((dxb, xb), dyb), rb)| {
            let mut dw_part = vec![0f64; d];
            for (((dxr, xr), dyr), &r) in dxb
                .chunks_mut(d)
                .zip(xb.chunks(d))
                .zip(dyb.chunks(d))
                .zip(rb)
            {
                let mut gx = 0f64;
                for ((&g, &v), &dv) in w.iter().zip(xr).zip(dyr) {
                    gx += (dv * g) as f64 * v as f64;
                }
                let coef = (r as f64).powi(3) * gx / d as f64;
                for (i, ((o, &v), &dv)) in dxr.iter_mut().zip(xr).zip(dyr).enumerate() {
                    let val = r * dv * w[i] - (v as f64 * coef) as f32;
                    if accumulate {
                        *o += val;
                    } else {
                        *o = val;
                    }
                    dw_part[i] += (dv * v) as f64 * r as f64;
                }
            }
            dw_part
        })
        .collect();
    let mut total = vec![0f64; d];
    for part in partials {
        for (t, p) in total.iter_mut().zip(part) {
            *t += p;
        }
    }
    for (o, t) in dw.iter_mut().zip(total) {
        *o += t as f32;
    }
}
