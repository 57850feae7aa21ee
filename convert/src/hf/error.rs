//! Errors of the HF → GGUF converter; each names the file and what is wrong with it.

use std::path::PathBuf;

use nexus_runtime::gguf::GgufError;

#[derive(Debug, thiserror::Error)]
pub enum HfError {
    #[error("{path}: cannot read: {source}")]
    Io { path: PathBuf, source: std::io::Error },
    #[error("{path}: invalid JSON: {source}")]
    Json { path: PathBuf, source: serde_json::Error },
    #[error("{path}: missing key {key:?}")]
    MissingKey { path: PathBuf, key: String },
    #[error("{path}: key {key:?}: {problem}")]
    BadKey { path: PathBuf, key: String, problem: String },
    #[error("{path}: unsupported architecture {arch:?} (supported: LlamaForCausalLM, Qwen2ForCausalLM)")]
    UnsupportedArch { path: PathBuf, arch: String },
    #[error("{path}: unsupported tokenizer: {problem}")]
    UnsupportedTokenizer { path: PathBuf, problem: String },
    #[error("{path}: not a valid SentencePiece model: {problem}")]
    SentencePiece { path: PathBuf, problem: String },
    #[error("{path}: not a valid SentencePiece model (truncated or corrupt): {source}")]
    Protobuf { path: PathBuf, source: crate::protobuf::WireError },
    #[error("{path}: tensor {name:?} has unsupported dtype {dtype} (supported: F32, F16, BF16)")]
    UnsupportedDtype { path: PathBuf, name: String, dtype: String },
    #[error("{path}: shard {shard:?} is listed in the index but absent")]
    MissingShard { path: PathBuf, shard: String },
    #[error("{path}: tensor {name:?} has shape {found:?}, the config implies {expected:?}")]
    ShapeMismatch { path: PathBuf, name: String, expected: Vec<usize>, found: Vec<usize> },
    #[error("{path}: tensor {name:?} is not used by architecture {arch}")]
    UnusedTensor { path: PathBuf, name: String, arch: String },
    #[error("{path}: missing tensor {name:?}")]
    MissingTensor { path: PathBuf, name: String },
    #[error("{path}: not a valid safetensors file: {problem}")]
    Safetensors { path: PathBuf, problem: String },
    #[error("{path}: tensor {name:?}: {problem}")]
    Tensor { path: PathBuf, name: String, problem: String },
    #[error("{0}")]
    Gguf(#[from] GgufError),
}
