//! Writers of model files: safetensors → GGUF conversion, quantization, LoRA and bundle packing.
//!
//! `hf`: an HF model directory (config.json, tokenizer.json, safetensors) → GGUF, matching
//! llama.cpp's `convert_hf_to_gguf.py` (llama and qwen2).

pub mod hf;
pub mod quantize;
