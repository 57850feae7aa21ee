//! The student: a llama-architecture model held in f32 for training.

mod backward;
mod forward;
mod params;

pub use backward::backward;
pub use forward::{forward, Activations};
pub use params::{LayerParams, Params, StudentConfig};
