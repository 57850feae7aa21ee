//! The CUDA backend's primitives: device and stream, run-time compilation of our CUDA C
//! kernels with NVRTC (cached on disk), the device layout of each weight format, and typed
//! launchers. Built only with the `cuda` feature; the libraries are loaded at run time, so a
//! binary built with the feature still runs (on the CPU) where CUDA is absent.

mod compile;
mod device;
pub mod layout;
mod ops;
mod prefill;
mod train;
mod train_attn;

pub use device::{device_count, Gpu, GpuBuffer, Graph};
pub use layout::{DeviceLora, DeviceWeight};
pub use ops::{top_k_len, AttnDecode, KvStore, MatvecJob, MatvecMode, QkvRole, QkvRope, RopeStore, ARGMAX_SCRATCH};
pub use prefill::AttnPrefill;
pub use train::{GemmPrecision, LossRow, TrainAttn, LOSS_ROW_BYTES, SUM_SQUARES_BLOCKS, TRAIN_MAX_HEAD_DIM};

/// Everything that can go wrong on the GPU side, each naming what failed.
#[derive(Debug, thiserror::Error)]
pub enum CudaError {
    #[error(
        "CUDA library {lib} not found (looked for {candidates}); install the CUDA 13 toolkit and driver, \
         or add their lib folder (e.g. /usr/local/cuda/lib64) to LD_LIBRARY_PATH"
    )]
    LibraryMissing { lib: &'static str, candidates: String },
    #[error("no CUDA device {ordinal} (this machine has {count})")]
    NoDevice { ordinal: usize, count: i32 },
    #[error("CUDA {op} failed: {detail}")]
    Driver { op: String, detail: String },
    #[error("kernel {kernel} failed: {detail}")]
    Kernel { kernel: String, detail: String },
    #[error("NVRTC could not compile the kernels for {arch}: {log}")]
    Compile { arch: String, log: String },
    #[error(
        "CUDA headers not found: cuda_fp16.h is in none of {searched}; set CUDA_PATH to the toolkit folder"
    )]
    Headers { searched: String },
    #[error("out of GPU memory: {what} needs {need_mib} MiB, {free_mib} MiB free of {total_mib} MiB")]
    OutOfMemory { what: String, need_mib: u64, free_mib: u64, total_mib: u64 },
    #[error("{0}")]
    Unsupported(String),
}

pub(crate) fn driver_err(op: impl Into<String>) -> impl FnOnce(cudarc::driver::DriverError) -> CudaError {
    let op = op.into();
    move |e| CudaError::Driver { op, detail: format!("{e:?}") }
}
