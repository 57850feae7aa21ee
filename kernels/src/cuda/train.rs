//! Launchers for training (cu/train.cu): the student's element-wise ops, attention and fused
//! loss with their backwards, AdamW, and an f32 GEMM through cuBLAS with the transposes of
//! `crate::gemm::sgemm_t`. Every address is a device address of f32 data unless a function
//! says otherwise; the caller (nexus-train's CUDA engine) owns the buffers and checks shapes.

use std::ffi::c_void;

use cudarc::cublas::sys::{cublasComputeType_t, cublasGemmAlgo_t, cublasOperation_t, cudaDataType};
use cudarc::driver::result;

use super::{driver_err, CudaError, Gpu};
use crate::adamw::AdamCoefficients;

/// How the training GEMMs compute: exact f32 (the reference, what the parity tests use), or
/// BF16 tensor-core products with f32 inputs, outputs and accumulation (cuBLAS's
/// `COMPUTE_32F_FAST_16BF`: the weights stay f32 masters, only the products round to bf16).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum GemmPrecision {
    F32,
    Bf16,
}

/// `LossRow` in cu/train.cu: one row's running statistics of the fused head and loss.
pub const LOSS_ROW_BYTES: usize = 64;

/// One row's statistics after both passes of the fused loss (read back from the device).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct LossRow {
    pub s_sum: f64,
    pub s_max: f32,
    pub kl: f64,
    pub s_arg: i32,
    pub t_arg: i32,
    pub z_target: f32,
}

impl LossRow {
    /// The starting state of `rows` rows, as bytes to upload: empty log-sum-exps, no best.
    pub fn init_bytes(rows: usize) -> Vec<u8> {
        let mut one = [0u8; LOSS_ROW_BYTES];
        // f32 fields start at byte 32: s_max, st_max, tt_max, s_best, t_best, z_target.
        for f in 0..5 {
            one[32 + 4 * f..36 + 4 * f].copy_from_slice(&f32::NEG_INFINITY.to_ne_bytes());
        }
        one.repeat(rows)
    }

    /// Decodes rows read back from the device.
    pub fn parse(bytes: &[u8]) -> Vec<LossRow> {
        let f64_at = |b: &[u8], o: usize| f64::from_ne_bytes(b[o..o + 8].try_into().expect("8 bytes"));
        let f32_at = |b: &[u8], o: usize| f32::from_ne_bytes(b[o..o + 4].try_into().expect("4 bytes"));
        let i32_at = |b: &[u8], o: usize| i32::from_ne_bytes(b[o..o + 4].try_into().expect("4 bytes"));
        bytes
            .chunks_exact(LOSS_ROW_BYTES)
            .map(|b| LossRow {
                s_sum: f64_at(b, 0),
                kl: f64_at(b, 24),
                s_max: f32_at(b, 32),
                z_target: f32_at(b, 52),
                s_arg: i32_at(b, 56),
                t_arg: i32_at(b, 60),
            })
            .collect()
    }

    /// The student's log-sum-exp over the whole vocabulary.
    pub fn lse(&self) -> f32 {
        (self.s_max as f64 + self.s_sum.ln()) as f32
    }
}

/// Causal GQA attention of a batch of `n_seq` sequences of `seq_len` tokens (the buffers of
/// nexus-train's `engine::attention`, token-major).
#[derive(Debug, Clone, Copy)]
pub struct TrainAttn {
    pub n_seq: usize,
    pub seq_len: usize,
    pub n_head: usize,
    pub n_kv: usize,
    pub head_dim: usize,
    /// `Some(precision)`: through batched GEMMs at that precision (`train_attn.rs`); `None`:
    /// the warp-per-row kernels (f32 throughout).
    pub gemm: Option<GemmPrecision>,
}

/// `AttShape` in cu/train.cu; a kernel reads only the buffers it names (the rest stay 0).
#[repr(C)]
#[derive(Default)]
struct AttArgs {
    q: u64,
    k: u64,
    v: u64,
    out: u64,
    lse: u64,
    dout: u64,
    o: u64,
    lse_out: u64,
    dsum: u64,
    dq: u64,
    dk: u64,
    dv: u64,
    n_seq: i32,
    seq_len: i32,
    n_head: i32,
    n_kv: i32,
    hd: i32,
    scale: f32,
}

#[repr(C)]
struct AdamArgs {
    p: u64,
    g: u64,
    m: u64,
    v: u64,
    n: i64,
    k: [f32; 8],
}

/// A kernel argument: every scalar travels in an 8-byte slot (little-endian, as CUDA's hosts are).
#[derive(Clone, Copy)]
pub(super) enum Arg {
    P(u64),
    I(i32),
    L(i64),
    F(f32),
}
use Arg::{F, I, L, P};

/// cuBLAS's operation for a transpose flag.
pub(super) fn blas_op(transpose: bool) -> cublasOperation_t {
    if transpose {
        cublasOperation_t::CUBLAS_OP_T
    } else {
        cublasOperation_t::CUBLAS_OP_N
    }
}

/// cuBLAS's compute mode for a [`GemmPrecision`].
pub(super) fn blas_compute(p: GemmPrecision) -> cublasComputeType_t {
    match p {
        GemmPrecision::F32 => cublasComputeType_t::CUBLAS_COMPUTE_32F_PEDANTIC,
        GemmPrecision::Bf16 => cublasComputeType_t::CUBLAS_COMPUTE_32F_FAST_16BF,
    }
}

/// Grid for a grid-stride loop over `n` elements.
pub(super) fn grid(n: usize) -> (u32, u32, u32) {
    (n.div_ceil(256).clamp(1, 65_535) as u32, 1, 1)
}

/// Blocks of 4 warps for `tasks` warp-sized tasks.
pub(super) fn warp_grid(tasks: usize) -> (u32, u32, u32) {
    (tasks.div_ceil(4).max(1) as u32, 1, 1)
}

/// Most columns per head the attention kernels hold in registers (ATT_MAXC × 32).
pub const TRAIN_MAX_HEAD_DIM: usize = 256;

/// Query rows and keys per tile of `tr_attn_fwd` (ATT_TQ, ATT_TK in train.cu).
const ATT_TQ: usize = 32;
const ATT_TK: usize = 32;

/// Dynamic shared memory of `tr_attn_fwd`: the Q tile, the padded K tile and the V tile.
fn attn_fwd_smem(hd: usize) -> usize {
    4 * (ATT_TQ * hd + ATT_TK * (hd + 1) + ATT_TK * hd)
}

/// The most dynamic shared memory `tr_attn_fwd` asks for (head_dim 256).
pub(crate) const TRAIN_ATTN_SMEM_MAX: u32 = (4 * (ATT_TQ * TRAIN_MAX_HEAD_DIM + ATT_TK * (TRAIN_MAX_HEAD_DIM + 1) + ATT_TK * TRAIN_MAX_HEAD_DIM)) as u32;

/// Threads of the one-block-per-row kernels (RMSNorm, loss rows).
const ROW_THREADS: u32 = 256;

impl Gpu {
    pub(super) fn launch_args(&self, kernel: &str, grid: (u32, u32, u32), block: u32, args: &[Arg]) -> Result<(), CudaError> {
        let mut slots: Vec<u64> = args
            .iter()
            .map(|a| match *a {
                P(v) => v,
                I(v) => v as u32 as u64,
                L(v) => v as u64,
                F(v) => v.to_bits() as u64,
            })
            .collect();
        let mut params: Vec<*mut c_void> = slots.iter_mut().map(|s| s as *mut u64 as *mut c_void).collect();
        // SAFETY: each slot holds one argument in the kernel's parameter order and type width;
        // the addresses are the caller's device buffers, sized for the grid (nexus-train checks).
        unsafe { self.launch_raw(kernel, grid, block, 0, &mut params) }
    }

    /// Keeps memory freed by stream-ordered frees in the device's pool instead of returning it
    /// to the driver at each synchronization (the default), so a training step that allocates
    /// and frees its activations does not map them again every step.
    pub fn keep_freed_memory(&self) -> Result<(), CudaError> {
        use cudarc::driver::sys;
        let mut threshold = u64::MAX;
        // SAFETY: out-pointer and attribute value are valid locals of the types the calls take.
        unsafe {
            let mut pool: sys::CUmemoryPool = std::ptr::null_mut();
            sys::cuDeviceGetDefaultMemPool(&mut pool, self.cu_device()).result().map_err(driver_err("cuDeviceGetDefaultMemPool"))?;
            sys::cuMemPoolSetAttribute(pool, sys::CUmemPool_attribute::CU_MEMPOOL_ATTR_RELEASE_THRESHOLD, &mut threshold as *mut u64 as *mut c_void)
                .result()
                .map_err(driver_err("cuMemPoolSetAttribute(release threshold)"))
        }
    }

    /// Sets `bytes` bytes at `dst` to zero.
    pub fn zero(&self, dst: u64, bytes: usize) -> Result<(), CudaError> {
        unsafe { result::memset_d8_async(dst, 0, bytes, self.stream_raw()) }.map_err(driver_err("cuMemsetD8"))
    }

    /// Copies `bytes` host bytes to `dst` (ordered on the stream; returns when the copy is done).
    pub fn write_bytes(&self, dst: u64, bytes: &[u8]) -> Result<(), CudaError> {
        unsafe { result::memcpy_htod_async(dst, bytes, self.stream_raw()) }.map_err(driver_err("cuMemcpyHtoD"))?;
        self.sync()
    }

    /// `bytes` bytes from `src` to the host, after everything queued before.
    pub fn read_bytes(&self, src: u64, bytes: usize) -> Result<Vec<u8>, CudaError> {
        let mut out = vec![0u8; bytes];
        unsafe { result::memcpy_dtoh_async(&mut out, src, self.stream_raw()) }.map_err(driver_err("cuMemcpyDtoH"))?;
        self.sync()?;
        Ok(out)
    }

    /// Row-major `c[m][n] (= or +=) op(a)[m][k] · op(b)[k][n]`, `op` transposing where asked,
    /// with leading dimensions as stored: `crate::gemm::sgemm_t` on device buffers.
    #[allow(clippy::too_many_arguments)]
    pub fn sgemm_t(
        &self,
        precision: GemmPrecision,
        (trans_a, trans_b): (bool, bool),
        (m, n, k): (usize, usize, usize),
        (a, lda): (u64, usize),
        (b, ldb): (u64, usize),
        (c, ldc): (u64, usize),
        accumulate: bool,
    ) -> Result<(), CudaError> {
        if m == 0 || n == 0 {
            return Ok(());
        }
        let blas = self.blas()?;
        let (alpha, beta) = (1f32, if accumulate { 1f32 } else { 0f32 });
        let (op, compute) = (blas_op, blas_compute(precision));
        // Row-major C is column-major Cᵀ = op(B)ᵀ·op(A)ᵀ, and a row-major matrix is its own
        // transpose read column-major: swap the operands, keep each one's transpose flag.
        unsafe {
            cudarc::cublas::result::gemm_ex(
                *blas.handle(),
                op(trans_b),
                op(trans_a),
                n as i32,
                m as i32,
                k as i32,
                &alpha as *const f32 as *const c_void,
                b as *const c_void,
                cudaDataType::CUDA_R_32F,
                ldb as i32,
                a as *const c_void,
                cudaDataType::CUDA_R_32F,
                lda as i32,
                &beta as *const f32 as *const c_void,
                c as *mut c_void,
                cudaDataType::CUDA_R_32F,
                ldc as i32,
                compute,
                cublasGemmAlgo_t::CUBLAS_GEMM_DEFAULT,
            )
        }
        .map_err(|e| CudaError::Kernel { kernel: format!("cublasGemmEx({m}×{k} · {k}×{n}, f32)"), detail: format!("{e:?}") })?;
        if self.sync_each() {
            self.sync()?;
        }
        Ok(())
    }

    /// `x[t] = table[tokens[t]]` (i32 tokens, rows of `d`).
    pub fn tr_embed(&self, table: u64, tokens: u64, n: usize, d: usize, x: u64) -> Result<(), CudaError> {
        self.launch_args("tr_embed", grid(n * d), 256, &[P(table), P(tokens), I(n as i32), I(d as i32), P(x)])
    }

    /// `d_table[rows[b]] += dx[p]` for each of the `n_rows` distinct token rows and its
    /// positions `pos[offs[b]..offs[b + 1]]` (i32, ascending), added in that order.
    pub fn tr_embed_bwd(&self, (rows, offs, pos): (u64, u64, u64), n_rows: usize, dx: u64, d: usize, d_table: u64) -> Result<(), CudaError> {
        self.launch_args("tr_embed_bwd", (n_rows as u32, 1, 1), 128, &[P(rows), P(offs), P(pos), P(dx), I(d as i32), P(d_table)])
    }

    /// RMSNorm of `rows` rows of `d`; `compute`: write each row's 1/rms to `rstd`, else read it.
    #[allow(clippy::too_many_arguments)]
    pub fn tr_rmsnorm(&self, x: u64, w: u64, rstd: u64, rows: usize, d: usize, eps: f32, compute: bool, out: u64) -> Result<(), CudaError> {
        let args = [P(x), P(w), P(rstd), I(d as i32), F(eps), I(compute as i32), P(out)];
        self.launch_args("tr_rmsnorm", (rows as u32, 1, 1), ROW_THREADS, &args)
    }

    /// RMSNorm's input gradient (`dx` overwritten, or added to when `accumulate`).
    #[allow(clippy::too_many_arguments)]
    pub fn tr_rmsnorm_bwd(&self, x: u64, w: u64, rstd: u64, dy: u64, rows: usize, d: usize, accumulate: bool, dx: u64) -> Result<(), CudaError> {
        let args = [P(x), P(w), P(rstd), P(dy), I(d as i32), I(accumulate as i32), P(dx)];
        self.launch_args("tr_rmsnorm_bwd", (rows as u32, 1, 1), ROW_THREADS, &args)
    }

    /// RMSNorm's weight gradient, added into `dw`.
    pub fn tr_rmsnorm_dw(&self, x: u64, rstd: u64, dy: u64, rows: usize, d: usize, dw: u64) -> Result<(), CudaError> {
        // 1024 threads: 32 columns × 32 row groups (`__launch_bounds__` in train.cu).
        self.launch_args("tr_rmsnorm_dw", (d.div_ceil(32) as u32, 1, 1), 1024, &[P(x), P(rstd), P(dy), I(rows as i32), I(d as i32), P(dw)])
    }

    /// Rotates `rows` rows of `width` (whole heads of `hd`) in place by `sign` × the angles of
    /// the `[pos][pair]` tables; row `t` is at position `t % seq_len`.
    #[allow(clippy::too_many_arguments)]
    pub fn tr_rope(&self, x: u64, cos: u64, sin: u64, rows: usize, width: usize, hd: usize, seq_len: usize, sign: f32) -> Result<(), CudaError> {
        let args = [P(x), P(cos), P(sin), I(rows as i32), I(width as i32), I(hd as i32), I(seq_len as i32), F(sign)];
        self.launch_args("tr_rope", grid(rows * width / 2), 256, &args)
    }

    /// `h = silu(gate) ⊙ up` over `n` elements.
    pub fn tr_swiglu(&self, gate: u64, up: u64, n: usize, h: u64) -> Result<(), CudaError> {
        self.launch_args("tr_swiglu", grid(n), 256, &[P(gate), P(up), L(n as i64), P(h)])
    }

    pub fn tr_swiglu_bwd(&self, gate: u64, up: u64, dh: u64, n: usize, d_gate: u64, d_up: u64) -> Result<(), CudaError> {
        self.launch_args("tr_swiglu_bwd", grid(n), 256, &[P(gate), P(up), P(dh), L(n as i64), P(d_gate), P(d_up)])
    }

    /// `y += a·x` over `n` elements.
    pub fn tr_axpy(&self, y: u64, x: u64, n: usize, a: f32) -> Result<(), CudaError> {
        self.launch_args("tr_axpy", grid(n), 256, &[P(y), P(x), L(n as i64), F(a)])
    }

    /// `x *= a` over `n` elements.
    pub fn tr_scale(&self, x: u64, n: usize, a: f32) -> Result<(), CudaError> {
        self.launch_args("tr_scale", grid(n), 256, &[P(x), L(n as i64), F(a)])
    }

    /// Zeroes the first `sink` rows of `width` floats of each of `n_seq` sequences of
    /// `seq_len` rows at `x` (nothing when `sink` is 0; all rows when it is `seq_len` or more).
    pub fn tr_zero_sink_rows(&self, x: u64, n_seq: usize, seq_len: usize, sink: usize, width: usize) -> Result<(), CudaError> {
        let sink = sink.min(seq_len);
        if sink == 0 || n_seq == 0 || width == 0 {
            return Ok(());
        }
        let args = [P(x), I(n_seq as i32), I(seq_len as i32), I(sink as i32), I(width as i32)];
        self.launch_args("tr_zero_sink_rows", grid(n_seq * sink * width), 256, &args)
    }

    fn attn_args(s: &TrainAttn) -> Result<AttArgs, CudaError> {
        if s.head_dim == 0 || s.head_dim > TRAIN_MAX_HEAD_DIM || s.n_kv == 0 || !s.n_head.is_multiple_of(s.n_kv) {
            return Err(CudaError::Unsupported(format!(
                "training attention needs head_dim ≤ {TRAIN_MAX_HEAD_DIM} and n_head a multiple of n_kv, got {s:?}"
            )));
        }
        Ok(AttArgs {
            n_seq: s.n_seq as i32,
            seq_len: s.seq_len as i32,
            n_head: s.n_head as i32,
            n_kv: s.n_kv as i32,
            hd: s.head_dim as i32,
            scale: 1.0 / (s.head_dim as f32).sqrt(),
            ..AttArgs::default()
        })
    }

    /// `out` (`n × n_head·hd`) and `lse` (`[seq][head][pos]`) from rotated `q`, `k`, `v`.
    pub fn tr_attn_fwd(&self, s: &TrainAttn, (q, k, v): (u64, u64, u64), out: u64, lse: u64) -> Result<(), CudaError> {
        let args = AttArgs { q, k, v, o: out, lse_out: lse, ..Self::attn_args(s)? };
        if let Some(p) = s.gemm {
            return self.tr_attn_fwd_gemm(p, s, (q, k, v), out, lse);
        }
        let blocks = s.n_seq * s.n_head * s.seq_len.div_ceil(ATT_TQ);
        // SAFETY: AttArgs mirrors AttShape; the kernel reads q, k, v and writes o, lse_out;
        // its shared memory is attn_fwd_smem(head_dim) ≤ TRAIN_ATTN_SMEM_MAX (set at open).
        unsafe { self.launch("tr_attn_fwd", (blocks as u32, 1, 1), 256, attn_fwd_smem(s.head_dim) as u32, &args) }
    }

    /// Overwrites `dq`, `dk`, `dv` from `d_out`, given the forward's inputs, `out` and `lse`;
    /// `dsum` (`n × n_head` floats) is scratch.
    #[allow(clippy::too_many_arguments)]
    pub fn tr_attn_bwd(
        &self,
        s: &TrainAttn,
        (q, k, v): (u64, u64, u64),
        (out, lse, d_out): (u64, u64, u64),
        dsum: u64,
        (dq, dk, dv): (u64, u64, u64),
    ) -> Result<(), CudaError> {
        let args = AttArgs { q, k, v, out, lse, dout: d_out, dsum, dq, dk, dv, ..Self::attn_args(s)? };
        if let Some(p) = s.gemm {
            return self.tr_attn_bwd_gemm(p, s, (q, k, v), (out, lse, d_out), dsum, (dq, dk, dv));
        }
        // SAFETY: as tr_attn_fwd; the dq kernel writes dsum and dq, the dkv kernel reads dsum.
        unsafe {
            self.launch("tr_attn_bwd_dq", warp_grid(s.n_seq * s.n_head * s.seq_len), 128, 0, &args)?;
            self.launch("tr_attn_bwd_dkv", warp_grid(s.n_seq * s.n_kv * s.seq_len), 128, 0, &args)
        }
    }

    /// The fused loss's first pass over one vocabulary chunk: `zs` (and `zt`, 0 without a
    /// teacher) hold `n` rows of `c` logits for tokens `v0..v0 + c`; `rows` is `n` LossRows.
    #[allow(clippy::too_many_arguments)]
    pub fn tr_loss_stats(&self, zs: u64, zt: u64, targets: u64, n: usize, c: usize, v0: usize, inv_t: f32, rows: u64) -> Result<(), CudaError> {
        let args = [P(zs), P(zt), P(targets), I(c as i32), I(v0 as i32), F(inv_t), P(rows)];
        self.launch_args("tr_loss_stats", (n as u32, 1, 1), ROW_THREADS, &args)
    }

    /// The second pass: `zs` becomes the loss's gradient w.r.t. the chunk's logits.
    #[allow(clippy::too_many_arguments)]
    pub fn tr_loss_grad(
        &self,
        (zs, zt, targets): (u64, u64, u64),
        (n, c, v0): (usize, usize, usize),
        temperature: f32,
        (ce_w, kl_w): (f32, f32),
        rows: u64,
    ) -> Result<(), CudaError> {
        let args = [P(zs), P(zt), P(targets), I(c as i32), I(v0 as i32), F(1.0 / temperature), F(temperature), F(ce_w), F(kl_w), P(rows)];
        self.launch_args("tr_loss_grad", (n as u32, 1, 1), ROW_THREADS, &args)
    }

    /// One AdamW update of `n` parameters at `p` with gradient `g` and moments `m`, `v`.
    pub fn tr_adamw(&self, (p, g, m, v): (u64, u64, u64, u64), n: usize, c: &AdamCoefficients) -> Result<(), CudaError> {
        let k = [c.keep, c.beta1, c.one_minus_beta1, c.beta2, c.one_minus_beta2, c.step_size, c.bias2_sqrt, c.eps];
        let args = AdamArgs { p, g, m, v, n: n as i64, k };
        // SAFETY: AdamArgs mirrors the kernel's; the four buffers hold n floats each.
        unsafe { self.launch("tr_adamw", grid(n), 256, 0, &args) }
    }

    /// Σ x² over `n` floats at `x`, in f64; `partial` holds [`SUM_SQUARES_BLOCKS`] f64.
    pub fn tr_sum_squares(&self, x: u64, n: usize, partial: u64) -> Result<f64, CudaError> {
        let blocks = n.div_ceil(256).clamp(1, SUM_SQUARES_BLOCKS);
        self.launch_args("tr_sum_squares", (blocks as u32, 1, 1), 256, &[P(x), L(n as i64), P(partial)])?;
        let bytes = self.read_bytes(partial, blocks * 8)?;
        Ok(bytes.chunks_exact(8).map(|b| f64::from_ne_bytes(b.try_into().expect("8 bytes"))).sum())
    }
}

/// Blocks (and f64 partial sums) of [`Gpu::tr_sum_squares`].
pub const SUM_SQUARES_BLOCKS: usize = 1024;
