use std::path::PathBuf;

use crate::gguf::GgufError;
use crate::model::ModelError;
use crate::tts::TtsError;

/// A bundle that could not be read, checked or unpacked; every variant names the bundle file
/// and, where one is concerned, the component.
#[derive(Debug, thiserror::Error)]
pub enum BundleError {
    #[error(transparent)]
    Gguf(#[from] GgufError),
    #[error("{path}: not a Nexus bundle ({what})")]
    NotABundle { path: PathBuf, what: String },
    #[error("{path}: the bundle manifest is invalid: {what}")]
    Manifest { path: PathBuf, what: String },
    #[error("{path}: component {component:?}: {what}")]
    Component { path: PathBuf, component: String, what: String },
    #[error("{path}: component {component:?} is corrupt: {what}")]
    Corrupt { path: PathBuf, component: String, what: String },
    #[error("{path}: the bundle has no {what} (it holds: {available})")]
    Missing { path: PathBuf, what: String, available: String },
    #[error("{path}: component {component:?}: {source}")]
    Io { path: PathBuf, component: String, source: std::io::Error },
    #[error("component {component:?}: {source}")]
    Model { component: String, source: ModelError },
    #[error("component {component:?}: {source}")]
    Voice { component: String, source: TtsError },
}
