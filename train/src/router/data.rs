//! Capability-labelled prompts: JSONL, one `{"text": ..., "capability": ...}` a line; a
//! capability of `"none"`, `null` or absent labels a prompt the base should answer.

use std::path::{Path, PathBuf};

use nexus_runtime::router::{check_capability_name, BASE};

use super::RouterTrainError;

#[derive(Debug, Clone, PartialEq)]
pub struct LabelledPrompt {
    pub text: String,
    /// `None`: the base (no adapter).
    pub capability: Option<String>,
    /// 1-based line in its file, for messages.
    pub line: usize,
}

fn bad(path: &Path, line: usize, what: impl Into<String>) -> RouterTrainError {
    RouterTrainError::Data { path: PathBuf::from(path), line, what: what.into() }
}

/// Reads a labelled-prompt JSONL file; blank lines are skipped. Errors name the file and line.
pub fn read_labelled(path: &Path) -> Result<Vec<LabelledPrompt>, RouterTrainError> {
    let bytes = std::fs::read(path).map_err(|source| RouterTrainError::Io { path: path.into(), source })?;
    let text = String::from_utf8(bytes).map_err(|e| {
        let line = 1 + e.as_bytes()[..e.utf8_error().valid_up_to()].iter().filter(|&&b| b == b'\n').count();
        bad(path, line, "not UTF-8")
    })?;
    let mut out = Vec::new();
    for (i, raw) in text.lines().enumerate() {
        let line = i + 1;
        if raw.trim().is_empty() {
            continue;
        }
        let value: serde_json::Value = serde_json::from_str(raw).map_err(|e| bad(path, line, format!("not JSON: {e}")))?;
        let obj = value.as_object().ok_or_else(|| bad(path, line, "expected a JSON object {\"text\": ..., \"capability\": ...}"))?;
        let text = match obj.get("text") {
            Some(serde_json::Value::String(s)) if !s.trim().is_empty() => s.clone(),
            Some(serde_json::Value::String(_)) => return Err(bad(path, line, "\"text\" is empty")),
            Some(_) => return Err(bad(path, line, "\"text\" is not a string")),
            None => return Err(bad(path, line, "no \"text\" field")),
        };
        let capability = match obj.get("capability") {
            None | Some(serde_json::Value::Null) => None,
            Some(serde_json::Value::String(s)) if s == BASE => None,
            Some(serde_json::Value::String(s)) => {
                check_capability_name(s).map_err(|what| bad(path, line, what))?;
                Some(s.clone())
            }
            Some(_) => return Err(bad(path, line, "\"capability\" is not a string")),
        };
        out.push(LabelledPrompt { text, capability, line });
    }
    if out.is_empty() {
        return Err(bad(path, 0, "no labelled prompts"));
    }
    Ok(out)
}
