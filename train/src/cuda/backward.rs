//! The student's backward on the GPU: `crate::student::backward` in the same order, the
//! residual stream's gradient running down the layers and weight gradients accumulating (`+=`)
//! into the device gradient buffer.

use nexus_kernels::cuda::GpuBuffer;

use super::forward::DeviceActs;
use super::{t, CudaStudent};
use crate::engine::{check_len, EngineError};

/// One layer's backward scratch (`Scratch` of the CPU backward).
struct Scratch {
    xn: GpuBuffer<f32>,
    dxn: GpuBuffer<f32>,
    h: GpuBuffer<f32>,
    dh: GpuBuffer<f32>,
    d_gate: GpuBuffer<f32>,
    d_up: GpuBuffer<f32>,
    d_att: GpuBuffer<f32>,
    dq: GpuBuffer<f32>,
    dk: GpuBuffer<f32>,
    dv: GpuBuffer<f32>,
    /// `n × n_head`: each score row's `Σ dO·O`.
    dsum: GpuBuffer<f32>,
}

impl CudaStudent {
    /// Adds into the gradients the gradient of a loss whose gradient w.r.t. the final hidden
    /// states is `d_hidden` (device, `n × n_embd`) and w.r.t. the stream after layer `l` is `d`
    /// for each `(l, d)` of `d_residual` (the anchoring terms).
    pub fn backward(&self, a: &DeviceActs, d_hidden: &GpuBuffer<f32>, d_residual: &[(usize, GpuBuffer<f32>)]) -> Result<(), EngineError> {
        let cfg = &self.cfg;
        let g = &self.gpu;
        let (n, d, qd, kvd, ff) = (a.n_tokens(), cfg.n_embd, cfg.q_dim(), cfg.kv_dim(), cfg.n_ff);
        check_len("d_hidden", n * d, d_hidden.len())?;
        if a.layers.len() != cfg.n_layer {
            return Err(EngineError::Invalid("backward: these activations come from forward_frozen, which keeps none for a backward".into()));
        }
        for (l, dr) in d_residual {
            if *l >= cfg.n_layer {
                return Err(EngineError::Invalid(format!("d_residual names layer {l}, the student has {}", cfg.n_layer)));
            }
            check_len(format!("d_residual of layer {l}"), n * d, dr.len())?;
        }
        let s = Scratch {
            xn: g.alloc(n * d)?,
            dxn: g.alloc(n * d)?,
            h: g.alloc(n * ff)?,
            dh: g.alloc(n * ff)?,
            d_gate: g.alloc(n * ff)?,
            d_up: g.alloc(n * ff)?,
            d_att: g.alloc(n * qd)?,
            dq: g.alloc(n * qd)?,
            dk: g.alloc(n * kvd)?,
            dv: g.alloc(n * kvd)?,
            dsum: g.alloc(n * cfg.n_head)?,
        };
        let dx = g.alloc::<f32>(n * d)?;
        let (embed, norm, _) = self.ends();
        let last = a.residuals[cfg.n_layer - 1].ptr();
        let grads = &self.trainable()?.grads;
        let (w_norm, g_norm) = (self.at(&self.params, norm), self.at(grads, norm));
        g.tr_rmsnorm_bwd(last, w_norm, a.final_rstd.ptr(), d_hidden.ptr(), n, d, false, dx.ptr())?;
        g.tr_rmsnorm_dw(last, a.final_rstd.ptr(), d_hidden.ptr(), n, d, g_norm)?;
        for l in (0..cfg.n_layer).rev() {
            for (_, dr) in d_residual.iter().filter(|(at, _)| *at == l) {
                g.tr_axpy(dx.ptr(), dr.ptr(), n * d, 1.0)?;
            }
            self.layer_backward(a, l, dx.ptr(), &s, grads)?;
        }
        let csr = (a.token_rows.ptr(), a.token_offsets.ptr(), a.token_positions.ptr());
        g.tr_embed_bwd(csr, a.n_distinct, dx.ptr(), d, self.at(grads, embed))?;
        Ok(())
    }

    /// Turns `dx` (the gradient at layer `l`'s output stream) into the gradient at its input,
    /// adding the layer's weight gradients.
    fn layer_backward(&self, a: &DeviceActs, l: usize, dx: u64, s: &Scratch, grads: &GpuBuffer<f32>) -> Result<(), EngineError> {
        let (cfg, g, la) = (&self.cfg, &self.gpu, &a.layers[l]);
        let (n, d, qd, kvd, ff) = (a.n_tokens(), cfg.n_embd, cfg.q_dim(), cfg.kv_dim(), cfg.n_ff);
        let (w, gw) = (|j| self.layer_w(l, j), |j| self.layer_g(grads, l, j));
        let (xn, dxn) = (s.xn.ptr(), s.dxn.ptr());

        // Feed-forward block: out = mid + w_down·(silu(gate) ⊙ up), gate/up from rmsnorm(mid).
        let (mid, ffn_rstd) = (la.mid.ptr(), la.ffn_rstd.ptr());
        g.tr_swiglu(la.gate.ptr(), la.up.ptr(), n * ff, s.h.ptr())?;
        self.linear_dw(s.h.ptr(), dx, n, ff, d, gw(t::W_DOWN))?;
        self.linear_dx(dx, w(t::W_DOWN), n, ff, d, s.dh.ptr(), false)?;
        g.tr_swiglu_bwd(la.gate.ptr(), la.up.ptr(), s.dh.ptr(), n * ff, s.d_gate.ptr(), s.d_up.ptr())?;
        g.tr_rmsnorm(mid, w(t::FFN_NORM), ffn_rstd, n, d, cfg.rms_eps, false, xn)?;
        self.linear_dw(xn, s.d_gate.ptr(), n, d, ff, gw(t::W_GATE))?;
        self.linear_dw(xn, s.d_up.ptr(), n, d, ff, gw(t::W_UP))?;
        self.linear_dx(s.d_gate.ptr(), w(t::W_GATE), n, d, ff, dxn, false)?;
        self.linear_dx(s.d_up.ptr(), w(t::W_UP), n, d, ff, dxn, true)?;
        g.tr_rmsnorm_bwd(mid, w(t::FFN_NORM), ffn_rstd, dxn, n, d, true, dx)?;
        g.tr_rmsnorm_dw(mid, ffn_rstd, dxn, n, d, gw(t::FFN_NORM))?;

        // Attention block: mid = x + wo·attn(rope(wq·xn), rope(wk·xn), wv·xn), xn = rmsnorm(x).
        let (x, attn_rstd) = (a.layer_input(l), la.attn_rstd.ptr());
        let (dq, dk, dv) = (s.dq.ptr(), s.dk.ptr(), s.dv.ptr());
        self.linear_dw(la.att.ptr(), dx, n, qd, d, gw(t::WO))?;
        self.linear_dx(dx, w(t::WO), n, qd, d, s.d_att.ptr(), false)?;
        g.tr_attn_bwd(
            &a.shape(self),
            (la.q.ptr(), la.k.ptr(), la.v.ptr()),
            (la.att.ptr(), la.lse.ptr(), s.d_att.ptr()),
            s.dsum.ptr(),
            (dq, dk, dv),
        )?;
        g.tr_rope(dq, a.cos.ptr(), a.sin.ptr(), n, qd, cfg.head_dim, a.seq_len, -1.0)?;
        g.tr_rope(dk, a.cos.ptr(), a.sin.ptr(), n, kvd, cfg.head_dim, a.seq_len, -1.0)?;
        g.tr_rmsnorm(x, w(t::ATTN_NORM), attn_rstd, n, d, cfg.rms_eps, false, xn)?;
        self.linear_dw(xn, dq, n, d, qd, gw(t::WQ))?;
        self.linear_dw(xn, dk, n, d, kvd, gw(t::WK))?;
        self.linear_dw(xn, dv, n, d, kvd, gw(t::WV))?;
        self.linear_dx(dq, w(t::WQ), n, d, qd, dxn, false)?;
        self.linear_dx(dk, w(t::WK), n, d, kvd, dxn, true)?;
        self.linear_dx(dv, w(t::WV), n, d, kvd, dxn, true)?;
        g.tr_rmsnorm_bwd(x, w(t::ATTN_NORM), attn_rstd, dxn, n, d, true, dx)?;
        g.tr_rmsnorm_dw(x, attn_rstd, dxn, n, d, gw(t::ATTN_NORM))?;
        Ok(())
    }
}
