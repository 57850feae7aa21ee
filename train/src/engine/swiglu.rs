//! The SwiGLU gate of the feed-forward block: `h = silu(gate) ⊙ up`, with
//! `silu(g) = g / (1 + e^(−g))` written as the runtime's `silu_mul_inplace` writes it.
//!
//! Backward: `d_up = dh ⊙ silu(g)`, `d_gate = dh ⊙ up ⊙ σ(g)·(1 + g·(1 − σ(g)))`.
//!
//! # Panics
//! If `up` or an output is shorter than `gate`.

use super::ROWS_PER_TASK;
use rayon::prelude::*;

/// Elements per rayon task (element-wise work has no rows of its own).
const CHUNK: usize = ROWS_PER_TASK * 256;

pub fn forward(gate: &[f32], up: &[f32], h: &mut [f32]) {
    let n = gate.len();
    h[..n]
        .par_chunks_mut(CHUNK)
        .zip(gate.par_chunks(CHUNK))
        .zip(up[..n].par_chunks(CHUNK))
        .for_each(|((h, g), u)| {
            for ((h, &g), &u) in h.iter_mut().zip(g).zip(u) {
                *h = g / (1.0 + (-g).exp()) * u;
            }
        });
}

/// Overwrites `d_gate` and `d_up` from `dh`.
pub fn backward(gate: &[f32], up: &[f32], dh: &[f32], d_gate: &mut [f32], d_up: &mut [f32]) {
    let n = gate.len();
    d_gate[..n]
        .par_chunks_mut(CHUNK)
        .zip(d_up[..n].par_chunks_mut(CHUNK))
        .zip(gate.par_chunks(CHUNK))
        .zip(up[..n].par_chunks(CHUNK))
        .zip(dh[..n].par_chunks(CHUNK))
        .for_each(|((((dg, du), g), u), dh)| {
            for ((((dg, du), &g), &u), &dh) in dg.iter_mut().zip(du).zip(g).zip(u).zip(dh) {
                let sig = 1.0 / (1.0 + (-g).exp());
                *du = dh * g * sig;
                *dg = dh * u * sig * (1.0 + g * (1.0 - sig));
            }
        });
}
