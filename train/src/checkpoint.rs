//! A training run's resumable state, in `<run_dir>/checkpoint/`:
//!
//! - `weights.safetensors`: the student's parameters, named as in `Params::named` (matrices
//!   shaped `[out, in]` as PyTorch would, norms `[n]`), so any safetensors tool reads them;
//! - `optimizer.safetensors`: the AdamW moments, `m.<name>` and `v.<name>`;
//! - `extra.safetensors`: the caller's extra f32 tensors (anchor maps and their moments), 1-D;
//! - `state.json`: the format version, the `StudentConfig`, the extra tensors' names and
//!   lengths in the caller's order, and the caller's own JSON state (step, data position…).
//!
//! Saving is atomic at the directory level: everything goes to `checkpoint.tmp/` (each file
//! fsynced), then `checkpoint/` becomes `checkpoint.old/`, `checkpoint.tmp/` becomes
//! `checkpoint/`, and `checkpoint.old/` is removed. A crash at any point leaves a complete
//! checkpoint behind: [`Checkpoint::load`] reads `checkpoint/`, or `checkpoint.old/` when the
//! crash fell between the two renames, and never reads a leftover `checkpoint.tmp/`.

use std::borrow::Cow;
use std::fs::File;
use std::path::{Path, PathBuf};

use safetensors::tensor::{Dtype, View};
use serde::{Deserialize, Serialize};

use crate::student::{Params, StudentConfig};

mod read;
pub mod tensor_dir;
use read::{read_extra, read_params};

/// The version of the layout above; `load` refuses any other.
pub const FORMAT_VERSION: u32 = 1;

const DIR: &str = "checkpoint";
/// What [`save_folder`] names the folder it fills (`DIR` + `.tmp`), for the tests.
#[cfg(test)]
const TMP_DIR: &str = "checkpoint.tmp";
const OLD_DIR: &str = "checkpoint.old";
const WEIGHTS: &str = "weights.safetensors";
const OPTIMIZER: &str = "optimizer.safetensors";
const EXTRA: &str = "extra.safetensors";
const STATE: &str = "state.json";

#[derive(Debug, thiserror::Error)]
pub enum CheckpointError {
    #[error("{path}: {source}")]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("{path}: not a valid checkpoint file: {what}")]
    Format { path: PathBuf, what: String },
    #[error("{path}: tensor {name}: {what}")]
    Tensor {
        path: PathBuf,
        name: String,
        what: String,
    },
    #[error("{path}: no checkpoint (neither {DIR}/ nor {OLD_DIR}/)")]
    Missing { path: PathBuf },
    #[error("cannot save a checkpoint to {path}: {what}")]
    Invalid { path: PathBuf, what: String },
}

/// A loaded checkpoint: everything needed to resume a run.
#[derive(Debug, Clone, PartialEq)]
pub struct Checkpoint {
    pub config: StudentConfig,
    pub params: Params,
    /// AdamW first moments, shaped like `params`.
    pub m: Params,
    /// AdamW second moments, shaped like `params`.
    pub v: Params,
    /// The caller's extra tensors, in the order they were saved.
    pub extra: Vec<(String, Vec<f32>)>,
    /// The caller's JSON state, as saved.
    pub state: serde_json::Value,
}

/// What [`CheckpointRef::save`] writes, borrowed from the trainer (nothing is cloned).
#[derive(Debug, Clone, Copy)]
pub struct CheckpointRef<'a> {
    pub config: &'a StudentConfig,
    pub params: &'a Params,
    pub m: &'a Params,
    pub v: &'a Params,
    pub extra: &'a [(String, Vec<f32>)],
    pub state: &'a serde_json::Value,
}

/// `state.json` as written.
#[derive(Serialize)]
struct StateOut<'a> {
    format_version: u32,
    config: &'a StudentConfig,
    extra: Vec<ExtraEntry>,
    state: &'a serde_json::Value,
}

/// `state.json` as read.
#[derive(Deserialize)]
struct StateIn {
    config: StudentConfig,
    extra: Vec<ExtraEntry>,
    state: serde_json::Value,
}

#[derive(Serialize, Deserialize)]
struct ExtraEntry {
    name: String,
    len: usize,
}

/// The shape of every tensor of a student with config `cfg`, in `Params::named` order:
/// matrices `[out, in]` (row-major, as stored), norms `[n]`. Products that overflow saturate,
/// so an absurd config matches no file instead of panicking.
pub fn tensor_shapes(cfg: &StudentConfig) -> Vec<(String, Vec<usize>)> {
    let d = cfg.n_embd;
    let q = cfg.n_head.saturating_mul(cfg.head_dim);
    let kv = cfg.n_head_kv.saturating_mul(cfg.head_dim);
    let ff = cfg.n_ff;
    let mut out = vec![("token_embd.weight".to_string(), vec![cfg.n_vocab, d])];
    for i in 0..cfg.n_layer {
        let layer: [(&str, Vec<usize>); 9] = [
            ("attn_norm.weight", vec![d]),
            ("attn_q.weight", vec![q, d]),
            ("attn_k.weight", vec![kv, d]),
            ("attn_v.weight", vec![kv, d]),
            ("attn_output.weight", vec![d, q]),
            ("ffn_norm.weight", vec![d]),
            ("ffn_gate.weight", vec![ff, d]),
            ("ffn_up.weight", vec![ff, d]),
            ("ffn_down.weight", vec![d, ff]),
        ];
        out.extend(layer.into_iter().map(|(n, s)| (format!("blk.{i}.{n}"), s)));
    }
    out.push(("output_norm.weight".into(), vec![d]));
    if !cfg.tied {
        out.push(("output.weight".into(), vec![cfg.n_vocab, d]));
    }
    out
}

/// Whether `p` has exactly the tensors `cfg` implies; the first mismatch otherwise.
fn check_shapes(cfg: &StudentConfig, p: &Params, what: &str) -> Result<(), String> {
    let named = p.named();
    let shapes = tensor_shapes(cfg);
    if named.len() != shapes.len() || p.layers.len() != cfg.n_layer {
        return Err(format!(
            "{what}: {} tensors in {} layers, the config (n_layer {}, tied {}) implies {}",
            named.len(),
            p.layers.len(),
            cfg.n_layer,
            cfg.tied,
            shapes.len()
        ));
    }
    for ((name, t), (_, shape)) in named.iter().zip(&shapes) {
        if t.len() != shape.iter().fold(1usize, |a, &b| a.saturating_mul(b)) {
            return Err(format!(
                "{what}: {name} holds {} values, the config implies {shape:?}",
                t.len()
            ));
        }
    }
    Ok(())
}

/// An f32 tensor borrowed for safetensors; its bytes are made one tensor at a time as the
/// file is written.
struct F32View<'a> {
    shape: Vec<usize>,
    data: &'a [f32],
}

impl View for F32View<'_> {
    fn dtype(&self) -> Dtype {
        Dtype::F32
    }
    fn shape(&self) -> &[usize] {
        &self.shape
    }
    fn data(&self) -> Cow<'_, [u8]> {
        Cow::Owned(self.data.iter().flat_map(|x| x.to_le_bytes()).collect())
    }
    fn data_len(&self) -> usize {
        self.data.len() * 4
    }
}

/// Every tensor of `p` as `<prefix><name>` with its shape.
fn views<'p>(
    p: &'p Params,
    shapes: &[(String, Vec<usize>)],
    prefix: &str,
) -> Vec<(String, F32View<'p>)> {
    let named = p.named().into_iter().zip(shapes);
    named
        .map(|((name, data), (_, shape))| {
            let shape = shape.clone();
            (format!("{prefix}{name}"), F32View { shape, data })
        })
        .collect()
}

fn io_err(path: &Path) -> impl Fn(std::io::Error) -> CheckpointError + '_ {
    move |source| CheckpointError::Io {
        path: path.into(),
        source,
    }
}

/// Writes `tensors` to `path` and fsyncs the file.
fn write_tensors(path: &Path, tensors: Vec<(String, F32View)>) -> Result<(), CheckpointError> {
    safetensors::serialize_to_file(tensors, &None, path).map_err(|e| match e {
        safetensors::SafeTensorError::IoError(source) => CheckpointError::Io {
            path: path.into(),
            source,
        },
        e => CheckpointError::Format {
            path: path.into(),
            what: format!("writing: {e:?}"),
        },
    })?;
    fsync(path)
}

/// Saves the folder `<parent>/<name>/` atomically (creating `parent` if needed): `write` fills
/// `<name>.tmp/` (fsyncing what it writes), then `<name>/` (if any) becomes `<name>.old/`,
/// `<name>.tmp/` becomes `<name>/`, and `<name>.old/` goes. `<name>/` and `<name>.old/` both
/// present means a crash after the second rename of an earlier save: `<name>/` is complete
/// and `.old` is stale. Returns the saved folder.
fn save_folder(parent: &Path, name: &str, write: impl FnOnce(&Path) -> Result<(), CheckpointError>) -> Result<PathBuf, CheckpointError> {
    std::fs::create_dir_all(parent).map_err(io_err(parent))?;
    let tmp = parent.join(format!("{name}.tmp"));
    remove_dir_if_present(&tmp)?;
    std::fs::create_dir(&tmp).map_err(io_err(&tmp))?;
    let written = write(&tmp);
    if written.is_err() {
        // Not needed for safety (loading ignores it, the next save replaces it): tidiness.
        let _ = std::fs::remove_dir_all(&tmp);
    }
    written?;
    let (cur, old) = (parent.join(name), parent.join(format!("{name}.old")));
    if cur.exists() {
        remove_dir_if_present(&old)?;
        std::fs::rename(&cur, &old).map_err(io_err(&cur))?;
    }
    std::fs::rename(&tmp, &cur).map_err(io_err(&tmp))?;
    fsync(parent)?;
    remove_dir_if_present(&old)?;
    Ok(cur)
}

/// The folder [`save_folder`] last completed in `parent`: `<name>/`, or `<name>.old/` when a
/// save was cut between its two renames (a leftover `<name>.tmp/` is never read).
fn saved_folder(parent: &Path, name: &str) -> Option<PathBuf> {
    [name.to_string(), format!("{name}.old")].iter().map(|d| parent.join(d)).find(|d| d.is_dir())
}

/// Writes `value` as pretty JSON to `path` and fsyncs it.
fn write_json_synced(path: &Path, value: &impl Serialize) -> Result<(), CheckpointError> {
    let json = serde_json::to_vec_pretty(value).map_err(|e| CheckpointError::Format { path: path.into(), what: format!("writing: {e}") })?;
    std::fs::write(path, json).map_err(io_err(path))?;
    fsync(path)
}

/// Flushes a file's data, or a folder's entries, to the disk.
fn fsync(path: &Path) -> Result<(), CheckpointError> {
    File::open(path)
        .and_then(|f| f.sync_all())
        .map_err(io_err(path))
}

pub(crate) fn remove_dir_if_present(path: &Path) -> Result<(), CheckpointError> {
    match std::fs::remove_dir_all(path) {
        Err(e) if e.kind() != std::io::ErrorKind::NotFound => Err(io_err(path)(e)),
        _ => Ok(()),
    }
}

impl CheckpointRef<'_> {
    /// Saves atomically into `<run_dir>/checkpoint/` (creating `run_dir` if needed) and
    /// returns that path. Shapes are checked first: nothing is written for a bad set.
    pub fn save(&self, run_dir: &Path) -> Result<PathBuf, CheckpointError> {
        let invalid = |what: String| CheckpointError::Invalid {
            path: run_dir.into(),
            what,
        };
        for (p, what) in [(self.params, "params"), (self.m, "m"), (self.v, "v")] {
            check_shapes(self.config, p, what).map_err(invalid)?;
        }
        let mut seen = std::collections::HashSet::new();
        // `__metadata__` is the safetensors header's own key.
        let mut clash = |n: &str| n == "__metadata__" || !seen.insert(n.to_string());
        if let Some((name, _)) = self.extra.iter().find(|(n, _)| clash(n)) {
            return Err(invalid(format!(
                "extra tensor name {name:?} repeated or reserved"
            )));
        }

        save_folder(run_dir, DIR, |tmp| self.write_files(tmp))
    }

    /// The four files, each fsynced, then the folder itself.
    fn write_files(&self, tmp: &Path) -> Result<(), CheckpointError> {
        let shapes = tensor_shapes(self.config);
        write_tensors(&tmp.join(WEIGHTS), views(self.params, &shapes, ""))?;
        let mut moments = views(self.m, &shapes, "m.");
        moments.extend(views(self.v, &shapes, "v."));
        write_tensors(&tmp.join(OPTIMIZER), moments)?;
        let extra = self.extra.iter().map(|(name, data)| {
            let shape = vec![data.len()];
            (name.clone(), F32View { shape, data })
        });
        write_tensors(&tmp.join(EXTRA), extra.collect())?;

        let state = StateOut {
            format_version: FORMAT_VERSION,
            config: self.config,
            extra: (self.extra.iter())
                .map(|(name, t)| ExtraEntry {
                    name: name.clone(),
                    len: t.len(),
                })
                .collect(),
            state: self.state,
        };
        write_json_synced(&tmp.join(STATE), &state)?;
        fsync(tmp)
    }
}

/// Whether `run_dir` holds a checkpoint [`Checkpoint::load`] would read.
pub fn exists(run_dir: &Path) -> bool {
    saved_folder(run_dir, DIR).is_some()
}

impl Checkpoint {
    /// Borrows this checkpoint for [`CheckpointRef::save`].
    pub fn view(&self) -> CheckpointRef<'_> {
        CheckpointRef {
            config: &self.config,
            params: &self.params,
            m: &self.m,
            v: &self.v,
            extra: &self.extra,
            state: &self.state,
        }
    }

    /// Loads `<run_dir>/checkpoint/` (or `checkpoint.old/` when a save was interrupted between
    /// its two renames), checking the format version, every tensor's presence, dtype (F32)
    /// and shape against the saved config, and that no unexpected tensor is present.
    pub fn load(run_dir: &Path) -> Result<Checkpoint, CheckpointError> {
        let dir = saved_folder(run_dir, DIR).ok_or_else(|| CheckpointError::Missing {
            path: run_dir.into(),
        })?;

        let state_path = dir.join(STATE);
        let bad_state = |what: String| CheckpointError::Format {
            path: state_path.clone(),
            what,
        };
        let text = std::fs::read(&state_path).map_err(io_err(&state_path))?;
        let json: serde_json::Value =
            serde_json::from_slice(&text).map_err(|e| bad_state(e.to_string()))?;
        // The version first, so a future layout is named as such and not as a parse error.
        match json.get("format_version").and_then(|v| v.as_u64()) {
            Some(v) if v == FORMAT_VERSION as u64 => {}
            Some(v) => {
                return Err(bad_state(format!(
                    "format version {v} (this build reads {FORMAT_VERSION})"
                )))
            }
            None => return Err(bad_state("no format_version".into())),
        }
        let state: StateIn = serde_json::from_value(json).map_err(|e| bad_state(e.to_string()))?;
        let cfg = state.config;

        let params = read_params(&dir.join(WEIGHTS), &cfg, &[""])?.remove(0);
        let mut moments = read_params(&dir.join(OPTIMIZER), &cfg, &["m.", "v."])?;
        let v = moments.remove(1);
        let m = moments.remove(0);
        let extra = read_extra(&dir.join(EXTRA), &state.extra)?;
        Ok(Checkpoint {
            config: cfg,
            params,
            m,
            v,
            extra,
            state: state.state,
        })
    }
}

#[cfg(test)]
mod tests;
