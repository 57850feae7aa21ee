//! The GGUF v3 writer. Output goes to a temporary file in the destination's folder and is
//! renamed into place only once complete, so a failure never leaves a half-written model.

use std::borrow::Cow;
use std::fs::File;
use std::io::{BufWriter, Write};
use std::path::Path;

use nexus_kernels::GgmlType;

use super::reader::align_up;
use super::{GgufError, GgufErrorKind, Value, DEFAULT_ALIGNMENT, GGUF_MAGIC};

struct PendingTensor<'a> {
    name: String,
    dims: Vec<u64>,
    ty: GgmlType,
    data: Cow<'a, [u8]>,
}

/// Collects metadata and tensors, then writes them as one GGUF file. Tensor data may be
/// borrowed (e.g. from another file's map) so rewriting a model copies no more than it must.
#[derive(Default)]
pub struct GgufWriter<'a> {
    metadata: Vec<(String, Value)>,
    tensors: Vec<PendingTensor<'a>>,
}

impl<'a> GgufWriter<'a> {
    pub fn new() -> Self {
        Self::default()
    }

    /// Sets a key, replacing an earlier value of the same key in place.
    pub fn set(&mut self, key: impl Into<String>, value: Value) {
        let key = key.into();
        match self.metadata.iter_mut().find(|(k, _)| *k == key) {
            Some(slot) => slot.1 = value,
            None => self.metadata.push((key, value)),
        }
    }

    fn alignment(&self) -> u64 {
        self.metadata
            .iter()
            .find(|(k, _)| k == "general.alignment")
            .and_then(|(_, v)| v.as_u64())
            .unwrap_or(DEFAULT_ALIGNMENT)
    }

    /// Adds a tensor; `dims` in ggml order (innermost first). The data size must match.
    pub fn add_tensor(
        &mut self,
        name: impl Into<String>,
        dims: &[u64],
        ty: GgmlType,
        data: impl Into<Cow<'a, [u8]>>,
    ) -> Result<(), GgufErrorKind> {
        let name = name.into();
        let data = data.into();
        let n: u64 = dims.iter().product();
        let expected = ty.row_size(n).ok_or_else(|| GgufErrorKind::BadTensor {
            name: name.clone(),
            reason: format!("{n} elements is not a whole number of {ty} blocks"),
        })?;
        if expected != data.len() as u64 {
            return Err(GgufErrorKind::BadTensor {
                name,
                reason: format!("{} bytes of data, shape {dims:?} of {ty} needs {expected}", data.len()),
            });
        }
        if self.tensors.iter().any(|t| t.name == name) {
            return Err(GgufErrorKind::DuplicateTensor(name));
        }
        self.tensors.push(PendingTensor { name, dims: dims.to_vec(), ty, data });
        Ok(())
    }

    /// Writes the file atomically: temporary file in the same folder, flush, fsync, rename.
    pub fn write(&self, path: impl AsRef<Path>) -> Result<(), GgufError> {
        let path = path.as_ref();
        let err = |e: std::io::Error| GgufError::new(path, GgufErrorKind::Io(e));
        let alignment = self.alignment();
        if alignment == 0 || !alignment.is_power_of_two() {
            return Err(GgufError::new(path, GgufErrorKind::BadAlignment(alignment)));
        }
        let dir = match path.parent() {
            Some(p) if !p.as_os_str().is_empty() => p,
            _ => Path::new("."),
        };
        let file_name = path.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default();
        let tmp = dir.join(format!(".{file_name}.tmp{}", std::process::id()));
        let result = (|| {
            let file = File::create(&tmp)?;
            let mut w = BufWriter::with_capacity(1 << 20, file);
            self.write_to(&mut w, alignment)?;
            let file = w.into_inner().map_err(|e| e.into_error())?;
            file.sync_all()?;
            std::fs::rename(&tmp, path)
        })();
        if result.is_err() {
            let _ = std::fs::remove_file(&tmp);
        }
        result.map_err(err)
    }

    fn write_to<W: Write>(&self, w: &mut W, alignment: u64) -> std::io::Result<()> {
        let mut header = Vec::new();
        header.extend_from_slice(&GGUF_MAGIC.to_le_bytes());
        header.extend_from_slice(&3u32.to_le_bytes());
        header.extend_from_slice(&(self.tensors.len() as u64).to_le_bytes());
        header.extend_from_slice(&(self.metadata.len() as u64).to_le_bytes());
        for (key, value) in &self.metadata {
            encode_string(&mut header, key);
            header.extend_from_slice(&(value.value_type() as u32).to_le_bytes());
            encode_value(&mut header, value);
        }
        let mut offset = 0u64;
        for t in &self.tensors {
            encode_string(&mut header, &t.name);
            header.extend_from_slice(&(t.dims.len() as u32).to_le_bytes());
            for d in &t.dims {
                header.extend_from_slice(&d.to_le_bytes());
            }
            header.extend_from_slice(&(t.ty as u32).to_le_bytes());
            header.extend_from_slice(&offset.to_le_bytes());
            offset = align_up(offset + t.data.len() as u64, alignment);
        }
        let zeros = vec![0u8; alignment as usize];
        let padding = |len: u64| &zeros[..(align_up(len, alignment) - len) as usize];
        w.write_all(&header)?;
        w.write_all(padding(header.len() as u64))?;
        for t in &self.tensors {
            w.write_all(&t.data)?;
            w.write_all(padding(t.data.len() as u64))?;
        }
        w.flush()
    }
}

fn encode_string(out: &mut Vec<u8>, s: &str) {
    out.extend_from_slice(&(s.len() as u64).to_le_bytes());
    out.extend_from_slice(s.as_bytes());
}

fn encode_value(out: &mut Vec<u8>, v: &Value) {
    match v {
        Value::U8(x) => out.push(*x),
        Value::I8(x) => out.push(*x as u8),
        Value::U16(x) => out.extend_from_slice(&x.to_le_bytes()),
        Value::I16(x) => out.extend_from_slice(&x.to_le_bytes()),
        Value::U32(x) => out.extend_from_slice(&x.to_le_bytes()),
        Value::I32(x) => out.extend_from_slice(&x.to_le_bytes()),
        Value::F32(x) => out.extend_from_slice(&x.to_le_bytes()),
        Value::Bool(x) => out.push(*x as u8),
        Value::String(s) => encode_string(out, s),
        Value::U64(x) => out.extend_from_slice(&x.to_le_bytes()),
        Value::I64(x) => out.extend_from_slice(&x.to_le_bytes()),
        Value::F64(x) => out.extend_from_slice(&x.to_le_bytes()),
        Value::Array(elem, items) => {
            out.extend_from_slice(&(*elem as u32).to_le_bytes());
            out.extend_from_slice(&(items.len() as u64).to_le_bytes());
            for item in items {
                encode_value(out, item);
            }
        }
    }
}
