//! The student's forward on the GPU: `crate::student::forward` step for step (embedding, then
//! per layer RMSNorm → Q/K/V → RoPE → attention → output projection → residual, RMSNorm →
//! SwiGLU → down projection → residual; the final RMSNorm), keeping on the device what the
//! backward needs — the same set the CPU keeps.

use nexus_kernels::cuda::{Gpu, GpuBuffer, TrainAttn};

use super::{t, CudaStudent};
use crate::engine::rope::RopeTable;
use crate::engine::EngineError;
use crate::student::check_batch;

/// One layer's kept activations (`crate::student::forward::LayerActs` on the device).
pub(crate) struct LayerActs {
    pub attn_rstd: GpuBuffer<f32>,
    pub q: GpuBuffer<f32>,
    pub k: GpuBuffer<f32>,
    pub v: GpuBuffer<f32>,
    pub lse: GpuBuffer<f32>,
    pub att: GpuBuffer<f32>,
    pub mid: GpuBuffer<f32>,
    pub ffn_rstd: GpuBuffer<f32>,
    pub gate: GpuBuffer<f32>,
    pub up: GpuBuffer<f32>,
}

impl LayerActs {
    fn alloc(g: &Gpu, cfg: &crate::student::StudentConfig, n: usize) -> Result<LayerActs, EngineError> {
        let (d, qd, kvd, ff) = (cfg.n_embd, cfg.q_dim(), cfg.kv_dim(), cfg.n_ff);
        Ok(LayerActs {
            attn_rstd: g.alloc(n)?,
            q: g.alloc(n * qd)?,
            k: g.alloc(n * kvd)?,
            v: g.alloc(n * kvd)?,
            lse: g.alloc(n * cfg.n_head)?,
            att: g.alloc(n * qd)?,
            mid: g.alloc(n * d)?,
            ffn_rstd: g.alloc(n)?,
            gate: g.alloc(n * ff)?,
            up: g.alloc(n * ff)?,
        })
    }
}

/// A batch's forward state on the device.
pub struct DeviceActs {
    /// The batch's distinct tokens, and where each occurs (`offsets` into `positions`,
    /// ascending): the embedding's backward adds each token's rows in token order.
    pub(crate) token_rows: GpuBuffer<i32>,
    pub(crate) token_offsets: GpuBuffer<i32>,
    pub(crate) token_positions: GpuBuffer<i32>,
    pub(crate) n_distinct: usize,
    pub(crate) tokens: GpuBuffer<i32>,
    pub(crate) n_seq: usize,
    pub(crate) seq_len: usize,
    pub(crate) embedded: GpuBuffer<f32>,
    pub(crate) layers: Vec<LayerActs>,
    pub(crate) residuals: Vec<GpuBuffer<f32>>,
    pub(crate) final_rstd: GpuBuffer<f32>,
    pub(crate) hidden: GpuBuffer<f32>,
    /// The RoPE tables of `seq_len` positions.
    pub(crate) cos: GpuBuffer<f32>,
    pub(crate) sin: GpuBuffer<f32>,
}

impl DeviceActs {
    pub fn n_tokens(&self) -> usize {
        self.n_seq * self.seq_len
    }

    pub fn n_seq(&self) -> usize {
        self.n_seq
    }

    pub fn seq_len(&self) -> usize {
        self.seq_len
    }

    /// The stream entering layer `l`.
    pub(crate) fn layer_input(&self, l: usize) -> u64 {
        if l == 0 {
            self.embedded.ptr()
        } else {
            self.residuals[l - 1].ptr()
        }
    }

    pub(crate) fn shape(&self, s: &CudaStudent) -> TrainAttn {
        TrainAttn {
            n_seq: self.n_seq,
            seq_len: self.seq_len,
            n_head: s.cfg.n_head,
            n_kv: s.cfg.n_head_kv,
            head_dim: s.cfg.head_dim,
            gemm: s.gemm_attention.then_some(s.precision),
        }
    }
}

impl CudaStudent {
    /// Runs the student on `n_seq` equal-length sequences laid end to end in `tokens`.
    pub fn forward(&self, tokens: &[u32], n_seq: usize) -> Result<DeviceActs, EngineError> {
        self.run(tokens, n_seq, true)
    }

    /// The forward of a frozen model (the teacher): the residual streams and final hidden
    /// states only, every layer reusing one set of activation buffers; no backward from it.
    pub fn forward_frozen(&self, tokens: &[u32], n_seq: usize) -> Result<DeviceActs, EngineError> {
        self.run(tokens, n_seq, false)
    }

    fn run(&self, tokens: &[u32], n_seq: usize, keep: bool) -> Result<DeviceActs, EngineError> {
        let cfg = &self.cfg;
        let seq_len = check_batch(cfg, tokens, n_seq)?;
        let (n, d, ff) = (tokens.len(), cfg.n_embd, cfg.n_ff);
        let g = &self.gpu;
        // No free-memory check up front: the memory pool keeps what earlier steps freed, which
        // the driver reports as used, so from the second step on it would refuse batches that
        // fit. An allocation that does not fit fails with the sizes (CudaError::OutOfMemory).
        let rope = RopeTable::new(cfg.head_dim, cfg.rope_base, seq_len);
        let (cos, sin) = rope.tables();
        let ids: Vec<i32> = tokens.iter().map(|&t| t as i32).collect();
        let mut order: Vec<i32> = (0..n as i32).collect();
        order.sort_by_key(|&p| (tokens[p as usize], p));
        let (mut rows, mut offsets) = (Vec::new(), Vec::new());
        for (k, &p) in order.iter().enumerate() {
            if rows.last() != Some(&ids[p as usize]) {
                rows.push(ids[p as usize]);
                offsets.push(k as i32);
            }
        }
        offsets.push(n as i32);
        let mut a = DeviceActs {
            n_distinct: rows.len(),
            token_rows: g.upload(&rows)?,
            token_offsets: g.upload(&offsets)?,
            token_positions: g.upload(&order)?,
            tokens: g.upload(&ids)?,
            n_seq,
            seq_len,
            embedded: g.alloc(n * d)?,
            layers: Vec::with_capacity(cfg.n_layer),
            residuals: Vec::with_capacity(cfg.n_layer),
            final_rstd: g.alloc(n)?,
            hidden: g.alloc(n * d)?,
            cos: g.upload(cos)?,
            sin: g.upload(sin)?,
        };
        let (embed, norm, _) = self.ends();
        g.tr_embed(self.at(&self.params, embed), a.tokens.ptr(), n, d, a.embedded.ptr())?;
        let xn = g.alloc::<f32>(n * d)?;
        let h = g.alloc::<f32>(n * ff)?;
        let mut scratch = None;
        for l in 0..cfg.n_layer {
            let acts = match scratch.take() {
                Some(acts) => acts,
                None => LayerActs::alloc(g, cfg, n)?,
            };
            let out = g.alloc::<f32>(n * d)?;
            self.layer_forward(g, l, &a, a.layer_input(l), &acts, out.ptr(), (xn.ptr(), h.ptr()))?;
            a.residuals.push(out);
            match keep {
                true => a.layers.push(acts),
                false => scratch = Some(acts),
            }
        }
        let last = a.residuals[cfg.n_layer - 1].ptr();
        g.tr_rmsnorm(last, self.at(&self.params, norm), a.final_rstd.ptr(), n, d, cfg.rms_eps, true, a.hidden.ptr())?;
        Ok(a)
    }

    /// One block on the stream at `x`, writing its activations into `acts` and its output
    /// stream to `out`. `xn` (`n × n_embd`) and `h` (`n × n_ff`) are scratch.
    #[allow(clippy::too_many_arguments)]
    fn layer_forward(&self, g: &Gpu, l: usize, a: &DeviceActs, x: u64, acts: &LayerActs, out: u64, (xn, h): (u64, u64)) -> Result<(), EngineError> {
        let cfg = &self.cfg;
        let (n, d, qd, kvd, ff) = (a.n_tokens(), cfg.n_embd, cfg.q_dim(), cfg.kv_dim(), cfg.n_ff);
        let w = |j| self.layer_w(l, j);
        let (q, k, v) = (acts.q.ptr(), acts.k.ptr(), acts.v.ptr());

        g.tr_rmsnorm(x, w(t::ATTN_NORM), acts.attn_rstd.ptr(), n, d, cfg.rms_eps, true, xn)?;
        self.linear(xn, w(t::WQ), n, d, qd, q, false)?;
        self.linear(xn, w(t::WK), n, d, kvd, k, false)?;
        self.linear(xn, w(t::WV), n, d, kvd, v, false)?;
        g.tr_rope(q, a.cos.ptr(), a.sin.ptr(), n, qd, cfg.head_dim, a.seq_len, 1.0)?;
        g.tr_rope(k, a.cos.ptr(), a.sin.ptr(), n, kvd, cfg.head_dim, a.seq_len, 1.0)?;
        g.tr_attn_fwd(&a.shape(self), (q, k, v), acts.att.ptr(), acts.lse.ptr())?;
        g.copy_f32(x, acts.mid.ptr(), n * d)?;
        self.linear(acts.att.ptr(), w(t::WO), n, qd, d, acts.mid.ptr(), true)?;

        g.tr_rmsnorm(acts.mid.ptr(), w(t::FFN_NORM), acts.ffn_rstd.ptr(), n, d, cfg.rms_eps, true, xn)?;
        self.linear(xn, w(t::W_GATE), n, d, ff, acts.gate.ptr(), false)?;
        self.linear(xn, w(t::W_UP), n, d, ff, acts.up.ptr(), false)?;
        g.tr_swiglu(acts.gate.ptr(), acts.up.ptr(), n * ff, h)?;
        g.copy_f32(acts.mid.ptr(), out, n * d)?;
        self.linear(h, w(t::W_DOWN), n, ff, d, out, true)?;
        Ok(())
    }

    /// The residual stream after layer `l` (for anchoring), copied to the host.
    pub fn residual(&self, a: &DeviceActs, l: usize) -> Result<Vec<f32>, EngineError> {
        let r = a.residuals.get(l).ok_or_else(|| EngineError::Invalid(format!("no layer {l} in the student")))?;
        Ok(self.gpu.read(r, r.len())?)
    }

    /// The final normed hidden states, copied to the host.
    pub fn hidden(&self, a: &DeviceActs) -> Result<Vec<f32>, EngineError> {
        Ok(self.gpu.read(&a.hidden, a.hidden.len())?)
    }
}
