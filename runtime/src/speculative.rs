//! Speculative decoding: a small draft model proposes a few tokens, the target model checks
//! them all in one batched forward, and a rejection rule keeps the output distributed exactly
//! as the target alone would produce it (Leviathan et al. 2023, Chen et al. 2023).
//!
//! One round, with the target's cache holding everything but the last token (`pending`):
//! 1. the draft catches up on the tokens it has not seen and proposes up to `max` tokens
//!    d₁…d_k, each drawn from its distribution q after the run's sampler filters; it stops early
//!    when its top token is less likely than `p_min` (llama.cpp's `--draft-p-min`);
//! 2. the target runs `[pending, d₁…d_k]` in one forward and gives k + 1 rows of logits
//!    ([`Decoder::forward_verify`]; on the CPU each row bitwise what decoding one token at a
//!    time would give, [`Model::forward_rowwise`]);
//! 3. from the left, dᵢ is kept with probability min(1, p(dᵢ)/q(dᵢ)), p being the target's
//!    distribution after the same filters; the first rejected one is replaced by a draw from
//!    norm(max(0, p − q)) and the round ends; if all are kept, one more token is drawn from the
//!    target's last row;
//! 4. both caches forget the positions of rejected tokens.
//!
//! At temperature 0 both distributions are one-hot, so a draft token is kept exactly when it is
//! the target's argmax and the replacement is that argmax: on the CPU the text equals the
//! target's own. On the GPU the batched rows round differently from single decode steps (cuBLAS
//! GEMMs against mat-vecs), so where two tokens are within that rounding the choice can differ.

use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Instant;

use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;

use crate::generate::{Generation, GenerateParams, Output, StopReason};
use crate::decoder::Decoder;
use crate::model::{Logits, Model, ModelError};
use crate::sampling::{Sampler, TokenProbs};
use crate::tokenizer::Tokenizer;

/// How the draft model drafts; [`Default`] gives llama.cpp's defaults.
#[derive(Debug, Clone, PartialEq)]
pub struct DraftParams {
    /// Tokens drafted per round at most (llama.cpp's `--draft-max`).
    pub max: usize,
    /// A round whose draft is shorter than this verifies no draft tokens (`--draft-min`).
    pub min: usize,
    /// The draft stops when its most likely token has a lower probability (softmax of its
    /// logits at temperature 1) (`--draft-p-min`).
    pub p_min: f32,
}

impl Default for DraftParams {
    fn default() -> Self {
        DraftParams { max: 16, min: 0, p_min: 0.8 }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum SpeculativeError {
    #[error("the target has {target} tokens in its vocabulary, the draft {draft}")]
    VocabSize { target: usize, draft: usize },
    #[error("token {id} is {target:?} in the target's vocabulary but {draft:?} in the draft's")]
    TokenText { id: u32, target: String, draft: String },
    #[error(transparent)]
    Model(#[from] ModelError),
}

/// Checks that the draft's ids mean what the target's do: the same number of tokens (in the
/// tokenizers and in the models' output heads) and the same text for every id.
pub fn check_vocabularies(
    target: (&Model, &Tokenizer),
    draft: (&Model, &Tokenizer),
) -> Result<(), SpeculativeError> {
    let sizes = [
        (target.1.n_vocab(), draft.1.n_vocab()),
        (target.0.config.n_vocab, draft.0.config.n_vocab),
    ];
    if let Some(&(target, draft)) = sizes.iter().find(|(t, d)| t != d) {
        return Err(SpeculativeError::VocabSize { target, draft });
    }
    for id in 0..target.1.n_vocab() as u32 {
        let (t, d) = (target.1.token_text(id), draft.1.token_text(id));
        if t != d {
            let text = |s: Option<&str>| s.unwrap_or("<none>").to_string();
            return Err(SpeculativeError::TokenText { id, target: text(t), draft: text(d) });
        }
    }
    Ok(())
}

/// One verification step. The draft proposed `x`, drawn from `q`; it is kept (`None`) with
/// probability min(1, p(x)/q(x)), else the replacement drawn from norm(max(0, p − q)) is
/// returned. Over the draft's draw and this one, the token that comes out is distributed as `p`.
pub fn verify_token<R: Rng + ?Sized>(p: &TokenProbs, q: &TokenProbs, x: u32, rng: &mut R) -> Option<u32> {
    // u < p/q, written without the division (q(x) > 0 for any x actually drawn from q).
    if rng.gen::<f64>() * q.prob(x) < p.prob(x) {
        return None;
    }
    let residual = p.entries().iter().map(|&(id, pi)| (id, (pi - q.prob(id)).max(0.0)));
    // An empty residual means p ≤ q everywhere, i.e. p = q up to rounding: draw from p.
    Some(TokenProbs::from_weights(residual).unwrap_or_else(|| p.clone()).draw(rng))
}

/// Counts of a speculative generation.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct SpeculativeStats {
    /// Target forwards after the prompt (one per round).
    pub rounds: usize,
    /// Draft tokens the target verified.
    pub drafted: usize,
    /// Draft tokens kept.
    pub accepted: usize,
}

impl SpeculativeStats {
    /// The share of verified draft tokens that were kept (0 when none was verified).
    pub fn acceptance_rate(&self) -> f64 {
        if self.drafted == 0 {
            0.0
        } else {
            self.accepted as f64 / self.drafted as f64
        }
    }
}

/// A target and a draft, each a model with its KV cache on some backend (CPU or GPU); both
/// must have the same capacity.
pub struct Speculative<'a> {
    pub target: &'a mut dyn Decoder,
    pub draft: &'a mut dyn Decoder,
    pub params: DraftParams,
}

/// The state of one generation.
struct Round<'s> {
    /// The prompt and every token produced so far; the last one is not yet in the target's cache.
    seq: Vec<u32>,
    target_sampler: Sampler,
    draft_sampler: Sampler,
    rng: ChaCha8Rng,
    stats: &'s mut SpeculativeStats,
}

impl Speculative<'_> {
    /// Generates after `prompt` like [`crate::generate::generate`] on the target (both caches
    /// are cleared first): the same stop rules and streaming, the same tokens at temperature 0,
    /// the same distribution otherwise.
    pub fn generate(
        &mut self,
        tokenizer: &Tokenizer,
        prompt: &[u32],
        params: &GenerateParams,
        cancel: &AtomicBool,
        on_text: impl FnMut(&str),
    ) -> Result<(Generation, SpeculativeStats), ModelError> {
        self.target.truncate(0);
        self.draft.truncate(0);
        let mut stats = SpeculativeStats::default();
        let mut output = Output::new(tokenizer, params, on_text);
        let start = Instant::now();
        // The prompt goes through the target as plain generation feeds it, so its cache holds
        // the same values bit for bit.
        let logits = if prompt.is_empty() { Vec::new() } else { self.target.forward(prompt, Logits::Last)? };
        let prompt_secs = start.elapsed().as_secs_f64();
        let gen_start = Instant::now();
        let mut round = Round {
            seq: prompt.to_vec(),
            target_sampler: Sampler::new(params.sampling.clone()),
            draft_sampler: Sampler::new(params.sampling.clone()),
            rng: ChaCha8Rng::seed_from_u64(params.sampling.seed),
            stats: &mut stats,
        };
        let capacity = self.target.capacity();
        // Why generation ends after `id`, checked in the order `generate` checks it.
        let take = |id: u32, output: &mut Output<'_, _>| {
            output.push(id).or_else(|| {
                if prompt.len() + output.tokens().len() > capacity {
                    Some(StopReason::ContextFull)
                } else if cancel.load(Ordering::Relaxed) {
                    Some(StopReason::Cancelled)
                } else if output.limit_reached() {
                    Some(StopReason::MaxTokens)
                } else {
                    None
                }
            })
        };
        let stop_reason = 'gen: {
            if cancel.load(Ordering::Relaxed) {
                break 'gen StopReason::Cancelled;
            }
            if output.limit_reached() {
                break 'gen StopReason::MaxTokens;
            }
            if logits.is_empty() {
                break 'gen StopReason::ContextFull;
            }
            let first = round.target_sampler.distribution(&logits, &round.seq).draw(&mut round.rng);
            round.seq.push(first);
            if let Some(reason) = take(first, &mut output) {
                break 'gen reason;
            }
            loop {
                let room = capacity - self.target.len() - 1;
                let left = params.max_tokens.map_or(usize::MAX, |m| m - output.tokens().len());
                // A round gives its kept drafts plus one token.
                let k_max = self.params.max.min(room).min(left - 1);
                for id in self.round(&mut round, tokenizer, k_max)? {
                    if let Some(reason) = take(id, &mut output) {
                        break 'gen reason;
                    }
                }
            }
        };
        let generation = output.finish(stop_reason, prompt.len(), prompt_secs, gen_start.elapsed().as_secs_f64());
        Ok((generation, stats))
    }

    /// Drafts up to `k_max` tokens, verifies them, and gives the tokens this round produces
    /// (the kept drafts and one more), already appended to `r.seq`.
    fn round(&mut self, r: &mut Round, tokenizer: &Tokenizer, k_max: usize) -> Result<Vec<u32>, ModelError> {
        let (drafts, qs) = self.draft_tokens(r, tokenizer, k_max)?;
        let base = self.target.len();
        let pending = *r.seq.last().expect("the first token is produced before any round");
        let batch: Vec<u32> = std::iter::once(pending).chain(drafts.iter().copied()).collect();
        let logits = self.target.forward_verify(&batch)?;
        r.stats.rounds += 1;
        r.stats.drafted += drafts.len();

        let n_vocab = logits.len() / batch.len();
        let mut produced = Vec::with_capacity(drafts.len() + 1);
        for (i, row) in logits.chunks_exact(n_vocab).enumerate() {
            let p = r.target_sampler.distribution(row, &r.seq);
            let next = match drafts.get(i) {
                Some(&x) => match verify_token(&p, &qs[i], x, &mut r.rng) {
                    None => x,
                    Some(replacement) => {
                        produced.push(replacement);
                        r.seq.push(replacement);
                        break;
                    }
                },
                None => p.draw(&mut r.rng),
            };
            produced.push(next);
            r.seq.push(next);
        }
        // Kept: `pending` and the accepted drafts. The new last token is the next `pending`.
        let accepted = produced.len() - 1;
        r.stats.accepted += accepted;
        self.target.truncate(base + 1 + accepted);
        self.draft.truncate(base + 1 + accepted);
        Ok(produced)
    }

    /// The draft's proposals after `r.seq` and the distribution each was drawn from.
    fn draft_tokens(
        &mut self,
        r: &mut Round,
        tokenizer: &Tokenizer,
        k_max: usize,
    ) -> Result<(Vec<u32>, Vec<TokenProbs>), ModelError> {
        let (mut drafts, mut qs) = (Vec::new(), Vec::new());
        if k_max == 0 {
            return Ok((drafts, qs));
        }
        // The draft's cache lags by the tokens produced since it last ran (one or two).
        let unseen = &r.seq[self.draft.len()..];
        let mut logits = self.draft.forward(unseen, Logits::Last)?;
        let mut recent = r.seq.clone();
        while drafts.len() < k_max && top_probability(&logits) >= self.params.p_min {
            let q = r.draft_sampler.distribution(&logits, &recent);
            let x = q.draw(&mut r.rng);
            drafts.push(x);
            qs.push(q);
            recent.push(x);
            // Nothing after an end of generation is used; the last draft need not be run.
            if tokenizer.is_eog(x) || drafts.len() == k_max {
                break;
            }
            logits = self.draft.forward(&[x], Logits::Last)?;
        }
        if drafts.len() < self.params.min {
            drafts.clear();
            qs.clear();
        }
        Ok((drafts, qs))
    }
}

/// The probability of the most likely token under softmax at temperature 1 (0 when no logit is
/// finite).
fn top_probability(logits: &[f32]) -> f32 {
    let max = logits.iter().copied().filter(|l| l.is_finite()).fold(f32::NEG_INFINITY, f32::max);
    if max == f32::NEG_INFINITY {
        return 0.0;
    }
    let sum: f64 = logits.iter().filter(|l| l.is_finite()).map(|&l| ((l - max) as f64).exp()).sum();
    (1.0 / sum) as f32
}

#[cfg(test)]
mod tests;
