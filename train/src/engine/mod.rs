//! The student's training engine on the CPU: an explicit forward and backward for every op of
//! the llama architecture, in f32, each checked against PyTorch autograd
//! (`tests/fixtures/train_grads`, `train/tests/grads.rs`) and against finite differences
//! (`tests.rs`). No autodiff framework: like llm.c, each op stores what its backward needs.
//!
//! Layout conventions (the runtime's): activations are token-major rows (`n × width`, a batch
//! of `n_seq` sequences of `seq_len` tokens each, every sequence starting at position 0);
//! weights are `[out][in]` like GGUF. Every matrix product goes through
//! `nexus_kernels::gemm` (packed, rayon-parallel); element-wise ops split rows over rayon.
//!
//! Backward functions *accumulate* weight gradients (`+=`), so gradient accumulation over
//! micro-batches and tied weights need no extra pass; input gradients are overwritten or
//! accumulated as each function documents.

pub mod attention;
pub mod embedding;
pub mod head_loss;
pub mod linear;
pub mod rmsnorm;
pub mod rope;
pub mod swiglu;

#[cfg(test)]
pub(crate) mod tests;
#[cfg(test)]
pub(crate) mod tests_model;

/// Bad input to the engine: a batch, a config or a buffer that does not fit the others.
#[derive(Debug, thiserror::Error)]
pub enum EngineError {
    #[error("{what}: expected {expected} elements, got {got}")]
    Size {
        what: String,
        expected: usize,
        got: usize,
    },
    #[error("token {token} at position {index} is outside the vocabulary of {n_vocab}")]
    Token {
        index: usize,
        token: u32,
        n_vocab: usize,
    },
    #[error("a batch of {n_tokens} tokens cannot be split into {n_seq} equal non-empty sequences")]
    Batch { n_tokens: usize, n_seq: usize },
    #[error("student config: {0}")]
    Config(String),
    #[error("{0}")]
    Invalid(String),
    #[cfg(feature = "cuda")]
    #[error(transparent)]
    Cuda(#[from] nexus_kernels::cuda::CudaError),
}

pub(crate) fn check_len(
    what: impl Into<String>,
    expected: usize,
    got: usize,
) -> Result<(), EngineError> {
    if expected == got {
        Ok(())
    } else {
        Err(EngineError::Size {
            what: what.into(),
            expected,
            got,
        })
    }
}

/// Rows handled by one rayon task in element-wise passes: enough work to pay for the task,
/// few enough partial sums (for weight gradients) to reduce cheaply.
pub(crate) const ROWS_PER_TASK: usize = 32;
