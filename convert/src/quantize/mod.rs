//! GGUF → GGUF quantization, matching `llama-quantize` (without an importance matrix) byte for
//! byte: same per-tensor types (see `policy`), same tensor order, ggml's reference quantizers
//! from nexus-kernels, `general.file_type` and `general.quantization_version` set the same way.

mod policy;

pub use policy::{Policy, QuantType};

use std::path::{Path, PathBuf};

use nexus_kernels::{dequantize_row, quantize_row, GgmlType, KernelError};
use nexus_runtime::gguf::{
    GgufError, GgufFile, GgufWriter, StreamedTensor, TensorInfo, Value,
};
use rayon::prelude::*;

use crate::tensor_source::TensorSource;

use policy::layer_of;

/// ggml's `GGML_QNT_VERSION`, which llama-quantize writes into every file.
const QUANTIZATION_VERSION: u32 = 2;

/// Keys llama-quantize drops (split bookkeeping) or rewrites at the end of the metadata.
const DROPPED_KEYS: &[&str] = &[
    "general.quantization_version",
    "general.file_type",
    "split.no",
    "split.count",
    "split.tensors.count",
];

#[derive(Debug, thiserror::Error)]
pub enum QuantizeError {
    #[error("unknown quantization type {name:?}; known: {known}")]
    UnknownType { name: String, known: String },
    #[error("{}: output path is the input file; write to another path", .path.display())]
    SameFile { path: PathBuf },
    #[error(transparent)]
    Gguf(#[from] GgufError),
    #[error("{}: tensor {name:?}: {reason}", .path.display())]
    Tensor {
        path: PathBuf,
        name: String,
        reason: String,
    },
    #[error("{}: tensor {name:?}: {source}", .path.display())]
    Kernel {
        path: PathBuf,
        name: String,
        source: KernelError,
    },
    #[error("{}: {reason}", .path.display())]
    Model { path: PathBuf, reason: String },
}

impl QuantType {
    /// Parses a type name, with an error listing the accepted ones.
    pub fn from_name(name: &str) -> Result<Self, QuantizeError> {
        Self::parse(name).ok_or_else(|| QuantizeError::UnknownType {
            name: name.to_string(),
            known: Self::ALL
                .iter()
                .map(|t| t.name())
                .collect::<Vec<_>>()
                .join(", "),
        })
    }
}

/// One tensor as it was written, for progress output.
#[derive(Debug, Clone)]
pub struct TensorReport {
    pub index: usize,
    pub total: usize,
    pub name: String,
    pub dims: Vec<u64>,
    pub from: GgmlType,
    pub to: GgmlType,
    pub bytes_in: u64,
    pub bytes_out: u64,
    /// The input was already quantized and was dequantized to re-quantize it.
    pub requantized: bool,
}

#[derive(Debug, Clone, Default)]
pub struct Summary {
    pub n_tensors: usize,
    pub n_elements: u64,
    pub bytes_in: u64,
    pub bytes_out: u64,
    pub n_requantized: usize,
    pub n_fallback: usize,
}

/// The output types of `file`'s tensors in llama-quantize's processing order (by layer index,
/// then name), without quantizing anything.
pub fn plan(
    file: &GgufFile,
    qtype: QuantType,
) -> Result<(Vec<usize>, Vec<GgmlType>, usize), QuantizeError> {
    let path = file.path();
    let model_err = |reason: String| QuantizeError::Model {
        path: path.to_path_buf(),
        reason,
    };
    let arch = file.get_str("general.architecture")?.to_string();
    let get = |key: &str| file.get(&format!("{arch}.{key}")).and_then(|v| v.as_u64());
    if get("expert_count").is_some_and(|n| n > 1) {
        return Err(model_err(
            "mixture-of-experts models are not supported by this quantizer".into(),
        ));
    }
    let n_layer =
        get("block_count").ok_or_else(|| model_err(format!("missing {arch}.block_count")))?;
    let n_head = get("attention.head_count").unwrap_or(0);
    let n_head_kv = get("attention.head_count_kv").unwrap_or(n_head);

    let tensors = file.tensors();
    let mut order: Vec<usize> = (0..tensors.len()).collect();
    order.sort_by(|&a, &b| {
        let (na, nb) = (&tensors[a].name, &tensors[b].name);
        (layer_of(na), na).cmp(&(layer_of(nb), nb))
    });
    let names: Vec<&str> = order.iter().map(|&i| tensors[i].name.as_str()).collect();
    let mut policy = Policy::new(qtype, &arch, n_layer, n_head, n_head_kv, &names);
    let types = order
        .iter()
        .map(|&i| policy.tensor_type(&tensors[i].name, &tensors[i].dims, tensors[i].ty))
        .collect();
    Ok((order, types, policy.n_fallback))
}

/// Whether `a` and `b` name the same file (`b` may not exist yet).
fn same_file(a: &Path, b: &Path) -> bool {
    match (a.canonicalize(), b.canonicalize()) {
        (Ok(x), Ok(y)) => x == y,
        _ => false,
    }
}

/// Quantizes `input` into `output` as `qtype`; `progress` sees each tensor once it is
/// converted and handed to the writer. `threads` = None uses rayon's global pool.
///
/// Streams: the writer asks for each tensor in output order and it is read from `input` and
/// converted only then, so memory holds one output tensor (plus a bounded read buffer) rather
/// than the model. The output appears under its final name only once complete; any error
/// leaves neither it nor the temporary file behind.
pub fn quantize_file(
    input: &Path,
    output: &Path,
    qtype: QuantType,
    threads: Option<usize>,
    progress: impl FnMut(&TensorReport),
) -> Result<Summary, QuantizeError> {
    quantize_file_with(input, output, qtype, threads, progress, |_| Ok(()))
}

/// `quantize_file` with `before_tensor(k)` run before the k-th output tensor is produced; an
/// error from it aborts the write (tests inject failures mid-file with it).
fn quantize_file_with(
    input: &Path,
    output: &Path,
    qtype: QuantType,
    threads: Option<usize>,
    mut progress: impl FnMut(&TensorReport),
    mut before_tensor: impl FnMut(usize) -> Result<(), QuantizeError>,
) -> Result<Summary, QuantizeError> {
    if same_file(input, output) || input == output {
        return Err(QuantizeError::SameFile {
            path: output.to_path_buf(),
        });
    }
    let file = GgufFile::open(input)?;
    let (order, types, n_fallback) = plan(&file, qtype)?;

    let mut writer = GgufWriter::new();
    for (key, value) in file.metadata() {
        if !DROPPED_KEYS.contains(&key.as_str()) {
            writer.set(key.clone(), value.clone());
        }
    }
    writer.set(
        "general.quantization_version",
        Value::U32(QUANTIZATION_VERSION),
    );
    writer.set("general.file_type", Value::U32(qtype.ftype()));

    let pool = match threads {
        Some(n) => Some(
            rayon::ThreadPoolBuilder::new()
                .num_threads(n.max(1))
                .build()
                .map_err(|e| QuantizeError::Model {
                    path: input.to_path_buf(),
                    reason: e.to_string(),
                })?,
        ),
        None => None,
    };
    let specs: Vec<StreamedTensor> = order
        .iter()
        .zip(&types)
        .map(|(&ti, &to)| {
            let info = &file.tensors()[ti];
            StreamedTensor {
                name: info.name.clone(),
                dims: info.dims.clone(),
                ty: to,
            }
        })
        .collect();
    let mut source = TensorSource::open(input, &file)?;
    let mut summary = Summary {
        n_tensors: order.len(),
        n_fallback,
        ..Summary::default()
    };
    writer.write_streaming(output, &specs, |k| {
        before_tensor(k)?;
        let info = &file.tensors()[order[k]];
        let to = types[k];
        let requantized = info.ty != to && info.ty.is_quantized();
        let data = if info.ty == to {
            source.read(info)?
        } else {
            let mut convert = || convert_tensor(&mut source, info, to);
            match &pool {
                Some(p) => p.install(convert)?,
                None => convert()?,
            }
        };
        let report = TensorReport {
            index: k + 1,
            total: order.len(),
            name: info.name.clone(),
            dims: info.dims.clone(),
            from: info.ty,
            to,
            bytes_in: info.n_bytes,
            bytes_out: data.len() as u64,
            requantized,
        };
        summary.n_elements += info.n_elements();
        summary.bytes_in += report.bytes_in;
        summary.bytes_out += report.bytes_out;
        summary.n_requantized += requantized as usize;
        progress(&report);
        Ok::<_, QuantizeError>(data)
    })?;
    Ok(summary)
}

/// Rows of `info` (read from `source` in chunks) to f32 and on to `to`, in parallel over the
/// rows of each chunk. Rows are independent, so chunking does not change a byte.
fn convert_tensor(
    source: &mut TensorSource<'_>,
    info: &TensorInfo,
    to: GgmlType,
) -> Result<Vec<u8>, QuantizeError> {
    let (path, name, dims, from) = (source.path, info.name.as_str(), &info.dims, info.ty);
    let tensor_err = |reason: String| QuantizeError::Tensor {
        path: path.to_path_buf(),
        name: name.to_string(),
        reason,
    };
    let kernel_err = |source| QuantizeError::Kernel {
        path: path.to_path_buf(),
        name: name.to_string(),
        source,
    };
    let n_per_row = dims.first().copied().unwrap_or(0);
    let n_elements: u64 = dims.iter().product();
    if n_per_row == 0 || n_elements == 0 {
        return Err(tensor_err(format!(
            "empty shape {dims:?} cannot be converted to {to}"
        )));
    }
    let (row_in, row_out) = match (from.row_size(n_per_row), to.row_size(n_per_row)) {
        (Some(a), Some(b)) => (a as usize, b as usize),
        _ => {
            return Err(tensor_err(format!(
                "rows of {n_per_row} elements are not whole {from} or {to} blocks"
            )))
        }
    };
    let n_rows = (n_elements / n_per_row) as usize;
    if info.n_bytes as usize != n_rows * row_in {
        return Err(tensor_err(format!(
            "{} bytes of data, expected {}",
            info.n_bytes,
            n_rows * row_in
        )));
    }
    let rows_per_chunk = (source.chunk_bytes / row_in).max(1);
    let mut out = vec![0u8; n_rows * row_out];
    let mut buf = std::mem::take(&mut source.buf);
    let mut result = Ok(());
    for (c, dst) in out.chunks_mut(rows_per_chunk * row_out).enumerate() {
        let rows = dst.len() / row_out;
        buf.resize(rows * row_in, 0);
        result = source.read_at(info.offset + (c * rows_per_chunk * row_in) as u64, &mut buf).map_err(Into::into);
        if result.is_err() {
            break;
        }
        result = dst
            .par_chunks_mut(row_out)
            .zip(buf.par_chunks(row_in))
            .try_for_each_init(
                || vec![0f32; n_per_row as usize],
                |row_f32, (d, s)| {
                    dequantize_row(from, s, row_f32)?;
                    quantize_row(to, row_f32, d)
                },
            )
            .map_err(kernel_err);
        if result.is_err() {
            break;
        }
    }
    source.buf = buf;
    result.map(|()| out)
}

#[cfg(test)]
mod tests;
