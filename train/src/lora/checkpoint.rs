//! A `distill train-lora` run's resumable state, in `<adapter>.checkpoint/` next to the adapter
//! it will write (`checkpoint::tensor_dir`'s atomic folder): each pair's A and B and their AdamW
//! moments, the step, the data position, the steps logged so far, and what the job was — a
//! resume with another base, rank, alpha, targets, sequence length, batch or seed is refused
//! with what differs (other data is refused by the data position's token hash).

use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use super::train::{LoraResume, LoraStep};
use super::LoraSet;
use crate::checkpoint::tensor_dir;
use crate::data::DataPosition;
use crate::error::TrainError;

/// What makes two adapter runs the same run.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct LoraJobId {
    pub base_sha256: String,
    pub targets: Vec<String>,
    pub rank: usize,
    pub alpha: f32,
    pub seq_len: usize,
    pub batch: usize,
    pub accum: usize,
    pub seed: u64,
}

#[derive(Serialize, Deserialize)]
struct Saved {
    job: LoraJobId,
    step: usize,
    data: DataPosition,
    log: Vec<LoraStep>,
}

/// `<out>.<suffix>` beside the adapter `out` (its checkpoint folder, the teacher's answers).
pub fn beside(out: &Path, suffix: &str) -> PathBuf {
    let name = out.file_name().map_or_else(|| "adapter".into(), |n| n.to_string_lossy().into_owned());
    out.with_file_name(format!("{name}.{suffix}"))
}

/// The checkpoint folder of the adapter `out`: `<out>.checkpoint/` beside it.
pub fn checkpoint_path(out: &Path) -> PathBuf {
    beside(out, "checkpoint")
}

fn parts(path: &Path) -> (&Path, String) {
    let parent = path.parent().filter(|p| !p.as_os_str().is_empty()).unwrap_or(Path::new("."));
    (parent, path.file_name().map_or_else(String::new, |n| n.to_string_lossy().into_owned()))
}

/// Whether `path` (a [`checkpoint_path`]) holds a saved run.
pub fn exists(path: &Path) -> bool {
    let (parent, name) = parts(path);
    tensor_dir::exists(parent, &name)
}

/// Saves `lora` and `state` for `job` into `path` (atomically).
pub fn save(path: &Path, job: &LoraJobId, lora: &LoraSet, state: &LoraResume) -> Result<(), TrainError> {
    let mut tensors: Vec<(String, &[f32])> = Vec::with_capacity(6 * lora.pairs.len());
    for (i, ((p, m), v)) in lora.pairs.iter().zip(&state.m).zip(&state.v).enumerate() {
        for (what, t) in [("a", &p.a), ("b", &p.b), ("m.a", &m.0), ("m.b", &m.1), ("v.a", &v.0), ("v.b", &v.1)] {
            tensors.push((format!("{what}.{i}"), t.as_slice()));
        }
    }
    let saved = Saved { job: job.clone(), step: state.step, data: state.data, log: state.log.clone() };
    let json = serde_json::to_value(&saved).map_err(|e| TrainError::Invalid(format!("{}: {e}", path.display())))?;
    let (parent, name) = parts(path);
    tensor_dir::save(parent, &name, &tensors, &json)?;
    Ok(())
}

/// Loads the run saved in `path` into `lora` (initialized for `job`, so its pairs' shapes are
/// the ones to expect) and returns the rest; refuses a run of another job.
pub fn load(path: &Path, job: &LoraJobId, lora: &mut LoraSet) -> Result<LoraResume, TrainError> {
    let (parent, name) = parts(path);
    let (tensors, json) = tensor_dir::load(parent, &name)?;
    let bad = |what: String| TrainError::Config { path: path.to_path_buf(), what };
    let saved: Saved = serde_json::from_value(json).map_err(|e| bad(format!("state.json: {e}")))?;
    if saved.job != *job {
        return Err(bad(format!("this checkpoint is of another run: saved {:?}, now {:?} (start afresh without --resume, or restore the settings)", saved.job, job)));
    }
    if tensors.len() != 6 * lora.pairs.len() {
        return Err(bad(format!("{} tensors for {} LoRA pairs", tensors.len(), lora.pairs.len())));
    }
    let mut it = tensors.into_iter();
    let (mut m, mut v) = (Vec::new(), Vec::new());
    for (i, p) in lora.pairs.iter_mut().enumerate() {
        let mut take = |what: &str, len: usize| -> Result<Vec<f32>, TrainError> {
            match it.next() {
                Some((n, t)) if n == format!("{what}.{i}") && t.len() == len => Ok(t),
                Some((n, t)) => Err(bad(format!("tensor {n} of {} values where {what}.{i} of {len} was expected", t.len()))),
                None => Err(bad(format!("no tensor {what}.{i}"))),
            }
        };
        let (la, lb) = (p.a.len(), p.b.len());
        p.a = take("a", la)?;
        p.b = take("b", lb)?;
        m.push((take("m.a", la)?, take("m.b", lb)?));
        v.push((take("v.a", la)?, take("v.b", lb)?));
    }
    Ok(LoraResume { step: saved.step, data: saved.data, m, v, log: saved.log })
}

/// Removes a finished run's checkpoint (its adapter is written).
pub fn remove(path: &Path) -> Result<(), TrainError> {
    let (parent, name) = parts(path);
    for dir in [name.clone(), format!("{name}.old")] {
        crate::checkpoint::remove_dir_if_present(&parent.join(dir))?;
    }
    Ok(())
}
