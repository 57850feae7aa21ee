//! Rotary position embedding in GGML's "normal" layout, as the runtime applies it for llama:
//! pairs `(2i, 2i+1)` of each head rotated by `pos · base^(−2i/head_dim)`, over the whole head.
//! Angles are computed in f64 and rounded once, like `nexus_runtime`'s `Rope`.
//!
//! The rotation is orthogonal, so its backward is the rotation by the opposite angle.

use super::ROWS_PER_TASK;
use rayon::prelude::*;

/// `cos`/`sin` of every (position, pair), for positions `0..n_pos`.
pub struct RopeTable {
    head_dim: usize,
    n_pos: usize,
    /// `[pos][pair]`
    cos: Vec<f32>,
    sin: Vec<f32>,
}

impl RopeTable {
    /// # Panics
    /// If `head_dim` is odd (the student config rejects that first).
    pub fn new(head_dim: usize, base: f32, n_pos: usize) -> Self {
        assert!(
            head_dim.is_multiple_of(2),
            "rope needs an even head_dim, got {head_dim}"
        );
        let half = head_dim / 2;
        let inv_freq: Vec<f64> = (0..half)
            .map(|i| (base as f64).powf(-2.0 * i as f64 / head_dim as f64))
            .collect();
        let mut cos = Vec::with_capacity(n_pos * half);
        let mut sin = Vec::with_capacity(n_pos * half);
        for pos in 0..n_pos {
            for &f in &inv_freq {
                let (s, c) = (pos as f64 * f).sin_cos();
                cos.push(c as f32);
                sin.push(s as f32);
            }
        }
        RopeTable {
            head_dim,
            n_pos,
            cos,
            sin,
        }
    }

    /// The `[pos][pair]` cosine and sine tables (the CUDA engine uploads them).
    pub fn tables(&self) -> (&[f32], &[f32]) {
        (&self.cos, &self.sin)
    }

    /// Rotates `x` (`n_seq · seq_len` token-major rows of `width = heads · head_dim`) in place,
    /// row `t` at position `t % seq_len`.
    ///
    /// # Panics
    /// If `seq_len` exceeds the table's positions or `width` is not whole heads.
    pub fn forward(&self, x: &mut [f32], width: usize, seq_len: usize) {
        self.rotate(x, width, seq_len, 1.0);
    }

    /// Turns the gradient w.r.t. the rotated values into the gradient w.r.t. the inputs, in
    /// place (the inverse rotation).
    pub fn backward(&self, dx: &mut [f32], width: usize, seq_len: usize) {
        self.rotate(dx, width, seq_len, -1.0);
    }

    fn rotate(&self, x: &mut [f32], width: usize, seq_len: usize, sign: f32) {
        assert!(
            seq_len <= self.n_pos,
            "rope table holds {} positions, asked for {seq_len}",
            self.n_pos
        );
        assert!(
            width.is_multiple_of(self.head_dim),
            "row of {width} is not whole heads of {}",
            self.head_dim
        );
        let half = self.head_dim / 2;
        x.par_chunks_mut(width)
            .enumerate()
            .with_min_len(ROWS_PER_TASK)
            .for_each(|(t, row)| {
                let pos = t % seq_len;
                let cos = &self.cos[pos * half..(pos + 1) * half];
                let sin = &self.sin[pos * half..(pos + 1) * half];
                for head in row.chunks_exact_mut(self.head_dim) {
                    for (pair, (&c, &s)) in head.chunks_exact_mut(2).zip(cos.iter().zip(sin)) {
                        let s = sign * s;
                        let (x0, x1) = (pair[0], pair[1]);
                        pair[0] = x0 * c - x1 * s;
                        pair[1] = x0 * s + x1 * c;
                    }
                }
            });
    }
}
