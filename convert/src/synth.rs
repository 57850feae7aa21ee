//! Synthetic models: GGUF files with random weights in a real model's exact shapes, metadata and
//! a complete (byte-level BPE) tokenizer section, so speed can be measured where the real
//! weights are not available. The text they produce is meaningless.

use std::path::Path;

use nexus_kernels::{quantize_row, GgmlType};
use nexus_runtime::gguf::{GgufWriter, StreamedTensor, Value, ValueType};
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;

use crate::quantize::{Policy, QuantType, QuantizeError};

/// The shapes of a real model (from its HF config.json).
#[derive(Debug, Clone)]
pub struct SynthConfig {
    pub name: &'static str,
    pub arch: &'static str,
    pub n_layer: u64,
    pub n_embd: u64,
    pub n_head: u64,
    pub n_head_kv: u64,
    pub n_ff: u64,
    pub n_vocab: u64,
    pub rope_base: f32,
    pub n_ctx: u64,
    pub pre: &'static str,
    /// Llama 3 rope scaling: (factor, low_freq_factor, high_freq_factor, original context).
    pub llama3_rope: Option<(f64, f64, f64, f64)>,
    pub tied: bool,
    pub qkv_bias: bool,
}

pub const CONFIGS: [SynthConfig; 4] = [
    SynthConfig {
        name: "smollm2-135m",
        arch: "llama",
        n_layer: 30,
        n_embd: 576,
        n_head: 9,
        n_head_kv: 3,
        n_ff: 1536,
        n_vocab: 49152,
        rope_base: 100000.0,
        n_ctx: 8192,
        pre: "smollm",
        llama3_rope: None,
        tied: true,
        qkv_bias: false,
    },
    SynthConfig {
        name: "llama-3.2-1b",
        arch: "llama",
        n_layer: 16,
        n_embd: 2048,
        n_head: 32,
        n_head_kv: 8,
        n_ff: 8192,
        n_vocab: 128256,
        rope_base: 500000.0,
        n_ctx: 131072,
        pre: "llama-bpe",
        llama3_rope: Some((32.0, 1.0, 4.0, 8192.0)),
        tied: true,
        qkv_bias: false,
    },
    SynthConfig {
        name: "qwen2.5-0.5b",
        arch: "qwen2",
        n_layer: 24,
        n_embd: 896,
        n_head: 14,
        n_head_kv: 2,
        n_ff: 4864,
        n_vocab: 151936,
        rope_base: 1000000.0,
        n_ctx: 32768,
        pre: "qwen2",
        llama3_rope: None,
        tied: true,
        qkv_bias: true,
    },
    SynthConfig {
        name: "llama-3.1-8b",
        arch: "llama",
        n_layer: 32,
        n_embd: 4096,
        n_head: 32,
        n_head_kv: 8,
        n_ff: 14336,
        n_vocab: 128256,
        rope_base: 500000.0,
        n_ctx: 131072,
        pre: "llama-bpe",
        llama3_rope: Some((8.0, 1.0, 4.0, 8192.0)),
        tied: false,
        qkv_bias: false,
    },
];

pub fn config(name: &str) -> Result<&'static SynthConfig, QuantizeError> {
    CONFIGS.iter().find(|c| c.name == name).ok_or_else(|| QuantizeError::Model {
        path: name.into(),
        reason: format!(
            "unknown model shape; known: {}",
            CONFIGS.iter().map(|c| c.name).collect::<Vec<_>>().join(", ")
        ),
    })
}

enum Kind {
    Weight,
    Norm,
    Bias,
    RopeFreqs,
}

/// Tensors in llama.cpp's converter order: (name, ggml dims, kind).
fn tensors(c: &SynthConfig) -> Vec<(String, Vec<u64>, Kind)> {
    let (e, f, v) = (c.n_embd, c.n_ff, c.n_vocab);
    let hd = e / c.n_head;
    let (q, kv) = (c.n_head * hd, c.n_head_kv * hd);
    let mut t = vec![("token_embd.weight".to_string(), vec![e, v], Kind::Weight)];
    if c.llama3_rope.is_some() {
        t.push(("rope_freqs.weight".into(), vec![hd / 2], Kind::RopeFreqs));
    }
    for i in 0..c.n_layer {
        let n = |s: &str| format!("blk.{i}.{s}");
        t.push((n("attn_norm.weight"), vec![e], Kind::Norm));
        for (name, rows) in [("attn_q", q), ("attn_k", kv), ("attn_v", kv)] {
            t.push((n(&format!("{name}.weight")), vec![e, rows], Kind::Weight));
            if c.qkv_bias {
                t.push((n(&format!("{name}.bias")), vec![rows], Kind::Bias));
            }
        }
        t.push((n("attn_output.weight"), vec![q, e], Kind::Weight));
        t.push((n("ffn_norm.weight"), vec![e], Kind::Norm));
        t.push((n("ffn_gate.weight"), vec![e, f], Kind::Weight));
        t.push((n("ffn_up.weight"), vec![e, f], Kind::Weight));
        t.push((n("ffn_down.weight"), vec![f, e], Kind::Weight));
    }
    t.push(("output_norm.weight".into(), vec![e], Kind::Norm));
    if !c.tied {
        t.push(("output.weight".into(), vec![e, v], Kind::Weight));
    }
    t
}

/// GPT-2's byte → printable character map, so the 256 byte tokens are valid BPE symbols.
fn byte_symbols() -> Vec<String> {
    let mut bs: Vec<u32> = (b'!' as u32..=b'~' as u32).chain(0xA1..=0xAC).chain(0xAE..=0xFF).collect();
    let mut cs = bs.clone();
    let mut n = 0;
    for b in 0..256u32 {
        if !bs.contains(&b) {
            bs.push(b);
            cs.push(256 + n);
            n += 1;
        }
    }
    let mut out = vec![String::new(); 256];
    for (b, c) in bs.iter().zip(&cs) {
        out[*b as usize] = char::from_u32(*c).expect("valid code point").to_string();
    }
    out
}

fn llama3_factors(base: f64, dim: u64, (factor, low, high, orig): (f64, f64, f64, f64)) -> Vec<f32> {
    (0..dim)
        .step_by(2)
        .map(|i| {
            let freq = 1.0 / base.powf(i as f64 / dim as f64);
            let wl = 2.0 * std::f64::consts::PI / freq;
            if wl < orig / high {
                1.0
            } else if wl > orig / low {
                factor as f32
            } else {
                let s = (orig / wl - low) / (high - low);
                (1.0 / ((1.0 - s) / factor + s)) as f32
            }
        })
        .collect()
}

/// Writes `out`: `c`'s shapes with random weights (σ = 0.02) of llama-quantize's type mix for
/// `qtype`. Weights are cut from one quantized pool per type, so even an 8B file takes seconds.
pub fn synth(c: &SynthConfig, qtype: QuantType, out: &Path, seed: u64) -> Result<(), QuantizeError> {
    let hd = c.n_embd / c.n_head;
    let mut w = GgufWriter::new();
    let arch = c.arch;
    let u32v = |v: u64| Value::U32(v as u32);
    w.set("general.architecture", Value::String(arch.into()));
    w.set("general.type", Value::String("model".into()));
    w.set("general.name", Value::String(format!("{} (synthetic random weights)", c.name)));
    w.set(format!("{arch}.block_count"), u32v(c.n_layer));
    w.set(format!("{arch}.context_length"), u32v(c.n_ctx));
    w.set(format!("{arch}.embedding_length"), u32v(c.n_embd));
    w.set(format!("{arch}.feed_forward_length"), u32v(c.n_ff));
    w.set(format!("{arch}.attention.head_count"), u32v(c.n_head));
    w.set(format!("{arch}.attention.head_count_kv"), u32v(c.n_head_kv));
    w.set(format!("{arch}.rope.freq_base"), Value::F32(c.rope_base));
    w.set(format!("{arch}.attention.layer_norm_rms_epsilon"), Value::F32(1e-5));
    w.set(format!("{arch}.attention.key_length"), u32v(hd));
    w.set(format!("{arch}.attention.value_length"), u32v(hd));
    w.set(format!("{arch}.vocab_size"), u32v(c.n_vocab));
    w.set(format!("{arch}.rope.dimension_count"), u32v(hd));
    w.set("general.file_type", u32v(qtype.ftype() as u64));
    w.set("general.quantization_version", u32v(2));
    // Byte tokens, one merge (llama.cpp requires merges), fillers, and an end token.
    let mut toks = byte_symbols();
    toks.push("ĠĠ".into());
    while (toks.len() as u64) < c.n_vocab - 1 {
        toks.push(format!("t{}", toks.len()));
    }
    toks.push("<|endoftext|>".into());
    let mut types = vec![1i32; c.n_vocab as usize];
    types[c.n_vocab as usize - 1] = 3;
    let eot = c.n_vocab - 1;
    w.set("tokenizer.ggml.model", Value::String("gpt2".into()));
    w.set("tokenizer.ggml.pre", Value::String(c.pre.into()));
    w.set("tokenizer.ggml.tokens", Value::Array(ValueType::String, toks.into_iter().map(Value::String).collect()));
    w.set("tokenizer.ggml.token_type", Value::Array(ValueType::I32, types.into_iter().map(Value::I32).collect()));
    w.set("tokenizer.ggml.merges", Value::Array(ValueType::String, vec![Value::String("Ġ Ġ".into())]));
    for key in ["bos", "eos", "padding"] {
        w.set(format!("tokenizer.ggml.{key}_token_id"), u32v(eot));
    }

    let list = tensors(c);
    let mut order: Vec<usize> = (0..list.len()).collect();
    let layer = |n: &str| n.strip_prefix("blk.").and_then(|r| r.split('.').next()).and_then(|i| i.parse::<i64>().ok()).unwrap_or(-1);
    order.sort_by(|&a, &b| (layer(&list[a].0), &list[a].0).cmp(&(layer(&list[b].0), &list[b].0)));
    let names: Vec<&str> = order.iter().map(|&i| list[i].0.as_str()).collect();
    let mut policy = Policy::new(qtype, arch, c.n_layer, c.n_head, c.n_head_kv, &names);
    let mut ty = vec![GgmlType::F32; list.len()];
    for &i in &order {
        let (name, dims, kind) = &list[i];
        ty[i] = match kind {
            Kind::Weight => policy.tensor_type(name, dims, GgmlType::F32),
            _ => GgmlType::F32,
        };
    }
    let streamed: Vec<StreamedTensor> =
        list.iter().zip(&ty).map(|((name, dims, _), &ty)| StreamedTensor { name: name.clone(), dims: dims.clone(), ty }).collect();

    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    let mut pools: Vec<(GgmlType, Vec<u8>)> = Vec::new();
    w.write_streaming(out, &streamed, |i| -> Result<Vec<u8>, QuantizeError> {
        let (name, dims, kind) = &list[i];
        let n: u64 = dims.iter().product();
        let f32s = |v: Vec<f32>| v.iter().flat_map(|x| x.to_le_bytes()).collect::<Vec<u8>>();
        Ok(match kind {
            Kind::Norm => f32s(vec![1.0; n as usize]),
            Kind::Bias => f32s((0..n).map(|_| (rng.gen::<f32>() - 0.5) * 0.2).collect()),
            Kind::RopeFreqs => f32s(llama3_factors(c.rope_base as f64, hd, c.llama3_rope.expect("only with llama3 rope"))),
            Kind::Weight => {
                let t = ty[i];
                if !pools.iter().any(|(p, _)| *p == t) {
                    pools.push((t, random_pool(t, &mut rng, name)?));
                }
                let pool = &pools.iter().find(|(p, _)| *p == t).expect("just added").1;
                let size = t.row_size(n).expect("policy types fit the rows") as usize;
                let block = t.type_size();
                let mut data = Vec::with_capacity(size);
                let mut at = rng.gen_range(0..pool.len() / block) * block;
                while data.len() < size {
                    let take = (size - data.len()).min(pool.len() - at);
                    data.extend_from_slice(&pool[at..at + take]);
                    at = 0;
                }
                data
            }
        })
    })
}

/// 4 Mi random normal values (σ = 0.02) quantized to `ty`.
fn random_pool(ty: GgmlType, rng: &mut ChaCha8Rng, name: &str) -> Result<Vec<u8>, QuantizeError> {
    const N: usize = 1 << 22;
    let vals: Vec<f32> = (0..N)
        .map(|_| {
            // Box-Muller: a normal sample from two uniforms.
            let (u1, u2): (f64, f64) = (rng.gen_range(1e-12..1.0), rng.gen());
            ((-2.0 * u1.ln()).sqrt() * (2.0 * std::f64::consts::PI * u2).cos() * 0.02) as f32
        })
        .collect();
    let mut out = vec![0u8; ty.row_size(N as u64).expect("pool is whole blocks") as usize];
    quantize_row(ty, &vals, &mut out).map_err(|source| QuantizeError::Kernel { path: "synth".into(), name: name.into(), source })?;
    Ok(out)
}
