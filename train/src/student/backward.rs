//! The student's backward pass: [`super::forward`] in reverse, layer by layer, each op's
//! explicit backward from `crate::engine`. The residual stream's gradient `dx` runs down the
//! layers; each block adds its branch's input gradient into it, and anchoring terms add theirs
//! where they read the stream. Weight gradients accumulate (`+=`) into `grads`.

use super::forward::{attn_shape, check_config, check_params, Activations, LayerActs};
use super::{LayerParams, Params, StudentConfig};
use crate::engine::rope::RopeTable;
use crate::engine::{attention, check_len, embedding, linear, rmsnorm, swiglu, EngineError};

/// Scratch of one layer's backward, allocated once per call and reused down the layers.
struct Scratch {
    /// `n × n_embd`: a norm's recomputed output, then the gradient at its output.
    xn: Vec<f32>,
    dxn: Vec<f32>,
    /// `n × n_ff`
    h: Vec<f32>,
    dh: Vec<f32>,
    d_gate: Vec<f32>,
    d_up: Vec<f32>,
    /// `n × q_dim`
    d_att: Vec<f32>,
    dq: Vec<f32>,
    /// `n × kv_dim`
    dk: Vec<f32>,
    dv: Vec<f32>,
}

/// Accumulates (+=) into `grads` the gradient of a loss whose gradient w.r.t. the final hidden
/// states is `d_hidden` (n × n_embd) and w.r.t. the residual stream after layer l is d for each
/// (l, d) in `d_residual` (anchoring terms). Embedding gradient included (and, when tied, the
/// caller adds the head's gradient into grads.embed — see head_loss).
pub fn backward(
    cfg: &StudentConfig,
    p: &Params,
    acts: &Activations,
    d_hidden: &[f32],
    d_residual: &[(usize, Vec<f32>)],
    grads: &mut Params,
) -> Result<(), EngineError> {
    check_config(cfg)?;
    check_params(cfg, p, "weights")?;
    check_params(cfg, grads, "gradients")?;
    let (n, d) = (acts.n_tokens(), cfg.n_embd);
    check_len("activations: layers", cfg.n_layer, acts.layers.len())?;
    check_len("activations: hidden", n * d, acts.hidden.len())?;
    check_len("activations: q", n * cfg.q_dim(), acts.layers[0].q.len())?;
    check_len("activations: k", n * cfg.kv_dim(), acts.layers[0].k.len())?;
    check_len("activations: lse", n * cfg.n_head, acts.layers[0].lse.len())?;
    check_len("activations: gate", n * cfg.n_ff, acts.layers[0].gate.len())?;
    check_len("d_hidden", n * d, d_hidden.len())?;
    for (l, dr) in d_residual {
        if *l >= cfg.n_layer {
            return Err(EngineError::Invalid(format!(
                "d_residual names layer {l}, the student has {}",
                cfg.n_layer
            )));
        }
        check_len(format!("d_residual of layer {l}"), n * d, dr.len())?;
    }

    let shape = attn_shape(cfg, acts.n_seq, acts.seq_len);
    let rope = RopeTable::new(cfg.head_dim, cfg.rope_base, acts.seq_len);
    let (qd, kvd, ff) = (cfg.q_dim(), cfg.kv_dim(), cfg.n_ff);
    let mut s = Scratch {
        xn: vec![0f32; n * d],
        dxn: vec![0f32; n * d],
        h: vec![0f32; n * ff],
        dh: vec![0f32; n * ff],
        d_gate: vec![0f32; n * ff],
        d_up: vec![0f32; n * ff],
        d_att: vec![0f32; n * qd],
        dq: vec![0f32; n * qd],
        dk: vec![0f32; n * kvd],
        dv: vec![0f32; n * kvd],
    };

    let mut dx = vec![0f32; n * d];
    let last = &acts.residuals[cfg.n_layer - 1];
    rmsnorm::backward(
        last,
        &p.output_norm,
        &acts.final_rstd,
        d_hidden,
        d,
        &mut dx,
        false,
        &mut grads.output_norm,
    );
    for l in (0..cfg.n_layer).rev() {
        for (_, dr) in d_residual.iter().filter(|(at, _)| *at == l) {
            dx.iter_mut().zip(dr).for_each(|(g, &a)| *g += a);
        }
        let ctx = LayerCtx {
            cfg,
            shape: &shape,
            rope: &rope,
            x: acts.layer_input(l),
            a: &acts.layers[l],
        };
        layer_backward(&ctx, &p.layers[l], &mut grads.layers[l], &mut dx, &mut s);
    }
    embedding::backward(&acts.tokens, &dx, d, &mut grads.embed);
    Ok(())
}

/// What a layer's backward reads besides its weights.
struct LayerCtx<'a> {
    cfg: &'a StudentConfig,
    shape: &'a attention::AttnShape,
    rope: &'a RopeTable,
    /// The stream entering the layer.
    x: &'a [f32],
    a: &'a LayerActs,
}

/// Turns `dx`, the gradient at the layer's output stream, into the gradient at its input, and
/// adds the layer's weight gradients into `g`.
fn layer_backward(
    c: &LayerCtx,
    lp: &LayerParams,
    g: &mut LayerParams,
    dx: &mut [f32],
    s: &mut Scratch,
) {
    let (cfg, a) = (c.cfg, c.a);
    let (n, d, qd, kvd, ff) = (c.shape.n(), cfg.n_embd, cfg.q_dim(), cfg.kv_dim(), cfg.n_ff);

    // Feed-forward block: out = mid + w_down·(silu(gate) ⊙ up), gate/up from rmsnorm(mid).
    swiglu::forward(&a.gate, &a.up, &mut s.h);
    linear::backward_weight(&s.h, dx, n, ff, d, &mut g.w_down);
    linear::backward_input(dx, &lp.w_down, n, ff, d, &mut s.dh, false);
    swiglu::backward(&a.gate, &a.up, &s.dh, &mut s.d_gate, &mut s.d_up);
    rmsnorm::apply(&a.mid, &lp.ffn_norm, &a.ffn_rstd, d, &mut s.xn);
    linear::backward_weight(&s.xn, &s.d_gate, n, d, ff, &mut g.w_gate);
    linear::backward_weight(&s.xn, &s.d_up, n, d, ff, &mut g.w_up);
    linear::backward_input(&s.d_gate, &lp.w_gate, n, d, ff, &mut s.dxn, false);
    linear::backward_input(&s.d_up, &lp.w_up, n, d, ff, &mut s.dxn, true);
    rmsnorm::backward(
        &a.mid,
        &lp.ffn_norm,
        &a.ffn_rstd,
        &s.dxn,
        d,
        dx,
        true,
        &mut g.ffn_norm,
    );

    // Attention block: mid = x + wo·attn(rope(wq·xn), rope(wk·xn), wv·xn), xn = rmsnorm(x).
    linear::backward_weight(&a.att, dx, n, qd, d, &mut g.wo);
    linear::backward_input(dx, &lp.wo, n, qd, d, &mut s.d_att, false);
    attention::backward(
        c.shape, &a.q, &a.k, &a.v, &a.att, &a.lse, &s.d_att, &mut s.dq, &mut s.dk, &mut s.dv,
    );
    c.rope.backward(&mut s.dq, qd, c.shape.seq_len);
    c.rope.backward(&mut s.dk, kvd, c.shape.seq_len);
    rmsnorm::apply(c.x, &lp.attn_norm, &a.attn_rstd, d, &mut s.xn);
    linear::backward_weight(&s.xn, &s.dq, n, d, qd, &mut g.wq);
    linear::backward_weight(&s.xn, &s.dk, n, d, kvd, &mut g.wk);
    linear::backward_weight(&s.xn, &s.dv, n, d, kvd, &mut g.wv);
    linear::backward_input(&s.dq, &lp.wq, n, d, qd, &mut s.dxn, false);
    linear::backward_input(&s.dk, &lp.wk, n, d, kvd, &mut s.dxn, true);
    linear::backward_input(&s.dv, &lp.wv, n, d, kvd, &mut s.dxn, true);
    rmsnorm::backward(
        c.x,
        &lp.attn_norm,
        &a.attn_rstd,
        &s.dxn,
        d,
        dx,
        true,
        &mut g.attn_norm,
    );
}
