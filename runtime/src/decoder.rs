//! What the generation loop needs from a backend: run tokens after those already cached and
//! give logits. The CPU backend is a model plus its KV cache; the CUDA backend keeps both on
//! the GPU (`model::CudaModel`).

use std::borrow::BorrowMut;

use crate::kv_cache::KvCache;
use crate::model::{Logits, Model, ModelError};

pub trait Decoder {
    /// Runs `tokens` at the positions after `len()`, like [`Model::forward`].
    fn forward(&mut self, tokens: &[u32], logits: Logits) -> Result<Vec<f32>, ModelError>;
    /// Positions held.
    fn len(&self) -> usize;
    fn is_empty(&self) -> bool {
        self.len() == 0
    }
    fn capacity(&self) -> usize;
    /// Forgets the positions from `len` on (speculative decoding drops rejected drafts).
    fn truncate(&mut self, len: usize);
    /// Runs `tokens` and gives every row's logits, for checking drafted tokens in one batch.
    /// The CPU and CUDA backends give each row bitwise as decoding the tokens one at a time
    /// would ([`Model::forward_rowwise`], `CudaModel::forward_rowwise`); the default is
    /// [`Decoder::forward`] with every row, whose batched path may round differently.
    fn forward_verify(&mut self, tokens: &[u32]) -> Result<Vec<f32>, ModelError> {
        self.forward(tokens, Logits::All)
    }
    /// Runs one token and returns the most likely next one (lowest id on ties, as
    /// [`crate::sampling::Sampler::greedy`]) without handing the logits over, for backends that
    /// pick it where the logits are (the GPU reads back one id instead of the vocabulary);
    /// `None` when the backend cannot, and the caller uses [`Decoder::forward`].
    fn forward_argmax(&mut self, _token: u32) -> Option<Result<u32, ModelError>> {
        None
    }
    /// Runs one token and returns (id, logit) candidates that include the `k` most likely next
    /// tokens, for a sampler that keeps only those ([`crate::sampling::Sampler::top_k_only`]);
    /// `None` when the backend does not pick them itself (the GPU does, for `k` up to
    /// [`crate::model::DEVICE_TOP_K_MAX`]), and the caller uses [`Decoder::forward`].
    fn forward_top_k(&mut self, _token: u32, _k: usize) -> Option<Result<Vec<(u32, f32)>, ModelError>> {
        None
    }
}

/// The CPU backend: the model's forward pass over a KV cache in host memory, borrowed
/// (`&mut KvCache`, the default) or owned (`KvCache`).
pub struct CpuDecoder<'a, C = &'a mut KvCache> {
    pub model: &'a Model,
    pub cache: C,
}

impl<C: BorrowMut<KvCache>> Decoder for CpuDecoder<'_, C> {
    fn forward(&mut self, tokens: &[u32], logits: Logits) -> Result<Vec<f32>, ModelError> {
        self.model.forward(tokens, self.cache.borrow_mut(), logits)
    }
    fn len(&self) -> usize {
        self.cache.borrow().len()
    }
    fn capacity(&self) -> usize {
        self.cache.borrow().capacity()
    }
    fn truncate(&mut self, len: usize) {
        self.cache.borrow_mut().truncate(len);
    }
    fn forward_verify(&mut self, tokens: &[u32]) -> Result<Vec<f32>, ModelError> {
        self.model.forward_rowwise(tokens, self.cache.borrow_mut())
    }
}

#[cfg(feature = "cuda")]
impl Decoder for crate::model::CudaModel {
    fn forward(&mut self, tokens: &[u32], logits: Logits) -> Result<Vec<f32>, ModelError> {
        crate::model::CudaModel::forward(self, tokens, logits)
    }
    fn len(&self) -> usize {
        crate::model::CudaModel::len(self)
    }
    fn capacity(&self) -> usize {
        crate::model::CudaModel::capacity(self)
    }
    fn truncate(&mut self, len: usize) {
        crate::model::CudaModel::truncate(self, len);
    }
    fn forward_argmax(&mut self, token: u32) -> Option<Result<u32, ModelError>> {
        Some(self.step_greedy(token))
    }
    fn forward_top_k(&mut self, token: u32, k: usize) -> Option<Result<Vec<(u32, f32)>, ModelError>> {
        (k <= crate::model::DEVICE_TOP_K_MAX).then(|| self.step_top_k(token, k))
    }
    fn forward_verify(&mut self, tokens: &[u32]) -> Result<Vec<f32>, ModelError> {
        self.forward_rowwise(tokens)
    }
}
