//! The unmerged low-rank update a [`crate::model::Linear`] adds to its output:
//! `y += s·B·(A·x)`, two small SGEMMs over all rows of the batch at once.

use std::sync::Arc;

use nexus_kernels::gemm::sgemm_t_with;
use nexus_kernels::simd;
use nexus_kernels::KernelError;

use super::LoraWeight;

/// One adapter's pair attached to one projection, with its effective scale.
#[derive(Debug, Clone)]
pub struct LoraDelta {
    pub weight: Arc<LoraWeight>,
    /// `s` of `y = W·x + s·B·(A·x)` (user scale × alpha / rank).
    pub scale: f32,
}

impl LoraDelta {
    /// `y += s·B·(A·x)` for `n` rows of x (`n × n_in`) and y (`n × n_out`).
    pub fn add_to(&self, x: &[f32], n: usize, y: &mut [f32]) -> Result<(), KernelError> {
        let w = &*self.weight;
        let isa = simd::detected();
        // t = x·Aᵀ (n × rank); A is stored [rank][n_in], so it is read transposed.
        let mut t = vec![0f32; n * w.rank];
        sgemm_t_with(isa, false, true, n, w.rank, w.n_in, x, w.n_in, &w.a, w.n_in, &mut t, w.rank, false)?;
        // Scaling the n × rank intermediate is the cheapest place for s.
        nexus_kernels::ops::scale_inplace(&mut t, self.scale);
        // y += t·Bᵀ (n × n_out); B is stored [n_out][rank].
        sgemm_t_with(isa, false, true, n, w.n_out, w.rank, &t, w.rank, &w.b, w.rank, y, w.n_out, true)
    }
}
