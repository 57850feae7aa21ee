//! Routers: per request, pick which capability's LoRA adapter to apply, or none. A router is
//! a small classifier (linear, or two layers with a ReLU between) over the mean of the
//! backbone's residual stream after one layer, over the prompt's tokens ([`pooled_hidden`]:
//! the model's own forward pass, run up to that layer, no second model). Below its confidence
//! threshold it falls back to the base. `nexus-cli distill train-router` trains one
//! (`nexus_train::router`); docs/DISTILL.md describes the file.
//!
//! A router file is a GGUF with `general.type = router` and F32 tensors `feat_mean`,
//! `feat_scale` (the standardization of the pooled state), `fc1.weight`, `fc1.bias` and, for
//! two layers, `fc2.weight`, `fc2.bias` (weights `n_out` rows of `n_in`, ggml dims
//! `[n_in, n_out]`). Class 0 is the base (no adapter); class `i + 1` is `router.capabilities[i]`.

mod choose;
mod error;
mod pool;

use std::borrow::Cow;
use std::path::{Path, PathBuf};

use nexus_kernels::GgmlType;

pub use choose::{generate, Capabilities, Choice, Source};
pub use error::RouterError;
pub use pool::{backbone_hash, pooled_hidden, route_tokens, MAX_ROUTE_TOKENS};

use crate::gguf::{GgufFile, GgufWriter, Value, ValueType};
use crate::model::Model;

/// The capability name that means "no adapter" in training data and `--capability`.
pub const BASE: &str = "none";

/// Which backbone a router was trained on.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Backbone {
    pub architecture: String,
    pub n_embd: usize,
    pub n_layer: usize,
    /// [`backbone_hash`]: the backbone's tensor names, shapes, types and leading data bytes.
    pub tensors_sha256: String,
}

impl Backbone {
    pub fn of(model: &Model) -> Self {
        Backbone {
            architecture: model.config.arch.name().to_string(),
            n_embd: model.config.n_embd,
            n_layer: model.config.n_layer,
            tensors_sha256: backbone_hash(model.file()),
        }
    }
}

/// One fully connected layer: `y = W·x + b`, `W` row-major `n_out × n_in`.
#[derive(Debug, Clone, PartialEq)]
pub struct Dense {
    pub n_in: usize,
    pub n_out: usize,
    pub weight: Vec<f32>,
    pub bias: Vec<f32>,
}

impl Dense {
    pub fn forward(&self, x: &[f32]) -> Vec<f32> {
        self.weight
            .chunks_exact(self.n_in)
            .zip(&self.bias)
            .map(|(row, b)| b + row.iter().zip(x).map(|(w, v)| w * v).sum::<f32>())
            .collect()
    }
}

#[derive(Debug, Clone, PartialEq)]
pub struct Router {
    /// The file it was loaded from (empty for one made in memory), for error messages.
    pub path: PathBuf,
    pub backbone: Backbone,
    /// The backbone layer whose output is pooled.
    pub layer: usize,
    /// The adapters' capabilities in class order (class 0, the base, is not listed).
    pub capabilities: Vec<String>,
    /// Below this probability the router picks the base.
    pub threshold: f32,
    /// Standardization of the pooled state: `(h − feat_mean) · feat_scale`.
    pub feat_mean: Vec<f32>,
    pub feat_scale: Vec<f32>,
    /// One layer (linear) or two (ReLU between).
    pub layers: Vec<Dense>,
    /// Held-out accuracy measured when it was trained, if recorded.
    pub heldout_accuracy: Option<f32>,
}

/// Capability names become flags and tensor prefixes: 1 to 64 letters, digits, `_` or `-`,
/// and not a word `--capability` gives a meaning of its own.
pub fn check_capability_name(name: &str) -> Result<(), String> {
    let ok = !name.is_empty() && name.len() <= 64 && name.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-');
    if !ok {
        return Err(format!("capability name {name:?} must be 1 to 64 letters, digits, '_' or '-'"));
    }
    if name == BASE || name == "auto" {
        return Err(format!("{name:?} is not a capability name ({BASE:?} means the base, \"auto\" asks the router)"));
    }
    Ok(())
}

impl Router {
    /// Class names in order: `none`, then the capabilities.
    pub fn classes(&self) -> Vec<&str> {
        std::iter::once(BASE).chain(self.capabilities.iter().map(String::as_str)).collect()
    }

    /// Class probabilities (softmax) for a pooled hidden state.
    pub fn probabilities(&self, pooled: &[f32]) -> Vec<f32> {
        let mut x: Vec<f32> =
            pooled.iter().zip(&self.feat_mean).zip(&self.feat_scale).map(|((h, m), s)| (h - m) * s).collect();
        for (i, layer) in self.layers.iter().enumerate() {
            x = layer.forward(&x);
            if i + 1 < self.layers.len() {
                x.iter_mut().for_each(|v| *v = v.max(0.0));
            }
        }
        let max = x.iter().copied().fold(f32::NEG_INFINITY, f32::max);
        let mut sum = 0.0;
        for v in &mut x {
            *v = (*v - max).exp();
            sum += *v;
        }
        x.iter_mut().for_each(|v| *v /= sum);
        x
    }

    /// Refuses a backbone other than the one the router was trained on, naming what differs.
    pub fn check_backbone(&self, model: &Model) -> Result<(), RouterError> {
        let have = Backbone::of(model);
        let want = &self.backbone;
        let mut diffs = Vec::new();
        if have.architecture != want.architecture {
            diffs.push(format!("architecture {} (router) vs {} (model)", want.architecture, have.architecture));
        }
        if have.n_embd != want.n_embd {
            diffs.push(format!("n_embd {} vs {}", want.n_embd, have.n_embd));
        }
        if have.n_layer != want.n_layer {
            diffs.push(format!("n_layer {} vs {}", want.n_layer, have.n_layer));
        }
        if have.tensors_sha256 != want.tensors_sha256 {
            let short = |h: &str| h.chars().take(12).collect::<String>();
            diffs.push(format!(
                "tensors sha256 (names, shapes, types, leading data) {}… vs {}…",
                short(&want.tensors_sha256),
                short(&have.tensors_sha256)
            ));
        }
        if diffs.is_empty() {
            return Ok(());
        }
        Err(RouterError::Backbone { path: self.path.clone(), backbone: model.file().path().to_path_buf(), what: diffs.join("; ") })
    }

    pub fn load(path: impl AsRef<Path>) -> Result<Self, RouterError> {
        Self::from_file(&GgufFile::open(path)?)
    }

    /// Reads and checks a router GGUF: every key and tensor present with its type and shape,
    /// consistent sizes, finite values.
    pub fn from_file(file: &GgufFile) -> Result<Self, RouterError> {
        let path = file.path().to_path_buf();
        let invalid = |what: String| RouterError::Invalid { path: path.clone(), what };
        match file.get("general.type").and_then(|v| v.as_str()) {
            Some("router") => {}
            other => {
                let what = match other {
                    Some(t) => format!("general.type is {t:?}, expected \"router\""),
                    None => "it has no general.type (a router's is \"router\")".to_string(),
                };
                return Err(RouterError::NotARouter { path, what });
            }
        }
        let usize_key = |key: &str| -> Result<usize, RouterError> { Ok(file.get_u64(key)? as usize) };
        let backbone = Backbone {
            architecture: file.get_str("router.backbone.architecture")?.to_string(),
            n_embd: usize_key("router.backbone.n_embd")?,
            n_layer: usize_key("router.backbone.n_layer")?,
            tensors_sha256: file.get_str("router.backbone.tensors_sha256")?.to_string(),
        };
        if backbone.n_embd == 0 || backbone.n_layer > 1 << 16 {
            let what = format!("router.backbone.n_embd {} / n_layer {} are not a model's", backbone.n_embd, backbone.n_layer);
            return Err(invalid(what));
        }
        let layer = usize_key("router.layer")?;
        if layer >= backbone.n_layer {
            return Err(invalid(format!("router.layer {layer} is out of range for a backbone of {} layers", backbone.n_layer)));
        }
        let capabilities: Vec<String> = file.get_str_array("router.capabilities")?.into_iter().map(String::from).collect();
        for (i, c) in capabilities.iter().enumerate() {
            check_capability_name(c).map_err(|what| invalid(format!("router.capabilities: {what}")))?;
            if capabilities[..i].contains(c) {
                return Err(invalid(format!("router.capabilities names {c:?} twice")));
            }
        }
        let threshold = file.get_f32("router.threshold")?;
        if !(0.0..=1.0).contains(&threshold) {
            return Err(invalid(format!("router.threshold {threshold} is not a probability")));
        }
        let heldout_accuracy = file.opt("router.eval.heldout_accuracy", GgufFile::get_f32)?;
        // A NaN here made a loaded router unequal to itself (found by the router_reader fuzz
        // target: tests/fixtures/fuzz/router_reader/).
        if let Some(a) = heldout_accuracy.filter(|a| !(0.0..=1.0).contains(a)) {
            return Err(invalid(format!("router.eval.heldout_accuracy {a} is not a fraction")));
        }
        let d = backbone.n_embd;
        let vector = |name: &str, n: usize| -> Result<Vec<f32>, RouterError> { read_f32(file, name, &[n as u64]) };
        let feat_mean = vector("feat_mean", d)?;
        let feat_scale = vector("feat_scale", d)?;
        let n_classes = capabilities.len() + 1;
        let mut layers = Vec::new();
        let mut n_in = d;
        for i in 1..=2 {
            let Some(info) = file.tensor_info(&format!("fc{i}.weight")) else { break };
            let n_out = match info.dims.as_slice() {
                &[cols, rows] if cols as usize == n_in && rows > 0 && rows <= 1 << 16 => rows as usize,
                dims => return Err(invalid(format!("fc{i}.weight has shape {dims:?}, expected [{n_in}, n_out]"))),
            };
            let weight = read_f32(file, &format!("fc{i}.weight"), &[n_in as u64, n_out as u64])?;
            let bias = vector(&format!("fc{i}.bias"), n_out)?;
            layers.push(Dense { n_in, n_out, weight, bias });
            n_in = n_out;
        }
        match layers.last() {
            None => return Err(invalid("it has no fc1.weight".into())),
            Some(last) if last.n_out != n_classes => {
                let what = format!("the last layer has {} outputs, but there are {n_classes} classes (none + {:?})", last.n_out, capabilities);
                return Err(invalid(what));
            }
            Some(_) => {}
        }
        Ok(Router { path, backbone, layer, capabilities, threshold, feat_mean, feat_scale, layers, heldout_accuracy })
    }

    /// Writes the router GGUF atomically.
    pub fn write(&self, path: impl AsRef<Path>) -> Result<(), RouterError> {
        let path = path.as_ref();
        let mut w = GgufWriter::new();
        let b = &self.backbone;
        w.set("general.type", Value::String("router".into()));
        w.set("general.architecture", Value::String(b.architecture.clone()));
        w.set("general.name", Value::String(format!("router over layer {} ({})", self.layer, self.capabilities.join(", "))));
        w.set("router.backbone.architecture", Value::String(b.architecture.clone()));
        w.set("router.backbone.n_embd", Value::U32(b.n_embd as u32));
        w.set("router.backbone.n_layer", Value::U32(b.n_layer as u32));
        w.set("router.backbone.tensors_sha256", Value::String(b.tensors_sha256.clone()));
        w.set("router.layer", Value::U32(self.layer as u32));
        w.set("router.pool", Value::String("mean".into()));
        let names = self.capabilities.iter().map(|c| Value::String(c.clone())).collect();
        w.set("router.capabilities", Value::Array(ValueType::String, names));
        w.set("router.threshold", Value::F32(self.threshold));
        w.set("router.hidden", Value::U32(if self.layers.len() > 1 { self.layers[0].n_out as u32 } else { 0 }));
        if let Some(a) = self.heldout_accuracy {
            w.set("router.eval.heldout_accuracy", Value::F32(a));
        }
        let mut add = |name: String, dims: &[u64], data: &[f32]| {
            let bytes: Vec<u8> = data.iter().flat_map(|v| v.to_le_bytes()).collect();
            w.add_tensor(name, dims, GgmlType::F32, Cow::Owned(bytes)).map_err(|k| crate::gguf::GgufError::new(path, k))
        };
        add("feat_mean".into(), &[self.feat_mean.len() as u64], &self.feat_mean)?;
        add("feat_scale".into(), &[self.feat_scale.len() as u64], &self.feat_scale)?;
        for (i, l) in self.layers.iter().enumerate() {
            add(format!("fc{}.weight", i + 1), &[l.n_in as u64, l.n_out as u64], &l.weight)?;
            add(format!("fc{}.bias", i + 1), &[l.n_out as u64], &l.bias)?;
        }
        w.write(path)?;
        Ok(())
    }
}

/// An F32 tensor of exactly `dims` whose values are all finite.
fn read_f32(file: &GgufFile, name: &str, dims: &[u64]) -> Result<Vec<f32>, RouterError> {
    let path = file.path().to_path_buf();
    let info = file.tensor_info(name).ok_or_else(|| RouterError::Invalid { path: path.clone(), what: format!("tensor {name} is missing") })?;
    if info.ty != GgmlType::F32 || info.dims != dims {
        let what = format!("tensor {name} is {} {:?}, expected F32 {dims:?}", info.ty, info.dims);
        return Err(RouterError::Invalid { path, what });
    }
    let values: Vec<f32> = file.tensor_data(info).chunks_exact(4).map(|b| f32::from_le_bytes([b[0], b[1], b[2], b[3]])).collect();
    if values.iter().any(|v| !v.is_finite()) {
        return Err(RouterError::Invalid { path, what: format!("tensor {name} holds a value that is not finite") });
    }
    Ok(values)
}
