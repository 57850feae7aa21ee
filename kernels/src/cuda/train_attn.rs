//! The training engine's causal GQA attention as strided batched GEMMs (cu/train_attn.cu):
//! Q, K and V copied head-major with K/V repeated over their group's query heads, then
//! `S = Q·Kᵀ`, a causal softmax, `O = P·V` — and for the backward the scores recomputed from
//! the forward's log-sum-exps, `dV = Pᵀ·dO`, `dP = dO·Vᵀ`, `dS = P ⊙ (dP − D)·scale`,
//! `dQ = dS·K`, `dK = dSᵀ·Q`, the K/V gradients summed back over each group.
//!
//! The warp-per-row kernels of `train.rs` compute the same thing in CUDA cores; these run the
//! products on the tensor cores (with [`GemmPrecision::Bf16`]) at the price of the whole
//! `seq_len × seq_len` score matrix per (sequence, head) in memory and the masked upper
//! triangle multiplied anyway. [`TrainAttn::gemm`] picks the path.

use std::ffi::c_void;

use cudarc::cublas::sys::{cublasComputeType_t, cublasGemmAlgo_t, cublasOperation_t, cudaDataType};

use super::train::{grid, warp_grid, Arg::*};
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
        let op = |t: bool| if t { cublasOperation_t::CUBLAS_OP_T } else { cublasOperation_t::CUBLAS_OP_N };
        let compute = match precision {
            GemmPrecision::F32 => cublasComputeType_t::CUBLAS_COMPUTE_32F_PEDANTIC,
            GemmPrecision::Bf16 => cublasComputeType_t::CUBLAS_COMPUTE_32F_FAST_16BF,
        };
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

    /// `x` (token-major, `src_heads` heads of `hd`) to `y` head-major with `n_head` heads, head
    /// `h` reading source head `h / (n_head / src_heads)`.
    fn heads_split(&self, s: &TrainAttn, x: u64, src_heads: usize, y: u64) -> Result<(), CudaError> {
        let args = [P(x), P(y), I(s.n_seq as i32), I(s.seq_len as i32), I(s.n_head as i32), I(src_heads as i32), I(s.head_dim as i32)];
        self.launch_args("tr_heads_split", grid(s.n_seq * s.n_head * s.seq_len * s.head_dim), 256, &args)
    }

    /// The inverse of [`Gpu::heads_split`], summing each group's heads into its one.
    fn heads_merge(&self, s: &TrainAttn, y: u64, dst_heads: usize, x: u64) -> Result<(), CudaError> {
        let args = [P(y), P(x), I(s.n_seq as i32), I(s.seq_len as i32), I(s.n_head as i32), I(dst_heads as i32), I(s.head_dim as i32)];
        self.launch_args("tr_heads_merge", grid(s.n_seq * s.seq_len * dst_heads * s.head_dim), 256, &args)
    }

    /// Head-major copies of q (n_head heads) and of k, v repeated to n_head heads.
    fn split_qkv(&self, s: &TrainAttn, (q, k, v): (u64, u64, u64)) -> Result<[GpuBuffer<f32>; 3], CudaError> {
        let n = s.n_seq * s.seq_len * s.n_head * s.head_dim;
        let (qh, kh, vh) = (self.alloc::<f32>(n)?, self.alloc::<f32>(n)?, self.alloc::<f32>(n)?);
        self.heads_split(s, q, s.n_head, qh.ptr())?;
        self.heads_split(s, k, s.n_kv, kh.ptr())?;
        self.heads_split(s, v, s.n_kv, vh.ptr())?;
        Ok([qh, kh, vh])
    }

    /// `scores_b = a_b · b_bᵀ` over every (sequence, head): `seq_len × seq_len` from head-major
    /// rows of `head_dim`.
    fn scores(&self, p: GemmPrecision, s: &TrainAttn, a: u64, b: u64, scores: u64) -> Result<(), CudaError> {
        let (l, hd) = (s.seq_len, s.head_dim);
        let rows = Strided { ptr: 0, ld: hd, stride: l * hd };
        self.sgemm_strided_batched(
            p,
            (false, true),
            (l, l, hd),
            Strided { ptr: a, ..rows },
            Strided { ptr: b, ..rows },
            Strided { ptr: scores, ld: l, stride: l * l },
            s.n_seq * s.n_head,
            false,
        )
    }

    /// `c_b = op(scores_b) · x_b` (`seq_len × head_dim`): `O = P·V`, `dV = Pᵀ·dO`, `dQ = dS·K`,
    /// `dK = dSᵀ·Q`.
    fn weigh(&self, p: GemmPrecision, s: &TrainAttn, scores: u64, transpose: bool, x: u64, c: u64) -> Result<(), CudaError> {
        let (l, hd) = (s.seq_len, s.head_dim);
        let rows = Strided { ptr: 0, ld: hd, stride: l * hd };
        self.sgemm_strided_batched(
            p,
            (transpose, false),
            (l, hd, l),
            Strided { ptr: scores, ld: l, stride: l * l },
            Strided { ptr: x, ..rows },
            Strided { ptr: c, ..rows },
            s.n_seq * s.n_head,
            false,
        )
    }

    /// Room for `how_many` score matrices of every (sequence, head); their length.
    fn scores_fit(&self, s: &TrainAttn, how_many: usize) -> Result<usize, CudaError> {
        let n = s.n_seq * s.n_head * s.seq_len * s.seq_len;
        self.ensure_free("the attention scores", how_many * 4 * n)?;
        Ok(n)
    }

    /// [`Gpu::tr_attn_fwd`] through batched GEMMs.
    pub(super) fn tr_attn_fwd_gemm(&self, p: GemmPrecision, s: &TrainAttn, qkv: (u64, u64, u64), out: u64, lse: u64) -> Result<(), CudaError> {
        let [qh, kh, vh] = self.split_qkv(s, qkv)?;
        let scores = self.alloc::<f32>(self.scores_fit(s, 1)?)?;
        self.scores(p, s, qh.ptr(), kh.ptr(), scores.ptr())?;
        let rows = s.n_seq * s.n_head * s.seq_len;
        let scale = 1.0 / (s.head_dim as f32).sqrt();
        self.launch_args("tr_attn_softmax", warp_grid(rows), 128, &[P(scores.ptr()), P(lse), L(rows as i64), I(s.seq_len as i32), F(scale)])?;
        // O over Q's copy (no longer needed), then back to token-major.
        self.weigh(p, s, scores.ptr(), false, vh.ptr(), qh.ptr())?;
        self.heads_merge(s, qh.ptr(), s.n_head, out)
    }

    /// [`Gpu::tr_attn_bwd`] through batched GEMMs.
    #[allow(clippy::too_many_arguments)]
    pub(super) fn tr_attn_bwd_gemm(
        &self,
        p: GemmPrecision,
        s: &TrainAttn,
        qkv: (u64, u64, u64),
        (out, lse, d_out): (u64, u64, u64),
        dsum: u64,
        (dq, dk, dv): (u64, u64, u64),
    ) -> Result<(), CudaError> {
        let [qh, kh, vh] = self.split_qkv(s, qkv)?;
        let doh = self.alloc::<f32>(s.n_seq * s.seq_len * s.n_head * s.head_dim)?;
        self.heads_split(s, d_out, s.n_head, doh.ptr())?;
        let rows = s.n_seq * s.n_head * s.seq_len;
        let scale = 1.0 / (s.head_dim as f32).sqrt();
        let dsum_args = [P(out), P(d_out), P(dsum), I(s.n_seq as i32), I(s.seq_len as i32), I(s.n_head as i32), I(s.head_dim as i32)];
        self.launch_args("tr_attn_dsum", warp_grid(rows), 128, &dsum_args)?;
        let n_scores = self.scores_fit(s, 2)?;
        let (probs, d_scores) = (self.alloc::<f32>(n_scores)?, self.alloc::<f32>(n_scores)?);
        self.scores(p, s, qh.ptr(), kh.ptr(), probs.ptr())?;
        let probs_args = [P(probs.ptr()), P(lse), L(rows as i64), I(s.seq_len as i32), F(scale)];
        self.launch_args("tr_attn_probs", grid(rows * s.seq_len), 256, &probs_args)?;
        let dvh = self.alloc::<f32>(s.n_seq * s.seq_len * s.n_head * s.head_dim)?;
        self.weigh(p, s, probs.ptr(), true, doh.ptr(), dvh.ptr())?;
        self.scores(p, s, doh.ptr(), vh.ptr(), d_scores.ptr())?;
        let ds_args = [P(d_scores.ptr()), P(probs.ptr()), P(dsum), L(rows as i64), I(s.seq_len as i32), F(scale)];
        self.launch_args("tr_attn_dscores", grid(rows * s.seq_len), 256, &ds_args)?;
        // dQ over V's copy and dK over dO's (neither is read again).
        self.weigh(p, s, d_scores.ptr(), false, kh.ptr(), vh.ptr())?;
        self.weigh(p, s, d_scores.ptr(), true, qh.ptr(), doh.ptr())?;
        self.heads_merge(s, vh.ptr(), s.n_head, dq)?;
        self.heads_merge(s, doh.ptr(), s.n_kv, dk)?;
        self.heads_merge(s, dvh.ptr(), s.n_kv, dv)
    }
}
