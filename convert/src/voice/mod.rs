//! A Piper VITS voice (`VOICE.onnx` + `VOICE.onnx.json`) → a voice GGUF (docs/VOICE.md):
//! tensors named by VITS module, F32, ONNX bytes unchanged, GGUF dims = ONNX shape reversed;
//! metadata from the JSON config; hyper-parameters read from the graph and checked.
//!
//! Steps: parse the ONNX (memory-mapped; tensor bytes are borrowed, not copied) → name every
//! initializer (`names`) → read and check the hyper-parameters (`hparams`) and the graph
//! constants (`constants`) → check the parameter set is exactly the expected one → write
//! atomically with `GgufWriter`.

mod config;
mod constants;
mod error;
mod hparams;
mod names;

use std::collections::BTreeMap;
use std::fs::File;
use std::path::{Path, PathBuf};

use memmap2::Mmap;
use nexus_kernels::GgmlType;
use nexus_runtime::gguf::{GgufWriter, Value, ValueType};

use crate::onnx::{self, OnnxError};

pub use config::VoiceConfig;
pub use error::VoiceError;
pub use hparams::HParams;

/// What a conversion wrote.
#[derive(Debug, Clone)]
pub struct VoiceSummary {
    pub name: String,
    pub n_tensors: usize,
    /// Graph constants checked or skipped (not written).
    pub n_constants: usize,
    pub hparams: HParams,
}

/// The config path Piper uses: `VOICE.onnx.json` beside `VOICE.onnx`.
pub fn default_config_path(onnx: &Path) -> PathBuf {
    let mut s = onnx.as_os_str().to_owned();
    s.push(".json");
    PathBuf::from(s)
}

/// Converts `onnx_path` (with its JSON `config_path`) into the voice GGUF `out`. Nothing is
/// left under `out` if it fails.
pub fn convert_voice(onnx_path: &Path, config_path: &Path, out: &Path) -> Result<VoiceSummary, VoiceError> {
    let config = VoiceConfig::load(config_path)?;
    let file = File::open(onnx_path).map_err(|error| VoiceError::Io { path: onnx_path.into(), error })?;
    // SAFETY: the map is read-only and lives until the GGUF is written; a concurrent writer to
    // the input file is outside what a converter can defend against (as for safetensors).
    let map = unsafe { Mmap::map(&file) }.map_err(|error| VoiceError::Io { path: onnx_path.into(), error })?;
    let onnx_err = |error: OnnxError| VoiceError::Onnx { path: onnx_path.into(), error };
    if map.starts_with(b"GGUF") {
        return Err(onnx_err(OnnxError::NotOnnx("it is a GGUF file (already converted?)".into())));
    }
    let model = onnx::parse_model(&map).map_err(onnx_err)?;
    let graph = &model.graph;

    let (params, constants) = names::classify(graph, onnx_path)?;
    let mut shapes = BTreeMap::new();
    for p in &params {
        shapes.insert(p.vits.clone(), p.tensor.shape().map_err(onnx_err)?);
    }
    let hp = hparams::read(graph, &shapes, onnx_path)?;
    let expect = constants::Expect {
        hidden_channels: hp.hidden_channels,
        n_heads: hp.n_heads,
        n_bins: hp.n_bins,
        n_resblock_kinds: hp.resblock_kernel_sizes.len(),
    };
    let graph_constants = constants::check(&constants, &expect, onnx_path)?;
    check_tensor_set(&hp, &shapes, onnx_path)?;
    check_config(&config, &hp, config_path)?;

    let name = onnx_path
        .file_name()
        .and_then(|n| n.to_str())
        .map(|n| n.strip_suffix(".onnx").unwrap_or(n).to_string())
        .unwrap_or_else(|| "voice".into());
    let mut w = GgufWriter::new();
    write_metadata(&mut w, &name, &config, &hp, graph_constants);
    for p in &params {
        let dims: Vec<u64> = shapes[&p.vits].iter().rev().map(|&d| d as u64).collect();
        let data = p.tensor.f32_bytes().map_err(onnx_err)?;
        w.add_tensor(p.vits.clone(), &dims, GgmlType::F32, data)
            .map_err(|error| VoiceError::GgufKind { path: out.into(), error })?;
    }
    w.write(out)?;
    Ok(VoiceSummary { name, n_tensors: params.len(), n_constants: constants.len(), hparams: hp })
}

/// The parameters must be exactly those the hyper-parameters imply, with the same shapes.
fn check_tensor_set(hp: &HParams, shapes: &BTreeMap<String, Vec<usize>>, path: &Path) -> Result<(), VoiceError> {
    let expected = hparams::expected_tensors(hp);
    for (name, shape) in &expected {
        match shapes.get(name) {
            None => return Err(VoiceError::Missing { path: path.into(), name: name.clone() }),
            Some(found) if found != shape => {
                return Err(VoiceError::Shape { path: path.into(), name: name.clone(), expected: shape.clone(), found: found.clone() })
            }
            Some(_) => {}
        }
    }
    if let Some(extra) = shapes.keys().find(|k| !expected.iter().any(|(n, _)| n == *k)) {
        return Err(VoiceError::Architecture {
            path: path.into(),
            problem: format!("tensor {extra:?} is not part of the VITS layout the native forward implements"),
        });
    }
    Ok(())
}

fn check_config(config: &VoiceConfig, hp: &HParams, path: &Path) -> Result<(), VoiceError> {
    let bad = |key: &str, problem: String| VoiceError::Config { path: path.into(), key: key.into(), problem };
    if config.num_symbols as usize != hp.n_vocab {
        return Err(bad("num_symbols", format!("{} but the voice's embedding has {} rows", config.num_symbols, hp.n_vocab)));
    }
    for (phoneme, ids) in &config.phoneme_id_map {
        if let Some(id) = ids.iter().find(|&&id| id as usize >= hp.n_vocab) {
            return Err(bad("phoneme_id_map", format!("phoneme {phoneme:?}: id {id} is outside the {}-row embedding", hp.n_vocab)));
        }
    }
    Ok(())
}

fn u32s(values: impl IntoIterator<Item = usize>) -> Value {
    Value::Array(ValueType::U32, values.into_iter().map(|v| Value::U32(v as u32)).collect())
}

fn write_metadata(w: &mut GgufWriter, name: &str, config: &VoiceConfig, hp: &HParams, gc: constants::GraphConstants) {
    w.set("general.architecture", Value::String("vits".into()));
    w.set("general.name", Value::String(name.into()));
    w.set("vits.sample_rate", Value::U32(config.sample_rate));
    w.set("vits.espeak.voice", Value::String(config.espeak_voice.clone()));
    w.set("vits.noise_scale", Value::F32(config.noise_scale));
    w.set("vits.length_scale", Value::F32(config.length_scale));
    w.set("vits.noise_w", Value::F32(config.noise_w));
    w.set("vits.phoneme_type", Value::String(config.phoneme_type.clone()));
    let map = &config.phoneme_id_map;
    w.set("vits.phoneme_id_map.phonemes", Value::Array(ValueType::String, map.iter().map(|(p, _)| Value::String(p.clone())).collect()));
    w.set("vits.phoneme_id_map.counts", u32s(map.iter().map(|(_, ids)| ids.len())));
    w.set("vits.phoneme_id_map.ids", u32s(map.iter().flat_map(|(_, ids)| ids.iter().map(|&i| i as usize))));
    w.set("vits.n_vocab", Value::U32(hp.n_vocab as u32));
    w.set("vits.hidden_channels", Value::U32(hp.hidden_channels as u32));
    w.set("vits.filter_channels", Value::U32(hp.filter_channels as u32));
    w.set("vits.n_heads", Value::U32(hp.n_heads as u32));
    w.set("vits.n_layers", Value::U32(hp.n_layers as u32));
    w.set("vits.window_size", Value::U32(hp.window_size as u32));
    w.set("vits.upsample_rates", u32s(hp.upsample_rates.iter().copied()));
    w.set("vits.upsample_kernel_sizes", u32s(hp.upsample_kernel_sizes.iter().copied()));
    w.set("vits.upsample_initial_channel", Value::U32(hp.upsample_initial_channel as u32));
    w.set("vits.resblock_kernel_sizes", u32s(hp.resblock_kernel_sizes.iter().copied()));
    w.set("vits.resblock_dilations", u32s(hp.resblock_dilations.iter().flatten().copied()));
    w.set("vits.flow.n_flows", Value::U32(hp.n_flows as u32));
    w.set("vits.flow.n_wn_layers", Value::U32(hp.n_wn_layers as u32));
    w.set("vits.flow.kernel_size", Value::U32(hp.flow_kernel_size as u32));
    w.set("vits.dp.n_bins", Value::U32(hp.n_bins as u32));
    w.set("vits.dp.tail_bound", Value::F32(gc.tail_bound));
    w.set("vits.layer_norm_eps", Value::F32(gc.layer_norm_eps));
}
