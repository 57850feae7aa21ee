//! The AdamW update of one tensor, element by element, with its per-step constants computed by
//! the caller (nexus-train's `optim`, which follows `torch.optim.AdamW`): the CPU loop here and
//! the CUDA kernel `tr_adamw` (cuda/cu/train.cu) apply the same arithmetic.

/// One step's constants: `keep = 1 − lr·weight_decay` (1 without decay), the moment rates,
/// `step_size = lr / (1 − β1ᵗ)`, `bias2_sqrt = √(1 − β2ᵗ)` and ε.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct AdamCoefficients {
    pub keep: f32,
    pub beta1: f32,
    pub one_minus_beta1: f32,
    pub beta2: f32,
    pub one_minus_beta2: f32,
    pub step_size: f32,
    pub bias2_sqrt: f32,
    pub eps: f32,
}

impl AdamCoefficients {
    /// `param ← param·keep`, the moments updated with `grad`, then
    /// `param ← param − step_size·m / (√v / bias2_sqrt + eps)`.
    ///
    /// # Panics
    /// Never; slices shorter than `param` end the loop early (callers pass equal lengths).
    pub fn apply(&self, param: &mut [f32], grad: &[f32], m: &mut [f32], v: &mut [f32]) {
        for (((p, &g), m), v) in param.iter_mut().zip(grad).zip(m).zip(v) {
            *p *= self.keep;
            *m = self.beta1 * *m + self.one_minus_beta1 * g;
            *v = self.beta2 * *v + self.one_minus_beta2 * g * g;
            let denom = v.sqrt() / self.bias2_sqrt + self.eps;
            *p -= self.step_size * *m / denom;
        }
    }
}
