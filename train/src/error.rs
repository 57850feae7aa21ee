//! The error of a distillation run: each stage's own error, plus what the run itself checks
//! (its config, a loss that stopped being finite, an interruption).

use std::path::PathBuf;

#[derive(Debug, thiserror::Error)]
pub enum TrainError {
    #[error("{}: {source}", path.display())]
    Io { path: PathBuf, source: std::io::Error },
    #[error("{}: {what}", path.display())]
    Config { path: PathBuf, what: String },
    #[error(transparent)]
    Model(#[from] nexus_runtime::model::ModelError),
    #[error("tokenizer: {0}")]
    Tokenizer(#[from] nexus_runtime::tokenizer::TokenizerError),
    #[error("chat template: {0}")]
    Template(#[from] nexus_runtime::chat_template::ChatTemplateError),
    #[error("training engine: {0}")]
    Engine(#[from] crate::engine::EngineError),
    #[error(transparent)]
    Data(#[from] crate::data::DataError),
    #[error("profile: {0}")]
    Profile(#[from] crate::profile::ProfileError),
    #[error("verify: {0}")]
    Verify(#[from] crate::verify::VerifyError),
    #[error("checkpoint: {0}")]
    Checkpoint(#[from] crate::checkpoint::CheckpointError),
    #[error("export: {0}")]
    Export(#[from] crate::export::ExportError),
    #[error("anchor: {0}")]
    Anchor(#[from] crate::anchor::AnchorError),
    #[error("student initialization: {0}")]
    Init(#[from] crate::init::InitError),
    #[error("step {step}: the {what} is not finite (lower the learning rate, or check the data); the last checkpoint is unchanged")]
    NonFinite { step: usize, what: String },
    #[error("interrupted at step {step}; the checkpoint in {} holds it: run again with --resume", run_dir.display())]
    Interrupted { step: usize, run_dir: PathBuf },
    #[error("{0}")]
    Invalid(String),
}

impl TrainError {
    pub fn io(path: impl Into<PathBuf>, source: std::io::Error) -> Self {
        TrainError::Io { path: path.into(), source }
    }
}
