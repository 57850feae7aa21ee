//! The teacher on the GPU: its weights dequantized once to f32 (the values the quantized file
//! holds, exactly) and run by the training engine's forward, keeping the final normed hidden
//! states and the anchored layers' residual streams. Unlike `crate::teacher::Teacher` on the
//! CPU, activations stay f32 (the runtime's CPU matmuls round them to 8 bits first), so the
//! two teachers agree to that rounding, not bit for bit.

use nexus_kernels::cuda::GemmPrecision;
use nexus_runtime::model::{Arch, Model, RopeStyle};

use super::CudaStudent;
use crate::engine::EngineError;
use crate::student::{LayerParams, Params, StudentConfig};
use crate::teacher::{dequantize_tensor, TeacherOut};

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
        let cfg = StudentConfig {
            n_vocab: t.n_vocab,
            n_embd: t.n_embd,
            n_layer: t.n_layer,
            n_head: t.n_head,
            n_head_kv: t.n_head_kv,
            head_dim: t.head_dim,
            n_ff: t.n_ff,
            rms_eps: t.rms_eps,
            rope_base: t.rope_base,
            n_ctx: t.n_ctx_train,
            tied: file.tensor_info("output.weight").is_none(),
        };
        let get = |name: &str| dequantize_tensor(file, name).map_err(|e| EngineError::Invalid(e.to_string()));
        let mut layers = Vec::with_capacity(t.n_layer);
        for l in 0..t.n_layer {
            let n = |s: &str| get(&format!("blk.{l}.{s}.weight"));
            layers.push(LayerParams {
                attn_norm: n("attn_norm")?,
                wq: n("attn_q")?,
                wk: n("attn_k")?,
                wv: n("attn_v")?,
                wo: n("attn_output")?,
                ffn_norm: n("ffn_norm")?,
                w_gate: n("ffn_gate")?,
                w_up: n("ffn_up")?,
                w_down: n("ffn_down")?,
            });
        }
        let params = Params {
            embed: get("token_embd.weight")?,
            layers,
            output_norm: get("output_norm.weight")?,
            output: if cfg.tied { None } else { Some(get("output.weight")?) },
        };
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
