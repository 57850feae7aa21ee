//! One micro-batch on the CUDA engine: `step::accumulate` with the student's forward, fused
//! head/loss and backward on the GPU. The teacher runs on the GPU too when the training engine
//! can run it (`crate::cuda::CudaTeacher`), else on the CPU through the runtime; its hidden
//! states go to the KL term on the GPU, and the anchored layers' residual streams (student's
//! and teacher's, a few layers of `n × n_embd`) meet on the host for the anchoring terms.

use std::borrow::Cow;
use std::time::Instant;

use super::step::{anchor_terms, PhaseSeconds, StepInputs, StepSums};
use crate::cuda::{CudaStudent, CudaTeacher};
use crate::data::Batch;
use crate::engine::head_loss::LossWeights;
use crate::error::TrainError;

/// Adds one micro-batch's gradients, scaled by `grad_scale`, into the GPU's gradients and into
/// `anchor_grads` (host).
pub fn accumulate_cuda(
    s: &CudaStudent,
    gpu_teacher: Option<&CudaTeacher>,
    x: &StepInputs,
    batch: &Batch,
    grad_scale: f32,
    anchor_grads: &mut [Vec<f32>],
    sums: &mut StepSums,
) -> Result<(), TrainError> {
    let t = x.train;
    let mut clock = Instant::now();
    // Phases end at a synchronization, so each is charged with its own GPU work.
    let mut lap = |slot: &mut f64| -> Result<(), TrainError> {
        s.gpu().sync().map_err(crate::engine::EngineError::from)?;
        *slot += clock.elapsed().as_secs_f64();
        clock = Instant::now();
        Ok(())
    };
    let mut phases = PhaseSeconds::default();
    let teacher_out = match (x.teacher_layers(), gpu_teacher) {
        (None, _) => None,
        (Some(layers), Some(t)) => Some(t.run(&batch.inputs, batch.n_seq, &layers)?),
        (Some(layers), None) => Some(x.teacher.run(&batch.inputs, batch.n_seq, &layers)?),
    };
    lap(&mut phases.teacher)?;
    let acts = s.forward(&batch.inputs, batch.n_seq)?;
    lap(&mut phases.student_forward)?;
    let teacher_hidden = teacher_out.as_ref().filter(|_| t.kl > 0.0).map(|o| o.hidden.as_slice());
    let weights = LossWeights { ce: t.ce, kl: t.kl, temperature: t.temperature };
    let (parts, d_hidden) = s.head_loss(&acts, &batch.targets, teacher_hidden, &weights, t.vocab_chunk, grad_scale)?;
    lap(&mut phases.head_loss)?;

    // The anchors read the student's stream on the host: a few layers of n × n_embd.
    let (d_residual, anchor_sum) = anchor_terms(x, batch, teacher_out.as_ref(), grad_scale, anchor_grads, |l| Ok(Cow::Owned(s.residual(&acts, l)?)))?;
    lap(&mut phases.anchors)?;
    s.backward(&acts, &d_hidden, &d_residual)?;
    lap(&mut phases.student_backward)?;

    sums.add(&parts, t.anchor, anchor_sum, &phases);
    Ok(())
}
