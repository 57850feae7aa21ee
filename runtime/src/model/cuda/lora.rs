//! LoRA adapters on the device. Each adapted projection's deltas become one f16 pair on its
//! [`DeviceWeight`] (see `DeviceLora`), which the launchers pick up by themselves: decode runs a
//! small `lora_down` launch (`u = s·A·x`) before the projection's mat-vec, whose epilogue adds
//! `B·u` to each row; prompts add two small GEMMs after the projection's own. The forward
//! functions hold no adapter code, as on the CPU.

use nexus_kernels::cuda::{DeviceWeight, Gpu};

use crate::adapter::LoraDelta;
use crate::model::{Linear, Model, ModelError};

/// `dw` (the device copy of `w`) with `w`'s attached adapters: their pairs concatenated along
/// the rank, each adapter's effective scale folded into its rows of A.
pub(super) fn attach(gpu: &Gpu, w: &Linear, dw: DeviceWeight) -> Result<DeviceWeight, ModelError> {
    if w.lora().is_empty() {
        return Ok(dw);
    }
    let (rank, a, b) = concat(w.lora(), w.rows);
    dw.with_lora(gpu, rank, &a, &b).map_err(|e| ModelError::Gpu(format!("{} (LoRA): {e}", w.name)))
}

/// `Σ sᵢ·Bᵢ·Aᵢ` as one pair: (total rank, `[s₁A₁; s₂A₂; …]` `[rank][cols]`, `[B₁ B₂ …]`
/// `[rows][rank]`).
fn concat(deltas: &[LoraDelta], rows: usize) -> (usize, Vec<f32>, Vec<f32>) {
    let rank: usize = deltas.iter().map(|d| d.weight.rank).sum();
    let mut a = Vec::new();
    let mut b = vec![0f32; rows * rank];
    let mut r0 = 0;
    for d in deltas {
        let lw = &*d.weight;
        a.extend(lw.a_f32().iter().map(|&v| v * d.scale));
        for (o, row) in lw.b_f32().chunks_exact(lw.rank).enumerate() {
            b[o * rank + r0..o * rank + r0 + lw.rank].copy_from_slice(row);
        }
        r0 += lw.rank;
    }
    (rank, a, b)
}

/// Device bytes the adapters attached to `model` take (f16 A and B).
pub(super) fn bytes(model: &Model) -> usize {
    let linears = model.layers.iter().flat_map(|l| [&l.wq, &l.wk, &l.wv, &l.wo, &l.w_gate, &l.w_up, &l.w_down]);
    linears
        .chain(std::iter::once(&model.output))
        .flat_map(|l| l.lora())
        .map(|d| 2 * d.weight.rank * (d.weight.n_in + d.weight.n_out))
        .sum()
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use super::*;
    use crate::adapter::LoraWeight;

    /// Two adapters of different ranks and scales as one pair give the same update as the
    /// CPU's sum of the two (no GPU needed).
    #[test]
    fn concatenated_pairs_add_up_like_separate_adapters() {
        let (rows, cols) = (5, 7);
        let pair = |rank: usize, seed: f32, scale: f32| {
            let a: Vec<f32> = (0..rank * cols).map(|i| ((i as f32 + seed) * 0.37).sin()).collect();
            let b: Vec<f32> = (0..rows * rank).map(|i| ((i as f32 - seed) * 0.91).cos()).collect();
            let weight = LoraWeight::new("w", rank, cols, rows, a, b, false);
            LoraDelta { weight: Arc::new(weight), scale }
        };
        let deltas = [pair(3, 1.0, 0.5), pair(2, 4.0, -2.0)];
        let (rank, a, b) = concat(&deltas, rows);
        assert_eq!((rank, a.len(), b.len()), (5, rank * cols, rows * rank));
        let x: Vec<f32> = (0..cols).map(|i| i as f32 * 0.25 - 0.6).collect();
        let mut want = vec![0f32; rows];
        for d in &deltas {
            d.add_to(&x, 1, &mut want).unwrap();
        }
        let u: Vec<f32> = (0..rank).map(|j| (0..cols).map(|c| a[j * cols + c] * x[c]).sum()).collect();
        for (o, w) in want.iter().enumerate() {
            let got: f32 = (0..rank).map(|j| b[o * rank + j] * u[j]).sum();
            assert!((got - w).abs() < 1e-5, "row {o}: {got} vs {w}");
        }
    }
}
