//! The F32 inputs of the quantizer's llama-quantize comparison (tests/tests/quantize.rs and
//! scripts/quantize/make_reference.sh): regenerated from a seed rather than committed.

use nexus_kernels::GgmlType;

use crate::TinyModel;

/// Names of the reference models, one fixture JSON each.
pub const QUANTIZE_MODELS: [&str; 2] = ["tiny256", "tiny576"];

/// `tiny256`: 256-wide rows (every K-quant fits) and 8 layers so the layer-index bumps of the
/// _M mixes differ across layers. `tiny576`: SmolLM2's 576-wide rows and tied embeddings,
/// which force llama.cpp's fallback types.
pub fn quantize_model(name: &str) -> Option<TinyModel> {
    let base = TinyModel {
        ty: GgmlType::F32,
        n_ctx: 128,
        ..TinyModel::default()
    };
    match name {
        "tiny256" => Some(TinyModel {
            n_embd: 256,
            n_layer: 8,
            n_head: 4,
            n_head_kv: 2,
            n_ff: 512,
            seed: 256,
            ..base
        }),
        "tiny576" => Some(TinyModel {
            n_embd: 576,
            n_layer: 2,
            n_head: 9,
            n_head_kv: 3,
            n_ff: 768,
            tied: true,
            seed: 576,
            ..base
        }),
        _ => None,
    }
}
