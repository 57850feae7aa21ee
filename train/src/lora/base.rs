//! The frozen base of an adapter: a student GGUF (any block type the runtime reads) read
//! into the training engine's f32 [`Params`], after checking that the file is a model the
//! engine reproduces exactly — a llama with plain RoPE and no biases or extra tensors.

use std::path::Path;

use nexus_runtime::gguf::GgufFile;
use nexus_runtime::model::{Arch, ModelConfig, ModelError, RopeStyle};

use crate::error::TrainError;
use crate::student::{Params, StudentConfig};
use crate::teacher::dequantize_tensor;

/// Reads `path` as a student: its shape and every weight in f32.
pub fn load_base(path: &Path) -> Result<(StudentConfig, Params), TrainError> {
    let file = GgufFile::open(path).map_err(ModelError::from)?;
    let c = ModelConfig::from_gguf(&file)?;
    let bad = |what: String| TrainError::Config { path: path.into(), what };
    if c.arch != Arch::Llama {
        return Err(bad(format!("a {} model: LoRA training runs the llama training engine and needs a llama base", c.arch.name())));
    }
    if c.rope_dim != c.head_dim || c.rope_freq_scale != 1.0 || c.rope_style != RopeStyle::Normal {
        return Err(bad("the base's RoPE (partial rotation, scaling or NeoX style) is not one the training engine computes".into()));
    }
    let cfg = StudentConfig {
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
    };
    cfg.check().map_err(bad)?;
    let mut params = Params::zeros(&cfg);
    let names: Vec<(String, usize)> = params.named().into_iter().map(|(n, t)| (n, t.len())).collect();
    // Anything else (biases, RoPE factors) would change the forward the engine computes.
    if let Some(t) = file.tensors().iter().find(|t| !names.iter().any(|(n, _)| *n == t.name)) {
        return Err(bad(format!("tensor {:?} is not part of the llama student the training engine models", t.name)));
    }
    for ((name, len), dst) in names.iter().zip(params.tensors_mut()) {
        if file.tensor_info(name).is_none() {
            return Err(bad(format!("no tensor {name}")));
        }
        let data = dequantize_tensor(&file, name)?;
        if data.len() != *len {
            return Err(bad(format!("{name} has {} elements, the config says {len}", data.len())));
        }
        *dst = data;
    }
    Ok((cfg, params))
}
