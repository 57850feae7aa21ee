//! LoRA adapters for a distilled student, trained with the teacher's logits (`nexus-cli
//! distill train-lora`): the student's weights stay frozen and each chosen projection `W`
//! (`n_out × n_in`, GGUF layout) gets a low-rank update, `W_eff = W + s·B·A` with A `[rank][n_in]`,
//! B `[n_out][rank]` and `s = alpha / rank` — llama.cpp's LoRA GGUF, which `nexus-cli run
//! --lora` loads (`nexus_runtime::adapter`).
//!
//! Training reuses the distillation step as it is (teacher forward, student forward on the
//! merged weights, the fused chunked head + CE/KL loss, the student's backward): it yields the
//! full gradient `G = ∂L/∂W_eff` of each adapted matrix, and the chain rule through
//! `W_eff = W + s·B·A` gives `∂L/∂B = s·G·Aᵀ` and `∂L/∂A = s·Bᵀ·G` (two small GEMMs). The
//! frozen weights are only ever read ([`train::train_lora`] borrows them immutably).

pub mod base;
pub mod checkpoint;
pub mod job;
pub mod train;
#[cfg(test)]
mod tests;

use std::path::Path;

use nexus_kernels::gemm::{sgemm, sgemm_t};
use nexus_kernels::GgmlType;
use nexus_runtime::gguf::{GgufWriter, Value};
use nexus_runtime::model::ModelError;
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;

use crate::error::TrainError;
use crate::student::{LayerParams, Params, StudentConfig};

/// A projection kind an adapter can change (every layer's).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Target {
    Q,
    K,
    V,
    O,
    Gate,
    Up,
    Down,
}

impl Target {
    pub const ALL: [Target; 7] = [Target::Q, Target::K, Target::V, Target::O, Target::Gate, Target::Up, Target::Down];

    /// The short name `--targets` takes.
    pub fn short(self) -> &'static str {
        match self {
            Target::Q => "q",
            Target::K => "k",
            Target::V => "v",
            Target::O => "o",
            Target::Gate => "gate",
            Target::Up => "up",
            Target::Down => "down",
        }
    }

    /// The GGUF tensor name inside a block (`blk.N.<this>`).
    pub fn tensor(self) -> &'static str {
        match self {
            Target::Q => "attn_q.weight",
            Target::K => "attn_k.weight",
            Target::V => "attn_v.weight",
            Target::O => "attn_output.weight",
            Target::Gate => "ffn_gate.weight",
            Target::Up => "ffn_up.weight",
            Target::Down => "ffn_down.weight",
        }
    }

    /// `(n_in, n_out)` of this projection in a student of shape `c`.
    pub fn shape(self, c: &StudentConfig) -> (usize, usize) {
        match self {
            Target::Q => (c.n_embd, c.q_dim()),
            Target::K | Target::V => (c.n_embd, c.kv_dim()),
            Target::O => (c.q_dim(), c.n_embd),
            Target::Gate | Target::Up => (c.n_embd, c.n_ff),
            Target::Down => (c.n_ff, c.n_embd),
        }
    }

    pub fn weight(self, l: &LayerParams) -> &Vec<f32> {
        match self {
            Target::Q => &l.wq,
            Target::K => &l.wk,
            Target::V => &l.wv,
            Target::O => &l.wo,
            Target::Gate => &l.w_gate,
            Target::Up => &l.w_up,
            Target::Down => &l.w_down,
        }
    }

    pub fn weight_mut(self, l: &mut LayerParams) -> &mut Vec<f32> {
        match self {
            Target::Q => &mut l.wq,
            Target::K => &mut l.wk,
            Target::V => &mut l.wv,
            Target::O => &mut l.wo,
            Target::Gate => &mut l.w_gate,
            Target::Up => &mut l.w_up,
            Target::Down => &mut l.w_down,
        }
    }
}

/// Parses `q,k,v,o,gate,up,down` (any subset, any order; `all` for every one). An unknown
/// name is an error that lists the known ones.
pub fn parse_targets(list: &str) -> Result<Vec<Target>, TrainError> {
    let mut out = Vec::new();
    for name in list.split(',').map(str::trim) {
        if name == "all" {
            out.extend(Target::ALL);
            continue;
        }
        let t = Target::ALL.into_iter().find(|t| t.short() == name).ok_or_else(|| {
            TrainError::Invalid(format!("unknown LoRA target {name:?}: expected some of q, k, v, o, gate, up, down (or all), comma-separated"))
        })?;
        out.push(t);
    }
    let mut seen = Vec::new();
    out.retain(|t| if seen.contains(t) { false } else { seen.push(*t); true });
    Ok(out)
}

/// One adapted projection: `ΔW = s·B·A`.
#[derive(Debug, Clone, PartialEq)]
pub struct LoraPair {
    pub layer: usize,
    pub target: Target,
    pub n_in: usize,
    pub n_out: usize,
    /// `[rank][n_in]`
    pub a: Vec<f32>,
    /// `[n_out][rank]`
    pub b: Vec<f32>,
}

impl LoraPair {
    /// The base tensor's GGUF name, e.g. `blk.3.attn_q.weight`.
    pub fn base_name(&self) -> String {
        format!("blk.{}.{}", self.layer, self.target.tensor())
    }
}

/// An adapter being trained: a pair per (layer, target), in layer then target order.
#[derive(Debug, Clone, PartialEq)]
pub struct LoraSet {
    pub rank: usize,
    pub alpha: f32,
    pub pairs: Vec<LoraPair>,
}

impl LoraSet {
    /// PEFT's initialization: A from Kaiming-uniform with a = √5 (PyTorch's `nn.Linear`
    /// default, which PEFT uses for `lora_A`), i.e. U(±1/√n_in); B zero, so the adapter starts
    /// as the identity and the first step's gradient reaches B only.
    pub fn init(cfg: &StudentConfig, targets: &[Target], rank: usize, alpha: f32, seed: u64) -> Result<LoraSet, TrainError> {
        if rank == 0 {
            return Err(TrainError::Invalid("--rank must be at least 1".into()));
        }
        if !(alpha.is_finite() && alpha > 0.0) {
            return Err(TrainError::Invalid(format!("--alpha {alpha} must be a positive number")));
        }
        if targets.is_empty() {
            return Err(TrainError::Invalid("no LoRA targets given".into()));
        }
        let mut rng = ChaCha8Rng::seed_from_u64(seed);
        let mut pairs = Vec::new();
        for layer in 0..cfg.n_layer {
            for &target in targets {
                let (n_in, n_out) = target.shape(cfg);
                if rank > n_in.min(n_out) {
                    return Err(TrainError::Invalid(format!(
                        "--rank {rank} is larger than blk.{layer}.{} allows ({n_out} × {n_in}): a LoRA rank is at most the smaller side",
                        target.tensor()
                    )));
                }
                let bound = 1.0 / (n_in as f32).sqrt();
                let a = (0..rank * n_in).map(|_| rng.gen_range(-bound..bound)).collect();
                pairs.push(LoraPair { layer, target, n_in, n_out, a, b: vec![0.0; n_out * rank] });
            }
        }
        Ok(LoraSet { rank, alpha, pairs })
    }

    /// `s` of `W + s·B·A`: llama.cpp's `alpha / rank` at user scale 1.
    pub fn scale(&self) -> f32 {
        self.alpha / self.rank as f32
    }

    /// Writes `base` with every pair's `s·B·A` added into `merged` (same shapes as `base`; its
    /// other tensors are expected to hold `base`'s already, and the adapted ones are rewritten).
    pub fn merge_into(&self, base: &Params, merged: &mut Params) {
        let s = self.scale();
        for p in &self.pairs {
            let w = p.target.weight_mut(&mut merged.layers[p.layer]);
            w.copy_from_slice(p.target.weight(&base.layers[p.layer]));
            let sb: Vec<f32> = p.b.iter().map(|&x| s * x).collect();
            // w[n_out][n_in] += (s·B)[n_out][rank] · A[rank][n_in]
            sgemm(p.n_out, p.n_in, self.rank, &sb, self.rank, &p.a, p.n_in, w, p.n_in, true);
        }
    }

    /// From the full gradients of the merged weights (`grads`, shaped like the student),
    /// each pair's `(dA, dB)` = `(s·Bᵀ·G, s·G·Aᵀ)`, overwriting `out` (one entry per pair).
    pub fn grads_from_full(&self, grads: &Params, out: &mut [(Vec<f32>, Vec<f32>)]) {
        let (s, r) = (self.scale(), self.rank);
        for (p, (da, db)) in self.pairs.iter().zip(out.iter_mut()) {
            let g = p.target.weight(&grads.layers[p.layer]);
            // dA[rank][n_in] = Bᵀ[rank][n_out] · G[n_out][n_in]
            sgemm_t(true, false, r, p.n_in, p.n_out, &p.b, r, g, p.n_in, da, p.n_in, false);
            // dB[n_out][rank] = G[n_out][n_in] · Aᵀ[n_in][rank]
            sgemm_t(false, true, p.n_out, r, p.n_in, g, p.n_in, &p.a, p.n_in, db, r, false);
            da.iter_mut().chain(db.iter_mut()).for_each(|x| *x *= s);
        }
    }

    /// Zeroed gradient buffers, one `(dA, dB)` per pair.
    pub fn zero_grads(&self) -> Vec<(Vec<f32>, Vec<f32>)> {
        self.pairs.iter().map(|p| (vec![0.0; p.a.len()], vec![0.0; p.b.len()])).collect()
    }

    /// Writes the adapter as llama.cpp's LoRA GGUF (what `convert_lora_to_gguf.py` writes):
    /// `general.type = adapter`, `adapter.type = lora`, `adapter.lora.alpha`, and per pair
    /// `<base>.lora_a` (ggml dims `[n_in, rank]`) and `<base>.lora_b` (`[rank, n_out]`) in
    /// F32, plus the caller's `extra` keys. Atomic: a temporary file renamed when complete.
    pub fn write_gguf(&self, arch: &str, extra: &[(String, Value)], out: &Path) -> Result<(), TrainError> {
        let mut w = GgufWriter::new();
        w.set("general.architecture", Value::String(arch.into()));
        w.set("general.type", Value::String("adapter".into()));
        w.set("adapter.type", Value::String("lora".into()));
        w.set("adapter.lora.alpha", Value::F32(self.alpha));
        for (k, v) in extra {
            w.set(k.clone(), v.clone());
        }
        let bytes = |v: &[f32]| -> Vec<u8> { v.iter().flat_map(|x| x.to_le_bytes()).collect() };
        for p in &self.pairs {
            let base = p.base_name();
            let bad = |e: nexus_runtime::gguf::GgufErrorKind| TrainError::Config { path: out.into(), what: format!("{base}: {e}") };
            w.add_tensor(format!("{base}.lora_a"), &[p.n_in as u64, self.rank as u64], GgmlType::F32, bytes(&p.a)).map_err(bad)?;
            w.add_tensor(format!("{base}.lora_b"), &[self.rank as u64, p.n_out as u64], GgmlType::F32, bytes(&p.b)).map_err(bad)?;
        }
        if let Some(dir) = out.parent().filter(|d| !d.as_os_str().is_empty()) {
            std::fs::create_dir_all(dir).map_err(|e| TrainError::io(dir, e))?;
        }
        w.write(out).map_err(ModelError::from)?;
        Ok(())
    }
}
