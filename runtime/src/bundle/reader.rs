//! Opening a bundle, rebuilding its components and checking them against the manifest.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use sha2::{Digest, Sha256};

use super::layout::{self, Step};
use super::{rest_tensor, BundleError, Component, Kind, Manifest, VerifyStatus, KEY_PREFIX, MANIFEST_KEY, VERSION_KEY};
use crate::adapter::LoraAdapter;
use crate::gguf::{GgufFile, GgufHeader};
use crate::tts::vits::Voice;

/// An open bundle: the mapped file (the backbone's model loads from it directly) and its
/// checked manifest.
pub struct Bundle {
    file: Arc<GgufFile>,
    manifest: Manifest,
}

/// The outcome of checking one component (or, with id `bundle`, the file as a whole).
#[derive(Debug)]
pub struct ComponentCheck {
    pub id: String,
    pub result: Result<(), BundleError>,
}

/// How to rebuild one component: the walk and the bytes it joins.
struct Plan<'a> {
    steps: Vec<Step>,
    rest: &'a [u8],
    tensors: Vec<&'a [u8]>,
}

impl Bundle {
    pub fn open(path: impl AsRef<Path>) -> Result<Self, BundleError> {
        Self::from_file(Arc::new(GgufFile::open(path)?))
    }

    /// Reads and checks the manifest of an open GGUF, and that every component's rest
    /// tensor is there; the components themselves are checked when they are rebuilt.
    pub fn from_file(file: Arc<GgufFile>) -> Result<Self, BundleError> {
        let path = file.path().to_path_buf();
        let json = match file.get(MANIFEST_KEY) {
            None => return Err(BundleError::NotABundle { path, what: format!("it has no {MANIFEST_KEY} metadata") }),
            Some(v) => v.as_str().ok_or_else(|| BundleError::Manifest { path: path.clone(), what: format!("{MANIFEST_KEY} is not a string") })?,
        };
        let manifest = Manifest::parse(&path, json)?;
        if file.get(VERSION_KEY).and_then(|v| v.as_u64()) != Some(manifest.version as u64) {
            let what = format!("{VERSION_KEY} is absent or differs from the manifest's version {}", manifest.version);
            return Err(BundleError::Manifest { path, what });
        }
        let bundle = Bundle { file, manifest };
        for c in &bundle.manifest.components {
            bundle.rest(c)?;
        }
        Ok(bundle)
    }

    pub fn path(&self) -> &Path {
        self.file.path()
    }

    /// The bundle's map, which is also the backbone model's file.
    pub fn file(&self) -> &Arc<GgufFile> {
        &self.file
    }

    pub fn manifest(&self) -> &Manifest {
        &self.manifest
    }

    /// What the backbone's verify report says.
    pub fn verify_status(&self) -> VerifyStatus {
        VerifyStatus::from_gguf(&self.file)
    }

    pub fn component(&self, id: &str) -> Result<&Component, BundleError> {
        self.manifest.component(id).ok_or_else(|| BundleError::Missing {
            path: self.path().to_path_buf(),
            what: format!("component {id:?}"),
            available: self.manifest.components.iter().map(|c| c.id.as_str()).collect::<Vec<_>>().join(", "),
        })
    }

    fn corrupt(&self, c: &Component, what: String) -> BundleError {
        BundleError::Corrupt { path: self.path().to_path_buf(), component: c.id.clone(), what }
    }

    /// The component's non-tensor bytes, header first.
    fn rest(&self, c: &Component) -> Result<&[u8], BundleError> {
        let name = rest_tensor(&c.id);
        let info = self.file.tensor_info(&name).ok_or_else(|| BundleError::Component {
            path: self.path().to_path_buf(),
            component: c.id.clone(),
            what: format!("its tensor {name:?} is missing (the component is missing from the bundle)"),
        })?;
        if info.ty != nexus_kernels::GgmlType::I8 || info.dims.len() != 1 {
            return Err(self.corrupt(c, format!("{name:?} is {} {:?}, expected a 1-D i8 tensor", info.ty, info.dims)));
        }
        Ok(self.file.tensor_data(info))
    }

    /// The component's own GGUF header, as stored at the start of its rest.
    pub fn header(&self, c: &Component) -> Result<GgufHeader, BundleError> {
        GgufHeader::parse(self.rest(c)?).map_err(|e| self.corrupt(c, format!("its stored GGUF header: {e}")))
    }

    fn plan(&self, c: &Component) -> Result<Plan<'_>, BundleError> {
        let rest = self.rest(c)?;
        let header = self.header(c)?;
        let mut spans = Vec::with_capacity(header.tensors.len());
        let mut tensors = Vec::with_capacity(header.tensors.len());
        for t in &header.tensors {
            let name = format!("{}{}", c.tensor_prefix, t.name);
            let info = self.file.tensor_info(&name).ok_or_else(|| BundleError::Component {
                path: self.path().to_path_buf(),
                component: c.id.clone(),
                what: format!("its tensor {name:?} is missing"),
            })?;
            if info.dims != t.dims || info.ty != t.ty {
                let what = format!("tensor {name:?} is {} {:?} in the bundle but {} {:?} in the component's header", info.ty, info.dims, t.ty, t.dims);
                return Err(self.corrupt(c, what));
            }
            let start = header.data_offset.checked_add(t.offset).ok_or_else(|| self.corrupt(c, format!("tensor {name:?}: offset overflows")))?;
            spans.push((start, t.n_bytes));
            tensors.push(self.file.tensor_data(info));
        }
        let steps = layout::plan(&spans, c.size).map_err(|e| self.corrupt(c, e))?;
        let need = layout::rest_len(&steps);
        if need != rest.len() as u64 {
            let what = format!("its rest holds {} bytes, a {}-byte file with these tensors needs {need}", rest.len(), c.size);
            return Err(self.corrupt(c, what));
        }
        Ok(Plan { steps, rest, tensors })
    }

    /// Writes component `id` exactly as it was packed, streaming; checks its size and sha256
    /// on the way (on a mismatch the bytes written are not the original file).
    pub fn write_component(&self, id: &str, out: &mut dyn Write) -> Result<(), BundleError> {
        let c = self.component(id)?;
        let plan = self.plan(c)?;
        let mut hashing = HashingWriter { inner: out, hasher: Sha256::new(), n: 0 };
        layout::join(&plan.steps, plan.rest, &plan.tensors, &mut hashing)
            .map_err(|source| BundleError::Io { path: self.path().to_path_buf(), component: c.id.clone(), source })?;
        let (n, digest) = (hashing.n, hex(&hashing.hasher.finalize()));
        if n != c.size || digest != c.sha256 {
            let what = format!("its contents hash to sha256 {digest} ({n} bytes); the manifest says {} ({} bytes)", c.sha256, c.size);
            return Err(self.corrupt(c, what));
        }
        Ok(())
    }

    /// Checks one component: rebuilt, hashed, compared with the manifest.
    pub fn check_component(&self, id: &str) -> Result<(), BundleError> {
        self.write_component(id, &mut std::io::sink())
    }

    /// Checks every component, then that the bundle's own metadata is the backbone's (the
    /// model loads from it) and that every tensor belongs to a component.
    pub fn verify(&self) -> Vec<ComponentCheck> {
        let mut checks: Vec<ComponentCheck> =
            self.manifest.components.iter().map(|c| ComponentCheck { id: c.id.clone(), result: self.check_component(&c.id) }).collect();
        if checks[0].result.is_ok() {
            checks[0].result = self.check_backbone_metadata();
        }
        checks.push(ComponentCheck { id: "bundle".into(), result: self.check_tensors_claimed() });
        checks
    }

    fn check_backbone_metadata(&self) -> Result<(), BundleError> {
        let c = self.manifest.backbone();
        let header = self.header(c)?;
        let ours: Vec<_> = self.file.metadata().iter().filter(|(k, _)| !k.starts_with(KEY_PREFIX)).collect();
        let differs = ours.len() != header.metadata.len()
            || ours.iter().zip(&header.metadata).any(|((k1, v1), (k2, v2))| {
                let (mut a, mut b) = (Vec::new(), Vec::new());
                v1.encode(&mut a);
                v2.encode(&mut b);
                k1 != k2 || a != b
            });
        if differs {
            let key = ours.iter().zip(&header.metadata).find(|(x, y)| x.0 != y.0 || x.1 != y.1).map(|(x, _)| x.0.clone());
            let what = format!(
                "the bundle's metadata differs from the backbone's own{}",
                key.map_or(String::new(), |k| format!(" (first at key {k:?})"))
            );
            return Err(self.corrupt(c, what));
        }
        Ok(())
    }

    fn check_tensors_claimed(&self) -> Result<(), BundleError> {
        let mut claimed = std::collections::HashSet::new();
        for c in &self.manifest.components {
            claimed.insert(rest_tensor(&c.id));
            // A header that does not parse failed its component's check already; which
            // tensors it would claim is unknown, so there is nothing more to say here.
            let Ok(h) = self.header(c) else { return Ok(()) };
            claimed.extend(h.tensors.iter().map(|t| format!("{}{}", c.tensor_prefix, t.name)));
        }
        match self.file.tensors().iter().find(|t| !claimed.contains(&t.name)) {
            Some(t) => Err(BundleError::Manifest {
                path: self.path().to_path_buf(),
                what: format!("tensor {:?} belongs to no component of the manifest", t.name),
            }),
            None => Ok(()),
        }
    }

    /// A small component rebuilt in memory and opened as a GGUF named `BUNDLE#ID` in errors;
    /// its sha256 is checked first.
    pub fn component_file(&self, id: &str) -> Result<GgufFile, BundleError> {
        let c = self.component(id)?;
        // `plan` checked that the size is what the bundle's own bytes hold.
        self.plan(c)?;
        let mut bytes = Vec::with_capacity(c.size as usize);
        self.write_component(id, &mut bytes)?;
        Ok(GgufFile::from_bytes(self.component_path(id), bytes)?)
    }

    /// What errors call a component: `BUNDLE#ID`.
    pub fn component_path(&self, id: &str) -> PathBuf {
        PathBuf::from(format!("{}#{id}", self.path().display()))
    }

    /// The adapter of a capability, checked and loaded (not yet attached to a model).
    pub fn adapter(&self, capability: &str) -> Result<LoraAdapter, BundleError> {
        let cap = self.manifest.capability(capability).ok_or_else(|| BundleError::Missing {
            path: self.path().to_path_buf(),
            what: format!("capability {capability:?}"),
            available: self.manifest.capability_list(),
        })?;
        let file = self.component_file(&cap.component)?;
        LoraAdapter::from_file(&file).map_err(|source| BundleError::Model { component: cap.component.clone(), source })
    }

    /// The bundled voice, checked and loaded, if there is one.
    pub fn voice(&self) -> Result<Option<Voice>, BundleError> {
        let Some(c) = self.manifest.of_kind(Kind::Voice) else { return Ok(None) };
        let file = self.component_file(&c.id)?;
        Voice::from_file(&file).map(Some).map_err(|source| BundleError::Voice { component: c.id.clone(), source })
    }
}

struct HashingWriter<'a> {
    inner: &'a mut dyn Write,
    hasher: Sha256,
    n: u64,
}

impl Write for HashingWriter<'_> {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        let n = self.inner.write(buf)?;
        self.hasher.update(&buf[..n]);
        self.n += n as u64;
        Ok(n)
    }

    fn flush(&mut self) -> std::io::Result<()> {
        self.inner.flush()
    }
}

/// Lowercase hex of a digest.
pub fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}
