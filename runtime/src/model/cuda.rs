//! The LLaMA-family forward pass on an NVIDIA GPU. Weights are uploaded once in the device
//! layout; the KV cache is f16 on the device, or Q8_0 when asked (`kv`). A decode step is one
//! captured CUDA graph (per bucket of attention splits): the token and position live in device
//! memory, so the host only writes them, replays the graph and reads the logits or the greedy
//! token.

use std::collections::HashMap;

use nexus_kernels::cuda::{
    top_k_len, ARGMAX_SCRATCH, AttnDecode, CudaError, DeviceWeight, Gpu, GpuBuffer, Graph, KvStore, MatvecJob, MatvecMode, QkvRole, QkvRope,
    RopeStore,
};

use super::{Linear, Logits, Model, ModelConfig, ModelError, RopeStyle};
use crate::kv_cache::{CacheTypes, KvType};
use kv::KvSide;

mod kv;
mod lora;
mod prefill;

/// Positions one attention block covers in a decode step.
const ATTN_SPLIT: usize = 256;

struct GpuLayer {
    attn_norm: GpuBuffer<f32>,
    wq: DeviceWeight,
    wk: DeviceWeight,
    wv: DeviceWeight,
    wo: DeviceWeight,
    ffn_norm: GpuBuffer<f32>,
    w_gate: DeviceWeight,
    w_up: DeviceWeight,
    w_down: DeviceWeight,
}

impl GpuLayer {
    fn mats(&self) -> [&DeviceWeight; 7] {
        [&self.wq, &self.wk, &self.wv, &self.wo, &self.w_gate, &self.w_up, &self.w_down]
    }
}

/// Activations of one decode step.
struct Scratch {
    x: GpuBuffer<f32>,
    q: GpuBuffer<f32>,
    k: GpuBuffer<f32>,
    v: GpuBuffer<f32>,
    attn: GpuBuffer<f32>,
    gate: GpuBuffer<f32>,
    up: GpuBuffer<f32>,
    logits: GpuBuffer<f32>,
    part: GpuBuffer<f32>,
    counter: GpuBuffer<i32>,
    argmax: GpuBuffer<f32>,
    /// Sampling candidates (`Gpu::top_k`): values and ids, for k up to `DEVICE_TOP_K_MAX`.
    top_vals: GpuBuffer<f32>,
    top_ids: GpuBuffer<i32>,
    /// [token, position] of the step.
    state: GpuBuffer<i32>,
}

pub struct CudaModel {
    pub config: ModelConfig,
    gpu: Gpu,
    embd: DeviceWeight,
    output: DeviceWeight,
    output_norm: GpuBuffer<f32>,
    layers: Vec<GpuLayer>,
    inv_freq: GpuBuffer<f64>,
    freq_scale: f32,
    k_cache: KvSide,
    v_cache: KvSide,
    n_ctx: usize,
    len: usize,
    s: Scratch,
    /// Decode graphs by number of attention splits, with or without the greedy pick.
    graphs: HashMap<(usize, bool), Graph>,
    weight_bytes: u64,
    /// Prompt-processing activations, allocated by the first prompt of two or more tokens.
    prefill: Option<prefill::PrefillScratch>,
    /// Whether prompts of two or more tokens take the batched path (see `set_batched_prompts`).
    batched_prompts: bool,
    /// RoPE and the KV store fused into the Q/K/V launch where the RoPE style allows
    /// (NEXUS_CUDA_FUSED_ROPE=0 keeps the separate `rope_store` launch, to compare).
    fused_rope: bool,
    /// Prompt projections over Q8_0 weights by the int8 GEMM instead of dequantize + cuBLAS
    /// (`set_int8_gemm`; NEXUS_CUDA_MMQ=1 at load).
    int8_gemm: bool,
}

fn gpu_err(e: CudaError) -> ModelError {
    ModelError::Gpu(e.to_string())
}

impl CudaModel {
    /// Uploads `model` to GPU `ordinal` with a KV cache of `n_ctx` positions stored as `types`
    /// says (f16 by default, or Q8_0), with the LoRA adapters attached to it at this moment
    /// (applied unmerged, as on the CPU; attaching or removing adapters later needs a new
    /// `load`).
    pub fn load(model: &Model, n_ctx: usize, ordinal: usize, types: CacheTypes) -> Result<Self, ModelError> {
        let c = model.config.clone();
        let (k_type, v_type) = types.on_cuda(c.head_dim)?;
        if n_ctx == 0 || n_ctx > c.n_ctx_train.max(1) * 4 {
            return Err(ModelError::Gpu(format!(
                "context of {n_ctx} positions requested; the model was trained for {}",
                c.n_ctx_train
            )));
        }
        let gpu = Gpu::open(ordinal).map_err(gpu_err)?;
        let linears = std::iter::once(&model.token_embd)
            .chain(model.layers.iter().flat_map(|l| [&l.wq, &l.wk, &l.wv, &l.wo, &l.w_gate, &l.w_up, &l.w_down]))
            .chain(std::iter::once(&model.output));
        let weight_bytes: usize = linears.map(|w| w.data().len()).sum::<usize>() + lora::bytes(model);
        let max_splits = n_ctx.div_ceil(ATTN_SPLIT).next_power_of_two();
        let cache_bytes =
            KvSide::bytes(k_type, c.n_layer, n_ctx, c.kv_dim()) + KvSide::bytes(v_type, c.n_layer, n_ctx, c.kv_dim());
        let scratch_bytes = 4 * (c.n_embd * 2 + c.q_dim() * 2 + c.kv_dim() * 2 + c.n_ff * 2 + c.n_vocab)
            + 4 * c.n_head * max_splits * (c.head_dim + 2);
        gpu.ensure_free(
            &format!("{} ({} MiB of weights, {} MiB of KV cache)", c.arch.name(), weight_bytes >> 20, cache_bytes >> 20),
            weight_bytes + cache_bytes + scratch_bytes,
        )
        .map_err(gpu_err)?;

        let up = |w: &Linear| -> Result<DeviceWeight, ModelError> {
            let dw = DeviceWeight::upload(&gpu, w.ty, w.rows, w.cols, w.data())
                .map_err(|e| ModelError::Gpu(format!("{}: {e}", w.name)))?;
            let dw = match w.bias() {
                Some(b) => dw.with_bias(&gpu, b).map_err(gpu_err)?,
                None => dw,
            };
            lora::attach(&gpu, w, dw)
        };
        let vec = |v: &[f32]| gpu.upload(v).map_err(gpu_err);
        let layers = model
            .layers
            .iter()
            .map(|l| {
                Ok(GpuLayer {
                    attn_norm: vec(&l.attn_norm)?,
                    wq: up(&l.wq)?,
                    wk: up(&l.wk)?,
                    wv: up(&l.wv)?,
                    wo: up(&l.wo)?,
                    ffn_norm: vec(&l.ffn_norm)?,
                    w_gate: up(&l.w_gate)?,
                    w_up: up(&l.w_up)?,
                    w_down: up(&l.w_down)?,
                })
            })
            .collect::<Result<Vec<_>, ModelError>>()?;
        let f32s = |n: usize| gpu.alloc::<f32>(n).map_err(gpu_err);
        let s = Scratch {
            x: f32s(c.n_embd)?,
            q: f32s(c.q_dim())?,
            k: f32s(c.kv_dim())?,
            v: f32s(c.kv_dim())?,
            attn: f32s(c.q_dim())?,
            gate: f32s(c.n_ff)?,
            up: f32s(c.n_ff)?,
            logits: f32s(c.n_vocab)?,
            part: f32s(c.n_head * max_splits * (c.head_dim + 2))?,
            counter: gpu.alloc::<i32>(c.n_head).map_err(gpu_err)?,
            argmax: f32s(ARGMAX_SCRATCH)?,
            top_vals: f32s(top_k_len(c.n_vocab, super::DEVICE_TOP_K_MAX))?,
            top_ids: gpu.alloc::<i32>(top_k_len(c.n_vocab, super::DEVICE_TOP_K_MAX)).map_err(gpu_err)?,
            state: gpu.alloc::<i32>(2).map_err(gpu_err)?,
        };
        Ok(CudaModel {
            embd: up(&model.token_embd)?,
            output: up(&model.output)?,
            output_norm: vec(&model.output_norm)?,
            inv_freq: gpu.upload(model.rope.inv_freq()).map_err(gpu_err)?,
            freq_scale: model.rope.freq_scale() as f32,
            k_cache: KvSide::alloc(&gpu, k_type, c.n_layer, n_ctx, c.kv_dim()).map_err(gpu_err)?,
            v_cache: KvSide::alloc(&gpu, v_type, c.n_layer, n_ctx, c.kv_dim()).map_err(gpu_err)?,
            layers,
            n_ctx,
            len: 0,
            s,
            graphs: HashMap::new(),
            weight_bytes: model.weight_bytes_per_token(),
            prefill: None,
            batched_prompts: std::env::var_os("NEXUS_CUDA_PREFILL").is_none_or(|v| v != "0"),
            fused_rope: std::env::var_os("NEXUS_CUDA_FUSED_ROPE").is_none_or(|v| v != "0"),
            int8_gemm: std::env::var_os("NEXUS_CUDA_MMQ").is_some_and(|v| v == "1"),
            config: c,
            gpu,
        })
    }

    pub fn device_name(&self) -> &str {
        &self.gpu.name
    }

    pub fn len(&self) -> usize {
        self.len
    }

    /// Measured device-to-device copy bandwidth, bytes/s.
    pub fn copy_bandwidth(&self) -> Result<f64, ModelError> {
        self.gpu.copy_bandwidth().map_err(gpu_err)
    }

    /// KV-cache bytes one decode step reads at `n_pos` positions.
    pub fn kv_bytes_per_token(&self, n_pos: usize) -> u64 {
        let c = &self.config;
        (c.n_layer * n_pos * (self.k_cache.ty.bytes(c.kv_dim()) + self.v_cache.ty.bytes(c.kv_dim()))) as u64
    }

    /// How keys and values are stored.
    pub fn cache_types(&self) -> (KvType, KvType) {
        (self.k_cache.ty, self.v_cache.ty)
    }

    /// Whether both sides are f16, which the Q/K/V launch can store itself (`QkvRope`).
    fn cache_is_f16(&self) -> bool {
        self.k_cache.ty == KvType::F16 && self.v_cache.ty == KvType::F16
    }

    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    pub fn capacity(&self) -> usize {
        self.n_ctx
    }

    /// Forgets positions from `len` on; they are overwritten by the next tokens.
    pub fn truncate(&mut self, len: usize) {
        self.len = self.len.min(len);
    }

    pub fn weight_bytes_per_token(&self) -> u64 {
        self.weight_bytes
    }

    /// Sends prompts of two or more tokens through the batched path (the default) or, with
    /// false, token by token through the decode graph: the same numbers a generation step
    /// computes, to compare or to bisect. `NEXUS_CUDA_PREFILL=0` sets false at load.
    pub fn set_batched_prompts(&mut self, on: bool) {
        self.batched_prompts = on;
    }

    /// Prompt projections over Q8_0 weights by our int8 tensor-core GEMM (on sm_80 and later)
    /// rather than dequantize-to-f16 + cuBLAS; `NEXUS_CUDA_MMQ=1` sets it at load. Off by
    /// default until it is measured faster (docs/CUDA.md).
    pub fn set_int8_gemm(&mut self, on: bool) {
        if on && !self.int8_gemm {
            // The prompt scratch was sized without the GEMM's 8-bit activations.
            self.prefill = None;
        }
        self.int8_gemm = on;
    }

    /// Runs `tokens` after what the cache holds, like [`Model::forward`]; two or more tokens
    /// take the batched prompt path unless `set_batched_prompts(false)`.
    pub fn forward(&mut self, tokens: &[u32], logits: Logits) -> Result<Vec<f32>, ModelError> {
        self.check(tokens)?;
        if tokens.len() >= 2 && self.batched_prompts {
            return self.prefill(tokens, logits);
        }
        self.forward_stepped(tokens, logits)
    }

    /// Every row's logits through the decode graph, one token at a time: bitwise what
    /// generating those tokens gives (the batched prompt path rounds through f16 GEMMs, which
    /// can flip a near-tie), so speculative decoding's checks agree with decoding alone.
    pub fn forward_rowwise(&mut self, tokens: &[u32]) -> Result<Vec<f32>, ModelError> {
        self.check(tokens)?;
        self.forward_stepped(tokens, Logits::All)
    }

    fn forward_stepped(&mut self, tokens: &[u32], logits: Logits) -> Result<Vec<f32>, ModelError> {
        let mut out = Vec::new();
        for (i, &t) in tokens.iter().enumerate() {
            let want = logits == Logits::All || (logits == Logits::Last && i + 1 == tokens.len());
            self.step(t, false)?;
            if want {
                out.extend(self.gpu.read(&self.s.logits, self.config.n_vocab).map_err(gpu_err)?);
            }
        }
        Ok(out)
    }

    /// Greedy generation kept on the device: feeds `first`, then each argmax, `n` times, and
    /// returns the `n` tokens picked. Only the picked token crosses to the host per step.
    pub fn generate_greedy(&mut self, first: u32, n: usize) -> Result<Vec<u32>, ModelError> {
        self.check(&[first])?;
        if self.len + n > self.n_ctx {
            return Err(ModelError::ContextOverflow { needed: self.len + n, capacity: self.n_ctx });
        }
        let mut out = Vec::with_capacity(n);
        let mut tok = first;
        for _ in 0..n {
            tok = self.step_greedy(tok)?;
            out.push(tok);
        }
        Ok(out)
    }

    /// Runs `token` at the next position and returns the argmax of the logits it gives (lowest
    /// id on ties); only that id crosses to the host.
    pub fn step_greedy(&mut self, token: u32) -> Result<u32, ModelError> {
        self.check(&[token])?;
        self.step(token, true)?;
        let st = self.gpu.read(&self.s.state, 1).map_err(gpu_err)?;
        Ok(st[0] as u32)
    }

    /// Runs `token` at the next position and returns candidates (id, logit) for a sampler that
    /// keeps the `k` most likely tokens: each 1024-logit slice's `k` best, picked on the device
    /// (`Gpu::top_k`), so a few kilobytes cross to the host instead of the logits. `k` is at
    /// most [`super::DEVICE_TOP_K_MAX`].
    pub fn step_top_k(&mut self, token: u32, k: usize) -> Result<Vec<(u32, f32)>, ModelError> {
        if k == 0 || k > super::DEVICE_TOP_K_MAX {
            return Err(ModelError::Gpu(format!("top-k on the GPU takes 1 ≤ k ≤ {}, not {k}", super::DEVICE_TOP_K_MAX)));
        }
        self.check(&[token])?;
        self.step(token, false)?;
        let n = self.config.n_vocab;
        let len = top_k_len(n, k);
        self.gpu.top_k(self.s.logits.ptr(), n, k, self.s.top_vals.ptr(), self.s.top_ids.ptr()).map_err(gpu_err)?;
        let vals = self.gpu.read(&self.s.top_vals, len).map_err(gpu_err)?;
        let ids = self.gpu.read(&self.s.top_ids, len).map_err(gpu_err)?;
        // Id −1 pads a slice shorter than k.
        Ok(ids.iter().zip(vals).filter(|(&id, _)| id >= 0).map(|(&id, v)| (id as u32, v)).collect())
    }

    fn check(&self, tokens: &[u32]) -> Result<(), ModelError> {
        let needed = self.len + tokens.len();
        if needed > self.n_ctx {
            return Err(ModelError::ContextOverflow { needed, capacity: self.n_ctx });
        }
        if let Some(&id) = tokens.iter().find(|&&id| id as usize >= self.config.n_vocab) {
            return Err(ModelError::BadToken { id, n_vocab: self.config.n_vocab });
        }
        Ok(())
    }

    /// One token through the model at position `self.len`.
    fn step(&mut self, token: u32, greedy: bool) -> Result<(), ModelError> {
        let splits = (self.len + 1).div_ceil(ATTN_SPLIT).next_power_of_two();
        self.gpu.write(&mut self.s.state, &[token as i32, self.len as i32]).map_err(gpu_err)?;
        if self.gpu.sync_each() {
            self.record_step(splits, greedy).map_err(gpu_err)?;
        } else {
            if !self.graphs.contains_key(&(splits, greedy)) {
                let graph = self.gpu.capture(|| self.record_step(splits, greedy)).map_err(gpu_err)?;
                self.graphs.insert((splits, greedy), graph);
            }
            self.gpu.replay(&self.graphs[&(splits, greedy)]).map_err(gpu_err)?;
        }
        self.len += 1;
        Ok(())
    }

    /// The launches of one decode step, in the order of the architecture.
    fn record_step(&self, splits: usize, greedy: bool) -> Result<(), CudaError> {
        let (c, g, s) = (&self.config, &self.gpu, &self.s);
        g.embed(&self.embd, s.state.ptr(), s.x.ptr())?;
        for (l, layer) in self.layers.iter().enumerate() {
            // Attention block: RMSNorm fused into the Q/K/V products; with the normal RoPE
            // style (adjacent rotary pairs) and an f16 cache the rotation and the KV-cache
            // store are too (a Q8_0 block's scale needs all 32 values: kv_store_q8).
            let ((kc, ks), (vc, vs)) = (self.k_cache.layer(l), self.v_cache.layer(l));
            let qkv = [(&layer.wq, s.q.ptr()), (&layer.wk, s.k.ptr()), (&layer.wv, s.v.ptr())];
            if c.rope_style == RopeStyle::Normal && self.fused_rope && self.cache_is_f16() {
                let rope = QkvRope {
                    roles: [QkvRole::Q, QkvRole::K, QkvRole::V],
                    k_cache: kc,
                    v_cache: vc,
                    inv_freq: self.inv_freq.ptr(),
                    state: s.state.ptr(),
                    freq_scale: self.freq_scale,
                    hd: c.head_dim,
                    rope_dim: c.rope_dim,
                    kv_dim: c.kv_dim(),
                };
                self.projections(&qkv, s.x.ptr(), Some(layer.attn_norm.ptr()), MatvecMode::QkvRope(rope))?;
            } else {
                self.projections(&qkv, s.x.ptr(), Some(layer.attn_norm.ptr()), MatvecMode::Store)?;
                self.store_kv(l, s.q.ptr(), s.k.ptr(), s.v.ptr(), 1)?;
            }
            g.attn_decode(
                &AttnDecode {
                    q: s.q.ptr(),
                    k_cache: kc,
                    v_cache: vc,
                    k_scales: ks,
                    v_scales: vs,
                    out: s.attn.ptr(),
                    part: s.part.ptr(),
                    counter: s.counter.ptr(),
                    state: s.state.ptr(),
                    scale: 1.0 / (c.head_dim as f32).sqrt(),
                    n_head: c.n_head,
                    n_kv: c.n_head_kv,
                    hd: c.head_dim,
                    split: ATTN_SPLIT,
                },
                splits,
            )?;
            // Output projection with the residual add fused.
            self.projections(&[(&layer.wo, s.x.ptr())], s.attn.ptr(), None, MatvecMode::Add)?;

            // Feed-forward block (SwiGLU), RMSNorm fused into gate/up.
            if layer.w_gate.ty == layer.w_up.ty {
                g.matvec(&MatvecJob {
                    mats: vec![(&layer.w_gate, s.gate.ptr()), (&layer.w_up, s.up.ptr())],
                    x: s.x.ptr(),
                    norm: Some(layer.ffn_norm.ptr()),
                    eps: c.rms_eps,
                    mode: MatvecMode::SwiGlu,
                })?;
            } else {
                self.projections(&[(&layer.w_gate, s.gate.ptr())], s.x.ptr(), Some(layer.ffn_norm.ptr()), MatvecMode::Store)?;
                self.projections(&[(&layer.w_up, s.up.ptr())], s.x.ptr(), Some(layer.ffn_norm.ptr()), MatvecMode::Store)?;
                g.swiglu(s.gate.ptr(), s.up.ptr(), c.n_ff)?;
            }
            self.projections(&[(&layer.w_down, s.x.ptr())], s.gate.ptr(), None, MatvecMode::Add)?;
        }
        self.projections(&[(&self.output, s.logits.ptr())], s.x.ptr(), Some(self.output_norm.ptr()), MatvecMode::Store)?;
        if greedy {
            g.argmax(s.logits.ptr(), c.n_vocab, s.state.ptr(), s.argmax.ptr())?;
        }
        Ok(())
    }

    /// RoPE on `n_tok` tokens' q (in place) and k, then k and v into layer `l`'s cache at the
    /// step's position: f16 sides by `rope_store` itself, Q8_0 sides by `kv_store_q8` after it.
    fn store_kv(&self, l: usize, q: u64, k: u64, v: u64, n_tok: usize) -> Result<(), CudaError> {
        let c = &self.config;
        let ((kc, ks), (vc, vs)) = (self.k_cache.layer(l), self.v_cache.layer(l));
        self.gpu.rope_store(&RopeStore {
            q,
            k,
            v,
            k_cache: kc,
            v_cache: vc,
            k_scales: ks,
            v_scales: vs,
            inv_freq: self.inv_freq.ptr(),
            state: self.s.state.ptr(),
            freq_scale: self.freq_scale,
            n_head: c.n_head,
            n_kv: c.n_head_kv,
            hd: c.head_dim,
            rope_dim: c.rope_dim,
            neox: c.rope_style == RopeStyle::Neox,
            n_tok,
        })?;
        let state = self.s.state.ptr();
        let store = KvStore { k, v, k_cache: kc, k_scales: ks, v_cache: vc, v_scales: vs, state, kv_dim: c.kv_dim(), n_tok };
        self.gpu.kv_store_q8(&store)
    }

    /// Products that read the same x: one launch per run of matrices of the same type.
    fn projections(&self, mats: &[(&DeviceWeight, u64)], x: u64, norm: Option<u64>, mode: MatvecMode) -> Result<(), CudaError> {
        let mut i = 0;
        while i < mats.len() {
            let mut j = i + 1;
            while j < mats.len() && mats[j].0.ty == mats[i].0.ty && mats[j].0.cols == mats[i].0.cols {
                j += 1;
            }
            let mode = match mode {
                MatvecMode::QkvRope(r) => MatvecMode::QkvRope(r.roles_of(i..j)),
                m => m,
            };
            self.gpu.matvec(&MatvecJob { mats: mats[i..j].to_vec(), x, norm, eps: self.config.rms_eps, mode })?;
            i = j;
        }
        Ok(())
    }
}
