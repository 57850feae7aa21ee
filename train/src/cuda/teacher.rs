//! The teacher on the GPU: its weights dequantized once to f32 (the values the quantized file
//! holds, exactly) and run by the training engine's forward, keeping the final normed hidden
//! states and the anchored layers' residual streams. Unlike `crate::teacher::Teacher` on the
//! CPU, activations stay f32 (the runtime's CPU matmuls round them to 8 bits first), so the
//! two teachers agree to that rounding, not bit for bit.

use std::sync::Arc;

use nexus_kernels::cuda::{GemmPrecision, Gpu, GpuBuffer};
use nexus_runtime::model::{Arch, Model, RopeStyle};

use super::CudaStudent;
use crate::engine::EngineError;
use crate::student::Params;
use crate::teacher::{llama_shape, read_llama_params, TeacherOut};

pub struct CudaTeacher {
    model: CudaStudent,
}

/// What a micro-batch needs of the teacher, on the device: the final normed hidden states
/// (for the KL term) and the residual streams after the anchored layers.
pub struct DeviceTeacherOut {
    pub hidden: GpuBuffer<f32>,
    /// `(layer, stream)`, ascending by layer, each layer once.
    residuals: Vec<(usize, GpuBuffer<f32>)>,
}

impl DeviceTeacherOut {
    /// The stream after teacher layer `l`, when it was asked for.
    pub fn residual(&self, l: usize) -> Option<&GpuBuffer<f32>> {
        self.residuals.iter().find(|(at, _)| *at == l).map(|(_, r)| r)
    }

    /// A teacher's outputs computed on the host (a teacher the training engine cannot run),
    /// uploaded.
    pub fn upload(gpu: &Gpu, out: &TeacherOut) -> Result<DeviceTeacherOut, EngineError> {
        let mut residuals: Vec<(usize, GpuBuffer<f32>)> = Vec::with_capacity(out.residuals.len());
        for (l, r) in &out.residuals {
            if residuals.iter().all(|(at, _)| at != l) {
                residuals.push((*l, gpu.upload(r)?));
            }
        }
        residuals.sort_by_key(|(l, _)| *l);
        Ok(DeviceTeacherOut { hidden: gpu.upload(&out.hidden)?, residuals })
    }
}

impl CudaTeacher {
    /// Uploads `teacher` to GPU `ordinal`, or says why the training engine cannot run it (an
    /// architecture other than plain llama: biases, partial or scaled RoPE).
    pub fn load(ordinal: usize, teacher: &Model, precision: GemmPrecision) -> Result<CudaTeacher, EngineError> {
        let (cfg, params) = Self::read(teacher)?;
        Ok(CudaTeacher { model: CudaStudent::open(ordinal, &cfg, &params, precision, true)? })
    }

    /// [`CudaTeacher::load`] onto the GPU (and stream) a student already holds, so the
    /// student's kernels read the teacher's outputs where they are.
    pub fn load_on(gpu: Arc<Gpu>, teacher: &Model, precision: GemmPrecision) -> Result<CudaTeacher, EngineError> {
        let (cfg, params) = Self::read(teacher)?;
        Ok(CudaTeacher { model: CudaStudent::frozen_on(gpu, &cfg, &params, precision)? })
    }

    /// The teacher's shape and f32 weights, or why the training engine cannot run it.
    fn read(teacher: &Model) -> Result<(crate::student::StudentConfig, Params), EngineError> {
        let t = &teacher.config;
        let file = teacher.file();
        let unsupported = |what: &str| Err(EngineError::Config(format!("{}: the GPU teacher {what}", file.path().display())));
        if t.arch != Arch::Llama || t.rope_style != RopeStyle::Normal {
            return unsupported("runs llama models only");
        }
        if t.rope_dim != t.head_dim || t.rope_freq_scale != 1.0 || file.tensor_info("rope_freqs.weight").is_some() {
            return unsupported("needs plain RoPE over whole heads");
        }
        if (0..t.n_layer).any(|l| ["attn_q", "attn_k", "attn_v", "attn_output"].iter().any(|m| file.tensor_info(&format!("blk.{l}.{m}.bias")).is_some())) {
            return unsupported("has no attention biases");
        }
        let cfg = llama_shape(t, file);
        let params = read_llama_params(file, &cfg).map_err(|e| EngineError::Invalid(e.to_string()))?;
        Ok((cfg, params))
    }

    /// `crate::teacher::Teacher::run` on the GPU, the outputs left there: the final normed
    /// hidden states and the residual stream after each of `layers`.
    pub fn run_device(&self, tokens: &[u32], n_seq: usize, layers: &[usize]) -> Result<DeviceTeacherOut, EngineError> {
        if let Some(&l) = layers.iter().find(|&&l| l >= self.model.cfg.n_layer) {
            return Err(EngineError::Invalid(format!("teacher layer {l} does not exist: the teacher has {} layers", self.model.cfg.n_layer)));
        }
        let acts = self.model.forward_frozen(tokens, n_seq)?;
        // The streams not asked for are freed here, not held through the student's step.
        let residuals = acts.residuals.into_iter().enumerate().filter(|(l, _)| layers.contains(l)).collect();
        Ok(DeviceTeacherOut { hidden: acts.hidden, residuals })
    }

    /// [`CudaTeacher::run_device`] with the outputs copied to the host.
    pub fn run(&self, tokens: &[u32], n_seq: usize, layers: &[usize]) -> Result<TeacherOut, EngineError> {
        let out = self.run_device(tokens, n_seq, layers)?;
        let g = self.model.gpu();
        let mut residuals = Vec::with_capacity(layers.len());
        for &l in layers {
            let r = out.residual(l).ok_or_else(|| EngineError::Invalid(format!("teacher layer {l}: no stream kept")))?;
            residuals.push((l, g.read(r, r.len())?));
        }
        Ok(TeacherOut { hidden: g.read(&out.hidden, out.hidden.len())?, residuals })
    }
}
