//! The student: a llama-architecture model held in f32 for training.

mod backward;
mod forward;
mod params;

pub use backward::backward;
pub use forward::{forward, Activations};
#[cfg(feature = "cuda")]
pub(crate) use forward::check_batch;
pub use params::{LayerParams, Params, StudentConfig};

/// The config's consistency and `p`'s shapes (what the CUDA engine checks before it runs).
#[cfg(feature = "cuda")]
pub(crate) fn check(cfg: &StudentConfig, p: &Params) -> Result<(), crate::engine::EngineError> {
    forward::check_config(cfg)?;
    forward::check_params(cfg, p, "weights")
}
