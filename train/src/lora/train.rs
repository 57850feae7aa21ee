//! The adapter's training loop: per step the adapter is merged into a copy of the frozen
//! weights, the distillation step (`trainer::step::accumulate`: teacher, student, fused head +
//! CE/KL, backward) runs on it for each micro-batch, the full gradients of the adapted
//! matrices become the pairs' gradients, and clipping and AdamW update A and B only. The run
//! saves its state every few steps and when asked to stop (`LoraKeeping`), and resumes from it
//! to the same steps (`LoraResume`).

use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Instant;

use serde::{Deserialize, Serialize};

use super::LoraSet;
use crate::config::TrainSection;
use crate::data::{DataPosition, Dataset};
use crate::error::TrainError;
use crate::optim::{adamw_step, clip_grad_norm, AdamW, Schedule};
use crate::student::{Params, StudentConfig};
use crate::teacher::Teacher;
use crate::trainer::step::{accumulate, StepInputs, StepSums};
use crate::trainer::teacher_cache::TeacherCache;

/// One optimizer step of an adapter, as logged.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct LoraStep {
    pub step: usize,
    pub lr: f32,
    /// α·CE + β·T²·KL, the mean over the step's micro-batches.
    pub loss: f64,
    pub ce: f64,
    pub kl: f64,
    /// Share of positions where the student's argmax is the teacher's.
    pub top1: f64,
    /// Of the adapter's gradients, before clipping.
    pub grad_norm: f64,
    pub tokens: usize,
    pub seconds: f64,
}

/// Where an adapter's training stands after a step, besides A and B (in the `LoraSet`): what a
/// resumed run starts from.
#[derive(Debug, Clone, PartialEq)]
pub struct LoraResume {
    /// Optimizer steps taken.
    pub step: usize,
    pub data: DataPosition,
    /// AdamW moments, `(A, B)` per pair.
    pub m: Vec<(Vec<f32>, Vec<f32>)>,
    pub v: Vec<(Vec<f32>, Vec<f32>)>,
    /// Every step so far.
    pub log: Vec<LoraStep>,
}

/// How a run keeps its state: `save` every `every` steps (0: never) and after the step during
/// which `stop` was set, which then ends the run with [`TrainError::Interrupted`] naming
/// `path`.
pub struct LoraKeeping<'a> {
    pub every: usize,
    pub stop: &'a AtomicBool,
    pub path: &'a std::path::Path,
    pub save: &'a mut dyn FnMut(&LoraSet, &LoraResume) -> Result<(), TrainError>,
}

/// Trains `lora` on top of the frozen `base` until `t.steps` steps (`t`'s anchor settings are
/// not used: an adapter has no anchors), from `resume` when given (with `lora` holding its A
/// and B). `on_step` sees every new step; the whole log is returned.
#[allow(clippy::too_many_arguments)]
pub fn train_lora(
    cfg: &StudentConfig,
    base: &Params,
    teacher: &Teacher,
    dataset: &mut Dataset,
    lora: &mut LoraSet,
    t: &TrainSection,
    resume: Option<LoraResume>,
    mut keeping: Option<LoraKeeping>,
    on_step: &mut dyn FnMut(&LoraStep),
) -> Result<Vec<LoraStep>, TrainError> {
    if t.steps == 0 || t.batch == 0 || t.accum == 0 {
        return Err(TrainError::Invalid(format!("steps ({}), batch ({}) and accum ({}) must be at least 1", t.steps, t.batch, t.accum)));
    }
    if !(t.lr.is_finite() && t.lr > 0.0) {
        return Err(TrainError::Invalid(format!("the learning rate {} must be a positive number", t.lr)));
    }
    if teacher.model.config.n_vocab != cfg.n_vocab {
        return Err(TrainError::Invalid(format!("the teacher has {} tokens, the base {}", teacher.model.config.n_vocab, cfg.n_vocab)));
    }
    let schedule = Schedule { warmup: t.warmup, total: t.steps, min_lr_ratio: t.min_lr_ratio };
    let adamw = AdamW { lr: t.lr, beta1: t.beta1, beta2: t.beta2, eps: 1e-8, weight_decay: t.weight_decay };
    // No anchors: the step then runs the teacher only for its logits.
    let section = TrainSection { anchor: 0.0, ..t.clone() };
    let mut merged = base.clone();
    let mut grads = Params::zeros(cfg);
    let mut lora_grads = lora.zero_grads();
    let (first, mut m, mut v, mut log) = match resume {
        Some(r) => {
            dataset.restore(r.data)?;
            (r.step + 1, r.m, r.v, r.log)
        }
        None => (1, lora.zero_grads(), lora.zero_grads(), Vec::with_capacity(t.steps)),
    };
    let grad_scale = 1.0 / t.accum as f32;
    let mut cache = TeacherCache::new(t.teacher_cache_mb.saturating_mul(1 << 20));
    for step in first..=t.steps {
        let t0 = Instant::now();
        lora.merge_into(base, &mut merged);
        grads.fill_zero();
        let mut sums = StepSums::default();
        let mut tokens = 0;
        let inputs = StepInputs { cfg, params: &merged, teacher, anchors: &[], train: &section, sink_tokens: 0 };
        for _ in 0..t.accum {
            let batch = dataset.next_batch(t.batch);
            tokens += batch.inputs.len();
            accumulate(&inputs, &mut cache, &batch, grad_scale, &mut grads, &mut [], &mut sums)?;
        }
        let loss = sums.loss / sums.micro_batches as f64;
        if !loss.is_finite() {
            return Err(TrainError::NonFinite { step, what: format!("loss ({loss})") });
        }
        lora.grads_from_full(&grads, &mut lora_grads);
        let grad_norm = {
            let mut all: Vec<&mut Vec<f32>> = lora_grads.iter_mut().flat_map(|(a, b)| [a, b]).collect();
            clip_grad_norm(&mut all, t.clip)
        };
        if !grad_norm.is_finite() {
            return Err(TrainError::NonFinite { step, what: format!("adapter's gradient norm ({grad_norm})") });
        }
        let lr = schedule.lr(t.lr, step - 1);
        let decay = t.weight_decay != 0.0;
        for (((p, g), m), v) in lora.pairs.iter_mut().zip(&lora_grads).zip(&mut m).zip(&mut v) {
            adamw_step(&mut p.a, &g.0, &mut m.0, &mut v.0, step, lr, &adamw, decay);
            adamw_step(&mut p.b, &g.1, &mut m.1, &mut v.1, step, lr, &adamw, decay);
        }
        if lora.pairs.iter().any(|p| p.a.iter().chain(&p.b).any(|x| !x.is_finite())) {
            return Err(TrainError::NonFinite { step, what: "adapter's weights after the update".into() });
        }
        let mb = sums.micro_batches as f64;
        let s = LoraStep {
            step,
            lr,
            loss,
            ce: sums.ce / mb,
            kl: sums.kl / mb,
            top1: sums.agree as f64 / sums.rows.max(1) as f64,
            grad_norm,
            tokens,
            seconds: t0.elapsed().as_secs_f64(),
        };
        on_step(&s);
        log.push(s);
        if let Some(k) = keeping.as_mut() {
            let stop = k.stop.load(Ordering::Relaxed);
            if stop || (k.every > 0 && step.is_multiple_of(k.every) && step < t.steps) {
                let state = LoraResume { step, data: dataset.position(), m: m.clone(), v: v.clone(), log: log.clone() };
                (k.save)(lora, &state)?;
            }
            if stop && step < t.steps {
                return Err(TrainError::Interrupted { step, run_dir: k.path.to_path_buf() });
            }
        }
    }
    Ok(log)
}
