//! Streaming covariance of an activation (f64 sums of x and xxᵀ, batch by batch) and its
//! eigen-decomposition into the principal subspace that holds a chosen fraction of variance.
//!
//! The sums are taken about a shift (the first batch's mean): Σ(x-c)(x-c)ᵀ/n - (m-c)(m-c)ᵀ
//! is the covariance for any c, and with c near the mean the subtraction loses no digits even
//! for the residual stream's channels whose mean is hundreds of times their spread.

use nalgebra::{DMatrix, DMatrixView, DMatrixViewMut, SymmetricEigen};
use rayon::prelude::*;

/// Running Σ(x-c) and Σ(x-c)(x-c)ᵀ of `dim`-wide rows.
#[derive(Debug, Clone)]
pub struct CovarianceAccumulator {
    dim: usize,
    count: u64,
    shift: Option<Vec<f64>>,
    sum: Vec<f64>,
    /// Column-major `dim × dim` (symmetric, so the layout does not matter to readers).
    outer: Vec<f64>,
}

/// The principal directions of one activation.
#[derive(Debug, Clone, PartialEq)]
pub struct Spectrum {
    /// All `dim` eigenvalues of the covariance, descending (tiny negative rounding kept as is).
    pub eigenvalues: Vec<f64>,
    /// The first `k` eigenvectors as rows (`k × dim`, orthonormal), each signed so that its
    /// largest-magnitude component is positive (a reproducible choice of the ± pair).
    pub basis: Vec<f32>,
    pub k: usize,
    pub mean: Vec<f32>,
}

impl CovarianceAccumulator {
    pub fn new(dim: usize) -> Self {
        CovarianceAccumulator {
            dim,
            count: 0,
            shift: None,
            sum: vec![0.0; dim],
            outer: vec![0.0; dim * dim],
        }
    }

    pub fn count(&self) -> u64 {
        self.count
    }

    /// Adds a batch of rows (`rows × dim`, row-major). A trailing partial row is ignored.
    pub fn add(&mut self, x: &[f32]) {
        let d = self.dim;
        let rows = x.len() / d;
        if rows == 0 {
            return;
        }
        let shift = self.shift.get_or_insert_with(|| {
            let mut mean = vec![0f64; d];
            for row in x[..rows * d].chunks_exact(d) {
                mean.iter_mut()
                    .zip(row)
                    .for_each(|(m, &v)| *m += f64::from(v));
            }
            mean.iter_mut().for_each(|m| *m /= rows as f64);
            mean
        });
        let centered: Vec<f64> = x[..rows * d]
            .iter()
            .enumerate()
            .map(|(i, &v)| f64::from(v) - shift[i % d])
            .collect();
        for row in centered.chunks_exact(d) {
            self.sum.iter_mut().zip(row).for_each(|(s, &v)| *s += v);
        }
        // The row-major batch read two ways without a copy: as Xᵀ (dim × rows, column-major)
        // and as X (rows × dim, row stride dim). Column blocks of Σ += XᵀX go to rayon workers.
        let xt = DMatrixView::from_slice(&centered, d, rows);
        let xr = DMatrixView::from_slice_with_strides(&centered, rows, d, d, 1);
        let block = d.div_ceil(rayon::current_num_threads().max(1) * 2).max(16);
        self.outer
            .par_chunks_mut(d * block)
            .enumerate()
            .for_each(|(b, cols)| {
                let c0 = b * block;
                let w = cols.len() / d;
                let mut out = DMatrixViewMut::from_slice(cols, d, w);
                out.gemm(1.0, &xt, &xr.columns(c0, w), 1.0);
            });
        self.count += rows as u64;
    }

    /// The mean and the population covariance (divided by the row count) so far.
    pub fn finish(&self) -> (Vec<f64>, DMatrix<f64>) {
        let d = self.dim;
        if self.count == 0 {
            return (vec![0.0; d], DMatrix::zeros(d, d));
        }
        let n = self.count as f64;
        let m: Vec<f64> = self.sum.iter().map(|s| s / n).collect();
        let cov = DMatrix::from_fn(d, d, |i, j| {
            // Average the two triangles so the matrix is exactly symmetric.
            let s = 0.5 * (self.outer[j * d + i] + self.outer[i * d + j]);
            s / n - m[i] * m[j]
        });
        let shift = self.shift.as_deref().unwrap_or(&[]);
        let mean = m.iter().zip(shift).map(|(m, c)| m + c).collect();
        (mean, cov)
    }

    /// The eigen-decomposition of the covariance so far, and its principal subspace.
    pub fn spectrum(&self, variance_fraction: f64) -> Spectrum {
        let (mean, cov) = self.finish();
        principal_subspace(cov, &mean, variance_fraction)
    }
}

/// Eigenvalues of `cov` in descending order and the first `k` eigenvectors, `k` being the
/// smallest count (at least 1) whose eigenvalues sum to `fraction` of the total (negative
/// rounding-noise eigenvalues count as 0).
pub fn principal_subspace(cov: DMatrix<f64>, mean: &[f64], fraction: f64) -> Spectrum {
    let d = cov.nrows();
    let eig = SymmetricEigen::new(cov);
    let mut order: Vec<usize> = (0..d).collect();
    order.sort_by(|&a, &b| eig.eigenvalues[b].total_cmp(&eig.eigenvalues[a]));
    let eigenvalues: Vec<f64> = order.iter().map(|&i| eig.eigenvalues[i]).collect();
    let k = components_for(&eigenvalues, fraction);
    let mut basis = Vec::with_capacity(k * d);
    for &i in &order[..k] {
        let v = eig.eigenvectors.column(i);
        let peak = v
            .iter()
            .copied()
            .fold(0f64, |p, x| if x.abs() > p.abs() { x } else { p });
        let sign = if peak < 0.0 { -1.0 } else { 1.0 };
        basis.extend(v.iter().map(|&x| (sign * x) as f32));
    }
    Spectrum {
        eigenvalues,
        basis,
        k,
        mean: mean.iter().map(|&m| m as f32).collect(),
    }
}

/// The smallest k ≥ 1 whose leading (descending) eigenvalues hold `fraction` of the total.
pub fn components_for(eigenvalues: &[f64], fraction: f64) -> usize {
    let total: f64 = eigenvalues.iter().map(|&l| l.max(0.0)).sum();
    let target = fraction * total;
    let mut acc = 0.0;
    for (i, &l) in eigenvalues.iter().enumerate() {
        acc += l.max(0.0);
        if acc >= target {
            return i + 1;
        }
    }
    eigenvalues.len()
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::{Rng, SeedableRng};
    use rand_chacha::ChaCha8Rng;

    /// Rows x = mean + Σ_i z_i s_i q_i for a random orthonormal Q, so the covariance's
    /// eigenvalues are near s_i², plus a large mean to test the shifted sums.
    fn data(rows: usize, dim: usize, seed: u64) -> Vec<f32> {
        let mut rng = ChaCha8Rng::seed_from_u64(seed);
        let q = DMatrix::from_fn(dim, dim, |_, _| rng.gen_range(-1.0..1.0))
            .qr()
            .q();
        let scales: Vec<f64> = (0..dim).map(|i| 4.0 * 0.6f64.powi(i as i32)).collect();
        let mean: Vec<f64> = (0..dim)
            .map(|i| if i == 1 { 300.0 } else { i as f64 })
            .collect();
        let mut out = Vec::with_capacity(rows * dim);
        for _ in 0..rows {
            let z: Vec<f64> = (0..dim)
                .map(|i| rng.gen_range(-1.7320508..1.7320508) * scales[i])
                .collect();
            for j in 0..dim {
                let v: f64 = (0..dim).map(|i| q[(j, i)] * z[i]).sum();
                out.push((mean[j] + v) as f32);
            }
        }
        out
    }

    /// Two-pass covariance straight from the definition.
    fn direct(x: &[f32], dim: usize) -> (Vec<f64>, DMatrix<f64>) {
        let n = (x.len() / dim) as f64;
        let mut mean = vec![0f64; dim];
        for row in x.chunks_exact(dim) {
            mean.iter_mut()
                .zip(row)
                .for_each(|(m, &v)| *m += f64::from(v) / n);
        }
        let mut cov = DMatrix::zeros(dim, dim);
        for row in x.chunks_exact(dim) {
            for i in 0..dim {
                for j in 0..dim {
                    cov[(i, j)] +=
                        (f64::from(row[i]) - mean[i]) * (f64::from(row[j]) - mean[j]) / n;
                }
            }
        }
        (mean, cov)
    }

    #[test]
    fn streamed_covariance_matches_the_direct_computation() {
        let dim = 24;
        let x = data(900, dim, 3);
        let mut acc = CovarianceAccumulator::new(dim);
        for batch in x.chunks(dim * 250) {
            acc.add(batch);
        }
        assert_eq!(acc.count(), 900);
        let (mean, cov) = acc.finish();
        let (mean_d, cov_d) = direct(&x, dim);
        for i in 0..dim {
            assert!(
                (mean[i] - mean_d[i]).abs() < 1e-9 * mean_d[i].abs().max(1.0),
                "mean {i}"
            );
            for j in 0..dim {
                assert!(
                    (cov[(i, j)] - cov_d[(i, j)]).abs() < 1e-9 * cov_d[(0, 0)].abs(),
                    "cov {i},{j}"
                );
            }
        }
    }

    #[test]
    fn spectrum_is_the_covariance_eigen_decomposition() {
        let dim = 24;
        let x = data(2000, dim, 5);
        let mut acc = CovarianceAccumulator::new(dim);
        for batch in x.chunks(dim * 333) {
            acc.add(batch);
        }
        let fraction = 0.95;
        let s = acc.spectrum(fraction);
        let (_, cov) = direct(&x, dim);

        // Descending, summing to the trace.
        assert!(s.eigenvalues.windows(2).all(|w| w[0] >= w[1]));
        let trace: f64 = (0..dim).map(|i| cov[(i, i)]).sum();
        assert!((s.eigenvalues.iter().sum::<f64>() - trace).abs() < 1e-9 * trace);
        // The leading eigenvalues are those the data were drawn with (variance of s·U(-√3, √3) is s²).
        for (i, &l) in s.eigenvalues.iter().take(3).enumerate() {
            let expect = (4.0 * 0.6f64.powi(i as i32)).powi(2);
            assert!(
                (l - expect).abs() < 0.1 * expect,
                "eigenvalue {i}: {l} vs {expect}"
            );
        }
        // Each basis row v satisfies C v = λ v for the directly computed covariance.
        for r in 0..s.k {
            let v: Vec<f64> = s.basis[r * dim..(r + 1) * dim]
                .iter()
                .map(|&x| f64::from(x))
                .collect();
            for i in 0..dim {
                let cv: f64 = (0..dim).map(|j| cov[(i, j)] * v[j]).sum();
                assert!(
                    (cv - s.eigenvalues[r] * v[i]).abs() < 1e-5 * s.eigenvalues[0],
                    "row {r}, component {i}"
                );
            }
        }
        // Rows orthonormal.
        for a in 0..s.k {
            for b in 0..s.k {
                let dot: f64 = (0..dim)
                    .map(|j| f64::from(s.basis[a * dim + j]) * f64::from(s.basis[b * dim + j]))
                    .sum();
                let want = if a == b { 1.0 } else { 0.0 };
                assert!((dot - want).abs() < 1e-6, "rows {a},{b}: {dot}");
            }
        }
        // k is the smallest count holding the fraction.
        let total: f64 = s.eigenvalues.iter().map(|l| l.max(0.0)).sum();
        let held = |k: usize| s.eigenvalues[..k].iter().map(|l| l.max(0.0)).sum::<f64>();
        assert!(held(s.k) >= fraction * total);
        assert!(s.k == 1 || held(s.k - 1) < fraction * total);
        assert!(s.k > 1 && s.k < dim, "k = {}", s.k);
        assert_eq!(s.basis.len(), s.k * dim);
        assert!((f64::from(s.mean[1]) - 300.0).abs() < 1.0);
    }

    #[test]
    fn fraction_rule_counts_components() {
        let l = [5.0, 3.0, 1.5, 0.5, -1e-15];
        assert_eq!(components_for(&l, 0.5), 1);
        assert_eq!(components_for(&l, 0.8), 2);
        assert_eq!(components_for(&l, 0.81), 3);
        assert_eq!(components_for(&l, 1.0), 4);
        assert_eq!(components_for(&[0.0, 0.0], 0.95), 1);
    }
}
