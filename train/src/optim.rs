//! The optimizer: AdamW with PyTorch's semantics (decoupled weight decay, bias-corrected
//! moments), a warm-up + cosine learning-rate schedule, and global gradient-norm clipping.
//! Parameters and both moments are f32; norms are accumulated in f64.
//!
//! Everything here is deterministic regardless of the number of rayon threads: the update is
//! element-wise, and reductions use a fixed chunking whose partial sums are added in order.

use nexus_kernels::adamw::AdamCoefficients;

use crate::student::Params;
use rayon::prelude::*;
use serde::{Deserialize, Serialize};

/// Elements per rayon task in the element-wise update and in reductions. Fixed (not derived
/// from the thread count) so that partial sums, and therefore norms, are the same everywhere.
const CHUNK: usize = 1 << 14;

/// AdamW hyper-parameters (PyTorch's `torch.optim.AdamW` names and meaning).
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct AdamW {
    pub lr: f32,
    pub beta1: f32,
    pub beta2: f32,
    pub eps: f32,
    pub weight_decay: f32,
}

impl Default for AdamW {
    /// lr 1e-3, betas (0.9, 0.95) and weight decay 0.1: the GPT-style pre-training settings.
    fn default() -> Self {
        AdamW {
            lr: 1e-3,
            beta1: 0.9,
            beta2: 0.95,
            eps: 1e-8,
            weight_decay: 0.1,
        }
    }
}

/// Linear warm-up, then cosine decay to a floor.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct Schedule {
    /// Steps of linear warm-up (0: none).
    pub warmup: usize,
    /// Steps of the whole run: the cosine reaches its floor at step `total - 1`.
    pub total: usize,
    /// The floor as a fraction of the base rate.
    pub min_lr_ratio: f32,
}

impl Schedule {
    /// The learning rate at `step` (counted from 0): `base·(step+1)/warmup` during warm-up
    /// (so `base/warmup` at step 0 and `base` at step `warmup - 1`), then a cosine from `base`
    /// at step `warmup` to `base·min_lr_ratio` at step `total - 1`; later steps stay at the
    /// floor. When `total ≤ warmup + 1` there is no room for a decay and every step after the
    /// warm-up is at the floor.
    pub fn lr(&self, base: f32, step: usize) -> f32 {
        let floor = base as f64 * self.min_lr_ratio as f64;
        if step < self.warmup {
            return (base as f64 * (step + 1) as f64 / self.warmup as f64) as f32;
        }
        let span = self.total.saturating_sub(1).saturating_sub(self.warmup);
        if span == 0 {
            return floor as f32;
        }
        let progress = ((step - self.warmup) as f64 / span as f64).min(1.0);
        let cos = 0.5 * (1.0 + (std::f64::consts::PI * progress).cos());
        (floor + (base as f64 - floor) * cos) as f32
    }
}

/// One AdamW step on one tensor, as `torch.optim.AdamW` (single-tensor, non-fused) does it:
///
/// ```text
/// param ← param · (1 − lr·weight_decay)            (only when `decay`)
/// m ← β1·m + (1 − β1)·g
/// v ← β2·v + (1 − β2)·g²
/// param ← param − (lr / (1 − β1ᵗ)) · m / (√v / √(1 − β2ᵗ) + eps)
/// ```
///
/// `t` is the 1-based number of this step (the bias corrections use it). Large tensors are
/// updated in parallel chunks; every element's arithmetic is the same whatever the split.
///
/// # Panics
/// If `grad`, `m` or `v` is not as long as `param`, or `t` is 0: both are programming errors
/// (the moments are made with the parameters' shapes; steps count from 1), not bad input.
#[allow(clippy::too_many_arguments)]
pub fn adamw_step(
    param: &mut [f32],
    grad: &[f32],
    m: &mut [f32],
    v: &mut [f32],
    t: usize,
    lr: f32,
    cfg: &AdamW,
    decay: bool,
) {
    let n = param.len();
    assert!(
        grad.len() == n && m.len() == n && v.len() == n,
        "adamw_step: param {n}, grad {}, m {}, v {} elements",
        grad.len(),
        m.len(),
        v.len()
    );
    assert!(t >= 1, "adamw_step: the step count t is 1-based");
    let k = coefficients(t, lr, cfg, decay);
    if n <= CHUNK {
        k.apply(param, grad, m, v);
        return;
    }
    param
        .par_chunks_mut(CHUNK)
        .zip(grad.par_chunks(CHUNK))
        .zip(m.par_chunks_mut(CHUNK))
        .zip(v.par_chunks_mut(CHUNK))
        .for_each(|(((p, g), m), v)| k.apply(p, g, m, v));
}

/// The per-step constants of [`adamw_step`] for step `t` (1-based) at learning rate `lr`;
/// `decay` applies the weight decay. The CUDA engine's update takes the same constants.
pub(crate) fn coefficients(t: usize, lr: f32, cfg: &AdamW, decay: bool) -> AdamCoefficients {
    // Scalars in f64, as PyTorch computes them in Python floats, then rounded once.
    let t = t.min(i32::MAX as usize) as i32;
    let bias1 = 1.0 - (cfg.beta1 as f64).powi(t);
    let bias2_sqrt = (1.0 - (cfg.beta2 as f64).powi(t)).sqrt();
    AdamCoefficients {
        keep: if decay {
            (1.0 - lr as f64 * cfg.weight_decay as f64) as f32
        } else {
            1.0
        },
        beta1: cfg.beta1,
        one_minus_beta1: 1.0 - cfg.beta1,
        beta2: cfg.beta2,
        one_minus_beta2: 1.0 - cfg.beta2,
        step_size: (lr as f64 / bias1) as f32,
        bias2_sqrt: bias2_sqrt as f32,
        eps: cfg.eps,
    }
}

/// Whether weight decay applies to the tensor `name` (a GGUF name from `Params::named`): to
/// every matrix, not to RMSNorm weights (`*_norm.weight`), whose natural value is 1 and which
/// decay would pull towards 0. The token embedding decays too: it is a matrix, and GPT-2 /
/// llm.c decay every 2-D tensor (and a tied embedding is also the output head).
pub fn decays(name: &str) -> bool {
    !name.ends_with("_norm.weight")
}

/// Σ x² of one slice in f64, over fixed chunks whose partial sums are added in order.
fn sum_squares(t: &[f32]) -> f64 {
    let partial: Vec<f64> = t
        .par_chunks(CHUNK)
        .map(|c| c.iter().map(|&x| x as f64 * x as f64).sum::<f64>())
        .collect();
    partial.iter().sum()
}

/// The L2 norm of all `tensors` together, accumulated in f64; the same bits whatever the
/// number of threads.
pub fn global_norm(tensors: &[&[f32]]) -> f64 {
    tensors.iter().map(|t| sum_squares(t)).sum::<f64>().sqrt()
}

/// Clips gradients to a global L2 norm of `max_norm` (`max_norm ≤ 0`: no clipping) and
/// returns the norm before clipping. When the norm exceeds `max_norm` every gradient is
/// scaled by `max_norm / norm`. A non-finite norm is returned unchanged and nothing is
/// scaled: the caller decides what to do with the step (and reports it).
pub fn clip_grad_norm(grads: &mut [&mut Vec<f32>], max_norm: f64) -> f64 {
    let norm = {
        let views: Vec<&[f32]> = grads.iter().map(|g| g.as_slice()).collect();
        global_norm(&views)
    };
    if let Some(scale) = clip_factor(norm, max_norm) {
        for g in grads.iter_mut() {
            g.par_chunks_mut(CHUNK)
                .for_each(|c| c.iter_mut().for_each(|x| *x *= scale));
        }
    }
    norm
}

/// The factor [`clip_grad_norm`] scales gradients of global norm `norm` by: `max_norm / norm`
/// when a finite norm exceeds `max_norm > 0`, else `None` (no clipping). Every engine clips by
/// this rule, wherever its gradients live.
pub fn clip_factor(norm: f64, max_norm: f64) -> Option<f32> {
    (norm.is_finite() && max_norm > 0.0 && norm > max_norm).then(|| (max_norm / norm) as f32)
}

/// One AdamW step (the `t`-th) of every tensor of a student, decaying those [`decays`] names:
/// [`adamw_step`] over [`crate::student::Params::named`]'s tensors with their gradients and
/// moments.
pub fn adamw_params(params: &mut Params, grads: &mut Params, m: &mut Params, v: &mut Params, t: usize, lr: f32, cfg: &AdamW) {
    let names: Vec<String> = params.named().into_iter().map(|(n, _)| n).collect();
    let tensors = params.tensors_mut().into_iter().zip(grads.tensors_mut()).zip(m.tensors_mut()).zip(v.tensors_mut());
    for (name, (((p, g), m), v)) in names.iter().zip(tensors) {
        adamw_step(p, g, m, v, t, lr, cfg, decays(name));
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::{Rng, SeedableRng};
    use rand_chacha::ChaCha8Rng;

    /// PyTorch's documented AdamW algorithm (torch.optim.AdamW, "Algorithm" section) in f64:
    /// θ ← θ − γλθ; m ← β1 m + (1−β1) g; v ← β2 v + (1−β2) g²; m̂ = m/(1−β1ᵗ);
    /// v̂ = v/(1−β2ᵗ); θ ← θ − γ m̂ / (√v̂ + ε).
    struct Reference {
        theta: Vec<f64>,
        m: Vec<f64>,
        v: Vec<f64>,
    }

    impl Reference {
        fn step(&mut self, g: &[f32], t: i32, lr: f64, c: &AdamW, decay: bool) {
            let (b1, b2, eps, wd) = (
                c.beta1 as f64,
                c.beta2 as f64,
                c.eps as f64,
                c.weight_decay as f64,
            );
            for i in 0..self.theta.len() {
                let g = g[i] as f64;
                if decay {
                    self.theta[i] -= lr * wd * self.theta[i];
                }
                self.m[i] = b1 * self.m[i] + (1.0 - b1) * g;
                self.v[i] = b2 * self.v[i] + (1.0 - b2) * g * g;
                let m_hat = self.m[i] / (1.0 - b1.powi(t));
                let v_hat = self.v[i] / (1.0 - b2.powi(t));
                self.theta[i] -= lr * m_hat / (v_hat.sqrt() + eps);
            }
        }
    }

    fn rand_vec(rng: &mut ChaCha8Rng, n: usize, scale: f32) -> Vec<f32> {
        (0..n).map(|_| rng.gen_range(-scale..scale)).collect()
    }

    /// Ten steps with changing gradients (some zero, some tiny) and a changing learning rate,
    /// with and without decay, on a tensor large enough to be split over threads: every
    /// parameter within 1e-6 relative (plus 1e-7 absolute) of the f64 reference.
    #[test]
    fn adamw_matches_pytorch_algorithm_in_f64() {
        let mut rng = ChaCha8Rng::seed_from_u64(1);
        let n = 3 * CHUNK + 77;
        let cfg = AdamW {
            weight_decay: 0.3,
            ..AdamW::default()
        };
        for decay in [false, true] {
            let mut p = rand_vec(&mut rng, n, 1.0);
            let (mut m, mut v) = (vec![0f32; n], vec![0f32; n]);
            let mut r = Reference {
                theta: p.iter().map(|&x| x as f64).collect(),
                m: vec![0.0; n],
                v: vec![0.0; n],
            };
            for t in 1..=10 {
                let mut g = rand_vec(&mut rng, n, 0.5);
                g[0] = 0.0;
                g[1] = 1e-9;
                let lr = 1e-2 / t as f32;
                adamw_step(&mut p, &g, &mut m, &mut v, t, lr, &cfg, decay);
                r.step(&g, t as i32, lr as f64, &cfg, decay);
            }
            for (i, (&a, &b)) in p.iter().zip(&r.theta).enumerate() {
                assert!(
                    (a as f64 - b).abs() <= 1e-6 * b.abs() + 1e-7,
                    "decay={decay} element {i}: {a} vs {b}"
                );
            }
        }
    }

    /// The first step of Adam moves every parameter by ≈ lr·sign(g) (m̂/√v̂ = g/|g|).
    #[test]
    fn first_step_moves_by_lr() {
        let mut p = vec![1.0f32, -2.0, 0.5];
        let g = [0.3f32, -4.0, 1e-3];
        let (mut m, mut v) = (vec![0f32; 3], vec![0f32; 3]);
        let cfg = AdamW::default();
        adamw_step(&mut p, &g, &mut m, &mut v, 1, 0.01, &cfg, false);
        for (after, (before, g)) in p.iter().zip([(1.0f32, 0.3f32), (-2.0, -4.0), (0.5, 1e-3)]) {
            let want = before - 0.01 * g.signum();
            assert!((after - want).abs() < 1e-5, "{after} vs {want}");
        }
    }

    #[test]
    fn adamw_does_not_depend_on_thread_count() {
        let mut rng = ChaCha8Rng::seed_from_u64(2);
        let n = 5 * CHUNK + 3;
        let p0 = rand_vec(&mut rng, n, 1.0);
        let g = rand_vec(&mut rng, n, 1.0);
        let run = |threads: usize| {
            let pool = rayon::ThreadPoolBuilder::new()
                .num_threads(threads)
                .build()
                .unwrap();
            pool.install(|| {
                let (mut p, mut m, mut v) = (p0.clone(), vec![0f32; n], vec![0f32; n]);
                for t in 1..=3 {
                    adamw_step(&mut p, &g, &mut m, &mut v, t, 1e-3, &AdamW::default(), true);
                }
                let norm = global_norm(&[&p, &g]);
                (p, m, v, norm.to_bits())
            })
        };
        assert!(run(1) == run(3));
    }

    #[test]
    fn schedule_warmup_cosine_floor() {
        let s = Schedule {
            warmup: 4,
            total: 14,
            min_lr_ratio: 0.1,
        };
        let close = |a: f32, b: f32| (a - b).abs() <= 1e-7;
        assert!(close(s.lr(1.0, 0), 0.25));
        assert!(close(s.lr(1.0, 1), 0.5));
        assert!(close(s.lr(1.0, 3), 1.0));
        assert!(close(s.lr(1.0, 4), 1.0));
        // Half-way through the decay (steps 4..=13): the mean of base and floor.
        let mid = Schedule { total: 13, ..s };
        assert!(close(mid.lr(1.0, 8), 0.55), "{}", mid.lr(1.0, 8));
        assert!(close(s.lr(1.0, 13), 0.1));
        assert!(close(s.lr(1.0, 14), 0.1));
        assert!(close(s.lr(1.0, 1000), 0.1));
        let mut prev = f32::INFINITY;
        for step in 3..20 {
            let lr = s.lr(2.0, step);
            assert!(lr <= prev && lr >= 0.2 - 1e-6, "step {step}: {lr}");
            prev = lr;
        }
        let no_warmup = Schedule {
            warmup: 0,
            total: 3,
            min_lr_ratio: 0.0,
        };
        assert!(close(no_warmup.lr(1.0, 0), 1.0));
        assert!(close(no_warmup.lr(1.0, 1), 0.5));
        assert!(close(no_warmup.lr(1.0, 2), 0.0));
        let no_room = Schedule {
            warmup: 2,
            total: 2,
            min_lr_ratio: 0.5,
        };
        assert_eq!(
            [0, 1, 2, 9].map(|t| no_room.lr(1.0, t)),
            [0.5, 1.0, 0.5, 0.5]
        );
    }

    #[test]
    fn decay_skips_norms_only() {
        for name in [
            "token_embd.weight",
            "output.weight",
            "blk.0.attn_q.weight",
            "blk.3.ffn_down.weight",
        ] {
            assert!(decays(name), "{name}");
        }
        for name in [
            "output_norm.weight",
            "blk.0.attn_norm.weight",
            "blk.12.ffn_norm.weight",
        ] {
            assert!(!decays(name), "{name}");
        }
    }

    #[test]
    fn global_norm_is_exact_enough() {
        let a = vec![3.0f32; 4 * CHUNK + 1];
        let b = [4.0f32];
        let want = (9.0 * a.len() as f64 + 16.0).sqrt();
        assert_eq!(global_norm(&[&a, &b, &[]]), want);
        assert_eq!(global_norm(&[]), 0.0);
    }

    #[test]
    fn clipping() {
        let mut a = vec![3.0f32, 0.0];
        let mut b = vec![4.0f32];
        let norm = clip_grad_norm(&mut [&mut a, &mut b], 1.0);
        assert_eq!(norm, 5.0);
        assert!((a[0] - 0.6).abs() < 1e-7 && (b[0] - 0.8).abs() < 1e-7);
        let clipped = global_norm(&[&a, &b]);
        assert!((clipped - 1.0).abs() < 1e-6, "{clipped}");

        // Under the limit, or no limit: untouched.
        for max in [10.0, 0.0, -1.0] {
            let mut a = vec![3.0f32, 4.0];
            assert_eq!(clip_grad_norm(&mut [&mut a], max), 5.0);
            assert_eq!(a, [3.0, 4.0]);
        }
        // Non-finite: returned as is, nothing scaled.
        for bad in [f32::NAN, f32::INFINITY] {
            let mut a = vec![3.0f32, bad];
            let mut b = vec![4.0f32];
            let norm = clip_grad_norm(&mut [&mut a, &mut b], 1.0);
            assert!(!norm.is_finite());
            assert_eq!(a[0], 3.0);
            assert_eq!(b, [4.0]);
        }
    }
}
