//! One micro-batch on the CUDA engine: `step::accumulate` with the student's forward, fused
//! head/loss, anchoring terms and backward on the GPU. The teacher runs on the GPU too when the
//! training engine can run it (`crate::cuda::CudaTeacher`, on the student's stream), else on
//! the CPU through the runtime and its outputs are uploaded; either way the KL term and the
//! anchors read the teacher's streams on the device. Only the anchors' map gradients come back
//! to the host, where the maps' optimizer runs.

use std::time::Instant;

use nexus_kernels::cuda::GpuBuffer;

use super::step::{AnchorTerms, PhaseSeconds, StepInputs, StepSums};
use super::teacher_cache::TeacherCache;
use crate::cuda::{AnchorRows, CudaStudent, CudaTeacher, DeviceActs, DeviceTeacherOut};
use crate::data::Batch;
use crate::engine::head_loss::LossWeights;
use crate::engine::EngineError;
use crate::error::TrainError;

/// Adds one micro-batch's gradients, scaled by `grad_scale`, into the GPU's gradients and into
/// `anchor_grads` (host). A CPU teacher's outputs come through `cache`.
#[allow(clippy::too_many_arguments)]
pub fn accumulate_cuda(
    s: &CudaStudent,
    gpu_teacher: Option<&CudaTeacher>,
    x: &StepInputs,
    cache: &mut TeacherCache,
    batch: &Batch,
    grad_scale: f32,
    anchor_grads: &mut [Vec<f32>],
    sums: &mut StepSums,
) -> Result<(), TrainError> {
    let t = x.train;
    let mut clock = Instant::now();
    // Phases end at a synchronization, so each is charged with its own GPU work.
    let mut lap = |slot: &mut f64| -> Result<(), TrainError> {
        s.gpu().sync().map_err(EngineError::from)?;
        *slot += clock.elapsed().as_secs_f64();
        clock = Instant::now();
        Ok(())
    };
    let mut phases = PhaseSeconds::default();
    let teacher_out = match (x.teacher_layers(), gpu_teacher) {
        (None, _) => None,
        (Some(layers), Some(t)) => Some(t.run_device(&batch.inputs, batch.n_seq, &layers)?),
        (Some(layers), None) => Some(DeviceTeacherOut::upload(s.gpu(), &cache.run(x.teacher, batch, &layers)?)?),
    };
    lap(&mut phases.teacher)?;
    let acts = s.forward(&batch.inputs, batch.n_seq)?;
    lap(&mut phases.student_forward)?;
    let teacher_hidden = teacher_out.as_ref().filter(|_| t.kl > 0.0).map(|o| &o.hidden);
    let weights = LossWeights { ce: t.ce, kl: t.kl, temperature: t.temperature };
    let (parts, d_hidden) = s.head_loss(&acts, &batch.targets, teacher_hidden, &weights, t.vocab_chunk, grad_scale)?;
    lap(&mut phases.head_loss)?;

    let (d_residual, anchor_sum) = match &teacher_out {
        Some(out) if t.anchor > 0.0 && !x.anchors.is_empty() => anchor_terms(s, x, batch, out, &acts, grad_scale, anchor_grads)?,
        _ => (Vec::new(), 0.0),
    };
    lap(&mut phases.anchors)?;
    // The teacher's streams are read: free them before the backward's peak.
    drop(teacher_out);
    s.backward(&acts, &d_hidden, &d_residual)?;
    lap(&mut phases.student_backward)?;

    sums.add(&parts, t.anchor, anchor_sum, &phases);
    Ok(())
}

/// `step::anchor_terms` on the device: each anchor's gradient into the student's stream after
/// its layer (for the backward), its map's gradient added into `anchor_grads`, and the mean of
/// the anchors' losses.
fn anchor_terms(
    s: &CudaStudent,
    x: &StepInputs,
    batch: &Batch,
    teacher: &DeviceTeacherOut,
    acts: &DeviceActs,
    grad_scale: f32,
    anchor_grads: &mut [Vec<f32>],
) -> Result<AnchorTerms<GpuBuffer<f32>>, TrainError> {
    let rows = AnchorRows { n_seq: batch.n_seq, seq_len: batch.seq_len, sink_tokens: x.sink_tokens };
    // Each anchor's term is averaged over the anchors so γ means the same at any count.
    let weight = x.train.anchor * grad_scale / x.anchors.len() as f32;
    let mut d_residual = Vec::with_capacity(x.anchors.len());
    let mut sum = 0.0;
    for (a, d_map) in x.anchors.iter().zip(anchor_grads.iter_mut()) {
        let h_teacher = teacher
            .residual(a.teacher_layer)
            .ok_or_else(|| EngineError::Invalid(format!("the teacher's stream after layer {} was not kept", a.teacher_layer)))?;
        let dev = s.upload_anchor(a)?;
        let d_h = s.gpu().alloc::<f32>(batch.inputs.len() * x.cfg.n_embd).map_err(EngineError::from)?;
        sum += s.anchor_loss_grad(&dev, s.residual_on_device(acts, a.student_layer)?, h_teacher, rows, weight, &d_h)?;
        for (g, v) in d_map.iter_mut().zip(s.anchor_map_grad(&dev)?) {
            *g += v;
        }
        d_residual.push((a.student_layer, d_h));
    }
    Ok((d_residual, sum / x.anchors.len() as f64))
}
