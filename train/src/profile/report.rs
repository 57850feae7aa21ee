//! The human-readable side of a profile: `profile_report.md` with tables per layer and head,
//! and three charts beside it.

use std::fmt::Write as _;
use std::path::{Path, PathBuf};

use super::{Profile, ProfileError};
use crate::plot::{heat_map, line_chart, text_font, Series};

pub const REPORT_FILE: &str = "profile_report.md";
pub const VARIANCE_PNG: &str = "variance_explained.png";
pub const HEADS_PNG: &str = "head_importance.png";
pub const SENSITIVITY_PNG: &str = "layer_sensitivity.png";

impl Profile {
    /// Writes the report and its charts into `dir` (created if missing) and returns the
    /// files written. A chart that cannot be drawn is an error, never a silent gap; charts
    /// drawn without text (no font found) are said to be so in the report.
    pub fn write_report(&self, dir: &Path) -> Result<Vec<PathBuf>, ProfileError> {
        std::fs::create_dir_all(dir).map_err(|source| ProfileError::Io {
            path: dir.into(),
            source,
        })?;
        let variance = dir.join(VARIANCE_PNG);
        line_chart(
            &variance,
            &format!(
                "{}: variance explained by the top k components",
                self.teacher
            ),
            "components k",
            "fraction of variance",
            &self.variance_curves(),
            false,
        )?;

        let heads = dir.join(HEADS_PNG);
        let by_head: Vec<Vec<f64>> = (0..self.n_head)
            .map(|h| self.layers.iter().map(|l| l.head_ablation[h]).collect())
            .collect();
        heat_map(
            &heads,
            &format!(
                "{}: loss increase with the head zeroed (nats)",
                self.teacher
            ),
            "layer",
            "head",
            &by_head,
        )?;

        let sensitivity = dir.join(SENSITIVITY_PNG);
        let series = self.sensitivity_series();
        // Log scale shows the spread between layers best, but only positive values fit on it.
        let log_y = series.iter().flat_map(|s| &s.points).all(|p| p.1 > 0.0);
        line_chart(
            &sensitivity,
            &format!("{}: per-layer sensitivity", self.teacher),
            "layer",
            if log_y { "nats (log scale)" } else { "nats" },
            &series,
            log_y,
        )?;

        let md = dir.join(REPORT_FILE);
        crate::plot::write_atomic(&md, self.markdown().as_bytes()).map_err(|source| {
            ProfileError::Io {
                path: md.clone(),
                source,
            }
        })?;
        Ok(vec![md, variance, heads, sensitivity])
    }

    /// Per layer: the fraction of variance the top k eigenvalues hold, k = 1..=n_embd.
    fn variance_curves(&self) -> Vec<Series> {
        self.layers
            .iter()
            .enumerate()
            .map(|(i, l)| {
                let total: f64 = l.eigenvalues.iter().map(|e| e.max(0.0)).sum();
                let mut acc = 0.0;
                let points = l
                    .eigenvalues
                    .iter()
                    .enumerate()
                    .map(|(k, e)| {
                        acc += e.max(0.0);
                        ((k + 1) as f64, if total > 0.0 { acc / total } else { 0.0 })
                    })
                    .collect();
                Series {
                    name: format!("layer {i}"),
                    points,
                }
            })
            .collect()
    }

    fn sensitivity_series(&self) -> Vec<Series> {
        let cfg = &self.config;
        let per_layer = |name: String, f: &dyn Fn(&super::LayerProfile) -> f64| Series {
            name,
            points: self
                .layers
                .iter()
                .enumerate()
                .map(|(i, l)| (i as f64, f(l)))
                .collect(),
        };
        vec![
            per_layer("KL, layer removed".into(), &|l| l.sensitivity_remove),
            per_layer(format!("KL, contribution ×{}", cfg.scale), &|l| {
                l.sensitivity_scale
            }),
            per_layer(format!("KL, noise {}×RMS", cfg.noise), &|l| {
                l.sensitivity_noise
            }),
            per_layer("Δloss, FFN zeroed".into(), &|l| l.ffn_ablation),
        ]
    }

    /// The report's text.
    pub fn markdown(&self) -> String {
        let cfg = &self.config;
        let mut s = String::new();
        let _ = writeln!(s, "# Teacher profile: {}\n", self.teacher);
        let _ = writeln!(
            s,
            "{} layers, n_embd {}, {} attention heads, n_ff {}. Calibration: {} tokens in sequences of {} \
             (each from an empty cache); perturbations and ablations on the first {} of them.\n",
            self.n_layer, self.n_embd, self.n_head, self.n_ff, self.tokens, cfg.n_ctx, self.ablation_tokens
        );
        let _ = writeln!(
            s,
            "Teacher next-token loss: {:.4} nats (perplexity {:.2}) on the calibration tokens, {:.4} on the ablation tokens. \
             Time: activations {:.1} s, spectra {:.1} s, perturbations {:.1} s.\n",
            self.base_loss,
            self.base_loss.exp(),
            self.ablation_base_loss,
            self.timings.activations,
            self.timings.spectra,
            self.timings.perturbations
        );
        if text_font().is_none() {
            let _ = writeln!(
                s,
                "> The charts below were drawn **without text** (no titles, axis labels or legends): no font was found. \
                 Install one (`apt-get install fonts-dejavu-core`) or set `NEXUS_FONT=/path/to/font.ttf` and write the report again.\n"
            );
        }

        let _ = writeln!(s, "## Principal subspaces of the residual stream\n");
        let ks: Vec<String> = self.layers.iter().map(|l| l.k.to_string()).collect();
        let _ = writeln!(
            s,
            "Components holding {:.0}% of the variance after each layer (of {}), the first {} position(s) \
             of each sequence (attention sink) left out of the covariance: {}.\n",
            cfg.variance_fraction * 100.0,
            self.n_embd,
            cfg.sink_tokens,
            ks.join(", ")
        );
        let _ = writeln!(s, "![variance explained per layer]({VARIANCE_PNG})\n");

        let _ = writeln!(s, "## Layers\n");
        let _ = writeln!(
            s,
            "KL columns: mean per-token KL(teacher ‖ perturbed teacher) in nats with the layer's residual contribution \
             (attention + FFN output) multiplied by {}, given Gaussian noise of {}× each row's RMS (seed {}), or removed \
             (the layer's importance score). Δloss: next-token loss increase with the FFN block or the most important head \
             zeroed. Outliers: channels whose max |x| exceeds 6× the layer's RMS.\n",
            cfg.scale, cfg.noise, cfg.seed
        );
        let _ = writeln!(
            s,
            "| layer | k | top eigenvalue share | KL scale | KL noise | KL removed | Δloss FFN | Δloss top head | residual RMS | residual kurtosis | outlier channels | FFN RMS | FFN kurtosis |"
        );
        let _ = writeln!(
            s,
            "|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|"
        );
        for (i, l) in self.layers.iter().enumerate() {
            let total: f64 = l.eigenvalues.iter().map(|e| e.max(0.0)).sum();
            let top = if total > 0.0 {
                l.eigenvalues[0].max(0.0) / total
            } else {
                0.0
            };
            let top_head = l
                .head_ablation
                .iter()
                .copied()
                .fold(f64::NEG_INFINITY, f64::max);
            let _ = writeln!(
                s,
                "| {i} | {} | {:.3} | {:.4} | {:.4} | {:.4} | {:.4} | {:.4} | {:.3} | {:.1} | {:.1}% | {:.3} | {:.1} |",
                l.k,
                top,
                l.sensitivity_scale,
                l.sensitivity_noise,
                l.sensitivity_remove,
                l.ffn_ablation,
                top_head,
                l.residual_summary.mean_rms,
                l.residual_summary.kurtosis,
                l.residual_summary.outlier_fraction * 100.0,
                l.ffn_summary.mean_rms,
                l.ffn_summary.kurtosis
            );
        }
        let _ = writeln!(s, "\n![per-layer sensitivity]({SENSITIVITY_PNG})\n");

        let mut order: Vec<usize> = (0..self.n_layer).collect();
        order.sort_by(|&a, &b| {
            self.layers[b]
                .sensitivity_remove
                .total_cmp(&self.layers[a].sensitivity_remove)
        });
        let ranked: Vec<String> = order.iter().map(usize::to_string).collect();
        let _ = writeln!(
            s,
            "Layers by removal KL, most important first: {}.\n",
            ranked.join(", ")
        );

        let _ = writeln!(s, "## Attention heads\n");
        let _ = writeln!(
            s,
            "Next-token loss increase (nats) with one head zeroed before the output projection.\n"
        );
        let head_cols: Vec<String> = (0..self.n_head).map(|h| format!("h{h}")).collect();
        let _ = writeln!(s, "| layer | {} |", head_cols.join(" | "));
        let _ = writeln!(s, "|---:|{}", "---:|".repeat(self.n_head));
        for (i, l) in self.layers.iter().enumerate() {
            let cells: Vec<String> = l.head_ablation.iter().map(|v| format!("{v:.4}")).collect();
            let _ = writeln!(s, "| {i} | {} |", cells.join(" | "));
        }
        let _ = writeln!(s, "\n![head importance, heads × layers]({HEADS_PNG})\n");
        let mut heads: Vec<(usize, usize, f64)> = self
            .layers
            .iter()
            .enumerate()
            .flat_map(|(i, l)| {
                l.head_ablation
                    .iter()
                    .enumerate()
                    .map(move |(h, &v)| (i, h, v))
            })
            .collect();
        heads.sort_by(|a, b| a.2.total_cmp(&b.2));
        let least: Vec<String> = heads
            .iter()
            .take(10)
            .map(|(l, h, v)| format!("L{l}.h{h} ({v:+.4})"))
            .collect();
        let _ = writeln!(
            s,
            "Least important heads (first to prune): {}.",
            least.join(", ")
        );
        s
    }
}
