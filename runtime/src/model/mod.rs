//! LLaMA-family models: hyper-parameters from GGUF metadata, weights borrowed from the map,
//! and the forward pass.

mod config;
mod error;
mod llama;
mod rope;
mod weights;

pub use config::{Arch, ModelConfig, RopeStyle};
pub use error::ModelError;
pub use llama::{Logits, Model};
pub use weights::{Linear, LayerWeights};
