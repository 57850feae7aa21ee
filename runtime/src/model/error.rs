use std::path::PathBuf;

use crate::gguf::GgufError;

#[derive(Debug, thiserror::Error)]
pub enum ModelError {
    #[error(transparent)]
    Gguf(#[from] GgufError),
    #[error("{path}: {what}")]
    Unsupported { path: PathBuf, what: String },
    #[error("{path}: {what}")]
    Invalid { path: PathBuf, what: String },
    #[error("context overflow: {needed} positions needed, the KV cache holds {capacity}")]
    ContextOverflow { needed: usize, capacity: usize },
    #[error("token id {id} is outside the vocabulary of {n_vocab}")]
    BadToken { id: u32, n_vocab: usize },
    #[error("GPU: {0}")]
    Gpu(String),
    #[error(transparent)]
    KvCache(#[from] crate::kv_cache::KvCacheError),
    #[error("kernel failed in {tensor}: {source}")]
    Kernel { tensor: String, source: nexus_kernels::KernelError },
}
