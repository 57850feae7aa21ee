//! One component read for packing: its manifest entry (size, sha256, metadata) and its rest.

use nexus_runtime::bundle::layout;
use nexus_runtime::bundle::{hex, Component, Kind};
use nexus_runtime::gguf::GgufFile;
use sha2::{Digest, Sha256};

use super::PackError;

pub(crate) struct Packed {
    pub component: Component,
    /// The file's bytes outside its tensors' data, in file order (header first).
    pub rest: Vec<u8>,
}

impl Packed {
    /// Cuts `file` into tensors and rest, and checks that joining them gives the file back
    /// (the sha256 in the manifest is of that join, computed from the map without a copy).
    pub fn read(file: &GgufFile, id: &str, kind: Kind, prefix: &str) -> Result<Packed, PackError> {
        let bytes = file.bytes();
        let spans: Vec<(u64, u64)> = file.tensors().iter().map(|t| (file.data_offset + t.offset, t.n_bytes)).collect();
        let invalid = |what: String| PackError::Invalid { path: file.path().to_path_buf(), component: id.into(), what };
        let steps = layout::plan(&spans, bytes.len() as u64).map_err(invalid)?;
        let rest = layout::split_rest(bytes, &steps, &spans);
        let data: Vec<&[u8]> = file.tensors().iter().map(|t| file.tensor_data(t)).collect();
        let mut hasher = HashSink(Sha256::new());
        let n = layout::join(&steps, &rest, &data, &mut hasher).map_err(|e| invalid(e.to_string()))?;
        let mut whole = Sha256::new();
        whole.update(bytes);
        let sha256 = hex(&hasher.0.finalize());
        if n != bytes.len() as u64 || sha256 != hex(&whole.finalize()) {
            return Err(invalid("splitting the file into tensors and rest does not give it back".into()));
        }
        let text = |key: &str| file.get(key).and_then(|v| v.as_str()).map(str::to_string);
        let file_name = file.path().file_name().map_or_else(|| format!("{id}.gguf"), |n| n.to_string_lossy().into_owned());
        let component = Component {
            id: id.into(),
            kind,
            file_name,
            size: bytes.len() as u64,
            sha256,
            tensor_prefix: prefix.into(),
            n_tensors: file.tensors().len(),
            architecture: text("general.architecture"),
            name: text("general.name"),
            license: text("general.license"),
        };
        Ok(Packed { component, rest })
    }
}

struct HashSink(Sha256);

impl std::io::Write for HashSink {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.update(buf);
        Ok(buf.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}
