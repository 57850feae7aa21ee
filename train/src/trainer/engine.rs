//! Where the student's steps run (`train.device`): the CPU engine with the gradients on the
//! host, or the CUDA engine with weights, gradients and moments on the GPU (copied back into
//! the [`TrainState`] at each checkpoint). The anchors' maps and their moments stay on the host
//! either way: they are small and only the anchoring terms touch them.

use super::step::{accumulate, StepInputs, StepSums};
use super::teacher_cache::TeacherCache;
use super::TrainState;
use crate::config::TrainSection;
use crate::data::Batch;
use crate::error::TrainError;
use crate::optim::{adamw_params, clip_grad_norm, AdamW};
use crate::student::Params;
use crate::teacher::Teacher;

pub(super) enum Engine {
    Cpu { grads: Params },
    /// The student on the GPU, and the teacher there too when the training engine can run it
    /// (a plain llama; otherwise it runs on the CPU).
    #[cfg(feature = "cuda")]
    Cuda(Box<crate::cuda::CudaStudent>, Option<Box<crate::cuda::CudaTeacher>>),
}

impl Engine {
    pub fn open(train: &TrainSection, state: &TrainState, teacher: &Teacher) -> Result<Engine, TrainError> {
        match train.gpu().map_err(TrainError::Invalid)? {
            None => Ok(Engine::Cpu { grads: Params::zeros(&state.cfg) }),
            Some(ordinal) => open_cuda(ordinal, train, state, teacher),
        }
    }

    pub fn zero_grads(&mut self) -> Result<(), TrainError> {
        match self {
            Engine::Cpu { grads } => grads.fill_zero(),
            #[cfg(feature = "cuda")]
            Engine::Cuda(s, _) => s.zero_grads()?,
        }
        Ok(())
    }

    /// `cache` keeps a CPU teacher's outputs (a GPU teacher runs every batch).
    #[allow(clippy::too_many_arguments)]
    pub fn accumulate(
        &mut self,
        x: &StepInputs,
        cache: &mut TeacherCache,
        batch: &Batch,
        grad_scale: f32,
        anchor_grads: &mut [Vec<f32>],
        sums: &mut StepSums,
    ) -> Result<(), TrainError> {
        match self {
            Engine::Cpu { grads } => accumulate(x, cache, batch, grad_scale, grads, anchor_grads, sums),
            #[cfg(feature = "cuda")]
            Engine::Cuda(s, t) => super::cuda_step::accumulate_cuda(s, t.as_deref(), x, cache, batch, grad_scale, anchor_grads, sums),
        }
    }

    /// Clips the student's and the anchors' gradients together to a global norm of `max_norm`
    /// (`crate::optim::clip_grad_norm`); returns the norm before clipping.
    pub fn clip(&mut self, anchor_grads: &mut [Vec<f32>], max_norm: f64) -> Result<f64, TrainError> {
        match self {
            Engine::Cpu { grads } => {
                let mut all: Vec<&mut Vec<f32>> = grads.tensors_mut();
                all.extend(anchor_grads.iter_mut());
                Ok(clip_grad_norm(&mut all, max_norm))
            }
            #[cfg(feature = "cuda")]
            Engine::Cuda(s, _) => {
                let views: Vec<&[f32]> = anchor_grads.iter().map(|g| g.as_slice()).collect();
                let anchors = crate::optim::global_norm(&views);
                let norm = (s.grad_norm()?.powi(2) + anchors * anchors).sqrt();
                if let Some(scale) = crate::optim::clip_factor(norm, max_norm) {
                    s.scale_grads(scale)?;
                    anchor_grads.iter_mut().for_each(|g| g.iter_mut().for_each(|x| *x *= scale));
                }
                Ok(norm)
            }
        }
    }

    /// One AdamW step of the student's weights (the `step`-th, 1-based).
    pub fn adamw(&mut self, state: &mut TrainState, step: usize, lr: f32, cfg: &AdamW) -> Result<(), TrainError> {
        match self {
            Engine::Cpu { grads } => adamw_params(&mut state.params, grads, &mut state.m, &mut state.v, step, lr, cfg),
            #[cfg(feature = "cuda")]
            Engine::Cuda(s, _) => s.adamw_step(step, lr, cfg)?,
        }
        Ok(())
    }

    /// Whether every weight of the student is finite.
    pub fn weights_finite(&self, state: &TrainState) -> Result<bool, TrainError> {
        Ok(match self {
            Engine::Cpu { .. } => state.params.named().iter().all(|(_, t)| t.iter().all(|x| x.is_finite())),
            #[cfg(feature = "cuda")]
            Engine::Cuda(s, _) => s.weights_finite()?,
        })
    }

    /// Brings `state`'s weights and moments up to date (before a checkpoint).
    pub fn sync_to(&self, state: &mut TrainState) -> Result<(), TrainError> {
        #[cfg(feature = "cuda")]
        if let Engine::Cuda(s, _) = self {
            state.params = s.params()?;
            (state.m, state.v) = s.moments()?;
        }
        let _ = state;
        Ok(())
    }
}

#[cfg(feature = "cuda")]
fn open_cuda(ordinal: usize, train: &TrainSection, state: &TrainState, teacher: &Teacher) -> Result<Engine, TrainError> {
    use nexus_kernels::cuda::GemmPrecision;
    let precision = if train.precision == "bf16" { GemmPrecision::Bf16 } else { GemmPrecision::F32 };
    let mut s = crate::cuda::CudaStudent::new(ordinal, &state.cfg, &state.params, precision)?;
    s.load_moments(&state.m, &state.v)?;
    if train.kl > 0.0 {
        s.set_teacher_head(&teacher.head, teacher.n_embd())?;
    }
    // A teacher the training engine cannot run (not a plain llama) stays on the CPU.
    let on_gpu = match (train.kl > 0.0 || train.anchor > 0.0).then(|| crate::cuda::CudaTeacher::load_on(s.shared_gpu(), &teacher.model, precision)) {
        None | Some(Err(crate::engine::EngineError::Config(_))) => None,
        Some(Err(e)) => return Err(e.into()),
        Some(Ok(t)) => Some(Box::new(t)),
    };
    Ok(Engine::Cuda(Box::new(s), on_gpu))
}

#[cfg(not(feature = "cuda"))]
fn open_cuda(_: usize, train: &TrainSection, _: &TrainState, _: &Teacher) -> Result<Engine, TrainError> {
    Err(TrainError::Invalid(format!(
        "train.device = {:?}: this build has no CUDA training engine (build nexus-cli with --features cuda)",
        train.device
    )))
}
