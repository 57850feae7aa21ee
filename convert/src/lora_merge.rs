//! LoRA adapters merged into a base model's weights, like llama.cpp's `llama-export-lora`:
//! for each base tensor an adapter changes, `W' = W + Σ s·B·A` (s = scale · alpha / rank,
//! the runtime's rule), computed in f32 with the delta accumulated in f64, then written back
//! in the base tensor's own type (re-quantized with ggml's reference quantizers). Every other
//! tensor and every metadata key is copied unchanged, in the base file's order.
//!
//! Unlike llama-export-lora, which writes quantized base tensors it merges as F16 and sorts
//! tensors by name, the output keeps each tensor's type and place, so only the merged tensors
//! differ from the base file.

use std::borrow::Cow;
use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use nexus_kernels::{dequantize_row, quantize_row, GgmlType, KernelError};
use nexus_runtime::adapter::{LoraAdapter, LoraDelta};
use nexus_runtime::gguf::{GgufError, GgufFile, GgufWriter, StreamedTensor, TensorInfo};
use nexus_runtime::model::{Model, ModelError};
use rayon::prelude::*;

use crate::tensor_source::TensorSource;

#[derive(Debug, thiserror::Error)]
pub enum LoraMergeError {
    #[error("{}: the output path is the input file {}; write to another path", .output.display(), .input.display())]
    SameFile { output: PathBuf, input: PathBuf },
    #[error("no adapters given: pass --lora FILE or --lora-scaled FILE SCALE")]
    NoAdapters,
    #[error(transparent)]
    Gguf(#[from] GgufError),
    #[error(transparent)]
    Model(#[from] ModelError),
    #[error("{}: tensor {name:?}: {reason}", .path.display())]
    Tensor { path: PathBuf, name: String, reason: String },
    #[error("{}: tensor {name:?}: {source}", .path.display())]
    Kernel { path: PathBuf, name: String, source: KernelError },
    #[error("interrupted; {} was not written", .output.display())]
    Interrupted { output: PathBuf },
}

/// One tensor as it was written, for progress output.
#[derive(Debug, Clone)]
pub struct MergeReport {
    pub index: usize,
    pub total: usize,
    pub name: String,
    pub ty: GgmlType,
    /// How many adapter pairs were added to it (0: copied unchanged).
    pub n_deltas: usize,
    pub bytes: u64,
}

#[derive(Debug, Clone, Default)]
pub struct MergeSummary {
    pub n_tensors: usize,
    /// Base tensors that took at least one adapter pair.
    pub n_merged: usize,
    pub bytes: u64,
}

/// Whether `a` and `b` name the same file (`b` may not exist yet).
fn same_file(a: &Path, b: &Path) -> bool {
    a == b
        || match (a.canonicalize(), b.canonicalize()) {
            (Ok(x), Ok(y)) => x == y,
            _ => false,
        }
}

/// Merges `adapters` (each a file and its user scale: llama.cpp's `--lora-scaled FILE SCALE`,
/// 1 for `--lora FILE`) into `base` and writes the result to `output`. The adapters are
/// checked against the base exactly as `Model::apply_lora` checks them before anything is
/// written. `progress` sees each tensor once it is handed to the writer; setting `cancel`
/// stops the write at the next chunk of rows. `threads` = None uses rayon's global pool.
///
/// Streams like `quantize`: tensors are read with plain reads (not through the map, whose
/// touched pages would stay resident) and merged one at a time, so memory holds one output
/// tensor. The output appears under its final name only once complete; an error or a cancel
/// leaves neither it nor the temporary file behind.
pub fn export_lora(
    base: &Path,
    adapters: &[(PathBuf, f32)],
    output: &Path,
    threads: Option<usize>,
    cancel: &AtomicBool,
    mut progress: impl FnMut(&MergeReport),
) -> Result<MergeSummary, LoraMergeError> {
    if adapters.is_empty() {
        return Err(LoraMergeError::NoAdapters);
    }
    for input in std::iter::once(base).chain(adapters.iter().map(|(p, _)| p.as_path())) {
        if same_file(input, output) {
            return Err(LoraMergeError::SameFile { output: output.to_path_buf(), input: input.to_path_buf() });
        }
    }
    let file = Arc::new(GgufFile::open(base)?);
    if file.get("general.type").and_then(|v| v.as_str()) == Some("adapter") {
        return Err(ModelError::Invalid {
            path: base.to_path_buf(),
            what: "general.type is \"adapter\": this is an adapter, not a base model; pass it with --lora".into(),
        }
        .into());
    }
    let loaded = adapters.iter().map(|(p, s)| Ok((LoraAdapter::load(p)?, *s))).collect::<Result<Vec<_>, ModelError>>()?;
    let refs: Vec<(&LoraAdapter, f32)> = loaded.iter().map(|(a, s)| (a, *s)).collect();
    // The model is views into `file`'s map plus its small norm vectors: cheap to build, and
    // the one place that knows which tensors are projections and their shapes.
    let plan = Model::from_file(file.clone())?.check_lora(&refs)?;
    let mut deltas: HashMap<&str, Vec<&LoraDelta>> = HashMap::new();
    for d in &plan {
        deltas.entry(d.weight.base.as_str()).or_default().push(d);
    }

    let mut writer = GgufWriter::new();
    for (key, value) in file.metadata() {
        writer.set(key.clone(), value.clone());
    }
    let specs: Vec<StreamedTensor> = file
        .tensors()
        .iter()
        .map(|t| StreamedTensor { name: t.name.clone(), dims: t.dims.clone(), ty: t.ty })
        .collect();
    let pool = match threads {
        Some(n) => Some(rayon::ThreadPoolBuilder::new().num_threads(n.max(1)).build().map_err(|e| {
            LoraMergeError::Tensor { path: base.to_path_buf(), name: String::new(), reason: e.to_string() }
        })?),
        None => None,
    };
    let mut source = TensorSource::open(base, &file)?;
    let total = specs.len();
    let mut summary = MergeSummary { n_tensors: total, ..MergeSummary::default() };
    let interrupted = || LoraMergeError::Interrupted { output: output.to_path_buf() };
    writer.write_streaming(output, &specs, |k| {
        if cancel.load(Ordering::Relaxed) {
            return Err(interrupted());
        }
        let info = &file.tensors()[k];
        let ds = deltas.get(info.name.as_str()).map(Vec::as_slice).unwrap_or_default();
        let data = if ds.is_empty() {
            source.read(info)?
        } else {
            let mut merge = || merge_tensor(&mut source, info, ds, cancel);
            match &pool {
                Some(p) => p.install(merge),
                None => merge(),
            }?
            .ok_or_else(interrupted)?
        };
        summary.n_merged += !ds.is_empty() as usize;
        summary.bytes += data.len() as u64;
        progress(&MergeReport {
            index: k + 1,
            total,
            name: info.name.clone(),
            ty: info.ty,
            n_deltas: ds.len(),
            bytes: data.len() as u64,
        });
        Ok::<_, LoraMergeError>(data)
    })?;
    Ok(summary)
}

/// `W + Σ s·B·A` for one base tensor `[n_out][n_in]` in its own type, row by row (rows in
/// parallel within each chunk read from `source`); None if `cancel` was set meanwhile.
fn merge_tensor(
    source: &mut TensorSource<'_>,
    info: &TensorInfo,
    deltas: &[&LoraDelta],
    cancel: &AtomicBool,
) -> Result<Option<Vec<u8>>, LoraMergeError> {
    let (path, name, ty) = (source.path, info.name.as_str(), info.ty);
    let tensor_err = |reason: String| LoraMergeError::Tensor { path: path.to_path_buf(), name: name.to_string(), reason };
    // `check_lora` matched every pair's shape to this 2-D projection.
    let (n_in, n_out) = (info.dims[0] as usize, info.dims[1] as usize);
    let row_bytes = ty.row_size(n_in as u64).map(|r| r as usize).filter(|r| r * n_out == info.n_bytes as usize);
    let row_bytes = row_bytes.ok_or_else(|| tensor_err(format!("{} bytes of {ty} do not make {n_out} rows of {n_in}", info.n_bytes)))?;
    let rows_per_chunk = (source.chunk_bytes / row_bytes).max(1);
    let mut out = vec![0u8; info.n_bytes as usize];
    // Each pair as f32 once (an F16 adapter is held in F16), not once per row.
    let pairs: Vec<Pair> = deltas
        .iter()
        .map(|d| Pair { scale: d.scale as f64, rank: d.weight.rank, a: d.weight.a_f32(), b: d.weight.b_f32() })
        .collect();
    let mut buf = std::mem::take(&mut source.buf);
    let mut result = Ok(Some(()));
    for (c, dst) in out.chunks_mut(rows_per_chunk * row_bytes).enumerate() {
        if cancel.load(Ordering::Relaxed) {
            result = Ok(None);
            break;
        }
        let first_row = c * rows_per_chunk;
        buf.resize(dst.len(), 0);
        if let Err(e) = source.read_at(info.offset + (first_row * row_bytes) as u64, &mut buf) {
            result = Err(e.into());
            break;
        }
        let merged = dst.par_chunks_mut(row_bytes).zip(buf.par_chunks(row_bytes)).enumerate().try_for_each_init(
            || (vec![0f32; n_in], vec![0f64; n_in]),
            |(row, acc), (r, (d, s))| merge_row(ty, first_row + r, s, &pairs, row, acc, d),
        );
        if let Err(e) = merged {
            result = Err(match e {
                RowError::Kernel(source) => LoraMergeError::Kernel { path: path.to_path_buf(), name: name.to_string(), source },
                RowError::NonFinite(i) => tensor_err(format!("the merged weight at element {i} is not finite")),
            });
            break;
        }
    }
    source.buf = buf;
    result.map(|done| done.map(|()| out))
}

/// One adapter's `s`, B and A for one tensor, as f32.
struct Pair<'a> {
    scale: f64,
    rank: usize,
    a: Cow<'a, [f32]>,
    b: Cow<'a, [f32]>,
}

enum RowError {
    Kernel(KernelError),
    /// The element (row-major index) whose merged value overflowed.
    NonFinite(usize),
}

/// One output row `o`: the base row `src` to f32, `Σ s·B[o]·A` accumulated in f64 and added,
/// rounded to f32 once, and back to `ty` in `dst`.
fn merge_row(
    ty: GgmlType,
    o: usize,
    src: &[u8],
    pairs: &[Pair<'_>],
    row: &mut [f32],
    acc: &mut [f64],
    dst: &mut [u8],
) -> Result<(), RowError> {
    dequantize_row(ty, src, row).map_err(RowError::Kernel)?;
    let n_in = row.len();
    acc.fill(0.0);
    for p in pairs {
        for r in 0..p.rank {
            let c = p.scale * p.b[o * p.rank + r] as f64;
            for (x, &a) in acc.iter_mut().zip(&p.a[r * n_in..(r + 1) * n_in]) {
                *x += c * a as f64;
            }
        }
    }
    for (i, (v, x)) in row.iter_mut().zip(acc.iter()).enumerate() {
        *v = (*v as f64 + x) as f32;
        if !v.is_finite() {
            return Err(RowError::NonFinite(o * n_in + i));
        }
    }
    quantize_row(ty, row, dst).map_err(RowError::Kernel)
}
