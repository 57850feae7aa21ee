//! The Nexus runtime: GGUF files, the LLaMA-family model graph, KV cache, tokenizer,
//! sampling and chat templates.
//!
//! A token's path: [`gguf::GgufFile`] maps the file → [`model::Model`] borrows its tensors →
//! [`tokenizer::Tokenizer`] turns text into ids → [`model::Model::forward`] fills the
//! [`kv_cache::KvCache`] and yields logits → [`sampling::Sampler`] picks the next id →
//! [`tokenizer::StreamDecoder`] turns ids back into valid UTF-8.

pub mod adapter;
pub mod bundle;
pub mod chat;
pub mod chat_template;
pub mod decoder;
pub mod eval;
pub mod generate;
pub mod gguf;
pub mod kv_cache;
pub mod model;
pub mod router;
pub mod sampling;
pub mod speculative;
pub mod tokenizer;
pub mod tts;
