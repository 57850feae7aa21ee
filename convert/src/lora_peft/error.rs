//! Errors of the PEFT → GGUF adapter converter; each names the file and what is wrong with it.

use std::path::PathBuf;

use nexus_runtime::gguf::GgufError;
use nexus_runtime::model::ModelError;

#[derive(Debug, thiserror::Error)]
pub enum PeftError {
    #[error("{path}: cannot read: {source}")]
    Io { path: PathBuf, source: std::io::Error },
    #[error("{path}: missing: {what}")]
    Missing { path: PathBuf, what: String },
    #[error("{path}: invalid JSON: {source}")]
    Json { path: PathBuf, source: serde_json::Error },
    #[error("{path}: {key}: {problem}")]
    BadKey { path: PathBuf, key: String, problem: String },
    #[error("{path}: unsupported: {what}")]
    Unsupported { path: PathBuf, what: String },
    #[error("{path}: not a valid safetensors file: {problem}")]
    Safetensors { path: PathBuf, problem: String },
    #[error("{path}: tensor {name:?}: {problem}")]
    Tensor { path: PathBuf, name: String, problem: String },
    /// The adapter does not fit the base model (a module the base lacks, a shape mismatch).
    #[error("{adapter}: {what} (base model {base})")]
    Base { adapter: PathBuf, base: PathBuf, what: String },
    #[error("{output}: the output would replace the input {input}")]
    SameFile { output: PathBuf, input: PathBuf },
    #[error(transparent)]
    Gguf(#[from] GgufError),
    #[error(transparent)]
    Model(#[from] ModelError),
}
