//! A multi-turn chat over one model: renders the history with the chat template, reuses the
//! KV cache for the part of the prompt that did not change, and drops the oldest turns when
//! the conversation no longer fits the context. The session holds the model mutably so that
//! adapters can be attached and removed between turns ([`ChatSession::apply_lora`],
//! [`ChatSession::replace_lora`], [`ChatSession::clear_lora`]) without reloading it from its
//! file; each forgets the cached keys and values, which the old weights computed. Forward
//! passes run on the CPU ([`ChatSession::new`]) or on a GPU ([`ChatSession::on_cuda`]), whose
//! copy of the model bakes the adapters in and is uploaded again when they change.

use std::sync::atomic::AtomicBool;

use crate::adapter::LoraAdapter;
use crate::chat_template::{ChatTemplate, Message};
use crate::generate::{generate, GenerateParams, Generation};
use crate::decoder::{CpuDecoder, Decoder};
use crate::kv_cache::KvCache;
use crate::model::{Model, ModelError};
use crate::tokenizer::Tokenizer;

#[derive(Debug, thiserror::Error)]
pub enum ChatError {
    #[error(transparent)]
    Model(#[from] ModelError),
    #[error(transparent)]
    Template(#[from] crate::chat_template::ChatTemplateError),
    #[error("the message is {tokens} tokens with the system prompt; the context holds {capacity} (raise --ctx-size)")]
    MessageTooLong { tokens: usize, capacity: usize },
}

pub struct ChatReply {
    pub generation: Generation,
    /// Oldest user/assistant turns removed from the history so this prompt fit.
    pub dropped_turns: usize,
}

/// Where a session's forward passes run.
enum Backend {
    /// The host model, with this cache.
    Cpu(KvCache),
    /// A copy of the model (adapters included) on GPU `ordinal`, with `n_ctx` positions stored
    /// as `types`; `None` after an upload failed, tried again at the next turn.
    #[cfg(feature = "cuda")]
    Cuda { ordinal: usize, n_ctx: usize, types: crate::kv_cache::CacheTypes, model: Option<Box<crate::model::CudaModel>> },
}

pub struct ChatSession<'m> {
    model: &'m mut Model,
    tokenizer: &'m Tokenizer,
    template: ChatTemplate,
    system: Option<String>,
    turns: Vec<Message>,
    backend: Backend,
    /// The tokens whose keys and values the backend's cache holds, position by position.
    cached: Vec<u32>,
}

impl<'m> ChatSession<'m> {
    pub fn new(
        model: &'m mut Model,
        tokenizer: &'m Tokenizer,
        template: ChatTemplate,
        system: Option<String>,
        n_ctx: usize,
    ) -> Self {
        let cache = model.new_cache(n_ctx);
        Self::with_cache(model, tokenizer, template, system, cache)
    }

    /// A session on the CPU in `cache` (one of `model`'s: an f16 or Q8_0 cache, say).
    pub fn with_cache(
        model: &'m mut Model,
        tokenizer: &'m Tokenizer,
        template: ChatTemplate,
        system: Option<String>,
        cache: KvCache,
    ) -> Self {
        ChatSession { model, tokenizer, template, system, turns: Vec::new(), backend: Backend::Cpu(cache), cached: Vec::new() }
    }

    /// A session whose forward passes run on CUDA device `ordinal` with a cache stored as
    /// `types` (the model, with the adapters attached now, is uploaded here).
    #[cfg(feature = "cuda")]
    #[allow(clippy::too_many_arguments)]
    pub fn on_cuda(
        model: &'m mut Model,
        tokenizer: &'m Tokenizer,
        template: ChatTemplate,
        system: Option<String>,
        n_ctx: usize,
        ordinal: usize,
        types: crate::kv_cache::CacheTypes,
    ) -> Result<Self, ModelError> {
        let gpu = crate::model::CudaModel::load(model, n_ctx, ordinal, types)?;
        let backend = Backend::Cuda { ordinal, n_ctx, types, model: Some(Box::new(gpu)) };
        Ok(ChatSession { model, tokenizer, template, system, turns: Vec::new(), backend, cached: Vec::new() })
    }

    pub fn reset(&mut self) {
        self.turns.clear();
        self.forget_cache();
    }

    pub fn model(&self) -> &Model {
        self.model
    }

    /// Attaches adapters on top of those already attached ([`Model::apply_lora`]); the
    /// history stays, and the next turn recomputes all of it with the new weights. On error
    /// nothing changed, and the cache is kept.
    pub fn apply_lora(&mut self, adapters: &[(&LoraAdapter, f32)]) -> Result<(), ModelError> {
        self.change_lora(|m| m.apply_lora(adapters))
    }

    /// Replaces every attached adapter by `adapters` ([`Model::replace_lora`]; none: the base
    /// model) in one step, so a GPU session uploads the model once. On error nothing changed.
    pub fn replace_lora(&mut self, adapters: &[(&LoraAdapter, f32)]) -> Result<(), ModelError> {
        self.change_lora(|m| m.replace_lora(adapters))
    }

    /// Removes every adapter ([`Model::clear_lora`]); the next turn recomputes the history.
    /// Fails only on a GPU, when the base model cannot be uploaded again.
    pub fn clear_lora(&mut self) -> Result<(), ModelError> {
        self.replace_lora(&[])
    }

    /// Runs `change` on the model's adapters, then makes the backend follow; when the backend
    /// cannot (a GPU refusing an adapter), the adapters are put back as they were.
    fn change_lora(&mut self, change: impl FnOnce(&mut Model) -> Result<(), ModelError>) -> Result<(), ModelError> {
        let before = self.model.lora_snapshot();
        change(self.model)?;
        if let Err(e) = self.weights_changed() {
            self.model.restore_lora(before);
            // The old weights were on the device a moment ago; if they no longer fit, the next
            // turn says so.
            let _ = self.weights_changed();
            return Err(e);
        }
        Ok(())
    }

    /// The model's weights changed: forget the cache, and upload a GPU copy again.
    fn weights_changed(&mut self) -> Result<(), ModelError> {
        self.forget_cache();
        match &mut self.backend {
            Backend::Cpu(_) => Ok(()),
            #[cfg(feature = "cuda")]
            Backend::Cuda { ordinal, n_ctx, types, model } => {
                // The old copy goes first: both at once might not fit.
                *model = None;
                *model = Some(Box::new(crate::model::CudaModel::load(self.model, *n_ctx, *ordinal, *types)?));
                Ok(())
            }
        }
    }

    /// How many tokens of the history the KV cache holds, ready to be reused by the next turn.
    pub fn cached_tokens(&self) -> usize {
        self.cached.len()
    }

    /// Drops every cached key and value: they are only valid for the weights that computed them.
    fn forget_cache(&mut self) {
        match &mut self.backend {
            Backend::Cpu(cache) => cache.clear(),
            #[cfg(feature = "cuda")]
            Backend::Cuda { model, .. } => {
                if let Some(m) = model {
                    m.truncate(0);
                }
            }
        }
        self.cached.clear();
    }

    /// The positions the backend's cache holds.
    fn capacity(&self) -> usize {
        match &self.backend {
            Backend::Cpu(cache) => cache.capacity(),
            #[cfg(feature = "cuda")]
            Backend::Cuda { n_ctx, .. } => *n_ctx,
        }
    }

    pub fn turns(&self) -> &[Message] {
        &self.turns
    }

    fn render(&self) -> Result<Vec<u32>, ChatError> {
        let mut messages = Vec::with_capacity(self.turns.len() + 1);
        if let Some(s) = &self.system {
            messages.push(Message { role: "system".into(), content: s.clone() });
        }
        messages.extend(self.turns.iter().cloned());
        let text = self.template.render(&messages, true)?;
        // Templates usually write the BOS token themselves; add it only when they did not,
        // so the model never sees two.
        let bos_text = self.tokenizer.bos().and_then(|b| self.tokenizer.token_text(b));
        let add_bos = self.tokenizer.add_bos() && !bos_text.is_some_and(|b| !b.is_empty() && text.starts_with(b));
        let mut ids = Vec::new();
        if add_bos {
            ids.extend(self.tokenizer.bos());
        }
        ids.extend(self.tokenizer.encode(&text, false, true));
        Ok(ids)
    }

    /// Answers `user`, streaming text to `on_text`. On error the user message is withdrawn, so
    /// the session keeps its history and can go on.
    pub fn respond(
        &mut self,
        user: &str,
        params: &GenerateParams,
        cancel: &AtomicBool,
        on_text: impl FnMut(&str),
    ) -> Result<ChatReply, ChatError> {
        self.turns.push(Message { role: "user".into(), content: user.to_string() });
        let result = self.respond_inner(params, cancel, on_text);
        match &result {
            Ok(reply) => self.turns.push(Message { role: "assistant".into(), content: reply.generation.text.clone() }),
            Err(_) => {
                self.turns.pop();
            }
        }
        result
    }

    fn respond_inner(
        &mut self,
        params: &GenerateParams,
        cancel: &AtomicBool,
        on_text: impl FnMut(&str),
    ) -> Result<ChatReply, ChatError> {
        let capacity = self.capacity();
        // Leave room for an answer: the requested length, at most a quarter of the context.
        let reserve = params.max_tokens.unwrap_or(usize::MAX).min(capacity / 4).max(1);
        let mut dropped_turns = 0;
        let prompt = loop {
            let prompt = self.render()?;
            if prompt.len() + reserve <= capacity {
                break prompt;
            }
            if self.turns.len() <= 1 {
                return Err(ChatError::MessageTooLong { tokens: prompt.len(), capacity });
            }
            // Drop the oldest exchange (a user message and the answer to it).
            let n = if self.turns.len() >= 3 { 2 } else { 1 };
            self.turns.drain(..n);
            dropped_turns += 1;
        };

        let common = self.cached.iter().zip(&prompt).take_while(|(a, b)| a == b).count();
        // At least one prompt token must be fed to get logits for the first answer token.
        let keep = common.min(prompt.len() - 1);
        self.cached.truncate(keep);
        let model = &*self.model;
        let decoder: &mut dyn Decoder = match &mut self.backend {
            Backend::Cpu(cache) => &mut CpuDecoder { model, cache },
            #[cfg(feature = "cuda")]
            Backend::Cuda { ordinal, n_ctx, types, model: gpu } => {
                if gpu.is_none() {
                    *gpu = Some(Box::new(crate::model::CudaModel::load(model, *n_ctx, *ordinal, *types)?));
                }
                gpu.as_deref_mut().expect("loaded above")
            }
        };
        decoder.truncate(keep);
        let generation = match generate(decoder, self.tokenizer, &prompt[keep..], params, cancel, on_text) {
            Ok(g) => g,
            Err(e) => {
                // The cache may hold part of the failed prompt: forget what we cannot vouch for.
                decoder.truncate(keep);
                return Err(e.into());
            }
        };
        self.cached.extend_from_slice(&prompt[keep..]);
        self.cached.extend_from_slice(&generation.tokens);
        self.cached.truncate(decoder.len());
        Ok(ChatReply { generation, dropped_turns })
    }
}
