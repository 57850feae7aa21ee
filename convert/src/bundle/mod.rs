//! `nexus-cli bundle pack`: a backbone, per-capability LoRA adapters, a router and a voice
//! packed into one GGUF (docs/BUNDLE.md; the reader is `nexus_runtime::bundle`).
//!
//! Tensor data is never copied into memory: the writer streams it from the components' maps
//! into a temporary file beside the output, renamed into place when complete. Only each
//! component's header and padding (its "rest") are held in memory.

mod component;
mod error;

use std::borrow::Cow;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use nexus_kernels::GgmlType;
use nexus_runtime::adapter::LoraAdapter;
use nexus_runtime::bundle::{
    is_bundle, rest_tensor, Capability, Kind, License, Manifest, VerifyStatus, FORMAT, KEY_PREFIX, MANIFEST_KEY,
    PHONEMIZER_LICENSE, REST_PREFIX, VERSION, VERSION_KEY,
};
use nexus_runtime::gguf::{GgufFile, GgufWriter, Value};
use nexus_runtime::model::Model;
use nexus_runtime::router::{check_capability_name, Capabilities, Router};
use nexus_runtime::tts::vits::Voice;

use component::Packed;
pub use error::PackError;

/// What to pack: file paths, and each adapter's capability name.
#[derive(Debug, Clone, Default)]
pub struct PackInput {
    pub backbone: PathBuf,
    /// (capability name, adapter file)
    pub adapters: Vec<(String, PathBuf)>,
    pub router: Option<PathBuf>,
    pub voice: Option<PathBuf>,
}

/// Tensor-name prefixes the bundle reserves; a backbone tensor may not start with one.
const RESERVED_PREFIXES: [&str; 4] = ["adapter.", "router.", "voice.", REST_PREFIX];

/// Packs `input` into `out` (atomically) and returns the manifest written. Every component is
/// checked first: the backbone loads as a model, each adapter fits it (architecture, tensor
/// names, shapes), the router was trained on it and picks only packed capabilities, the voice
/// loads as a voice; nothing is written on any error.
pub fn pack(input: &PackInput, out: &Path) -> Result<Manifest, PackError> {
    check_names(input)?;
    let backbone = Arc::new(GgufFile::open(&input.backbone)?);
    check_backbone(&backbone)?;
    let model = Model::from_file(backbone.clone()).map_err(|source| PackError::Model { component: "backbone".into(), source })?;

    let mut packed = vec![Packed::read(&backbone, "backbone", Kind::Backbone, "")?];
    let mut files = Vec::new();
    let mut adapters = Vec::new();
    for (name, path) in &input.adapters {
        let id = format!("adapter.{name}");
        let file = GgufFile::open(path)?;
        let adapter = LoraAdapter::from_file(&file).map_err(|source| PackError::Model { component: id.clone(), source })?;
        model.check_lora(&[(&adapter, 1.0)]).map_err(|source| PackError::Model { component: id.clone(), source })?;
        files.push((id, Kind::Adapter, file));
        adapters.push((name.clone(), adapter));
    }
    if let Some(path) = &input.router {
        let file = GgufFile::open(path)?;
        // The router must fit this backbone and pick only capabilities the bundle carries.
        let router_err = |source| PackError::Router { component: "router".into(), source: Box::new(source) };
        let router = Router::from_file(&file).map_err(router_err)?;
        Capabilities::new(&model, Some(router), adapters).map_err(router_err)?;
        files.push(("router".into(), Kind::Router, file));
    }
    if let Some(path) = &input.voice {
        let file = GgufFile::open(path)?;
        Voice::from_file(&file).map_err(|source| PackError::Voice { component: "voice".into(), source })?;
        files.push(("voice".into(), Kind::Voice, file));
    }
    for (id, kind, file) in &files {
        packed.push(Packed::read(file, id, *kind, &format!("{id}."))?);
    }

    let manifest = manifest(&packed, input, VerifyStatus::from_gguf(&backbone));
    let mut w = GgufWriter::new();
    for (key, value) in backbone.metadata() {
        w.set(key.clone(), value.clone());
    }
    w.set(VERSION_KEY, Value::U32(VERSION));
    w.set(MANIFEST_KEY, Value::String(manifest.to_json()));
    let file_of = |i: usize| -> &GgufFile { if i == 0 { &backbone } else { &files[i - 1].2 } };
    for (i, p) in packed.iter().enumerate() {
        let file = file_of(i);
        for t in file.tensors() {
            let name = format!("{}{}", p.component.tensor_prefix, t.name);
            w.add_tensor(name, &t.dims, t.ty, Cow::Borrowed(file.tensor_data(t))).map_err(|e| PackError::gguf(out, e))?;
        }
        let rest = Cow::Borrowed(p.rest.as_slice());
        w.add_tensor(rest_tensor(&p.component.id), &[p.rest.len() as u64], GgmlType::I8, rest).map_err(|e| PackError::gguf(out, e))?;
    }
    w.write(out)?;
    Ok(manifest)
}

/// Capability names become tensor prefixes and flags: letters, digits, `_` and `-`, and not
/// `none` or `auto` (`--capability` gives those a meaning of their own).
fn check_names(input: &PackInput) -> Result<(), PackError> {
    for (i, (name, path)) in input.adapters.iter().enumerate() {
        if let Err(what) = check_capability_name(name) {
            return Err(PackError::Invalid { path: path.clone(), component: format!("adapter.{name}"), what });
        }
        if input.adapters[..i].iter().any(|(n, _)| n == name) {
            return Err(PackError::Invalid { path: path.clone(), component: format!("adapter.{name}"), what: "capability given twice".into() });
        }
    }
    Ok(())
}

fn check_backbone(file: &GgufFile) -> Result<(), PackError> {
    let invalid = |what: String| PackError::Invalid { path: file.path().to_path_buf(), component: "backbone".into(), what };
    if is_bundle(file) {
        return Err(invalid("it is a bundle already; pack its backbone (bundle unpack) instead".into()));
    }
    if let Some((key, _)) = file.metadata().iter().find(|(k, _)| k.starts_with(KEY_PREFIX)) {
        return Err(invalid(format!("its metadata key {key:?} uses the prefix {KEY_PREFIX:?} the bundle reserves")));
    }
    if let Some(t) = file.tensors().iter().find(|t| RESERVED_PREFIXES.iter().any(|p| t.name.starts_with(p))) {
        return Err(invalid(format!("its tensor {:?} uses a prefix the bundle reserves ({RESERVED_PREFIXES:?})", t.name)));
    }
    Ok(())
}

fn manifest(packed: &[Packed], input: &PackInput, verify: VerifyStatus) -> Manifest {
    let components: Vec<_> = packed.iter().map(|p| p.component.clone()).collect();
    let capabilities = input
        .adapters
        .iter()
        .map(|(name, _)| Capability { name: name.clone(), component: format!("adapter.{name}") })
        .collect();
    let mut licenses: Vec<License> = components
        .iter()
        .map(|c| License {
            component: c.id.clone(),
            license: c.license.clone().unwrap_or_else(|| "unknown".into()),
            note: c.license.is_none().then(|| "the file has no general.license".to_string()),
        })
        .collect();
    if components.iter().any(|c| c.kind == Kind::Voice) {
        licenses.push(License {
            component: "phonemizer (espeak-ng)".into(),
            license: PHONEMIZER_LICENSE.into(),
            note: Some("the voice speaks through espeak-ng, linked only into builds with the `speech` feature; such binaries are GPL-bound".into()),
        });
    }
    Manifest { format: FORMAT.into(), version: VERSION, components, capabilities, licenses, verify }
}
