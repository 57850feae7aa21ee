//! LLaMA-family models: hyper-parameters from GGUF metadata, weights borrowed from the map,
//! and the forward pass.

mod config;
#[cfg(feature = "cuda")]
mod cuda;
mod error;
mod llama;
mod rope;
mod weights;

#[cfg(feature = "cuda")]
pub use cuda::CudaModel;
pub use config::{Arch, ModelConfig, RopeStyle};
pub use error::ModelError;
pub use llama::{Logits, Model, Probe};
pub use weights::{Batching, Linear, LayerWeights};

/// The largest top-k the GPU picks sampling candidates for by itself (each 1024-logit slice
/// sends back its k best, so larger k would read back about as much as the logits).
pub const DEVICE_TOP_K_MAX: usize = 128;
