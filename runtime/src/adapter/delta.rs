//! The unmerged low-rank update a [`crate::model::Linear`] adds to its output:
//! `y += s·B·(A·x)`, two small SGEMMs over all rows of the batch at once.

use std::sync::Arc;

use rayon::prelude::*;

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
        if n == 1 {
            // Decoding: `rank` dot products, then `rank` axpys over the output, split over the
            // pool's threads like the base product (one thread alone left the other spinning).
            // The SGEMM below packs both matrices on every call, which for one row cost more
            // than the product itself (an adapter on all seven projections halved SmolLM2's
            // decode speed).
            let (n_in, n_out) = (w.n_in, w.n_out);
            let mut t = vec![0f32; w.rank];
            t.par_iter_mut().enumerate().with_min_len(4).for_each(|(r, tr)| {
                *tr = self.scale * nexus_kernels::ops::dot_f32(&w.a[r * n_in..(r + 1) * n_in], &x[..n_in]);
            });
            let chunk = n_out.div_ceil(rayon::current_num_threads()).max(256);
            y[..n_out].par_chunks_mut(chunk).enumerate().for_each(|(c, yc)| {
                let o0 = c * chunk;
                for (r, &tr) in t.iter().enumerate() {
                    nexus_kernels::ops::axpy_fma(yc, tr, &w.bt[r * n_out + o0..r * n_out + o0 + yc.len()]);
                }
            });
            return Ok(());
        }
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
