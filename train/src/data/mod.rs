//! Distillation data: the user's text files and JSONL ([`load`]), text the teacher writes
//! from the committed prompt set ([`generate`]), tokens packed into shuffled training
//! sequences whose position survives a checkpoint ([`dataset`]), a record of where every
//! token came from ([`provenance`]), and the guarantee that held-out evaluation text never
//! reaches training ([`held_out`]).

pub mod dataset;
pub mod generate;
pub mod held_out;
pub mod load;
pub mod provenance;
mod write;

use std::path::PathBuf;

pub use dataset::{tokenize_document, tokenize_documents, Batch, DataPosition, Dataset};
pub use generate::{answer_seed, chat_prompt_tokens, generate_from_teacher, load_prompts, teacher_identity, GenerateConfig, GeneratedAnswer, GenerationRecord, Prompt};
pub use held_out::{check_held_out, load_held_out, load_held_out_files, HeldOutIndex, Overlap};
pub use load::{load_documents, Document, SourceFormat};
pub use provenance::{build_corpus, sha256_file, Corpus, HeldOutRecord, Provenance, SourceRecord, PROVENANCE_FILE};
pub use write::write_atomic;

#[derive(Debug, thiserror::Error)]
pub enum DataError {
    #[error("{}: {source}", path.display())]
    Io { path: PathBuf, source: std::io::Error },
    #[error("{}: the file is empty (no text to train or evaluate on)", path.display())]
    Empty { path: PathBuf },
    #[error("{}: not UTF-8: invalid byte sequence at byte offset {offset}", path.display())]
    NotUtf8 { path: PathBuf, offset: usize },
    #[error("{}:{line}: bad JSON: {what}", path.display())]
    BadJson { path: PathBuf, line: usize, what: String },
    #[error("{}:{line}: {what}", path.display())]
    NoUsableField { path: PathBuf, line: usize, what: String },
    #[error("{}:{line}: a chat item (\"messages\") needs the teacher's chat template to be rendered, and none was given", path.display())]
    NoTemplate { path: PathBuf, line: usize },
    #[error("{}:{line}: the chat template: {source}", path.display())]
    Template { path: PathBuf, line: usize, source: nexus_runtime::chat_template::ChatTemplateError },
    #[error("held-out text from {} appears in the training source {source_name}: \"{excerpt}\"", held_out.display())]
    HeldOutOverlap { held_out: PathBuf, source_name: String, excerpt: String },
    #[error("{what}")]
    BadDataset { what: String },
    #[error("the saved data position does not belong to this dataset: {what}")]
    PositionMismatch { what: String },
    #[error("{}: {what}", path.display())]
    BadConfig { path: PathBuf, what: String },
    #[error("generating from the teacher: {0}")]
    Generate(#[from] nexus_runtime::model::ModelError),
}
