//! Compute primitives for Nexus: ggml-compatible quantized block formats and CPU kernels.
//!
//! Depends on nothing of ours. Everything above it (the runtime's model graph, the converter,
//! the trainer) reaches weights only through the functions exported here.

pub mod adamw;
#[cfg(feature = "cuda")]
pub mod cuda;
pub mod conv;
pub mod gemm;
pub mod ggml_order;
pub mod ggml_type;
pub mod matmul;
pub mod ops;
pub mod quant;
pub mod simd;

pub use ggml_type::GgmlType;
pub use matmul::{matmul, matmul_in, matmul_rowwise, matmul_rowwise_in, matvec, DotOrder, RowDot, TILED_MIN_BATCH};
pub use quant::{dequantize_row, quantize_activation_row, quantize_row};

/// Errors of the kernel layer: wrong buffer sizes or a type without a kernel.
#[derive(Debug, thiserror::Error)]
pub enum KernelError {
    #[error("{ty} has no {what} kernel")]
    Unsupported { ty: GgmlType, what: &'static str },
    #[error("buffer size mismatch in {what}: expected {expected}, got {got}")]
    Size {
        what: &'static str,
        expected: usize,
        got: usize,
    },
    #[error("row of {n} elements is not a multiple of the {ty} block size {block}")]
    Misaligned {
        ty: GgmlType,
        n: usize,
        block: usize,
    },
}
