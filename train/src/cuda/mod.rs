//! The student's training engine on the GPU (the `cuda` feature): the CPU engine's forward,
//! backward, fused head/loss and AdamW step, op for op, with the weights, gradients and Adam
//! moments resident on the device and every matrix product a cuBLAS GEMM
//! (`nexus_kernels::cuda`'s training launchers; kernels in `cu/train.cu`).
//!
//! The CPU engine (`crate::engine`, `crate::student`) is the reference: `train/tests/cuda_engine.rs`
//! checks activations, loss, every gradient and an optimizer step against it on random inputs.
//! With [`GemmPrecision::F32`] the GEMMs are exact f32 (results within f32 rounding of the CPU's,
//! summed in another order); [`GemmPrecision::Bf16`] multiplies in bf16 on the tensor cores
//! with f32 inputs, outputs and accumulation — the f32 weights are the master copy.
//!
//! Parameters live in one flat buffer in [`Params::named`] order (gradients and moments alike),
//! so upload, download, norms and zeroing are one call each.

mod anchor;
mod backward;
mod forward;
mod loss;
mod optim;
mod teacher;

use std::sync::Arc;

use nexus_kernels::cuda::{GemmPrecision, Gpu, GpuBuffer};

use crate::engine::{check_len, EngineError};
use crate::student::{Params, StudentConfig};

pub use anchor::{AnchorRows, DeviceAnchor};
pub use forward::DeviceActs;
pub use teacher::{CudaTeacher, DeviceTeacherOut};

/// A student on the GPU with its gradients and AdamW moments.
pub struct CudaStudent {
    /// Shared with the teacher when it runs on the GPU too: one stream, so the student's
    /// kernels may read the teacher's outputs without a synchronization.
    gpu: Arc<Gpu>,
    cfg: StudentConfig,
    precision: GemmPrecision,
    /// `(offset, len)` of each tensor of [`Params::named`] in the flat buffers.
    spans: Vec<(usize, usize)>,
    /// The GGUF name of each tensor (weight decay skips the norms).
    names: Vec<String>,
    params: GpuBuffer<f32>,
    /// Gradients and AdamW moments; `None` for a frozen model (the teacher), which holds only
    /// its weights.
    train: Option<TrainBuffers>,
    /// The teacher's output head (`n_vocab × n_embd` of its own width), once set.
    teacher_head: Option<(GpuBuffer<f32>, usize)>,
    /// Attention through batched GEMMs at `precision` (the default), or the warp-per-row
    /// kernels in f32 (`NEXUS_TRAIN_ATTN=kernels`, or [`CudaStudent::set_gemm_attention`]).
    gemm_attention: bool,
}

/// A trainable model's gradients and AdamW moments, laid out as its weights.
struct TrainBuffers {
    grads: GpuBuffer<f32>,
    m: GpuBuffer<f32>,
    v: GpuBuffer<f32>,
}

fn frozen_error() -> EngineError {
    EngineError::Invalid("this model is frozen (a teacher): it has no gradients or optimizer state".into())
}

/// Index in [`Params::named`] of layer `l`'s tensor `j` (the order of `LayerParams::named`).
fn layer_tensor(l: usize, j: usize) -> usize {
    1 + 9 * l + j
}

/// `LayerParams::named` positions.
mod t {
    pub const ATTN_NORM: usize = 0;
    pub const WQ: usize = 1;
    pub const WK: usize = 2;
    pub const WV: usize = 3;
    pub const WO: usize = 4;
    pub const FFN_NORM: usize = 5;
    pub const W_GATE: usize = 6;
    pub const W_UP: usize = 7;
    pub const W_DOWN: usize = 8;
}

impl CudaStudent {
    /// Opens GPU `ordinal` and uploads `params`; gradients and moments start at zero.
    pub fn new(ordinal: usize, cfg: &StudentConfig, params: &Params, precision: GemmPrecision) -> Result<Self, EngineError> {
        Self::open(ordinal, cfg, params, precision, false)
    }

    /// Opens GPU `ordinal` and uploads a model there, trainable or `frozen`; its shape is
    /// checked before the GPU is touched.
    fn open(ordinal: usize, cfg: &StudentConfig, params: &Params, precision: GemmPrecision, frozen: bool) -> Result<Self, EngineError> {
        Self::check_shape(cfg, params)?;
        Self::upload(Self::open_gpu(ordinal)?, cfg, params, precision, frozen)
    }

    /// GPU `ordinal`, opened for training: freed memory kept in the pool between steps.
    fn open_gpu(ordinal: usize) -> Result<Arc<Gpu>, EngineError> {
        let gpu = Gpu::open(ordinal)?;
        gpu.keep_freed_memory()?;
        Ok(Arc::new(gpu))
    }

    /// [`CudaStudent::new`] on a GPU already open (another model's, sharing its stream).
    pub fn on(gpu: Arc<Gpu>, cfg: &StudentConfig, params: &Params, precision: GemmPrecision) -> Result<Self, EngineError> {
        Self::upload(gpu, cfg, params, precision, false)
    }

    /// A model that is only run forward ([`CudaStudent::forward_frozen`]): its weights on the
    /// GPU, no gradients or moments (a teacher).
    pub fn frozen_on(gpu: Arc<Gpu>, cfg: &StudentConfig, params: &Params, precision: GemmPrecision) -> Result<Self, EngineError> {
        Self::upload(gpu, cfg, params, precision, true)
    }

    fn upload(gpu: Arc<Gpu>, cfg: &StudentConfig, params: &Params, precision: GemmPrecision, frozen: bool) -> Result<Self, EngineError> {
        Self::check_shape(cfg, params)?;
        let (mut spans, mut names) = (Vec::new(), Vec::new());
        let mut flat = Vec::with_capacity(params.n_elements());
        for (name, t) in params.named() {
            names.push(name);
            spans.push((flat.len(), t.len()));
            flat.extend_from_slice(t);
        }
        let copies = if frozen { 1 } else { 4 };
        gpu.ensure_free("the model's weights (and a student's gradients and AdamW moments)", 4 * copies * flat.len())?;
        let params = gpu.upload(&flat)?;
        let train = match frozen {
            true => None,
            false => Some(TrainBuffers { grads: gpu.alloc(flat.len())?, m: gpu.alloc(flat.len())?, v: gpu.alloc(flat.len())? }),
        };
        let gemm_attention = std::env::var("NEXUS_TRAIN_ATTN").map_or(true, |v| v != "kernels");
        Ok(CudaStudent { gpu, cfg: cfg.clone(), precision, spans, names, params, train, teacher_head: None, gemm_attention })
    }

    pub fn gpu(&self) -> &Gpu {
        &self.gpu
    }

    /// The GPU, to open another model on it ([`CudaStudent::on`]).
    pub fn shared_gpu(&self) -> Arc<Gpu> {
        Arc::clone(&self.gpu)
    }

    /// What the kernels can run, checked before the GPU is touched.
    fn check_shape(cfg: &StudentConfig, params: &Params) -> Result<(), EngineError> {
        crate::student::check(cfg, params)?;
        if cfg.head_dim > nexus_kernels::cuda::TRAIN_MAX_HEAD_DIM {
            return Err(EngineError::Config(format!(
                "head_dim {} is above the CUDA engine's {}",
                cfg.head_dim,
                nexus_kernels::cuda::TRAIN_MAX_HEAD_DIM
            )));
        }
        Ok(())
    }

    pub fn config(&self) -> &StudentConfig {
        &self.cfg
    }

    /// The gradients and moments, or why there are none.
    fn trainable(&self) -> Result<&TrainBuffers, EngineError> {
        self.train.as_ref().ok_or_else(frozen_error)
    }

    /// Attention through batched GEMMs (`true`) or the warp-per-row kernels.
    pub fn set_gemm_attention(&mut self, on: bool) {
        self.gemm_attention = on;
    }

    /// Device address of tensor `i` (of [`Params::named`]) in `buf`.
    fn at(&self, buf: &GpuBuffer<f32>, i: usize) -> u64 {
        buf.ptr_at(self.spans[i].0)
    }

    fn layer_w(&self, l: usize, j: usize) -> u64 {
        self.at(&self.params, layer_tensor(l, j))
    }

    fn layer_g(&self, grads: &GpuBuffer<f32>, l: usize, j: usize) -> u64 {
        self.at(grads, layer_tensor(l, j))
    }

    /// The embedding's index, the final norm's and the head's (the embedding when tied).
    fn ends(&self) -> (usize, usize, usize) {
        let norm = 1 + 9 * self.cfg.n_layer;
        (0, norm, if self.cfg.tied { 0 } else { norm + 1 })
    }

    /// Sets the teacher's output head for the KL term (`n_vocab` rows of `n_embd`).
    pub fn set_teacher_head(&mut self, weight: &[f32], n_embd: usize) -> Result<(), EngineError> {
        check_len("teacher head (n_vocab × teacher n_embd)", self.cfg.n_vocab * n_embd, weight.len())?;
        self.teacher_head = Some((self.gpu.upload(weight)?, n_embd));
        Ok(())
    }

    /// Gradients to zero (the start of a step's accumulation).
    pub fn zero_grads(&self) -> Result<(), EngineError> {
        let grads = &self.trainable()?.grads;
        Ok(self.gpu.zero(grads.ptr(), 4 * grads.len())?)
    }

    fn download(&self, buf: &GpuBuffer<f32>) -> Result<Params, EngineError> {
        let flat = self.gpu.read(buf, buf.len())?;
        let mut out = Params::zeros(&self.cfg);
        for (t, &(o, n)) in out.tensors_mut().into_iter().zip(&self.spans) {
            t.copy_from_slice(&flat[o..o + n]);
        }
        Ok(out)
    }

    pub fn params(&self) -> Result<Params, EngineError> {
        self.download(&self.params)
    }

    pub fn grads(&self) -> Result<Params, EngineError> {
        self.download(&self.trainable()?.grads)
    }

    /// The AdamW moments (for a checkpoint).
    pub fn moments(&self) -> Result<(Params, Params), EngineError> {
        let t = self.trainable()?;
        Ok((self.download(&t.m)?, self.download(&t.v)?))
    }

    /// Replaces the AdamW moments (resuming from a checkpoint; the weights came with `new`).
    pub fn load_moments(&mut self, m: &Params, v: &Params) -> Result<(), EngineError> {
        let t = self.train.as_mut().ok_or_else(frozen_error)?;
        for (buf, p) in [(&mut t.m, m), (&mut t.v, v)] {
            crate::student::check(&self.cfg, p)?;
            let flat: Vec<f32> = p.named().iter().flat_map(|(_, t)| t.iter().copied()).collect();
            self.gpu.write(buf, &flat)?;
        }
        Ok(())
    }

    /// Row-major `c = op(a)·op(b)` (`accumulate`: `c +=`), as `nexus_kernels::gemm::sgemm_t`.
    #[allow(clippy::too_many_arguments)]
    fn gemm(&self, ta: bool, tb: bool, m: usize, n: usize, k: usize, a: (u64, usize), b: (u64, usize), c: (u64, usize), acc: bool) -> Result<(), EngineError> {
        Ok(self.gpu.sgemm_t(self.precision, (ta, tb), (m, n, k), a, b, c, acc)?)
    }

    /// `y[n][d_out] (= or +=) x[n][d_in] · wᵀ` (engine::linear::forward).
    #[allow(clippy::too_many_arguments)]
    fn linear(&self, x: u64, w: u64, n: usize, d_in: usize, d_out: usize, y: u64, acc: bool) -> Result<(), EngineError> {
        self.gemm(false, true, n, d_out, d_in, (x, d_in), (w, d_in), (y, d_out), acc)
    }

    /// `dx[n][d_in] (= or +=) dy[n][d_out] · w` (engine::linear::backward_input).
    #[allow(clippy::too_many_arguments)]
    fn linear_dx(&self, dy: u64, w: u64, n: usize, d_in: usize, d_out: usize, dx: u64, acc: bool) -> Result<(), EngineError> {
        self.gemm(false, false, n, d_in, d_out, (dy, d_out), (w, d_in), (dx, d_in), acc)
    }

    /// `dw[d_out][d_in] += dyᵀ · x` (engine::linear::backward_weight).
    fn linear_dw(&self, x: u64, dy: u64, n: usize, d_in: usize, d_out: usize, dw: u64) -> Result<(), EngineError> {
        self.gemm(true, false, d_out, d_in, n, (dy, d_out), (x, d_in), (dw, d_in), true)
    }
}
