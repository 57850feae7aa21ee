//! Activation statistics streamed batch by batch: per-channel mean, variance, mean |x| and
//! max |x|, and per-layer summaries, without ever holding more than one batch of activations.
//!
//! Per channel, each batch's mean and sum of squared deviations are merged into the running
//! ones with Chan et al.'s pairwise update (Welford's method for batches), all in f64, so the
//! result matches a two-pass computation even for channels with a large mean (the residual
//! stream's "massive activation" channels). The pooled moments behind the kurtosis are summed
//! about a shift taken from the first batch for the same reason.

use serde::{Deserialize, Serialize};

/// Per-channel statistics of one activation (rows are tokens, columns channels).
#[derive(Debug, Clone, PartialEq, Default)]
pub struct ChannelStats {
    pub mean: Vec<f32>,
    /// Population variance (divided by the token count).
    pub variance: Vec<f32>,
    pub mean_abs: Vec<f32>,
    pub max_abs: Vec<f32>,
}

/// One layer's activation in three numbers.
#[derive(Debug, Clone, Copy, PartialEq, Default, Serialize, Deserialize)]
pub struct ActivationSummary {
    /// Mean over tokens of each token's RMS over channels.
    pub mean_rms: f64,
    /// Kurtosis E[(x-μ)⁴]/σ⁴ of all values pooled (3 for a Gaussian; heavy tails and outlier
    /// channels raise it); 0 when every value is the same.
    pub kurtosis: f64,
    /// Fraction of channels whose max |x| exceeds [`OUTLIER_FACTOR`] times the pooled RMS.
    pub outlier_fraction: f64,
}

/// A channel is an outlier when some token's |x| in it exceeds this many pooled RMS (the
/// "6" of LLM.int8's outlier features, made relative to the activation's scale).
pub const OUTLIER_FACTOR: f64 = 6.0;

/// Running statistics of one activation of width `width`.
#[derive(Debug, Clone)]
pub struct ChannelAccumulator {
    width: usize,
    count: u64,
    mean: Vec<f64>,
    m2: Vec<f64>,
    sum_abs: Vec<f64>,
    max_abs: Vec<f32>,
    /// Shift of the pooled moments (the first batch's pooled mean) and Σ(x-shift)^p, p = 1..4.
    shift: Option<f64>,
    pooled: [f64; 4],
    sum_row_rms: f64,
}

impl ChannelAccumulator {
    pub fn new(width: usize) -> Self {
        ChannelAccumulator {
            width,
            count: 0,
            mean: vec![0.0; width],
            m2: vec![0.0; width],
            sum_abs: vec![0.0; width],
            max_abs: vec![0.0; width],
            shift: None,
            pooled: [0.0; 4],
            sum_row_rms: 0.0,
        }
    }

    pub fn count(&self) -> u64 {
        self.count
    }

    /// Adds a batch of rows (`rows × width`, row-major). A trailing partial row is ignored.
    pub fn add(&mut self, x: &[f32]) {
        let w = self.width;
        let rows = x.len() / w;
        if rows == 0 {
            return;
        }
        let x = &x[..rows * w];
        let nb = rows as f64;
        let mut batch_mean = vec![0f64; w];
        for row in x.chunks_exact(w) {
            let mut sq = 0f64;
            for (j, &v) in row.iter().enumerate() {
                let v64 = f64::from(v);
                batch_mean[j] += v64;
                self.sum_abs[j] += v64.abs();
                self.max_abs[j] = self.max_abs[j].max(v.abs());
                sq += v64 * v64;
            }
            self.sum_row_rms += (sq / w as f64).sqrt();
        }
        batch_mean.iter_mut().for_each(|m| *m /= nb);
        let mut batch_m2 = vec![0f64; w];
        for row in x.chunks_exact(w) {
            for (j, &v) in row.iter().enumerate() {
                let d = f64::from(v) - batch_mean[j];
                batch_m2[j] += d * d;
            }
        }
        let na = self.count as f64;
        let n = na + nb;
        for j in 0..w {
            let delta = batch_mean[j] - self.mean[j];
            self.mean[j] += delta * nb / n;
            self.m2[j] += batch_m2[j] + delta * delta * na * nb / n;
        }

        let shift = *self
            .shift
            .get_or_insert_with(|| batch_mean.iter().sum::<f64>() / w as f64);
        for &v in x {
            let d = f64::from(v) - shift;
            let d2 = d * d;
            self.pooled[0] += d;
            self.pooled[1] += d2;
            self.pooled[2] += d2 * d;
            self.pooled[3] += d2 * d2;
        }
        self.count += rows as u64;
    }

    /// The statistics so far (all zero before any batch).
    pub fn finish(&self) -> (ChannelStats, ActivationSummary) {
        if self.count == 0 {
            let zeros = vec![0f32; self.width];
            let stats = ChannelStats {
                mean: zeros.clone(),
                variance: zeros.clone(),
                mean_abs: zeros.clone(),
                max_abs: zeros,
            };
            return (stats, ActivationSummary::default());
        }
        let n = self.count as f64;
        let stats = ChannelStats {
            mean: self.mean.iter().map(|&m| m as f32).collect(),
            variance: self.m2.iter().map(|&m2| (m2 / n) as f32).collect(),
            mean_abs: self.sum_abs.iter().map(|&s| (s / n) as f32).collect(),
            max_abs: self.max_abs.clone(),
        };

        let total = n * self.width as f64;
        let [s1, s2, s3, s4] = self.pooled.map(|s| s / total);
        // Central moments from the moments about the shift.
        let var = (s2 - s1 * s1).max(0.0);
        let m4 = s4 - 4.0 * s1 * s3 + 6.0 * s1 * s1 * s2 - 3.0 * s1.powi(4);
        let kurtosis = if var > 0.0 {
            (m4 / (var * var)).max(0.0)
        } else {
            0.0
        };
        let pooled_mean = self.shift.unwrap_or(0.0) + s1;
        let rms = (var + pooled_mean * pooled_mean).sqrt();
        let outliers = self
            .max_abs
            .iter()
            .filter(|&&m| f64::from(m) > OUTLIER_FACTOR * rms)
            .count();
        let summary = ActivationSummary {
            mean_rms: self.sum_row_rms / n,
            kurtosis,
            outlier_fraction: outliers as f64 / self.width as f64,
        };
        (stats, summary)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::{Rng, SeedableRng};
    use rand_chacha::ChaCha8Rng;

    /// Rows with per-channel means far from zero and one heavy channel, like a residual stream.
    fn data(rows: usize, width: usize, seed: u64) -> Vec<f32> {
        let mut rng = ChaCha8Rng::seed_from_u64(seed);
        (0..rows * width)
            .map(|i| {
                let j = i % width;
                let offset = if j == 3 { 400.0 } else { j as f32 * 0.5 - 2.0 };
                offset + rng.gen_range(-1.0f32..1.0) * (1.0 + j as f32 * 0.1)
            })
            .collect()
    }

    fn close(a: f64, b: f64, rel: f64) -> bool {
        (a - b).abs() <= rel * a.abs().max(b.abs()).max(1e-12)
    }

    #[test]
    fn streamed_stats_equal_two_pass_stats() {
        let (rows, width) = (1000, 64);
        let x = data(rows, width, 7);
        let mut acc = ChannelAccumulator::new(width);
        // Uneven batches, as the forward pass's chunks are.
        for batch in [
            &x[..37 * width],
            &x[37 * width..500 * width],
            &x[500 * width..501 * width],
            &x[501 * width..],
        ] {
            acc.add(batch);
        }
        assert_eq!(acc.count(), rows as u64);
        let (stats, summary) = acc.finish();

        let n = rows as f64;
        let col = |j: usize| x.iter().skip(j).step_by(width).map(|&v| f64::from(v));
        for j in 0..width {
            let mean = col(j).sum::<f64>() / n;
            let var = col(j).map(|v| (v - mean) * (v - mean)).sum::<f64>() / n;
            let mean_abs = col(j).map(f64::abs).sum::<f64>() / n;
            let max_abs = col(j).map(f64::abs).fold(0.0, f64::max);
            assert!(close(f64::from(stats.mean[j]), mean, 1e-6), "mean {j}");
            assert!(
                close(f64::from(stats.variance[j]), var, 1e-6),
                "variance {j}: {} vs {var}",
                stats.variance[j]
            );
            assert!(
                close(f64::from(stats.mean_abs[j]), mean_abs, 1e-6),
                "mean_abs {j}"
            );
            assert_eq!(f64::from(stats.max_abs[j]), max_abs, "max_abs {j}");
        }

        let all = || x.iter().map(|&v| f64::from(v));
        let total = (rows * width) as f64;
        let mu = all().sum::<f64>() / total;
        let var = all().map(|v| (v - mu).powi(2)).sum::<f64>() / total;
        let kurt = all().map(|v| (v - mu).powi(4)).sum::<f64>() / total / (var * var);
        assert!(
            close(summary.kurtosis, kurt, 1e-9),
            "{} vs {kurt}",
            summary.kurtosis
        );
        let rms = (all().map(|v| v * v).sum::<f64>() / total).sqrt();
        let outliers = (0..width)
            .filter(|&j| col(j).map(f64::abs).fold(0.0, f64::max) > OUTLIER_FACTOR * rms)
            .count();
        assert_eq!(summary.outlier_fraction, outliers as f64 / width as f64);
        assert!(outliers >= 1, "the heavy channel is an outlier");
        let mean_rms = x
            .chunks_exact(width)
            .map(|r| (r.iter().map(|&v| f64::from(v).powi(2)).sum::<f64>() / width as f64).sqrt())
            .sum::<f64>()
            / n;
        assert!(close(summary.mean_rms, mean_rms, 1e-12));
    }

    #[test]
    fn constant_activations_give_zero_variance_and_kurtosis() {
        let mut acc = ChannelAccumulator::new(4);
        acc.add(&[2.0; 40]);
        let (stats, summary) = acc.finish();
        assert!(stats.variance.iter().all(|&v| v == 0.0));
        assert_eq!(summary.kurtosis, 0.0);
        assert_eq!(summary.outlier_fraction, 0.0);
        assert_eq!(
            ChannelAccumulator::new(3).finish().1,
            ActivationSummary::default()
        );
    }
}
