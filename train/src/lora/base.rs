//! The frozen base of an adapter: a student GGUF (any block type the runtime reads) read
//! into the training engine's f32 [`Params`], after checking that the file is a model the
//! engine reproduces exactly — a llama with plain RoPE and no biases or extra tensors.

use std::path::Path;

use nexus_runtime::gguf::GgufFile;
use nexus_runtime::model::{Arch, ModelConfig, ModelError, RopeStyle};

use crate::error::TrainError;
use crate::student::{Params, StudentConfig};
use crate::teacher::{llama_shape, read_llama_params};

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
    let cfg = llama_shape(&c, &file);
    cfg.check().map_err(bad)?;
    // Anything else (biases, RoPE factors) would change the forward the engine computes.
    let names: Vec<String> = Params::zeros(&cfg).named().into_iter().map(|(n, _)| n).collect();
    if let Some(t) = file.tensors().iter().find(|t| !names.contains(&t.name)) {
        return Err(bad(format!("tensor {:?} is not part of the llama student the training engine models", t.name)));
    }
    let params = read_llama_params(&file, &cfg)?;
    Ok((cfg, params))
}
