//! Prompt processing on the GPU: the prompt goes through the layers in chunks of up to
//! `PREFILL_CHUNK` tokens; every projection is one cuBLAS f16 GEMM over the weight dequantized
//! into a reused f16 scratch (or, for Q8_0 weights with `set_int8_gemm`, our int8 GEMM over
//! the weight as it is), attention is causal over the cache the chunk has just filled. Only the logits asked for are computed, by the decode path's head mat-vec.

use half::f16;
use nexus_kernels::cuda::{AttnPrefill, CudaError, DeviceWeight, GpuBuffer, MatvecMode};
use nexus_kernels::GgmlType;

use super::{gpu_err, CudaModel};
use crate::model::{Logits, ModelError};

/// Tokens per chunk: enough to make the GEMMs compute-bound, small enough for modest scratch.
pub(super) const PREFILL_CHUNK: usize = 512;
/// Largest slice of a weight dequantized at once (f16 elements): 128 MiB of scratch.
const DEQUANT_ELEMS: usize = 64 << 20;

/// Activations of one chunk, `[chunk][width]` row-major.
pub(super) struct PrefillScratch {
    tokens: GpuBuffer<i32>,
    x: GpuBuffer<f32>,
    q: GpuBuffer<f32>,
    k: GpuBuffer<f32>,
    v: GpuBuffer<f32>,
    attn: GpuBuffer<f32>,
    gate: GpuBuffer<f32>,
    up: GpuBuffer<f32>,
    /// f16 input of the next GEMM (normed x, attention output or SwiGLU output).
    x16: GpuBuffer<f16>,
    /// A weight, or a slice of its rows, dequantized to f16.
    w16: GpuBuffer<f16>,
    /// `s·A·x` of the chunk's tokens for a projection with LoRA, f32 and as the next GEMM's
    /// f16 input (`[chunk][rank]`, the largest rank attached).
    lora_t: GpuBuffer<f32>,
    lora_t16: GpuBuffer<f16>,
    /// x16 as 8-bit values and their per-32 scales, for the int8 GEMM (`set_int8_gemm`); a
    /// single element when it is off.
    xq: GpuBuffer<u8>,
    xd: GpuBuffer<f32>,
}

impl CudaModel {
    fn prefill_scratch(&mut self) -> Result<&PrefillScratch, ModelError> {
        if self.prefill.is_none() {
            let c = &self.config;
            let n = PREFILL_CHUNK.min(self.n_ctx);
            let widest = c.n_embd.max(c.q_dim()).max(c.n_ff);
            // At least one row of the widest matrix fits, so `project` can always make progress.
            let largest = self
                .layers
                .iter()
                .flat_map(|l| [&l.wq, &l.wk, &l.wv, &l.wo, &l.w_gate, &l.w_up, &l.w_down])
                .map(|w| w.rows * w.cols)
                .max()
                .unwrap_or(0)
                .min(DEQUANT_ELEMS.max(widest));
            let rank = self.layers.iter().flat_map(|l| l.mats()).chain([&self.output]).filter_map(|w| w.lora.as_ref()).map(|l| l.rank).max().unwrap_or(0);
            let g = &self.gpu;
            let f32s = |len: usize| g.alloc::<f32>(n * len).map_err(gpu_err);
            self.prefill = Some(PrefillScratch {
                tokens: g.alloc::<i32>(n).map_err(gpu_err)?,
                x: f32s(c.n_embd)?,
                q: f32s(c.q_dim())?,
                k: f32s(c.kv_dim())?,
                v: f32s(c.kv_dim())?,
                attn: f32s(c.q_dim())?,
                gate: f32s(c.n_ff)?,
                up: f32s(c.n_ff)?,
                x16: g.alloc::<f16>(n * widest).map_err(gpu_err)?,
                w16: g.alloc::<f16>(largest).map_err(gpu_err)?,
                lora_t: f32s(rank)?,
                lora_t16: g.alloc::<f16>(n * rank).map_err(gpu_err)?,
                // Only a model that prompts through the int8 GEMM needs these (`set_int8_gemm`
                // drops the scratch, so turning it on later allocates them).
                xq: g.alloc::<u8>(if self.int8_gemm { n * widest } else { 0 }).map_err(gpu_err)?,
                xd: f32s(if self.int8_gemm { widest.div_ceil(32) } else { 0 })?,
            });
        }
        Ok(self.prefill.as_ref().expect("just created"))
    }

    /// Runs `tokens` (already checked) after the cache; returns the logits asked for.
    pub(super) fn prefill(&mut self, tokens: &[u32], logits: Logits) -> Result<Vec<f32>, ModelError> {
        let n_vocab = self.config.n_vocab;
        let mut out = Vec::new();
        for chunk in tokens.chunks(PREFILL_CHUNK.min(self.n_ctx)) {
            self.prefill_scratch()?;
            let ids: Vec<i32> = chunk.iter().map(|&t| t as i32).collect();
            let p = self.prefill.as_mut().expect("allocated above");
            self.gpu.write(&mut p.tokens, &ids).map_err(gpu_err)?;
            self.gpu.write(&mut self.s.state, &[0, self.len as i32]).map_err(gpu_err)?;
            self.record_chunk(chunk.len()).map_err(gpu_err)?;
            let last_chunk = chunk.as_ptr_range().end == tokens.as_ptr_range().end;
            let rows: Vec<usize> = match logits {
                Logits::All => (0..chunk.len()).collect(),
                Logits::Last if last_chunk => vec![chunk.len() - 1],
                Logits::Last | Logits::None => Vec::new(),
            };
            for t in rows {
                self.head_of_row(t).map_err(gpu_err)?;
                out.extend(self.gpu.read(&self.s.logits, n_vocab).map_err(gpu_err)?);
            }
            self.len += chunk.len();
        }
        self.gpu.sync().map_err(gpu_err)?;
        Ok(out)
    }

    /// The layers over the `n` tokens of the chunk, in the order of the architecture.
    fn record_chunk(&self, n: usize) -> Result<(), CudaError> {
        let (c, g, s) = (&self.config, &self.gpu, &self.s);
        let p = self.prefill.as_ref().expect("allocated by prefill");
        g.embed_batch(&self.embd, p.tokens.ptr(), n, p.x.ptr())?;
        for (l, layer) in self.layers.iter().enumerate() {
            // Attention block.
            g.rmsnorm_f16(p.x.ptr(), layer.attn_norm.ptr(), p.x16.ptr(), c.n_embd, n, c.rms_eps)?;
            self.project(&layer.wq, p.x16.ptr(), p.q.ptr(), n, false)?;
            self.project(&layer.wk, p.x16.ptr(), p.k.ptr(), n, false)?;
            self.project(&layer.wv, p.x16.ptr(), p.v.ptr(), n, false)?;
            self.store_kv(l, p.q.ptr(), p.k.ptr(), p.v.ptr(), n)?;
            let ((kc, ks), (vc, vs)) = (self.k_cache.layer(l), self.v_cache.layer(l));
            g.attn_prefill(&AttnPrefill {
                q: p.q.ptr(),
                k_cache: kc,
                v_cache: vc,
                k_scales: ks,
                v_scales: vs,
                out: p.attn.ptr(),
                state: s.state.ptr(),
                scale: 1.0 / (c.head_dim as f32).sqrt(),
                n_head: c.n_head,
                n_kv: c.n_head_kv,
                hd: c.head_dim,
                n_tok: n,
            })?;
            g.to_f16(p.attn.ptr(), p.x16.ptr(), n * c.q_dim())?;
            self.project(&layer.wo, p.x16.ptr(), p.x.ptr(), n, true)?;

            // Feed-forward block (SwiGLU).
            g.rmsnorm_f16(p.x.ptr(), layer.ffn_norm.ptr(), p.x16.ptr(), c.n_embd, n, c.rms_eps)?;
            self.project(&layer.w_gate, p.x16.ptr(), p.gate.ptr(), n, false)?;
            self.project(&layer.w_up, p.x16.ptr(), p.up.ptr(), n, false)?;
            g.swiglu_f16(p.gate.ptr(), p.up.ptr(), p.x16.ptr(), n * c.n_ff)?;
            self.project(&layer.w_down, p.x16.ptr(), p.x.ptr(), n, true)?;
        }
        Ok(())
    }

    /// `y (= or +=) W·x (+ bias)` for `n` tokens through the f16 scratch, a slice of rows at a
    /// time for weights larger than the scratch.
    fn project(&self, w: &DeviceWeight, x16: u64, y: u64, n: usize, accumulate: bool) -> Result<(), CudaError> {
        let p = self.prefill.as_ref().expect("allocated by prefill");
        let g = &self.gpu;
        if self.int8_gemm && w.ty == GgmlType::Q8_0 && g.has_int8_mma() {
            g.quantize_q8_rows(x16, p.xq.ptr(), p.xd.ptr(), n, w.cols)?;
            g.mmq_q8_0(w, p.xq.ptr(), p.xd.ptr(), y, n, w.rows, accumulate)?;
            if let Some(b) = &w.bias {
                g.add_bias(y, b.ptr(), w.rows, n)?;
            }
            return g.lora_gemm(w, x16, y, n, p.lora_t.ptr(), p.lora_t16.ptr());
        }
        let rows_per = (p.w16.len() / w.cols).clamp(1, w.rows);
        let mut r0 = 0;
        if let Some(rows) = w.f16_rows() {
            // Already the GEMM's input type: no copy through the scratch.
            g.gemm_f16(rows, x16, y, w.rows, w.cols, n, w.rows, accumulate)?;
            r0 = w.rows;
        }
        while r0 < w.rows {
            let nr = rows_per.min(w.rows - r0);
            g.dequant_f16(w, r0, nr, p.w16.ptr())?;
            g.gemm_f16(p.w16.ptr(), x16, y + (r0 * 4) as u64, nr, w.cols, n, w.rows, accumulate)?;
            r0 += nr;
        }
        if let Some(b) = &w.bias {
            g.add_bias(y, b.ptr(), w.rows, n)?;
        }
        g.lora_gemm(w, x16, y, n, p.lora_t.ptr(), p.lora_t16.ptr())
    }

    /// Logits of chunk row `t`: its hidden state through the final norm and the output head.
    fn head_of_row(&self, t: usize) -> Result<(), CudaError> {
        let (c, s) = (&self.config, &self.s);
        let p = self.prefill.as_ref().expect("allocated by prefill");
        self.gpu.copy_f32(p.x.ptr_at(t * c.n_embd), s.x.ptr(), c.n_embd)?;
        self.projections(&[(&self.output, s.logits.ptr())], s.x.ptr(), Some(self.output_norm.ptr()), MatvecMode::Store)
    }
}
