//! The manifest: a JSON document in the bundle's metadata (`nexus.bundle.manifest`) listing
//! the components, their sizes and sha256, the capabilities, the licences and a summary of
//! the backbone's verify report.

use std::path::Path;

use serde::{Deserialize, Serialize};

use super::{BundleError, VerifyStatus};

/// The manifest's `format` value.
pub const FORMAT: &str = "nexus-bundle";
/// The manifest's `version`, raised whenever a reader of an older version would misread a file.
pub const VERSION: u32 = 1;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Kind {
    Backbone,
    Adapter,
    Router,
    Voice,
}

/// One packed file.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Component {
    /// `backbone`, `adapter.NAME`, `router` or `voice`; also the suffix of its `nexus.rest.` tensor.
    pub id: String,
    pub kind: Kind,
    /// The file's name when it was packed; `bundle unpack` writes it under this name.
    pub file_name: String,
    /// Bytes of the original file.
    pub size: u64,
    /// sha256 of the original file, lowercase hex.
    pub sha256: String,
    /// Prefix of its tensors' names in the bundle (empty for the backbone).
    pub tensor_prefix: String,
    pub n_tensors: usize,
    /// `general.architecture`, when the file has one.
    pub architecture: Option<String>,
    /// `general.name`, when the file has one.
    pub name: Option<String>,
    /// `general.license`, when the file has one.
    pub license: Option<String>,
}

/// A capability the bundle can apply: its name and the adapter component that carries it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Capability {
    pub name: String,
    pub component: String,
}

/// A licence the bundle's user must honour: a component's, or the phonemizer's.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct License {
    /// A component id, or `phonemizer (espeak-ng)`.
    pub component: String,
    /// An SPDX expression, or `unknown` when the file does not say.
    pub license: String,
    pub note: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Manifest {
    pub format: String,
    pub version: u32,
    /// The backbone first, then adapters, router and voice in the order they were packed.
    pub components: Vec<Component>,
    pub capabilities: Vec<Capability>,
    pub licenses: Vec<License>,
    /// The backbone's verify report summarized (the report itself stays in the backbone's
    /// `nexus.distill.verify_report`).
    pub verify: VerifyStatus,
}

impl Manifest {
    pub fn to_json(&self) -> String {
        serde_json::to_string_pretty(self).expect("a manifest serializes")
    }

    /// Parses and checks the manifest of the bundle `path`: format and version, one backbone
    /// first, unique ids and prefixes, every capability naming an adapter.
    pub fn parse(path: &Path, json: &str) -> Result<Self, BundleError> {
        let bad = |what: String| BundleError::Manifest { path: path.to_path_buf(), what };
        let m: Manifest = serde_json::from_str(json).map_err(|e| bad(e.to_string()))?;
        if m.format != FORMAT {
            return Err(bad(format!("format is {:?}, expected {FORMAT:?}", m.format)));
        }
        if m.version != VERSION {
            return Err(bad(format!("version {} is not supported (this build reads version {VERSION})", m.version)));
        }
        match m.components.first() {
            Some(c) if c.kind == Kind::Backbone && c.id == "backbone" && c.tensor_prefix.is_empty() => {}
            _ => return Err(bad("the first component must be the backbone (id \"backbone\", no tensor prefix)".into())),
        }
        for (i, c) in m.components.iter().enumerate() {
            let expected_id = match c.kind {
                Kind::Backbone => "backbone".to_string(),
                Kind::Router => "router".to_string(),
                Kind::Voice => "voice".to_string(),
                Kind::Adapter => match c.id.strip_prefix("adapter.") {
                    Some(name) if !name.is_empty() => c.id.clone(),
                    _ => return Err(bad(format!("adapter component id {:?} is not adapter.NAME", c.id))),
                },
            };
            if c.id != expected_id {
                return Err(bad(format!("component {:?} of kind {:?} should have id {expected_id:?}", c.id, c.kind)));
            }
            if i > 0 && c.tensor_prefix != format!("{}.", c.id) {
                return Err(bad(format!("component {:?} has tensor prefix {:?}, expected {:?}", c.id, c.tensor_prefix, format!("{}.", c.id))));
            }
            if m.components[..i].iter().any(|o| o.id == c.id) {
                return Err(bad(format!("component {:?} is listed twice", c.id)));
            }
            if c.sha256.len() != 64 || !c.sha256.bytes().all(|b| b.is_ascii_hexdigit()) {
                return Err(bad(format!("component {:?}: sha256 {:?} is not 64 hex digits", c.id, c.sha256)));
            }
        }
        for cap in &m.capabilities {
            if !m.components.iter().any(|c| c.kind == Kind::Adapter && c.id == cap.component) {
                return Err(bad(format!("capability {:?} names component {:?}, which is not an adapter of the bundle", cap.name, cap.component)));
            }
        }
        Ok(m)
    }

    pub fn component(&self, id: &str) -> Option<&Component> {
        self.components.iter().find(|c| c.id == id)
    }

    pub fn backbone(&self) -> &Component {
        &self.components[0]
    }

    /// The component of kind `kind`, for the router and the voice (there is at most one).
    pub fn of_kind(&self, kind: Kind) -> Option<&Component> {
        self.components.iter().find(|c| c.kind == kind)
    }

    pub fn capability(&self, name: &str) -> Option<&Capability> {
        self.capabilities.iter().find(|c| c.name == name)
    }

    /// The capability names, comma-separated, for messages.
    pub fn capability_list(&self) -> String {
        match self.capabilities.is_empty() {
            true => "no adapters".to_string(),
            false => self.capabilities.iter().map(|c| c.name.as_str()).collect::<Vec<_>>().join(", "),
        }
    }
}
