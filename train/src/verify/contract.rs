//! The contract: per capability, the least the student must keep of the teacher. A TOML
//! file of `[capability.NAME]` tables with any of `min_top1`, `max_kl`, `max_ppl_ratio`;
//! every limit is compared with the measurement's point estimate (the report keeps the
//! 95% interval beside it).

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use super::report::{CapabilityReport, Check};
use super::VerifyError;

#[derive(Debug, Clone, Copy, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Limits {
    /// Least share of positions where the student's argmax is the teacher's.
    pub min_top1: Option<f64>,
    /// Largest mean KL(teacher ‖ student) per token, in nats.
    pub max_kl: Option<f64>,
    /// Largest PPL(student) / PPL(teacher).
    pub max_ppl_ratio: Option<f64>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct ContractFile {
    capability: BTreeMap<String, Limits>,
}

#[derive(Debug, Clone, PartialEq)]
pub struct Contract {
    pub path: PathBuf,
    pub capabilities: BTreeMap<String, Limits>,
}

impl Contract {
    pub fn load(path: &Path) -> Result<Self, VerifyError> {
        let text = std::fs::read_to_string(path).map_err(|source| VerifyError::Io { path: path.to_path_buf(), source })?;
        Self::parse(path, &text)
    }

    /// Parses and checks a contract; `path` only names it in errors and the report.
    pub fn parse(path: &Path, text: &str) -> Result<Self, VerifyError> {
        let bad = |what: String| VerifyError::Contract { path: path.to_path_buf(), what };
        let file: ContractFile = toml::from_str(text).map_err(|e| bad(e.to_string().trim_end().to_string()))?;
        if file.capability.is_empty() {
            return Err(bad("no [capability.NAME] table: the contract would pass anything".into()));
        }
        for (name, l) in &file.capability {
            if l.min_top1.is_none() && l.max_kl.is_none() && l.max_ppl_ratio.is_none() {
                return Err(bad(format!("[capability.{name}] sets no limit (min_top1, max_kl or max_ppl_ratio)")));
            }
            if let Some(v) = l.min_top1.filter(|v| !(0.0..=1.0).contains(v)) {
                return Err(bad(format!("[capability.{name}] min_top1 = {v} is not a share between 0 and 1")));
            }
            if let Some(v) = l.max_kl.filter(|v| !(v.is_finite() && *v >= 0.0)) {
                return Err(bad(format!("[capability.{name}] max_kl = {v} must be a finite number ≥ 0")));
            }
            if let Some(v) = l.max_ppl_ratio.filter(|v| !(v.is_finite() && *v > 0.0)) {
                return Err(bad(format!("[capability.{name}] max_ppl_ratio = {v} must be a finite number > 0")));
            }
        }
        Ok(Contract { path: path.to_path_buf(), capabilities: file.capability })
    }

    /// Every limit against the measurement of its capability, in the contract's order
    /// (capabilities by name; top-1, KL, perplexity ratio). A capability the contract names
    /// but that was not measured is an error, never a silent pass.
    pub fn check(&self, measured: &[CapabilityReport]) -> Result<Vec<Check>, VerifyError> {
        let mut checks = Vec::new();
        for (name, l) in &self.capabilities {
            let m = measured
                .iter()
                .find(|c| &c.name == name)
                .ok_or_else(|| VerifyError::MissingCapability { name: name.clone(), contract: self.path.clone() })?;
            if let Some(limit) = l.min_top1 {
                checks.push(Check::at_least(name, "top1", limit, m.top1));
            }
            if let Some(limit) = l.max_kl {
                checks.push(Check::at_most(name, "kl", limit, m.kl));
            }
            if let Some(limit) = l.max_ppl_ratio {
                checks.push(Check::at_most(name, "ppl_ratio", limit, m.ppl_ratio));
            }
        }
        Ok(checks)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_limits_and_refuses_nonsense() {
        let c = Contract::parse(Path::new("c.toml"), "[capability.general]\nmin_top1 = 0.6\nmax_ppl_ratio = 1.5\n[capability.code]\nmax_kl = 0.9\n").unwrap();
        assert_eq!(c.capabilities["general"], Limits { min_top1: Some(0.6), max_kl: None, max_ppl_ratio: Some(1.5) });
        assert_eq!(c.capabilities["code"].max_kl, Some(0.9));

        let err = |text: &str| Contract::parse(Path::new("c.toml"), text).unwrap_err().to_string();
        assert!(err("[capability.general]\nmin_top1 = 1.6\n").contains("min_top1 = 1.6"));
        assert!(err("[capability.general]\n").contains("sets no limit"));
        assert!(err("").contains("c.toml"));
        assert!(err("[capability.general]\nmin_top = 0.5\n").contains("min_top"), "unknown keys are refused");
        assert!(err("[capability.general]\nmax_kl = -1.0\n").contains("max_kl"));
        assert!(err("[capability.general\nmax_kl = 1.0\n").contains("c.toml"));
    }
}
