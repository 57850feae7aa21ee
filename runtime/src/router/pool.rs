//! The router's input: the mean of one layer's residual stream over a prompt, read by a
//! [`Probe`] inside the model's own forward pass, which stops after that layer.

use sha2::{Digest, Sha256};

use crate::gguf::GgufFile;
use crate::kv_cache::KvCache;
use crate::model::{Logits, Model, ModelError, Probe};
use crate::tokenizer::Tokenizer;

/// Tokens of a prompt the router reads at most (one forward batch): a longer prompt is routed
/// on its start, which bounds the cost of routing.
pub const MAX_ROUTE_TOKENS: usize = 512;

/// Tensor-name prefixes of the other components of a one-file bundle (docs/BUNDLE.md); a
/// backbone has none, so they are left out of its identity.
const FOREIGN_PREFIXES: [&str; 4] = ["adapter.", "router.", "voice.", "nexus."];

/// The ids a router reads for `text`: its tokens with the tokenizer's BOS, special-token
/// texts taken literally, cut to [`MAX_ROUTE_TOKENS`]. Training and routing both use this.
pub fn route_tokens(tokenizer: &Tokenizer, text: &str) -> Vec<u32> {
    let mut ids = tokenizer.encode(text, true, false);
    ids.truncate(MAX_ROUTE_TOKENS);
    ids
}

/// Sums layer `layer`'s residual rows, skipping the first position (the attention sink, whose
/// residual is far larger than the others' and the same for every prompt), which is kept
/// apart for a prompt of one token.
struct MeanResidual {
    layer: usize,
    first: Vec<f32>,
    sum: Vec<f64>,
    count: usize,
}

impl Probe for MeanResidual {
    fn residual(&mut self, layer: usize, x: &[f32]) {
        if layer != self.layer {
            return;
        }
        let d = self.sum.len();
        for row in x.chunks_exact(d) {
            if self.first.is_empty() {
                self.first.extend_from_slice(row);
                continue;
            }
            for (s, &v) in self.sum.iter_mut().zip(row) {
                *s += v as f64;
            }
            self.count += 1;
        }
    }

    fn stop_after(&self, layer: usize) -> bool {
        layer == self.layer
    }
}

/// The mean over `tokens` (all but the first, unless there is only one) of the residual
/// stream after layer `layer`, computed by running layers `0..=layer` of `model` on them
/// (at most [`MAX_ROUTE_TOKENS`]).
pub fn pooled_hidden(model: &Model, tokens: &[u32], layer: usize) -> Result<Vec<f32>, ModelError> {
    let c = &model.config;
    let path = || model.file().path().to_path_buf();
    if layer >= c.n_layer {
        let what = format!("layer {layer} is out of range: the model has {} layers (0..={})", c.n_layer, c.n_layer - 1);
        return Err(ModelError::Invalid { path: path(), what });
    }
    if tokens.is_empty() {
        return Err(ModelError::Invalid { path: path(), what: "nothing to route: no tokens".into() });
    }
    let tokens = &tokens[..tokens.len().min(MAX_ROUTE_TOKENS)];
    let mut cache = KvCache::new(layer + 1, c.kv_dim(), tokens.len());
    let mut probe = MeanResidual { layer, first: Vec::new(), sum: vec![0.0; c.n_embd], count: 0 };
    model.forward_probed(tokens, &mut cache, Logits::None, &mut probe)?;
    if probe.count == 0 {
        return Ok(probe.first);
    }
    let n = probe.count as f64;
    Ok(probe.sum.iter().map(|&s| (s / n) as f32).collect())
}

/// Bytes of each tensor's data that go into [`backbone_hash`]: enough to tell two trainings
/// of one shape apart, little enough that checking a router reads ~1 MB of a backbone.
const HASHED_BYTES: usize = 4096;

/// The backbone's identity for a router: sha256 over every tensor in file order (its name,
/// shape, type and the first 4 KiB of its data), leaving out a bundle's other components. The
/// hidden states a router reads depend on the weights, so another model, another width, a
/// retrained or re-quantized student all differ; the same file packed in a bundle does not.
pub fn backbone_hash(file: &GgufFile) -> String {
    let mut h = Sha256::new();
    for t in file.tensors().iter().filter(|t| !FOREIGN_PREFIXES.iter().any(|p| t.name.starts_with(p))) {
        let dims: Vec<String> = t.dims.iter().map(|d| d.to_string()).collect();
        h.update(format!("{}:{}:{}\n", t.name, dims.join("x"), t.ty).as_bytes());
        let data = file.tensor_data(t);
        h.update(&data[..data.len().min(HASHED_BYTES)]);
    }
    crate::bundle::hex(&h.finalize())
}
