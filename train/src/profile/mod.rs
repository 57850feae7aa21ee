//! Stage 1 of NIWT distillation, `distill profile`: run the frozen (quantized) teacher on
//! calibration tokens and record, per layer, what the later stages need.
//!
//! Two kinds of passes, over sequences of `n_ctx` tokens each run from an empty KV cache:
//!
//! 1. **Activation pass** over the first `max_tokens` tokens, through a [`Probe`] that streams
//!    (never holding more than one sequence of activations) the residual stream after each
//!    layer and each FFN's inner activation `silu(gate)·up` into
//!    - per-channel statistics and per-layer summaries ([`stats`]), and
//!    - the residual stream's covariance in f64, eigen-decomposed at the end into the
//!      principal subspace that holds `variance_fraction` of the variance ([`covariance`]);
//!      the first `sink_tokens` positions of each sequence (the attention sink, whose
//!      activations are two orders of magnitude larger) are left out of it;
//!
//!    it also gives the teacher's mean next-token loss on those tokens.
//! 2. **Perturbation passes** over the first `ablation_tokens` tokens ([`perturb`]): per layer,
//!    its residual contribution (attention and FFN outputs) scaled by `scale`, noised (σ =
//!    `noise` × each row's RMS, seeded) and removed, scored by the mean per-token
//!    KL(base ‖ perturbed) of the next-token distribution; and every attention head and every
//!    FFN block zeroed, scored by the increase of the next-token loss.
//!
//! The importance scores pruning reads ([`Importance`]): `layers` is the KL of *removing*
//! the layer (not the scale-down KL), `heads` the head-ablation loss increase, `ffn_channels`
//! the mean |silu(gate)·up| of each FFN channel, `embd_channels` the mean |x| of each
//! residual channel averaged over the residual streams after every layer.
//!
//! Cost: one forward pass per calibration token, plus `1 + n_layer·(n_head + 4)` passes over
//! each ablation token; the file layout is in [`file`], the report in [`report`].

pub mod covariance;
pub mod file;
pub mod perturb;
pub mod report;
pub mod stats;
#[cfg(test)]
mod tests;

use std::path::PathBuf;
use std::time::Instant;

use nexus_runtime::model::{Logits, Model, ModelError, Probe};
use rayon::prelude::*;
use serde::{Deserialize, Serialize};

use crate::importance::Importance;
use crate::plot::PlotError;
use covariance::CovarianceAccumulator;
use perturb::Perturbation;
use stats::ChannelAccumulator;
pub use stats::{ActivationSummary, ChannelStats};

/// What a profile run measures and on how many tokens.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ProfileConfig {
    /// Tokens per sequence; each sequence runs from an empty cache.
    pub n_ctx: usize,
    /// Calibration tokens for statistics, spectra and the base loss (the rest is ignored).
    pub max_tokens: usize,
    /// Tokens (the first ones) for the perturbation and ablation passes.
    pub ablation_tokens: usize,
    /// Share of the residual-stream variance the principal subspace keeps, in (0, 1].
    pub variance_fraction: f64,
    /// Factor a layer's residual contribution is scaled by for the scale sensitivity.
    pub scale: f32,
    /// Noise σ relative to each row's RMS for the noise sensitivity.
    pub noise: f32,
    /// Seeds the noise.
    pub seed: u64,
    /// Leading positions of each sequence left out of the covariances (the statistics keep
    /// them): a sequence's first token is an attention sink whose residual stream is ~100×
    /// larger than any other's (SmolLM2-135M, layer 15: RMS 950 against 7–9) and would alone
    /// fill the principal subspace (k = 1 in layers 11–25 with it included).
    pub sink_tokens: usize,
}

impl Default for ProfileConfig {
    fn default() -> Self {
        ProfileConfig {
            n_ctx: 256,
            max_tokens: 4096,
            ablation_tokens: 512,
            variance_fraction: 0.95,
            scale: 0.5,
            noise: 0.1,
            seed: 0,
            sink_tokens: 1,
        }
    }
}

/// What the profile found in one teacher layer.
#[derive(Debug, Clone, PartialEq)]
pub struct LayerProfile {
    /// Eigenvalues of the covariance of the residual stream after this layer, descending.
    pub eigenvalues: Vec<f64>,
    /// The principal subspace: `k` orthonormal rows of `n_embd`.
    pub basis: Vec<f32>,
    pub k: usize,
    /// Mean of the residual stream after this layer (`n_embd`).
    pub mean: Vec<f32>,
    /// Mean per-token KL(base ‖ perturbed) with the layer's contribution scaled by `scale`.
    pub sensitivity_scale: f64,
    /// The same with noise of relative size `noise` added.
    pub sensitivity_noise: f64,
    /// The same with the contribution removed (the layer skipped).
    pub sensitivity_remove: f64,
    /// Next-token loss increase with each attention head zeroed (`n_head`).
    pub head_ablation: Vec<f64>,
    /// Next-token loss increase with the FFN block zeroed.
    pub ffn_ablation: f64,
    /// The residual stream after this layer, per channel (`n_embd`).
    pub residual: ChannelStats,
    pub residual_summary: ActivationSummary,
    /// The FFN's inner activation `silu(gate)·up`, per channel (`n_ff`).
    pub ffn: ChannelStats,
    pub ffn_summary: ActivationSummary,
}

/// Seconds spent per stage.
#[derive(Debug, Clone, Copy, PartialEq, Default, Serialize, Deserialize)]
pub struct Timings {
    pub activations: f64,
    pub spectra: f64,
    pub perturbations: f64,
}

/// A teacher's profile.
#[derive(Debug, Clone, PartialEq)]
pub struct Profile {
    /// The teacher's file name.
    pub teacher: String,
    pub n_embd: usize,
    pub n_layer: usize,
    pub n_head: usize,
    pub n_ff: usize,
    /// Calibration tokens the activation pass ran.
    pub tokens: usize,
    /// Tokens the perturbation passes ran.
    pub ablation_tokens: usize,
    /// The teacher's mean next-token loss (nats) over the calibration tokens.
    pub base_loss: f64,
    /// The same over the ablation tokens: what ablation loss increases are relative to.
    pub ablation_base_loss: f64,
    pub config: ProfileConfig,
    pub layers: Vec<LayerProfile>,
    pub importance: Importance,
    pub timings: Timings,
}

#[derive(Debug, thiserror::Error)]
pub enum ProfileError {
    #[error("profile configuration: {0}")]
    Config(String),
    #[error("teacher forward pass: {0}")]
    Model(#[from] ModelError),
    #[error("{path}: {source}")]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("{path}: not a valid profile: {what}")]
    Format { path: PathBuf, what: String },
    #[error(transparent)]
    Plot(#[from] PlotError),
}

/// Streams the activation pass's statistics, one accumulator per layer.
struct ActivationProbe {
    residual: Vec<ChannelAccumulator>,
    covariance: Vec<CovarianceAccumulator>,
    ffn: Vec<ChannelAccumulator>,
    n_embd: usize,
    /// Positions of each sequence the covariances skip.
    sink: usize,
    /// Rows of the current sequence already through every layer (the forward pass hands a
    /// long sequence over in batches).
    seen: usize,
}

impl Probe for ActivationProbe {
    fn ffn_inner(&mut self, layer: usize, act: &mut [f32]) {
        self.ffn[layer].add(act);
    }

    fn residual(&mut self, layer: usize, x: &[f32]) {
        // Both walk the same rows; the covariance's GEMM is the heavy one and runs on the
        // pool itself, so the two are not joined.
        self.residual[layer].add(x);
        let rows = x.len() / self.n_embd;
        let skip = self.sink.saturating_sub(self.seen).min(rows);
        self.covariance[layer].add(&x[skip * self.n_embd..]);
        if layer + 1 == self.residual.len() {
            self.seen += rows;
        }
    }
}

/// Profiles `teacher` on `tokens` (already tokenized, e.g. with BOS where the model wants it).
/// `progress(stage, done, total)` reports each stage: "activations" (sequences), "spectra"
/// (layers) and "perturbations" (forward passes).
pub fn profile(
    teacher: &Model,
    tokens: &[u32],
    cfg: &ProfileConfig,
    progress: &mut dyn FnMut(&str, usize, usize),
) -> Result<Profile, ProfileError> {
    check_config(cfg)?;
    let c = &teacher.config;
    let tokens = &tokens[..tokens.len().min(cfg.max_tokens)];
    if tokens.len() < 2 {
        return Err(ProfileError::Config(format!(
            "{} calibration tokens: at least 2 are needed",
            tokens.len()
        )));
    }
    if let Some(&id) = tokens.iter().find(|&&id| id as usize >= c.n_vocab) {
        return Err(ProfileError::Config(format!(
            "token id {id} is outside the teacher's vocabulary of {}",
            c.n_vocab
        )));
    }

    // Stage 1: activation statistics, covariances, base loss.
    let t0 = Instant::now();
    let mut probe = ActivationProbe {
        residual: (0..c.n_layer)
            .map(|_| ChannelAccumulator::new(c.n_embd))
            .collect(),
        covariance: (0..c.n_layer)
            .map(|_| CovarianceAccumulator::new(c.n_embd))
            .collect(),
        ffn: (0..c.n_layer)
            .map(|_| ChannelAccumulator::new(c.n_ff))
            .collect(),
        n_embd: c.n_embd,
        sink: cfg.sink_tokens,
        seen: 0,
    };
    let sequences: Vec<&[u32]> = tokens.chunks(cfg.n_ctx).filter(|s| s.len() >= 2).collect();
    let mut cache = teacher.new_cache(cfg.n_ctx);
    let (mut nll, mut predicted, mut seen) = (0f64, 0usize, 0usize);
    for (i, seq) in sequences.iter().enumerate() {
        cache.clear();
        probe.seen = 0;
        let logits = teacher.forward_probed(seq, &mut cache, Logits::All, &mut probe)?;
        nll += logits
            .par_chunks_exact(c.n_vocab)
            .zip(&seq[1..])
            .map(|(row, &t)| nexus_runtime::eval::row_nll(row, t))
            .sum::<f64>();
        predicted += seq.len() - 1;
        seen += seq.len();
        progress("activations", i + 1, sequences.len());
    }
    let activations = t0.elapsed().as_secs_f64();

    // Stage 2: eigen-decompositions, layers in parallel.
    let t1 = Instant::now();
    progress("spectra", 0, c.n_layer);
    let spectra: Vec<_> = probe
        .covariance
        .par_iter()
        .map(|acc| acc.spectrum(cfg.variance_fraction))
        .collect();
    progress("spectra", c.n_layer, c.n_layer);
    let spectra_s = t1.elapsed().as_secs_f64();

    // Stage 3: perturbation and ablation passes.
    let t2 = Instant::now();
    let ablation = &tokens[..tokens.len().min(cfg.ablation_tokens)];
    let per_layer = 4 + c.n_head;
    let mut perturbations = Vec::with_capacity(c.n_layer * per_layer);
    for l in 0..c.n_layer {
        perturbations.extend([
            Perturbation::Scale(l, cfg.scale),
            Perturbation::Noise(l, cfg.noise),
            Perturbation::Remove(l),
            Perturbation::Ffn(l),
        ]);
        perturbations.extend((0..c.n_head).map(|h| Perturbation::Head(l, h)));
    }
    let scores = perturb::run(
        teacher,
        ablation,
        cfg.n_ctx,
        &perturbations,
        cfg.seed,
        &mut |done, total| progress("perturbations", done, total),
    )?;
    let perturbations_s = t2.elapsed().as_secs_f64();

    let mut layers = Vec::with_capacity(c.n_layer);
    for (l, spectrum) in spectra.into_iter().enumerate() {
        let s = &scores.scores[l * per_layer..(l + 1) * per_layer];
        let (residual, residual_summary) = probe.residual[l].finish();
        let (ffn, ffn_summary) = probe.ffn[l].finish();
        layers.push(LayerProfile {
            eigenvalues: spectrum.eigenvalues,
            basis: spectrum.basis,
            k: spectrum.k,
            mean: spectrum.mean,
            sensitivity_scale: s[0].kl,
            sensitivity_noise: s[1].kl,
            sensitivity_remove: s[2].kl,
            ffn_ablation: s[3].loss - scores.base_loss,
            head_ablation: s[4..].iter().map(|h| h.loss - scores.base_loss).collect(),
            residual,
            residual_summary,
            ffn,
            ffn_summary,
        });
    }
    let importance = importance_of(&layers, c.n_embd);
    let teacher_name = teacher
        .file()
        .path()
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    Ok(Profile {
        teacher: teacher_name,
        n_embd: c.n_embd,
        n_layer: c.n_layer,
        n_head: c.n_head,
        n_ff: c.n_ff,
        tokens: seen,
        ablation_tokens: scores.tokens,
        base_loss: nll / predicted as f64,
        ablation_base_loss: scores.base_loss,
        config: cfg.clone(),
        layers,
        importance,
        timings: Timings {
            activations,
            spectra: spectra_s,
            perturbations: perturbations_s,
        },
    })
}

fn check_config(cfg: &ProfileConfig) -> Result<(), ProfileError> {
    let bad = |what: String| Err(ProfileError::Config(what));
    if cfg.n_ctx < 2 {
        return bad(format!("n_ctx {} must be at least 2", cfg.n_ctx));
    }
    if cfg.sink_tokens >= cfg.n_ctx {
        return bad(format!(
            "sink_tokens {} leaves nothing of {}-token sequences for the covariances",
            cfg.sink_tokens, cfg.n_ctx
        ));
    }
    if cfg.ablation_tokens < 2 {
        return bad(format!(
            "ablation_tokens {} must be at least 2",
            cfg.ablation_tokens
        ));
    }
    if !(cfg.variance_fraction > 0.0 && cfg.variance_fraction <= 1.0) {
        return bad(format!(
            "variance_fraction {} must be in (0, 1]",
            cfg.variance_fraction
        ));
    }
    if !cfg.scale.is_finite() {
        return bad(format!("scale {} must be finite", cfg.scale));
    }
    if !(cfg.noise.is_finite() && cfg.noise >= 0.0) {
        return bad(format!(
            "noise {} must be finite and not negative",
            cfg.noise
        ));
    }
    Ok(())
}

/// The importance scores pruning reads, from the layers' measurements.
fn importance_of(layers: &[LayerProfile], n_embd: usize) -> Importance {
    let mut embd = vec![0f64; n_embd];
    for l in layers {
        embd.iter_mut()
            .zip(&l.residual.mean_abs)
            .for_each(|(e, &m)| *e += f64::from(m));
    }
    let n = layers.len().max(1) as f64;
    Importance {
        layers: layers.iter().map(|l| l.sensitivity_remove as f32).collect(),
        heads: layers
            .iter()
            .map(|l| l.head_ablation.iter().map(|&h| h as f32).collect())
            .collect(),
        ffn_channels: layers.iter().map(|l| l.ffn.mean_abs.clone()).collect(),
        embd_channels: embd.iter().map(|&e| (e / n) as f32).collect(),
    }
}
