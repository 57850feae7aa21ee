//! Gradient-norm clipping and the AdamW update on the device, with `crate::optim`'s semantics
//! and per-step constants.

use nexus_kernels::cuda::SUM_SQUARES_BLOCKS;

use super::CudaStudent;
use crate::engine::EngineError;
use crate::optim::{clip_factor, coefficients, decays, AdamW};

impl CudaStudent {
    /// The L2 norm of all gradients together (f64 sums).
    pub fn grad_norm(&self) -> Result<f64, EngineError> {
        let grads = &self.trainable()?.grads;
        let partial = self.gpu.alloc::<f64>(SUM_SQUARES_BLOCKS)?;
        let mut sum = 0f64;
        for &(o, n) in &self.spans {
            sum += self.gpu.tr_sum_squares(grads.ptr_at(o), n, partial.ptr())?;
        }
        Ok(sum.sqrt())
    }

    /// Multiplies every gradient by `a`.
    pub fn scale_grads(&self, a: f32) -> Result<(), EngineError> {
        let grads = &self.trainable()?.grads;
        Ok(self.gpu.tr_scale(grads.ptr(), grads.len(), a)?)
    }

    /// `crate::optim::clip_grad_norm` on the device: scales every gradient by
    /// `max_norm / norm` when the norm is above `max_norm > 0`; returns the norm before.
    pub fn clip_grad_norm(&self, max_norm: f64) -> Result<f64, EngineError> {
        let norm = self.grad_norm()?;
        if let Some(scale) = clip_factor(norm, max_norm) {
            self.scale_grads(scale)?;
        }
        Ok(norm)
    }

    /// Whether every weight is finite (a NaN or infinity makes the f64 sum of squares so).
    pub fn weights_finite(&self) -> Result<bool, EngineError> {
        let partial = self.gpu.alloc::<f64>(SUM_SQUARES_BLOCKS)?;
        Ok(self.gpu.tr_sum_squares(self.params.ptr(), self.params.len(), partial.ptr())?.is_finite())
    }

    /// One AdamW step (the `t`-th, 1-based) at learning rate `lr` on every tensor, decaying
    /// those `crate::optim::decays` names.
    pub fn adamw_step(&self, t: usize, lr: f32, cfg: &AdamW) -> Result<(), EngineError> {
        if t == 0 {
            return Err(EngineError::Invalid("adamw_step: the step count is 1-based".into()));
        }
        let tb = self.trainable()?;
        for (name, &(o, n)) in self.names.iter().zip(&self.spans) {
            let c = coefficients(t, lr, cfg, decays(name));
            let at = |b: &nexus_kernels::cuda::GpuBuffer<f32>| b.ptr_at(o);
            self.gpu.tr_adamw((at(&self.params), at(&tb.grads), at(&tb.m), at(&tb.v)), n, &c)?;
        }
        Ok(())
    }
}
