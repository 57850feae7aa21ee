//! Forward passes of the teacher with one part changed, scored against the unchanged pass on
//! the same tokens: perturbation sensitivity (a layer's residual contribution scaled, noised
//! or removed) and ablation (one attention head, or one FFN block, zeroed).
//!
//! Each pass is scored two ways: the mean per-token KL(base ‖ perturbed) of the next-token
//! distribution over the full vocabulary, and the mean next-token cross-entropy, whose
//! difference from the base pass's is the ablation's loss increase. Both are computed with the
//! same arithmetic as the base pass's, so a pass that changes nothing scores exactly 0.

use nexus_runtime::eval::row_nll;
use nexus_runtime::kv_cache::KvCache;
use nexus_runtime::model::{Logits, Model, Probe};
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use rayon::prelude::*;

use super::ProfileError;

/// What one pass changes.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Perturbation {
    /// Nothing: the control that must score 0.
    None,
    /// Layer `l`'s attention and FFN outputs (its whole residual contribution) times a factor.
    Scale(usize, f32),
    /// Gaussian noise of `σ = rel × row RMS` added to each row of layer `l`'s attention and
    /// FFN outputs; the pass's noise stream is fixed by the profile's seed, the layer and the
    /// sequence.
    Noise(usize, f32),
    /// Layer `l`'s residual contribution removed (both blocks zeroed).
    Remove(usize),
    /// Attention head `h` of layer `l` zeroed before the output projection.
    Head(usize, usize),
    /// Layer `l`'s FFN output zeroed.
    Ffn(usize),
}

/// Mean scores of one perturbation over the sequences.
#[derive(Debug, Clone, Copy, PartialEq, Default)]
pub struct Score {
    /// Mean per-token KL(base ‖ perturbed), nats.
    pub kl: f64,
    /// Mean next-token cross-entropy, nats.
    pub loss: f64,
}

/// Scores of a set of perturbations on some tokens.
#[derive(Debug, Clone, PartialEq)]
pub struct Scores {
    /// The unchanged pass's mean next-token cross-entropy.
    pub base_loss: f64,
    /// One per perturbation, in the order given.
    pub scores: Vec<Score>,
    /// Tokens the passes ran on.
    pub tokens: usize,
}

struct PerturbProbe {
    what: Perturbation,
    head_dim: usize,
    q_dim: usize,
    n_embd: usize,
    rng: ChaCha8Rng,
}

impl PerturbProbe {
    /// Applies a layer-wide perturbation to one block's `n × n_embd` residual contribution.
    fn contribution(&mut self, layer: usize, out: &mut [f32]) {
        match self.what {
            Perturbation::Scale(l, s) if l == layer => out.iter_mut().for_each(|v| *v *= s),
            Perturbation::Remove(l) if l == layer => out.fill(0.0),
            Perturbation::Noise(l, rel) if l == layer => {
                for row in out.chunks_exact_mut(self.n_embd) {
                    let rms = (row
                        .iter()
                        .map(|&v| f64::from(v) * f64::from(v))
                        .sum::<f64>()
                        / row.len() as f64)
                        .sqrt();
                    let sigma = f64::from(rel) * rms;
                    for v in row.iter_mut() {
                        *v += (sigma * normal(&mut self.rng)) as f32;
                    }
                }
            }
            _ => {}
        }
    }
}

impl Probe for PerturbProbe {
    fn attn_heads(&mut self, layer: usize, heads: &mut [f32]) {
        if let Perturbation::Head(l, h) = self.what {
            if l == layer {
                let (lo, hi) = (h * self.head_dim, (h + 1) * self.head_dim);
                heads
                    .chunks_exact_mut(self.q_dim)
                    .for_each(|row| row[lo..hi].fill(0.0));
            }
        }
    }

    fn attn_out(&mut self, layer: usize, out: &mut [f32]) {
        self.contribution(layer, out);
    }

    fn ffn_out(&mut self, layer: usize, out: &mut [f32]) {
        if self.what == Perturbation::Ffn(layer) {
            out.fill(0.0);
        } else {
            self.contribution(layer, out);
        }
    }
}

/// A standard normal draw (Box–Muller; one of the pair is enough at these sizes).
fn normal(rng: &mut ChaCha8Rng) -> f64 {
    let u1: f64 = 1.0 - rng.gen::<f64>();
    let u2: f64 = rng.gen();
    (-2.0 * u1.ln()).sqrt() * (std::f64::consts::TAU * u2).cos()
}

/// Max and ln Σ exp(l - max) of a row (f32 exponentials summed in f64, as the runtime's
/// perplexity does).
fn log_norm(row: &[f32]) -> (f32, f64) {
    let max = row.iter().copied().fold(f32::NEG_INFINITY, f32::max);
    let sum: f64 = row.iter().map(|&l| f64::from((l - max).exp())).sum();
    (max, sum.ln())
}

/// One sequence's unchanged pass, kept to score the perturbed passes against.
struct Base {
    logits: Vec<f32>,
    /// Per row: (max, ln Σ exp) of the base logits.
    norms: Vec<(f32, f64)>,
    /// Per row and id: the base probability, f32.
    probs: Vec<f32>,
}

impl Base {
    fn new(logits: Vec<f32>, n_vocab: usize) -> Self {
        let norms: Vec<(f32, f64)> = logits.par_chunks_exact(n_vocab).map(log_norm).collect();
        let mut probs = vec![0f32; logits.len()];
        probs
            .par_chunks_exact_mut(n_vocab)
            .zip(logits.par_chunks_exact(n_vocab))
            .zip(&norms)
            .for_each(|((p, l), &(max, ln_sum))| {
                p.iter_mut()
                    .zip(l)
                    .for_each(|(p, &l)| *p = (f64::from(l - max) - ln_sum).exp() as f32);
            });
        Base {
            logits,
            norms,
            probs,
        }
    }

    /// Σ over rows of KL(base ‖ other) for the rows of `other`.
    fn kl_sum(&self, other: &[f32], n_vocab: usize) -> f64 {
        other
            .par_chunks_exact(n_vocab)
            .enumerate()
            .map(|(r, row)| {
                let (bmax, bln) = self.norms[r];
                let (omax, oln) = log_norm(row);
                let base = &self.logits[r * n_vocab..(r + 1) * n_vocab];
                let probs = &self.probs[r * n_vocab..(r + 1) * n_vocab];
                let mut kl = 0f64;
                for ((&p, &b), &o) in probs.iter().zip(base).zip(row) {
                    let lb = f64::from(b - bmax) - bln;
                    let lo = f64::from(o - omax) - oln;
                    kl += f64::from(p) * (lb - lo);
                }
                // Rounding can leave -1e-17 where the distributions agree.
                kl.max(0.0)
            })
            .sum()
    }
}

/// Σ NLL of each next token over a sequence's logits (rows `0..n-1` predict tokens `1..n`).
fn nll_sum(logits: &[f32], tokens: &[u32], n_vocab: usize) -> f64 {
    logits
        .par_chunks_exact(n_vocab)
        .zip(&tokens[1..])
        .map(|(row, &t)| row_nll(row, t))
        .sum()
}

/// Runs every perturbation on each sequence of `tokens` (cut into `n_ctx`-token sequences,
/// each from an empty cache) and scores it against the unchanged pass. `progress(done,
/// total)` counts passes.
pub fn run(
    model: &Model,
    tokens: &[u32],
    n_ctx: usize,
    perturbations: &[Perturbation],
    seed: u64,
    progress: &mut dyn FnMut(usize, usize),
) -> Result<Scores, ProfileError> {
    let c = &model.config;
    let n_vocab = c.n_vocab;
    let sequences: Vec<&[u32]> = tokens.chunks(n_ctx).filter(|s| s.len() >= 2).collect();
    let total = sequences.len() * (perturbations.len() + 1);
    let mut cache = model.new_cache(n_ctx);
    let (mut base_nll, mut kl, mut nll) = (
        0f64,
        vec![0f64; perturbations.len()],
        vec![0f64; perturbations.len()],
    );
    let (mut rows, mut predicted) = (0usize, 0usize);
    for (s, seq) in sequences.iter().enumerate() {
        let base = forward(model, &mut cache, seq, &mut NoChange)?;
        base_nll += nll_sum(&base, seq, n_vocab);
        let base = Base::new(base, n_vocab);
        progress(s * (perturbations.len() + 1) + 1, total);
        for (i, &what) in perturbations.iter().enumerate() {
            let mut rng = ChaCha8Rng::seed_from_u64(seed);
            // One noise stream per (sequence, layer): passes are reproducible one by one.
            let layer = match what {
                Perturbation::Noise(l, _) => l as u64,
                _ => 0,
            };
            rng.set_stream((s as u64) << 32 | layer);
            let mut probe = PerturbProbe {
                what,
                head_dim: c.head_dim,
                q_dim: c.q_dim(),
                n_embd: c.n_embd,
                rng,
            };
            let logits = forward(model, &mut cache, seq, &mut probe)?;
            kl[i] += base.kl_sum(&logits, n_vocab);
            nll[i] += nll_sum(&logits, seq, n_vocab);
            progress(s * (perturbations.len() + 1) + i + 2, total);
        }
        rows += seq.len();
        predicted += seq.len() - 1;
    }
    if predicted == 0 {
        return Err(ProfileError::Config(format!(
            "{} tokens give no next-token prediction",
            tokens.len()
        )));
    }
    let scores = kl
        .iter()
        .zip(&nll)
        .map(|(k, l)| Score {
            kl: k / rows as f64,
            loss: l / predicted as f64,
        })
        .collect();
    Ok(Scores {
        base_loss: base_nll / predicted as f64,
        scores,
        tokens: rows,
    })
}

struct NoChange;
impl Probe for NoChange {}

fn forward(
    model: &Model,
    cache: &mut KvCache,
    seq: &[u32],
    probe: &mut (dyn Probe + Send),
) -> Result<Vec<f32>, ProfileError> {
    cache.clear();
    Ok(model.forward_probed(seq, cache, Logits::All, probe)?)
}
