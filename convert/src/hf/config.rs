//! `config.json` → the hyper-parameters llama.cpp's converter writes as `<arch>.*` keys.
//!
//! The reference converter reads the config through transformers' `AutoConfig`, which fills in
//! defaults; we mirror the defaults that change its output (`num_key_value_heads` = heads,
//! llama's `head_dim` = hidden / heads, `rope_theta` = 10000) and require the rest.

use std::path::{Path, PathBuf};

use nexus_runtime::gguf::Value;
use serde_json::Value as Json;

use super::HfError;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Arch {
    Llama,
    Qwen2,
}

impl Arch {
    pub fn gguf_name(self) -> &'static str {
        match self {
            Arch::Llama => "llama",
            Arch::Qwen2 => "qwen2",
        }
    }
}

/// llama3-style RoPE scaling, carried by the `rope_freqs.weight` tensor rather than keys.
#[derive(Debug, Clone, Copy)]
pub struct Llama3Rope {
    pub factor: f32,
    pub low_freq_factor: f32,
    pub high_freq_factor: f32,
    pub original_max_position_embeddings: f32,
}

#[derive(Debug, Clone)]
pub struct HfConfig {
    pub path: PathBuf,
    pub json: Json,
    pub arch: Arch,
    pub hidden: usize,
    pub ffn: usize,
    pub n_layer: usize,
    pub n_head: usize,
    pub n_head_kv: usize,
    /// Present in config.json (or implied by transformers for llama).
    pub head_dim: Option<usize>,
    pub vocab_size: usize,
    pub context_length: u64,
    pub rms_norm_eps: f64,
    pub rope_theta: f64,
    pub linear_rope_factor: Option<f64>,
    pub llama3_rope: Option<Llama3Rope>,
    pub tie_word_embeddings: bool,
}

impl HfConfig {
    pub fn load(dir: &Path) -> Result<Self, HfError> {
        let path = dir.join("config.json");
        let json = read_json(&path)?;
        let arch_name = json
            .get("architectures")
            .and_then(|a| a.get(0))
            .and_then(Json::as_str)
            .ok_or_else(|| HfError::MissingKey { path: path.clone(), key: "architectures".into() })?;
        let arch = match arch_name {
            "LlamaForCausalLM" | "MistralForCausalLM" => Arch::Llama,
            "Qwen2ForCausalLM" => Arch::Qwen2,
            other => return Err(HfError::UnsupportedArch { path, arch: other.into() }),
        };
        let usize_key = |key: &str| -> Result<usize, HfError> {
            let v = json.get(key).ok_or_else(|| HfError::MissingKey { path: path.clone(), key: key.into() })?;
            v.as_u64().filter(|&n| n > 0).map(|n| n as usize).ok_or_else(|| HfError::BadKey {
                path: path.clone(),
                key: key.into(),
                problem: format!("expected a positive integer, found {v}"),
            })
        };
        let f64_key = |key: &str| -> Result<Option<f64>, HfError> {
            match json.get(key) {
                None | Some(Json::Null) => Ok(None),
                Some(v) => v.as_f64().map(Some).ok_or_else(|| HfError::BadKey {
                    path: path.clone(),
                    key: key.into(),
                    problem: format!("expected a number, found {v}"),
                }),
            }
        };
        let hidden = usize_key("hidden_size")?;
        let n_head = usize_key("num_attention_heads")?;
        let n_head_kv = if json.get("num_key_value_heads").is_some() { usize_key("num_key_value_heads")? } else { n_head };
        let head_dim = match json.get("head_dim") {
            Some(Json::Null) | None => (arch == Arch::Llama).then_some(hidden / n_head),
            Some(_) => Some(usize_key("head_dim")?),
        };
        let rms_norm_eps = f64_key("rms_norm_eps")?
            .ok_or_else(|| HfError::MissingKey { path: path.clone(), key: "rms_norm_eps".into() })?;
        let mut cfg = HfConfig {
            arch,
            hidden,
            ffn: usize_key("intermediate_size")?,
            n_layer: usize_key("num_hidden_layers")?,
            n_head,
            n_head_kv,
            head_dim,
            vocab_size: usize_key("vocab_size")?,
            context_length: usize_key("max_position_embeddings")? as u64,
            rms_norm_eps,
            rope_theta: f64_key("rope_theta")?.unwrap_or(10000.0),
            linear_rope_factor: None,
            llama3_rope: None,
            tie_word_embeddings: json.get("tie_word_embeddings").and_then(Json::as_bool).unwrap_or(false),
            json: Json::Null,
            path: path.clone(),
        };
        if n_head % n_head_kv != 0 || !cfg.head_dim().is_multiple_of(2) {
            return Err(HfError::BadKey {
                path,
                key: "num_key_value_heads".into(),
                problem: format!("{n_head} heads, {n_head_kv} kv heads, head_dim {} do not fit", cfg.head_dim()),
            });
        }
        cfg.read_rope(&json)?;
        cfg.json = json;
        Ok(cfg)
    }

    pub fn head_dim(&self) -> usize {
        self.head_dim.unwrap_or(self.hidden / self.n_head)
    }

    fn read_rope(&mut self, json: &Json) -> Result<(), HfError> {
        let key = if json.get("rope_parameters").is_some() { "rope_parameters" } else { "rope_scaling" };
        let Some(rope) = json.get(key).filter(|v| !v.is_null()) else { return Ok(()) };
        if let Some(theta) = rope.get("rope_theta").and_then(Json::as_f64) {
            self.rope_theta = theta;
        }
        let ty = rope.get("rope_type").or_else(|| rope.get("type")).and_then(Json::as_str).unwrap_or("default");
        let num = |k: &str, default: f64| rope.get(k).and_then(Json::as_f64).unwrap_or(default);
        match ty.to_ascii_lowercase().as_str() {
            "default" => {}
            "linear" => self.linear_rope_factor = rope.get("factor").and_then(Json::as_f64),
            "llama3" => {
                self.llama3_rope = Some(Llama3Rope {
                    factor: num("factor", 8.0) as f32,
                    low_freq_factor: num("low_freq_factor", 1.0) as f32,
                    high_freq_factor: num("high_freq_factor", 4.0) as f32,
                    original_max_position_embeddings: num("original_max_position_embeddings", 8192.0) as f32,
                })
            }
            other => {
                return Err(HfError::BadKey {
                    path: self.path.clone(),
                    key: format!("{key}.rope_type"),
                    problem: format!("unsupported rope type {other:?} (supported: default, linear, llama3)"),
                })
            }
        }
        Ok(())
    }

    /// `<arch>.*` keys in the reference converter's order, up to and including `file_type`.
    pub fn hparams(&self, file_type: u32) -> Vec<(String, Value)> {
        let a = self.arch.gguf_name();
        let u = |n: usize| Value::U32(n as u32);
        let mut kv = vec![
            (format!("{a}.block_count"), u(self.n_layer)),
            (format!("{a}.context_length"), Value::U32(self.context_length as u32)),
            (format!("{a}.embedding_length"), u(self.hidden)),
            (format!("{a}.feed_forward_length"), u(self.ffn)),
            (format!("{a}.attention.head_count"), u(self.n_head)),
            (format!("{a}.attention.head_count_kv"), u(self.n_head_kv)),
        ];
        if let Some(f) = self.linear_rope_factor {
            kv.push((format!("{a}.rope.scaling.type"), Value::String("linear".into())));
            kv.push((format!("{a}.rope.scaling.factor"), Value::F32(f as f32)));
        }
        kv.push((format!("{a}.rope.freq_base"), Value::F32(self.rope_theta as f32)));
        kv.push((format!("{a}.attention.layer_norm_rms_epsilon"), Value::F32(self.rms_norm_eps as f32)));
        if let Some(hd) = self.head_dim {
            kv.push((format!("{a}.attention.key_length"), u(hd)));
            kv.push((format!("{a}.attention.value_length"), u(hd)));
        }
        kv.push(("general.file_type".into(), Value::U32(file_type)));
        if self.arch == Arch::Llama {
            kv.push((format!("{a}.vocab_size"), u(self.vocab_size)));
            kv.push((format!("{a}.rope.dimension_count"), u(self.head_dim())));
        }
        kv
    }

    /// `rope_freqs.weight` for llama3 scaling, computed in f32 step by step like the reference
    /// (torch float32 tensors), so the bytes agree.
    pub fn llama3_rope_freqs(&self) -> Option<Vec<f32>> {
        let r = self.llama3_rope?;
        let dim = self.head_dim();
        let base = self.rope_theta as f32;
        let low_wavelen = r.original_max_position_embeddings / r.low_freq_factor;
        let high_wavelen = r.original_max_position_embeddings / r.high_freq_factor;
        let two_pi = (2.0 * std::f64::consts::PI) as f32;
        let factors = (0..dim)
            .step_by(2)
            .map(|i| {
                let freq = 1.0f32 / base.powf(i as f32 / dim as f32);
                let wavelen = two_pi / freq;
                if wavelen < high_wavelen {
                    1.0
                } else if wavelen > low_wavelen {
                    r.factor
                } else {
                    let smooth = (r.original_max_position_embeddings / wavelen - r.low_freq_factor)
                        / (r.high_freq_factor - r.low_freq_factor);
                    1.0 / ((1.0 - smooth) / r.factor + smooth)
                }
            })
            .collect();
        Some(factors)
    }
}

pub fn read_json(path: &Path) -> Result<Json, HfError> {
    let text = std::fs::read_to_string(path).map_err(|source| HfError::Io { path: path.into(), source })?;
    serde_json::from_str(&text).map_err(|source| HfError::Json { path: path.into(), source })
}
