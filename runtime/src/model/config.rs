//! Hyper-parameters of a LLaMA-family model, read from `<arch>.*` GGUF metadata keys.

use crate::gguf::{GgufErrorKind, GgufFile};

use super::ModelError;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Arch {
    /// Llama 2/3, TinyLlama, SmolLM, Mistral-style models.
    Llama,
    /// Qwen2: like llama, plus biases on the Q/K/V projections and NeoX-style RoPE.
    Qwen2,
}

impl Arch {
    pub fn name(self) -> &'static str {
        match self {
            Arch::Llama => "llama",
            Arch::Qwen2 => "qwen2",
        }
    }
}

/// Which pairs of a head's dimensions RoPE rotates together.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RopeStyle {
    /// Adjacent pairs (2i, 2i+1): llama.cpp's converter permutes Q/K rows of llama models so
    /// that this equals HF's rotate_half.
    Normal,
    /// Halves (i, i + d/2), as HF computes it; used for qwen2 files, which are not permuted.
    Neox,
}

#[derive(Debug, Clone)]
pub struct ModelConfig {
    pub arch: Arch,
    pub n_vocab: usize,
    pub n_ctx_train: usize,
    pub n_embd: usize,
    pub n_layer: usize,
    pub n_head: usize,
    pub n_head_kv: usize,
    pub head_dim: usize,
    pub n_ff: usize,
    pub rms_eps: f32,
    pub rope_base: f32,
    /// Dimensions of each head that RoPE rotates (the rest pass through).
    pub rope_dim: usize,
    pub rope_style: RopeStyle,
    /// Linear position scaling (`rope.scaling.type = linear`): positions are multiplied by it.
    pub rope_freq_scale: f32,
}

impl ModelConfig {
    pub fn from_gguf(file: &GgufFile) -> Result<Self, ModelError> {
        let arch_name = file.get_str("general.architecture")?;
        let arch = match arch_name {
            "llama" => Arch::Llama,
            "qwen2" => Arch::Qwen2,
            other => {
                return Err(ModelError::Unsupported {
                    path: file.path().into(),
                    what: format!("architecture {other:?} is not supported (supported: llama, qwen2)"),
                })
            }
        };
        let key = |k: &str| format!("{arch_name}.{k}");
        let usize_key = |k: &str| -> Result<usize, ModelError> { Ok(file.get_u64(&key(k))? as usize) };
        let n_embd = usize_key("embedding_length")?;
        let n_head = usize_key("attention.head_count")?;
        let n_head_kv = match file.opt(&key("attention.head_count_kv"), GgufFile::get_u64)? {
            Some(v) => v as usize,
            None => n_head,
        };
        let invalid = |what: String| ModelError::Invalid { path: file.path().into(), what };
        if n_head == 0 || n_head_kv == 0 || n_head % n_head_kv != 0 {
            return Err(invalid(format!(
                "{n_head} attention heads cannot be shared by {n_head_kv} KV heads"
            )));
        }
        let head_dim = match file.opt(&key("attention.key_length"), GgufFile::get_u64)? {
            Some(v) => v as usize,
            None if n_embd % n_head == 0 => n_embd / n_head,
            None => return Err(invalid(format!("embedding {n_embd} is not divisible by {n_head} heads"))),
        };
        if let Some(v) = file.opt(&key("attention.value_length"), GgufFile::get_u64)? {
            if v as usize != head_dim {
                return Err(ModelError::Unsupported {
                    path: file.path().into(),
                    what: format!("value head size {v} differs from key head size {head_dim}"),
                });
            }
        }
        let rope_dim = match file.opt(&key("rope.dimension_count"), GgufFile::get_u64)? {
            Some(v) => v as usize,
            None => head_dim,
        };
        if rope_dim > head_dim || rope_dim % 2 != 0 {
            return Err(invalid(format!("rope dimension {rope_dim} does not fit head size {head_dim}")));
        }
        let rope_freq_scale = match file.opt(&key("rope.scaling.type"), GgufFile::get_str)? {
            None | Some("none") => 1.0,
            Some("linear") => {
                let factor = file.opt(&key("rope.scaling.factor"), GgufFile::get_f32)?.unwrap_or(1.0);
                if factor <= 0.0 {
                    return Err(invalid(format!("rope scaling factor {factor} must be positive")));
                }
                1.0 / factor
            }
            Some(other) => {
                return Err(ModelError::Unsupported {
                    path: file.path().into(),
                    what: format!("rope scaling type {other:?} is not supported (supported: none, linear, llama3 via rope_freqs)"),
                })
            }
        };
        // The vocabulary size comes from the embedding tensor: `<arch>.vocab_size` is optional.
        let embd = file
            .tensor_info("token_embd.weight")
            .ok_or_else(|| file.error(GgufErrorKind::MissingTensor("token_embd.weight".into())))?;
        let n_vocab = embd.dims.get(1).copied().unwrap_or(0) as usize;
        Ok(ModelConfig {
            arch,
            n_vocab,
            n_ctx_train: usize_key("context_length")?,
            n_embd,
            n_layer: usize_key("block_count")?,
            n_head,
            n_head_kv,
            head_dim,
            n_ff: usize_key("feed_forward_length")?,
            rms_eps: file.get_f32(&key("attention.layer_norm_rms_epsilon"))?,
            rope_base: file.opt(&key("rope.freq_base"), GgufFile::get_f32)?.unwrap_or(10_000.0),
            rope_dim,
            rope_style: match arch {
                Arch::Llama => RopeStyle::Normal,
                Arch::Qwen2 => RopeStyle::Neox,
            },
            rope_freq_scale,
        })
    }

    pub fn q_dim(&self) -> usize {
        self.n_head * self.head_dim
    }

    pub fn kv_dim(&self) -> usize {
        self.n_head_kv * self.head_dim
    }
}
