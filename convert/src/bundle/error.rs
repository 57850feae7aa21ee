use std::path::{Path, PathBuf};

use nexus_runtime::gguf::{GgufError, GgufErrorKind};
use nexus_runtime::model::ModelError;
use nexus_runtime::router::RouterError;
use nexus_runtime::tts::TtsError;

/// Why a bundle could not be packed; each names the file and the component concerned.
#[derive(Debug, thiserror::Error)]
pub enum PackError {
    #[error(transparent)]
    Gguf(#[from] GgufError),
    #[error("{component}: {source}")]
    Model { component: String, source: ModelError },
    #[error("{component}: {source}")]
    Voice { component: String, source: TtsError },
    #[error("{component}: {source}")]
    Router { component: String, source: Box<RouterError> },
    #[error("{path} ({component}): {what}")]
    Invalid { path: PathBuf, component: String, what: String },
}

impl PackError {
    pub(crate) fn gguf(path: &Path, kind: GgufErrorKind) -> Self {
        PackError::Gguf(GgufError::new(path, kind))
    }
}
