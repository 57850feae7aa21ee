//! Writers of model files: safetensors → GGUF conversion, quantization, LoRA and bundle packing.
//!
//! The crate exists so the dependency direction (kernels ← runtime ← convert ← cli) is fixed
//! from the start; its converters arrive with the real-models issue. Nothing here pretends to
//! work yet: the crate exports nothing.
