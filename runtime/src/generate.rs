//! The generation loop: prefill a prompt, then sample one token at a time until an
//! end-of-generation token, a stop string, the token limit, the context's end, or a cancel.

use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Instant;

use crate::decoder::Decoder;
use crate::model::{Logits, ModelError};
use crate::sampling::{Sampler, SamplingParams, StopStrings};
use crate::tokenizer::{StreamDecoder, Tokenizer};

#[derive(Debug, Clone)]
pub struct GenerateParams {
    /// Tokens to generate at most; `None` runs until the context is full (llama.cpp's -n -1).
    pub max_tokens: Option<usize>,
    pub sampling: SamplingParams,
    pub stop: Vec<String>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StopReason {
    EndOfGeneration,
    MaxTokens,
    StopString,
    ContextFull,
    Cancelled,
}

#[derive(Debug, Clone)]
pub struct GenerationStats {
    pub prompt_tokens: usize,
    pub prompt_secs: f64,
    pub generated_tokens: usize,
    pub generation_secs: f64,
    pub stop_reason: StopReason,
}

impl GenerationStats {
    pub fn prompt_tokens_per_sec(&self) -> f64 {
        self.prompt_tokens as f64 / self.prompt_secs.max(1e-9)
    }

    pub fn generation_tokens_per_sec(&self) -> f64 {
        self.generated_tokens as f64 / self.generation_secs.max(1e-9)
    }
}

pub struct Generation {
    /// Ids produced, including a final end-of-generation token if one was sampled.
    pub tokens: Vec<u32>,
    pub text: String,
    pub stats: GenerationStats,
}

/// Feeds `prompt` after what the decoder already holds and generates, calling `on_text` with
/// each piece of valid UTF-8 as soon as no stop string can still swallow it.
pub fn generate(
    backend: &mut dyn Decoder,
    tokenizer: &Tokenizer,
    prompt: &[u32],
    params: &GenerateParams,
    cancel: &AtomicBool,
    mut on_text: impl FnMut(&str),
) -> Result<Generation, ModelError> {
    let mut sampler = Sampler::new(params.sampling.clone());
    let mut decoder = StreamDecoder::new(tokenizer, true);
    let mut stops = StopStrings::new(params.stop.clone());
    let mut recent: Vec<u32> = prompt.to_vec();
    let mut tokens = Vec::new();
    let mut text = String::new();
    let mut emit = |piece: &str, text: &mut String| {
        if !piece.is_empty() {
            on_text(piece);
            text.push_str(piece);
        }
    };

    let start = Instant::now();
    let mut logits = if prompt.is_empty() { Vec::new() } else { backend.forward(prompt, Logits::Last)? };
    let prompt_secs = start.elapsed().as_secs_f64();
    let gen_start = Instant::now();
    let stop_reason = loop {
        if cancel.load(Ordering::Relaxed) {
            break StopReason::Cancelled;
        }
        if params.max_tokens.is_some_and(|m| tokens.len() >= m) {
            break StopReason::MaxTokens;
        }
        if logits.is_empty() {
            break StopReason::ContextFull;
        }
        let id = sampler.sample(&logits, &recent);
        tokens.push(id);
        recent.push(id);
        if tokenizer.is_eog(id) {
            break StopReason::EndOfGeneration;
        }
        let piece = decoder.push(id);
        let out = stops.push(&piece);
        emit(&out.text, &mut text);
        if out.stopped {
            break StopReason::StopString;
        }
        if backend.len() >= backend.capacity() {
            break StopReason::ContextFull;
        }
        logits = backend.forward(&[id], Logits::Last)?;
    };
    if stop_reason != StopReason::StopString {
        let tail = decoder.finish();
        emit(&stops.push(&tail).text, &mut text);
        emit(&stops.finish(), &mut text);
    }
    let stats = GenerationStats {
        prompt_tokens: prompt.len(),
        prompt_secs,
        generated_tokens: tokens.len(),
        generation_secs: gen_start.elapsed().as_secs_f64(),
        stop_reason,
    };
    Ok(Generation { tokens, text, stats })
}
