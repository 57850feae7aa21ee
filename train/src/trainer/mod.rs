//! The distillation loop: micro-batches accumulate gradients, the step clips them, AdamW
//! (warm-up + cosine) updates the student and the anchor maps, every step is logged, and a
//! checkpoint is written every `checkpoint_every` steps, at the end, and when the run is asked
//! to stop — so an interrupted run resumes exactly where its checkpoint stands.

#[cfg(feature = "cuda")]
mod cuda_step;
mod engine;
pub mod metrics;
pub mod step;
pub mod teacher_cache;

use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Instant;

use serde::{Deserialize, Serialize};

use crate::anchor::Anchor;
use crate::checkpoint::{Checkpoint, CheckpointRef};
use crate::config::TrainSection;
use crate::data::{DataPosition, Dataset};
use crate::error::TrainError;
use crate::optim::{adamw_step, AdamW, Schedule};
use crate::student::{Params, StudentConfig};
use crate::teacher::Teacher;
use metrics::{append_metrics, truncate_metrics, StepMetrics};
use engine::Engine;
use step::{StepInputs, StepSums};
use teacher_cache::TeacherCache;

/// Everything a step changes: the student, its optimizer moments, the anchors' maps and theirs.
pub struct TrainState {
    pub cfg: StudentConfig,
    pub params: Params,
    pub m: Params,
    pub v: Params,
    pub anchors: Vec<Anchor>,
    pub anchor_m: Vec<Vec<f32>>,
    pub anchor_v: Vec<Vec<f32>>,
    /// Optimizer steps taken.
    pub step: usize,
    pub data: Option<DataPosition>,
}

/// The small part of a checkpoint that is not tensors.
#[derive(Debug, Clone, Serialize, Deserialize)]
struct SavedState {
    step: usize,
    data: Option<DataPosition>,
    anchors: Vec<SavedAnchor>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
struct SavedAnchor {
    student_layer: usize,
    teacher_layer: usize,
    k: usize,
    d_teacher: usize,
    d_student: usize,
    scale: f32,
}

impl TrainState {
    pub fn fresh(cfg: StudentConfig, params: Params, anchors: Vec<Anchor>) -> Self {
        let anchor_m = anchors.iter().map(|a| vec![0.0; a.map.len()]).collect();
        let anchor_v = anchors.iter().map(|a| vec![0.0; a.map.len()]).collect();
        TrainState { m: Params::zeros(&cfg), v: Params::zeros(&cfg), cfg, params, anchors, anchor_m, anchor_v, step: 0, data: None }
    }

    pub fn save(&self, run_dir: &Path) -> Result<(), TrainError> {
        let mut extra = Vec::with_capacity(4 * self.anchors.len());
        for (i, a) in self.anchors.iter().enumerate() {
            extra.push((format!("anchor.{i}.map"), a.map.clone()));
            extra.push((format!("anchor.{i}.basis"), a.basis.clone()));
            extra.push((format!("anchor.{i}.map.m"), self.anchor_m[i].clone()));
            extra.push((format!("anchor.{i}.map.v"), self.anchor_v[i].clone()));
        }
        let state = SavedState {
            step: self.step,
            data: self.data,
            anchors: self
                .anchors
                .iter()
                .map(|a| SavedAnchor { student_layer: a.student_layer, teacher_layer: a.teacher_layer, k: a.k, d_teacher: a.d_teacher, d_student: a.d_student, scale: a.scale })
                .collect(),
        };
        let state = serde_json::to_value(state).expect("state serializes");
        CheckpointRef { config: &self.cfg, params: &self.params, m: &self.m, v: &self.v, extra: &extra, state: &state }.save(run_dir)?;
        Ok(())
    }

    pub fn resume(run_dir: &Path) -> Result<Self, TrainError> {
        let ck = Checkpoint::load(run_dir)?;
        let bad = |what: String| TrainError::Config { path: run_dir.join("checkpoint"), what };
        let saved: SavedState = serde_json::from_value(ck.state.clone()).map_err(|e| bad(format!("state.json: {e}")))?;
        let mut extra = ck.extra;
        let mut take = |name: String, len: usize| -> Result<Vec<f32>, TrainError> {
            let i = extra.iter().position(|(n, _)| *n == name).ok_or_else(|| bad(format!("no tensor {name}")))?;
            let (_, t) = extra.swap_remove(i);
            if t.len() != len {
                return Err(bad(format!("{name} has {} elements, expected {len}", t.len())));
            }
            Ok(t)
        };
        let (mut anchors, mut anchor_m, mut anchor_v) = (Vec::new(), Vec::new(), Vec::new());
        for (i, a) in saved.anchors.iter().enumerate() {
            let map_len = a.d_teacher * a.d_student;
            anchors.push(Anchor {
                student_layer: a.student_layer,
                teacher_layer: a.teacher_layer,
                basis: take(format!("anchor.{i}.basis"), a.k * a.d_teacher)?,
                k: a.k,
                d_teacher: a.d_teacher,
                d_student: a.d_student,
                scale: a.scale,
                map: take(format!("anchor.{i}.map"), map_len)?,
            });
            anchor_m.push(take(format!("anchor.{i}.map.m"), map_len)?);
            anchor_v.push(take(format!("anchor.{i}.map.v"), map_len)?);
        }
        Ok(TrainState { cfg: ck.config, params: ck.params, m: ck.m, v: ck.v, anchors, anchor_m, anchor_v, step: saved.step, data: saved.data })
    }
}

/// Where the loop reports and what stops it.
pub struct TrainIo<'a> {
    pub run_dir: &'a Path,
    /// Set (by Ctrl-C) to stop after the current step, with a checkpoint.
    pub stop: &'a AtomicBool,
    pub progress: &'a mut dyn FnMut(&StepMetrics, usize),
}

/// Trains until `train.steps` optimizer steps have been taken. Returns the whole log.
pub fn train(
    state: &mut TrainState,
    teacher: &Teacher,
    dataset: &mut Dataset,
    train: &TrainSection,
    sink_tokens: usize,
    io: &mut TrainIo,
) -> Result<Vec<StepMetrics>, TrainError> {
    if let Some(pos) = state.data {
        dataset.restore(pos)?;
    }
    let mut log = truncate_metrics(io.run_dir, state.step)?;
    let schedule = Schedule { warmup: train.warmup, total: train.steps, min_lr_ratio: train.min_lr_ratio };
    let adamw = AdamW { lr: train.lr, beta1: train.beta1, beta2: train.beta2, eps: 1e-8, weight_decay: train.weight_decay };
    let mut engine = Engine::open(train, state, teacher)?;
    let mut cache = TeacherCache::new(train.teacher_cache_mb.saturating_mul(1 << 20));
    let mut anchor_grads: Vec<Vec<f32>> = state.anchors.iter().map(|a| vec![0.0; a.map.len()]).collect();
    let grad_scale = 1.0 / train.accum as f32;

    while state.step < train.steps {
        let t0 = Instant::now();
        engine.zero_grads()?;
        anchor_grads.iter_mut().for_each(|g| g.fill(0.0));
        let mut sums = StepSums::default();
        let mut tokens = 0;
        {
            let inputs = StepInputs { cfg: &state.cfg, params: &state.params, teacher, anchors: &state.anchors, train, sink_tokens };
            for _ in 0..train.accum {
                let batch = dataset.next_batch(train.batch);
                tokens += batch.inputs.len();
                engine.accumulate(&inputs, &mut cache, &batch, grad_scale, &mut anchor_grads, &mut sums)?;
            }
        }
        let step = state.step + 1;
        let loss = sums.loss / sums.micro_batches as f64;
        if !loss.is_finite() {
            return Err(TrainError::NonFinite { step, what: format!("loss ({loss})") });
        }
        let t_opt = Instant::now();
        let grad_norm = engine.clip(&mut anchor_grads, train.clip)?;
        if !grad_norm.is_finite() {
            return Err(TrainError::NonFinite { step, what: format!("gradient norm ({grad_norm})") });
        }

        let lr = schedule.lr(train.lr, state.step);
        engine.adamw(state, step, lr, &adamw)?;
        // The maps are dropped at export; decaying them would only pull the anchor toward 0.
        for (((a, g), m), v) in state.anchors.iter_mut().zip(&anchor_grads).zip(&mut state.anchor_m).zip(&mut state.anchor_v) {
            adamw_step(&mut a.map, g, m, v, step, lr, &adamw, false);
        }
        if !engine.weights_finite(state)? {
            return Err(TrainError::NonFinite { step, what: "student's weights after the update".into() });
        }
        state.step = step;
        state.data = Some(dataset.position());
        sums.phases.optimizer = t_opt.elapsed().as_secs_f64();

        let seconds = t0.elapsed().as_secs_f64();
        let rows = sums.rows.max(1) as f64;
        let mb = sums.micro_batches as f64;
        let m = StepMetrics {
            step,
            lr,
            loss,
            ce: sums.ce / mb,
            kl: sums.kl / mb,
            anchor: sums.anchor / mb,
            top1: sums.agree as f64 / rows,
            grad_norm,
            tokens,
            seconds,
            tokens_per_s: tokens as f64 / seconds.max(1e-9),
            phases: sums.phases,
        };
        append_metrics(io.run_dir, &m)?;
        (io.progress)(&m, train.steps);
        log.push(m);

        let stop = io.stop.load(Ordering::Relaxed);
        if step.is_multiple_of(train.checkpoint_every) || step == train.steps || stop {
            engine.sync_to(state)?;
            state.save(io.run_dir)?;
        }
        if stop && step < train.steps {
            return Err(TrainError::Interrupted { step, run_dir: io.run_dir.to_path_buf() });
        }
    }
    Ok(log)
}
