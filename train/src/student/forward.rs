//! The student's forward pass for training, top to bottom like the architecture: embedding,
//! then per layer RMSNorm → Q/K/V → RoPE → causal GQA attention → output projection →
//! residual, RMSNorm → SwiGLU → down projection → residual; then the final RMSNorm. The same
//! arithmetic as the runtime's `model::llama`, batched over sequences that each start at
//! position 0, keeping in [`Activations`] what [`super::backward`] needs.
//!
//! Kept per layer: the norms' reciprocal RMS, rotated Q and K, V, the attention's
//! log-sum-exps, its output (before `wo`), the stream between the two blocks, gate and up.
//! The normalized inputs and the SwiGLU product are recomputed in the backward (cheap,
//! element-wise) instead of kept: about `n · (n_embd + 2·q_dim + 2·kv_dim + 2·n_ff)` floats per
//! layer (8 × 256 tokens of a d=384, n_ff=1024 student: ~28 MB a layer).

use super::{LayerParams, Params, StudentConfig};
use crate::engine::attention::{self, AttnShape};
use crate::engine::rope::RopeTable;
use crate::engine::{check_len, embedding, linear, rmsnorm, swiglu, EngineError};

/// What one layer's backward needs from its forward.
pub(crate) struct LayerActs {
    pub attn_rstd: Vec<f32>,
    pub q: Vec<f32>,
    pub k: Vec<f32>,
    pub v: Vec<f32>,
    pub lse: Vec<f32>,
    /// Attention output before `wo` (`n × q_dim`).
    pub att: Vec<f32>,
    /// The residual stream after the attention block (`n × n_embd`).
    pub mid: Vec<f32>,
    pub ffn_rstd: Vec<f32>,
    pub gate: Vec<f32>,
    pub up: Vec<f32>,
}

/// A batch's forward state: everything the backward needs, plus the residual streams
/// (anchoring reads them) and the final normed hidden states (the head's input).
pub struct Activations {
    pub(crate) tokens: Vec<u32>,
    pub(crate) n_seq: usize,
    pub(crate) seq_len: usize,
    /// The embedded tokens: the stream entering layer 0.
    pub(crate) embedded: Vec<f32>,
    pub(crate) layers: Vec<LayerActs>,
    /// The stream after each layer.
    pub(crate) residuals: Vec<Vec<f32>>,
    pub(crate) final_rstd: Vec<f32>,
    pub(crate) hidden: Vec<f32>,
}

impl Activations {
    /// The residual stream after layer `l` (n × n_embd), for anchoring.
    ///
    /// # Panics
    /// If `l` is not a layer of the student.
    pub fn residual(&self, l: usize) -> &[f32] {
        &self.residuals[l]
    }

    /// The final RMS-normed hidden states (n × n_embd): the head's input.
    pub fn hidden(&self) -> &[f32] {
        &self.hidden
    }

    /// Tokens in the batch (`n_seq · seq_len`).
    pub fn n_tokens(&self) -> usize {
        self.tokens.len()
    }

    pub fn n_seq(&self) -> usize {
        self.n_seq
    }

    pub fn seq_len(&self) -> usize {
        self.seq_len
    }

    /// The stream entering layer `l`.
    pub(crate) fn layer_input(&self, l: usize) -> &[f32] {
        if l == 0 {
            &self.embedded
        } else {
            &self.residuals[l - 1]
        }
    }
}

/// The config's own consistency: what the forward's arithmetic relies on.
pub(crate) fn check_config(cfg: &StudentConfig) -> Result<(), EngineError> {
    cfg.check().map_err(EngineError::Config)
}

/// Every tensor of `p` has the shape `cfg` gives it (`what` names the set: weights, grads).
pub(crate) fn check_params(cfg: &StudentConfig, p: &Params, what: &str) -> Result<(), EngineError> {
    if p.layers.len() != cfg.n_layer {
        return Err(EngineError::Size {
            what: format!("{what}: layers"),
            expected: cfg.n_layer,
            got: p.layers.len(),
        });
    }
    if p.output.is_some() == cfg.tied {
        return Err(EngineError::Config(format!(
            "{what}: the config says tied = {} but the output head is {}",
            cfg.tied,
            if p.output.is_some() {
                "present"
            } else {
                "absent"
            }
        )));
    }
    for ((name, got), expected) in p.named().iter().zip(tensor_lens(cfg)) {
        check_len(format!("{what}: {name}"), expected, got.len())?;
    }
    Ok(())
}

/// Element counts of the tensors of [`Params::named`], in its order.
fn tensor_lens(cfg: &StudentConfig) -> Vec<usize> {
    let (d, q, kv, ff) = (cfg.n_embd, cfg.q_dim(), cfg.kv_dim(), cfg.n_ff);
    let mut lens = vec![cfg.n_vocab * d];
    for _ in 0..cfg.n_layer {
        lens.extend([d, q * d, kv * d, kv * d, d * q, d, ff * d, ff * d, d * ff]);
    }
    lens.push(d);
    if !cfg.tied {
        lens.push(cfg.n_vocab * d);
    }
    lens
}

/// Checks a batch of tokens: `n_seq` equal non-empty sequences of in-vocabulary ids.
pub(crate) fn check_batch(
    cfg: &StudentConfig,
    tokens: &[u32],
    n_seq: usize,
) -> Result<usize, EngineError> {
    if n_seq == 0 || tokens.is_empty() || !tokens.len().is_multiple_of(n_seq) {
        return Err(EngineError::Batch {
            n_tokens: tokens.len(),
            n_seq,
        });
    }
    if let Some((index, &token)) = tokens
        .iter()
        .enumerate()
        .find(|(_, &t)| t as usize >= cfg.n_vocab)
    {
        return Err(EngineError::Token {
            index,
            token,
            n_vocab: cfg.n_vocab,
        });
    }
    Ok(tokens.len() / n_seq)
}

/// The attention shape of a batch.
pub(crate) fn attn_shape(cfg: &StudentConfig, n_seq: usize, seq_len: usize) -> AttnShape {
    AttnShape {
        n_seq,
        seq_len,
        n_head: cfg.n_head,
        n_head_kv: cfg.n_head_kv,
        head_dim: cfg.head_dim,
    }
}

/// Runs the student on `n_seq` sequences of equal length laid end to end in `tokens`.
pub fn forward(
    cfg: &StudentConfig,
    p: &Params,
    tokens: &[u32],
    n_seq: usize,
) -> Result<Activations, EngineError> {
    check_config(cfg)?;
    check_params(cfg, p, "weights")?;
    let seq_len = check_batch(cfg, tokens, n_seq)?;
    let (n, d) = (tokens.len(), cfg.n_embd);
    let shape = attn_shape(cfg, n_seq, seq_len);
    let rope = RopeTable::new(cfg.head_dim, cfg.rope_base, seq_len);

    let mut x = vec![0f32; n * d];
    embedding::forward(&p.embed, tokens, d, &mut x);
    let embedded = x.clone();
    let mut xn = vec![0f32; n * d];
    let mut h = vec![0f32; n * cfg.n_ff];
    let mut layers = Vec::with_capacity(cfg.n_layer);
    let mut residuals = Vec::with_capacity(cfg.n_layer);
    for lp in &p.layers {
        let (acts, out) = layer_forward(cfg, lp, &shape, &rope, &x, &mut xn, &mut h);
        layers.push(acts);
        residuals.push(out);
        x.copy_from_slice(residuals.last().expect("just pushed"));
    }
    let mut final_rstd = vec![0f32; n];
    let mut hidden = vec![0f32; n * d];
    rmsnorm::forward(
        &x,
        &p.output_norm,
        d,
        cfg.rms_eps,
        &mut hidden,
        &mut final_rstd,
    );
    Ok(Activations {
        tokens: tokens.to_vec(),
        n_seq,
        seq_len,
        embedded,
        layers,
        residuals,
        final_rstd,
        hidden,
    })
}

/// One transformer block on the stream `x`; returns its kept activations and its output
/// stream. `xn` (`n × n_embd`) and `h` (`n × n_ff`) are scratch.
fn layer_forward(
    cfg: &StudentConfig,
    lp: &LayerParams,
    shape: &AttnShape,
    rope: &RopeTable,
    x: &[f32],
    xn: &mut [f32],
    h: &mut [f32],
) -> (LayerActs, Vec<f32>) {
    let (n, d, qd, kvd, ff) = (shape.n(), cfg.n_embd, cfg.q_dim(), cfg.kv_dim(), cfg.n_ff);
    let mut attn_rstd = vec![0f32; n];
    rmsnorm::forward(x, &lp.attn_norm, d, cfg.rms_eps, xn, &mut attn_rstd);
    let (mut q, mut k, mut v) = (vec![0f32; n * qd], vec![0f32; n * kvd], vec![0f32; n * kvd]);
    linear::forward(xn, &lp.wq, n, d, qd, &mut q, false);
    linear::forward(xn, &lp.wk, n, d, kvd, &mut k, false);
    linear::forward(xn, &lp.wv, n, d, kvd, &mut v, false);
    rope.forward(&mut q, qd, shape.seq_len);
    rope.forward(&mut k, kvd, shape.seq_len);
    let (mut att, mut lse) = (vec![0f32; n * qd], vec![0f32; n * cfg.n_head]);
    attention::forward(shape, &q, &k, &v, &mut att, &mut lse);
    let mut mid = x.to_vec();
    linear::forward(&att, &lp.wo, n, qd, d, &mut mid, true);

    let mut ffn_rstd = vec![0f32; n];
    rmsnorm::forward(&mid, &lp.ffn_norm, d, cfg.rms_eps, xn, &mut ffn_rstd);
    let (mut gate, mut up) = (vec![0f32; n * ff], vec![0f32; n * ff]);
    linear::forward(xn, &lp.w_gate, n, d, ff, &mut gate, false);
    linear::forward(xn, &lp.w_up, n, d, ff, &mut up, false);
    swiglu::forward(&gate, &up, h);
    let mut out = mid.clone();
    linear::forward(h, &lp.w_down, n, ff, d, &mut out, true);
    (
        LayerActs {
            attn_rstd,
            q,
            k,
            v,
            lse,
            att,
            mid,
            ffn_rstd,
            gate,
            up,
        },
        out,
    )
}
