//! The student: a llama-architecture model held in f32 for training.

mod params;

pub use params::{LayerParams, Params, StudentConfig};
