//! Causal grouped-query attention over a batch of equal-length sequences, each attending only
//! to itself from position 0: `out_h = softmax(Q_h·K_gᵀ / sqrt(head_dim), causal) · V_g`, with
//! query head `h` reading kv head `g = h / (n_head / n_head_kv)`, as the runtime computes it
//! (scores scaled in f32, softmax sums in f64).
//!
//! Memory: the forward keeps only the log-sum-exp of each score row (`n × n_head` floats); the
//! backward recomputes the probabilities from it, FlashAttention-style. Both walk the query
//! rows of one (sequence, head) in blocks of [`BLOCK_ROWS`] against the keys up to the block's
//! last row, so a task holds at most a `BLOCK_ROWS × seq_len` slice of one head's scores (two
//! in the backward) and skips the masked upper triangle but for the diagonal blocks.
//!
//! Backward, per (sequence, head), with `P` the probabilities and `D_i = Σ_d dO_id·O_id`:
//! `dV = Pᵀ·dO`, `dP = dO·Vᵀ`, `dS = P ⊙ (dP − D) · scale`, `dQ = dS·K`, `dK = dSᵀ·Q`;
//! the query heads of a group add their `dK`, `dV` into their shared kv head.
//!
//! # Panics
//! If a slice is shorter than the shape says (the student's forward checks shapes first).

use nexus_kernels::gemm::{sgemm, sgemm_t};
use rayon::prelude::*;

/// Query rows per block (a 64 × 256 score slice is 64 KiB, an L2-sized working set).
pub const BLOCK_ROWS: usize = 64;

/// A batch's attention shape.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct AttnShape {
    pub n_seq: usize,
    pub seq_len: usize,
    pub n_head: usize,
    pub n_head_kv: usize,
    pub head_dim: usize,
}

impl AttnShape {
    /// Rows (tokens) in the batch.
    pub fn n(&self) -> usize {
        self.n_seq * self.seq_len
    }

    pub fn q_dim(&self) -> usize {
        self.n_head * self.head_dim
    }

    pub fn kv_dim(&self) -> usize {
        self.n_head_kv * self.head_dim
    }

    fn scale(&self) -> f32 {
        1.0 / (self.head_dim as f32).sqrt()
    }

    /// Offsets of task `(seq, head)`'s first Q row and first K/V row, and its kv head.
    fn task(&self, task: usize) -> (usize, usize, usize) {
        let (seq, h) = (task / self.n_head, task % self.n_head);
        let g = h / (self.n_head / self.n_head_kv);
        let row0 = seq * self.seq_len;
        (
            row0 * self.q_dim() + h * self.head_dim,
            row0 * self.kv_dim() + g * self.head_dim,
            g,
        )
    }
}

/// `out` (`n × q_dim`) from `q` (`n × q_dim`, already rotated), `k`, `v` (`n × kv_dim`), and
/// `lse` (`[seq][head][pos]`, `n × n_head`): each score row's log-sum-exp for the backward.
pub fn forward(s: &AttnShape, q: &[f32], k: &[f32], v: &[f32], out: &mut [f32], lse: &mut [f32]) {
    let (t_len, hd, qd, kvd) = (s.seq_len, s.head_dim, s.q_dim(), s.kv_dim());
    let scale = s.scale();
    // Each task writes its head contiguously here; one pass then interleaves heads into rows.
    let mut heads = vec![0f32; s.n() * qd];
    heads
        .par_chunks_mut(t_len * hd)
        .zip(lse[..s.n() * s.n_head].par_chunks_mut(t_len))
        .enumerate()
        .for_each(|(task, (o, lse))| {
            let (q0, kv0, _) = s.task(task);
            let (qh, kh, vh) = (&q[q0..], &k[kv0..], &v[kv0..]);
            let mut p = vec![0f32; BLOCK_ROWS.min(t_len) * t_len];
            for i0 in (0..t_len).step_by(BLOCK_ROWS) {
                let rows = BLOCK_ROWS.min(t_len - i0);
                let keys = i0 + rows;
                let p = &mut p[..rows * keys];
                sgemm_t(
                    false,
                    true,
                    rows,
                    keys,
                    hd,
                    &qh[i0 * qd..],
                    qd,
                    kh,
                    kvd,
                    p,
                    keys,
                    false,
                );
                for (r, row) in p.chunks_exact_mut(keys).enumerate() {
                    let i = i0 + r;
                    let (seen, masked) = row.split_at_mut(i + 1);
                    let mut max = f32::NEG_INFINITY;
                    for x in seen.iter_mut() {
                        *x *= scale;
                        max = max.max(*x);
                    }
                    let mut sum = 0f64;
                    for x in seen.iter_mut() {
                        *x = (*x - max).exp();
                        sum += *x as f64;
                    }
                    let inv = (1.0 / sum) as f32;
                    seen.iter_mut().for_each(|x| *x *= inv);
                    masked.fill(0.0);
                    lse[i] = (max as f64 + sum.ln()) as f32;
                }
                sgemm(
                    rows,
                    hd,
                    keys,
                    p,
                    keys,
                    vh,
                    kvd,
                    &mut o[i0 * hd..],
                    hd,
                    false,
                );
            }
        });
    out[..s.n() * qd]
        .par_chunks_mut(qd)
        .enumerate()
        .for_each(|(t, row)| {
            let (seq, i) = (t / t_len, t % t_len);
            for (h, dst) in row.chunks_exact_mut(hd).enumerate() {
                let task = seq * s.n_head + h;
                dst.copy_from_slice(&heads[(task * t_len + i) * hd..][..hd]);
            }
        });
}

/// Overwrites `dq` (`n × q_dim`), `dk`, `dv` (`n × kv_dim`) from `d_out`, given the forward's
/// inputs, its `out` and `lse`.
#[allow(clippy::too_many_arguments)]
pub fn backward(
    s: &AttnShape,
    q: &[f32],
    k: &[f32],
    v: &[f32],
    out: &[f32],
    lse: &[f32],
    d_out: &[f32],
    dq: &mut [f32],
    dk: &mut [f32],
    dv: &mut [f32],
) {
    let (t_len, hd, qd, kvd) = (s.seq_len, s.head_dim, s.q_dim(), s.kv_dim());
    let scale = s.scale();
    let head_len = t_len * hd;
    // Per task: its dQ, and its share of its kv head's dK and dV, each seq_len × head_dim.
    let mut per_head = vec![0f32; s.n_seq * s.n_head * 3 * head_len];
    per_head
        .par_chunks_mut(3 * head_len)
        .zip(lse[..s.n() * s.n_head].par_chunks(t_len))
        .enumerate()
        .for_each(|(task, (grads, lse))| {
            let (q0, kv0, _) = s.task(task);
            let (qh, kh, vh) = (&q[q0..], &k[kv0..], &v[kv0..]);
            let (oh, doh) = (&out[q0..], &d_out[q0..]);
            let (gq, rest) = grads.split_at_mut(head_len);
            let (gk, gv) = rest.split_at_mut(head_len);
            let d_sum: Vec<f32> = (0..t_len)
                .map(|i| {
                    let (o, d) = (&oh[i * qd..][..hd], &doh[i * qd..][..hd]);
                    o.iter()
                        .zip(d)
                        .map(|(&a, &b)| a as f64 * b as f64)
                        .sum::<f64>() as f32
                })
                .collect();
            let mut p = vec![0f32; BLOCK_ROWS.min(t_len) * t_len];
            let mut dp = vec![0f32; BLOCK_ROWS.min(t_len) * t_len];
            for i0 in (0..t_len).step_by(BLOCK_ROWS) {
                let rows = BLOCK_ROWS.min(t_len - i0);
                let keys = i0 + rows;
                let (p, dp) = (&mut p[..rows * keys], &mut dp[..rows * keys]);
                let (q_blk, do_blk) = (&qh[i0 * qd..], &doh[i0 * qd..]);
                sgemm_t(
                    false, true, rows, keys, hd, q_blk, qd, kh, kvd, p, keys, false,
                );
                for (r, row) in p.chunks_exact_mut(keys).enumerate() {
                    let i = i0 + r;
                    let (seen, masked) = row.split_at_mut(i + 1);
                    seen.iter_mut()
                        .for_each(|x| *x = (*x * scale - lse[i]).exp());
                    masked.fill(0.0);
                }
                sgemm_t(
                    true, false, keys, hd, rows, p, keys, do_blk, qd, gv, hd, true,
                );
                sgemm_t(
                    false, true, rows, keys, hd, do_blk, qd, vh, kvd, dp, keys, false,
                );
                for (r, (dp_row, p_row)) in dp
                    .chunks_exact_mut(keys)
                    .zip(p.chunks_exact(keys))
                    .enumerate()
                {
                    let i = i0 + r;
                    let (seen, masked) = dp_row.split_at_mut(i + 1);
                    for (x, &pv) in seen.iter_mut().zip(p_row) {
                        *x = pv * (*x - d_sum[i]) * scale;
                    }
                    masked.fill(0.0);
                }
                sgemm(
                    rows,
                    hd,
                    keys,
                    dp,
                    keys,
                    kh,
                    kvd,
                    &mut gq[i0 * hd..],
                    hd,
                    false,
                );
                sgemm_t(
                    true, false, keys, hd, rows, dp, keys, q_blk, qd, gk, hd, true,
                );
            }
        });
    let group = s.n_head / s.n_head_kv;
    dq[..s.n() * qd]
        .par_chunks_mut(qd)
        .enumerate()
        .for_each(|(t, row)| {
            let (seq, i) = (t / t_len, t % t_len);
            for (h, dst) in row.chunks_exact_mut(hd).enumerate() {
                let task = seq * s.n_head + h;
                dst.copy_from_slice(&per_head[task * 3 * head_len + i * hd..][..hd]);
            }
        });
    // A kv head's gradient is the sum over its group's query heads, in head order.
    for (which, dst) in [(1, dk), (2, dv)] {
        dst[..s.n() * kvd]
            .par_chunks_mut(kvd)
            .enumerate()
            .for_each(|(t, row)| {
                let (seq, i) = (t / t_len, t % t_len);
                for (g, dst) in row.chunks_exact_mut(hd).enumerate() {
                    dst.fill(0.0);
                    for h in g * group..(g + 1) * group {
                        let task = seq * s.n_head + h;
                        let src = &per_head[(task * 3 + which) * head_len + i * hd..][..hd];
                        dst.iter_mut().zip(src).for_each(|(d, &x)| *d += x);
                    }
                }
            });
    }
}
