//! Launchers for prompt processing: batched element-wise kernels, causal attention over many
//! queries, the f16 GEMM (cuBLAS) projections of a prompt go through, and our own int8 GEMM
//! over Q8_0 weights to compare with it.

use std::ffi::c_void;

use cudarc::cublas::sys::{cublasComputeType_t, cublasGemmAlgo_t, cublasOperation_t, cudaDataType};

use super::layout::DeviceWeight;
use super::{CudaError, Gpu};
use crate::GgmlType;

/// Grid for a grid-stride loop over `n` elements.
fn grid(n: usize) -> u32 {
    n.div_ceil(256).clamp(1, 65_535) as u32
}

/// Same layout as `struct Mat` in common.cuh, without an output.
#[repr(C)]
struct MatArgs {
    q: u64,
    a: u64,
    b: u64,
    bias: u64,
    y: u64,
    rows: i32,
    pad: i32,
}

fn mat(w: &DeviceWeight) -> MatArgs {
    let (q, a, b) = w.ptrs();
    MatArgs { q, a, b, bias: 0, y: 0, rows: w.rows as i32, pad: 0 }
}

/// Causal attention of `n_tok` queries at positions `state[1] + t`, whose K/V are already in
/// the cache (f16 sides, or Q8_0 for a side whose scales are set: see [`super::RopeStore`]).
pub struct AttnPrefill {
    pub q: u64,
    pub k_cache: u64,
    pub v_cache: u64,
    pub k_scales: u64,
    pub v_scales: u64,
    pub out: u64,
    pub state: u64,
    pub scale: f32,
    pub n_head: usize,
    pub n_kv: usize,
    pub hd: usize,
    pub n_tok: usize,
}

impl Gpu {
    /// out[t] = row `tokens[t]` of `w` (i32 tokens, f32 out `[n_tok][cols]`).
    pub fn embed_batch(&self, w: &DeviceWeight, tokens: u64, n_tok: usize, out: u64) -> Result<(), CudaError> {
        #[repr(C)]
        struct Args {
            w: MatArgs,
            tokens: u64,
            out: u64,
            ty: i32,
            cols: i32,
            n_tok: i32,
            pad: i32,
        }
        let args = Args { w: mat(w), tokens, out, ty: w.ty.id() as i32, cols: w.cols as i32, n_tok: n_tok as i32, pad: 0 };
        unsafe { self.launch("embed_batch", (w.cols.div_ceil(256) as u32, n_tok as u32, 1), 256, 0, &args) }
    }

    /// f16 `out[t] = x[t] · rsqrt(mean(x[t]²) + eps) · w` for `n_tok` rows of `cols`.
    pub fn rmsnorm_f16(&self, x: u64, w: u64, out: u64, cols: usize, n_tok: usize, eps: f32) -> Result<(), CudaError> {
        let (mut x, mut w, mut out, mut cols, mut eps) = (x, w, out, cols as i32, eps);
        let mut params = [ptr(&mut x), ptr(&mut w), ptr(&mut out), ptr(&mut cols), ptr(&mut eps)];
        unsafe { self.launch_raw("rmsnorm_f16", (n_tok as u32, 1, 1), 256, 0, &mut params) }
    }

    pub fn to_f16(&self, x: u64, out: u64, n: usize) -> Result<(), CudaError> {
        let (mut x, mut out, mut n64) = (x, out, n as u64);
        let mut params = [ptr(&mut x), ptr(&mut out), ptr(&mut n64)];
        unsafe { self.launch_raw("to_f16", (grid(n), 1, 1), 256, 0, &mut params) }
    }

    /// f16 `out = silu(gate) ⊙ up` over `n` elements.
    pub fn swiglu_f16(&self, gate: u64, up: u64, out: u64, n: usize) -> Result<(), CudaError> {
        let (mut g, mut u, mut out, mut n64) = (gate, up, out, n as u64);
        let mut params = [ptr(&mut g), ptr(&mut u), ptr(&mut out), ptr(&mut n64)];
        unsafe { self.launch_raw("swiglu_f16", (grid(n), 1, 1), 256, 0, &mut params) }
    }

    /// `y[t][r] += bias[r]` for `n_tok` rows of `rows`.
    pub fn add_bias(&self, y: u64, bias: u64, rows: usize, n_tok: usize) -> Result<(), CudaError> {
        let n = rows * n_tok;
        let (mut y, mut b, mut rows, mut n64) = (y, bias, rows as i32, n as u64);
        let mut params = [ptr(&mut y), ptr(&mut b), ptr(&mut rows), ptr(&mut n64)];
        unsafe { self.launch_raw("add_bias", (grid(n), 1, 1), 256, 0, &mut params) }
    }

    /// Rows `r0..r0 + n_rows` of `w` as f16 row-major into `out`.
    pub fn dequant_f16(&self, w: &DeviceWeight, r0: usize, n_rows: usize, out: u64) -> Result<(), CudaError> {
        #[repr(C)]
        struct Args {
            w: MatArgs,
            out: u64,
            ty: i32,
            cols: i32,
            r0: i32,
            n_rows: i32,
        }
        if r0 + n_rows > w.rows {
            return Err(CudaError::Unsupported(format!("rows {r0}..{} of a {}-row matrix", r0 + n_rows, w.rows)));
        }
        let args = Args { w: mat(w), out, ty: w.ty.id() as i32, cols: w.cols as i32, r0: r0 as i32, n_rows: n_rows as i32 };
        unsafe { self.launch("dequant_f16", (grid(n_rows * w.cols), 1, 1), 256, 0, &args) }
    }

    pub fn attn_prefill(&self, a: &AttnPrefill) -> Result<(), CudaError> {
        #[repr(C)]
        struct Args {
            q: u64,
            kc: u64,
            vc: u64,
            ks: u64,
            vs: u64,
            out: u64,
            state: u64,
            scale: f32,
            n_head: i32,
            n_kv: i32,
            hd: i32,
            n_tok: i32,
        }
        if a.hd > 256 || !a.n_head.is_multiple_of(a.n_kv) {
            return Err(CudaError::Unsupported(format!(
                "attention with head size {} and {}/{} heads (needs a size up to 256, whole groups)",
                a.hd, a.n_head, a.n_kv
            )));
        }
        let args = Args {
            q: a.q,
            kc: a.k_cache,
            vc: a.v_cache,
            ks: a.k_scales,
            vs: a.v_scales,
            out: a.out,
            state: a.state,
            scale: a.scale,
            n_head: a.n_head as i32,
            n_kv: a.n_kv as i32,
            hd: a.hd as i32,
            n_tok: a.n_tok as i32,
        };
        super::ops::check_q8_heads(a.hd, a.k_scales, a.v_scales)?;
        if self.tiled_prefill && a.hd.is_multiple_of(2) && a.hd <= 128 {
            // FA_Q queries of one head per block (prefill.cu); f32 tiles when a side is Q8_0.
            let kernel = if a.k_scales != 0 || a.v_scales != 0 { "attn_prefill_tiled_q8" } else { "attn_prefill_tiled" };
            return unsafe { self.launch(kernel, (a.n_tok.div_ceil(16) as u32, a.n_head as u32, 1), 128, 0, &args) };
        }
        let warps = a.n_head * a.n_tok;
        unsafe { self.launch("attn_prefill", (warps.div_ceil(4) as u32, 1, 1), 128, 0, &args) }
    }

    /// Activations as [`Gpu::mmq_q8_0`] takes them: `x16` f16 `[n_rows][cols]` → `xq` i8 (same
    /// shape) and `xd` f32 `[n_rows][cols / 32]`, per 32 values scaled by max|x| / 127 and
    /// rounded to nearest, ties to even (the CPU's activation quantizer).
    pub fn quantize_q8_rows(&self, x16: u64, xq: u64, xd: u64, n_rows: usize, cols: usize) -> Result<(), CudaError> {
        if !cols.is_multiple_of(32) {
            return Err(CudaError::Unsupported(format!("8-bit activations of {cols} columns (needs whole blocks of 32)")));
        }
        let blocks = (n_rows * cols / 32) as u64;
        let (mut x, mut q, mut d, mut nb) = (x16, xq, xd, blocks);
        let mut params = [ptr(&mut x), ptr(&mut q), ptr(&mut d), ptr(&mut nb)];
        // One warp per block of 32, 8 warps a launch block.
        unsafe { self.launch_raw("quantize_q8_rows", (blocks.div_ceil(8) as u32, 1, 1), 256, 0, &mut params) }
    }

    /// `y[t][r] (= or +=) Σ_c w[r][c] · x[t][c]` for `n_tok` tokens of a Q8_0 weight on int8
    /// tensor cores, x quantized by [`Gpu::quantize_q8_rows`]; y f32 `[n_tok][ldy]`. The
    /// alternative to [`Gpu::dequant_f16`] + [`Gpu::gemm_f16`] (prefill.cu says how it works).
    #[allow(clippy::too_many_arguments)]
    pub fn mmq_q8_0(&self, w: &DeviceWeight, xq: u64, xd: u64, y: u64, n_tok: usize, ldy: usize, accumulate: bool) -> Result<(), CudaError> {
        #[repr(C)]
        struct Args {
            wq: u64,
            wd: u64,
            xq: u64,
            xd: u64,
            y: u64,
            rows: i32,
            cols: i32,
            n_tok: i32,
            ldy: i32,
            accumulate: i32,
            pad: i32,
        }
        if w.ty != GgmlType::Q8_0 || !w.cols.is_multiple_of(32) {
            return Err(CudaError::Unsupported(format!("the int8 GEMM over a {} weight of {} columns (Q8_0 only)", w.ty, w.cols)));
        }
        if !self.has_int8_mma() {
            return Err(CudaError::Unsupported(format!("the int8 GEMM needs sm_80 or later; this GPU is {}", self.arch)));
        }
        let (wq, wd, _) = w.ptrs();
        let args = Args {
            wq,
            wd,
            xq,
            xd,
            y,
            rows: w.rows as i32,
            cols: w.cols as i32,
            n_tok: n_tok as i32,
            ldy: ldy as i32,
            accumulate: accumulate as i32,
            pad: 0,
        };
        // MQ_BM weight rows × MQ_BN tokens per block (prefill.cu).
        unsafe { self.launch("mmq_q8_0", (w.rows.div_ceil(128) as u32, n_tok.div_ceil(64) as u32, 1), 256, 0, &args) }
    }

    /// `y[t] += B·(s·A·x[t])` for `n_tok` tokens when `w` carries a LoRA update (nothing
    /// otherwise): two small GEMMs, the second accumulating into y. x16 is the f16 input of
    /// `w`'s own GEMM, y f32 `[n_tok][w.rows]`; `t` (f32) and `t16` (f16) hold `n_tok × rank`.
    pub fn lora_gemm(&self, w: &DeviceWeight, x16: u64, y: u64, n_tok: usize, t: u64, t16: u64) -> Result<(), CudaError> {
        let Some(l) = &w.lora else { return Ok(()) };
        let (a, b, _) = l.ptrs();
        self.gemm_f16(a, x16, t, l.rank, w.cols, n_tok, l.rank, false)?;
        self.to_f16(t, t16, n_tok * l.rank)?;
        self.gemm_f16(b, t16, y, w.rows, l.rank, n_tok, w.rows, true)
    }

    /// `y[t][r] (= or +=) Σ_c w[r][c] · x[t][c]` for `n_tok` tokens: w f16 `[rows][cols]`,
    /// x f16 `[n_tok][cols]`, y f32 `[n_tok][ldy]` (row-major; `ldy ≥ rows`), f32 accumulation.
    #[allow(clippy::too_many_arguments)]
    pub fn gemm_f16(&self, w: u64, x: u64, y: u64, rows: usize, cols: usize, n_tok: usize, ldy: usize, accumulate: bool) -> Result<(), CudaError> {
        let blas = self.blas()?;
        let (alpha, beta) = (1f32, if accumulate { 1f32 } else { 0f32 });
        // Row-major [rows][cols] is column-major cols × rows: y' (rows × n_tok) = w'ᵀ · x'.
        unsafe {
            cudarc::cublas::result::gemm_ex(
                *blas.handle(),
                cublasOperation_t::CUBLAS_OP_T,
                cublasOperation_t::CUBLAS_OP_N,
                rows as i32,
                n_tok as i32,
                cols as i32,
                &alpha as *const f32 as *const c_void,
                w as *const c_void,
                cudaDataType::CUDA_R_16F,
                cols as i32,
                x as *const c_void,
                cudaDataType::CUDA_R_16F,
                cols as i32,
                &beta as *const f32 as *const c_void,
                y as *mut c_void,
                cudaDataType::CUDA_R_32F,
                ldy as i32,
                cublasComputeType_t::CUBLAS_COMPUTE_32F,
                cublasGemmAlgo_t::CUBLAS_GEMM_DEFAULT,
            )
        }
        .map_err(|e| CudaError::Kernel { kernel: format!("cublasGemmEx({rows}×{cols} · {n_tok} tokens)"), detail: format!("{e:?}") })?;
        if self.sync_each() {
            self.sync()?;
        }
        Ok(())
    }
}

fn ptr<T>(v: &mut T) -> *mut c_void {
    v as *mut T as *mut c_void
}
