//! The profile file: safetensors, so any tool reads it (Python's `safetensors.safe_open`).
//!
//! Tensors, all little-endian, `l` = 0..n_layer:
//!
//! | name | dtype | shape |
//! |---|---|---|
//! | `layer.{l}.eigenvalues` | F64 | `[n_embd]`, descending |
//! | `layer.{l}.basis` | F32 | `[k_l, n_embd]`, orthonormal rows: the principal subspace |
//! | `layer.{l}.mean` | F32 | `[n_embd]`, mean of the residual stream after layer l |
//! | `layer.{l}.residual.{mean,variance,mean_abs,max_abs}` | F32 | `[n_embd]` |
//! | `layer.{l}.ffn.{mean,variance,mean_abs,max_abs}` | F32 | `[n_ff]` (`silu(gate)·up`) |
//! | `importance.layers` | F32 | `[n_layer]` |
//! | `importance.heads` | F32 | `[n_layer, n_head]` |
//! | `importance.ffn_channels` | F32 | `[n_layer, n_ff]` |
//! | `importance.embd_channels` | F32 | `[n_embd]` |
//!
//! The safetensors metadata key `nexus.profile` holds JSON: `format_version` (1), `teacher`,
//! `n_embd`, `n_layer`, `n_head`, `n_ff`, `tokens`, `ablation_tokens`, `base_loss`,
//! `ablation_base_loss`, `config` (the [`ProfileConfig`]), `timings`, and `layers`: per layer
//! `k`, `sensitivity_scale`, `sensitivity_noise`, `sensitivity_remove`, `ffn_ablation`,
//! `head_ablation` (`[n_head]`), `residual_summary` and `ffn_summary` (`mean_rms`, `kurtosis`,
//! `outlier_fraction`). Floats in the JSON are written in shortest round-trip form.

use std::collections::HashMap;
use std::path::Path;

use safetensors::tensor::{Dtype, SafeTensors, TensorView};
use serde::{Deserialize, Serialize};

use super::{
    ActivationSummary, ChannelStats, LayerProfile, Profile, ProfileConfig, ProfileError, Timings,
};
use crate::importance::Importance;

pub const FORMAT_VERSION: u32 = 1;
const META_KEY: &str = "nexus.profile";
const CHANNEL_FIELDS: [&str; 4] = ["mean", "variance", "mean_abs", "max_abs"];

#[derive(Serialize, Deserialize)]
struct Header {
    format_version: u32,
    teacher: String,
    n_embd: usize,
    n_layer: usize,
    n_head: usize,
    n_ff: usize,
    tokens: usize,
    ablation_tokens: usize,
    base_loss: f64,
    ablation_base_loss: f64,
    config: ProfileConfig,
    timings: Timings,
    layers: Vec<LayerHeader>,
}

#[derive(Serialize, Deserialize)]
struct LayerHeader {
    k: usize,
    sensitivity_scale: f64,
    sensitivity_noise: f64,
    sensitivity_remove: f64,
    ffn_ablation: f64,
    head_ablation: Vec<f64>,
    residual_summary: ActivationSummary,
    ffn_summary: ActivationSummary,
}

enum Data {
    F32(Vec<f32>),
    F64(Vec<f64>),
}

impl Profile {
    /// Writes the profile (layout in the module doc), atomically.
    pub fn save(&self, path: &Path) -> Result<(), ProfileError> {
        let bad = |what: String| ProfileError::Format {
            path: path.into(),
            what,
        };
        self.check_shapes().map_err(bad)?;
        let header = Header {
            format_version: FORMAT_VERSION,
            teacher: self.teacher.clone(),
            n_embd: self.n_embd,
            n_layer: self.n_layer,
            n_head: self.n_head,
            n_ff: self.n_ff,
            tokens: self.tokens,
            ablation_tokens: self.ablation_tokens,
            base_loss: self.base_loss,
            ablation_base_loss: self.ablation_base_loss,
            config: self.config.clone(),
            timings: self.timings,
            layers: self
                .layers
                .iter()
                .map(|l| LayerHeader {
                    k: l.k,
                    sensitivity_scale: l.sensitivity_scale,
                    sensitivity_noise: l.sensitivity_noise,
                    sensitivity_remove: l.sensitivity_remove,
                    ffn_ablation: l.ffn_ablation,
                    head_ablation: l.head_ablation.clone(),
                    residual_summary: l.residual_summary,
                    ffn_summary: l.ffn_summary,
                })
                .collect(),
        };
        // JSON would write a NaN as null and the file would not load back: refuse it here.
        let json = serde_json::to_value(&header).map_err(|e| bad(e.to_string()))?;
        if let Some(at) = null_at(&json, String::new()) {
            return Err(bad(format!("{at} is not a finite number")));
        }
        let meta = HashMap::from([(META_KEY.to_string(), json.to_string())]);

        let (d, ff) = (self.n_embd, self.n_ff);
        let mut tensors: Vec<(String, Vec<usize>, Data)> = Vec::new();
        for (i, l) in self.layers.iter().enumerate() {
            tensors.push((
                format!("layer.{i}.eigenvalues"),
                vec![d],
                Data::F64(l.eigenvalues.clone()),
            ));
            tensors.push((
                format!("layer.{i}.basis"),
                vec![l.k, d],
                Data::F32(l.basis.clone()),
            ));
            tensors.push((
                format!("layer.{i}.mean"),
                vec![d],
                Data::F32(l.mean.clone()),
            ));
            for (name, stats, width) in [("residual", &l.residual, d), ("ffn", &l.ffn, ff)] {
                for (field, v) in CHANNEL_FIELDS.iter().zip(channel_vectors(stats)) {
                    tensors.push((
                        format!("layer.{i}.{name}.{field}"),
                        vec![width],
                        Data::F32(v.clone()),
                    ));
                }
            }
        }
        let imp = &self.importance;
        tensors.push((
            "importance.layers".into(),
            vec![self.n_layer],
            Data::F32(imp.layers.clone()),
        ));
        tensors.push((
            "importance.heads".into(),
            vec![self.n_layer, self.n_head],
            Data::F32(imp.heads.concat()),
        ));
        tensors.push((
            "importance.ffn_channels".into(),
            vec![self.n_layer, ff],
            Data::F32(imp.ffn_channels.concat()),
        ));
        tensors.push((
            "importance.embd_channels".into(),
            vec![d],
            Data::F32(imp.embd_channels.clone()),
        ));

        let bytes: Vec<(String, Vec<usize>, Dtype, Vec<u8>)> = tensors
            .into_iter()
            .map(|(name, shape, data)| match data {
                Data::F32(v) => (
                    name,
                    shape,
                    Dtype::F32,
                    v.iter().flat_map(|x| x.to_le_bytes()).collect(),
                ),
                Data::F64(v) => (
                    name,
                    shape,
                    Dtype::F64,
                    v.iter().flat_map(|x| x.to_le_bytes()).collect(),
                ),
            })
            .collect();
        let views = bytes
            .iter()
            .map(|(name, shape, dtype, data)| {
                Ok((
                    name.as_str(),
                    TensorView::new(*dtype, shape.clone(), data)
                        .map_err(|e| bad(format!("{name}: {e:?}")))?,
                ))
            })
            .collect::<Result<Vec<_>, ProfileError>>()?;
        let out = safetensors::serialize(views, &Some(meta)).map_err(|e| bad(format!("{e:?}")))?;
        crate::plot::write_atomic(path, &out).map_err(|source| ProfileError::Io {
            path: path.into(),
            source,
        })
    }

    /// Reads a profile written by [`Profile::save`], checking every tensor's dtype and shape
    /// against the header.
    pub fn load(path: &Path) -> Result<Profile, ProfileError> {
        let bytes = std::fs::read(path).map_err(|source| ProfileError::Io {
            path: path.into(),
            source,
        })?;
        let bad = |what: String| ProfileError::Format {
            path: path.into(),
            what,
        };
        let st =
            SafeTensors::deserialize(&bytes).map_err(|e| bad(format!("safetensors: {e:?}")))?;
        let (_, metadata) =
            SafeTensors::read_metadata(&bytes).map_err(|e| bad(format!("safetensors: {e:?}")))?;
        let json = metadata
            .metadata()
            .as_ref()
            .and_then(|m| m.get(META_KEY))
            .ok_or_else(|| bad(format!("no `{META_KEY}` metadata")))?;
        let h: Header =
            serde_json::from_str(json).map_err(|e| bad(format!("`{META_KEY}` metadata: {e}")))?;
        if h.format_version != FORMAT_VERSION {
            return Err(bad(format!(
                "format version {} (this build reads {FORMAT_VERSION})",
                h.format_version
            )));
        }
        if h.layers.len() != h.n_layer {
            return Err(bad(format!(
                "{} layer entries for n_layer = {}",
                h.layers.len(),
                h.n_layer
            )));
        }
        let (d, ff) = (h.n_embd, h.n_ff);
        let f32s = |name: &str, shape: &[usize]| {
            read(&st, name, Dtype::F32, shape, 4)
                .map(|b| {
                    b.chunks_exact(4)
                        .map(|c| f32::from_le_bytes(c.try_into().unwrap()))
                        .collect::<Vec<f32>>()
                })
                .map_err(&bad)
        };
        let f64s = |name: &str, shape: &[usize]| {
            read(&st, name, Dtype::F64, shape, 8)
                .map(|b| {
                    b.chunks_exact(8)
                        .map(|c| f64::from_le_bytes(c.try_into().unwrap()))
                        .collect::<Vec<f64>>()
                })
                .map_err(&bad)
        };

        let mut layers = Vec::new();
        for (i, lh) in h.layers.into_iter().enumerate() {
            if lh.k == 0 || lh.k > d {
                return Err(bad(format!("layer {i}: k = {} outside 1..={d}", lh.k)));
            }
            if lh.head_ablation.len() != h.n_head {
                return Err(bad(format!(
                    "layer {i}: {} head ablations for {} heads",
                    lh.head_ablation.len(),
                    h.n_head
                )));
            }
            let channels = |name: &str, width: usize| -> Result<ChannelStats, ProfileError> {
                let mut v = CHANNEL_FIELDS
                    .iter()
                    .map(|f| f32s(&format!("layer.{i}.{name}.{f}"), &[width]));
                Ok(ChannelStats {
                    mean: v.next().unwrap()?,
                    variance: v.next().unwrap()?,
                    mean_abs: v.next().unwrap()?,
                    max_abs: v.next().unwrap()?,
                })
            };
            layers.push(LayerProfile {
                eigenvalues: f64s(&format!("layer.{i}.eigenvalues"), &[d])?,
                basis: f32s(&format!("layer.{i}.basis"), &[lh.k, d])?,
                k: lh.k,
                mean: f32s(&format!("layer.{i}.mean"), &[d])?,
                sensitivity_scale: lh.sensitivity_scale,
                sensitivity_noise: lh.sensitivity_noise,
                sensitivity_remove: lh.sensitivity_remove,
                head_ablation: lh.head_ablation,
                ffn_ablation: lh.ffn_ablation,
                residual: channels("residual", d)?,
                residual_summary: lh.residual_summary,
                ffn: channels("ffn", ff)?,
                ffn_summary: lh.ffn_summary,
            });
        }
        let rows = |v: Vec<f32>, width: usize| {
            v.chunks(width.max(1))
                .map(<[f32]>::to_vec)
                .collect::<Vec<_>>()
        };
        let importance = Importance {
            layers: f32s("importance.layers", &[h.n_layer])?,
            heads: rows(f32s("importance.heads", &[h.n_layer, h.n_head])?, h.n_head),
            ffn_channels: rows(f32s("importance.ffn_channels", &[h.n_layer, ff])?, ff),
            embd_channels: f32s("importance.embd_channels", &[d])?,
        };
        let profile = Profile {
            teacher: h.teacher,
            n_embd: d,
            n_layer: h.n_layer,
            n_head: h.n_head,
            n_ff: ff,
            tokens: h.tokens,
            ablation_tokens: h.ablation_tokens,
            base_loss: h.base_loss,
            ablation_base_loss: h.ablation_base_loss,
            config: h.config,
            layers,
            importance,
            timings: h.timings,
        };
        profile.check_shapes().map_err(bad)?;
        Ok(profile)
    }

    /// Every vector has the length the dimensions say (what `save` relies on and `load`
    /// promises its caller).
    fn check_shapes(&self) -> Result<(), String> {
        let (d, ff) = (self.n_embd, self.n_ff);
        let want = |what: String, got: usize, expect: usize| {
            if got == expect {
                Ok(())
            } else {
                Err(format!("{what} has {got} values, expected {expect}"))
            }
        };
        want("layers".into(), self.layers.len(), self.n_layer)?;
        for (i, l) in self.layers.iter().enumerate() {
            want(format!("layer {i} eigenvalues"), l.eigenvalues.len(), d)?;
            want(format!("layer {i} basis"), l.basis.len(), l.k * d)?;
            want(format!("layer {i} mean"), l.mean.len(), d)?;
            want(
                format!("layer {i} head_ablation"),
                l.head_ablation.len(),
                self.n_head,
            )?;
            for (name, stats, width) in [("residual", &l.residual, d), ("ffn", &l.ffn, ff)] {
                for (field, v) in CHANNEL_FIELDS.iter().zip(channel_vectors(stats)) {
                    want(format!("layer {i} {name}.{field}"), v.len(), width)?;
                }
            }
        }
        let imp = &self.importance;
        want("importance.layers".into(), imp.layers.len(), self.n_layer)?;
        want("importance.heads".into(), imp.heads.len(), self.n_layer)?;
        want(
            "importance.ffn_channels".into(),
            imp.ffn_channels.len(),
            self.n_layer,
        )?;
        want(
            "importance.embd_channels".into(),
            imp.embd_channels.len(),
            d,
        )?;
        for (i, (h, f)) in imp.heads.iter().zip(&imp.ffn_channels).enumerate() {
            want(format!("importance.heads[{i}]"), h.len(), self.n_head)?;
            want(format!("importance.ffn_channels[{i}]"), f.len(), ff)?;
        }
        Ok(())
    }
}

fn channel_vectors(s: &ChannelStats) -> [&Vec<f32>; 4] {
    [&s.mean, &s.variance, &s.mean_abs, &s.max_abs]
}

/// A tensor's bytes after checking its dtype and shape.
fn read<'a>(
    st: &SafeTensors<'a>,
    name: &str,
    dtype: Dtype,
    shape: &[usize],
    size: usize,
) -> Result<&'a [u8], String> {
    let t = st
        .tensor(name)
        .map_err(|_| format!("tensor `{name}` is missing"))?;
    if t.dtype() != dtype {
        return Err(format!(
            "tensor `{name}` is {:?}, expected {dtype:?}",
            t.dtype()
        ));
    }
    if t.shape() != shape {
        return Err(format!(
            "tensor `{name}` has shape {:?}, expected {shape:?}",
            t.shape()
        ));
    }
    let expect = shape.iter().product::<usize>() * size;
    if t.data().len() != expect {
        return Err(format!(
            "tensor `{name}` holds {} bytes, expected {expect}",
            t.data().len()
        ));
    }
    Ok(t.data())
}

/// The JSON path of the first null (a non-finite float that serde_json wrote as null).
fn null_at(v: &serde_json::Value, at: String) -> Option<String> {
    match v {
        serde_json::Value::Null => Some(at),
        serde_json::Value::Array(a) => a
            .iter()
            .enumerate()
            .find_map(|(i, x)| null_at(x, format!("{at}[{i}]"))),
        serde_json::Value::Object(o) => o.iter().find_map(|(k, x)| {
            null_at(
                x,
                if at.is_empty() {
                    k.clone()
                } else {
                    format!("{at}.{k}")
                },
            )
        }),
        _ => None,
    }
}
