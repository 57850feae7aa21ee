//! A PEFT LoRA adapter folder (`adapter_config.json` + `adapter_model.safetensors`) → the LoRA
//! GGUF llama.cpp's `convert_lora_to_gguf.py` writes: `general.architecture`, `general.type =
//! adapter`, `adapter.type = lora`, the descriptive `general.*` keys (see [`metadata`]),
//! `adapter.lora.alpha`, `general.quantization_version`; then for each adapted module, in the
//! order of the sorted safetensors names, `<base tensor>.lora_a` (ggml `[n_in, r]`) and
//! `.lora_b` (`[r, n_out]`). For llama bases the rows of q_proj's and k_proj's lora_b get the
//! same head permutation llama.cpp's converter gives the base Q/K weights, so `B·A` stays the
//! delta of the permuted base tensor.
//!
//! Where llama.cpp needs the base model's HF `config.json`, we take the base GGUF the adapter
//! will be used with: its architecture and head counts, and every target tensor's shape, which
//! the adapter is checked against before anything is written.
//!
//! Deliberate differences from llama.cpp's converter, all refusals of input it would turn into
//! a wrong or unloadable file: PEFT options that change the computation (see [`config`]),
//! token-embedding and norm tensors in the adapter (the runtime cannot apply them), values that
//! overflow the output type (F16 or a Q8_0 block's F16 scale; llama.cpp writes infinities).

mod config;
mod error;
mod metadata;

use std::fs::File;
use std::ops::Range;
use std::path::Path;

use memmap2::Mmap;
use nexus_kernels::{dequantize_row, quantize_row, GgmlType};
use nexus_runtime::gguf::{GgufFile, GgufWriter, StreamedTensor, Value};
use nexus_runtime::model::{Arch, ModelConfig};
use safetensors::{Dtype, SafeTensors};

pub use config::PeftConfig;
pub use error::PeftError;

use crate::hf::tensors::{decode, permute_rows};
use crate::hf::OutType;

/// What a conversion wrote.
#[derive(Debug, Clone)]
pub struct PeftSummary {
    pub arch: String,
    /// Adapted base tensors (two GGUF tensors each).
    pub n_pairs: usize,
    pub alpha: f32,
    pub rank: usize,
}

/// One adapted module: where its two halves are in the safetensors file.
struct Pair {
    /// The base tensor, e.g. `blk.0.attn_q.weight`.
    base: String,
    a: Half,
    b: Half,
    /// Heads to permute lora_b's rows by (llama q_proj / k_proj).
    permute_heads: Option<usize>,
}

/// A module while the safetensors header is read: its halves as they are found.
struct Partial {
    base: String,
    /// PEFT's module name, e.g. `base_model.model.model.layers.0.self_attn.q_proj`.
    module: String,
    a: Option<Half>,
    b: Option<Half>,
    permute_heads: Option<usize>,
}

struct Half {
    name: String,
    dtype: Dtype,
    shape: Vec<usize>,
    range: Range<usize>,
}

/// HF module path inside the model (`model.layers.N.<module>`) → GGUF base tensor.
fn gguf_name(module: &str) -> Option<String> {
    if module == "lm_head" {
        return Some("output.weight".into());
    }
    let rest = module.strip_prefix("model.layers.")?;
    let (bid, kind) = rest.split_once('.')?;
    let b: usize = bid.parse().ok().filter(|b: &usize| b.to_string() == bid)?;
    let t = match kind {
        "self_attn.q_proj" => "attn_q",
        "self_attn.k_proj" => "attn_k",
        "self_attn.v_proj" => "attn_v",
        "self_attn.o_proj" => "attn_output",
        "mlp.gate_proj" => "ffn_gate",
        "mlp.up_proj" => "ffn_up",
        "mlp.down_proj" => "ffn_down",
        _ => return None,
    };
    Some(format!("blk.{b}.{t}.weight"))
}

fn same_file(a: &Path, b: &Path) -> bool {
    matches!((a.canonicalize(), b.canonicalize()), (Ok(x), Ok(y)) if x == y)
}

/// Converts the PEFT adapter in `peft_dir`, checked against `base` (the GGUF it is for), into
/// `out` (written atomically). `progress(done, total)` is called after each tensor.
pub fn convert_peft(
    peft_dir: &Path,
    base: &Path,
    out: &Path,
    outtype: OutType,
    mut progress: impl FnMut(usize, usize),
) -> Result<PeftSummary, PeftError> {
    if !peft_dir.is_dir() {
        return Err(PeftError::Missing { path: peft_dir.into(), what: "no such directory (a PEFT adapter folder)".into() });
    }
    let config_path = peft_dir.join("adapter_config.json");
    if !config_path.is_file() {
        return Err(PeftError::Missing { path: config_path, what: "the PEFT adapter's config (adapter_config.json)".into() });
    }
    let st_path = peft_dir.join("adapter_model.safetensors");
    if !st_path.is_file() {
        let bin = peft_dir.join("adapter_model.bin");
        if bin.is_file() {
            return Err(PeftError::Unsupported {
                path: bin,
                what: "pickled PyTorch weights; save the adapter with safe_serialization=True (adapter_model.safetensors)".into(),
            });
        }
        return Err(PeftError::Missing { path: st_path, what: "the PEFT adapter's weights (adapter_model.safetensors)".into() });
    }
    for input in [base, st_path.as_path(), config_path.as_path()] {
        if same_file(input, out) {
            return Err(PeftError::SameFile { output: out.into(), input: input.into() });
        }
    }
    let cfg = PeftConfig::load(&config_path)?;
    let base_file = GgufFile::open(base)?;
    if base_file.get("general.type").and_then(|v| v.as_str()) == Some("adapter") {
        return Err(PeftError::Base {
            adapter: peft_dir.into(),
            base: base.into(),
            what: "--base is an adapter (general.type = adapter), not a base model".into(),
        });
    }
    let model = ModelConfig::from_gguf(&base_file)?;
    let arch = model.arch.name().to_string();

    let file = File::open(&st_path).map_err(|source| PeftError::Io { path: st_path.clone(), source })?;
    // SAFETY: read-only map; a file changed underneath us yields wrong bytes, not UB in our code.
    let map = unsafe { Mmap::map(&file) }.map_err(|source| PeftError::Io { path: st_path.clone(), source })?;
    let pairs = plan(&cfg, &st_path, &map, &model, peft_dir, base, &base_file)?;

    let ty_for = |row_len: usize| match outtype {
        // gguf-py cannot quantize rows that are not whole Q8_0 blocks and falls back to F16.
        OutType::Q8_0 if !row_len.is_multiple_of(32) => GgmlType::F16,
        _ => outtype.ggml(),
    };
    let mut specs = Vec::with_capacity(2 * pairs.len());
    let mut total_params: i64 = 0;
    let mut rank = 0;
    for p in &pairs {
        let (a, b) = (&p.a.shape, &p.b.shape);
        let (r, n_in, n_out) = (a[0], a[1], b[0]);
        rank = rank.max(r);
        total_params -= (n_in * n_out) as i64;
        specs.push(StreamedTensor { name: format!("{}.lora_a", p.base), dims: vec![n_in as u64, r as u64], ty: ty_for(n_in) });
        specs.push(StreamedTensor { name: format!("{}.lora_b", p.base), dims: vec![r as u64, n_out as u64], ty: ty_for(r) });
    }

    let mut w = GgufWriter::new();
    w.set("general.architecture", Value::String(arch.clone()));
    w.set("general.type", Value::String("adapter".into()));
    w.set("adapter.type", Value::String("lora".into()));
    for (k, v) in metadata::general_keys(peft_dir, total_params) {
        w.set(k, v);
    }
    let alpha = cfg.gguf_alpha();
    w.set("adapter.lora.alpha", Value::F32(alpha));
    w.set("general.quantization_version", Value::U32(2));

    let total = specs.len();
    w.write_streaming(out, &specs, |i| {
        let p = &pairs[i / 2];
        let half = if i % 2 == 0 { &p.a } else { &p.b };
        let tensor_err = |problem: String| PeftError::Tensor { path: st_path.clone(), name: half.name.clone(), problem };
        let bytes = map.get(half.range.clone()).ok_or_else(|| tensor_err("its data lies past the end of the file".into()))?;
        let mut values = decode(bytes, half.dtype);
        if let Some(k) = values.iter().position(|v| !v.is_finite()) {
            return Err(tensor_err(format!("element {k} is not finite")));
        }
        if let (Some(heads), 1) = (p.permute_heads, i % 2) {
            values = permute_rows(&values, heads, half.shape[1]);
        }
        let spec = &specs[i];
        let n: u64 = spec.dims.iter().product();
        let mut out = vec![0u8; spec.ty.row_size(n).unwrap_or(0) as usize];
        quantize_row(spec.ty, &values, &mut out).map_err(|e| tensor_err(e.to_string()))?;
        // A finite f32 can overflow F16 (or a Q8_0 block's F16 scale): refuse rather than write
        // an adapter the runtime rejects.
        dequantize_row(spec.ty, &out, &mut values).map_err(|e| tensor_err(e.to_string()))?;
        if let Some(k) = values.iter().position(|v| !v.is_finite()) {
            return Err(tensor_err(format!("element {k} is too large for {}", spec.ty)));
        }
        progress(i + 1, total);
        Ok::<_, PeftError>(out)
    })?;
    Ok(PeftSummary { arch, n_pairs: pairs.len(), alpha, rank })
}

/// Reads the safetensors header and pairs every lora_A with its lora_B, in llama.cpp's order
/// (first appearance among the sorted names), each checked against the base model.
fn plan(
    cfg: &PeftConfig,
    st_path: &Path,
    map: &[u8],
    model: &ModelConfig,
    peft_dir: &Path,
    base: &Path,
    base_file: &GgufFile,
) -> Result<Vec<Pair>, PeftError> {
    let (header_len, meta) =
        SafeTensors::read_metadata(map).map_err(|e| PeftError::Safetensors { path: st_path.into(), problem: e.to_string() })?;
    let data_start = 8 + header_len;
    let mut names: Vec<(String, _)> = meta.tensors().into_iter().collect();
    names.sort_by(|a, b| a.0.cmp(&b.0));
    let tensor_err = |name: &str, problem: String| PeftError::Tensor { path: st_path.into(), name: name.into(), problem };
    let unsupported = |name: &str, what: &str| PeftError::Unsupported { path: st_path.into(), what: format!("tensor {name:?}: {what}") };
    let base_err = |what: String| PeftError::Base { adapter: peft_dir.into(), base: base.into(), what };

    let mut pairs: Vec<Partial> = Vec::new();
    for (name, info) in names {
        let inner = name.strip_prefix("base_model.model.").unwrap_or(&name);
        let (module, is_b) = if let Some(m) = inner.strip_suffix(".lora_A.weight") {
            (m, false)
        } else if let Some(m) = inner.strip_suffix(".lora_B.weight") {
            (m, true)
        } else if inner.ends_with(".base_layer.weight") {
            continue; // llama.cpp skips these copies of the base weight too
        } else if inner.contains("lora_embedding_") {
            return Err(unsupported(&name, "LoRA on the token embedding (the runtime cannot apply it)"));
        } else if inner.contains("lora_magnitude_vector") {
            return Err(unsupported(&name, "a DoRA magnitude vector"));
        } else if inner.contains("_layernorm") || inner.contains(".norm") {
            return Err(unsupported(&name, "a norm weight inside the adapter (mergekit-extract-lora); the runtime takes only lora_a/lora_b pairs"));
        } else {
            let hint = if inner.ends_with("embed_tokens.weight") || inner.ends_with("lm_head.weight") {
                " (whole embedding or head weights: modules_to_save, e.g. after adding tokens)"
            } else {
                ""
            };
            return Err(tensor_err(&name, format!("not a lora_A or lora_B weight{hint}")));
        };
        let Some(base_name) = gguf_name(module) else {
            return Err(unsupported(&name, &format!("module {module:?} has no llama.cpp tensor (supported: q/k/v/o_proj, gate/up/down_proj, lm_head)")));
        };
        if !cfg.targets(module) {
            return Err(PeftError::BadKey {
                path: cfg.path.clone(),
                key: "target_modules".into(),
                problem: format!("{module:?} has LoRA weights in {} but is not listed", st_path.display()),
            });
        }
        if !matches!(info.dtype, Dtype::F32 | Dtype::F16 | Dtype::BF16) {
            return Err(tensor_err(&name, format!("dtype {:?} is not supported (F32, F16, BF16)", info.dtype)));
        }
        if info.shape.len() != 2 || info.shape.contains(&0) {
            return Err(tensor_err(&name, format!("shape {:?}: a LoRA weight is 2-D", info.shape)));
        }
        let half = Half {
            name: name.clone(),
            dtype: info.dtype,
            shape: info.shape.clone(),
            range: data_start + info.data_offsets.0..data_start + info.data_offsets.1,
        };
        let i = match pairs.iter().position(|p| p.base == base_name) {
            Some(i) => i,
            None => {
                let permute_heads = match (model.arch, module.rsplit('.').next()) {
                    (Arch::Llama, Some("q_proj")) => Some(model.n_head),
                    (Arch::Llama, Some("k_proj")) => Some(model.n_head_kv),
                    _ => None,
                };
                let module = format!("{}{module}", if name.starts_with("base_model.model.") { "base_model.model." } else { "" });
                pairs.push(Partial { base: base_name, module, a: None, b: None, permute_heads });
                pairs.len() - 1
            }
        };
        let slot = if is_b { &mut pairs[i].b } else { &mut pairs[i].a };
        if slot.is_some() {
            return Err(tensor_err(&name, format!("a second tensor for {}", pairs[i].base)));
        }
        *slot = Some(half);
    }
    if pairs.is_empty() {
        return Err(PeftError::Missing { path: st_path.into(), what: "no lora_A/lora_B weights in the adapter".into() });
    }

    let mut complete = Vec::with_capacity(pairs.len());
    for p in pairs {
        let (a, b) = match (p.a, p.b) {
            (Some(a), Some(b)) => (a, b),
            (Some(_), None) => return Err(tensor_err(&p.module, "has lora_A but no lora_B".into())),
            (None, _) => return Err(tensor_err(&p.module, "has lora_B but no lora_A".into())),
        };
        let (r, n_in, n_out) = (a.shape[0], a.shape[1], b.shape[0]);
        if b.shape[1] != r {
            return Err(tensor_err(&p.module, format!("lora_A is {:?} but lora_B is {:?}: their ranks differ", a.shape, b.shape)));
        }
        if !cfg.has_rank_pattern && r != cfg.r {
            return Err(tensor_err(&p.module, format!("rank {r}, but adapter_config.json says r = {}", cfg.r)));
        }
        let Some(t) = base_file.tensor_info(&p.base) else {
            let why = if p.base == "output.weight" {
                "its output head is the token embedding (tied), which an adapter cannot change; llama.cpp refuses it too"
            } else {
                "an adapter for another model?"
            };
            return Err(base_err(format!("{}: the base model has no tensor {} ({why})", p.module, p.base)));
        };
        if t.dims != [n_in as u64, n_out as u64] {
            return Err(base_err(format!(
                "{}: shape mismatch: the adapter maps {n_in} inputs to {n_out} outputs, the base tensor {} has ggml shape {:?}",
                p.module, p.base, t.dims
            )));
        }
        if let Some(h) = p.permute_heads {
            if n_out % (2 * h) != 0 {
                return Err(base_err(format!("{}: {n_out} rows cannot be split into {h} heads of pairs", p.module)));
            }
        }
        complete.push(Pair { base: p.base, a, b, permute_heads: p.permute_heads });
    }
    Ok(complete)
}
