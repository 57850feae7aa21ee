//! The student as a llama GGUF that `nexus_runtime::model::Model` loads and `nexus-cli chat`
//! runs: the `llama.*` hyper-parameters, the teacher's whole tokenizer (`tokenizer.*`:
//! vocabulary, merges, special ids, pre-tokenizer, chat template) so the student reads and
//! writes the teacher's tokens and chats with its template, the caller's extra keys, then the
//! tensors in `Params::named` order with ggml dims `[in, out]`.
//!
//! Types: matrices as F32, F16 or Q8_0; 1-D tensors (norms) always F32, as llama.cpp writes
//! them. Q8_0 needs rows made of whole 32-value blocks; a matrix whose rows are not is written
//! as F16 instead and listed in [`ExportSummary::fallbacks`]. A tied student has no
//! `output.weight`: the runtime then reuses `token_embd.weight` as the head.
//!
//! The file is written through `GgufWriter::write_streaming` (temporary file in the same
//! folder, fsync, rename; one tensor's bytes in memory at a time), so a failed export leaves
//! no file at `out`.

use std::fmt;
use std::path::{Path, PathBuf};
use std::str::FromStr;

use nexus_kernels::{quantize_row, GgmlType, KernelError};
use nexus_runtime::gguf::{GgufError, GgufFile, GgufWriter, StreamedTensor, Value};
use rayon::prelude::*;
use serde::{Deserialize, Serialize};

use crate::checkpoint::tensor_shapes;
use crate::student::{Params, StudentConfig};

/// The type of the exported matrices.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum ExportType {
    #[serde(rename = "f32")]
    F32,
    #[serde(rename = "f16")]
    F16,
    #[serde(rename = "q8_0")]
    Q8_0,
}

impl ExportType {
    pub fn ggml_type(self) -> GgmlType {
        match self {
            ExportType::F32 => GgmlType::F32,
            ExportType::F16 => GgmlType::F16,
            ExportType::Q8_0 => GgmlType::Q8_0,
        }
    }

    /// llama.cpp's `llama_ftype` number (`general.file_type`): ALL_F32, MOSTLY_F16,
    /// MOSTLY_Q8_0.
    pub fn file_type(self) -> u32 {
        match self {
            ExportType::F32 => 0,
            ExportType::F16 => 1,
            ExportType::Q8_0 => 7,
        }
    }
}

impl fmt::Display for ExportType {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            ExportType::F32 => "f32",
            ExportType::F16 => "f16",
            ExportType::Q8_0 => "q8_0",
        })
    }
}

impl FromStr for ExportType {
    type Err = ExportError;

    /// `f32`, `f16` or `q8_0`, in any case.
    fn from_str(s: &str) -> Result<Self, ExportError> {
        match s.to_ascii_lowercase().as_str() {
            "f32" => Ok(ExportType::F32),
            "f16" => Ok(ExportType::F16),
            "q8_0" => Ok(ExportType::Q8_0),
            _ => Err(ExportError::Type(s.into())),
        }
    }
}

/// What [`export_gguf`] wrote.
#[derive(Debug, Clone, PartialEq)]
pub struct ExportSummary {
    pub path: PathBuf,
    pub ty: ExportType,
    /// Size of the file.
    pub bytes: u64,
    pub n_params: usize,
    /// Matrices written in another type than `ty`, each with the reason.
    pub fallbacks: Vec<String>,
}

#[derive(Debug, thiserror::Error)]
pub enum ExportError {
    #[error("unknown export type {0:?} (expected f32, f16 or q8_0)")]
    Type(String),
    #[error(
        "{path}: the teacher's vocabulary has {teacher} tokens but the student has n_vocab = \
         {student}; the student must use the teacher's tokenizer"
    )]
    Vocab {
        path: PathBuf,
        teacher: usize,
        student: usize,
    },
    #[error("{path}: {what}")]
    Teacher { path: PathBuf, what: String },
    #[error("cannot export to {path}: student config: {what}")]
    Config { path: PathBuf, what: String },
    #[error("cannot export to {path}: tensor {name}: {what}")]
    Tensor {
        path: PathBuf,
        name: String,
        what: String,
    },
    #[error("cannot export to {path}: metadata key {key:?}: {what}")]
    Meta {
        path: PathBuf,
        key: String,
        what: String,
    },
    #[error("{path}: converting {name}: {source}")]
    Quantize {
        path: PathBuf,
        name: String,
        source: KernelError,
    },
    #[error(transparent)]
    Gguf(#[from] GgufError),
    #[error("{path}: {source}")]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
}

/// Keys the export owns: the caller's `extra_meta` may not change the architecture, the
/// hyper-parameters, the tokenizer or the layout.
fn reserved(key: &str) -> bool {
    key.starts_with("llama.")
        || key.starts_with("tokenizer.")
        || matches!(
            key,
            "general.architecture"
                | "general.file_type"
                | "general.quantization_version"
                | "general.alignment"
        )
}

/// The `llama.*` hyper-parameters and the `general.*` keys the export owns, in the order
/// llama.cpp's converter writes them.
fn hyperparameters(cfg: &StudentConfig, ty: ExportType) -> Vec<(&'static str, Value)> {
    let u = |v: usize| u32::try_from(v).map_or(Value::U64(v as u64), Value::U32);
    vec![
        ("general.architecture", Value::String("llama".into())),
        ("general.name", Value::String("nexus-student".into())),
        ("llama.block_count", u(cfg.n_layer)),
        ("llama.context_length", u(cfg.n_ctx)),
        ("llama.embedding_length", u(cfg.n_embd)),
        ("llama.feed_forward_length", u(cfg.n_ff)),
        ("llama.attention.head_count", u(cfg.n_head)),
        ("llama.attention.head_count_kv", u(cfg.n_head_kv)),
        ("llama.rope.freq_base", Value::F32(cfg.rope_base)),
        (
            "llama.attention.layer_norm_rms_epsilon",
            Value::F32(cfg.rms_eps),
        ),
        ("llama.attention.key_length", u(cfg.head_dim)),
        ("llama.attention.value_length", u(cfg.head_dim)),
        ("general.file_type", Value::U32(ty.file_type())),
        ("llama.vocab_size", u(cfg.n_vocab)),
        ("llama.rope.dimension_count", u(cfg.head_dim)),
        ("general.quantization_version", Value::U32(2)),
    ]
}

/// One tensor to write: its data, row length, and type.
struct Planned<'p> {
    name: String,
    data: &'p [f32],
    row: usize,
    ty: GgmlType,
}

/// Writes the student `params` (shaped by `cfg`) as a llama GGUF at `out` in type `ty`, with
/// the tokenizer of `teacher` and the caller's `extra_meta` (which may set `general.name`
/// and any key of its own, but not `llama.*`, `tokenizer.*` or the layout keys).
pub fn export_gguf(
    cfg: &StudentConfig,
    params: &Params,
    teacher: &GgufFile,
    ty: ExportType,
    extra_meta: &[(String, Value)],
    out: &Path,
) -> Result<ExportSummary, ExportError> {
    cfg.check().map_err(|what| ExportError::Config {
        path: out.into(),
        what,
    })?;
    let teacher_vocab = teacher
        .get("tokenizer.ggml.tokens")
        .and_then(Value::as_array)
        .map(<[Value]>::len)
        .ok_or_else(|| ExportError::Teacher {
            path: teacher.path().into(),
            what: "no tokenizer.ggml.tokens array: the student would have no vocabulary".into(),
        })?;
    if teacher_vocab != cfg.n_vocab {
        return Err(ExportError::Vocab {
            path: teacher.path().into(),
            teacher: teacher_vocab,
            student: cfg.n_vocab,
        });
    }

    let mut w = GgufWriter::new();
    for (key, value) in hyperparameters(cfg, ty) {
        w.set(key, value);
    }
    for (key, value) in teacher.metadata() {
        if key.starts_with("tokenizer.") {
            w.set(key.clone(), value.clone());
        }
    }
    for (key, value) in extra_meta {
        if reserved(key) {
            return Err(ExportError::Meta {
                path: out.into(),
                key: key.clone(),
                what: "set by the export itself (architecture, hyper-parameters, tokenizer)".into(),
            });
        }
        w.set(key.clone(), value.clone());
    }

    let (plan, fallbacks) = plan(cfg, params, ty, out)?;
    let specs: Vec<StreamedTensor> = plan
        .iter()
        .map(|t| StreamedTensor {
            name: t.name.clone(),
            dims: if t.row == t.data.len() {
                vec![t.row as u64]
            } else {
                vec![t.row as u64, (t.data.len() / t.row) as u64]
            },
            ty: t.ty,
        })
        .collect();
    w.write_streaming(out, &specs, |i| encode(&plan[i], out))?;
    let bytes = std::fs::metadata(out)
        .map_err(|source| ExportError::Io {
            path: out.into(),
            source,
        })?
        .len();
    Ok(ExportSummary {
        path: out.into(),
        ty,
        bytes,
        n_params: params.n_elements(),
        fallbacks,
    })
}

/// Every tensor of `params` checked against `cfg`, with the type it is written in; the
/// matrices that fall back from Q8_0 to F16, with why.
fn plan<'p>(
    cfg: &StudentConfig,
    params: &'p Params,
    ty: ExportType,
    out: &Path,
) -> Result<(Vec<Planned<'p>>, Vec<String>), ExportError> {
    let named = params.named();
    let shapes = tensor_shapes(cfg);
    if named.len() != shapes.len() || params.layers.len() != cfg.n_layer {
        return Err(ExportError::Config {
            path: out.into(),
            what: format!(
                "the student has {} tensors in {} layers; n_layer {} and tied = {} imply {}",
                named.len(),
                params.layers.len(),
                cfg.n_layer,
                cfg.tied,
                shapes.len()
            ),
        });
    }
    let mut fallbacks = Vec::new();
    let mut plan = Vec::with_capacity(named.len());
    for ((name, data), (_, shape)) in named.into_iter().zip(shapes) {
        let n = shape.iter().fold(1usize, |a, &b| a.saturating_mul(b));
        if data.len() != n {
            return Err(ExportError::Tensor {
                path: out.into(),
                name,
                what: format!("{} values, the config implies {shape:?}", data.len()),
            });
        }
        // Matrices are [out, in]: a ggml row is `in` values.
        let row = shape[shape.len() - 1];
        let mut tensor_ty = if shape.len() == 1 {
            GgmlType::F32
        } else {
            ty.ggml_type()
        };
        let block = tensor_ty.block_size();
        if !row.is_multiple_of(block) {
            fallbacks.push(format!(
                "{name}: rows of {row} values are not whole {block}-value {tensor_ty} blocks; \
                 written as F16"
            ));
            tensor_ty = GgmlType::F16;
        }
        plan.push(Planned {
            name,
            data,
            row,
            ty: tensor_ty,
        });
    }
    Ok((plan, fallbacks))
}

/// A tensor's bytes in its type, rows converted in parallel.
fn encode(t: &Planned, out: &Path) -> Result<Vec<u8>, ExportError> {
    let err = |source| ExportError::Quantize {
        path: out.into(),
        name: t.name.clone(),
        source,
    };
    let row_bytes = t.ty.row_size(t.row as u64).ok_or_else(|| {
        err(KernelError::Unsupported {
            ty: t.ty,
            what: "row size",
        })
    })? as usize;
    let mut bytes = vec![0u8; row_bytes * (t.data.len() / t.row)];
    t.data
        .par_chunks(t.row)
        .zip(bytes.par_chunks_mut(row_bytes))
        .try_for_each(|(src, dst)| quantize_row(t.ty, src, dst))
        .map_err(err)?;
    Ok(bytes)
}

#[cfg(test)]
mod tests;
