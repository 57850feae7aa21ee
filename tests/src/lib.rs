//! Shared helpers for the integration tests under `tests/tests/`: tiny random-weight models
//! written with our own GGUF writer.

pub mod cli;
pub mod lora;
pub mod peft;
pub mod reference;
pub mod smollm2;

use std::path::{Path, PathBuf};

use nexus_kernels::{quantize_row, GgmlType};
use nexus_runtime::gguf::{GgufWriter, Value, ValueType};
use rand::{Rng, SeedableRng};

/// The workspace root (tests read fixtures and fetched models relative to it).
pub fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).parent().expect("tests/ has a parent").to_path_buf()
}

/// The real default model if `models/fetch.sh` has fetched it; otherwise prints why the
/// calling test is skipped (CI fetches it, so there the test runs).
/// FNV-1a 64 over a logits row's little-endian bytes, as scripts/smollm2/llama_logits.cpp
/// hashes llama.cpp's rows (the bitwise comparisons of tests/tests/smollm2*.rs).
pub fn logits_fnv1a64(row: &[f32]) -> String {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for b in row.iter().flat_map(|v| v.to_le_bytes()) {
        h ^= b as u64;
        h = h.wrapping_mul(0x0100_0000_01b3);
    }
    format!("{h:016x}")
}

pub fn smollm2_path() -> Option<PathBuf> {
    let path = root().join("models/SmolLM2-135M-Instruct.Q4_1.gguf");
    if path.exists() {
        Some(path)
    } else {
        eprintln!("skipped: {} is absent (run models/fetch.sh)", path.display());
        None
    }
}

#[derive(Debug, Clone)]
pub struct TinyModel {
    pub arch: &'static str,
    pub n_vocab: usize,
    pub n_embd: usize,
    pub n_layer: usize,
    pub n_head: usize,
    pub n_head_kv: usize,
    pub n_ff: usize,
    pub n_ctx: usize,
    pub tied: bool,
    /// Type of the 2-D weights (norms stay F32, as llama.cpp writes them).
    pub ty: GgmlType,
    pub seed: u64,
}

impl Default for TinyModel {
    fn default() -> Self {
        TinyModel {
            arch: "llama",
            n_vocab: 300,
            n_embd: 64,
            n_layer: 2,
            n_head: 4,
            n_head_kv: 2,
            n_ff: 96,
            n_ctx: 256,
            tied: false,
            ty: GgmlType::F32,
            seed: 7,
        }
    }
}

/// GPT-2's printable stand-ins for the 256 byte values, so the vocabulary is a valid
/// byte-level BPE one.
pub fn byte_tokens() -> Vec<String> {
    let printable: Vec<u32> = (b'!' as u32..=b'~' as u32).chain(0xA1..=0xAC).chain(0xAE..=0xFF).collect();
    let mut map = vec![0u32; 256];
    let mut extra = 0;
    for b in 0..256u32 {
        if printable.contains(&b) {
            map[b as usize] = b;
        } else {
            map[b as usize] = 256 + extra;
            extra += 1;
        }
    }
    map.iter().map(|&c| char::from_u32(c).unwrap().to_string()).collect()
}

fn strings(v: &[String]) -> Value {
    Value::Array(ValueType::String, v.iter().map(|s| Value::String(s.clone())).collect())
}

impl TinyModel {
    /// Metadata and random weights; `skip` leaves out keys or tensors (for bad-input tests).
    pub fn writer(&self, skip: &[&str]) -> GgufWriter<'static> {
        let a = self.arch;
        let mut w = GgufWriter::new();
        let mut set = |k: String, v: Value| {
            if !skip.contains(&k.as_str()) {
                w.set(k, v)
            }
        };
        set("general.architecture".into(), Value::String(a.into()));
        set(format!("{a}.context_length"), Value::U32(self.n_ctx as u32));
        set(format!("{a}.embedding_length"), Value::U32(self.n_embd as u32));
        set(format!("{a}.block_count"), Value::U32(self.n_layer as u32));
        set(format!("{a}.feed_forward_length"), Value::U32(self.n_ff as u32));
        set(format!("{a}.attention.head_count"), Value::U32(self.n_head as u32));
        set(format!("{a}.attention.head_count_kv"), Value::U32(self.n_head_kv as u32));
        set(format!("{a}.attention.layer_norm_rms_epsilon"), Value::F32(1e-5));
        set(format!("{a}.rope.freq_base"), Value::F32(10000.0));
        let mut tokens = byte_tokens();
        tokens.push("ĠĠ".into());
        while tokens.len() < self.n_vocab - 1 {
            tokens.push(format!("tok{}", tokens.len()));
        }
        tokens.push("<|endoftext|>".into());
        let mut types = vec![Value::I32(1); self.n_vocab];
        types[self.n_vocab - 1] = Value::I32(3);
        set("tokenizer.ggml.model".into(), Value::String("gpt2".into()));
        set("tokenizer.ggml.pre".into(), Value::String("default".into()));
        set("tokenizer.ggml.tokens".into(), strings(&tokens));
        set("tokenizer.ggml.token_type".into(), Value::Array(ValueType::I32, types));
        set("tokenizer.ggml.merges".into(), strings(&["Ġ Ġ".to_string()]));
        set("tokenizer.ggml.bos_token_id".into(), Value::U32(self.n_vocab as u32 - 1));
        set("tokenizer.ggml.eos_token_id".into(), Value::U32(self.n_vocab as u32 - 1));

        let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(self.seed);
        let hd = self.n_embd / self.n_head;
        let (d, q, kv, ff) = (self.n_embd, self.n_embd, self.n_head_kv * hd, self.n_ff);
        let mut tensors: Vec<(String, Vec<u64>)> = vec![("token_embd.weight".into(), vec![d as u64, self.n_vocab as u64])];
        for i in 0..self.n_layer {
            let b = |s: &str| format!("blk.{i}.{s}");
            tensors.push((b("attn_norm.weight"), vec![d as u64]));
            tensors.push((b("attn_q.weight"), vec![d as u64, q as u64]));
            tensors.push((b("attn_k.weight"), vec![d as u64, kv as u64]));
            tensors.push((b("attn_v.weight"), vec![d as u64, kv as u64]));
            if a == "qwen2" {
                tensors.push((b("attn_q.bias"), vec![q as u64]));
                tensors.push((b("attn_k.bias"), vec![kv as u64]));
                tensors.push((b("attn_v.bias"), vec![kv as u64]));
            }
            tensors.push((b("attn_output.weight"), vec![q as u64, d as u64]));
            tensors.push((b("ffn_norm.weight"), vec![d as u64]));
            tensors.push((b("ffn_gate.weight"), vec![d as u64, ff as u64]));
            tensors.push((b("ffn_up.weight"), vec![d as u64, ff as u64]));
            tensors.push((b("ffn_down.weight"), vec![ff as u64, d as u64]));
        }
        tensors.push(("output_norm.weight".into(), vec![d as u64]));
        if !self.tied {
            tensors.push(("output.weight".into(), vec![d as u64, self.n_vocab as u64]));
        }
        for (name, dims) in tensors {
            let n: usize = dims.iter().product::<u64>() as usize;
            let is_norm = name.ends_with("norm.weight");
            // Scaled by fan-in like a trained model's weights, so activations neither explode
            // nor vanish and quantization errors are not amplified beyond what real models see.
            let limit = 1.5 / (dims[0] as f32).sqrt();
            let vals: Vec<f32> = (0..n)
                .map(|_| if is_norm { 1.0 + rng.gen_range(-0.2..0.2) } else { rng.gen_range(-limit..limit) })
                .collect();
            if skip.contains(&name.as_str()) {
                continue;
            }
            let ty = if dims.len() == 1 { GgmlType::F32 } else { self.ty };
            let mut bytes = vec![0u8; ty.row_size(n as u64).unwrap() as usize];
            quantize_row(ty, &vals, &mut bytes).unwrap();
            w.add_tensor(name, &dims, ty, bytes).unwrap();
        }
        w
    }

    pub fn write(&self, path: &Path) {
        self.writer(&[]).write(path).unwrap();
    }
}

pub mod quantize_models;
