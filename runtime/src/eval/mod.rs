//! Model quality measures, computed the way llama.cpp's `llama-perplexity` does so that figures
//! compare across the two: perplexity over half-context chunks ([`perplexity`]) and, against a
//! saved base model, KL divergence, top-1 agreement and the perplexity ratio ([`kl`]).

pub mod kl;
pub mod perplexity;

use std::path::PathBuf;

use crate::model::ModelError;

pub use kl::{KlBase, KlBaseWriter, KlReport, DEFAULT_TOP_K};
pub use perplexity::{chunk_logits, perplexity, perplexity_with, row_nll, Chunks, NllStats, PerplexityResult};

#[derive(Debug, thiserror::Error)]
pub enum EvalError {
    #[error("the text has {n_tokens} tokens; a context of {n_ctx} needs at least {} (two contexts), as llama-perplexity does", 2 * n_ctx)]
    TooFewTokens { n_tokens: usize, n_ctx: usize },
    #[error("context size {0} is too small: at least 4 tokens are needed to score the second half")]
    BadContext(usize),
    #[error("--chunks must be at least 1")]
    NoChunks,
    #[error(transparent)]
    Model(#[from] ModelError),
    #[error("{path}: {source}")]
    Io { path: PathBuf, source: std::io::Error },
    #[error("{path}: {what}")]
    BadBase { path: PathBuf, what: String },
    #[error("{path}: the base was computed with a vocabulary of {base} tokens, this model has {model}")]
    VocabMismatch { path: PathBuf, base: usize, model: usize },
    #[error("{path}: the text's tokens differ from the base's at position {pos} (base {base}, text {text}); evaluate the same text")]
    TokenMismatch { path: PathBuf, pos: usize, base: u32, text: u32 },
}
