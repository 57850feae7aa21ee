//! Token embedding: row `t` of the output is row `tokens[t]` of the table. Its backward adds
//! each output row's gradient into the table row it came from.
//!
//! # Panics
//! If a token is outside the table or a slice is short (the student's forward checks tokens
//! against the vocabulary before calling these).

use rayon::prelude::*;

/// `x[t] = embed[tokens[t]]` for rows of `d`.
pub fn forward(embed: &[f32], tokens: &[u32], d: usize, x: &mut [f32]) {
    x[..tokens.len() * d]
        .par_chunks_mut(d)
        .zip(tokens.par_iter())
        .for_each(|(row, &tok)| {
            let t = tok as usize;
            row.copy_from_slice(&embed[t * d..(t + 1) * d]);
        });
}

/// `d_embed[tokens[t]] += dx[t]`. Sequential in token order: a batch is a few thousand rows,
/// a sub-millisecond pass, and a fixed order keeps repeated tokens' sums deterministic.
pub fn backward(tokens: &[u32], dx: &[f32], d: usize, d_embed: &mut [f32]) {
    for (row, &tok) in dx.chunks_exact(d).zip(tokens) {
        let t = tok as usize;
        for (o, &g) in d_embed[t * d..(t + 1) * d].iter_mut().zip(row) {
            *o += g;
        }
    }
}
