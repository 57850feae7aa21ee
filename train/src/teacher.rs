//! The frozen teacher during distillation: the runtime's own model, run as it is quantized,
//! with a probe that keeps the final normed hidden states (the KL term's input) and the
//! residual stream after the layers the anchors read. Its output head is dequantized once so
//! the fused head-and-loss pass can recompute the teacher's logits chunk by chunk: no
//! `tokens × vocab` tensor is ever held for it.

use std::path::Path;
use std::sync::Arc;

use nexus_runtime::gguf::GgufFile;
use nexus_runtime::model::{Logits, Model, ModelConfig, ModelError, Probe};
use rayon::prelude::*;

use crate::error::TrainError;
use crate::student::{Params, StudentConfig};

pub struct Teacher {
    pub model: Model,
    /// The output head, `n_vocab × n_embd` (the embedding when tied).
    pub head: Vec<f32>,
}

/// What one batch of the teacher's forward gives the loss.
pub struct TeacherOut {
    /// Final RMS-normed hidden states, `n × n_embd`.
    pub hidden: Vec<f32>,
    /// `(layer, residual stream after it)`, each `n × n_embd`, in the order asked for.
    pub residuals: Vec<(usize, Vec<f32>)>,
}

impl Teacher {
    pub fn load(path: &Path) -> Result<Teacher, TrainError> {
        let file = Arc::new(GgufFile::open(path).map_err(ModelError::from)?);
        let model = Model::from_file(file)?;
        let head = dequantized_head(&model)?;
        Ok(Teacher { model, head })
    }

    pub fn n_embd(&self) -> usize {
        self.model.config.n_embd
    }

    /// Runs `n_seq` equal sequences laid end to end in `tokens`, each from an empty cache,
    /// keeping the residual stream after each layer of `layers`.
    pub fn run(&self, tokens: &[u32], n_seq: usize, layers: &[usize]) -> Result<TeacherOut, TrainError> {
        let c = &self.model.config;
        if n_seq == 0 || tokens.is_empty() || !tokens.len().is_multiple_of(n_seq) {
            return Err(TrainError::Invalid(format!("teacher: {} tokens do not split into {n_seq} sequences", tokens.len())));
        }
        if let Some(&l) = layers.iter().find(|&&l| l >= c.n_layer) {
            return Err(TrainError::Invalid(format!("teacher layer {l} does not exist: the teacher has {} layers", c.n_layer)));
        }
        if let Some(&t) = tokens.iter().find(|&&t| t as usize >= c.n_vocab) {
            return Err(TrainError::Invalid(format!("token {t} is outside the teacher's vocabulary of {}", c.n_vocab)));
        }
        let seq_len = tokens.len() / n_seq;
        // Sequences in parallel, each forward on one worker: at training batch sizes this keeps
        // both cores busy with far less synchronization than splitting every matmul.
        let per_seq: Vec<Result<TeacherOut, ModelError>> = tokens
            .par_chunks(seq_len)
            .map(|seq| {
                let mut cache = self.model.new_cache(seq_len);
                let mut probe = Collect { layers, hidden: Vec::new(), residuals: vec![Vec::new(); layers.len()] };
                self.model.forward_probed(seq, &mut cache, Logits::None, &mut probe)?;
                Ok(TeacherOut { hidden: probe.hidden, residuals: layers.iter().copied().zip(probe.residuals).collect() })
            })
            .collect();
        let mut out = TeacherOut { hidden: Vec::with_capacity(tokens.len() * c.n_embd), residuals: layers.iter().map(|&l| (l, Vec::with_capacity(tokens.len() * c.n_embd))).collect() };
        for r in per_seq {
            let r = r?;
            out.hidden.extend_from_slice(&r.hidden);
            for (dst, (_, src)) in out.residuals.iter_mut().zip(&r.residuals) {
                dst.1.extend_from_slice(src);
            }
        }
        Ok(out)
    }
}

struct Collect<'a> {
    layers: &'a [usize],
    hidden: Vec<f32>,
    residuals: Vec<Vec<f32>>,
}

impl Probe for Collect<'_> {
    fn residual(&mut self, layer: usize, x: &[f32]) {
        // A layer may be anchored more than once; every slot that names it gets the rows.
        for (slot, &l) in self.layers.iter().enumerate() {
            if l == layer {
                self.residuals[slot].extend_from_slice(x);
            }
        }
    }

    fn final_hidden(&mut self, normed: &[f32]) {
        self.hidden.extend_from_slice(normed);
    }
}

/// The teacher's output head in f32 (`output.weight`, or `token_embd.weight` when tied).
pub fn dequantized_head(model: &Model) -> Result<Vec<f32>, TrainError> {
    let file = model.file();
    let name = if file.tensor_info("output.weight").is_some() { "output.weight" } else { "token_embd.weight" };
    dequantize_tensor(file, name)
}

/// A llama GGUF's shape as the training engine models it (tied when the file has no
/// `output.weight`). The caller checks that the engine computes this model's forward.
pub fn llama_shape(c: &ModelConfig, file: &GgufFile) -> StudentConfig {
    StudentConfig {
        n_vocab: c.n_vocab,
        n_embd: c.n_embd,
        n_layer: c.n_layer,
        n_head: c.n_head,
        n_head_kv: c.n_head_kv,
        head_dim: c.head_dim,
        n_ff: c.n_ff,
        rms_eps: c.rms_eps,
        rope_base: c.rope_base,
        n_ctx: c.n_ctx_train,
        tied: file.tensor_info("output.weight").is_none(),
    }
}

/// Every weight of the engine's llama of shape `cfg` read from `file` in f32; a missing
/// tensor, or one of another size, is an error naming it and the file.
pub fn read_llama_params(file: &GgufFile, cfg: &StudentConfig) -> Result<Params, TrainError> {
    let bad = |what: String| TrainError::Config { path: file.path().to_path_buf(), what };
    let mut params = Params::zeros(cfg);
    let names: Vec<(String, usize)> = params.named().into_iter().map(|(n, t)| (n, t.len())).collect();
    for ((name, len), dst) in names.iter().zip(params.tensors_mut()) {
        if file.tensor_info(name).is_none() {
            return Err(bad(format!("no tensor {name}")));
        }
        let data = dequantize_tensor(file, name)?;
        if data.len() != *len {
            return Err(bad(format!("{name} has {} elements, the config says {len}", data.len())));
        }
        *dst = data;
    }
    Ok(params)
}

/// A whole tensor of any block type in f32.
pub fn dequantize_tensor(file: &GgufFile, name: &str) -> Result<Vec<f32>, TrainError> {
    let info = file.tensor_info(name).ok_or_else(|| TrainError::Invalid(format!("{}: no tensor {name}", file.path().display())))?;
    let n = info.n_elements() as usize;
    let row = info.dims.first().copied().unwrap_or(1) as usize;
    let data = file.tensor_data(info);
    let row_bytes = data.len() / (n / row.max(1)).max(1);
    let mut out = vec![0f32; n];
    out.par_chunks_mut(row)
        .zip(data.par_chunks(row_bytes))
        .try_for_each(|(dst, src)| nexus_kernels::quant::dequantize_row(info.ty, src, dst))
        .map_err(|e| TrainError::Invalid(format!("{}: tensor {name}: {e}", file.path().display())))?;
    Ok(out)
}
