//! The teacher on the GPU: its weights dequantized once to f32 (the values the quantized file
//! holds, exactly) and run by the training engine's forward, keeping the final normed hidden
//! states and the anchored layers' residual streams. Unlike `crate::teacher::Teacher` on the
//! CPU, activations stay f32 (the runtime's CPU matmuls round them to 8 bits first), so the
//! two teachers agree to that rounding, not bit for bit.

use nexus_kernels::cuda::GemmPrecision;
use nexus_runtime::model::{Arch, Model, RopeStyle};

use super::CudaStudent;
use crate::engine::EngineError;
use crate::teacher::{llama_shape, read_llama_params, TeacherOut};

pub struct CudaTeacher {
    model: CudaStudent,
}

impl CudaTeacher {
    /// Uploads `teacher` to GPU `ordinal`, or says why the training engine cannot run it (an
    /// architecture other than plain llama: biases, partial or scaled RoPE).
    pub fn load(ordinal: usize, teacher: &Model, precision: GemmPrecision) -> Result<CudaTeacher, EngineError> {
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
        Ok(CudaTeacher { model: CudaStudent::new(ordinal, &cfg, &params, precision)? })
    }

    /// `crate::teacher::Teacher::run` on the GPU: the final normed hidden states and the
    /// residual stream after each of `layers`, copied to the host.
    pub fn run(&self, tokens: &[u32], n_seq: usize, layers: &[usize]) -> Result<TeacherOut, EngineError> {
        if let Some(&l) = layers.iter().find(|&&l| l >= self.model.cfg.n_layer) {
            return Err(EngineError::Invalid(format!("teacher layer {l} does not exist: the teacher has {} layers", self.model.cfg.n_layer)));
        }
        let acts = self.model.forward_frozen(tokens, n_seq)?;
        let mut residuals = Vec::with_capacity(layers.len());
        for &l in layers {
            residuals.push((l, self.model.residual(&acts, l)?));
        }
        Ok(TeacherOut { hidden: self.model.hidden(&acts)?, residuals })
    }
}
