//! `verify_report.json`: every measurement with its 95% interval, every contract check with
//! its verdict, and whether the student is verified (every check passed).

use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use super::VerifyError;
use crate::data::write_atomic;

pub const REPORT_FILE: &str = "verify_report.json";

/// JSON has no infinity or NaN; a diverged student can produce them, and the report must
/// still round-trip, so non-finite numbers are written as the strings "inf", "-inf", "nan".
mod finite_or_string {
    use serde::{Deserialize, Deserializer, Serializer};

    pub fn serialize<S: Serializer>(v: &f64, s: S) -> Result<S::Ok, S::Error> {
        match *v {
            v if v.is_finite() => s.serialize_f64(v),
            v if v.is_nan() => s.serialize_str("nan"),
            v if v > 0.0 => s.serialize_str("inf"),
            _ => s.serialize_str("-inf"),
        }
    }

    #[derive(Deserialize)]
    #[serde(untagged)]
    enum NumOrStr {
        Num(f64),
        Str(String),
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<f64, D::Error> {
        match NumOrStr::deserialize(d)? {
            NumOrStr::Num(v) => Ok(v),
            NumOrStr::Str(s) => match s.as_str() {
                "inf" => Ok(f64::INFINITY),
                "-inf" => Ok(f64::NEG_INFINITY),
                "nan" => Ok(f64::NAN),
                other => Err(serde::de::Error::custom(format!("expected a number, \"inf\", \"-inf\" or \"nan\", found {other:?}"))),
            },
        }
    }
}

/// A point estimate and its 95% interval.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct Interval {
    #[serde(with = "finite_or_string")]
    pub value: f64,
    #[serde(with = "finite_or_string")]
    pub lo: f64,
    #[serde(with = "finite_or_string")]
    pub hi: f64,
}

impl Interval {
    /// `value ± half`, clipped to `[min, max]`.
    pub fn symmetric(value: f64, half: f64, min: f64, max: f64) -> Self {
        Interval { value, lo: (value - half).max(min), hi: (value + half).min(max) }
    }

    fn show(&self, digits: usize) -> String {
        format!("{:.*} [{:.*}, {:.*}]", digits, self.value, digits, self.lo, digits, self.hi)
    }
}

/// The teacher and student compared on one capability's held-out set.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct CapabilityReport {
    pub name: String,
    pub path: PathBuf,
    pub sha256: String,
    /// Tokens the set has, and tokens the chunks covered.
    pub tokens: usize,
    pub tokens_evaluated: usize,
    pub chunks: usize,
    /// Positions scored (the second half of each chunk, as llama-perplexity scores).
    pub positions: usize,
    /// Mean KL(teacher ‖ student) per position, nats, over the teacher's top-k + rest.
    pub kl: Interval,
    /// Share of positions whose argmax agrees.
    pub top1: Interval,
    pub ppl_teacher: Interval,
    pub ppl_student: Interval,
    /// PPL(student) / PPL(teacher), paired interval.
    pub ppl_ratio: Interval,
}

/// One contract limit against one measurement.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Check {
    pub capability: String,
    /// "top1", "kl" or "ppl_ratio".
    pub metric: String,
    /// ">=" or "<=".
    pub op: String,
    pub limit: f64,
    pub measured: Interval,
    pub passed: bool,
}

impl Check {
    pub fn at_least(capability: &str, metric: &str, limit: f64, measured: Interval) -> Self {
        // NaN compares false, so an unmeasurable value fails.
        Check { capability: capability.into(), metric: metric.into(), op: ">=".into(), limit, measured, passed: measured.value >= limit }
    }

    pub fn at_most(capability: &str, metric: &str, limit: f64, measured: Interval) -> Self {
        Check { capability: capability.into(), metric: metric.into(), op: "<=".into(), limit, measured, passed: measured.value <= limit }
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct VerifyReport {
    pub teacher: PathBuf,
    pub student: PathBuf,
    pub contract: PathBuf,
    pub contract_sha256: String,
    pub n_ctx: usize,
    pub top_k: usize,
    pub max_tokens_per_capability: usize,
    pub capabilities: Vec<CapabilityReport>,
    pub checks: Vec<Check>,
    /// True only when there is at least one check and every check passed: the teacher can go.
    pub verified: bool,
    /// Capabilities measured again with their LoRA adapter (`distill verify --lora CAP=FILE`);
    /// the contract judges the student alone.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub adapters: Vec<AdapterComparison>,
}

/// One capability's held-out set measured without and with its adapter.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct AdapterComparison {
    pub capability: String,
    pub adapter: PathBuf,
    pub without: CapabilityReport,
    pub with: CapabilityReport,
}

impl VerifyReport {
    /// Writes the report as pretty JSON, atomically.
    pub fn write(&self, path: &Path) -> Result<(), VerifyError> {
        let json = serde_json::to_vec_pretty(self).map_err(|e| VerifyError::BadReport { path: path.to_path_buf(), what: e.to_string() })?;
        write_atomic(path, &json).map_err(|source| VerifyError::Io { path: path.to_path_buf(), source })
    }

    pub fn load(path: &Path) -> Result<Self, VerifyError> {
        let bytes = std::fs::read(path).map_err(|source| VerifyError::Io { path: path.to_path_buf(), source })?;
        let report: VerifyReport = serde_json::from_slice(&bytes).map_err(|e| VerifyError::BadReport { path: path.to_path_buf(), what: e.to_string() })?;
        let consistent = !report.checks.is_empty() && report.checks.iter().all(|c| c.passed);
        if report.verified != consistent {
            let what = format!("says verified = {} but its checks say {}", report.verified, consistent);
            return Err(VerifyError::BadReport { path: path.to_path_buf(), what });
        }
        Ok(report)
    }

    pub fn verified(&self) -> bool {
        self.verified
    }

    /// One row per capability: the measurements with their 95% intervals and the verdict
    /// of that capability's checks.
    pub fn markdown_table(&self) -> String {
        let mut s = String::from(
            "| capability | positions | KL teacher‖student (nats) | top-1 agreement | PPL teacher | PPL student | PPL ratio | contract |\n\
             |---|---:|---|---|---|---|---|---|\n",
        );
        for c in &self.capabilities {
            let checks: Vec<&Check> = self.checks.iter().filter(|k| k.capability == c.name).collect();
            let verdict = if checks.is_empty() {
                "not in contract".to_string()
            } else {
                checks
                    .iter()
                    .map(|k| format!("{} {} {} {}", if k.passed { "✓" } else { "✗" }, k.metric, k.op, k.limit))
                    .collect::<Vec<_>>()
                    .join(", ")
            };
            s.push_str(&format!(
                "| {} | {} | {} | {} | {} | {} | {} | {} |\n",
                c.name,
                c.positions,
                c.kl.show(4),
                c.top1.show(3),
                c.ppl_teacher.show(2),
                c.ppl_student.show(2),
                c.ppl_ratio.show(3),
                verdict
            ));
        }
        s.push_str(&format!("\nverified: **{}**\n", if self.verified { "yes" } else { "no" }));
        if !self.adapters.is_empty() {
            s.push_str(
                "\n| capability | adapter | KL without → with (nats) | top-1 without → with | PPL ratio without → with |\n\
                 |---|---|---|---|---|\n",
            );
            for a in &self.adapters {
                let name = a.adapter.file_name().map_or_else(|| a.adapter.display().to_string(), |n| n.to_string_lossy().into_owned());
                s.push_str(&format!(
                    "| {} | {} | {} → {} | {} → {} | {} → {} |\n",
                    a.capability,
                    name,
                    a.without.kl.show(4),
                    a.with.kl.show(4),
                    a.without.top1.show(3),
                    a.with.top1.show(3),
                    a.without.ppl_ratio.show(3),
                    a.with.ppl_ratio.show(3)
                ));
            }
        }
        s
    }
}
