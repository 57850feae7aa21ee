//! A multi-turn chat over one model: renders the history with the chat template, reuses the
//! KV cache for the part of the prompt that did not change, and drops the oldest turns when
//! the conversation no longer fits the context. The session holds the model mutably so that
//! adapters can be attached and removed between turns ([`ChatSession::apply_lora`],
//! [`ChatSession::clear_lora`]) without reloading it; either forgets the cached keys and
//! values, which the old weights computed.

use std::sync::atomic::AtomicBool;

use crate::adapter::LoraAdapter;
use crate::chat_template::{ChatTemplate, Message};
use crate::generate::{generate, GenerateParams, Generation};
use crate::decoder::CpuDecoder;
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

pub struct ChatSession<'m> {
    model: &'m mut Model,
    tokenizer: &'m Tokenizer,
    template: ChatTemplate,
    system: Option<String>,
    turns: Vec<Message>,
    cache: KvCache,
    /// The tokens whose keys and values the cache holds, position by position.
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
        ChatSession { model, tokenizer, template, system, turns: Vec::new(), cache, cached: Vec::new() }
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
        self.model.apply_lora(adapters)?;
        self.forget_cache();
        Ok(())
    }

    /// Removes every adapter ([`Model::clear_lora`]); the next turn recomputes the history.
    pub fn clear_lora(&mut self) {
        self.model.clear_lora();
        self.forget_cache();
    }

    /// How many tokens of the history the KV cache holds, ready to be reused by the next turn.
    pub fn cached_tokens(&self) -> usize {
        self.cached.len()
    }

    /// Drops every cached key and value: they are only valid for the weights that computed them.
    fn forget_cache(&mut self) {
        self.cache.clear();
        self.cached.clear();
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
        let capacity = self.cache.capacity();
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
        self.cache.truncate(keep);
        self.cached.truncate(keep);
        let mut decoder = CpuDecoder { model: &*self.model, cache: &mut self.cache };
        let generation = generate(&mut decoder, self.tokenizer, &prompt[keep..], params, cancel, on_text);
        let generation = match generation {
            Ok(g) => g,
            Err(e) => {
                // The cache may hold part of the failed prompt: forget what we cannot vouch for.
                self.cache.truncate(keep);
                return Err(e.into());
            }
        };
        self.cached.extend_from_slice(&prompt[keep..]);
        self.cached.extend_from_slice(&generation.tokens);
        self.cached.truncate(self.cache.len());
        Ok(ChatReply { generation, dropped_turns })
    }
}
