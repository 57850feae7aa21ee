//! One micro-batch's contribution to a step: teacher forward, student forward, the fused head
//! and loss (CE + T²·KL in vocabulary chunks), the anchoring terms on the residual stream, and
//! the student's backward — gradients accumulate into the step's buffers.

use std::time::Instant;

use serde::{Deserialize, Serialize};

use crate::anchor::{sink_mask, Anchor};
use crate::config::TrainSection;
use crate::data::Batch;
use crate::engine::head_loss::{head_loss, LossParts, LossWeights, TeacherHead};
use crate::error::TrainError;
use crate::student::{self, Params, StudentConfig};
use crate::teacher::{Teacher, TeacherOut};
use super::teacher_cache::TeacherCache;

/// Sums over a step's micro-batches (means are taken when the step is logged).
#[derive(Debug, Clone, Copy, Default)]
pub struct StepSums {
    /// Σ micro-batch loss (α·CE + β·T²·KL + γ·anchor), each a mean over its rows.
    pub loss: f64,
    pub ce: f64,
    pub kl: f64,
    /// Σ over micro-batches of the mean over anchors of each anchor's scaled distance.
    pub anchor: f64,
    pub agree: usize,
    pub rows: usize,
    pub micro_batches: usize,
    pub phases: PhaseSeconds,
}

/// Where a step's time went (seconds, summed over its micro-batches).
#[derive(Debug, Clone, Copy, Default, PartialEq, Serialize, Deserialize)]
pub struct PhaseSeconds {
    /// The teacher's forward (quantized, through the runtime).
    pub teacher: f64,
    pub student_forward: f64,
    /// Both heads and the CE/KL loss with its gradient, in vocabulary chunks.
    pub head_loss: f64,
    pub anchors: f64,
    pub student_backward: f64,
    /// Clipping and AdamW.
    pub optimizer: f64,
}

impl PhaseSeconds {
    pub fn plus(&self, o: &PhaseSeconds) -> PhaseSeconds {
        PhaseSeconds {
            teacher: self.teacher + o.teacher,
            student_forward: self.student_forward + o.student_forward,
            head_loss: self.head_loss + o.head_loss,
            anchors: self.anchors + o.anchors,
            student_backward: self.student_backward + o.student_backward,
            optimizer: self.optimizer + o.optimizer,
        }
    }

    pub fn total(&self) -> f64 {
        self.teacher + self.student_forward + self.head_loss + self.anchors + self.student_backward + self.optimizer
    }
}

/// What the micro-batch step borrows.
pub struct StepInputs<'a> {
    pub cfg: &'a StudentConfig,
    pub params: &'a Params,
    pub teacher: &'a Teacher,
    pub anchors: &'a [Anchor],
    pub train: &'a TrainSection,
    /// Leading positions of every sequence kept out of anchoring (attention sinks).
    pub sink_tokens: usize,
}

impl StepInputs<'_> {
    /// The teacher layers whose residual streams a micro-batch needs, or `None` when the step
    /// needs no teacher at all (no KL term and no anchors).
    pub(super) fn teacher_layers(&self) -> Option<Vec<usize>> {
        let t = self.train;
        let anchoring = t.anchor > 0.0 && !self.anchors.is_empty();
        (t.kl > 0.0 || anchoring).then(|| if t.anchor > 0.0 { self.anchors.iter().map(|a| a.teacher_layer).collect() } else { Vec::new() })
    }
}

/// Adds one micro-batch's gradients, scaled by `grad_scale` (1 / micro-batches per step), into
/// `grads` and `anchor_grads` (one per anchor, the map's shape); the teacher's outputs come
/// through `cache`.
pub fn accumulate(
    x: &StepInputs,
    cache: &mut TeacherCache,
    batch: &Batch,
    grad_scale: f32,
    grads: &mut Params,
    anchor_grads: &mut [Vec<f32>],
    sums: &mut StepSums,
) -> Result<(), TrainError> {
    let (cfg, t) = (x.cfg, x.train);
    let n = batch.inputs.len();
    let mut clock = Instant::now();
    let mut lap = |slot: &mut f64| {
        *slot += clock.elapsed().as_secs_f64();
        clock = Instant::now();
    };
    let mut phases = PhaseSeconds::default();
    let teacher_out = match x.teacher_layers() {
        Some(layers) => Some(cache.run(x.teacher, batch, &layers)?),
        None => None,
    };

    lap(&mut phases.teacher);
    let acts = student::forward(cfg, x.params, &batch.inputs, batch.n_seq)?;
    lap(&mut phases.student_forward);
    let mut d_hidden = vec![0f32; n * cfg.n_embd];
    // The teacher's row statistics come per sequence through the cache (kept for data seen
    // again), so the loss's first pass runs the student's head only.
    let rows = match (&teacher_out, t.kl > 0.0) {
        (Some(out), true) => Some(cache.teacher_rows(x.teacher, batch, out, t.temperature, t.vocab_chunk)?),
        _ => None,
    };
    let teacher_head = teacher_out.as_ref().filter(|_| t.kl > 0.0).map(|o| TeacherHead {
        hidden: &o.hidden,
        weight: &x.teacher.head,
        n_embd: x.teacher.n_embd(),
        rows: rows.as_deref(),
    });
    let weights = LossWeights { ce: t.ce, kl: t.kl, temperature: t.temperature };
    let head = x.params.output.as_deref().unwrap_or(&x.params.embed);
    // Tied: the head's gradient is the embedding's.
    let d_head = match grads.output.as_mut() {
        Some(o) => o,
        None => &mut grads.embed,
    };
    let parts = head_loss(acts.hidden(), head, cfg.n_embd, &batch.targets, teacher_head, &weights, t.vocab_chunk, grad_scale, &mut d_hidden, d_head)?;
    lap(&mut phases.head_loss);

    let (d_residual, anchor_sum) = anchor_terms(x, batch, teacher_out.as_ref(), grad_scale, anchor_grads, |l| acts.residual(l))?;
    lap(&mut phases.anchors);
    student::backward(cfg, x.params, &acts, &d_hidden, &d_residual, grads)?;
    lap(&mut phases.student_backward);

    sums.add(&parts, t.anchor, anchor_sum, &phases);
    Ok(())
}

/// Per anchor `(student layer, gradient into the stream after it)` — `G` is where the gradient
/// lives, host or device — and the anchors' mean loss.
pub(super) type AnchorTerms<G> = (Vec<(usize, G)>, f64);

/// The anchoring terms of one micro-batch: for each anchor, its loss and the gradient it sends
/// into the student's stream after its layer (`(layer, gradient)` pairs for the backward), its
/// map's gradient added into `anchor_grads`; and the mean of the anchors' losses.
/// `student_residual(l)` gives the student's stream after layer `l`. (The CUDA engine's
/// counterpart is `cuda_step::anchor_terms`.)
fn anchor_terms<'r>(
    x: &StepInputs,
    batch: &Batch,
    teacher_out: Option<&TeacherOut>,
    grad_scale: f32,
    anchor_grads: &mut [Vec<f32>],
    student_residual: impl Fn(usize) -> &'r [f32],
) -> Result<AnchorTerms<Vec<f32>>, TrainError> {
    let (t, n) = (x.train, batch.inputs.len());
    let mut d_residual = Vec::new();
    let mut anchor_sum = 0.0;
    if let (Some(out), true) = (teacher_out, t.anchor > 0.0 && !x.anchors.is_empty()) {
        let mask = sink_mask(batch.n_seq, batch.seq_len, x.sink_tokens);
        // Each anchor's term is averaged over the anchors so γ means the same at any count.
        let weight = t.anchor * grad_scale / x.anchors.len() as f32;
        for ((a, (_, h_teacher)), d_map) in x.anchors.iter().zip(&out.residuals).zip(anchor_grads.iter_mut()) {
            let mut d_h = vec![0f32; n * x.cfg.n_embd];
            anchor_sum += a.loss_grad(student_residual(a.student_layer), h_teacher, n, Some(&mask), weight, &mut d_h, d_map)?;
            d_residual.push((a.student_layer, d_h));
        }
        anchor_sum /= x.anchors.len() as f64;
    }
    Ok((d_residual, anchor_sum))
}

impl StepSums {
    /// Adds one micro-batch: its loss parts, the anchoring weight γ and the anchors' mean loss.
    pub(super) fn add(&mut self, parts: &LossParts, anchor_weight: f32, anchor_sum: f64, phases: &PhaseSeconds) {
        self.loss += parts.loss + anchor_weight as f64 * anchor_sum;
        self.ce += parts.ce;
        self.kl += parts.kl;
        self.anchor += anchor_sum;
        self.agree += parts.agree;
        self.rows += parts.n;
        self.micro_batches += 1;
        self.phases = self.phases.plus(phases);
    }
}
