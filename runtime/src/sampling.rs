//! Next-token sampling compatible with llama.cpp's default sampler chain, plus
//! stop-string handling for streamed text.
//!
//! Chain (llama.cpp `common_sampler` defaults, minus the samplers that are off by
//! default): repetition penalty → top-k → top-p → min-p → temperature → softmax →
//! seeded draw. As in llama.cpp, top-p and min-p look at the distribution before
//! temperature is applied.

use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;

/// Sampling settings; [`Default`] gives llama.cpp's defaults.
#[derive(Debug, Clone, PartialEq)]
pub struct SamplingParams {
    /// `<= 0` means greedy (argmax after the repetition penalty).
    pub temperature: f32,
    /// Keep the `top_k` most likely tokens; 0 = off.
    pub top_k: usize,
    /// Keep the smallest set of most likely tokens whose probability reaches `top_p`; 1.0 = off.
    pub top_p: f32,
    /// Drop tokens less likely than `min_p` times the most likely one; 0.0 = off.
    pub min_p: f32,
    /// Penalty for tokens among the last `repeat_last_n`; 1.0 = off.
    pub repeat_penalty: f32,
    /// How many recent tokens the penalty looks at; 0 = off.
    pub repeat_last_n: usize,
    /// Seed of the draw. Always used as given: llama.cpp reads its default seed
    /// (`LLAMA_DEFAULT_SEED` = 0xFFFF_FFFF) as "pick a random one", but here the same
    /// seed always gives the same text. Callers wanting fresh randomness pass
    /// [`SamplingParams::random_seed`] (and should print it, so a run can be repeated).
    pub seed: u64,
}

impl Default for SamplingParams {
    fn default() -> Self {
        Self {
            temperature: 0.8,
            top_k: 40,
            top_p: 0.95,
            min_p: 0.05,
            repeat_penalty: 1.0,
            repeat_last_n: 64,
            seed: 0xFFFF_FFFF,
        }
    }
}

impl SamplingParams {
    /// Greedy decoding: always the most likely token.
    pub fn greedy() -> Self {
        Self { temperature: 0.0, ..Self::default() }
    }

    /// A seed from the OS's entropy source, for runs that should differ.
    pub fn random_seed() -> u64 {
        rand::random()
    }
}

/// Picks next tokens from logits. Holds the RNG, so one `Sampler` per generation
/// stream keeps results reproducible.
#[derive(Debug, Clone)]
pub struct Sampler {
    params: SamplingParams,
    rng: ChaCha8Rng,
    // Reused between calls so sampling does not allocate a vocab-sized vector per token.
    candidates: Vec<(u32, f32)>,
    penalized: Vec<u32>,
}

impl Sampler {
    pub fn new(params: SamplingParams) -> Self {
        let rng = ChaCha8Rng::seed_from_u64(params.seed);
        Self { params, rng, candidates: Vec::new(), penalized: Vec::new() }
    }

    pub fn params(&self) -> &SamplingParams {
        &self.params
    }

    /// Whether [`Self::sample`] is the plain argmax of the logits: greedy, and no repetition
    /// penalty to change the logits first.
    pub fn is_plain_greedy(&self) -> bool {
        let p = &self.params;
        (p.temperature <= 0.0 || p.temperature.is_nan()) && !self.penalizes()
    }

    /// When [`Self::sample`] depends only on the `k` most likely logits (a temperature, top-k
    /// on, no repetition penalty to reorder them), that `k`: a backend may then hand over a few
    /// candidates holding those `k` instead of the whole vocabulary
    /// ([`Self::sample_candidates`]; the GPU picks them where the logits are).
    pub fn top_k_only(&self) -> Option<usize> {
        let p = &self.params;
        (p.temperature > 0.0 && p.top_k > 0 && !self.penalizes()).then_some(p.top_k)
    }

    /// Whether the settings ask for a repetition penalty at all (`apply_repeat_penalty` leaves
    /// the logits alone otherwise).
    fn penalizes(&self) -> bool {
        let penalty = self.params.repeat_penalty;
        self.params.repeat_last_n != 0 && penalty != 1.0 && penalty.is_finite() && penalty > 0.0
    }

    /// [`Self::sample`] from candidates (id, logit) that include the [`Self::top_k_only`]
    /// most likely tokens of the vocabulary (in any order, more allowed, each id once): the
    /// same token as `sample` over all the logits, drawing the same randomness. Only valid
    /// while `top_k_only` is `Some`.
    pub fn sample_candidates(&mut self, candidates: &[(u32, f32)]) -> u32 {
        debug_assert!(self.top_k_only().is_some());
        let mut cands = std::mem::take(&mut self.candidates);
        cands.clear();
        cands.extend(candidates.iter().map(|&(id, l)| (id, sanitize(l))));
        // Every candidate at −∞ means every logit is (the candidates hold the largest), and the
        // chain then gives token 0 as it does for the whole logits.
        let filtered = keep_likely(&mut cands, &self.params);
        self.candidates = cands;
        match filtered {
            Filtered::Greedy(id) => id,
            Filtered::Candidates => draw(&self.candidates, self.params.temperature, &mut self.rng),
        }
    }

    /// Restarts the random stream, as if newly created with this seed.
    pub fn reseed(&mut self, seed: u64) {
        self.params.seed = seed;
        self.rng = ChaCha8Rng::seed_from_u64(seed);
    }

    /// Index of the largest logit, lowest index on ties. NaN counts as -inf; if no
    /// logit is above -inf (or `logits` is empty) the answer is token 0, so a broken
    /// forward pass yields a defined token rather than a panic.
    pub fn greedy(logits: &[f32]) -> u32 {
        let mut best = 0usize;
        let mut best_val = f32::NEG_INFINITY;
        for (i, &l) in logits.iter().enumerate() {
            if l > best_val {
                best = i;
                best_val = l;
            }
        }
        best as u32
    }

    /// Samples one token id from `logits` (one per vocabulary entry).
    /// `recent_tokens` is the context so far, oldest first; only its last
    /// `repeat_last_n` entries are penalized. NaN logits count as -inf; when every
    /// logit is -inf/NaN (or `logits` is empty) the result is token 0, like [`Self::greedy`].
    pub fn sample(&mut self, logits: &[f32], recent_tokens: &[u32]) -> u32 {
        match self.filter(logits, recent_tokens) {
            Filtered::Greedy(id) => id,
            Filtered::Candidates => draw(&self.candidates, self.params.temperature, &mut self.rng),
        }
    }

    /// The distribution [`Self::sample`] draws from for these `logits`: the tokens the chain's
    /// filters keep, with their probabilities at the temperature. Greedy settings put all the
    /// mass on the token greedy decoding picks. Speculative decoding compares the target's and
    /// the draft's distributions through it.
    pub fn distribution(&mut self, logits: &[f32], recent_tokens: &[u32]) -> TokenProbs {
        match self.filter(logits, recent_tokens) {
            Filtered::Greedy(id) => TokenProbs::one_hot(id),
            Filtered::Candidates => {
                let weights = temperature_weights(&self.candidates, self.params.temperature);
                let total: f64 = weights.iter().sum();
                if total <= 0.0 || !total.is_finite() {
                    return TokenProbs::one_hot(self.candidates[0].0);
                }
                TokenProbs { entries: self.candidates.iter().zip(weights).map(|(c, w)| (c.0, w / total)).collect() }
            }
        }
    }

    /// Runs the chain's filters: either the greedy pick, or the surviving candidates (at least
    /// one) left in `self.candidates`, most likely first, for a draw at the temperature.
    fn filter(&mut self, logits: &[f32], recent_tokens: &[u32]) -> Filtered {
        let p = self.params.clone();
        let mut cands = std::mem::take(&mut self.candidates);
        cands.clear();
        cands.extend(logits.iter().enumerate().map(|(i, &l)| (i as u32, sanitize(l))));
        self.apply_repeat_penalty(&mut cands, recent_tokens);

        // A NaN temperature is treated like 0: greedy.
        let filtered = if p.temperature <= 0.0 || p.temperature.is_nan() {
            Filtered::Greedy(greedy_candidates(&cands))
        } else {
            keep_likely(&mut cands, &p)
        };
        self.candidates = cands;
        filtered
    }

    /// llama.cpp's rule: for each distinct token among the last `repeat_last_n`,
    /// a positive logit is divided by the penalty and a negative one multiplied,
    /// so the token always becomes less likely when penalty > 1.
    fn apply_repeat_penalty(&mut self, cands: &mut [(u32, f32)], recent: &[u32]) {
        let penalty = self.params.repeat_penalty;
        let n = self.params.repeat_last_n.min(recent.len());
        if n == 0 || !self.penalizes() {
            return;
        }
        self.penalized.clear();
        self.penalized.extend_from_slice(&recent[recent.len() - n..]);
        self.penalized.sort_unstable();
        self.penalized.dedup();
        for &tok in &self.penalized {
            // Candidates are still in vocabulary order here; out-of-range ids are ignored.
            if let Some(c) = cands.get_mut(tok as usize) {
                c.1 = if c.1 <= 0.0 { c.1 * penalty } else { c.1 / penalty };
            }
        }
    }
}

/// The sampling chain's filters after the penalty: the candidates above −∞, then top-k, top-p
/// and min-p, most likely first; token 0 when none is above −∞.
fn keep_likely(cands: &mut Vec<(u32, f32)>, p: &SamplingParams) -> Filtered {
    // Impossible tokens carry no probability; dropping them first keeps the sort below small
    // and makes "everything is -inf" a simple check.
    cands.retain(|&(_, l)| l > f32::NEG_INFINITY);
    if cands.is_empty() {
        return Filtered::Greedy(0);
    }
    top_k(cands, p.top_k);
    top_p(cands, p.top_p);
    min_p(cands, p.min_p);
    Filtered::Candidates
}

fn sanitize(l: f32) -> f32 {
    if l.is_nan() {
        f32::NEG_INFINITY
    } else if l == f32::INFINITY {
        // Keeps +inf tokens on top while the `l - max` in the softmax stays finite.
        f32::MAX
    } else {
        l
    }
}

fn greedy_candidates(cands: &[(u32, f32)]) -> u32 {
    let mut best: Option<(u32, f32)> = None;
    for &(id, l) in cands {
        if l > f32::NEG_INFINITY && best.is_none_or(|(_, b)| l > b) {
            best = Some((id, l));
        }
    }
    best.map_or(0, |(id, _)| id)
}

/// Descending by logit; ties by lower id so results never depend on sort internals.
fn by_logit_desc(a: &(u32, f32), b: &(u32, f32)) -> std::cmp::Ordering {
    b.1.total_cmp(&a.1).then(a.0.cmp(&b.0))
}

/// Leaves the `k` most likely candidates (k = 0: all), sorted most likely first.
fn top_k(cands: &mut Vec<(u32, f32)>, k: usize) {
    if k > 0 && k < cands.len() {
        // O(n) selection first, so only k candidates get sorted.
        cands.select_nth_unstable_by(k - 1, by_logit_desc);
        cands.truncate(k);
    }
    cands.sort_unstable_by(by_logit_desc);
}

/// Softmax at temperature 1 over sorted candidates, as f64 weights.
fn softmax(cands: &[(u32, f32)]) -> Vec<f64> {
    let max = cands.first().map_or(0.0, |c| c.1) as f64;
    let mut w: Vec<f64> = cands.iter().map(|c| (c.1 as f64 - max).exp()).collect();
    let sum: f64 = w.iter().sum();
    if sum > 0.0 {
        w.iter_mut().for_each(|x| *x /= sum);
    }
    w
}

/// Keeps the shortest prefix whose probability mass reaches `p` (the token that
/// crosses the threshold is kept), at least one token.
fn top_p(cands: &mut Vec<(u32, f32)>, p: f32) {
    // NaN reads as "off", like 1.0.
    if p.is_nan() || p >= 1.0 || cands.len() <= 1 {
        return;
    }
    let probs = softmax(cands);
    let mut cum = 0.0f64;
    let mut keep = cands.len();
    for (i, &pr) in probs.iter().enumerate() {
        cum += pr;
        if cum >= p as f64 {
            keep = i + 1;
            break;
        }
    }
    cands.truncate(keep.max(1));
}

/// Keeps tokens with probability >= `p` × the top probability, i.e. logit >=
/// top logit + ln(p), as llama.cpp computes it.
fn min_p(cands: &mut Vec<(u32, f32)>, p: f32) {
    // NaN reads as "off", like 0.0 (it would otherwise cut everything but the top).
    if p.is_nan() || p <= 0.0 || cands.len() <= 1 {
        return;
    }
    let threshold = cands[0].1 as f64 + (p as f64).ln();
    let keep = cands.iter().take_while(|c| c.1 as f64 >= threshold).count();
    cands.truncate(keep.max(1));
}

/// What the filters leave: one certain token, or candidates to draw from.
enum Filtered {
    Greedy(u32),
    Candidates,
}

/// Unnormalized softmax weights at `temperature` over sorted candidates (the first is the
/// largest logit).
fn temperature_weights(cands: &[(u32, f32)], temperature: f32) -> Vec<f64> {
    let max = cands[0].1 as f64;
    let t = temperature as f64;
    // Subtracting the max before dividing keeps exp() finite for any temperature.
    cands.iter().map(|c| ((c.1 as f64 - max) / t).exp()).collect()
}

/// Softmax at `temperature` over sorted candidates, then one draw.
fn draw(cands: &[(u32, f32)], temperature: f32, rng: &mut ChaCha8Rng) -> u32 {
    let weights = temperature_weights(cands, temperature);
    let total: f64 = weights.iter().sum();
    if total <= 0.0 || !total.is_finite() {
        return cands[0].0;
    }
    let mut r = rng.gen::<f64>() * total;
    for (c, w) in cands.iter().zip(&weights) {
        if r < *w {
            return c.0;
        }
        r -= w;
    }
    // Rounding can leave r a hair above the last weight; that mass is the last
    // candidate with nonzero weight.
    cands.iter().zip(&weights).rev().find(|(_, w)| **w > 0.0).map_or(cands[0].0, |(c, _)| c.0)
}

/// A probability distribution over token ids: the tokens with nonzero probability, most likely
/// first. Built by [`Sampler::distribution`] (probabilities summing to 1) or from weights.
#[derive(Debug, Clone, PartialEq)]
pub struct TokenProbs {
    entries: Vec<(u32, f64)>,
}

impl TokenProbs {
    /// All the mass on `id`.
    pub fn one_hot(id: u32) -> Self {
        TokenProbs { entries: vec![(id, 1.0)] }
    }

    /// Normalizes nonnegative `weights` (id, weight); entries with no weight (or a NaN one) are
    /// dropped. `None` when nothing has weight or the total is not finite.
    pub fn from_weights(weights: impl IntoIterator<Item = (u32, f64)>) -> Option<Self> {
        let mut entries: Vec<(u32, f64)> = weights.into_iter().filter(|&(_, w)| w > 0.0).collect();
        let total: f64 = entries.iter().map(|e| e.1).sum();
        if total <= 0.0 || !total.is_finite() {
            return None;
        }
        entries.iter_mut().for_each(|e| e.1 /= total);
        entries.sort_by(|a, b| b.1.total_cmp(&a.1).then(a.0.cmp(&b.0)));
        Some(TokenProbs { entries })
    }

    /// The tokens with nonzero probability and their probabilities, most likely first.
    pub fn entries(&self) -> &[(u32, f64)] {
        &self.entries
    }

    /// The probability of `id` (0 for a token the filters dropped).
    pub fn prob(&self, id: u32) -> f64 {
        self.entries.iter().find(|e| e.0 == id).map_or(0.0, |e| e.1)
    }

    /// One draw.
    pub fn draw<R: Rng + ?Sized>(&self, rng: &mut R) -> u32 {
        let total: f64 = self.entries.iter().map(|e| e.1).sum();
        let mut r = rng.gen::<f64>() * total;
        for &(id, p) in &self.entries {
            if r < p {
                return id;
            }
            r -= p;
        }
        // Rounding can leave r a hair above the last probability; that mass is the last token.
        self.entries.last().map_or(0, |e| e.0)
    }
}

/// What [`StopStrings::push`] lets through.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct StopOutput {
    /// Text that can be shown now.
    pub text: String,
    /// A stop string matched: `text` ends right before it and generation should end.
    pub stopped: bool,
}

/// Cuts streamed text at the first stop string. Pieces arrive as they are decoded,
/// so a stop string can be split across pieces; any tail that could still grow into
/// one is held back until the next piece settles it.
#[derive(Debug, Clone, Default)]
pub struct StopStrings {
    stops: Vec<String>,
    pending: String,
    stopped: bool,
}

impl StopStrings {
    /// Empty stop strings are ignored (they would match everywhere).
    pub fn new<I, S>(stops: I) -> Self
    where
        I: IntoIterator<Item = S>,
        S: Into<String>,
    {
        let stops = stops.into_iter().map(Into::into).filter(|s: &String| !s.is_empty()).collect();
        Self { stops, pending: String::new(), stopped: false }
    }

    pub fn is_stopped(&self) -> bool {
        self.stopped
    }

    /// Feeds the next piece of generated text. After a stop, everything is swallowed.
    pub fn push(&mut self, piece: &str) -> StopOutput {
        if self.stopped {
            return StopOutput { text: String::new(), stopped: true };
        }
        self.pending.push_str(piece);
        // Held-back text cannot contain a whole stop string, so a match can only
        // start inside `pending`; the earliest one wins.
        let first_match = self.stops.iter().filter_map(|s| self.pending.find(s.as_str())).min();
        if let Some(pos) = first_match {
            self.pending.truncate(pos);
            self.stopped = true;
            return StopOutput { text: std::mem::take(&mut self.pending), stopped: true };
        }
        let hold = self.held_suffix_start();
        let rest = self.pending.split_off(hold);
        let text = std::mem::replace(&mut self.pending, rest);
        StopOutput { text, stopped: false }
    }

    /// End of generation: releases the text held back as a possible stop-string start.
    pub fn finish(&mut self) -> String {
        std::mem::take(&mut self.pending)
    }

    /// Start of the longest suffix of `pending` that is a proper prefix of some stop
    /// string (`pending.len()` when there is none).
    fn held_suffix_start(&self) -> usize {
        let max_len = self.stops.iter().map(String::len).max().unwrap_or(0);
        let lo = self.pending.len().saturating_sub(max_len.saturating_sub(1));
        (lo..self.pending.len())
            .filter(|&i| self.pending.is_char_boundary(i))
            .find(|&i| {
                let tail = &self.pending[i..];
                self.stops.iter().any(|s| s.starts_with(tail))
            })
            .unwrap_or(self.pending.len())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn filters_off(temperature: f32, seed: u64) -> SamplingParams {
        SamplingParams { temperature, top_k: 0, top_p: 1.0, min_p: 0.0, repeat_penalty: 1.0, repeat_last_n: 64, seed }
    }

    fn run(params: SamplingParams, logits: &[f32], n: usize) -> Vec<u32> {
        let mut s = Sampler::new(params);
        (0..n).map(|_| s.sample(logits, &[])).collect()
    }

    const LOGITS: [f32; 8] = [0.5, 2.0, 1.9, -1.0, 1.0, 0.0, 1.5, -3.0];

    #[test]
    fn top_k_candidates_sample_exactly_like_the_whole_vocabulary() {
        use rand::seq::SliceRandom;
        use rand::Rng;
        let mut rng = ChaCha8Rng::seed_from_u64(5);
        let n = 5000;
        for (case, (k, top_p, min_p, temp)) in
            [(40, 0.95, 0.05, 0.8), (1, 1.0, 0.0, 1.0), (7, 0.5, 0.0, 1.3), (300, 1.0, 0.1, 0.7), (6000, 0.9, 0.0, 1.0)].into_iter().enumerate()
        {
            let params = SamplingParams { temperature: temp, top_k: k, top_p, min_p, repeat_penalty: 1.0, repeat_last_n: 64, seed: 9 + case as u64 };
            let (mut whole, mut part) = (Sampler::new(params.clone()), Sampler::new(params));
            assert_eq!(part.top_k_only(), Some(k));
            for step in 0..50 {
                // Coarse values make ties; NaN, −∞ and +∞ appear too.
                let mut logits: Vec<f32> = (0..n).map(|_| (rng.gen_range(-40..40) as f32) / 8.0).collect();
                for _ in 0..5 {
                    let i = rng.gen_range(0..n);
                    logits[i] = [f32::NAN, f32::NEG_INFINITY, f32::INFINITY][step % 3];
                }
                let mut cands = nexus_kernels::ops::slice_top_k(&logits, k);
                cands.shuffle(&mut rng);
                assert_eq!(part.sample_candidates(&cands), whole.sample(&logits, &[]), "case {case}, step {step}");
            }
        }
        // Every logit −∞: token 0, as `sample` gives.
        let mut s = Sampler::new(SamplingParams::default());
        assert_eq!(s.sample_candidates(&[(7, f32::NEG_INFINITY), (3, f32::NAN)]), 0);
    }

    #[test]
    fn top_k_only_needs_sampling_with_top_k_and_no_penalty() {
        let with = |f: fn(&mut SamplingParams)| {
            let mut p = SamplingParams::default();
            f(&mut p);
            Sampler::new(p).top_k_only()
        };
        assert_eq!(with(|_| {}), Some(40));
        assert_eq!(with(|p| p.temperature = 0.0), None);
        assert_eq!(with(|p| p.temperature = f32::NAN), None);
        assert_eq!(with(|p| p.top_k = 0), None);
        assert_eq!(with(|p| p.repeat_penalty = 1.1), None);
        assert_eq!(with(|p| (p.repeat_penalty, p.repeat_last_n) = (1.1, 0)), Some(40));
    }

    #[test]
    fn plain_greedy_means_no_penalty_reaches_the_logits() {
        let greedy = |f: fn(&mut SamplingParams)| {
            let mut p = SamplingParams { temperature: 0.0, ..SamplingParams::default() };
            f(&mut p);
            let mut s = Sampler::new(p);
            // Token 1 is the argmax; a penalty applied for it would move the pick to 2.
            let plain = s.is_plain_greedy();
            assert_eq!(plain, s.sample(&LOGITS, &[1]) == Sampler::greedy(&LOGITS), "is_plain_greedy disagrees with sample");
            plain
        };
        assert!(greedy(|p| p.repeat_penalty = 1.0));
        assert!(!greedy(|p| p.repeat_penalty = 1.5));
        assert!(greedy(|p| (p.repeat_penalty, p.repeat_last_n) = (1.5, 0)));
        // Penalties the sampler ignores leave the logits alone: still the plain argmax.
        assert!(greedy(|p| p.repeat_penalty = f32::NAN));
        assert!(greedy(|p| p.repeat_penalty = 0.0));
    }

    #[test]
    fn greedy_picks_argmax_lowest_index_on_ties() {
        assert_eq!(Sampler::greedy(&LOGITS), 1);
        assert_eq!(Sampler::greedy(&[1.0, 3.0, 3.0, 2.0]), 1);
        let mut s = Sampler::new(SamplingParams::greedy());
        assert_eq!(s.sample(&LOGITS, &[]), 1);
        assert_eq!(s.sample(&[1.0, 3.0, 3.0, 2.0], &[]), 1);
    }

    #[test]
    fn top_k_one_equals_greedy() {
        let params = SamplingParams { top_k: 1, ..filters_off(1.5, 7) };
        assert!(run(params, &LOGITS, 200).iter().all(|&t| t == Sampler::greedy(&LOGITS)));
    }

    #[test]
    fn same_seed_same_sequence_different_seed_differs() {
        let a = run(filters_off(1.0, 42), &LOGITS, 100);
        let b = run(filters_off(1.0, 42), &LOGITS, 100);
        let c = run(filters_off(1.0, 43), &LOGITS, 100);
        assert_eq!(a, b);
        assert_ne!(a, c);
        let mut s = Sampler::new(filters_off(1.0, 43));
        s.reseed(42);
        assert_eq!((0..100).map(|_| s.sample(&LOGITS, &[])).collect::<Vec<_>>(), a);
    }

    /// The distinct tokens drawn in 2000 samples.
    fn distinct(params: SamplingParams, logits: &[f32]) -> Vec<u32> {
        let mut v = run(params, logits, 2000);
        v.sort_unstable();
        v.dedup();
        v
    }

    /// Probabilities 0.5, 0.25, 0.125, 0.0625, 0.0625 at temperature 1.
    fn halving_logits() -> Vec<f32> {
        [0.5f32, 0.25, 0.125, 0.0625, 0.0625].iter().map(|p| p.ln()).collect()
    }

    #[test]
    fn top_p_cuts_after_crossing_token() {
        let seen = |top_p| distinct(SamplingParams { top_p, ..filters_off(1.0, 1) }, &halving_logits());
        assert_eq!(seen(0.5), [0]); // 0.5 reaches 0.5 exactly
        assert_eq!(seen(0.6), [0, 1]);
        assert_eq!(seen(0.75), [0, 1]);
        assert_eq!(seen(0.8), [0, 1, 2]);
        assert_eq!(seen(0.0), [0]); // always keeps one
        assert_eq!(seen(1.0), [0, 1, 2, 3, 4]);
    }

    #[test]
    fn min_p_cuts_relative_to_top() {
        let seen = |min_p, temp| distinct(SamplingParams { min_p, ..filters_off(temp, 1) }, &halving_logits());
        assert_eq!(seen(0.3, 1.0), [0, 1]); // 0.25 >= 0.15 > 0.125
        assert_eq!(seen(0.2, 1.0), [0, 1, 2]);
        assert_eq!(seen(0.9, 1.0), [0]);
        // Applied before temperature: a high temperature does not bring cut tokens back.
        assert_eq!(seen(0.3, 5.0), [0, 1]);
    }

    #[test]
    fn distribution_is_what_sample_draws_from() {
        // top-p 0.6 keeps tokens 0 and 1 (0.5 + 0.25), renormalized to 2/3 and 1/3.
        let mut s = Sampler::new(SamplingParams { top_p: 0.6, ..filters_off(1.0, 9) });
        let d = s.distribution(&halving_logits(), &[]);
        assert_eq!(d.entries().len(), 2);
        assert!((d.prob(0) - 2.0 / 3.0).abs() < 1e-7 && (d.prob(1) - 1.0 / 3.0).abs() < 1e-7, "{d:?}");
        assert_eq!(d.prob(2), 0.0);
        // Temperature 2 flattens: weights 0.5^(1/2) and 0.25^(1/2).
        let mut s = Sampler::new(SamplingParams { top_p: 0.6, ..filters_off(2.0, 9) });
        let d = s.distribution(&halving_logits(), &[]);
        let (a, b) = (0.5f64.sqrt(), 0.25f64.sqrt());
        assert!((d.prob(0) - a / (a + b)).abs() < 1e-7, "{d:?}");
        // Greedy is one token, after the repetition penalty.
        let params = SamplingParams { repeat_penalty: 1.5, repeat_last_n: 4, ..SamplingParams::greedy() };
        let d = Sampler::new(params).distribution(&[3.0, 2.5, -1.0], &[0]);
        assert_eq!(d, TokenProbs::one_hot(1));
        // Sample frequencies follow the distribution (same filters, same chain).
        let params = SamplingParams { top_k: 5, min_p: 0.1, ..filters_off(0.7, 77) };
        let want = Sampler::new(params.clone()).distribution(&LOGITS, &[]);
        let n = 100_000;
        let mut counts = [0usize; 8];
        for t in run(params, &LOGITS, n) {
            counts[t as usize] += 1;
        }
        for (id, c) in counts.iter().enumerate() {
            let e = want.prob(id as u32) * n as f64;
            assert!((*c as f64 - e).abs() <= 5.0 * e.sqrt().max(1.0), "token {id}: {c} drawn, {e} expected");
        }
    }

    #[test]
    fn token_probs_from_weights_and_draw() {
        assert_eq!(TokenProbs::from_weights([(3, 0.0), (4, f64::NAN)]), None);
        let d = TokenProbs::from_weights([(3, 1.0), (4, 3.0), (5, 0.0)]).unwrap();
        assert_eq!(d.entries(), &[(4, 0.75), (3, 0.25)]);
        let mut rng = ChaCha8Rng::seed_from_u64(1);
        let fours = (0..10_000).filter(|_| d.draw(&mut rng) == 4).count();
        assert!((7_300..7_700).contains(&fours), "{fours}");
    }

    #[test]
    fn repeat_penalty_changes_the_pick() {
        let logits = [3.0f32, 2.5, -1.0, 1.0];
        let params = SamplingParams { repeat_penalty: 1.5, repeat_last_n: 4, ..SamplingParams::greedy() };
        let mut s = Sampler::new(params.clone());
        assert_eq!(s.sample(&logits, &[]), 0);
        assert_eq!(s.sample(&logits, &[0]), 1); // 3.0 / 1.5 = 2.0 < 2.5
        assert_eq!(s.sample(&logits, &[0, 0, 0, 1]), 0); // both penalized once: 2.0 vs 1.67
                                                         // Outside the window: no effect. Out-of-vocab ids are ignored.
        assert_eq!(s.sample(&logits, &[0, 3, 3, 3, 3, 99]), 0);
        // Negative logits get more negative (multiplied).
        let neg = [-1.0f32, -1.2];
        assert_eq!(s.sample(&neg, &[0]), 1);
        let mut off = Sampler::new(SamplingParams { repeat_last_n: 0, ..params });
        assert_eq!(off.sample(&logits, &[0]), 0);
    }

    #[test]
    fn temperature_one_matches_softmax_frequencies() {
        let logits = [1.0f32, 2.0, 0.5, 3.0, -1.0, 0.0];
        let max = 3.0f64;
        let w: Vec<f64> = logits.iter().map(|&l| (l as f64 - max).exp()).collect();
        let z: f64 = w.iter().sum();
        let n = 200_000usize;
        let mut counts = [0usize; 6];
        for t in run(filters_off(1.0, 1234), &logits, n) {
            counts[t as usize] += 1;
        }
        let chi2: f64 = counts
            .iter()
            .zip(&w)
            .map(|(&c, &wi)| {
                let e = n as f64 * wi / z;
                (c as f64 - e).powi(2) / e
            })
            .sum();
        // 5 degrees of freedom: P(chi2 > 30) < 2e-5. Seeded, so it cannot flake.
        assert!(chi2 < 30.0, "chi2 = {chi2}, counts = {counts:?}");
    }

    #[test]
    fn low_temperature_sharpens() {
        let mut counts = [0usize; 8];
        for t in run(filters_off(0.05, 3), &LOGITS, 2000) {
            counts[t as usize] += 1;
        }
        // exp((1.9 - 2.0) / 0.05) = e^-2: token 2 still appears; the next, 1.5, has
        // weight e^-10, so about 0.1 draws in 2000.
        assert!(counts[1] > 1600 && counts[2] > 100, "{counts:?}");
        assert!(counts[1] + counts[2] >= 1997, "{counts:?}");
    }

    #[test]
    fn nan_and_inf_logits_do_not_panic() {
        let nan = f32::NAN;
        let ninf = f32::NEG_INFINITY;
        assert_eq!(Sampler::greedy(&[nan, 1.0, nan]), 1);
        assert_eq!(Sampler::greedy(&[nan, nan]), 0);
        assert_eq!(Sampler::greedy(&[]), 0);
        for params in [SamplingParams::default(), filters_off(1.0, 5), SamplingParams::greedy()] {
            let mut s = Sampler::new(params);
            assert_eq!(s.sample(&[nan, ninf, nan], &[0, 1]), 0);
            assert_eq!(s.sample(&[], &[3]), 0);
            for _ in 0..50 {
                assert_eq!(s.sample(&[nan, 0.5, ninf, nan], &[1]), 1);
                assert_eq!(s.sample(&[0.0, f32::INFINITY, 1e30, nan], &[]), 1);
                let t = s.sample(&[ninf, f32::INFINITY, f32::INFINITY], &[]);
                assert!(t == 1 || t == 2);
            }
        }
        // Pathological parameters must not panic either.
        let mut s = Sampler::new(SamplingParams {
            temperature: f32::NAN,
            top_p: f32::NAN,
            min_p: f32::NAN,
            repeat_penalty: f32::NAN,
            ..SamplingParams::default()
        });
        let _ = s.sample(&LOGITS, &[1, 2]);
        let mut s = Sampler::new(SamplingParams { temperature: 1e-30, top_k: 100, ..SamplingParams::default() });
        assert_eq!(s.sample(&LOGITS, &[]), 1);
    }

    fn feed(stops: &[&str], pieces: &[&str]) -> (Vec<String>, bool, String) {
        let mut ss = StopStrings::new(stops.iter().copied());
        let mut out = Vec::new();
        let mut stopped = false;
        for p in pieces {
            let o = ss.push(p);
            out.push(o.text);
            stopped |= o.stopped;
        }
        let rest = ss.finish();
        (out, stopped, rest)
    }

    #[test]
    fn stop_string_split_across_pieces() {
        let (out, stopped, rest) = feed(&["</s>", "User:"], &["Hello", " wor", "ld<", "/", "s>", "ignored"]);
        assert_eq!(out, ["Hello", " wor", "ld", "", "", ""]);
        assert!(stopped);
        assert_eq!(rest, "");

        let (out, stopped, _) = feed(&["User:"], &["Sure.\nUs", "er: next"]);
        assert_eq!(out, ["Sure.\n", ""]);
        assert!(stopped);
    }

    #[test]
    fn held_back_text_is_released_when_it_diverges_or_at_the_end() {
        let (out, stopped, rest) = feed(&["</s>"], &["a <", "/b> c", " </"]);
        assert_eq!(out, ["a ", "</b> c", " "]);
        assert!(!stopped);
        assert_eq!(rest, "</");
    }

    #[test]
    fn stop_strings_edge_cases() {
        // Text before the stop in the same piece is emitted; the stop itself is not.
        let (out, stopped, _) = feed(&["STOP"], &["abcSTOPdef"]);
        assert_eq!(out, ["abc"]);
        assert!(stopped);
        // The earliest match wins across different stop strings.
        let (out, _, _) = feed(&["bc", "abcd"], &["xabcd"]);
        assert_eq!(out, ["x"]);
        let (out, _, _) = feed(&["cd", "abcdef"], &["xabcd"]);
        assert_eq!(out, ["xab"]);
        // Overlapping prefixes: "aab" ends with "ab", a prefix of "abc".
        let (out, stopped, _) = feed(&["abc"], &["aab", "c"]);
        assert_eq!(out, ["a", ""]);
        assert!(stopped);
        // Multibyte text around and inside stop strings.
        let (out, stopped, _) = feed(&["→END"], &["héllo →", "EN", "D!"]);
        assert_eq!(out, ["héllo ", "", ""]);
        assert!(stopped);
        // No stop strings (or only empty ones): everything passes straight through.
        let (out, stopped, rest) = feed(&[""], &["a", "b"]);
        assert_eq!((out, stopped, rest), (vec!["a".to_string(), "b".to_string()], false, String::new()));
    }
}
