//! What the backbone's `distill verify` report says, read from its `nexus.distill.*` metadata
//! (written by `nexus_train`'s export): verified, failed (with the capabilities that failed),
//! exported without verification, or not a distilled student at all.

use serde::{Deserialize, Serialize};

use crate::gguf::GgufFile;

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "status", rename_all = "snake_case")]
pub enum VerifyStatus {
    /// Every contract check passed.
    Verified { checks: usize },
    /// At least one check failed: the capabilities and the checks (`CAP: metric value op limit`).
    Failed { capabilities: Vec<String>, failed_checks: Vec<String> },
    /// A distilled student exported without a verify report (or with an unreadable one).
    Unverified { reason: String },
    /// The backbone carries no `nexus.distill.*` metadata: not a student of ours.
    NotDistilled,
}

impl VerifyStatus {
    pub fn from_gguf(file: &GgufFile) -> Self {
        let Some(verified) = file.get("nexus.distill.verified") else {
            return VerifyStatus::NotDistilled;
        };
        let report = match file.get("nexus.distill.verify_report").map(|v| v.as_str()) {
            None => {
                let flag = verified.as_bool().map_or("not a bool".to_string(), |b| b.to_string());
                return VerifyStatus::Unverified { reason: format!("no verify report (nexus.distill.verified = {flag})") };
            }
            Some(None) => return VerifyStatus::Unverified { reason: "nexus.distill.verify_report is not a string".into() },
            Some(Some(s)) => s,
        };
        Self::from_report(report)
    }

    /// Reads the report's `checks` (each `capability`, `metric`, `op`, `limit`, `measured.value`,
    /// `passed`); the report's own `verified` flag is not trusted over its checks.
    pub fn from_report(json: &str) -> Self {
        let report: serde_json::Value = match serde_json::from_str(json) {
            Ok(v) => v,
            Err(e) => return VerifyStatus::Unverified { reason: format!("the verify report is not JSON: {e}") },
        };
        let Some(checks) = report.get("checks").and_then(|c| c.as_array()) else {
            return VerifyStatus::Unverified { reason: "the verify report has no checks".into() };
        };
        if checks.is_empty() {
            return VerifyStatus::Unverified { reason: "the verify report has no checks".into() };
        }
        let mut capabilities: Vec<String> = Vec::new();
        let mut failed_checks = Vec::new();
        for c in checks {
            if c.get("passed").and_then(|p| p.as_bool()) == Some(true) {
                continue;
            }
            let text = |k: &str| c.get(k).and_then(|v| v.as_str()).unwrap_or("?").to_string();
            let cap = text("capability");
            let measured = c.get("measured").and_then(|m| m.get("value")).and_then(|v| v.as_f64());
            let limit = c.get("limit").and_then(|v| v.as_f64());
            failed_checks.push(format!(
                "{cap}: {} {} {} {}",
                text("metric"),
                measured.map_or("?".into(), |v| format!("{v:.4}")),
                text("op"),
                limit.map_or("?".into(), |v| format!("{v}"))
            ));
            if !capabilities.contains(&cap) {
                capabilities.push(cap);
            }
        }
        match failed_checks.is_empty() {
            true => VerifyStatus::Verified { checks: checks.len() },
            false => VerifyStatus::Failed { capabilities, failed_checks },
        }
    }

    /// Whether loading needs the user's consent (`--allow-unverified`).
    pub fn needs_consent(&self) -> bool {
        matches!(self, VerifyStatus::Failed { .. } | VerifyStatus::Unverified { .. })
    }

    /// One line for messages.
    pub fn describe(&self) -> String {
        match self {
            VerifyStatus::Verified { checks } => format!("verified ({checks} contract checks passed)"),
            VerifyStatus::Failed { capabilities, failed_checks } => format!(
                "NOT verified: the contract failed for capability {} ({})",
                capabilities.join(", "),
                failed_checks.join("; ")
            ),
            VerifyStatus::Unverified { reason } => format!("NOT verified: {reason}"),
            VerifyStatus::NotDistilled => "no verify report (the backbone is not a distilled student)".into(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::VerifyStatus;

    #[test]
    fn the_checks_decide_not_the_reports_flag() {
        let check = |cap: &str, passed: bool| {
            format!(r#"{{"capability":"{cap}","metric":"kl","op":"<=","limit":1.0,"measured":{{"value":2.5}},"passed":{passed}}}"#)
        };
        let report = |checks: &[String], verified: bool| format!(r#"{{"checks":[{}],"verified":{verified}}}"#, checks.join(","));
        let failed = VerifyStatus::from_report(&report(&[check("chat", true), check("code", false), check("code", false)], true));
        match &failed {
            VerifyStatus::Failed { capabilities, failed_checks } => {
                assert_eq!(capabilities, &["code"]);
                assert_eq!(failed_checks, &["code: kl 2.5000 <= 1", "code: kl 2.5000 <= 1"]);
            }
            other => panic!("{other:?}"),
        }
        assert!(failed.needs_consent() && failed.describe().contains("capability code"));
        assert_eq!(VerifyStatus::from_report(&report(&[check("chat", true)], false)), VerifyStatus::Verified { checks: 1 });
        for bad in ["{", r#"{"checks":[]}"#, r#"{"verified":true}"#] {
            assert!(matches!(VerifyStatus::from_report(bad), VerifyStatus::Unverified { .. }), "{bad}");
        }
    }
}
