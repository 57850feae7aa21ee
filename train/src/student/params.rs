//! The student's weights in f32, laid out like a llama GGUF: every matrix row-major
//! `[out][in]` (GGUF `ne0 = in`), so export is a copy and pruning from the teacher is row and
//! column selection.

use serde::{Deserialize, Serialize};

/// A llama-architecture student's shape.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct StudentConfig {
    pub n_vocab: usize,
    pub n_embd: usize,
    pub n_layer: usize,
    pub n_head: usize,
    pub n_head_kv: usize,
    pub head_dim: usize,
    pub n_ff: usize,
    pub rms_eps: f32,
    pub rope_base: f32,
    /// Longest context the student is trained for (written as `llama.context_length`).
    pub n_ctx: usize,
    /// The output head reuses the token embedding (SmolLM2 does).
    pub tied: bool,
}

impl StudentConfig {
    pub fn q_dim(&self) -> usize {
        self.n_head * self.head_dim
    }

    pub fn kv_dim(&self) -> usize {
        self.n_head_kv * self.head_dim
    }

    /// The config's own consistency: what the forward's arithmetic, export and pruning rely on.
    pub fn check(&self) -> Result<(), String> {
        let dims = [
            ("n_vocab", self.n_vocab),
            ("n_embd", self.n_embd),
            ("n_layer", self.n_layer),
            ("n_head", self.n_head),
            ("n_head_kv", self.n_head_kv),
            ("head_dim", self.head_dim),
            ("n_ff", self.n_ff),
        ];
        if let Some((name, _)) = dims.iter().find(|(_, v)| *v == 0) {
            return Err(format!("{name} must be positive"));
        }
        if !self.n_head.is_multiple_of(self.n_head_kv) {
            return Err(format!("n_head {} must be a positive multiple of n_head_kv {}", self.n_head, self.n_head_kv));
        }
        if !self.head_dim.is_multiple_of(2) {
            return Err(format!("head_dim {} must be even (RoPE rotates pairs)", self.head_dim));
        }
        if !(self.rms_eps.is_finite() && self.rms_eps > 0.0 && self.rope_base.is_finite() && self.rope_base > 0.0) {
            return Err(format!("rms_eps {} and rope_base {} must be positive", self.rms_eps, self.rope_base));
        }
        Ok(())
    }

    /// Parameters, embeddings (and an untied head) counted.
    pub fn n_params(&self) -> usize {
        let (d, q, kv, ff) = (self.n_embd, self.q_dim(), self.kv_dim(), self.n_ff);
        let layer = 2 * d + q * d + 2 * kv * d + d * q + 3 * ff * d;
        let head = if self.tied { 0 } else { self.n_vocab * d };
        self.n_vocab * d + self.n_layer * layer + d + head
    }
}

/// One transformer block's weights.
#[derive(Debug, Clone, PartialEq)]
pub struct LayerParams {
    /// `[n_embd]`
    pub attn_norm: Vec<f32>,
    /// `[q_dim][n_embd]`
    pub wq: Vec<f32>,
    /// `[kv_dim][n_embd]`
    pub wk: Vec<f32>,
    /// `[kv_dim][n_embd]`
    pub wv: Vec<f32>,
    /// `[n_embd][q_dim]`
    pub wo: Vec<f32>,
    /// `[n_embd]`
    pub ffn_norm: Vec<f32>,
    /// `[n_ff][n_embd]`
    pub w_gate: Vec<f32>,
    /// `[n_ff][n_embd]`
    pub w_up: Vec<f32>,
    /// `[n_embd][n_ff]`
    pub w_down: Vec<f32>,
}

/// All of a student's weights (or, with the same shapes, their gradients or optimizer moments).
#[derive(Debug, Clone, PartialEq)]
pub struct Params {
    /// `[n_vocab][n_embd]`
    pub embed: Vec<f32>,
    pub layers: Vec<LayerParams>,
    /// `[n_embd]`
    pub output_norm: Vec<f32>,
    /// `[n_vocab][n_embd]`, `None` when tied to `embed`.
    pub output: Option<Vec<f32>>,
}

impl LayerParams {
    pub fn zeros(c: &StudentConfig) -> Self {
        let (d, q, kv, ff) = (c.n_embd, c.q_dim(), c.kv_dim(), c.n_ff);
        LayerParams {
            attn_norm: vec![0.0; d],
            wq: vec![0.0; q * d],
            wk: vec![0.0; kv * d],
            wv: vec![0.0; kv * d],
            wo: vec![0.0; d * q],
            ffn_norm: vec![0.0; d],
            w_gate: vec![0.0; ff * d],
            w_up: vec![0.0; ff * d],
            w_down: vec![0.0; d * ff],
        }
    }

    /// Tensors in a fixed order with their GGUF names (without the `blk.N.` prefix).
    pub fn named(&self) -> [(&'static str, &Vec<f32>); 9] {
        [
            ("attn_norm.weight", &self.attn_norm),
            ("attn_q.weight", &self.wq),
            ("attn_k.weight", &self.wk),
            ("attn_v.weight", &self.wv),
            ("attn_output.weight", &self.wo),
            ("ffn_norm.weight", &self.ffn_norm),
            ("ffn_gate.weight", &self.w_gate),
            ("ffn_up.weight", &self.w_up),
            ("ffn_down.weight", &self.w_down),
        ]
    }

    fn all_mut(&mut self) -> [&mut Vec<f32>; 9] {
        [
            &mut self.attn_norm,
            &mut self.wq,
            &mut self.wk,
            &mut self.wv,
            &mut self.wo,
            &mut self.ffn_norm,
            &mut self.w_gate,
            &mut self.w_up,
            &mut self.w_down,
        ]
    }
}

impl Params {
    /// Every tensor zero (the shape of gradients and Adam moments).
    pub fn zeros(c: &StudentConfig) -> Self {
        Params {
            embed: vec![0.0; c.n_vocab * c.n_embd],
            layers: (0..c.n_layer).map(|_| LayerParams::zeros(c)).collect(),
            output_norm: vec![0.0; c.n_embd],
            output: (!c.tied).then(|| vec![0.0; c.n_vocab * c.n_embd]),
        }
    }

    /// Every tensor with its GGUF name, in a fixed order (checkpoints and export rely on it).
    pub fn named(&self) -> Vec<(String, &[f32])> {
        let mut out: Vec<(String, &[f32])> = vec![("token_embd.weight".into(), &self.embed)];
        for (i, l) in self.layers.iter().enumerate() {
            out.extend(l.named().into_iter().map(|(n, t)| (format!("blk.{i}.{n}"), t.as_slice())));
        }
        out.push(("output_norm.weight".into(), &self.output_norm));
        if let Some(o) = &self.output {
            out.push(("output.weight".into(), o));
        }
        out
    }

    /// Every tensor mutably, in the order of [`Params::named`].
    pub fn tensors_mut(&mut self) -> Vec<&mut Vec<f32>> {
        let mut out = vec![&mut self.embed];
        for l in &mut self.layers {
            out.extend(l.all_mut());
        }
        out.push(&mut self.output_norm);
        if let Some(o) = &mut self.output {
            out.push(o);
        }
        out
    }

    /// Sets every element to zero, keeping the allocations (gradient accumulation).
    pub fn fill_zero(&mut self) {
        for t in self.tensors_mut() {
            t.fill(0.0);
        }
    }

    pub fn n_elements(&self) -> usize {
        self.named().iter().map(|(_, t)| t.len()).sum()
    }
}
