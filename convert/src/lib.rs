//! Writers of model files: safetensors → GGUF conversion, quantization, LoRA and bundle packing.
//!
//! `hf`: an HF model directory (config.json, tokenizer.json or SentencePiece tokenizer.model,
//! safetensors) → GGUF, matching llama.cpp's `convert_hf_to_gguf.py` (llama and qwen2).
//! `lora_merge`: LoRA adapters merged into a base model's weights, like `llama-export-lora`.
//! `lora_peft`: a PEFT LoRA adapter folder → llama.cpp's LoRA GGUF, like `convert_lora_to_gguf.py`.
//! `bundle`: a backbone, LoRA adapters, a router and a voice packed into one GGUF (docs/BUNDLE.md).
//! `onnx` + `voice`: a Piper VITS voice (ONNX + .onnx.json) → a voice GGUF (docs/VOICE.md).
//! `protobuf`: the wire-format reader under `onnx` and the `tokenizer.model` reader (`hf::spm`).

pub mod bundle;
pub mod hf;
pub mod lora_merge;
pub mod lora_peft;
pub mod onnx;
mod protobuf;
pub mod quantize;
pub mod synth;
mod tensor_source;
pub mod voice;
