//! llama.cpp's LoRA GGUF (`general.type = "adapter"`, `adapter.type = "lora"`): the file is
//! read and checked on its own here; checking it against a base model is [`super::attach`].

use std::borrow::Cow;
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use half::f16;
use nexus_kernels::ggml_order::f16 as order16;
use nexus_kernels::{dequantize_row, GgmlType, KernelError};

use crate::gguf::GgufFile;
use crate::model::ModelError;

/// One low-rank pair for a base tensor `W` (`n_out × n_in`): `ΔW = B·A` with A `[rank][n_in]`
/// and B `[n_out][rank]` (ggml dims `[n_in, rank]` and `[rank, n_out]`).
#[derive(Debug)]
pub struct LoraWeight {
    /// The base tensor it changes, e.g. `blk.0.attn_q.weight`.
    pub base: String,
    pub rank: usize,
    pub n_in: usize,
    pub n_out: usize,
    pub factors: LoraFactors,
}

/// A and B as the runtime multiplies them. llama.cpp multiplies an adapter in its stored type,
/// so the types it treats differently are kept apart: F16 stays F16 (half the bytes each token
/// reads, and the rounding of ggml's F16 products), everything else is widened to f32.
#[derive(Debug)]
pub enum LoraFactors {
    /// F32 files (and BF16 / Q8_0 files, widened): A, B, and B transposed `[rank][n_out]`, so
    /// one token's `B·t` becomes `rank` contiguous axpys.
    F32 { a: Vec<f32>, b: Vec<f32>, bt: Vec<f32> },
    /// F16 files as stored: A, and B in panels of outputs (`ggml_order::f16::to_panels`) so a
    /// token's `B·t` reads it front to back.
    F16 { a: Vec<f16>, b_panels: Vec<f16> },
}

impl LoraWeight {
    /// Builds a pair from f32 factors (A `[rank][n_in]`, B `[n_out][rank]`), kept in F16 when
    /// `f16` (as an F16 adapter file is loaded; the values must be exact halves) or in f32.
    pub fn new(base: &str, rank: usize, n_in: usize, n_out: usize, a: Vec<f32>, b: Vec<f32>, f16: bool) -> Self {
        let factors = if f16 {
            let half = |v: &[f32]| -> Vec<f16> { v.iter().map(|&x| f16::from_f32(x)).collect() };
            LoraFactors::F16 { a: half(&a), b_panels: order16::to_panels(&half(&b), n_out, rank) }
        } else {
            let bt = (0..rank).flat_map(|r| (0..n_out).map(move |o| (o, r))).map(|(o, r)| b[o * rank + r]).collect();
            LoraFactors::F32 { a, b, bt }
        };
        LoraWeight { base: base.to_string(), rank, n_in, n_out, factors }
    }

    /// A `[rank][n_in]` as f32.
    pub fn a_f32(&self) -> Cow<'_, [f32]> {
        match &self.factors {
            LoraFactors::F32 { a, .. } => Cow::Borrowed(a),
            LoraFactors::F16 { a, .. } => Cow::Owned(a.iter().map(|v| v.to_f32()).collect()),
        }
    }

    /// B `[n_out][rank]` as f32.
    pub fn b_f32(&self) -> Cow<'_, [f32]> {
        match &self.factors {
            LoraFactors::F32 { b, .. } => Cow::Borrowed(b),
            LoraFactors::F16 { b_panels, .. } => {
                let (rank, n_out) = (self.rank, self.n_out);
                let at = |o, r| b_panels[order16::panel_index(o, r, rank)].to_f32();
                Cow::Owned((0..n_out).flat_map(|o| (0..rank).map(move |r| at(o, r))).collect())
            }
        }
    }
}

/// A loaded LoRA adapter: its pairs in base-tensor order (see [`LoraFactors`] for the types).
#[derive(Debug)]
pub struct LoraAdapter {
    pub path: PathBuf,
    /// `general.architecture`, which must equal the base model's.
    pub arch: String,
    /// `adapter.lora.alpha`; 0 (or absent) means the user's scale is used as is, as in llama.cpp.
    pub alpha: f32,
    pub weights: Vec<Arc<LoraWeight>>,
}

/// Tensor types an adapter may store. They expand to f32 by at most 4× (Q8_0: 34 bytes → 32
/// floats), so what we allocate is bounded by the file's length.
const ADAPTER_TYPES: [GgmlType; 4] = [GgmlType::F32, GgmlType::F16, GgmlType::BF16, GgmlType::Q8_0];

impl LoraAdapter {
    pub fn load(path: impl AsRef<Path>) -> Result<Self, ModelError> {
        Self::from_file(&GgufFile::open(path)?)
    }

    /// Reads and checks an open adapter file: its metadata, that every tensor is one half of
    /// a `.lora_a`/`.lora_b` pair of matching rank, and the tensor types.
    pub fn from_file(file: &GgufFile) -> Result<Self, ModelError> {
        let path = file.path().to_path_buf();
        let invalid = |what: String| ModelError::Invalid { path: path.clone(), what };
        match file.get("general.type").map(|v| v.as_str()) {
            Some(Some("adapter")) => {}
            Some(Some(other)) => {
                return Err(invalid(format!("not an adapter file: general.type is {other:?}, expected \"adapter\"")))
            }
            Some(None) => return Err(invalid("not an adapter file: general.type is not a string".into())),
            None => return Err(invalid("not an adapter file: general.type is absent (a base model?)".into())),
        }
        let adapter_type = file.get_str("adapter.type")?;
        if adapter_type != "lora" {
            return Err(ModelError::Unsupported {
                path,
                what: format!("adapter.type is {adapter_type:?}; only \"lora\" adapters are supported"),
            });
        }
        let arch = file.get_str("general.architecture")?.to_string();
        let alpha = file.opt("adapter.lora.alpha", GgufFile::get_f32)?.unwrap_or(0.0);
        if !alpha.is_finite() || alpha < 0.0 {
            return Err(invalid(format!("adapter.lora.alpha = {alpha} is not a finite non-negative number")));
        }

        // Pair the halves by base name; BTreeMap keeps a stable, file-independent order.
        let mut pairs: BTreeMap<&str, [Option<&crate::gguf::TensorInfo>; 2]> = BTreeMap::new();
        for t in file.tensors() {
            let (base, half) = if let Some(base) = t.name.strip_suffix(".lora_a") {
                (base, 0)
            } else if let Some(base) = t.name.strip_suffix(".lora_b") {
                (base, 1)
            } else {
                return Err(invalid(format!("tensor {:?} is neither a .lora_a nor a .lora_b tensor", t.name)));
            };
            pairs.entry(base).or_default()[half] = Some(t);
        }
        if pairs.is_empty() {
            return Err(invalid("the adapter has no tensors".into()));
        }
        let mut weights = Vec::with_capacity(pairs.len());
        for (base, [a, b]) in pairs {
            let (a, b) = match (a, b) {
                (Some(a), Some(b)) => (a, b),
                (Some(_), None) => return Err(invalid(format!("{base}.lora_a has no partner {base}.lora_b"))),
                (None, _) => return Err(invalid(format!("{base}.lora_b has no partner {base}.lora_a"))),
            };
            for t in [a, b] {
                if t.dims.len() != 2 || t.dims.contains(&0) {
                    return Err(invalid(format!("tensor {:?} has shape {:?}; a LoRA tensor is 2-D", t.name, t.dims)));
                }
                if !ADAPTER_TYPES.contains(&t.ty) {
                    return Err(ModelError::Unsupported {
                        path: path.clone(),
                        what: format!("tensor {:?} has type {}; adapters may be F32, F16, BF16 or Q8_0", t.name, t.ty),
                    });
                }
            }
            // ggml order: lora_a is [n_in, rank], lora_b is [rank, n_out].
            let (n_in, rank, n_out) = (a.dims[0] as usize, a.dims[1] as usize, b.dims[1] as usize);
            if b.dims[0] as usize != rank {
                return Err(invalid(format!(
                    "{base}: lora_a has rank {rank} (shape {:?}) but lora_b has rank {} (shape {:?})",
                    a.dims, b.dims[0], b.dims
                )));
            }
            let to_f32 = |t: &crate::gguf::TensorInfo| -> Result<Vec<f32>, ModelError> {
                let mut out = vec![0f32; t.n_elements() as usize];
                dequantize_row(t.ty, file.tensor_data(t), &mut out)
                    .map_err(|e: KernelError| invalid(format!("tensor {:?}: {e}", t.name)))?;
                if let Some(i) = out.iter().position(|v| !v.is_finite()) {
                    return Err(invalid(format!("tensor {:?} holds a non-finite value at element {i}", t.name)));
                }
                Ok(out)
            };
            // Both halves F16 stay F16; a mixed pair is multiplied as f32 (no converter writes one).
            let f16 = a.ty == GgmlType::F16 && b.ty == GgmlType::F16;
            weights.push(Arc::new(LoraWeight::new(base, rank, n_in, n_out, to_f32(a)?, to_f32(b)?, f16)));
        }
        Ok(LoraAdapter { path, arch, alpha, weights })
    }

    /// The factor `s` in `y = W·x + s·B·(A·x)` for a user scale (llama.cpp's `--lora-scaled
    /// FILE SCALE`; `--lora FILE` is 1): `scale · alpha / rank`, or `scale` when alpha is 0.
    pub fn effective_scale(&self, user_scale: f32, rank: usize) -> f32 {
        if self.alpha == 0.0 {
            user_scale
        } else {
            user_scale * self.alpha / rank as f32
        }
    }
}
