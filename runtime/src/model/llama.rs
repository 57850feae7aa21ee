//! The LLaMA-family forward pass (llama, qwen2): embedding → per layer [RMSNorm → GQA
//! attention with RoPE → residual → RMSNorm → SwiGLU FFN → residual] → RMSNorm → output head.

use std::path::Path;
use std::sync::Arc;

use nexus_kernels::ggml_order::{self, PositionSum};
use nexus_kernels::ops::{add_inplace, axpy_row, rms_norm};
use nexus_kernels::RowDot;
use rayon::prelude::*;

use super::rope::Rope;
use super::weights::load_vector;
use super::{Batching, LayerWeights, Linear, ModelConfig, ModelError};
use crate::gguf::GgufFile;
use crate::kv_cache::{CacheTypes, KvCache, KvCacheError, KvRows};

/// Which positions' logits a forward call returns.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Logits {
    /// Only the last token's (generation).
    Last,
    /// Every token's, `n × n_vocab` (scoring, tests).
    All,
    /// None: the caller only wants what a [`Probe`] sees (the final hidden states, say).
    None,
}

/// Sees, and may change, the activations of a forward pass: profiling and distillation read
/// the teacher's residual stream through it and ablate heads or blocks by editing what it is
/// handed. Rows are token-major (`n` rows of the stated width); every method defaults to
/// doing nothing, so a probe implements only what it needs.
pub trait Probe {
    /// The attention output of layer `layer` before the output projection, `n × q_dim`
    /// (head `h` of token `t` at `t·q_dim + h·head_dim`).
    fn attn_heads(&mut self, _layer: usize, _heads: &mut [f32]) {}
    /// The attention block's contribution to the residual stream, `n × n_embd`.
    fn attn_out(&mut self, _layer: usize, _out: &mut [f32]) {}
    /// The FFN's inner activation `silu(gate) · up`, `n × n_ff`.
    fn ffn_inner(&mut self, _layer: usize, _act: &mut [f32]) {}
    /// The FFN block's contribution to the residual stream, `n × n_embd`.
    fn ffn_out(&mut self, _layer: usize, _out: &mut [f32]) {}
    /// The residual stream after layer `layer`, `n × n_embd`.
    fn residual(&mut self, _layer: usize, _x: &[f32]) {}
    /// The final RMS-normed hidden states of the rows whose logits are computed (all rows
    /// under [`Logits::All`] and [`Logits::None`]), `rows × n_embd`.
    fn final_hidden(&mut self, _normed: &[f32]) {}
    /// Whether the pass may end after layer `layer`'s [`Probe::residual`]: a router reads one
    /// layer's residual stream and nothing later. The cache then holds layers `0..=layer` of
    /// these positions (it may be made with `layer + 1` layers) and is not to be decoded from.
    fn stop_after(&self, _layer: usize) -> bool {
        false
    }
}

/// The probe of a plain forward pass.
struct NoProbe;
impl Probe for NoProbe {}

/// Tokens processed per pass during prefill: bounds the activation buffers for long prompts.
const MAX_BATCH: usize = 512;

pub struct Model {
    pub config: ModelConfig,
    file: Arc<GgufFile>,
    pub(crate) token_embd: Linear,
    pub(crate) layers: Vec<LayerWeights>,
    pub(crate) output_norm: Vec<f32>,
    pub(crate) output: Linear,
    pub(crate) rope: Rope,
}

impl Model {
    pub fn load(path: impl AsRef<Path>) -> Result<Self, ModelError> {
        Self::from_file(Arc::new(GgufFile::open(path)?))
    }

    pub fn from_file(file: Arc<GgufFile>) -> Result<Self, ModelError> {
        let cfg = ModelConfig::from_gguf(&file)?;
        let token_embd = Linear::load(&file, "token_embd.weight", cfg.n_embd, cfg.n_vocab)?;
        // Tied embeddings: without `output.weight` the head reuses the embedding matrix.
        let output = if file.tensor_info("output.weight").is_some() {
            Linear::load(&file, "output.weight", cfg.n_embd, cfg.n_vocab)?
        } else {
            Linear::load(&file, "token_embd.weight", cfg.n_embd, cfg.n_vocab)?.looked_up_too()
        };
        let freq_factors = match file.tensor_info("rope_freqs.weight") {
            Some(_) => Some(load_vector(&file, "rope_freqs.weight", cfg.rope_dim / 2)?),
            None => None,
        };
        let layers = (0..cfg.n_layer).map(|i| LayerWeights::load(&file, &cfg, i)).collect::<Result<_, _>>()?;
        Ok(Model {
            rope: Rope::new(&cfg, freq_factors.as_deref()),
            output_norm: load_vector(&file, "output_norm.weight", cfg.n_embd)?,
            config: cfg,
            file,
            token_embd,
            layers,
            output,
        })
    }

    pub fn file(&self) -> &Arc<GgufFile> {
        &self.file
    }

    pub fn new_cache(&self, n_ctx: usize) -> KvCache {
        KvCache::new(self.config.n_layer, self.config.kv_dim(), n_ctx)
    }

    /// A CPU cache storing keys and values as `types` says (f32 where it says nothing).
    pub fn new_cache_typed(&self, n_ctx: usize, types: CacheTypes) -> Result<KvCache, KvCacheError> {
        let (k, v) = types.on_cpu();
        let c = &self.config;
        KvCache::with_types(c.n_layer, c.kv_dim(), c.head_dim, n_ctx, k, v)
    }

    /// Bytes of weights read to produce one token (the memory-bandwidth roofline's numerator).
    pub fn weight_bytes_per_token(&self) -> u64 {
        let layer_bytes: u64 = self
            .layers
            .iter()
            .flat_map(|l| [&l.wq, &l.wk, &l.wv, &l.wo, &l.w_gate, &l.w_up, &l.w_down])
            .map(|w| w.data().len() as u64)
            .sum();
        layer_bytes + self.output.data().len() as u64
    }

    /// Runs `tokens` at the positions following what `cache` holds, appending them to it.
    pub fn forward(&self, tokens: &[u32], cache: &mut KvCache, logits: Logits) -> Result<Vec<f32>, ModelError> {
        self.forward_probed(tokens, cache, logits, &mut NoProbe)
    }

    /// [`Model::forward`] with a [`Probe`] that sees (and may edit) the activations of every
    /// layer, in order, for each pass of at most 512 tokens.
    pub fn forward_probed(
        &self,
        tokens: &[u32],
        cache: &mut KvCache,
        logits: Logits,
        probe: &mut (dyn Probe + Send),
    ) -> Result<Vec<f32>, ModelError> {
        self.run(tokens, cache, logits, probe, Batching::Tiled)
    }

    /// Runs `tokens` like [`Model::forward`] with [`Logits::All`], but every projection computes
    /// each token's row with the single-token kernel, so row `t` of the logits is bitwise what
    /// decoding the tokens one at a time gives at that position. Speculative decoding verifies
    /// drafted tokens with it: its greedy output then equals the model's own.
    pub fn forward_rowwise(&self, tokens: &[u32], cache: &mut KvCache) -> Result<Vec<f32>, ModelError> {
        self.run(tokens, cache, Logits::All, &mut NoProbe, Batching::RowWise)
    }

    fn run(
        &self,
        tokens: &[u32],
        cache: &mut KvCache,
        logits: Logits,
        probe: &mut (dyn Probe + Send),
        batching: Batching,
    ) -> Result<Vec<f32>, ModelError> {
        // Each token runs ~200 parallel kernels. From a thread outside the pool every one of
        // them is a cross-thread wake-up (measured: 40% of decode time); moved onto a pool
        // worker once, they become cheap fork-joins inside the pool.
        if rayon::current_thread_index().is_none() {
            return rayon::scope(|_| self.run(tokens, cache, logits, probe, batching));
        }
        let needed = cache.len() + tokens.len();
        if needed > cache.capacity() {
            return Err(ModelError::ContextOverflow { needed, capacity: cache.capacity() });
        }
        if let Some(&id) = tokens.iter().find(|&&id| id as usize >= self.config.n_vocab) {
            return Err(ModelError::BadToken { id, n_vocab: self.config.n_vocab });
        }
        let mut out = Vec::new();
        let n_chunks = tokens.len().div_ceil(MAX_BATCH);
        for (i, chunk) in tokens.chunks(MAX_BATCH).enumerate() {
            // Earlier chunks of a long prompt only fill the cache: skip their output head.
            let want = match logits {
                Logits::Last if i + 1 < n_chunks => None,
                other => Some(other),
            };
            out.extend(self.forward_batch(chunk, cache, want, probe, batching)?);
        }
        Ok(out)
    }

    fn forward_batch(
        &self,
        tokens: &[u32],
        cache: &mut KvCache,
        logits: Option<Logits>,
        probe: &mut (dyn Probe + Send),
        batching: Batching,
    ) -> Result<Vec<f32>, ModelError> {
        let c = &self.config;
        let (n, d) = (tokens.len(), c.n_embd);
        // Every projection of the pass, computed as `batching` says.
        let linear = |w: &Linear, x: &[f32], y: &mut [f32]| w.forward_with(batching, x, n, y);
        let pos0 = cache.len();

        let mut x = vec![0f32; n * d];
        for (row, &id) in x.chunks_exact_mut(d).zip(tokens) {
            self.token_embd.row(id as usize, row)?;
        }

        let mut xn = vec![0f32; n * d];
        let mut q = vec![0f32; n * c.q_dim()];
        let mut k = vec![0f32; n * c.kv_dim()];
        let mut v = vec![0f32; n * c.kv_dim()];
        let mut attn = vec![0f32; n * c.q_dim()];
        let mut proj = vec![0f32; n * d];
        let mut gate = vec![0f32; n * c.n_ff];
        let mut up = vec![0f32; n * c.n_ff];

        for (l, layer) in self.layers.iter().enumerate() {
            // Attention block.
            rms_norm_rows(&x, &layer.attn_norm, c.rms_eps, &mut xn);
            linear(&layer.wq, &xn, &mut q)?;
            linear(&layer.wk, &xn, &mut k)?;
            linear(&layer.wv, &xn, &mut v)?;
            for t in 0..n {
                self.rope.apply(&mut q[t * c.q_dim()..(t + 1) * c.q_dim()], c.head_dim, pos0 + t);
                self.rope.apply(&mut k[t * c.kv_dim()..(t + 1) * c.kv_dim()], c.head_dim, pos0 + t);
            }
            cache.store(l, pos0, &k, &v);
            let (keys, values) = cache.layer(l, pos0 + n);
            // llama.cpp sums a one-token batch's attention in another order than a longer one's.
            let order = if n == 1 || batching == Batching::RowWise { PositionSum::Single } else { PositionSum::Batch };
            attention(c, &q, keys, values, pos0, order, &mut attn);
            probe.attn_heads(l, &mut attn);
            linear(&layer.wo, &attn, &mut proj)?;
            probe.attn_out(l, &mut proj);
            add_inplace(&mut x, &proj);

            // Feed-forward block (SwiGLU).
            rms_norm_rows(&x, &layer.ffn_norm, c.rms_eps, &mut xn);
            linear(&layer.w_gate, &xn, &mut gate)?;
            linear(&layer.w_up, &xn, &mut up)?;
            ggml_order::swiglu(&mut gate, &up);
            probe.ffn_inner(l, &mut gate);
            linear(&layer.w_down, &gate, &mut proj)?;
            probe.ffn_out(l, &mut proj);
            add_inplace(&mut x, &proj);
            probe.residual(l, &x);
            if probe.stop_after(l) {
                cache.advance(n);
                return Ok(Vec::new());
            }
        }
        cache.advance(n);

        let rows = match logits {
            None => return Ok(Vec::new()),
            Some(Logits::All | Logits::None) => &x[..],
            Some(Logits::Last) => &x[(n - 1) * d..],
        };
        let n_out = rows.len() / d;
        let mut normed = vec![0f32; rows.len()];
        rms_norm_rows(rows, &self.output_norm, c.rms_eps, &mut normed);
        probe.final_hidden(&normed);
        if logits == Some(Logits::None) {
            return Ok(Vec::new());
        }
        let mut out = vec![0f32; n_out * c.n_vocab];
        self.output.forward_with(batching, &normed, n_out, &mut out)?;
        Ok(out)
    }
}

fn rms_norm_rows(x: &[f32], weight: &[f32], eps: f32, out: &mut [f32]) {
    let d = weight.len();
    for (xr, or) in x.chunks_exact(d).zip(out.chunks_exact_mut(d)) {
        rms_norm(xr, weight, eps, or);
    }
}

/// Causal grouped-query attention for `n` new tokens at positions `pos0..pos0+n`, reading
/// K/V of all positions so far. Query heads share KV heads in groups; K/V are never copied.
/// With an f32 cache, scores, softmax and the weighted sum of values round as llama.cpp's CPU
/// backend does (`ggml_order`), the sum in the order `order` of the batch llama.cpp would run.
/// With an f16 or Q8_0 cache, each score is the kernels' row dot (the query put in the row
/// type's activation format once, as a matvec does) and each value row is added into an f32
/// sum straight from its stored form: close to llama.cpp's flash attention over such a cache,
/// not bitwise.
fn attention(c: &ModelConfig, q: &[f32], keys: KvRows, values: KvRows, pos0: usize, order: PositionSum, out: &mut [f32]) {
    let (hd, kv_dim) = (c.head_dim, c.kv_dim());
    let group = c.n_head / c.n_head_kv;
    let scale = 1.0 / (hd as f32).sqrt();
    // One task per (token, head): enough parallelism for decode (n = 1) and prefill alike.
    out.par_chunks_exact_mut(hd).enumerate().for_each(|(i, o)| {
        let (t, h) = (i / c.n_head, i % c.n_head);
        let qh = &q[i * hd..(i + 1) * hd];
        let kv_off = (h / group) * hd;
        let n_pos = pos0 + t + 1;
        let mut scores: Vec<f32> = match keys {
            KvRows::F32(keys) => (0..n_pos)
                .map(|p| ggml_order::dot_f32(qh, &keys[p * kv_dim + kv_off..p * kv_dim + kv_off + hd]) * scale)
                .collect(),
            KvRows::Packed { ty, bytes, row_bytes } => {
                // Heads are whole blocks (checked when the cache was made), so this cannot fail.
                let dot = RowDot::new(ty.ggml(), qh).expect("a head is whole blocks");
                let (off, len) = (ty.bytes(kv_off), dot.row_bytes());
                (0..n_pos).map(|p| dot.dot(&bytes[p * row_bytes + off..p * row_bytes + off + len]) * scale).collect()
            }
        };
        ggml_order::softmax(&mut scores);
        match values {
            KvRows::F32(values) => ggml_order::weighted_sum(&scores, values, kv_dim, kv_off, o, order),
            KvRows::Packed { ty, bytes, row_bytes } => {
                let (off, len) = (ty.bytes(kv_off), ty.bytes(hd));
                o.fill(0.0);
                for (p, &w) in scores.iter().enumerate() {
                    let at = p * row_bytes + off;
                    axpy_row(ty.ggml(), o, w, &bytes[at..at + len]).expect("a head is whole blocks");
                }
            }
        }
    });
}
