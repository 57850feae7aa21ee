//! PEFT's `adapter_config.json`: the rank and alpha a LoRA GGUF carries, and a clear refusal of
//! every option that changes what the adapter computes beyond `y = W·x + (alpha/r)·B·A·x`.
//!
//! llama.cpp's `convert_lora_to_gguf.py` reads only `lora_alpha` and silently ignores the rest,
//! so it writes files that compute something else for DoRA, rsLoRA, per-module alphas, biases
//! and the like. We refuse those, except rsLoRA: its scale `alpha/√r` is written as
//! `adapter.lora.alpha = alpha·√r`, which every runtime then divides by r (a file llama.cpp's
//! converter would write with plain `alpha`, computing the wrong scale).

use std::path::{Path, PathBuf};

use serde_json::Value as Json;

use super::PeftError;

/// What the converter takes from `adapter_config.json`.
#[derive(Debug, Clone)]
pub struct PeftConfig {
    pub path: PathBuf,
    /// `r`: every pair's rank, unless `rank_pattern` gives some modules another.
    pub r: usize,
    /// `lora_alpha` as written.
    pub lora_alpha: f64,
    pub use_rslora: bool,
    /// `rank_pattern` is non-empty: pairs may have other ranks than `r`.
    pub has_rank_pattern: bool,
    /// `target_modules` when it is a list (a string is a regex PEFT matched; not checked).
    pub target_modules: Option<Vec<String>>,
}

/// Options that only shape initialisation or training, or are bookkeeping: accepted whatever
/// their value. Every other key that is not null, false, empty or its default is refused.
const HARMLESS: [&str; 21] = [
    "r",
    "lora_alpha",
    "use_rslora",
    "rank_pattern",
    "alpha_pattern",
    "target_modules",
    "peft_type",
    "task_type",
    "base_model_name_or_path",
    "revision",
    "inference_mode",
    "lora_dropout",
    "init_lora_weights",
    "loftq_config",
    "eva_config",
    "corda_config",
    "lora_ga_config",
    "peft_version",
    "auto_mapping",
    "exclude_modules",
    "layers_pattern",
];

/// Keys that change the adapter's computation (or its tensors) when set, with why.
const REFUSED: [(&str, &str); 13] = [
    ("use_dora", "DoRA (weight-decomposed LoRA) is not a plain low-rank update"),
    ("modules_to_save", "modules_to_save stores whole replacement weights, not a LoRA"),
    ("fan_in_fan_out", "fan_in_fan_out (Conv1D-style transposed weights)"),
    ("lora_bias", "lora_bias adds a bias to lora_B"),
    ("trainable_token_indices", "trainable_token_indices replaces embedding rows"),
    ("target_parameters", "target_parameters (LoRA on bare parameters, e.g. MoE experts)"),
    ("alora_invocation_tokens", "activated LoRA (alora_invocation_tokens)"),
    ("invocation_string", "activated LoRA (invocation_string)"),
    ("use_qalora", "QA-LoRA pools its input"),
    ("layer_replication", "layer_replication changes the base model's layers"),
    ("use_bdlora", "block-diagonal LoRA (use_bdlora)"),
    ("megatron_config", "Megatron-parallel LoRA"),
    ("arrow_config", "Arrow routing between LoRA experts"),
];

/// Whether a JSON value means "option off": null, false, 0, "", [] or {}.
fn is_off(v: &Json) -> bool {
    match v {
        Json::Null => true,
        Json::Bool(b) => !b,
        Json::Number(n) => n.as_f64() == Some(0.0),
        Json::String(s) => s.is_empty(),
        Json::Array(a) => a.is_empty(),
        Json::Object(o) => o.is_empty(),
    }
}

impl PeftConfig {
    pub fn load(path: &Path) -> Result<Self, PeftError> {
        let text = std::fs::read_to_string(path).map_err(|source| PeftError::Io { path: path.into(), source })?;
        let json: Json = serde_json::from_str(&text).map_err(|source| PeftError::Json { path: path.into(), source })?;
        Self::from_json(path, &json)
    }

    pub fn from_json(path: &Path, json: &Json) -> Result<Self, PeftError> {
        let bad = |key: &str, problem: String| PeftError::BadKey { path: path.into(), key: key.into(), problem };
        let unsupported = |what: String| PeftError::Unsupported { path: path.into(), what };
        let obj = json.as_object().ok_or_else(|| bad("(top level)", "not a JSON object".into()))?;

        if let Some(t) = obj.get("peft_type") {
            if t.as_str() != Some("LORA") {
                return Err(unsupported(format!("peft_type {t}: only LORA adapters convert to a LoRA GGUF")));
            }
        }
        let r = match obj.get("r").and_then(Json::as_u64) {
            Some(r) if r > 0 => r as usize,
            Some(_) => return Err(bad("r", "the rank must be positive".into())),
            None if obj.contains_key("r") => return Err(bad("r", "not a positive integer".into())),
            None => return Err(PeftError::Missing { path: path.into(), what: "key \"r\" (the LoRA rank)".into() }),
        };
        let lora_alpha = match obj.get("lora_alpha") {
            Some(v) => v.as_f64().filter(|a| a.is_finite() && *a >= 0.0).ok_or_else(|| bad("lora_alpha", format!("{v} is not a finite non-negative number")))?,
            None => return Err(PeftError::Missing { path: path.into(), what: "key \"lora_alpha\"".into() }),
        };
        let use_rslora = match obj.get("use_rslora") {
            None | Some(Json::Null) => false,
            Some(Json::Bool(b)) => *b,
            Some(v) => return Err(bad("use_rslora", format!("{v} is not true or false"))),
        };

        for (key, why) in REFUSED {
            if let Some(v) = obj.get(key).filter(|v| !is_off(v)) {
                return Err(unsupported(format!("{key} = {v}: {why}")));
            }
        }
        match obj.get("bias") {
            None | Some(Json::Null) => {}
            Some(Json::String(s)) if s == "none" => {}
            Some(v) => return Err(unsupported(format!("bias = {v}: trained biases are not part of a LoRA GGUF (only \"none\")"))),
        }
        // Other *_config keys (velora_config, monteclora_config, kasa_config, …) name variants
        // that change the forward pass; refuse any we do not know when it is set.
        for (key, v) in obj {
            let known = HARMLESS.contains(&key.as_str()) || REFUSED.iter().any(|(k, _)| k == key) || key == "bias";
            if !known && key.ends_with("_config") && !is_off(v) {
                return Err(unsupported(format!("{key} is set: a LoRA variant this converter does not know")));
            }
        }

        let pattern = |key: &str| -> Result<Vec<(String, f64)>, PeftError> {
            match obj.get(key) {
                None | Some(Json::Null) => Ok(Vec::new()),
                Some(Json::Object(m)) => m
                    .iter()
                    .map(|(k, v)| v.as_f64().map(|x| (k.clone(), x)).ok_or_else(|| bad(key, format!("{k:?}: {v} is not a number"))))
                    .collect(),
                Some(v) => Err(bad(key, format!("{v} is not an object"))),
            }
        };
        if let Some((module, a)) = pattern("alpha_pattern")?.into_iter().find(|(_, a)| *a != lora_alpha) {
            return Err(unsupported(format!(
                "alpha_pattern gives {module:?} alpha {a}, not lora_alpha {lora_alpha}: a LoRA GGUF holds one alpha"
            )));
        }
        // Another rank per module is fine for a LoRA GGUF (the runtime divides alpha by each
        // pair's own rank, as PEFT does), but not with rsLoRA's alpha/√r: one alpha cannot
        // express it for two ranks.
        let ranks = pattern("rank_pattern")?;
        let has_rank_pattern = ranks.iter().any(|(_, x)| *x != r as f64);
        if let Some((module, x)) = ranks.iter().find(|(_, x)| *x < 1.0 || x.fract() != 0.0) {
            return Err(bad("rank_pattern", format!("{module:?}: {x} is not a positive integer")));
        }
        if use_rslora && has_rank_pattern {
            return Err(unsupported("use_rslora with a rank_pattern of other ranks: one alpha cannot scale them all".into()));
        }

        let target_modules = match obj.get("target_modules") {
            Some(Json::Array(a)) => Some(
                a.iter()
                    .map(|v| v.as_str().map(str::to_string).ok_or_else(|| bad("target_modules", format!("{v} is not a string"))))
                    .collect::<Result<Vec<_>, _>>()?,
            ),
            _ => None,
        };
        let config = PeftConfig { path: path.into(), r, lora_alpha, use_rslora, has_rank_pattern, target_modules };
        if !config.gguf_alpha().is_finite() {
            return Err(bad("lora_alpha", format!("{lora_alpha} does not fit the file's 32-bit float")));
        }
        Ok(config)
    }

    /// `adapter.lora.alpha` for the GGUF: `lora_alpha`, or `lora_alpha·√r` for rsLoRA so that
    /// `alpha/r` is PEFT's `lora_alpha/√r`.
    pub fn gguf_alpha(&self) -> f32 {
        if self.use_rslora {
            (self.lora_alpha * (self.r as f64).sqrt()) as f32
        } else {
            self.lora_alpha as f32
        }
    }

    /// Whether PEFT would have put a LoRA on `module` (`…layers.0.self_attn.q_proj`) under
    /// `target_modules` given as a list: its exact name or a `.`-separated suffix of it.
    pub fn targets(&self, module: &str) -> bool {
        match &self.target_modules {
            None => true,
            Some(list) => list.iter().any(|t| module == t || module.ends_with(&format!(".{t}"))),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn load(v: Json) -> Result<PeftConfig, PeftError> {
        PeftConfig::from_json(Path::new("adapter_config.json"), &v)
    }

    fn base() -> Json {
        json!({"peft_type": "LORA", "r": 8, "lora_alpha": 16, "target_modules": ["q_proj", "v_proj"],
               "bias": "none", "use_dora": false, "use_rslora": false, "rank_pattern": {}, "alpha_pattern": {},
               "modules_to_save": null, "fan_in_fan_out": false, "lora_bias": false, "loftq_config": {},
               "eva_config": null, "megatron_config": null, "layer_replication": null})
    }

    #[test]
    fn reads_a_plain_lora_config() {
        let c = load(base()).unwrap();
        assert_eq!((c.r, c.lora_alpha, c.gguf_alpha()), (8, 16.0, 16.0));
        assert!(c.targets("model.layers.3.self_attn.q_proj"));
        assert!(!c.targets("model.layers.3.self_attn.k_proj"));
        assert!(!c.targets("model.layers.3.self_attn.xq_proj"));
    }

    #[test]
    fn rslora_scales_alpha_by_the_square_root_of_r() {
        let mut v = base();
        v["use_rslora"] = json!(true);
        let c = load(v).unwrap();
        // alpha'/r = 16·√8/8 = 16/√8
        assert!((c.gguf_alpha() as f64 / 8.0 - 16.0 / 8f64.sqrt()).abs() < 1e-6);
    }

    #[test]
    fn refuses_what_changes_the_computation() {
        for (key, value, expect) in [
            ("use_dora", json!(true), "DoRA"),
            ("modules_to_save", json!(["lm_head"]), "modules_to_save"),
            ("bias", json!("lora_only"), "bias"),
            ("fan_in_fan_out", json!(true), "fan_in_fan_out"),
            ("alpha_pattern", json!({"q_proj": 32}), "alpha_pattern"),
            ("peft_type", json!("IA3"), "peft_type"),
            ("velora_config", json!({"x": 1}), "velora_config"),
        ] {
            let mut v = base();
            v[key] = value;
            let e = load(v).unwrap_err().to_string();
            assert!(e.contains("adapter_config.json") && e.contains(expect), "{key}: {e}");
        }
        let mut v = base();
        v["use_rslora"] = json!(true);
        v["rank_pattern"] = json!({"q_proj": 4});
        assert!(load(v).unwrap_err().to_string().contains("rank_pattern"));
    }

    #[test]
    fn missing_or_bad_rank_and_alpha_are_named() {
        let mut v = base();
        v.as_object_mut().unwrap().remove("r");
        assert!(load(v).unwrap_err().to_string().contains("\"r\""));
        let mut v = base();
        v["lora_alpha"] = json!("sixteen");
        assert!(load(v).unwrap_err().to_string().contains("lora_alpha"));
        assert!(load(json!([1, 2])).unwrap_err().to_string().contains("not a JSON object"));
        let mut v = base();
        v["lora_alpha"] = json!(1e300);
        assert!(load(v).unwrap_err().to_string().contains("32-bit"));
    }
}
