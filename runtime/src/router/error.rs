use std::path::PathBuf;

use crate::gguf::GgufError;
use crate::model::ModelError;

/// Errors of loading, checking and running a router; each names the file it is about.
#[derive(Debug, thiserror::Error)]
pub enum RouterError {
    #[error(transparent)]
    Gguf(#[from] GgufError),
    #[error("{path}: not a router: {what}")]
    NotARouter { path: PathBuf, what: String },
    #[error("{path}: {what}")]
    Invalid { path: PathBuf, what: String },
    /// The router was trained on another backbone; `what` lists every field that differs.
    #[error("{path}: this router was trained for another backbone than {backbone}: {what}")]
    Backbone { path: PathBuf, backbone: PathBuf, what: String },
    #[error("unknown capability {name:?}: {known}")]
    UnknownCapability { name: String, known: String },
    /// A model error; each names its file (or is about tokens, not a file).
    #[error(transparent)]
    Model(#[from] ModelError),
}
