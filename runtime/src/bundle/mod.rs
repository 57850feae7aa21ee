//! The one-file bundle (docs/BUNDLE.md): a GGUF that holds a backbone model as it is, LoRA
//! adapters (one per capability), an optional router and voice, a JSON manifest and the
//! backbone's verify report, and gives each component back byte for byte.
//!
//! The bundle's metadata is the backbone's metadata plus `nexus.bundle.*` keys, and the
//! backbone's tensors keep their names, so [`crate::model::Model`] and
//! [`crate::tokenizer::Tokenizer`] load straight from the bundle's map. Every other
//! component's tensors sit under its prefix (`adapter.NAME.`, `router.`, `voice.`). What is
//! not tensor data in a component (its header, padding, any stray bytes) is kept verbatim in
//! an `i8` tensor `nexus.rest.ID`, which makes rebuilding the original file exact
//! ([`layout`]).
//!
//! The writer lives in `nexus_convert::bundle`.

mod error;
pub mod layout;
mod manifest;
mod reader;
mod unpack;
mod verify_status;

pub use error::BundleError;
pub use manifest::{Capability, Component, Kind, License, Manifest, FORMAT, VERSION};
pub use reader::{hex, Bundle, ComponentCheck};
pub use verify_status::VerifyStatus;

/// Metadata key of the manifest (a JSON string).
pub const MANIFEST_KEY: &str = "nexus.bundle.manifest";
/// Metadata key of the format version (u32), the same number as the manifest's `version`.
pub const VERSION_KEY: &str = "nexus.bundle.version";
/// Prefix of every metadata key the bundle adds to the backbone's.
pub const KEY_PREFIX: &str = "nexus.bundle.";
/// Prefix of the tensors holding each component's non-tensor bytes: `nexus.rest.ID`.
pub const REST_PREFIX: &str = "nexus.rest.";
/// The licence of espeak-ng, the phonemizer a bundled voice needs.
pub const PHONEMIZER_LICENSE: &str = "GPL-3.0-or-later";

/// The name of the tensor that keeps component `id`'s non-tensor bytes.
pub fn rest_tensor(id: &str) -> String {
    format!("{REST_PREFIX}{id}")
}

/// Whether an open GGUF is a bundle (it carries a manifest).
pub fn is_bundle(file: &crate::gguf::GgufFile) -> bool {
    file.get(MANIFEST_KEY).is_some()
}
