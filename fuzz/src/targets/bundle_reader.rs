//! Opening a one-file bundle (`run -m`/`chat -m nexus.gguf`, `nexus-cli bundle
//! inspect|verify|unpack`) from arbitrary bytes: the GGUF, the manifest, every component rebuilt
//! from its tensors and rest and hashed (`Bundle::verify`, the path `unpack` writes), the small
//! components opened as GGUFs, each capability's adapter loaded and, when the backbone loads
//! from the bundle as a model, attached for a 3-token forward pass; and the voice.

use std::sync::Arc;

use nexus_runtime::bundle::{Bundle, Kind};
use nexus_runtime::gguf::GgufFile;
use nexus_runtime::model::{Logits, Model};

pub fn run(data: &[u8]) {
    let Ok(file) = GgufFile::from_bytes("bundle.gguf", data.to_vec()) else { return };
    let Ok(bundle) = Bundle::from_file(Arc::new(file)) else { return };
    let m = bundle.manifest();
    let _ = m.to_json();
    let _ = bundle.verify_status().describe();
    for check in bundle.verify() {
        let _ = check.result.map_err(|e| e.to_string());
    }
    for c in &m.components {
        let _ = bundle.unpack_name(&c.id);
        if c.kind != Kind::Backbone {
            if let Ok(f) = bundle.component_file(&c.id) {
                let _ = f.metadata().len();
            }
        }
    }
    let adapters: Vec<_> = m.capabilities.iter().filter_map(|c| bundle.adapter(&c.name).ok()).collect();
    if let Ok(mut model) = Model::from_file(bundle.file().clone()) {
        for a in &adapters {
            if model.apply_lora(&[(a, 1.0)]).is_ok() {
                let mut cache = model.new_cache(4);
                let _ = model.forward(&[1, 2, 3], &mut cache, Logits::All);
                model.clear_lora();
            }
        }
    }
    let _ = bundle.voice();
}
