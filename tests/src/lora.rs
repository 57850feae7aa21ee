//! LoRA adapter GGUFs in llama.cpp's layout for the tiny test models, and the merged f64
//! deltas the float reference adds to the base weights.

use std::collections::HashMap;
use std::path::Path;

use nexus_kernels::{dequantize_row, quantize_row, GgmlType};
use nexus_runtime::gguf::{GgufFile, GgufWriter, Value};
use rand::{Rng, SeedableRng};

use crate::TinyModel;

/// Base tensors a test adapter for a [`TinyModel`] may change: every projection kind at least
/// once, and the output head.
pub const TARGETS: [&str; 8] = [
    "blk.0.attn_q.weight",
    "blk.0.attn_k.weight",
    "blk.1.attn_v.weight",
    "blk.0.attn_output.weight",
    "blk.1.ffn_gate.weight",
    "blk.0.ffn_up.weight",
    "blk.1.ffn_down.weight",
    "output.weight",
];

/// Tokens the LoRA tests score (all inside a [`TinyModel`]'s default vocabulary).
pub const TOKENS: [u32; 9] = [298, 37, 5, 211, 90, 90, 4, 17, 120];

/// A random LoRA adapter for a [`TinyModel`]: rank-`rank` pairs for the named base tensors.
#[derive(Debug, Clone)]
pub struct LoraSpec {
    pub arch: String,
    pub alpha: f32,
    pub rank: usize,
    pub ty: GgmlType,
    pub seed: u64,
    /// (base tensor, n_in, n_out)
    pub targets: Vec<(String, usize, usize)>,
}

/// `(n_in, n_out)` of a base tensor of `m` (`blk.N.attn_q.weight`, `output.weight`, …).
pub fn base_shape(m: &TinyModel, name: &str) -> (usize, usize) {
    let hd = m.n_embd / m.n_head;
    let (d, q, kv, ff) = (m.n_embd, m.n_embd, m.n_head_kv * hd, m.n_ff);
    let kind = name.rsplit('.').nth(1).unwrap_or("");
    match kind {
        "attn_q" => (d, q),
        "attn_k" | "attn_v" => (d, kv),
        "attn_output" => (q, d),
        "ffn_gate" | "ffn_up" => (d, ff),
        "ffn_down" => (ff, d),
        "output" | "token_embd" => (d, m.n_vocab),
        _ => panic!("no shape for {name}"),
    }
}

impl LoraSpec {
    pub fn for_model(m: &TinyModel, names: &[&str], rank: usize, alpha: f32, seed: u64) -> Self {
        let targets = names.iter().map(|n| {
            let (i, o) = base_shape(m, n);
            (n.to_string(), i, o)
        });
        LoraSpec { arch: m.arch.into(), alpha, rank, ty: GgmlType::F32, seed, targets: targets.collect() }
    }

    /// Metadata as llama.cpp's convert_lora_to_gguf.py writes it, and for each target
    /// `NAME.lora_a` (dims `[n_in, rank]`) and `NAME.lora_b` (dims `[rank, n_out]`). A's
    /// entries are ~U(±1/√n_in) and B's ~U(±1/√rank) — unlike PEFT's zero-initialised B —
    /// so the delta is as large as the base weights and a test sees it.
    pub fn writer(&self) -> GgufWriter<'static> {
        let mut w = GgufWriter::new();
        w.set("general.architecture", Value::String(self.arch.clone()));
        w.set("general.type", Value::String("adapter".into()));
        w.set("adapter.type", Value::String("lora".into()));
        w.set("adapter.lora.alpha", Value::F32(self.alpha));
        let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(self.seed);
        for (name, n_in, n_out) in &self.targets {
            let (la, lb) = (1.0 / (*n_in as f32).sqrt(), 1.0 / (self.rank as f32).sqrt());
            let a: Vec<f32> = (0..self.rank * n_in).map(|_| rng.gen_range(-la..la)).collect();
            let b: Vec<f32> = (0..n_out * self.rank).map(|_| rng.gen_range(-lb..lb)).collect();
            for (suffix, dims, vals) in [("lora_a", [*n_in, self.rank], a), ("lora_b", [self.rank, *n_out], b)] {
                let mut bytes = vec![0u8; self.ty.row_size(vals.len() as u64).unwrap() as usize];
                quantize_row(self.ty, &vals, &mut bytes).unwrap();
                w.add_tensor(format!("{name}.{suffix}"), &[dims[0] as u64, dims[1] as u64], self.ty, bytes).unwrap();
            }
        }
        w
    }

    pub fn write(&self, path: &Path) {
        self.writer().write(path).unwrap();
    }
}

/// Adds `s·B·A` in f64 for every pair of the adapter file `path` to `deltas` (row-major
/// `[n_out][n_in]` per base tensor), with `s = user_scale · alpha / rank` (llama.cpp's rule,
/// alpha 0 meaning no alpha/rank factor). Reads the file with the GGUF reader only, not the
/// runtime's adapter loader.
pub fn add_merged_deltas(path: &Path, user_scale: f64, deltas: &mut HashMap<String, Vec<f64>>) {
    let file = GgufFile::open(path).unwrap();
    let alpha = file.get_f32("adapter.lora.alpha").unwrap() as f64;
    let read = |name: &str| {
        let t = file.tensor_info(name).unwrap_or_else(|| panic!("missing {name}"));
        let mut out = vec![0f32; t.n_elements() as usize];
        dequantize_row(t.ty, file.tensor_data(t), &mut out).unwrap();
        (t.dims.clone(), out.into_iter().map(f64::from).collect::<Vec<f64>>())
    };
    for t in file.tensors() {
        let Some(base) = t.name.strip_suffix(".lora_a") else { continue };
        let (ad, a) = read(&t.name);
        let (bd, b) = read(&format!("{base}.lora_b"));
        let (n_in, rank, n_out) = (ad[0] as usize, ad[1] as usize, bd[1] as usize);
        let s = if alpha == 0.0 { user_scale } else { user_scale * alpha / rank as f64 };
        let d = deltas.entry(base.to_string()).or_insert_with(|| vec![0f64; n_out * n_in]);
        for o in 0..n_out {
            for i in 0..n_in {
                let sum: f64 = (0..rank).map(|r| b[o * rank + r] * a[r * n_in + i]).sum();
                d[o * n_in + i] += s * sum;
            }
        }
    }
}

/// Writes `base` with `deltas` added to its F32 tensors (rounded to f32 once): the merged
/// model `llama-export-lora` would write, as a second, independent check of unmerged LoRA.
pub fn write_merged(base: &Path, deltas: &HashMap<String, Vec<f64>>, out: &Path) {
    let file = GgufFile::open(base).unwrap();
    let mut w = GgufWriter::new();
    for (k, v) in file.metadata() {
        w.set(k.clone(), v.clone());
    }
    for t in file.tensors() {
        let data = file.tensor_data(t);
        let bytes = match deltas.get(&t.name) {
            Some(d) => {
                assert_eq!(t.ty, GgmlType::F32, "{}: merging needs an F32 base", t.name);
                let vals = data.chunks_exact(4).map(|c| f32::from_le_bytes(c.try_into().unwrap()) as f64);
                vals.zip(d).flat_map(|(v, dv)| ((v + dv) as f32).to_le_bytes()).collect()
            }
            None => data.to_vec(),
        };
        w.add_tensor(t.name.clone(), &t.dims, t.ty, bytes).unwrap();
    }
    w.write(out).unwrap();
}
