//! Text to speech: phonemes from text (espeak-ng, behind the `espeak` feature), phoneme ids
//! with the voice's map, the VITS forward pass, and the streaming pipeline that cuts text into
//! sentences and audio into chunks.
//!
//! Submodules are added by the files that hold them; each one's error goes through
//! [`TtsError`].

use std::path::PathBuf;

pub mod vits;
pub mod audio;
#[cfg(feature = "audio")]
pub mod player;
pub mod sentences;
pub mod speaker;
pub mod phoneme_ids;
pub mod phonemize;
#[cfg(feature = "espeak")]
mod espeak;

/// Everything that can go wrong between text and samples, each naming what failed.
#[derive(Debug, thiserror::Error)]
pub enum TtsError {
    /// The voice file is not a VITS voice or lacks what the forward pass needs.
    #[error("{path}: {what}")]
    Voice { path: PathBuf, what: String },
    /// Text that gives nothing to say (empty, only punctuation, or nothing phonemizable).
    #[error("nothing to speak: {0}")]
    NothingToSay(String),
    /// The phonemizer (espeak-ng) failed or is not available in this build.
    #[error("phonemizer: {0}")]
    Phonemizer(String),
    /// A phoneme id map (from a `.onnx.json`) that is malformed or lacks `^ $ _`.
    #[error("phoneme id map: {0}")]
    PhonemeMap(String),
    /// The audio device or output file.
    #[error("audio output: {0}")]
    Audio(String),
    /// A phoneme id the voice's embedding has no row for.
    #[error("phoneme id {id} is outside the voice's vocabulary 0..{n_vocab}")]
    PhonemeId { id: i64, n_vocab: usize },
    /// Synthesis input out of range (scales, sentence length, chunk size).
    #[error("synthesis: {0}")]
    Synthesis(String),
    #[error(transparent)]
    Kernel(#[from] nexus_kernels::KernelError),
    #[error(transparent)]
    Gguf(#[from] crate::gguf::GgufError),
}
