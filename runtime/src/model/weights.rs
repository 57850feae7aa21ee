//! Weights as views into the GGUF map, and the one linear-layer helper every projection uses.

use std::sync::Arc;

use nexus_kernels::{dequantize_row, DotOrder, GgmlType};

use crate::adapter::LoraDelta;
use crate::gguf::{GgufErrorKind, GgufFile, TensorInfo};

use super::{ModelConfig, ModelError};

/// How a product over several token rows is computed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Batching {
    /// Multi-token register tiles: the fastest for prompts; a row's last bits depend on the
    /// batch it came in.
    Tiled,
    /// Every row with the single-token kernel: a row's result is bitwise what decoding that
    /// token alone gives (speculative verification relies on it).
    RowWise,
}

/// A 2-D weight `[rows][cols]` (ggml dims `[cols, rows]`) living in the file's map.
pub struct Linear {
    pub name: String,
    pub ty: GgmlType,
    pub rows: usize,
    pub cols: usize,
    /// How products with this weight are summed: llama.cpp's choice for it, so the logits
    /// are bitwise its CPU backend's (see [`DotOrder::llama_cpp`]).
    pub order: DotOrder,
    file: Arc<GgufFile>,
    info: TensorInfo,
    bias: Option<Vec<f32>>,
    /// Attached LoRA deltas, added after `W·x + b` (see `Model::apply_lora`).
    lora: Vec<LoraDelta>,
}

impl Linear {
    pub fn load(file: &Arc<GgufFile>, name: &str, cols: usize, rows: usize) -> Result<Self, ModelError> {
        let (info, _) = file.tensor_checked(name, &[cols as u64, rows as u64])?;
        if !info.ty.has_kernels() {
            return Err(ModelError::Unsupported {
                path: file.path().into(),
                what: format!("tensor {name:?} has type {}, which has no kernels yet", info.ty),
            });
        }
        let info = info.clone();
        let order = DotOrder::llama_cpp(info.ty, rows);
        Ok(Linear { name: name.to_string(), ty: info.ty, rows, cols, order, file: file.clone(), info, bias: None, lora: Vec::new() })
    }

    /// A weight that is also read by rows (the embedding matrix as a tied output head): llama.cpp
    /// keeps it where row lookups can read it, unrepacked, so products sum in `vec_dot`'s order.
    pub fn looked_up_too(mut self) -> Self {
        self.order = DotOrder::VecDot;
        self
    }

    fn with_bias(mut self, file: &GgufFile, name: &str) -> Result<Self, ModelError> {
        self.bias = Some(load_vector(file, name, self.rows)?);
        Ok(self)
    }

    pub fn bias(&self) -> Option<&[f32]> {
        self.bias.as_deref()
    }

    /// The LoRA deltas this projection adds to its output.
    pub fn lora(&self) -> &[LoraDelta] {
        &self.lora
    }

    pub(crate) fn lora_mut(&mut self) -> &mut Vec<LoraDelta> {
        &mut self.lora
    }

    pub fn data(&self) -> &[u8] {
        self.file.tensor_data(&self.info)
    }

    /// y = W·x (+ b) (+ Σ sᵢ·Bᵢ·(Aᵢ·x) over attached LoRA deltas) for `n` rows of x
    /// (`n × cols`), giving `n × rows`.
    pub fn forward(&self, x: &[f32], n: usize, y: &mut [f32]) -> Result<(), ModelError> {
        self.forward_with(Batching::Tiled, x, n, y)
    }

    /// [`Linear::forward`] with the given way of computing a batch of rows.
    pub fn forward_with(&self, batching: Batching, x: &[f32], n: usize, y: &mut [f32]) -> Result<(), ModelError> {
        let product = match batching {
            Batching::Tiled => nexus_kernels::matmul_in,
            Batching::RowWise => nexus_kernels::matmul_rowwise_in,
        };
        let base = |y: &mut [f32]| {
            product(self.order, self.ty, self.data(), self.rows, self.cols, x, n, y)
                .map_err(|source| ModelError::Kernel { tensor: self.name.clone(), source })
        };
        if self.lora.is_empty() {
            base(y)?;
        } else {
            // Each adapter's s·B·(A·x) needs only x, so it runs beside the base product (the
            // pool's idle thread takes it while the other works through weight rows) and is
            // added afterwards, adapter by adapter, as llama.cpp adds them.
            let lora_error = |source| ModelError::Kernel { tensor: format!("{} (LoRA)", self.name), source };
            let mut updates = vec![0f32; self.lora.len() * n * self.rows];
            let (done, updated) = rayon::join(
                || base(y),
                || {
                    for (delta, u) in self.lora.iter().zip(updates.chunks_exact_mut(n * self.rows)) {
                        match batching {
                            Batching::Tiled => delta.write_to(x, n, u)?,
                            // One row at a time, as decoding computes it.
                            Batching::RowWise => {
                                for (xr, ur) in x.chunks_exact(self.cols).zip(u.chunks_exact_mut(self.rows)) {
                                    delta.write_to(xr, 1, ur)?;
                                }
                            }
                        }
                    }
                    Ok(())
                },
            );
            done?;
            updated.map_err(lora_error)?;
            for u in updates.chunks_exact(n * self.rows) {
                nexus_kernels::ops::add_inplace(&mut y[..n * self.rows], u);
            }
        }
        // After the adapters, as llama.cpp adds a projection's bias to `build_lora_mm`'s result.
        if let Some(b) = &self.bias {
            for row in y.chunks_exact_mut(self.rows) {
                nexus_kernels::ops::add_inplace(row, b);
            }
        }
        Ok(())
    }

    /// One row of the matrix as f32 (embedding lookup).
    pub fn row(&self, r: usize, out: &mut [f32]) -> Result<(), ModelError> {
        let row_bytes = self.ty.row_size(self.cols as u64).unwrap_or(0) as usize;
        let data = &self.data()[r * row_bytes..(r + 1) * row_bytes];
        dequantize_row(self.ty, data, out).map_err(|source| ModelError::Kernel { tensor: self.name.clone(), source })
    }
}

/// A small 1-D tensor (norm weight, bias, RoPE factors) copied out as f32.
pub fn load_vector(file: &GgufFile, name: &str, len: usize) -> Result<Vec<f32>, ModelError> {
    let (info, data) = file.tensor_checked(name, &[len as u64])?;
    let mut out = vec![0f32; len];
    dequantize_row(info.ty, data, &mut out).map_err(|e| {
        ModelError::Gguf(file.error(GgufErrorKind::BadTensor { name: name.into(), reason: e.to_string() }))
    })?;
    Ok(out)
}

pub struct LayerWeights {
    pub attn_norm: Vec<f32>,
    pub wq: Linear,
    pub wk: Linear,
    pub wv: Linear,
    pub wo: Linear,
    pub ffn_norm: Vec<f32>,
    pub w_gate: Linear,
    pub w_up: Linear,
    pub w_down: Linear,
}

impl LayerWeights {
    pub fn load(file: &Arc<GgufFile>, cfg: &ModelConfig, i: usize) -> Result<Self, ModelError> {
        let n = |s: &str| format!("blk.{i}.{s}");
        let (d, q, kv, ff) = (cfg.n_embd, cfg.q_dim(), cfg.kv_dim(), cfg.n_ff);
        // Qwen2 always has Q/K/V biases; llama files may carry them too (some fine-tunes do).
        let projection = |name: &str, rows: usize| -> Result<Linear, ModelError> {
            let w = Linear::load(file, &n(&format!("{name}.weight")), d, rows)?;
            let bias = n(&format!("{name}.bias"));
            if file.tensor_info(&bias).is_some() {
                w.with_bias(file, &bias)
            } else if cfg.arch == super::Arch::Qwen2 {
                Err(file.error(GgufErrorKind::MissingTensor(bias)).into())
            } else {
                Ok(w)
            }
        };
        Ok(LayerWeights {
            wq: projection("attn_q", q)?,
            wk: projection("attn_k", kv)?,
            wv: projection("attn_v", kv)?,
            attn_norm: load_vector(file, &n("attn_norm.weight"), d)?,
            wo: Linear::load(file, &n("attn_output.weight"), q, d)?,
            ffn_norm: load_vector(file, &n("ffn_norm.weight"), d)?,
            w_gate: Linear::load(file, &n("ffn_gate.weight"), d, ff)?,
            w_up: Linear::load(file, &n("ffn_up.weight"), d, ff)?,
            w_down: Linear::load(file, &n("ffn_down.weight"), ff, d)?,
        })
    }
}

