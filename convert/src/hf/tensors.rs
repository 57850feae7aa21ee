//! Safetensors shards → the ordered list of GGUF tensors, and each tensor's bytes on demand.
//!
//! Order follows the reference: generated tensors (`rope_freqs`) first, then shard files in
//! name order, tensors of each file in name order (safetensors' Python `keys()` sorts them).

use std::collections::BTreeSet;
use std::fs::File;
use std::ops::Range;
use std::path::{Path, PathBuf};

use memmap2::Mmap;
use nexus_kernels::{quantize_row, GgmlType};
use nexus_runtime::gguf::StreamedTensor;
use safetensors::{Dtype, SafeTensors};

use super::config::{read_json, Arch, HfConfig};
use super::{HfError, OutType};

enum Source {
    Shard { shard: usize, dtype: Dtype, range: Range<usize>, permute_heads: Option<usize> },
    RopeFreqs(Vec<f32>),
}

pub struct PlannedTensor {
    pub spec: StreamedTensor,
    hf_name: String,
    source: Source,
}

pub struct Plan {
    shards: Vec<(PathBuf, Mmap)>,
    pub items: Vec<PlannedTensor>,
}

fn shard_files(dir: &Path) -> Result<Vec<PathBuf>, HfError> {
    let index = dir.join("model.safetensors.index.json");
    if index.is_file() {
        let json = read_json(&index)?;
        let map = json.get("weight_map").and_then(|m| m.as_object()).ok_or_else(|| HfError::MissingKey { path: index.clone(), key: "weight_map".into() })?;
        let names: BTreeSet<&str> = map.values().filter_map(|v| v.as_str()).collect();
        return names
            .into_iter()
            .map(|n| {
                let p = dir.join(n);
                if n.contains('/') || n.contains('\\') || !p.is_file() {
                    return Err(HfError::MissingShard { path: index.clone(), shard: n.into() });
                }
                Ok(p)
            })
            .collect();
    }
    let single = dir.join("model.safetensors");
    if !single.is_file() {
        return Err(HfError::MissingShard { path: dir.into(), shard: "model.safetensors".into() });
    }
    Ok(vec![single])
}

/// GGUF name and expected HF shape for an HF tensor name, or None if the architecture has no use for it.
fn map_name(cfg: &HfConfig, hf: &str) -> Option<(String, Vec<usize>)> {
    let (h, f, hd) = (cfg.hidden, cfg.ffn, cfg.head_dim());
    let (q, kv) = (cfg.n_head * hd, cfg.n_head_kv * hd);
    match hf {
        "model.embed_tokens.weight" => return Some(("token_embd.weight".into(), vec![cfg.vocab_size, h])),
        "model.norm.weight" => return Some(("output_norm.weight".into(), vec![h])),
        "lm_head.weight" => return Some(("output.weight".into(), vec![cfg.vocab_size, h])),
        _ => {}
    }
    let rest = hf.strip_prefix("model.layers.")?;
    let (bid, rest) = rest.split_once('.')?;
    let b: usize = bid.parse::<usize>().ok().filter(|&b| b < cfg.n_layer && bid == b.to_string())?;
    let (gguf, shape) = match rest {
        "input_layernorm.weight" => ("attn_norm.weight", vec![h]),
        "post_attention_layernorm.weight" => ("ffn_norm.weight", vec![h]),
        "self_attn.q_proj.weight" => ("attn_q.weight", vec![q, h]),
        "self_attn.k_proj.weight" => ("attn_k.weight", vec![kv, h]),
        "self_attn.v_proj.weight" => ("attn_v.weight", vec![kv, h]),
        "self_attn.o_proj.weight" => ("attn_output.weight", vec![h, q]),
        "self_attn.q_proj.bias" => ("attn_q.bias", vec![q]),
        "self_attn.k_proj.bias" => ("attn_k.bias", vec![kv]),
        "self_attn.v_proj.bias" => ("attn_v.bias", vec![kv]),
        "mlp.gate_proj.weight" => ("ffn_gate.weight", vec![f, h]),
        "mlp.up_proj.weight" => ("ffn_up.weight", vec![f, h]),
        "mlp.down_proj.weight" => ("ffn_down.weight", vec![h, f]),
        _ => return None,
    };
    Some((format!("blk.{b}.{gguf}"), shape))
}

pub fn plan(dir: &Path, cfg: &HfConfig, outtype: OutType) -> Result<Plan, HfError> {
    let mut shards = Vec::new();
    let mut items = Vec::new();
    if let Some(freqs) = cfg.llama3_rope_freqs() {
        let spec = StreamedTensor { name: "rope_freqs.weight".into(), dims: vec![freqs.len() as u64], ty: GgmlType::F32 };
        items.push(PlannedTensor { spec, hf_name: "rope_freqs".into(), source: Source::RopeFreqs(freqs) });
    }
    for path in shard_files(dir)? {
        let file = File::open(&path).map_err(|source| HfError::Io { path: path.clone(), source })?;
        // SAFETY: the map is read-only; a file changed underneath us yields wrong bytes, not UB in our code paths.
        let map = unsafe { Mmap::map(&file) }.map_err(|source| HfError::Io { path: path.clone(), source })?;
        let (header_len, meta) = SafeTensors::read_metadata(&map)
            .map_err(|e| HfError::Safetensors { path: path.clone(), problem: e.to_string() })?;
        let data_start = 8 + header_len;
        let mut names: Vec<(String, _)> = meta.tensors().into_iter().collect();
        names.sort_by(|a, b| a.0.cmp(&b.0));
        for (name, info) in names {
            if name.ends_with(".rotary_emb.inv_freq") {
                continue;
            }
            let Some((gguf_name, expected)) = map_name(cfg, &name) else {
                return Err(HfError::UnusedTensor { path: path.clone(), name: name.clone(), arch: cfg.arch.gguf_name().into() });
            };
            if !matches!(info.dtype, Dtype::F32 | Dtype::F16 | Dtype::BF16) {
                return Err(HfError::UnsupportedDtype { path: path.clone(), name: name.clone(), dtype: format!("{:?}", info.dtype) });
            }
            if info.shape != expected {
                return Err(HfError::ShapeMismatch { path: path.clone(), name: name.clone(), expected, found: info.shape.clone() });
            }
            let permute_heads = match (cfg.arch, name.rsplit('.').nth(1)) {
                (Arch::Llama, Some("q_proj")) => Some(cfg.n_head),
                (Arch::Llama, Some("k_proj")) => Some(cfg.n_head_kv),
                _ => None,
            };
            let ty = if expected.len() <= 1 || gguf_name.ends_with("_norm.weight") {
                GgmlType::F32
            } else if outtype == OutType::Q8_0 && expected[expected.len() - 1] % 32 != 0 {
                // The reference falls back to F16 when rows are not whole Q8_0 blocks.
                GgmlType::F16
            } else {
                outtype.ggml()
            };
            let dims = expected.iter().rev().map(|&d| d as u64).collect();
            let range = data_start + info.data_offsets.0..data_start + info.data_offsets.1;
            let source = Source::Shard { shard: shards.len(), dtype: info.dtype, range, permute_heads };
            items.push(PlannedTensor { spec: StreamedTensor { name: gguf_name, dims, ty }, hf_name: name.clone(), source });
        }
        shards.push((path, map));
    }
    let mut required = vec![("model.embed_tokens.weight".to_string(), "token_embd.weight"), ("model.norm.weight".into(), "output_norm.weight")];
    if !cfg.tie_word_embeddings {
        required.push(("lm_head.weight".into(), "output.weight"));
    }
    for b in 0..cfg.n_layer {
        for t in ["attn_norm", "ffn_norm", "attn_q", "attn_k", "attn_v", "attn_output", "ffn_gate", "ffn_up", "ffn_down"] {
            required.push((format!("blk.{b}.{t}.weight"), ""));
        }
    }
    for (name, _) in &required {
        let gguf = if name.starts_with("blk.") { name.clone() } else { map_name(cfg, name).map(|m| m.0).unwrap_or_default() };
        if !items.iter().any(|t| t.spec.name == gguf) {
            return Err(HfError::MissingTensor { path: dir.into(), name: gguf });
        }
    }
    let mut seen = BTreeSet::new();
    for t in &items {
        if !seen.insert(t.spec.name.as_str()) {
            return Err(HfError::Tensor { path: dir.into(), name: t.hf_name.clone(), problem: "appears in more than one shard".into() });
        }
    }
    Ok(Plan { shards, items })
}

impl Plan {
    /// The GGUF bytes of tensor `i`: decoded to f32, Q/K rows permuted for llama, then encoded.
    pub fn produce(&self, i: usize, _cfg: &HfConfig) -> Result<Vec<u8>, HfError> {
        let item = &self.items[i];
        let values = match &item.source {
            Source::RopeFreqs(v) => v.clone(),
            Source::Shard { shard, dtype, range, permute_heads } => {
                let (path, map) = &self.shards[*shard];
                let bytes = map.get(range.clone()).ok_or_else(|| HfError::Safetensors {
                    path: path.clone(),
                    problem: format!("tensor {:?} data {range:?} lies past the end of the file", item.hf_name),
                })?;
                let mut v = decode(bytes, *dtype);
                if let Some(heads) = permute_heads {
                    let row_len = if item.spec.dims.len() == 1 { 1 } else { item.spec.dims[0] as usize };
                    v = permute_rows(&v, *heads, row_len);
                }
                v
            }
        };
        let n: u64 = item.spec.dims.iter().product();
        let size = item.spec.ty.row_size(n).unwrap_or(0) as usize;
        let mut out = vec![0u8; size];
        quantize_row(item.spec.ty, &values, &mut out).map_err(|e| HfError::Tensor {
            path: self.shards.first().map(|s| s.0.clone()).unwrap_or_default(),
            name: item.hf_name.clone(),
            problem: e.to_string(),
        })?;
        Ok(out)
    }
}

pub(crate) fn decode(bytes: &[u8], dtype: Dtype) -> Vec<f32> {
    match dtype {
        Dtype::F16 => bytes.chunks_exact(2).map(|c| half::f16::from_le_bytes([c[0], c[1]]).to_f32()).collect(),
        Dtype::BF16 => bytes.chunks_exact(2).map(|c| half::bf16::from_le_bytes([c[0], c[1]]).to_f32()).collect(),
        _ => bytes.chunks_exact(4).map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]])).collect(),
    }
}

/// llama.cpp's `LlamaModel.permute` (also applied to LoRA B of q/k by `lora_peft`): per head, rows `[x0..x_{d/2}, y0..]` (HF's rotate_half
/// halves) become interleaved pairs `(x0, y0), (x1, y1)…` for ggml's adjacent-pair RoPE.
pub(crate) fn permute_rows(w: &[f32], n_head: usize, row_len: usize) -> Vec<f32> {
    let rows = w.len() / row_len;
    let half = rows / n_head / 2;
    let mut out = Vec::with_capacity(w.len());
    for h in 0..n_head {
        for i in 0..half {
            for j in 0..2 {
                let src = h * 2 * half + j * half + i;
                out.extend_from_slice(&w[src * row_len..(src + 1) * row_len]);
            }
        }
    }
    out
}
