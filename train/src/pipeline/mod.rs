//! The four stages of a run, as `nexus-cli distill` calls them, over one run directory:
//!
//! | file | written by |
//! |---|---|
//! | `generated.jsonl`, `generation.json` | data: the teacher's answers to the prompt set (reused while the settings match) |
//! | `provenance.json` | data: every source with its sha256, the generation, the held-out sets |
//! | `profile.safetensors`, `profile/` | profile: bases, eigenvalues, importance; report and charts |
//! | `student.json` | train: the student's shape, how it was initialized, what pruning kept |
//! | `checkpoint/` | train: weights, AdamW moments, anchor maps, data position, step |
//! | `metrics.jsonl`, `training_*.png`, `train_summary.json` | train |
//! | `verify_report.json`, `verify_report.md` | verify |
//! | `student.<type>.gguf` | export (and verify, which marks it verified when the contract holds) |

pub mod stages;

use std::path::Path;

use nexus_runtime::chat_template::{self, ChatTemplate};
use nexus_runtime::tokenizer::Tokenizer;

use crate::error::TrainError;
use crate::teacher::Teacher;

pub use stages::*;

/// The teacher with what speaks its language.
pub struct TeacherKit {
    pub teacher: Teacher,
    pub tokenizer: Tokenizer,
    /// Its chat template (renders chat data); `None` when the file has none.
    pub template: Option<ChatTemplate>,
}

impl TeacherKit {
    pub fn load(path: &Path) -> Result<Self, TrainError> {
        let teacher = Teacher::load(path)?;
        let tokenizer = Tokenizer::from_gguf(teacher.model.file())?;
        let text_of = |id: Option<u32>| id.and_then(|i| tokenizer.token_text(i)).unwrap_or("").to_string();
        let template = match teacher.model.file().get("tokenizer.chat_template").and_then(|v| v.as_str()) {
            Some(src) => Some(chat_template::resolve(None, Some(src), &text_of(tokenizer.bos()), &text_of(tokenizer.eos()))?),
            None => None,
        };
        Ok(TeacherKit { teacher, tokenizer, template })
    }
}
