//! HF model directory (config.json, tokenizer.json or SentencePiece tokenizer.model, safetensors) → GGUF, reproducing llama.cpp's
//! `convert_hf_to_gguf.py` output: same keys, tensor names, order, types and bytes
//! (`general.*` descriptive fields aside). Tensors stream one at a time from memory-mapped
//! safetensors into `GgufWriter::write_streaming`, so memory stays near the largest tensor.

mod config;
mod error;
mod spm;
pub(crate) mod tensors;
mod vocab;

use std::path::Path;

use nexus_kernels::GgmlType;
use nexus_runtime::gguf::{GgufWriter, StreamedTensor, Value};

pub use config::{Arch, HfConfig};
pub use error::HfError;

/// `--outtype`: the type of 2-D weights; norms and 1-D tensors stay F32.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OutType {
    F32,
    F16,
    Bf16,
    Q8_0,
}

impl OutType {
    pub(crate) fn ggml(self) -> GgmlType {
        match self {
            OutType::F32 => GgmlType::F32,
            OutType::F16 => GgmlType::F16,
            OutType::Bf16 => GgmlType::BF16,
            OutType::Q8_0 => GgmlType::Q8_0,
        }
    }

    /// llama.cpp's `LlamaFileType` number.
    fn file_type(self) -> u32 {
        match self {
            OutType::F32 => 0,
            OutType::F16 => 1,
            OutType::Q8_0 => 7,
            OutType::Bf16 => 32,
        }
    }
}

/// What a conversion wrote.
#[derive(Debug, Clone)]
pub struct ConvertSummary {
    pub arch: Arch,
    pub n_tensors: usize,
}

/// Reads `config.json` and the safetensors shards of `dir` and produces every tensor's GGUF
/// bytes, as `convert` does, but writes nothing: the number of tensors a conversion would
/// write. It exercises the converter's readers without a tokenizer (the fuzz target uses it).
pub fn check_tensors(dir: &Path, outtype: OutType) -> Result<usize, HfError> {
    let cfg = HfConfig::load(dir)?;
    let plan = tensors::plan(dir, &cfg, outtype)?;
    for i in 0..plan.items.len() {
        plan.produce(i, &cfg)?;
    }
    Ok(plan.items.len())
}

/// Converts `dir` into `out`. `progress(done, total)` is called after each tensor.
pub fn convert(
    dir: &Path,
    out: &Path,
    outtype: OutType,
    mut progress: impl FnMut(usize, usize),
) -> Result<ConvertSummary, HfError> {
    let cfg = HfConfig::load(dir)?;
    let plan = tensors::plan(dir, &cfg, outtype)?;
    let mut w = GgufWriter::new();
    w.set("general.architecture", Value::String(cfg.arch.gguf_name().into()));
    w.set("general.type", Value::String("model".into()));
    if let Some(name) = dir.file_name() {
        w.set("general.name", Value::String(name.to_string_lossy().into_owned()));
    }
    for (k, v) in cfg.hparams(outtype.file_type()) {
        w.set(k, v);
    }
    w.set("general.quantization_version", Value::U32(2));
    for (k, v) in vocab::tokenizer_kv(dir, &cfg)? {
        w.set(k, v);
    }
    let specs: Vec<StreamedTensor> = plan.items.iter().map(|t| t.spec.clone()).collect();
    let total = specs.len();
    w.write_streaming(out, &specs, |i| {
        let bytes = plan.produce(i, &cfg)?;
        progress(i + 1, total);
        Ok::<_, HfError>(bytes)
    })?;
    Ok(ConvertSummary { arch: cfg.arch, n_tensors: total })
}
