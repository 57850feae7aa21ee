//! The training engine's causal GQA attention as strided batched GEMMs (cu/train_attn.cu):
//! Q, K and V copied head-major, one GEMM batch per (sequence, KV head) with the group's query
//! heads stacked, then `S = Q·Kᵀ`, a causal softmax, `O = P·V` — and for the backward the
//! scores recomputed from the forward's log-sum-exps, `dV = Pᵀ·dO`, `dP = dO·Vᵀ`,
//! `dS = P ⊙ (dP − D)·scale`, `dQ = dS·K`, `dK = dSᵀ·Q` (the group's sums inside the GEMMs).
//!
//! The warp-per-row kernels of `train.rs` compute the same thing in CUDA cores; these run the
//! products on the tensor cores (with [`GemmPrecision::Bf16`]) at the price of the whole
//! `seq_len × seq_len` score matrix per (sequence, head) in memory and the masked upper
//! triangle multiplied anyway. [`TrainAttn::gemm`] picks the path.

use std::ffi::c_void;

use cudarc::cublas::sys::{cublasGemmAlgo_t, cudaDataType};

use super::train::{blas_compute, blas_op, grid, warp_grid, Arg::*};
use super::{CudaError, GemmPrecision, Gpu, GpuBuffer, TrainAttn};

/// One operand of a strided batched GEMM: address, leading dimension, stride between batches
/// (all in elements).
#[derive(Clone, Copy)]
pub struct Strided {
    pub ptr: u64,
    pub ld: usize,
    pub stride: usize,
}

impl Gpu {
    /// `batch` row-major products `c_b (= or +=) op(a_b)·op(b_b)`, `m × n` from inner size `k`
    /// ([`Gpu::sgemm_t`] for each `b`, operands `stride` elements apart).
    #[allow(clippy::too_many_arguments)]
    pub fn sgemm_strided_batched(
        &self,
        precision: GemmPrecision,
        (trans_a, trans_b): (bool, bool),
        (m, n, k): (usize, usize, usize),
        a: Strided,
        b: Strided,
        c: Strided,
        batch: usize,
        accumulate: bool,
    ) -> Result<(), CudaError> {
        if m == 0 || n == 0 || batch == 0 {
            return Ok(());
        }
        let blas = self.blas()?;
        let (alpha, beta) = (1f32, if accumulate { 1f32 } else { 0f32 });
        let (op, compute) = (blas_op, blas_compute(precision));
        // Row-major as column-major transposed, operands swapped (as in sgemm_t).
        unsafe {
            cudarc::cublas::result::gemm_strided_batched_ex(
                *blas.handle(),
                op(trans_b),
                op(trans_a),
                n as i32,
                m as i32,
                k as i32,
                &alpha as *const f32 as *const c_void,
                b.ptr as *const c_void,
                cudaDataType::CUDA_R_32F,
                b.ld as i32,
                b.stride as i64,
                a.ptr as *const c_void,
                cudaDataType::CUDA_R_32F,
                a.ld as i32,
                a.stride as i64,
                &beta as *const f32 as *const c_void,
                c.ptr as *mut c_void,
                cudaDataType::CUDA_R_32F,
                c.ld as i32,
                c.stride as i64,
                batch as i32,
                compute,
                cublasGemmAlgo_t::CUBLAS_GEMM_DEFAULT,
            )
        }
        .map_err(|e| CudaError::Kernel {
            kernel: format!("cublasGemmStridedBatchedEx({batch} × {m}×{k} · {k}×{n}, f32)"),
            detail: format!("{e:?}"),
        })?;
        if self.sync_each() {
            self.sync()?;
        }
        Ok(())
    }

    /// Between `x` (token-major, `heads` heads of `hd`) and `y` (head-major,
    /// `[seq][head][pos][hd]`): `y` from `x` when `to_heads`, else `x` from `y`.
    fn heads_transpose(&self, s: &TrainAttn, x: u64, y: u64, heads: usize, to_heads: bool) -> Result<(), CudaError> {
        let args = [P(x), P(y), I(s.n_seq as i32), I(s.seq_len as i32), I(heads as i32), I(s.head_dim as i32), I(to_heads as i32)];
        self.launch_args("tr_heads_transpose", grid(s.n_seq * heads * s.seq_len * s.head_dim), 256, &args)
    }

    /// Back to token-major: `x` (overwritten) from head-major `y`.
    fn heads_merge(&self, s: &TrainAttn, y: u64, heads: usize, x: u64) -> Result<(), CudaError> {
        self.heads_transpose(s, x, y, heads, false)
    }

    /// A head-major copy of `x` (token-major, `heads` heads).
    fn split(&self, s: &TrainAttn, x: u64, heads: usize) -> Result<GpuBuffer<f32>, CudaError> {
        let y = self.alloc_scratch::<f32>(s.n_seq * heads * s.seq_len * s.head_dim)?;
        self.heads_transpose(s, x, y.ptr(), heads, true)?;
        Ok(y)
    }

    /// One batch per (sequence, KV head): the group's query heads are consecutive in the
    /// head-major layout, so a batch's query side is one `group·L × hd` block against the KV
    /// head's `L × hd` (no K/V repeated per query head, the group's dK/dV summed by the GEMM),
    /// and its scores are the group's `L × L` matrices stacked — the same memory as one score
    /// matrix per (sequence, head), which the row kernels walk.
    fn groups(s: &TrainAttn) -> (usize, Strided, Strided, Strided) {
        let (l, hd, g) = (s.seq_len, s.head_dim, s.n_head / s.n_kv);
        let query = Strided { ptr: 0, ld: hd, stride: g * l * hd };
        let key = Strided { ptr: 0, ld: hd, stride: l * hd };
        let scores = Strided { ptr: 0, ld: l, stride: g * l * l };
        (g * l, query, key, scores)
    }

    /// `scores = a·bᵀ` per batch: a query-side block (`Q` or `dO`) against a KV head's rows
    /// (`K` or `V`).
    fn qk(&self, p: GemmPrecision, s: &TrainAttn, a: u64, b: u64, scores: u64) -> Result<(), CudaError> {
        let (rows, query, key, sc) = Self::groups(s);
        let (a, b, c) = (Strided { ptr: a, ..query }, Strided { ptr: b, ..key }, Strided { ptr: scores, ..sc });
        self.sgemm_strided_batched(p, (false, true), (rows, s.seq_len, s.head_dim), a, b, c, s.n_seq * s.n_kv, false)
    }

    /// `c = scores·b` per batch (query side): `O = P·V`, `dQ = dS·K`.
    fn pv(&self, p: GemmPrecision, s: &TrainAttn, scores: u64, b: u64, c: u64) -> Result<(), CudaError> {
        let (rows, query, key, sc) = Self::groups(s);
        let (a, b, c) = (Strided { ptr: scores, ..sc }, Strided { ptr: b, ..key }, Strided { ptr: c, ..query });
        self.sgemm_strided_batched(p, (false, false), (rows, s.head_dim, s.seq_len), a, b, c, s.n_seq * s.n_kv, false)
    }

    /// `c = scoresᵀ·b` per batch (a KV head's rows, summed over its group): `dV = Pᵀ·dO`,
    /// `dK = dSᵀ·Q`.
    fn ptq(&self, p: GemmPrecision, s: &TrainAttn, scores: u64, b: u64, c: u64) -> Result<(), CudaError> {
        let (rows, query, key, sc) = Self::groups(s);
        let (a, b, c) = (Strided { ptr: scores, ..sc }, Strided { ptr: b, ..query }, Strided { ptr: c, ..key });
        self.sgemm_strided_batched(p, (true, false), (s.seq_len, s.head_dim, rows), a, b, c, s.n_seq * s.n_kv, false)
    }

    fn score_len(s: &TrainAttn) -> usize {
        s.n_seq * s.n_head * s.seq_len * s.seq_len
    }

    /// [`Gpu::tr_attn_fwd`] through batched GEMMs.
    pub(super) fn tr_attn_fwd_gemm(&self, p: GemmPrecision, s: &TrainAttn, (q, k, v): (u64, u64, u64), out: u64, lse: u64) -> Result<(), CudaError> {
        let (qh, kh, vh) = (self.split(s, q, s.n_head)?, self.split(s, k, s.n_kv)?, self.split(s, v, s.n_kv)?);
        let scores = self.alloc_scratch::<f32>(Self::score_len(s))?;
        self.qk(p, s, qh.ptr(), kh.ptr(), scores.ptr())?;
        let rows = s.n_seq * s.n_head * s.seq_len;
        let scale = 1.0 / (s.head_dim as f32).sqrt();
        self.launch_args("tr_attn_softmax", warp_grid(rows), 128, &[P(scores.ptr()), P(lse), L(rows as i64), I(s.seq_len as i32), F(scale)])?;
        // O over Q's copy (no longer needed), then back to token-major.
        self.pv(p, s, scores.ptr(), vh.ptr(), qh.ptr())?;
        self.heads_merge(s, qh.ptr(), s.n_head, out)
    }

    /// [`Gpu::tr_attn_bwd`] through batched GEMMs.
    #[allow(clippy::too_many_arguments)]
    pub(super) fn tr_attn_bwd_gemm(
        &self,
        p: GemmPrecision,
        s: &TrainAttn,
        (q, k, v): (u64, u64, u64),
        (out, lse, d_out): (u64, u64, u64),
        dsum: u64,
        (dq, dk, dv): (u64, u64, u64),
    ) -> Result<(), CudaError> {
        let (qh, kh, vh) = (self.split(s, q, s.n_head)?, self.split(s, k, s.n_kv)?, self.split(s, v, s.n_kv)?);
        let doh = self.split(s, d_out, s.n_head)?;
        let rows = s.n_seq * s.n_head * s.seq_len;
        let scale = 1.0 / (s.head_dim as f32).sqrt();
        let dsum_args = [P(out), P(d_out), P(dsum), I(s.n_seq as i32), I(s.seq_len as i32), I(s.n_head as i32), I(s.head_dim as i32)];
        self.launch_args("tr_attn_dsum", warp_grid(rows), 128, &dsum_args)?;
        let (probs, d_scores) = (self.alloc_scratch::<f32>(Self::score_len(s))?, self.alloc_scratch::<f32>(Self::score_len(s))?);
        self.qk(p, s, qh.ptr(), kh.ptr(), probs.ptr())?;
        let probs_args = [P(probs.ptr()), P(lse), L(rows as i64), I(s.seq_len as i32), F(scale)];
        self.launch_args("tr_attn_probs", grid(rows * s.seq_len), 256, &probs_args)?;
        let dvh = self.alloc_scratch::<f32>(s.n_seq * s.n_kv * s.seq_len * s.head_dim)?;
        self.ptq(p, s, probs.ptr(), doh.ptr(), dvh.ptr())?;
        self.qk(p, s, doh.ptr(), vh.ptr(), d_scores.ptr())?;
        let ds_args = [P(d_scores.ptr()), P(probs.ptr()), P(dsum), L(rows as i64), I(s.seq_len as i32), F(scale)];
        self.launch_args("tr_attn_dscores", grid(rows * s.seq_len), 256, &ds_args)?;
        // dQ over dO's copy and dK over V's (neither is read again).
        self.pv(p, s, d_scores.ptr(), kh.ptr(), doh.ptr())?;
        self.ptq(p, s, d_scores.ptr(), qh.ptr(), vh.ptr())?;
        self.heads_merge(s, doh.ptr(), s.n_head, dq)?;
        self.heads_merge(s, vh.ptr(), s.n_kv, dk)?;
        self.heads_merge(s, dvh.ptr(), s.n_kv, dv)
    }
}
