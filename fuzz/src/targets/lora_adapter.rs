//! Loading a LoRA adapter (`--lora FILE`, chat's `/lora load`, `export-lora`) from arbitrary
//! bytes: the adapter's own checks (`LoraAdapter::load`: metadata, tensor pairs, ranks, types,
//! values), then the checks against a base model and, when they pass, one forward pass with the
//! adapter attached (the low-rank update through `Linear::forward`), after which it is removed.
//!
//! The bytes are parsed in memory (`GgufFile::from_bytes`, then `LoraAdapter::from_file`, which
//! is `LoraAdapter::load` after its `GgufFile::open`); opening a path is `gguf_reader`'s to fuzz.

use std::sync::{Mutex, OnceLock};

use nexus_runtime::adapter::LoraAdapter;
use nexus_runtime::gguf::GgufFile;
use nexus_runtime::model::{Logits, Model};

/// The base the seeds were made for: the committed golden llama fixture.
fn base() -> &'static Mutex<Model> {
    static BASE: OnceLock<Mutex<Model>> = OnceLock::new();
    BASE.get_or_init(|| {
        let path = crate::data_path("tests/fixtures/golden/llama-spm-gqa.f32.gguf");
        Mutex::new(Model::load(&path).expect("the golden fixture loads"))
    })
}

/// Loads the base before the per-input timer runs.
pub fn init() {
    base();
}

pub fn run(data: &[u8]) {
    let Ok(file) = GgufFile::from_bytes("adapter.gguf", data.to_vec()) else { return };
    let Ok(adapter) = LoraAdapter::from_file(&file) else { return };
    let mut model = base().lock().unwrap_or_else(|e| e.into_inner());
    let scale = if data.len() % 2 == 0 { 1.0 } else { -0.5 };
    if model.apply_lora(&[(&adapter, scale)]).is_ok() {
        let mut cache = model.new_cache(4);
        let _ = model.forward(&[1, 2, 3], &mut cache, Logits::All);
        model.clear_lora();
    }
}
