//! The unmerged low-rank update a [`crate::model::Linear`] adds to its output:
//! `y += s·B·(A·x)`, in llama.cpp's rounding.

use std::sync::Arc;

use rayon::prelude::*;

use nexus_kernels::ggml_order;
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
    /// `y += s·B·(A·x)` for `n` rows of x (`n × n_in`) and y (`n × n_out`), rounded as llama.cpp's
    /// CPU backend rounds an F32 adapter (`build_lora_mm`: `A·x`, then `B·(A·x)`, then the
    /// scale, then the add): the products in ggml's orders (`ggml_order`), one row at a time or
    /// as llamafile's tiled GEMM for a batch, so a run with an adapter stays bitwise
    /// llama.cpp's (tests/tests/smollm2_lora.rs).
    pub fn add_to(&self, x: &[f32], n: usize, y: &mut [f32]) -> Result<(), KernelError> {
        let w = &*self.weight;
        let (n_in, n_out, rank) = (w.n_in, w.n_out, w.rank);
        if x.len() < n * n_in || y.len() < n * n_out {
            return Err(KernelError::Size { what: "lora rows", expected: n * n_in.max(n_out), got: x.len().min(y.len()) });
        }
        // llamafile takes a product of several rows when its inner length is a multiple of 16
        // and its output rows of 4; otherwise ggml falls back to one dot product per element.
        let tiled = |m: usize, k: usize| n > 1 && k % 16 == 0 && m % 4 == 0;
        let dot_a = if tiled(rank, n_in) { ggml_order::dot_f32_tiled } else { ggml_order::dot_f32 };
        let dot_b = if tiled(n_out, rank) { ggml_order::dot_f32_tiled } else { ggml_order::dot_f32 };
        let vector_chain = !tiled(n_out, rank) && rank < 64;
        for (xr, yr) in x.chunks_exact(n_in).zip(y.chunks_exact_mut(n_out)).take(n) {
            // t = A·x: `rank` dot products of the input row.
            let mut t = vec![0f32; rank];
            t.par_iter_mut().enumerate().with_min_len(4).for_each(|(r, tr)| {
                *tr = dot_a(&w.a[r * n_in..(r + 1) * n_in], xr);
            });
            let chunk = n_out.div_ceil(rayon::current_num_threads()).max(256);
            yr.par_chunks_mut(chunk).enumerate().for_each(|(c, yc)| {
                let o0 = c * chunk;
                if vector_chain {
                    // A dot product shorter than ggml's 64-wide step is its scalar tail: one
                    // rounded product added at a time, in order. The same chain for many
                    // outputs at once runs down Bᵀ's rows (the plain loop vectorizes).
                    let mut acc = vec![0f32; yc.len()];
                    for (r, &tr) in t.iter().enumerate() {
                        nexus_kernels::ops::axpy_inplace(&mut acc, tr, &w.bt[r * n_out + o0..r * n_out + o0 + yc.len()]);
                    }
                    for (v, a) in yc.iter_mut().zip(acc) {
                        *v += a * self.scale;
                    }
                } else {
                    for (i, v) in yc.iter_mut().enumerate() {
                        let o = o0 + i;
                        *v += dot_b(&w.b[o * rank..(o + 1) * rank], &t) * self.scale;
                    }
                }
            });
        }
        Ok(())
    }
}
