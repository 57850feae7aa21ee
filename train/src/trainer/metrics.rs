//! The training log: one JSON line per optimizer step in `metrics.jsonl` (appended as the run
//! goes, cut back to the checkpoint's step on resume so a resumed run's log reads like an
//! uninterrupted one), and the curves drawn from it.

use std::io::Write;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::error::TrainError;
use crate::plot::{line_chart, Series};

pub const METRICS_FILE: &str = "metrics.jsonl";

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct StepMetrics {
    /// 1-based: the number of optimizer steps taken.
    pub step: usize,
    pub lr: f32,
    /// Mean over the step's micro-batches of α·CE + β·T²·KL + γ·anchor.
    pub loss: f64,
    pub ce: f64,
    /// KL(teacher ‖ student) at the training temperature, without T².
    pub kl: f64,
    /// Mean anchoring distance (scaled by the kept variance), without γ.
    pub anchor: f64,
    /// Share of rows where the student's argmax is the teacher's.
    pub top1: f64,
    /// Gradient norm before clipping.
    pub grad_norm: f64,
    pub tokens: usize,
    pub seconds: f64,
    pub tokens_per_s: f64,
    /// Where the step's time went (absent in logs written before it was measured).
    #[serde(default)]
    pub phases: super::step::PhaseSeconds,
}

pub fn metrics_path(run_dir: &Path) -> PathBuf {
    run_dir.join(METRICS_FILE)
}

pub fn read_metrics(run_dir: &Path) -> Result<Vec<StepMetrics>, TrainError> {
    let path = metrics_path(run_dir);
    let text = match std::fs::read_to_string(&path) {
        Ok(t) => t,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(e) => return Err(TrainError::io(&path, e)),
    };
    text.lines()
        .enumerate()
        .filter(|(_, l)| !l.trim().is_empty())
        .map(|(i, l)| serde_json::from_str(l).map_err(|e| TrainError::Config { path: path.clone(), what: format!("line {}: {e}", i + 1) }))
        .collect()
}

/// Keeps the lines of steps `≤ step` (what the checkpoint holds) and drops the rest.
pub fn truncate_metrics(run_dir: &Path, step: usize) -> Result<Vec<StepMetrics>, TrainError> {
    let kept: Vec<StepMetrics> = read_metrics(run_dir)?.into_iter().filter(|m| m.step <= step).collect();
    let path = metrics_path(run_dir);
    let mut text = String::new();
    for m in &kept {
        text.push_str(&serde_json::to_string(m).expect("metrics serialize"));
        text.push('\n');
    }
    std::fs::write(&path, text).map_err(|e| TrainError::io(&path, e))?;
    Ok(kept)
}

pub fn append_metrics(run_dir: &Path, m: &StepMetrics) -> Result<(), TrainError> {
    let path = metrics_path(run_dir);
    let mut f = std::fs::OpenOptions::new().create(true).append(true).open(&path).map_err(|e| TrainError::io(&path, e))?;
    writeln!(f, "{}", serde_json::to_string(m).expect("metrics serialize")).map_err(|e| TrainError::io(&path, e))
}

/// Draws the loss terms, the learning rate and the throughput against the step.
pub fn write_curves(run_dir: &Path, metrics: &[StepMetrics]) -> Result<Vec<PathBuf>, TrainError> {
    let series = |name: &str, f: &dyn Fn(&StepMetrics) -> f64| Series { name: name.into(), points: metrics.iter().map(|m| (m.step as f64, f(m))).collect() };
    let plot_err = |e: crate::plot::PlotError| TrainError::Invalid(format!("drawing the training curves: {e}"));
    let loss = run_dir.join("training_loss.png");
    let mut terms = vec![series("loss", &|m| m.loss), series("CE", &|m| m.ce), series("KL", &|m| m.kl)];
    if metrics.iter().any(|m| m.anchor > 0.0) {
        terms.push(series("anchor", &|m| m.anchor));
    }
    line_chart(&loss, "Distillation loss", "step", "nats (log scale)", &terms, true).map_err(plot_err)?;
    let lr = run_dir.join("training_lr.png");
    line_chart(&lr, "Learning rate", "step", "lr", &[series("lr", &|m| m.lr as f64)], false).map_err(plot_err)?;
    let speed = run_dir.join("training_throughput.png");
    line_chart(&speed, "Throughput", "step", "tokens / s", &[series("tokens/s", &|m| m.tokens_per_s)], false).map_err(plot_err)?;
    Ok(vec![loss, lr, speed])
}
