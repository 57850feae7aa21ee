//! Element-wise and per-time-step operations of the VITS graph on channels-first `[C][L]`
//! activations. The heavy ones (convolutions, GEMM) live in `nexus_kernels`.

use rayon::prelude::*;

/// Below this many elements an element-wise pass is not worth a rayon fork-join.
const PAR_MIN: usize = 1 << 16;
const PAR_CHUNK: usize = 1 << 14;

/// Applies `f` to every element, in parallel for large tensors (the decoder's are millions).
pub fn map_inplace(x: &mut [f32], f: impl Fn(f32) -> f32 + Sync) {
    if x.len() < PAR_MIN {
        x.iter_mut().for_each(|v| *v = f(*v));
    } else {
        x.par_chunks_mut(PAR_CHUNK).for_each(|c| c.iter_mut().for_each(|v| *v = f(*v)));
    }
}

pub fn leaky_relu(v: f32, slope: f32) -> f32 {
    if v >= 0.0 {
        v
    } else {
        v * slope
    }
}

/// GELU with the exact error function, as PyTorch's default `F.gelu` (the DDSConv activation).
pub fn gelu(v: f32) -> f32 {
    0.5 * v * (1.0 + libm::erff(v * std::f32::consts::FRAC_1_SQRT_2))
}

/// The plain form `tanh_sigmoid_gate` is checked against.
#[cfg(test)]
fn sigmoid(v: f32) -> f32 {
    1.0 / (1.0 + (-v).exp())
}

/// tanh as a clamped rational function (Eigen's `generic_fast_tanh_float`, max error ~1e-7):
/// branch-free, so loops over it vectorise, where std's `tanhf` is a scalar call. The flow's
/// WaveNet gates take 1.8 M of them per second of audio.
pub fn fast_tanh(x: f32) -> f32 {
    const CLAMP: f32 = 7.905_311;
    const A: [f32; 7] = [
        4.893_524_6e-3,
        6.372_619_3e-4,
        1.485_722_4e-5,
        5.122_297e-8,
        -8.604_672e-11,
        2.000_188e-13,
        -2.760_768_5e-16,
    ];
    const B: [f32; 4] = [4.893_525e-3, 2.268_434_6e-3, 1.185_347e-4, 1.198_258_4e-6];
    let x = x.clamp(-CLAMP, CLAMP);
    let x2 = x * x;
    let p = A.iter().rev().fold(0.0, |acc, &a| acc * x2 + a) * x;
    let q = B.iter().rev().fold(0.0, |acc, &b| acc * x2 + b);
    p / q
}

/// `tanh(t)·sigmoid(s)` with `sigmoid(s) = (1 + tanh(s/2))/2`: WaveNet's gated activation.
pub fn tanh_sigmoid_gate(t: f32, s: f32) -> f32 {
    fast_tanh(t) * (0.5 + 0.5 * fast_tanh(0.5 * s))
}

/// `log(1 + e^x)` without overflow for large `x` (PyTorch's threshold is 20).
pub fn softplus(v: f32) -> f32 {
    if v > 20.0 {
        v
    } else {
        v.exp().ln_1p()
    }
}

/// `a += b`, in parallel for large tensors.
pub fn add_inplace(a: &mut [f32], b: &[f32]) {
    if a.len() < PAR_MIN {
        a.iter_mut().zip(b).for_each(|(a, &b)| *a += b);
    } else {
        a.par_chunks_mut(PAR_CHUNK).zip(b.par_chunks(PAR_CHUNK)).for_each(|(a, b)| {
            a.iter_mut().zip(b).for_each(|(a, &b)| *a += b);
        });
    }
}

/// VITS's `modules.LayerNorm`: per time step, normalise over the `C` channels of a
/// channels-first `[C][L]` tensor, then scale by `gamma` and shift by `beta`.
/// Sums run over rows so the inner loops stay contiguous.
pub fn layer_norm_channels(x: &mut [f32], len: usize, gamma: &[f32], beta: &[f32], eps: f32) {
    let c = gamma.len();
    let mut mean = vec![0f32; len];
    for row in x.chunks_exact(len) {
        mean.iter_mut().zip(row).for_each(|(m, &v)| *m += v);
    }
    mean.iter_mut().for_each(|m| *m /= c as f32);
    let mut var = vec![0f32; len];
    for row in x.chunks_exact(len) {
        var.iter_mut().zip(row).zip(&mean).for_each(|((s, &v), &m)| *s += (v - m) * (v - m));
    }
    let inv_std: Vec<f32> = var.iter().map(|&s| 1.0 / (s / c as f32 + eps).sqrt()).collect();
    for ((row, &g), &b) in x.chunks_exact_mut(len).zip(gamma).zip(beta) {
        for ((v, &m), &r) in row.iter_mut().zip(&mean).zip(&inv_std) {
            *v = (*v - m) * r * g + b;
        }
    }
}

/// Columns `[from, to)` of a channels-first `[C][len]` tensor, as a `[C][to - from]` tensor.
pub fn columns(x: &[f32], len: usize, from: usize, to: usize) -> Vec<f32> {
    let mut out = Vec::with_capacity(x.len() / len.max(1) * (to - from));
    for row in x.chunks_exact(len) {
        out.extend_from_slice(&row[from..to]);
    }
    out
}

/// Reverses the order of the channels (VITS's `Flip` on a `[C][L]` tensor).
pub fn flip_channels(x: &mut [f32], len: usize) {
    let c = x.len() / len;
    for i in 0..c / 2 {
        let (head, tail) = x.split_at_mut((c - 1 - i) * len);
        head[i * len..(i + 1) * len].swap_with_slice(&mut tail[..len]);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn layer_norm_normalises_each_time_step_over_channels() {
        // 3 channels × 2 steps: step 0 is (1, 2, 3), step 1 is (4, 4, 4).
        let mut x = vec![1.0, 4.0, 2.0, 4.0, 3.0, 4.0];
        layer_norm_channels(&mut x, 2, &[1.0, 1.0, 2.0], &[0.0, 0.5, 0.0], 1e-5);
        let s = (2.0f32 / 3.0 + 1e-5).sqrt();
        let want = [-1.0 / s, 0.0, 0.5, 0.5, 2.0 / s, 0.0];
        for (a, b) in x.iter().zip(want) {
            assert!((a - b).abs() < 1e-5, "{x:?} vs {want:?}");
        }
    }

    #[test]
    fn flip_reverses_channel_rows() {
        let mut x = vec![0.0, 1.0, 2.0, 3.0, 4.0, 5.0];
        flip_channels(&mut x, 2);
        assert_eq!(x, [4.0, 5.0, 2.0, 3.0, 0.0, 1.0]);
    }

    #[test]
    fn fast_tanh_and_gate_match_std() {
        let (mut e_tanh, mut e_gate) = (0f32, 0f32);
        for i in -20_000..=20_000 {
            let x = i as f32 * 5e-4;
            e_tanh = e_tanh.max((fast_tanh(x) - x.tanh()).abs());
            e_gate = e_gate.max((tanh_sigmoid_gate(x, -x) - x.tanh() * sigmoid(-x)).abs());
        }
        assert!(e_tanh < 1e-6 && e_gate < 1e-6, "tanh error {e_tanh:e}, gate error {e_gate:e}");
        assert!((fast_tanh(50.0) - 1.0).abs() < 1e-6 && (fast_tanh(-50.0) + 1.0).abs() < 1e-6);
    }

    #[test]
    fn gelu_matches_known_values() {
        assert!((gelu(1.0) - 0.841_344_7).abs() < 1e-6);
        assert!((gelu(-1.0) + 0.158_655_3).abs() < 1e-6);
        assert!((softplus(0.0) - std::f32::consts::LN_2).abs() < 1e-7);
    }
}
