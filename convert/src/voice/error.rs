//! Errors of the ONNX voice → GGUF converter; each names the file and what is wrong with it.
//! Causes are part of the message (fields are not `source`), so `{:#}` does not print them twice.

use std::path::PathBuf;

use nexus_runtime::gguf::{GgufError, GgufErrorKind};

use crate::onnx::OnnxError;

#[derive(Debug, thiserror::Error)]
pub enum VoiceError {
    #[error("{path}: cannot read: {error}")]
    Io { path: PathBuf, error: std::io::Error },
    #[error("{path}: not a readable ONNX model: {error}")]
    Onnx { path: PathBuf, error: OnnxError },
    #[error("{path}: invalid JSON: {error}")]
    Json { path: PathBuf, error: serde_json::Error },
    #[error("{path}: key {key:?}: {problem}")]
    Config { path: PathBuf, key: String, problem: String },
    #[error("{path}: initializer {name:?} ({shape:?}) is neither a VITS parameter nor a recognised graph constant")]
    Unmapped { path: PathBuf, name: String, shape: Vec<i64> },
    #[error("{path}: initializers {first:?} and {second:?} both map to {vits:?}")]
    Duplicate { path: PathBuf, first: String, second: String, vits: String },
    #[error("{path}: graph constant {name:?} = {found} but the native VITS forward uses {expected} ({meaning})")]
    Constant { path: PathBuf, name: String, found: f64, expected: String, meaning: String },
    #[error("{path}: {problem}")]
    Architecture { path: PathBuf, problem: String },
    #[error("{path}: tensor {name:?} has shape {found:?}, the hyper-parameters imply {expected:?}")]
    Shape { path: PathBuf, name: String, expected: Vec<usize>, found: Vec<usize> },
    #[error("{path}: missing tensor {name:?} (expected from the hyper-parameters)")]
    Missing { path: PathBuf, name: String },
    #[error(transparent)]
    Gguf(#[from] GgufError),
    #[error("{path}: {error}")]
    GgufKind { path: PathBuf, error: GgufErrorKind },
}
