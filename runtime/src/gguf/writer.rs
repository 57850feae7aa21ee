//! The GGUF v3 writer. Output goes to a temporary file in the destination's folder and is
//! renamed into place only once complete, so a failure never leaves a half-written model.

use std::borrow::Cow;
use std::fs::File;
use std::io::{BufWriter, Write};
use std::path::Path;

use nexus_kernels::GgmlType;

use super::reader::align_up;
use super::value::encode_string;
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
        self.write_atomic(path, |w, alignment| {
            self.write_to(w, alignment).map_err(|e| GgufError::new(path, GgufErrorKind::Io(e)))
        })
    }

    /// The bytes `write` would put in the file, in memory: for GGUFs that are only read
    /// back in the same process (a fuzz target building a vocabulary per input), where a
    /// file would cost a create, fsync and rename each time.
    pub fn to_bytes(&self) -> Result<Vec<u8>, GgufErrorKind> {
        let alignment = self.alignment();
        if alignment == 0 || !alignment.is_power_of_two() {
            return Err(GgufErrorKind::BadAlignment(alignment));
        }
        let mut out = Vec::new();
        self.write_to(&mut out, alignment).map_err(GgufErrorKind::Io)?;
        Ok(out)
    }

    /// Writes metadata, the tensors added with `add_tensor`, then `streamed` tensors whose
    /// bytes come from `fill(i)` one at a time, in order: a converter holds one tensor in memory
    /// instead of the whole model. Atomic like `write`; an error from `fill` (or a size that
    /// disagrees with the spec) removes the temporary file and is returned unchanged.
    pub fn write_streaming<E: From<GgufError>>(
        &self,
        path: impl AsRef<Path>,
        streamed: &[StreamedTensor],
        mut fill: impl FnMut(usize) -> Result<Vec<u8>, E>,
    ) -> Result<(), E> {
        let path = path.as_ref();
        let mut specs = Vec::with_capacity(streamed.len());
        for t in streamed {
            let n: u64 = t.dims.iter().product();
            let size = t.ty.row_size(n).ok_or_else(|| {
                GgufError::new(path, GgufErrorKind::BadTensor {
                    name: t.name.clone(),
                    reason: format!("{n} elements is not a whole number of {} blocks", t.ty),
                })
            })?;
            if self.tensors.iter().any(|p| p.name == t.name) || specs.iter().any(|(s, _): &(&StreamedTensor, u64)| s.name == t.name) {
                return Err(GgufError::new(path, GgufErrorKind::DuplicateTensor(t.name.clone())).into());
            }
            specs.push((t, size));
        }
        self.write_atomic(path, |w, alignment| {
            let infos = self.tensors.iter().map(|t| (t.name.as_str(), t.dims.as_slice(), t.ty, t.data.len() as u64));
            let infos = infos.chain(specs.iter().map(|(s, size)| (s.name.as_str(), s.dims.as_slice(), s.ty, *size)));
            let io = |e| GgufError::new(path, GgufErrorKind::Io(e));
            self.write_header(w, alignment, infos.collect()).map_err(io)?;
            self.write_data(w, alignment).map_err(io)?;
            for (i, (spec, size)) in specs.iter().enumerate() {
                let data = fill(i)?;
                if data.len() as u64 != *size {
                    let reason = format!("produced {} bytes, its spec needs {size}", data.len());
                    return Err(GgufError::new(path, GgufErrorKind::BadTensor { name: spec.name.clone(), reason }).into());
                }
                w.write_all(&data).map_err(|e| GgufError::new(path, GgufErrorKind::Io(e)))?;
                w.write_all(&vec![0u8; (align_up(*size, alignment) - size) as usize])
                    .map_err(|e| GgufError::new(path, GgufErrorKind::Io(e)))?;
            }
            w.flush().map_err(|e| GgufError::new(path, GgufErrorKind::Io(e)).into())
        })
    }

    fn write_atomic<E: From<GgufError>>(
        &self,
        path: &Path,
        body: impl FnOnce(&mut BufWriter<File>, u64) -> Result<(), E>,
    ) -> Result<(), E> {
        let err = |e: std::io::Error| GgufError::new(path, GgufErrorKind::Io(e));
        let alignment = self.alignment();
        if alignment == 0 || !alignment.is_power_of_two() {
            return Err(GgufError::new(path, GgufErrorKind::BadAlignment(alignment)).into());
        }
        let dir = match path.parent() {
            Some(p) if !p.as_os_str().is_empty() => p,
            _ => Path::new("."),
        };
        let file_name = path.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default();
        let tmp = dir.join(format!(".{file_name}.tmp{}", std::process::id()));
        let result = (|| {
            let file = File::create(&tmp).map_err(err)?;
            let mut w = BufWriter::with_capacity(1 << 20, file);
            body(&mut w, alignment)?;
            let file = w.into_inner().map_err(|e| err(e.into_error()))?;
            file.sync_all().map_err(err)?;
            std::fs::rename(&tmp, path).map_err(err)?;
            Ok(())
        })();
        if result.is_err() {
            let _ = std::fs::remove_file(&tmp);
        }
        result
    }

    fn write_to<W: Write>(&self, w: &mut W, alignment: u64) -> std::io::Result<()> {
        let infos = self.tensors.iter().map(|t| (t.name.as_str(), t.dims.as_slice(), t.ty, t.data.len() as u64));
        self.write_header(w, alignment, infos.collect())?;
        self.write_data(w, alignment)?;
        w.flush()
    }

    /// Header, metadata and tensor infos (name, dims, type, data size), padded to `alignment`.
    fn write_header<W: Write>(
        &self,
        w: &mut W,
        alignment: u64,
        infos: Vec<(&str, &[u64], GgmlType, u64)>,
    ) -> std::io::Result<()> {
        let mut header = Vec::new();
        header.extend_from_slice(&GGUF_MAGIC.to_le_bytes());
        header.extend_from_slice(&3u32.to_le_bytes());
        header.extend_from_slice(&(infos.len() as u64).to_le_bytes());
        header.extend_from_slice(&(self.metadata.len() as u64).to_le_bytes());
        for (key, value) in &self.metadata {
            encode_string(&mut header, key);
            header.extend_from_slice(&(value.value_type() as u32).to_le_bytes());
            value.encode(&mut header);
        }
        let mut offset = 0u64;
        for (name, dims, ty, size) in infos {
            encode_string(&mut header, name);
            header.extend_from_slice(&(dims.len() as u32).to_le_bytes());
            for d in dims {
                header.extend_from_slice(&d.to_le_bytes());
            }
            header.extend_from_slice(&(ty as u32).to_le_bytes());
            header.extend_from_slice(&offset.to_le_bytes());
            offset = align_up(offset + size, alignment);
        }
        w.write_all(&header)?;
        w.write_all(&vec![0u8; (align_up(header.len() as u64, alignment) - header.len() as u64) as usize])
    }

    /// The data of the tensors added with `add_tensor`, each padded to `alignment`.
    fn write_data<W: Write>(&self, w: &mut W, alignment: u64) -> std::io::Result<()> {
        for t in &self.tensors {
            w.write_all(&t.data)?;
            let len = t.data.len() as u64;
            w.write_all(&vec![0u8; (align_up(len, alignment) - len) as usize])?;
        }
        Ok(())
    }
}

/// A tensor whose bytes `GgufWriter::write_streaming` asks for only when it reaches it.
#[derive(Debug, Clone)]
pub struct StreamedTensor {
    pub name: String,
    /// ggml order: `dims[0]` is the contiguous (innermost) dimension.
    pub dims: Vec<u64>,
    pub ty: GgmlType,
}

