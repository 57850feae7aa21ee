//! The GGUF reader: parses the header into owned metadata and tensor infos, and hands out
//! tensor data as slices of the memory map (zero copy).

use std::collections::HashMap;
use std::fs::File;
use std::path::{Path, PathBuf};

use memmap2::Mmap;
use nexus_kernels::GgmlType;

use super::{GgufError, GgufErrorKind, Value, ValueType, DEFAULT_ALIGNMENT, GGUF_MAGIC};

/// Arrays of arrays deeper than this are refused: no real file nests more than two levels,
/// and unbounded recursion on a hostile file would overflow the stack.
const MAX_ARRAY_DEPTH: usize = 8;
/// ggml supports at most four dimensions.
const MAX_DIMS: u32 = 4;
/// Metadata values (array elements included) one file may hold: 2^26, over a hundred times
/// the largest real vocabulary's tokens + merges. Each value takes 32 bytes in memory against
/// as little as one in the file, so without a cap a 1 GB array of u8 would take 32 GB.
pub const MAX_METADATA_VALUES: u64 = 1 << 26;

#[derive(Debug, Clone)]
pub struct TensorInfo {
    pub name: String,
    /// ggml order: `dims[0]` is the contiguous (innermost) dimension.
    pub dims: Vec<u64>,
    pub ty: GgmlType,
    /// Offset from the start of the data section.
    pub offset: u64,
    pub n_bytes: u64,
}

impl TensorInfo {
    pub fn n_elements(&self) -> u64 {
        self.dims.iter().product()
    }
}

/// Where an open file's bytes live: a read-only map of the file, or bytes in memory (a
/// component rebuilt from a bundle, a fuzzer's input).
enum Bytes {
    Map(Mmap),
    Owned(Vec<u8>),
}

impl std::ops::Deref for Bytes {
    type Target = [u8];
    fn deref(&self) -> &[u8] {
        match self {
            Bytes::Map(m) => m,
            Bytes::Owned(v) => v,
        }
    }
}

/// A GGUF header parsed on its own, without the data section it describes: the metadata,
/// the tensor infos and where the data section starts. Tensor bounds are not checked here.
#[derive(Debug, Clone)]
pub struct GgufHeader {
    pub version: u32,
    pub metadata: Vec<(String, Value)>,
    pub tensors: Vec<TensorInfo>,
    pub alignment: u64,
    pub data_offset: u64,
}

impl GgufHeader {
    /// Parses the header at the start of `buf` (a whole file or only its first bytes).
    pub fn parse(buf: &[u8]) -> Result<Self, GgufErrorKind> {
        parse_header(buf).map(|(h, _, _)| h)
    }
}

/// An open GGUF file. Metadata and tensor infos are parsed once; tensor data stays in the map.
pub struct GgufFile {
    path: PathBuf,
    mmap: Bytes,
    pub version: u32,
    metadata: Vec<(String, Value)>,
    metadata_index: HashMap<String, usize>,
    tensors: Vec<TensorInfo>,
    tensor_index: HashMap<String, usize>,
    pub alignment: u64,
    pub data_offset: u64,
}

impl GgufFile {
    pub fn open(path: impl AsRef<Path>) -> Result<Self, GgufError> {
        let path = path.as_ref().to_path_buf();
        let err = |kind| GgufError::new(&path, kind);
        let file = File::open(&path).map_err(|e| err(GgufErrorKind::Io(e)))?;
        // SAFETY: the map is read-only; like every mmap-based loader we assume the file is
        // not truncated underneath us while it is open.
        let mmap = unsafe { Mmap::map(&file) }.map_err(|e| err(GgufErrorKind::Io(e)))?;
        Self::parse(path, Bytes::Map(mmap))
    }

    /// Parses a GGUF held in memory; `path` is only what errors call it (e.g. a bundle and
    /// the component the bytes were rebuilt from).
    pub fn from_bytes(path: impl Into<PathBuf>, bytes: Vec<u8>) -> Result<Self, GgufError> {
        Self::parse(path.into(), Bytes::Owned(bytes))
    }

    fn parse(path: PathBuf, mmap: Bytes) -> Result<Self, GgufError> {
        let err = |kind| GgufError::new(&path, kind);
        let (header, metadata_index, tensor_index) = parse_header(&mmap).map_err(err)?;
        let GgufHeader { version, metadata, tensors, alignment, data_offset } = header;
        let file_len = mmap.len() as u64;
        for t in &tensors {
            let start = data_offset.checked_add(t.offset);
            let end = start.and_then(|s| s.checked_add(t.n_bytes));
            match (start, end) {
                (Some(_), Some(end)) if end <= file_len => {}
                _ => {
                    return Err(err(GgufErrorKind::TensorPastEnd {
                        name: t.name.clone(),
                        start: data_offset.saturating_add(t.offset),
                        end: data_offset.saturating_add(t.offset).saturating_add(t.n_bytes),
                        file_len,
                    }))
                }
            }
        }

        Ok(GgufFile {
            path,
            mmap,
            version,
            metadata,
            metadata_index,
            tensors,
            tensor_index,
            alignment,
            data_offset,
        })
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// An error about this file, for callers that validate its contents further.
    pub fn error(&self, kind: GgufErrorKind) -> GgufError {
        GgufError::new(&self.path, kind)
    }

    /// Metadata in file order.
    pub fn metadata(&self) -> &[(String, Value)] {
        &self.metadata
    }

    pub fn get(&self, key: &str) -> Option<&Value> {
        self.metadata_index.get(key).map(|&i| &self.metadata[i].1)
    }

    fn require(&self, key: &str) -> Result<&Value, GgufError> {
        self.get(key).ok_or_else(|| self.error(GgufErrorKind::MissingKey(key.to_string())))
    }

    fn wrong_type(&self, key: &str, expected: &'static str, v: &Value) -> GgufError {
        self.error(GgufErrorKind::WrongType { key: key.into(), expected, found: v.type_name() })
    }

    pub fn get_str(&self, key: &str) -> Result<&str, GgufError> {
        let v = self.require(key)?;
        v.as_str().ok_or_else(|| self.wrong_type(key, "string", v))
    }

    pub fn get_u64(&self, key: &str) -> Result<u64, GgufError> {
        let v = self.require(key)?;
        v.as_u64().ok_or_else(|| self.wrong_type(key, "unsigned integer", v))
    }

    pub fn get_f32(&self, key: &str) -> Result<f32, GgufError> {
        let v = self.require(key)?;
        v.as_f64().map(|x| x as f32).ok_or_else(|| self.wrong_type(key, "number", v))
    }

    /// An optional key: absent is `Ok(None)`, present with the wrong type is an error.
    pub fn opt<'a, T>(
        &'a self,
        key: &str,
        get: impl Fn(&'a Self, &str) -> Result<T, GgufError>,
    ) -> Result<Option<T>, GgufError> {
        if self.get(key).is_some() {
            get(self, key).map(Some)
        } else {
            Ok(None)
        }
    }

    pub fn get_array(&self, key: &str) -> Result<&[Value], GgufError> {
        let v = self.require(key)?;
        v.as_array().ok_or_else(|| self.wrong_type(key, "array", v))
    }

    pub fn get_str_array(&self, key: &str) -> Result<Vec<&str>, GgufError> {
        let v = self.require(key)?;
        let items = v.as_array().ok_or_else(|| self.wrong_type(key, "array[string]", v))?;
        items.iter().map(|x| x.as_str().ok_or_else(|| self.wrong_type(key, "array[string]", v))).collect()
    }

    pub fn get_f32_array(&self, key: &str) -> Result<Vec<f32>, GgufError> {
        let v = self.require(key)?;
        let items = v.as_array().ok_or_else(|| self.wrong_type(key, "array[number]", v))?;
        items
            .iter()
            .map(|x| x.as_f64().map(|f| f as f32).ok_or_else(|| self.wrong_type(key, "array[number]", v)))
            .collect()
    }

    pub fn get_i64_array(&self, key: &str) -> Result<Vec<i64>, GgufError> {
        let v = self.require(key)?;
        let items = v.as_array().ok_or_else(|| self.wrong_type(key, "array[integer]", v))?;
        items.iter().map(|x| x.as_i64().ok_or_else(|| self.wrong_type(key, "array[integer]", v))).collect()
    }

    pub fn tensors(&self) -> &[TensorInfo] {
        &self.tensors
    }

    pub fn tensor_info(&self, name: &str) -> Option<&TensorInfo> {
        self.tensor_index.get(name).map(|&i| &self.tensors[i])
    }

    /// The bytes of a tensor, straight from the map. Bounds were checked when the file opened.
    pub fn tensor_data(&self, info: &TensorInfo) -> &[u8] {
        let start = (self.data_offset + info.offset) as usize;
        &self.mmap[start..start + info.n_bytes as usize]
    }

    /// A tensor by name with its shape checked (ggml order, innermost first).
    pub fn tensor_checked(&self, name: &str, dims: &[u64]) -> Result<(&TensorInfo, &[u8]), GgufError> {
        let info = self
            .tensor_info(name)
            .ok_or_else(|| self.error(GgufErrorKind::MissingTensor(name.to_string())))?;
        if info.dims != dims {
            return Err(self.error(GgufErrorKind::ShapeMismatch {
                name: name.to_string(),
                expected: dims.to_vec(),
                found: info.dims.clone(),
            }));
        }
        Ok((info, self.tensor_data(info)))
    }

    /// The whole file's bytes (header, data and any padding), as mapped.
    pub fn bytes(&self) -> &[u8] {
        &self.mmap
    }

    pub fn file_len(&self) -> u64 {
        self.mmap.len() as u64
    }
}

type Index = HashMap<String, usize>;

/// The header, with name → position indexes of its metadata and tensors.
fn parse_header(buf: &[u8]) -> Result<(GgufHeader, Index, Index), GgufErrorKind> {
    let mut cur = Cursor { buf, pos: 0, values_left: MAX_METADATA_VALUES };
    let magic = cur.u32("magic")?;
    if magic != GGUF_MAGIC {
        return Err(GgufErrorKind::BadMagic(magic));
    }
    let version = cur.u32("version")?;
    if !(2..=3).contains(&version) {
        return Err(GgufErrorKind::BadVersion(version));
    }
    let n_tensors = cur.u64("tensor count")?;
    let n_kv = cur.u64("metadata count")?;
    // A key-value pair takes at least 12 bytes, a tensor info at least 24.
    cur.check_count("metadata", n_kv, 12)?;
    cur.check_count("tensor infos", n_tensors, 24)?;

    let mut metadata = Vec::with_capacity(n_kv as usize);
    let mut metadata_index = HashMap::with_capacity(n_kv as usize);
    for i in 0..n_kv {
        let key = cur.string(&format!("metadata key #{i}"))?;
        let ty = cur.u32(&format!("type of {key:?}"))?;
        let value = cur.value(&key, ty, 0)?;
        if metadata_index.insert(key.clone(), metadata.len()).is_some() {
            return Err(GgufErrorKind::DuplicateKey(key));
        }
        metadata.push((key, value));
    }

    let alignment = match metadata_index.get("general.alignment") {
        Some(&i) => {
            let a = metadata[i].1.as_u64().unwrap_or(0);
            if a == 0 || !a.is_power_of_two() {
                return Err(GgufErrorKind::BadAlignment(a));
            }
            a
        }
        None => DEFAULT_ALIGNMENT,
    };

    let mut tensors = Vec::with_capacity(n_tensors as usize);
    let mut tensor_index = HashMap::with_capacity(n_tensors as usize);
    for i in 0..n_tensors {
        let info = cur.tensor_info(i, alignment)?;
        if tensor_index.insert(info.name.clone(), tensors.len()).is_some() {
            return Err(GgufErrorKind::DuplicateTensor(info.name));
        }
        tensors.push(info);
    }
    let data_offset = align_up(cur.pos as u64, alignment);
    Ok((GgufHeader { version, metadata, tensors, alignment, data_offset }, metadata_index, tensor_index))
}

pub(crate) fn align_up(x: u64, alignment: u64) -> u64 {
    x.div_ceil(alignment) * alignment
}

/// Bounds-checked little-endian reads over the mapped header.
struct Cursor<'a> {
    buf: &'a [u8],
    pos: usize,
    /// What remains of [`MAX_METADATA_VALUES`].
    values_left: u64,
}

impl<'a> Cursor<'a> {
    fn remaining(&self) -> u64 {
        (self.buf.len() - self.pos) as u64
    }

    fn take(&mut self, n: u64, what: &str) -> Result<&'a [u8], GgufErrorKind> {
        if n > self.remaining() {
            return Err(GgufErrorKind::Truncated {
                what: what.to_string(),
                offset: self.pos as u64,
                needed: n,
                available: self.remaining(),
            });
        }
        let s = &self.buf[self.pos..self.pos + n as usize];
        self.pos += n as usize;
        Ok(s)
    }

    fn array<const N: usize>(&mut self, what: &str) -> Result<[u8; N], GgufErrorKind> {
        let s = self.take(N as u64, what)?;
        let mut a = [0u8; N];
        a.copy_from_slice(s);
        Ok(a)
    }

    fn u32(&mut self, what: &str) -> Result<u32, GgufErrorKind> {
        Ok(u32::from_le_bytes(self.array(what)?))
    }

    fn u64(&mut self, what: &str) -> Result<u64, GgufErrorKind> {
        Ok(u64::from_le_bytes(self.array(what)?))
    }

    fn check_count(&self, what: &str, count: u64, min_each: u64) -> Result<(), GgufErrorKind> {
        if count.checked_mul(min_each).is_none_or(|n| n > self.remaining()) {
            return Err(GgufErrorKind::CountTooLarge {
                what: what.to_string(),
                count,
                available: self.remaining(),
            });
        }
        Ok(())
    }

    fn string(&mut self, what: &str) -> Result<String, GgufErrorKind> {
        let len = self.u64(what)?;
        let bytes = self.take(len, what)?;
        // The spec requires UTF-8; a few converters wrote stray bytes into token texts, so
        // decode leniently rather than refuse an otherwise usable model.
        Ok(String::from_utf8_lossy(bytes).into_owned())
    }

    fn value(&mut self, key: &str, ty: u32, depth: usize) -> Result<Value, GgufErrorKind> {
        let ty = ValueType::from_u32(ty).ok_or_else(|| GgufErrorKind::BadValueType { key: key.into(), ty })?;
        Ok(match ty {
            ValueType::U8 => Value::U8(self.array::<1>(key)?[0]),
            ValueType::I8 => Value::I8(self.array::<1>(key)?[0] as i8),
            ValueType::U16 => Value::U16(u16::from_le_bytes(self.array(key)?)),
            ValueType::I16 => Value::I16(i16::from_le_bytes(self.array(key)?)),
            ValueType::U32 => Value::U32(u32::from_le_bytes(self.array(key)?)),
            ValueType::I32 => Value::I32(i32::from_le_bytes(self.array(key)?)),
            ValueType::F32 => Value::F32(f32::from_le_bytes(self.array(key)?)),
            ValueType::U64 => Value::U64(u64::from_le_bytes(self.array(key)?)),
            ValueType::I64 => Value::I64(i64::from_le_bytes(self.array(key)?)),
            ValueType::F64 => Value::F64(f64::from_le_bytes(self.array(key)?)),
            ValueType::Bool => Value::Bool(self.array::<1>(key)?[0] != 0),
            ValueType::String => Value::String(self.string(key)?),
            ValueType::Array => {
                if depth >= MAX_ARRAY_DEPTH {
                    return Err(GgufErrorKind::TooDeep { key: key.into(), max: MAX_ARRAY_DEPTH });
                }
                let elem_raw = self.u32(key)?;
                let elem = ValueType::from_u32(elem_raw)
                    .ok_or_else(|| GgufErrorKind::BadValueType { key: key.into(), ty: elem_raw })?;
                let n = self.u64(key)?;
                self.check_count(&format!("array {key:?}"), n, elem.min_encoded_size())?;
                self.values_left = self
                    .values_left
                    .checked_sub(n)
                    .ok_or_else(|| GgufErrorKind::TooManyValues { key: key.into(), max: MAX_METADATA_VALUES })?;
                let mut items = Vec::with_capacity(n as usize);
                for _ in 0..n {
                    items.push(self.value(key, elem as u32, depth + 1)?);
                }
                Value::Array(elem, items)
            }
        })
    }

    fn tensor_info(&mut self, i: u64, alignment: u64) -> Result<TensorInfo, GgufErrorKind> {
        let name = self.string(&format!("name of tensor #{i}"))?;
        let bad = |reason: String| GgufErrorKind::BadTensor { name: name.clone(), reason };
        let n_dims = self.u32(&name)?;
        if n_dims == 0 || n_dims > MAX_DIMS {
            return Err(bad(format!("{n_dims} dimensions (ggml allows 1 to {MAX_DIMS})")));
        }
        let mut dims = Vec::with_capacity(n_dims as usize);
        for _ in 0..n_dims {
            dims.push(self.u64(&name)?);
        }
        let ty_raw = self.u32(&name)?;
        let offset = self.u64(&name)?;
        let ty = GgmlType::from_u32(ty_raw)
            .ok_or_else(|| GgufErrorKind::UnknownTensorType { name: name.clone(), ty: ty_raw })?;
        if offset % alignment != 0 {
            return Err(bad(format!("data offset {offset} is not a multiple of the alignment {alignment}")));
        }
        let n_elements = dims
            .iter()
            .try_fold(1u64, |acc, &d| acc.checked_mul(d))
            .ok_or_else(|| bad(format!("shape {dims:?} overflows")))?;
        if dims[0] % ty.block_size() as u64 != 0 {
            return Err(bad(format!(
                "innermost dimension {} is not a multiple of the {} block size {}",
                dims[0],
                ty,
                ty.block_size()
            )));
        }
        let n_bytes = ty
            .row_size(n_elements)
            .ok_or_else(|| bad(format!("size of {n_elements} {ty} elements overflows")))?;
        Ok(TensorInfo { name, dims, ty, offset, n_bytes })
    }
}
