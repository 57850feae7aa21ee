//! A GGUF file's tensor data read on demand with plain reads into a reused buffer, rather than
//! through the file's memory map: pages of a map stay in the process's resident set once
//! touched, reads into a reused buffer do not. Writers that stream a model tensor by tensor
//! (`quantize`, `lora_merge`) read their input through it and stay near one tensor of memory.

use std::fs::File;
use std::io::{Read, Seek, SeekFrom};
use std::path::Path;

use nexus_runtime::gguf::{GgufError, GgufErrorKind, GgufFile, TensorInfo};

/// Input bytes read per step inside one tensor: rows are read this many bytes at a time into
/// a reused buffer, so a tensor in flight costs its output plus this much.
pub(crate) const CHUNK_BYTES: usize = 8 << 20;

pub(crate) struct TensorSource<'a> {
    pub path: &'a Path,
    file: File,
    data_offset: u64,
    /// How much input a chunked pass reads per step (`CHUNK_BYTES`; tests go smaller).
    pub chunk_bytes: usize,
    /// Reused between chunks and tensors; at most `chunk_bytes` (or one row) long.
    pub buf: Vec<u8>,
}

impl<'a> TensorSource<'a> {
    /// Opens `path` again for reading the tensor data of `gguf` (the same file, parsed).
    pub fn open(path: &'a Path, gguf: &GgufFile) -> Result<Self, GgufError> {
        let file = File::open(path).map_err(|e| GgufError::new(path, GgufErrorKind::Io(e)))?;
        Ok(TensorSource { path, file, data_offset: gguf.data_offset, chunk_bytes: CHUNK_BYTES, buf: Vec::new() })
    }

    /// `dst.len()` bytes from `offset` within the data section.
    pub fn read_at(&mut self, offset: u64, dst: &mut [u8]) -> Result<(), GgufError> {
        (&self.file)
            .seek(SeekFrom::Start(self.data_offset + offset))
            .and_then(|_| (&self.file).read_exact(dst))
            .map_err(|e| GgufError::new(self.path, GgufErrorKind::Io(e)))
    }

    /// A whole tensor's bytes.
    pub fn read(&mut self, info: &TensorInfo) -> Result<Vec<u8>, GgufError> {
        let mut out = vec![0u8; info.n_bytes as usize];
        self.read_at(info.offset, &mut out)?;
        Ok(out)
    }
}
