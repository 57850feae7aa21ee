//! The inverse of the rational-quadratic spline with linear tails (Durkan et al., "Neural
//! Spline Flows"), as VITS's `transforms.piecewise_rational_quadratic_transform(inverse=True,
//! tails="linear")` computes it, step for step in f32 so the result matches the exported graph.

use super::ops::softplus;

const MIN_BIN_WIDTH: f32 = 1e-3;
const MIN_BIN_HEIGHT: f32 = 1e-3;
const MIN_DERIVATIVE: f32 = 1e-3;
/// Added to the last knot in the bin search so that `x = tail_bound` lands in the last bin.
const SEARCH_EPS: f32 = 1e-6;

/// One spline's parameters, from the ConvFlow projection at one position:
/// `n_bins` widths, `n_bins` heights (both unnormalised, divided by `scale` before the
/// softmax), then `n_bins − 1` inner knot derivatives.
pub struct SplineParams<'a> {
    pub raw: &'a [f32],
    pub n_bins: usize,
    pub scale: f32,
    pub tail_bound: f32,
}

/// Maps `y` back through the spline; outside `[−tail_bound, tail_bound]` it is the identity.
pub fn inverse_rq_spline(y: f32, p: &SplineParams) -> f32 {
    let (n, tb) = (p.n_bins, p.tail_bound);
    if !(-tb..=tb).contains(&y) {
        return y;
    }
    let cumwidths = knots(&p.raw[..n], p.scale, MIN_BIN_WIDTH, tb);
    let cumheights = knots(&p.raw[n..2 * n], p.scale, MIN_BIN_HEIGHT, tb);
    // Boundary derivatives are fixed so that softplus gives exactly 1 − min: slope 1 at the
    // tails, matching the identity outside.
    let boundary = ((1.0 - MIN_DERIVATIVE as f64).exp() - 1.0).ln() as f32;
    let derivative = |i: usize| {
        let raw = if i == 0 || i == n { boundary } else { p.raw[2 * n + i - 1] };
        MIN_DERIVATIVE + softplus(raw)
    };

    let below = cumheights.iter().enumerate().filter(|&(i, &c)| y >= if i == n { c + SEARCH_EPS } else { c });
    let k = below.count().saturating_sub(1).min(n - 1);

    let (x_k, w_k) = (cumwidths[k], cumwidths[k + 1] - cumwidths[k]);
    let (y_k, h_k) = (cumheights[k], cumheights[k + 1] - cumheights[k]);
    let delta = h_k / w_k;
    let (d_k, d_k1) = (derivative(k), derivative(k + 1));

    let u = y - y_k;
    let s = d_k + d_k1 - 2.0 * delta;
    let a = u * s + h_k * (delta - d_k);
    let b = h_k * d_k - u * s;
    let c = -delta * u;
    let discriminant = b * b - 4.0 * a * c;
    let theta = (2.0 * c) / (-b - discriminant.sqrt());
    theta * w_k + x_k
}

/// Knot positions `[n + 1]` on `[−tail_bound, tail_bound]` from unnormalised bin sizes.
fn knots(raw: &[f32], scale: f32, min_size: f32, tail_bound: f32) -> Vec<f32> {
    let n = raw.len();
    let max = raw.iter().fold(f32::NEG_INFINITY, |m, &v| m.max(v / scale));
    let e: Vec<f32> = raw.iter().map(|&v| (v / scale - max).exp()).collect();
    let sum: f32 = e.iter().sum();
    let mut out = Vec::with_capacity(n + 1);
    out.push(-tail_bound);
    let mut cum = 0f32;
    for (i, &ei) in e.iter().enumerate() {
        cum += min_size + (1.0 - min_size * n as f32) * (ei / sum);
        out.push(if i + 1 == n { tail_bound } else { 2.0 * tail_bound * cum - tail_bound });
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The forward spline (Durkan et al. eq. 4), to check that the inverse undoes it.
    fn forward(x: f32, p: &SplineParams) -> f32 {
        let n = p.n_bins;
        let cw = knots(&p.raw[..n], p.scale, MIN_BIN_WIDTH, p.tail_bound);
        let ch = knots(&p.raw[n..2 * n], p.scale, MIN_BIN_HEIGHT, p.tail_bound);
        let boundary = ((1.0 - MIN_DERIVATIVE as f64).exp() - 1.0).ln() as f32;
        let d = |i: usize| MIN_DERIVATIVE + softplus(if i == 0 || i == n { boundary } else { p.raw[2 * n + i - 1] });
        let k = (0..n).rev().find(|&i| x >= cw[i]).unwrap_or(0);
        let (w, h) = (cw[k + 1] - cw[k], ch[k + 1] - ch[k]);
        let delta = h / w;
        let th = (x - cw[k]) / w;
        let num = h * (delta * th * th + d(k) * th * (1.0 - th));
        let den = delta + (d(k + 1) + d(k) - 2.0 * delta) * th * (1.0 - th);
        ch[k] + num / den
    }

    #[test]
    fn inverse_undoes_forward_and_tails_are_identity() {
        let raw: Vec<f32> = (0..29).map(|i| ((i * 7919) % 23) as f32 * 0.9 - 9.0).collect();
        let p = SplineParams { raw: &raw, n_bins: 10, scale: 192f32.sqrt(), tail_bound: 5.0 };
        for i in 0..=100 {
            let x = -4.99 + 9.98 * i as f32 / 100.0;
            let back = inverse_rq_spline(forward(x, &p), &p);
            assert!((back - x).abs() < 1e-4, "x {x} → {back}");
        }
        assert_eq!(inverse_rq_spline(7.5, &p), 7.5);
        assert_eq!(inverse_rq_spline(-5.5, &p), -5.5);
    }
}
