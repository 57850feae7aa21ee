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
    on_text: impl FnMut(&str),
) -> Result<Generation, ModelError> {
    let mut sampler = Sampler::new(params.sampling.clone());
    let mut output = Output::new(tokenizer, params, on_text);
    let mut recent: Vec<u32> = prompt.to_vec();

    // Plain greedy needs only the argmax, and top-k sampling only the k most likely tokens,
    // which a backend may pick where the logits are.
    let argmax_only = sampler.is_plain_greedy();
    let top_k_only = sampler.top_k_only();
    let start = Instant::now();
    let mut logits = if prompt.is_empty() { Vec::new() } else { backend.forward(prompt, Logits::Last)? };
    let prompt_secs = start.elapsed().as_secs_f64();
    let gen_start = Instant::now();
    // The next token when the backend already picked it.
    let mut picked: Option<u32> = None;
    let stop_reason = loop {
        if cancel.load(Ordering::Relaxed) {
            break StopReason::Cancelled;
        }
        if output.limit_reached() {
            break StopReason::MaxTokens;
        }
        if picked.is_none() && logits.is_empty() {
            break StopReason::ContextFull;
        }
        let id = match picked.take() {
            Some(id) => id,
            None => sampler.sample(&logits, &recent),
        };
        recent.push(id);
        if let Some(reason) = output.push(id) {
            break reason;
        }
        if backend.len() >= backend.capacity() {
            break StopReason::ContextFull;
        }
        if argmax_only {
            if let Some(next) = backend.forward_argmax(id) {
                picked = Some(next?);
                continue;
            }
        }
        if let Some(k) = top_k_only {
            if let Some(cands) = backend.forward_top_k(id, k) {
                picked = Some(sampler.sample_candidates(&cands?));
                continue;
            }
        }
        logits = backend.forward(&[id], Logits::Last)?;
    };
    Ok(output.finish(stop_reason, prompt.len(), prompt_secs, gen_start.elapsed().as_secs_f64()))
}

/// Where generated ids go: text streamed to the caller as soon as no stop string can still
/// swallow it, and the checks that end a generation at a token (end of generation, a stop
/// string, the token limit). Shared by [`generate`] and speculative decoding, so both end
/// where the other would.
pub(crate) struct Output<'t, F: FnMut(&str)> {
    tokenizer: &'t Tokenizer,
    decoder: StreamDecoder<'t>,
    stops: StopStrings,
    max_tokens: Option<usize>,
    tokens: Vec<u32>,
    text: String,
    on_text: F,
}

impl<'t, F: FnMut(&str)> Output<'t, F> {
    pub(crate) fn new(tokenizer: &'t Tokenizer, params: &GenerateParams, on_text: F) -> Self {
        Output {
            tokenizer,
            decoder: StreamDecoder::new(tokenizer, true),
            stops: StopStrings::new(params.stop.clone()),
            max_tokens: params.max_tokens,
            tokens: Vec::new(),
            text: String::new(),
            on_text,
        }
    }

    /// Ids produced so far.
    pub(crate) fn tokens(&self) -> &[u32] {
        &self.tokens
    }

    /// The token limit is reached: no more may be generated.
    pub(crate) fn limit_reached(&self) -> bool {
        self.max_tokens.is_some_and(|m| self.tokens.len() >= m)
    }

    /// Takes the next generated id; says why generation ends if it ends at this token.
    pub(crate) fn push(&mut self, id: u32) -> Option<StopReason> {
        self.tokens.push(id);
        if self.tokenizer.is_eog(id) {
            return Some(StopReason::EndOfGeneration);
        }
        let piece = self.decoder.push(id);
        let out = self.stops.push(&piece);
        self.emit(&out.text);
        out.stopped.then_some(StopReason::StopString)
    }

    fn emit(&mut self, piece: &str) {
        if !piece.is_empty() {
            (self.on_text)(piece);
            self.text.push_str(piece);
        }
    }

    /// Releases text held back (unless a stop string ended it) and gives the result.
    pub(crate) fn finish(mut self, stop_reason: StopReason, prompt_tokens: usize, prompt_secs: f64, generation_secs: f64) -> Generation {
        if stop_reason != StopReason::StopString {
            let tail = self.decoder.finish();
            let held = self.stops.push(&tail).text;
            self.emit(&held);
            let rest = self.stops.finish();
            self.emit(&rest);
        }
        let stats = GenerationStats {
            prompt_tokens,
            prompt_secs,
            generated_tokens: self.tokens.len(),
            generation_secs,
            stop_reason,
        };
        Generation { tokens: self.tokens, text: self.text, stats }
    }
}
