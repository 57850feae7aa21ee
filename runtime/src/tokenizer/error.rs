use std::path::PathBuf;

use crate::gguf::GgufError;

/// A vocabulary that could not be loaded. Every variant names the file, and where a
/// metadata key is at fault, the key, so a user can tell which model is broken and how.
#[derive(Debug, thiserror::Error)]
pub enum TokenizerError {
    /// The GGUF reader's own error already carries the path ("path: problem").
    #[error(transparent)]
    Gguf(#[from] GgufError),
    #[error("{}: metadata key {key:?}: {problem}", path.display())]
    BadMetadata { path: PathBuf, key: String, problem: String },
    #[error("{}: tokenizer.ggml.model = {model:?} is not supported (supported: \"llama\", \"gpt2\")", path.display())]
    UnsupportedModel { path: PathBuf, model: String },
    #[error(
        "{}: tokenizer.ggml.pre = {pre:?} is not a supported pre-tokenizer (supported: {supported})",
        path.display()
    )]
    UnsupportedPre { path: PathBuf, pre: String, supported: String },
}
