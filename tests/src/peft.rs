//! PEFT LoRA adapter folders (`adapter_config.json` + `adapter_model.safetensors`, tensor names
//! and layouts as PEFT saves them) for the tiny test models, and the deltas they mean in the
//! GGUF base's own row order: the expectation `nexus-cli convert-lora` is checked against.

use std::collections::HashMap;
use std::path::Path;

use rand::{Rng, SeedableRng};

use crate::lora::base_shape;
use crate::TinyModel;

/// PEFT's module path for a GGUF base tensor (`blk.0.attn_q.weight` →
/// `base_model.model.model.layers.0.self_attn.q_proj`).
pub fn peft_module(gguf: &str) -> String {
    if gguf == "output.weight" {
        return "base_model.model.lm_head".into();
    }
    let parts: Vec<&str> = gguf.split('.').collect();
    let kind = match parts[2] {
        "attn_q" => "self_attn.q_proj",
        "attn_k" => "self_attn.k_proj",
        "attn_v" => "self_attn.v_proj",
        "attn_output" => "self_attn.o_proj",
        "ffn_gate" => "mlp.gate_proj",
        "ffn_up" => "mlp.up_proj",
        "ffn_down" => "mlp.down_proj",
        other => panic!("no PEFT module for {other}"),
    };
    format!("base_model.model.model.layers.{}.{kind}", parts[1])
}

/// Logits with a converted adapter against a float reference, max |diff| relative to the
/// largest |logit|, per `--outtype`: f32 is the golden tests' bound for our f32 forward against
/// transformers; the others add the rounding of A and B (F16: 2⁻¹¹, BF16: 2⁻⁸, Q8_0: a block's
/// max/254 for A and F16 for B at ranks below 32). Measured on the tiny model with an adapter
/// as large as its weights (`lora_peft.rs`): 8.5e-7, 2.7e-3, 1.1e-2, 2.2e-2; the bounds leave
/// about 4× (the fixture's adapter is half its base's size, so its rounding errors are smaller).
pub const OUTTYPE_TOLERANCES: [(&str, f64); 4] = [("f32", 1e-4), ("f16", 1e-2), ("bf16", 4e-2), ("q8_0", 8e-2)];

/// Stored dtype of the safetensors weights.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PeftDtype {
    F32,
    Bf16,
}

/// A random PEFT adapter: `(alpha/r)·B·A` per target, A `[r][n_in]`, B `[n_out][r]` in HF's
/// row order (before llama.cpp's Q/K permutation).
pub struct PeftSpec {
    pub rank: usize,
    pub alpha: f64,
    pub dtype: PeftDtype,
    pub seed: u64,
    /// (GGUF base tensor, n_in, n_out)
    pub targets: Vec<(String, usize, usize)>,
}

/// The values a [`PeftSpec`] wrote: per GGUF base tensor, A and B as stored (after any BF16
/// rounding).
pub struct PeftWeights {
    pub pairs: HashMap<String, (Vec<f32>, Vec<f32>)>,
}

impl PeftSpec {
    pub fn for_model(m: &TinyModel, names: &[&str], rank: usize, alpha: f64, seed: u64) -> Self {
        let targets = names.iter().map(|n| {
            let (i, o) = base_shape(m, n);
            (n.to_string(), i, o)
        });
        PeftSpec { rank, alpha, dtype: PeftDtype::F32, seed, targets: targets.collect() }
    }

    /// The `adapter_config.json` PEFT 0.21 writes for this spec (the keys that matter, and
    /// the defaults of the ones the converter refuses when set).
    pub fn config(&self) -> serde_json::Value {
        let mut modules: Vec<String> =
            self.targets.iter().map(|(n, ..)| peft_module(n).rsplit('.').next().unwrap().to_string()).collect();
        modules.sort();
        modules.dedup();
        serde_json::json!({
            "peft_type": "LORA", "task_type": "CAUSAL_LM", "base_model_name_or_path": "base",
            "r": self.rank, "lora_alpha": self.alpha, "lora_dropout": 0.0, "target_modules": modules,
            "bias": "none", "use_dora": false, "use_rslora": false, "rank_pattern": {}, "alpha_pattern": {},
            "modules_to_save": null, "fan_in_fan_out": false, "lora_bias": false, "init_lora_weights": true,
            "layers_to_transform": null, "layers_pattern": null, "megatron_config": null, "loftq_config": {},
            "eva_config": null, "corda_config": null, "layer_replication": null, "trainable_token_indices": null,
            "inference_mode": true, "peft_version": "0.21.0"
        })
    }

    /// Writes `dir/adapter_config.json` (with `config` as given) and
    /// `dir/adapter_model.safetensors`. A ~ U(±1/√n_in)·2 and B ~ U(±1/√r) so the delta is as
    /// large as the base weights (PEFT itself starts B at zero).
    pub fn write_with_config(&self, dir: &Path, config: &serde_json::Value) -> PeftWeights {
        std::fs::create_dir_all(dir).unwrap();
        std::fs::write(dir.join("adapter_config.json"), serde_json::to_string_pretty(config).unwrap()).unwrap();
        let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(self.seed);
        let round = |v: f32| match self.dtype {
            PeftDtype::F32 => v,
            PeftDtype::Bf16 => f32::from_bits(v.to_bits() & 0xffff_0000),
        };
        let mut pairs = HashMap::new();
        let mut tensors: Vec<(String, Vec<usize>, Vec<u8>)> = Vec::new();
        for (name, n_in, n_out) in &self.targets {
            let (la, lb) = (2.0 / (*n_in as f32).sqrt(), 1.0 / (self.rank as f32).sqrt());
            let a: Vec<f32> = (0..self.rank * n_in).map(|_| round(rng.gen_range(-la..la))).collect();
            let b: Vec<f32> = (0..n_out * self.rank).map(|_| round(rng.gen_range(-lb..lb))).collect();
            let module = peft_module(name);
            for (suffix, shape, vals) in [("lora_A", vec![self.rank, *n_in], &a), ("lora_B", vec![*n_out, self.rank], &b)] {
                let bytes: Vec<u8> = match self.dtype {
                    PeftDtype::F32 => vals.iter().flat_map(|v| v.to_le_bytes()).collect(),
                    PeftDtype::Bf16 => vals.iter().flat_map(|v| ((v.to_bits() >> 16) as u16).to_le_bytes()).collect(),
                };
                tensors.push((format!("{module}.{suffix}.weight"), shape, bytes));
            }
            pairs.insert(name.clone(), (a, b));
        }
        let dtype = match self.dtype {
            PeftDtype::F32 => safetensors::Dtype::F32,
            PeftDtype::Bf16 => safetensors::Dtype::BF16,
        };
        let views: Vec<(String, safetensors::tensor::TensorView<'_>)> = tensors
            .iter()
            .map(|(n, s, b)| (n.clone(), safetensors::tensor::TensorView::new(dtype, s.clone(), b).unwrap()))
            .collect();
        let meta = Some(HashMap::from([("format".to_string(), "pt".to_string())]));
        safetensors::serialize_to_file(views, &meta, &dir.join("adapter_model.safetensors")).unwrap();
        PeftWeights { pairs }
    }

    pub fn write(&self, dir: &Path) -> PeftWeights {
        self.write_with_config(dir, &self.config())
    }
}

/// The GGUF row of HF row `src` of a llama Q or K weight with `n_head` heads: llama.cpp's
/// converter turns each head's halves `[x0…x_{d/2−1}, y0…]` into pairs `x0, y0, x1, y1…`.
pub fn gguf_row(src: usize, n_rows: usize, n_head: usize) -> usize {
    let hd = n_rows / n_head;
    let (h, rem) = (src / hd, src % hd);
    let (j, i) = (rem / (hd / 2), rem % (hd / 2));
    h * hd + 2 * i + j
}

impl PeftWeights {
    /// `(alpha/r)·B·A` per base tensor in f64, `[n_out][n_in]` in the GGUF base's row order:
    /// for a llama base the rows of q and k moved as llama.cpp moves the base weights' rows
    /// (`heads` = (n_head, n_head_kv)), or left in HF's order when `heads` is None.
    pub fn deltas(&self, spec: &PeftSpec, heads: Option<(usize, usize)>) -> HashMap<String, Vec<f64>> {
        let s = spec.alpha / spec.rank as f64;
        let mut out = HashMap::new();
        for (name, n_in, n_out) in &spec.targets {
            let (a, b) = &self.pairs[name];
            let r = spec.rank;
            let permute = match (heads, name.split('.').nth(2)) {
                (Some((q, _)), Some("attn_q")) => Some(q),
                (Some((_, k)), Some("attn_k")) => Some(k),
                _ => None,
            };
            let mut d = vec![0f64; n_out * n_in];
            for o in 0..*n_out {
                let row = permute.map_or(o, |h| gguf_row(o, *n_out, h));
                for i in 0..*n_in {
                    let sum: f64 = (0..r).map(|k| b[o * r + k] as f64 * a[k * n_in + i] as f64).sum();
                    d[row * n_in + i] = s * sum;
                }
            }
            out.insert(name.clone(), d);
        }
        out
    }
}
