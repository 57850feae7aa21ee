//! One module per fuzz target, each with `run(data)` (one input) and, where a target loads
//! something once (vocabularies, a base model), `init()` for libFuzzer's initialization, so
//! the loading is outside the per-input timer.

use std::sync::OnceLock;

pub mod bundle_reader;
pub mod chat_template;
pub mod detokenize;
pub mod gguf_reader;
pub mod lora_adapter;
pub mod onnx_voice;
pub mod peft_adapter;
pub mod router_reader;
pub mod safetensors_header;
pub mod tokenizer_text;
pub mod tokenizer_vocab;
pub mod voice_gguf;

pub struct Target {
    pub name: &'static str,
    pub init: fn(),
    pub run: fn(&[u8]),
}

fn nothing() {}

/// Every target, in scripts/fuzz.sh's order.
pub const ALL: &[Target] = &[
    Target { name: "gguf_reader", init: nothing, run: gguf_reader::run },
    Target { name: "tokenizer_vocab", init: nothing, run: tokenizer_vocab::run },
    Target { name: "tokenizer_text", init: tokenizer_text::init, run: tokenizer_text::run },
    Target { name: "detokenize", init: detokenize::init, run: detokenize::run },
    Target { name: "chat_template", init: nothing, run: chat_template::run },
    Target { name: "safetensors_header", init: nothing, run: safetensors_header::run },
    Target { name: "onnx_voice", init: nothing, run: onnx_voice::run },
    Target { name: "voice_gguf", init: nothing, run: voice_gguf::run },
    Target { name: "lora_adapter", init: lora_adapter::init, run: lora_adapter::run },
    Target { name: "peft_adapter", init: nothing, run: peft_adapter::run },
    Target { name: "bundle_reader", init: nothing, run: bundle_reader::run },
    Target { name: "router_reader", init: nothing, run: router_reader::run },
];

/// The target NEXUS_FUZZ_TARGET names, read once. A missing or unknown name ends the process
/// (exit 2) with the list of names: fuzzing the wrong target for hours would be worse.
pub fn selected() -> &'static Target {
    static SELECTED: OnceLock<&'static Target> = OnceLock::new();
    SELECTED.get_or_init(|| {
        let name = std::env::var("NEXUS_FUZZ_TARGET").unwrap_or_default();
        match ALL.iter().find(|t| t.name == name) {
            Some(t) => t,
            None => {
                let names: Vec<&str> = ALL.iter().map(|t| t.name).collect();
                let what = if name.is_empty() { "is not set".to_string() } else { format!("is {name:?}, not a target") };
                eprintln!("nexus-fuzz: NEXUS_FUZZ_TARGET {what}; one of: {}", names.join(" "));
                std::process::exit(2);
            }
        }
    })
}
