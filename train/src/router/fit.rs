//! Training the classifier: softmax cross-entropy over standardized pooled states, full
//! batch, AdamW (`crate::optim`), seeded initialization.

use nexus_runtime::router::Dense;
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;

use crate::optim::{adamw_step, AdamW};

#[derive(Debug, Clone, Copy)]
pub struct FitConfig {
    /// Hidden width of a two-layer classifier; 0 for a linear one.
    pub hidden: usize,
    pub steps: usize,
    pub lr: f32,
    pub weight_decay: f32,
    pub seed: u64,
}

/// Logits of every example, and the hidden activations (after ReLU) for the backward pass.
fn forward(layers: &[Dense], x: &[Vec<f32>]) -> (Vec<Vec<f32>>, Vec<Vec<f32>>) {
    let mut hidden = Vec::new();
    let logits = x
        .iter()
        .map(|xi| match layers {
            [only] => only.forward(xi),
            [first, second] => {
                let h: Vec<f32> = first.forward(xi).into_iter().map(|v| v.max(0.0)).collect();
                let y = second.forward(&h);
                hidden.push(h);
                y
            }
            _ => unreachable!("a classifier has one or two layers"),
        })
        .collect();
    (logits, hidden)
}

fn softmax(z: &[f32]) -> Vec<f32> {
    let max = z.iter().copied().fold(f32::NEG_INFINITY, f32::max);
    let e: Vec<f32> = z.iter().map(|v| (v - max).exp()).collect();
    let s: f32 = e.iter().sum();
    e.into_iter().map(|v| v / s).collect()
}

/// The gradient of one dense layer: (weight, bias).
pub type DenseGrad = (Vec<f32>, Vec<f32>);

/// Mean cross-entropy of `layers` on (x, y) and its gradients, one per layer.
pub fn loss_and_grads(layers: &[Dense], x: &[Vec<f32>], y: &[usize]) -> (f64, Vec<DenseGrad>) {
    let (logits, hidden) = forward(layers, x);
    let n = x.len() as f32;
    let mut grads: Vec<DenseGrad> = layers.iter().map(|l| (vec![0.0; l.weight.len()], vec![0.0; l.bias.len()])).collect();
    let mut loss = 0.0f64;
    let last = layers.len() - 1;
    for (i, z) in logits.iter().enumerate() {
        let mut p = softmax(z);
        loss -= (p[y[i]].max(1e-30) as f64).ln();
        p[y[i]] -= 1.0;
        let dz: Vec<f32> = p.iter().map(|v| v / n).collect();
        let input: &[f32] = if last == 1 { &hidden[i] } else { &x[i] };
        let mut dinput = vec![0.0f32; input.len()];
        accumulate(&layers[last], input, &dz, &mut grads[last], &mut dinput);
        if last == 1 {
            let dh: Vec<f32> = dinput.iter().zip(&hidden[i]).map(|(d, h)| if *h > 0.0 { *d } else { 0.0 }).collect();
            let mut unused = vec![0.0f32; x[i].len()];
            accumulate(&layers[0], &x[i], &dh, &mut grads[0], &mut unused);
        }
    }
    (loss / x.len() as f64, grads)
}

/// Adds one example's gradient of a dense layer: dW += dy·xᵀ, db += dy, dx = Wᵀ·dy.
fn accumulate(layer: &Dense, x: &[f32], dy: &[f32], grad: &mut DenseGrad, dx: &mut [f32]) {
    for (o, &g) in dy.iter().enumerate() {
        let row = &layer.weight[o * layer.n_in..(o + 1) * layer.n_in];
        let grow = &mut grad.0[o * layer.n_in..(o + 1) * layer.n_in];
        for j in 0..layer.n_in {
            grow[j] += g * x[j];
            dx[j] += g * row[j];
        }
        grad.1[o] += g;
    }
}

fn init_dense(n_in: usize, n_out: usize, rng: &mut ChaCha8Rng) -> Dense {
    let bound = (1.0 / n_in as f32).sqrt();
    let weight = (0..n_in * n_out).map(|_| rng.gen_range(-bound..bound)).collect();
    Dense { n_in, n_out, weight, bias: vec![0.0; n_out] }
}

/// Trains a classifier of `n_classes` outputs; returns its layers and the final training loss,
/// or the step at which the loss stopped being finite.
pub fn fit(x: &[Vec<f32>], y: &[usize], n_classes: usize, cfg: &FitConfig) -> Result<(Vec<Dense>, f64), usize> {
    let d = x.first().map_or(0, Vec::len);
    let mut rng = ChaCha8Rng::seed_from_u64(cfg.seed);
    let mut layers = match cfg.hidden {
        0 => vec![init_dense(d, n_classes, &mut rng)],
        h => vec![init_dense(d, h, &mut rng), init_dense(h, n_classes, &mut rng)],
    };
    let opt = AdamW { lr: cfg.lr, weight_decay: cfg.weight_decay, ..AdamW::default() };
    let mut moments: Vec<[Vec<f32>; 4]> =
        layers.iter().map(|l| [vec![0.0; l.weight.len()], vec![0.0; l.weight.len()], vec![0.0; l.n_out], vec![0.0; l.n_out]]).collect();
    let mut loss = f64::NAN;
    for step in 1..=cfg.steps {
        let (l, grads) = loss_and_grads(&layers, x, y);
        if !l.is_finite() {
            return Err(step);
        }
        loss = l;
        for ((layer, (gw, gb)), [mw, vw, mb, vb]) in layers.iter_mut().zip(&grads).zip(&mut moments) {
            adamw_step(&mut layer.weight, gw, mw, vw, step, cfg.lr, &opt, true);
            adamw_step(&mut layer.bias, gb, mb, vb, step, cfg.lr, &opt, false);
        }
    }
    Ok((layers, loss))
}

/// The most likely class of each example.
pub fn predict(layers: &[Dense], x: &[Vec<f32>]) -> Vec<usize> {
    forward(layers, x)
        .0
        .iter()
        .map(|z| z.iter().enumerate().fold((0, f32::NEG_INFINITY), |a, (i, &v)| if v > a.1 { (i, v) } else { a }).0)
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The analytic gradients of both layers equal central finite differences (in f32, on a
    /// small problem, with a tolerance of 2% of each gradient's scale).
    #[test]
    fn gradients_match_finite_differences() {
        let mut rng = ChaCha8Rng::seed_from_u64(3);
        let x: Vec<Vec<f32>> = (0..6).map(|_| (0..5).map(|_| rng.gen_range(-1.0..1.0)).collect()).collect();
        let y = vec![0, 1, 2, 1, 0, 2];
        for hidden in [0, 4] {
            let layers = match hidden {
                0 => vec![init_dense(5, 3, &mut rng)],
                h => vec![init_dense(5, h, &mut rng), init_dense(h, 3, &mut rng)],
            };
            let (_, grads) = loss_and_grads(&layers, &x, &y);
            for (li, (gw, gb)) in grads.iter().enumerate() {
                for (is_bias, g) in [(false, gw), (true, gb)] {
                    let scale = g.iter().fold(0.0f32, |a, v| a.max(v.abs())).max(1e-3);
                    for k in 0..g.len() {
                        let eps = 1e-2f32;
                        let mut plus = layers.clone();
                        let mut minus = layers.clone();
                        let (p, m) = if is_bias { (&mut plus[li].bias, &mut minus[li].bias) } else { (&mut plus[li].weight, &mut minus[li].weight) };
                        p[k] += eps;
                        m[k] -= eps;
                        let fd = (loss_and_grads(&plus, &x, &y).0 - loss_and_grads(&minus, &x, &y).0) / (2.0 * eps as f64);
                        assert!((fd as f32 - g[k]).abs() <= 0.02 * scale, "hidden {hidden}, layer {li}, bias {is_bias}, {k}: {fd} vs {}", g[k]);
                    }
                }
            }
        }
    }

    /// Two separable clusters are learned; the same seed gives the same weights.
    #[test]
    fn separable_clusters_are_learned_deterministically() {
        let x: Vec<Vec<f32>> = (0..40).map(|i| vec![if i % 2 == 0 { 1.0 } else { -1.0 }, (i as f32 * 0.37).sin()]).collect();
        let y: Vec<usize> = (0..40).map(|i| i % 2).collect();
        let cfg = FitConfig { hidden: 8, steps: 200, lr: 1e-2, weight_decay: 0.0, seed: 5 };
        let (a, loss) = fit(&x, &y, 2, &cfg).unwrap();
        let (b, _) = fit(&x, &y, 2, &cfg).unwrap();
        assert_eq!(a, b);
        assert!(loss < 0.1, "loss {loss}");
        assert_eq!(predict(&a, &x), y);
    }
}
