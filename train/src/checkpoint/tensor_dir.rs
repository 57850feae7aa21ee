//! A small resumable state that is not a student: named 1-D f32 tensors and a JSON state in
//! `<parent>/<name>/` (`tensors.safetensors`, `state.json`), saved with the checkpoint's
//! protocol — everything into `<name>.tmp/` (fsynced), then swapped in — and read back from
//! `<name>/`, or from `<name>.old/` when a save was cut between its two renames. `distill
//! train-lora` keeps its adapter and optimizer state this way.

use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use super::{fsync, io_err, read_extra, save_folder, saved_folder, write_json_synced, write_tensors, CheckpointError, ExtraEntry, F32View, FORMAT_VERSION, STATE};

const TENSORS: &str = "tensors.safetensors";

/// Named tensors in the order saved, and the JSON state.
pub type Loaded = (Vec<(String, Vec<f32>)>, serde_json::Value);

#[derive(Serialize)]
struct Out<'a> {
    format_version: u32,
    tensors: Vec<ExtraEntry>,
    state: &'a serde_json::Value,
}

#[derive(Deserialize)]
struct In {
    format_version: u32,
    tensors: Vec<ExtraEntry>,
    state: serde_json::Value,
}

/// Saves `tensors` and `state` into `<parent>/<name>/` atomically; returns that path.
pub fn save(parent: &Path, name: &str, tensors: &[(String, &[f32])], state: &serde_json::Value) -> Result<PathBuf, CheckpointError> {
    let invalid = |what: String| CheckpointError::Invalid { path: parent.join(name), what };
    let mut seen = std::collections::HashSet::new();
    if let Some((n, _)) = tensors.iter().find(|(n, _)| n == "__metadata__" || !seen.insert(n.as_str())) {
        return Err(invalid(format!("tensor name {n:?} repeated or reserved")));
    }
    save_folder(parent, name, |tmp| {
        let views = tensors.iter().map(|(n, data)| (n.clone(), F32View { shape: vec![data.len()], data })).collect();
        write_tensors(&tmp.join(TENSORS), views)?;
        let out = Out {
            format_version: FORMAT_VERSION,
            tensors: tensors.iter().map(|(n, d)| ExtraEntry { name: n.clone(), len: d.len() }).collect(),
            state,
        };
        write_json_synced(&tmp.join(STATE), &out)?;
        fsync(tmp)
    })
}

/// Whether `<parent>/<name>/` (or its `.old` copy) holds a saved state.
pub fn exists(parent: &Path, name: &str) -> bool {
    saved_folder(parent, name).is_some()
}

/// Reads what [`save`] wrote: the tensors in the order saved, and the state.
pub fn load(parent: &Path, name: &str) -> Result<Loaded, CheckpointError> {
    let dir = saved_folder(parent, name).ok_or_else(|| CheckpointError::Missing { path: parent.join(name) })?;
    let path = dir.join(STATE);
    let bad = |what: String| CheckpointError::Format { path: path.clone(), what };
    let text = std::fs::read(&path).map_err(io_err(&path))?;
    let state: In = serde_json::from_slice(&text).map_err(|e| bad(e.to_string()))?;
    if state.format_version != FORMAT_VERSION {
        return Err(bad(format!("format version {} (this build reads {FORMAT_VERSION})", state.format_version)));
    }
    Ok((read_extra(&dir.join(TENSORS), &state.tensors)?, state.state))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn saved_tensors_and_state_come_back_and_a_cut_save_leaves_the_last_one() {
        let dir = tempfile::tempdir().unwrap();
        let (a, b) = (vec![1.0f32, -2.5, 3.25], vec![0.5f32; 7]);
        let state = serde_json::json!({"step": 4});
        save(dir.path(), "ck", &[("a".into(), &a), ("b".into(), &b)], &state).unwrap();
        assert!(exists(dir.path(), "ck"));
        let (t, s) = load(dir.path(), "ck").unwrap();
        assert_eq!(t, vec![("a".to_string(), a.clone()), ("b".to_string(), b.clone())]);
        assert_eq!(s, state);
        // A crash between the two renames of a later save leaves only `ck.old/`: still read.
        std::fs::rename(dir.path().join("ck"), dir.path().join("ck.old")).unwrap();
        assert_eq!(load(dir.path(), "ck").unwrap().1, state);
        // A leftover `.tmp` is never read; a repeated name is refused before anything is written.
        std::fs::create_dir(dir.path().join("ck.tmp")).unwrap();
        assert_eq!(load(dir.path(), "ck").unwrap().1, state);
        assert!(save(dir.path(), "x", &[("a".into(), &a), ("a".into(), &b)], &state).is_err());
        assert!(!exists(dir.path(), "x"));
        assert!(matches!(load(dir.path(), "x"), Err(CheckpointError::Missing { .. })));
    }
}
