//! Adapters on top of a loaded base model. LoRA (llama.cpp's GGUF layout) is applied
//! unmerged: each adapted [`crate::model::Linear`] carries a list of low-rank deltas that its
//! `forward` adds, so the model's forward pass has no adapter code and the base weights stay
//! the mapped file, untouched; adapters can be attached and removed between requests.

mod attach;
mod delta;
mod lora;

pub use delta::LoraDelta;
pub use lora::{LoraAdapter, LoraFactors, LoraWeight};
