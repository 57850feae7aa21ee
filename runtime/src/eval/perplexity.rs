//! Perplexity exactly as llama.cpp's `llama-perplexity` computes it (tools/perplexity,
//! `perplexity()`), so that our figure and theirs can be compared digit for digit:
//!
//! - the whole text is tokenized once with BOS (`common_tokenize(ctx, text, true)`);
//! - it is cut into non-overlapping chunks of `n_ctx` tokens (the tail that does not fill a
//!   chunk is dropped), and at least two chunks' worth of tokens are required;
//! - each chunk runs from an empty cache with its first token replaced by BOS when the
//!   vocabulary adds one, so every chunk starts like a document;
//! - only the second half is scored, so every prediction has at least `n_ctx/2` tokens of
//!   context: the logits at positions `first = n_ctx/2 ..= n_ctx-2` predict the tokens at
//!   `first+1 ..= n_ctx-1` (`n_ctx - 1 - first` predictions per chunk);
//! - PPL = exp(mean NLL), and its uncertainty is PPL times the standard error of the NLL.

use rayon::prelude::*;

use super::EvalError;
use crate::kv_cache::KvCache;
use crate::model::{Logits, Model};

/// The evaluation tokens cut into chunks of `n_ctx`.
#[derive(Debug, Clone)]
pub struct Chunks {
    tokens: Vec<u32>,
    n_ctx: usize,
    n_chunk: usize,
}

impl Chunks {
    /// `max_chunks` caps the chunk count like llama.cpp's `--chunks`.
    pub fn new(tokens: Vec<u32>, n_ctx: usize, max_chunks: Option<usize>) -> Result<Self, EvalError> {
        if n_ctx < 4 {
            return Err(EvalError::BadContext(n_ctx));
        }
        if max_chunks == Some(0) {
            return Err(EvalError::NoChunks);
        }
        if tokens.len() < 2 * n_ctx {
            return Err(EvalError::TooFewTokens { n_tokens: tokens.len(), n_ctx });
        }
        let n_chunk = (tokens.len() / n_ctx).min(max_chunks.unwrap_or(usize::MAX));
        Ok(Chunks { tokens, n_ctx, n_chunk })
    }

    pub fn n_ctx(&self) -> usize {
        self.n_ctx
    }

    pub fn n_chunk(&self) -> usize {
        self.n_chunk
    }

    /// The first position whose logits are scored.
    pub fn first(&self) -> usize {
        self.n_ctx / 2
    }

    /// Predictions scored per chunk.
    pub fn scored_per_chunk(&self) -> usize {
        self.n_ctx - 1 - self.first()
    }

    /// The tokens of chunk `i` as the text has them (before the BOS replacement).
    pub fn chunk(&self, i: usize) -> &[u32] {
        &self.tokens[i * self.n_ctx..(i + 1) * self.n_ctx]
    }

    /// The targets scored in chunk `i`: the tokens at `first+1 ..= n_ctx-1`.
    pub fn targets(&self, i: usize) -> &[u32] {
        &self.chunk(i)[self.first() + 1..]
    }

    /// Every token the chunks cover, in order (what a KL base file records).
    pub fn used_tokens(&self) -> &[u32] {
        &self.tokens[..self.n_chunk * self.n_ctx]
    }
}

/// Runs one chunk from an empty cache and returns the logits of the scored positions
/// (`first ..= n_ctx-2`), row-major `scored_per_chunk × n_vocab`.
pub fn chunk_logits(model: &Model, cache: &mut KvCache, chunks: &Chunks, i: usize, bos: Option<u32>) -> Result<Vec<f32>, EvalError> {
    let mut input = chunks.chunk(i).to_vec();
    if let Some(b) = bos {
        input[0] = b;
    }
    cache.clear();
    let mut logits = model.forward(&input, cache, Logits::All)?;
    let n_vocab = model.config.n_vocab;
    let (first, last) = (chunks.first(), chunks.n_ctx() - 1);
    logits.truncate(last * n_vocab);
    logits.drain(..first * n_vocab);
    Ok(logits)
}

/// Max and ln(Σ exp(l - max)) of a row, the two numbers every log-probability needs,
/// computed like llama.cpp (f32 exponentials summed in f64) so that rounding matches theirs.
pub(super) fn log_norm(row: &[f32]) -> (f32, f64) {
    let max = row.iter().copied().fold(f32::NEG_INFINITY, f32::max);
    let sum: f64 = row.iter().map(|&l| f64::from((l - max).exp())).sum();
    (max, sum.ln())
}

/// Negative log-likelihood of `target` under one row of logits.
pub fn row_nll(row: &[f32], target: u32) -> f64 {
    let (max, ln_sum) = log_norm(row);
    f64::from(max) + ln_sum - f64::from(row[target as usize])
}

/// Running sums of per-token negative log-likelihoods.
#[derive(Debug, Clone, Copy, Default)]
pub struct NllStats {
    pub sum: f64,
    pub sum2: f64,
    pub count: usize,
}

impl NllStats {
    pub fn add(&mut self, nll: f64) {
        self.sum += nll;
        self.sum2 += nll * nll;
        self.count += 1;
    }

    pub fn mean(&self) -> f64 {
        self.sum / self.count.max(1) as f64
    }

    pub fn ppl(&self) -> f64 {
        self.mean().exp()
    }

    /// llama.cpp's "PPL = X +/- Y": PPL times the standard error of the mean NLL
    /// (sqrt(var/(n-1)), the delta method for exp). None when the variance is not positive.
    pub fn ppl_uncertainty(&self) -> Option<f64> {
        if self.count < 2 {
            return None;
        }
        let mean = self.mean();
        let var = self.sum2 / self.count as f64 - mean * mean;
        (var > 0.0).then(|| (var / (self.count - 1) as f64).sqrt() * self.ppl())
    }
}

#[derive(Debug, Clone)]
pub struct PerplexityResult {
    pub stats: NllStats,
    /// The running perplexity after each chunk (llama.cpp's `[1]x,[2]y,…`).
    pub running: Vec<f64>,
}

impl PerplexityResult {
    pub fn ppl(&self) -> f64 {
        self.stats.ppl()
    }
}

/// Scores every chunk; `on_chunk(i, running_ppl)` is called after each so callers can print
/// progress. `bos` is the token that replaces each chunk's first (None when the vocabulary
/// adds no BOS).
pub fn perplexity(model: &Model, chunks: &Chunks, bos: Option<u32>, on_chunk: impl FnMut(usize, f64)) -> Result<PerplexityResult, EvalError> {
    perplexity_with(model, &mut model.new_cache(chunks.n_ctx()), chunks, bos, |_, _| Ok(()), on_chunk)
}

/// [`perplexity`] in `cache` (of at least a chunk's positions; f16 or Q8_0, say) that also
/// hands each chunk's scored logits to `on_logits(i, logits)` before scoring them (how a KL
/// base file is written in the same pass).
pub fn perplexity_with(
    model: &Model,
    cache: &mut KvCache,
    chunks: &Chunks,
    bos: Option<u32>,
    mut on_logits: impl FnMut(usize, &[f32]) -> Result<(), EvalError>,
    mut on_chunk: impl FnMut(usize, f64),
) -> Result<PerplexityResult, EvalError> {
    let n_vocab = model.config.n_vocab;
    let mut stats = NllStats::default();
    let mut running = Vec::with_capacity(chunks.n_chunk());
    for i in 0..chunks.n_chunk() {
        let logits = chunk_logits(model, cache, chunks, i, bos)?;
        on_logits(i, &logits)?;
        let nlls: Vec<f64> = logits.par_chunks(n_vocab).zip(chunks.targets(i).par_iter()).map(|(row, &t)| row_nll(row, t)).collect();
        nlls.iter().for_each(|&v| stats.add(v));
        running.push(stats.ppl());
        on_chunk(i, stats.ppl());
    }
    Ok(PerplexityResult { stats, running })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn chunking_follows_llama_cpp() {
        let c = Chunks::new((0..1000).collect(), 128, None).unwrap();
        assert_eq!(c.n_chunk(), 7);
        assert_eq!(c.first(), 64);
        assert_eq!(c.scored_per_chunk(), 63);
        assert_eq!(c.targets(1), &(128 + 65..256).collect::<Vec<u32>>()[..]);
        assert_eq!(Chunks::new((0..1000).collect(), 128, Some(3)).unwrap().n_chunk(), 3);
        assert!(matches!(Chunks::new((0..255).collect(), 128, None), Err(EvalError::TooFewTokens { .. })));
        assert!(matches!(Chunks::new((0..100).collect(), 2, None), Err(EvalError::BadContext(2))));
        assert!(matches!(Chunks::new((0..1000).collect(), 128, Some(0)), Err(EvalError::NoChunks)));
    }

    #[test]
    fn uniform_logits_give_vocabulary_size_perplexity() {
        let mut s = NllStats::default();
        for _ in 0..10 {
            s.add(row_nll(&[0.5; 50], 3));
        }
        assert!((s.ppl() - 50.0).abs() < 1e-9);
        assert!(s.ppl_uncertainty().unwrap_or(0.0) < 1e-6, "no spread, no error bar");
    }

    #[test]
    fn uncertainty_is_the_standard_error_scaled_by_ppl() {
        let mut s = NllStats::default();
        [1.0, 2.0, 3.0, 4.0].iter().for_each(|&v| s.add(v));
        // mean 2.5, population variance 1.25, standard error sqrt(1.25/3).
        let want = (1.25f64 / 3.0).sqrt() * 2.5f64.exp();
        assert!((s.ppl_uncertainty().unwrap() - want).abs() < 1e-9);
    }
}
