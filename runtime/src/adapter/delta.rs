//! The unmerged low-rank update a [`crate::model::Linear`] adds to its output:
//! `y += s·B·(A·x)`, in llama.cpp's rounding.

use std::sync::Arc;

use half::f16;
use rayon::prelude::*;

use nexus_kernels::ggml_order::f16::{self as order16, PanelOrder};
use nexus_kernels::ggml_order;
use nexus_kernels::KernelError;

use super::{LoraFactors, LoraWeight};

/// One adapter's pair attached to one projection, with its effective scale.
#[derive(Debug, Clone)]
pub struct LoraDelta {
    pub weight: Arc<LoraWeight>,
    /// `s` of `y = W·x + s·B·(A·x)` (user scale × alpha / rank).
    pub scale: f32,
}

/// Below this many adapter bytes per task the pool's hand-off costs more than the work: a
/// rank-16 pair of a 135M model is 20–100 kB, read in a few microseconds by one core.
const MIN_TASK_BYTES: usize = 64 * 1024;

/// Runs `body(first index, chunk)` over chunks of `items` each worth handing to the pool
/// (`bytes_each` adapter bytes are read per item; chunks start at multiples of `align`); on
/// this thread when one chunk holds all.
fn for_chunks(items: &mut [f32], bytes_each: usize, align: usize, body: impl Fn(usize, &mut [f32]) + Sync) {
    let per_thread = items.len().div_ceil(rayon::current_num_threads());
    let chunk = per_thread.max(MIN_TASK_BYTES.div_ceil(bytes_each.max(1))).next_multiple_of(align.max(1));
    if chunk >= items.len() {
        body(0, items);
    } else {
        items.par_chunks_mut(chunk).enumerate().for_each(|(c, part)| body(c * chunk, part));
    }
}

impl LoraDelta {
    /// `y += s·B·(A·x)` for `n` rows of x (`n × n_in`) and y (`n × n_out`), rounded as llama.cpp's
    /// CPU backend rounds the adapter's type (`build_lora_mm`: `A·x`, then `B·(A·x)`, then the
    /// scale, then the add): the products in ggml's orders (`ggml_order`), one row at a time or
    /// as llamafile's tiled GEMM for a batch, so a run with an F32 adapter stays bitwise
    /// llama.cpp's (tests/tests/smollm2_lora.rs). An F16 adapter's operands are rounded to f16
    /// first, as ggml does for F16 weights.
    pub fn add_to(&self, x: &[f32], n: usize, y: &mut [f32]) -> Result<(), KernelError> {
        self.apply(x, n, y, Mode::Add)
    }

    /// `y = s·B·(A·x)`, rounded as [`LoraDelta::add_to`] rounds it before adding: adding this
    /// `y` to the base product afterwards gives the same bits as `add_to` would have.
    pub fn write_to(&self, x: &[f32], n: usize, y: &mut [f32]) -> Result<(), KernelError> {
        self.apply(x, n, y, Mode::Write)
    }

    fn apply(&self, x: &[f32], n: usize, y: &mut [f32], mode: Mode) -> Result<(), KernelError> {
        let w = &*self.weight;
        let (n_in, n_out) = (w.n_in, w.n_out);
        if x.len() < n * n_in || y.len() < n * n_out {
            return Err(KernelError::Size { what: "lora rows", expected: n * n_in.max(n_out), got: x.len().min(y.len()) });
        }
        let rows = x.chunks_exact(n_in).zip(y.chunks_exact_mut(n_out)).take(n);
        match &w.factors {
            LoraFactors::F32 { a, b, bt } => rows.for_each(|(xr, yr)| self.add_row_f32(a, b, bt, n, xr, yr, mode)),
            LoraFactors::F16 { a, b_panels } => {
                let mut x16 = Vec::new();
                for (xr, yr) in rows {
                    order16::round_through_f16(xr, &mut x16);
                    self.add_row_f16(a, b_panels, n, &x16, yr, mode);
                }
            }
        }
        Ok(())
    }

    #[allow(clippy::too_many_arguments)]
    fn add_row_f32(&self, a: &[f32], b: &[f32], bt: &[f32], n: usize, xr: &[f32], yr: &mut [f32], mode: Mode) {
        let w = &*self.weight;
        let (n_in, n_out, rank) = (w.n_in, w.n_out, w.rank);
        let dot_a = if tiled(n, rank, n_in) { ggml_order::dot_f32_tiled } else { ggml_order::dot_f32 };
        let dot_b = if tiled(n, n_out, rank) { ggml_order::dot_f32_tiled } else { ggml_order::dot_f32 };
        let vector_chain = !tiled(n, n_out, rank) && rank < 64;
        // t = A·x: `rank` dot products of the input row.
        let mut t = vec![0f32; rank];
        for_chunks(&mut t, n_in * 4, 1, |r0, tc| {
            for (i, tr) in tc.iter_mut().enumerate() {
                *tr = dot_a(&a[(r0 + i) * n_in..(r0 + i + 1) * n_in], xr);
            }
        });
        for_chunks(yr, rank * 4, 1, |o0, yc| {
            if vector_chain {
                // A dot product shorter than ggml's 64-wide step is its scalar tail: one
                // rounded product added at a time, in order. The same chain for many
                // outputs at once runs down Bᵀ's rows (the plain loop vectorizes).
                let mut acc = vec![0f32; yc.len()];
                for (r, &tr) in t.iter().enumerate() {
                    nexus_kernels::ops::axpy_inplace(&mut acc, tr, &bt[r * n_out + o0..r * n_out + o0 + yc.len()]);
                }
                for (v, a) in yc.iter_mut().zip(acc) {
                    mode.put(v, a * self.scale);
                }
            } else {
                for (i, v) in yc.iter_mut().enumerate() {
                    let o = o0 + i;
                    mode.put(v, dot_b(&b[o * rank..(o + 1) * rank], &t) * self.scale);
                }
            }
        });
    }

    fn add_row_f16(&self, a: &[f16], b_panels: &[f16], n: usize, x16: &[f32], yr: &mut [f32], mode: Mode) {
        let w = &*self.weight;
        let (n_in, n_out, rank) = (w.n_in, w.n_out, w.rank);
        let dot_a = if tiled(n, rank, n_in) { order16::dot_f16_tiled } else { order16::dot_f16 };
        let mut t = vec![0f32; rank];
        for_chunks(&mut t, n_in * 2, 1, |r0, tc| {
            for (i, tr) in tc.iter_mut().enumerate() {
                *tr = dot_a(&a[(r0 + i) * n_in..(r0 + i + 1) * n_in], x16);
            }
        });
        // ggml rounds the intermediate A·x to f16 too before multiplying it by the F16 B.
        let mut t16 = Vec::new();
        order16::round_through_f16(&t, &mut t16);
        let order = if tiled(n, n_out, rank) {
            Some(PanelOrder::Tiled)
        } else if rank < 64 {
            Some(PanelOrder::Leftover)
        } else {
            None
        };
        for_chunks(yr, rank * 2, order16::PANEL, |o0, yc| {
            for (p, yp) in yc.chunks_mut(order16::PANEL).enumerate() {
                let panel = o0 / order16::PANEL + p;
                let sums = match order {
                    Some(order) => order16::panel_dots(b_panels, &t16, panel, order),
                    None => {
                        // Rank 64 or more without tiles (decoding with a rank-64+ adapter): each
                        // row of B gathered out of its panel for ggml's full dot product.
                        // Correct, but slower per byte than the panel paths.
                        let mut sums = [0f32; order16::PANEL];
                        let mut row = vec![f16::ZERO; rank];
                        for (j, v) in sums.iter_mut().enumerate().take(yp.len()) {
                            let o = panel * order16::PANEL + j;
                            row.iter_mut().enumerate().for_each(|(r, e)| *e = b_panels[order16::panel_index(o, r, rank)]);
                            *v = order16::dot_f16(&row, &t16);
                        }
                        sums
                    }
                };
                for (v, s) in yp.iter_mut().zip(sums) {
                    mode.put(v, s * self.scale);
                }
            }
        });
    }
}

/// Whether a product lands on the output or is added to it.
#[derive(Debug, Clone, Copy)]
enum Mode {
    Add,
    Write,
}

impl Mode {
    fn put(self, out: &mut f32, v: f32) {
        match self {
            Mode::Add => *out += v,
            Mode::Write => *out = v,
        }
    }
}

/// Whether ggml hands a product with `m` output rows and inner length `k` over `n` tokens to
/// llamafile's tiled GEMM: it does for more than one token when `k` is a multiple of 16 and `m`
/// of 4; otherwise it falls back to one dot product per element.
fn tiled(n: usize, m: usize, k: usize) -> bool {
    n > 1 && k.is_multiple_of(16) && m.is_multiple_of(4)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Every path of an F16 pair (decode with rank < 64 and ≥ 64, batches tiled or not) against
    /// float64 on the same f16-rounded operands.
    #[test]
    fn f16_pairs_match_float64_on_every_path() {
        let mut seed = 9u64;
        let mut next = || {
            seed = seed.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
            ((seed >> 40) as f32 / (1u64 << 24) as f32) * 2.0 - 1.0
        };
        let half = |v: f32| f16::from_f32(v).to_f32();
        for (rank, n_in, n_out, n) in [(4, 48, 20, 1), (16, 64, 70, 1), (64, 80, 40, 1), (80, 32, 33, 1), (16, 64, 72, 3), (4, 40, 20, 2)] {
            let a: Vec<f32> = (0..rank * n_in).map(|_| half(next())).collect();
            let b: Vec<f32> = (0..n_out * rank).map(|_| half(next())).collect();
            let x: Vec<f32> = (0..n * n_in).map(|_| next()).collect();
            let weight = Arc::new(LoraWeight::new("w", rank, n_in, n_out, a.clone(), b.clone(), true));
            let delta = LoraDelta { weight, scale: 0.75 };
            let mut y = vec![0.5f32; n * n_out];
            delta.add_to(&x, n, &mut y).unwrap();
            for t in 0..n {
                let xr: Vec<f64> = x[t * n_in..(t + 1) * n_in].iter().map(|&v| half(v) as f64).collect();
                let ax: Vec<f64> = (0..rank).map(|r| (0..n_in).map(|i| a[r * n_in + i] as f64 * xr[i]).sum::<f64>()).collect();
                for o in 0..n_out {
                    let want = 0.5 + 0.75 * (0..rank).map(|r| b[o * rank + r] as f64 * half(ax[r] as f32) as f64).sum::<f64>();
                    let got = y[t * n_out + o] as f64;
                    assert!((got - want).abs() <= 1e-4 * (1.0 + want.abs()), "rank {rank} n {n} token {t} output {o}: {got} vs {want}");
                }
            }
        }
    }
}
