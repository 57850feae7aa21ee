//! What the profile says matters in the teacher, in the shape pruning needs: the profile
//! stage writes it, student initialization reads it.

use serde::{Deserialize, Serialize};

/// Importance scores of the teacher's parts; larger means removing it costs more.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Importance {
    /// Per layer: the output-KL increase when the layer's residual contribution is removed.
    pub layers: Vec<f32>,
    /// `[layer][head]`: the loss increase when that attention head is zeroed.
    pub heads: Vec<Vec<f32>>,
    /// `[layer][channel]`: mean |silu(gate)·up| of each FFN inner channel (Minitron's score).
    pub ffn_channels: Vec<Vec<f32>>,
    /// `[channel]`: mean |x| of each residual-stream channel over all layers' norm inputs.
    pub embd_channels: Vec<f32>,
}
