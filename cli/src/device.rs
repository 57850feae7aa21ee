//! `--device` and `-ngl`: where a command runs, with llama.cpp's meaning of -ngl.

use anyhow::{bail, Result};
use nexus_runtime::decoder::{CpuDecoder, Decoder};
use nexus_runtime::kv_cache::{CacheTypes, KvType};
use nexus_runtime::model::Model;

use crate::args::ModelArgs;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Device {
    Cpu,
    Cuda(usize),
}

impl Device {
    pub fn name(self) -> &'static str {
        match self {
            Device::Cpu => "CPU",
            Device::Cuda(_) => "CUDA",
        }
    }
}

/// The device for `args`: an explicit `--device`, else `-ngl 0` for the CPU, else CUDA when
/// this binary has it and a GPU is present.
pub fn select(args: &ModelArgs, n_layer: usize) -> Result<Device> {
    let explicit = match args.device.as_deref() {
        None => None,
        Some("cpu") => Some(Device::Cpu),
        Some("cuda") => Some(Device::Cuda(0)),
        Some(s) => match s.strip_prefix("cuda:").and_then(|n| n.parse().ok()) {
            Some(n) => Some(Device::Cuda(n)),
            None => bail!("--device {s:?}: expected cpu, cuda or cuda:N"),
        },
    };
    if let Some(ngl) = args.n_gpu_layers {
        if ngl > 0 && (ngl as usize) < n_layer {
            bail!(
                "-ngl {ngl}: partial offload is not supported yet; use -ngl 0 (CPU) or -ngl {n_layer} or more (all {n_layer} layers on the GPU)"
            );
        }
        match (explicit, ngl) {
            (Some(Device::Cuda(_)), 0) => bail!("--device cuda with -ngl 0 puts no layer on the GPU"),
            (Some(Device::Cpu), n) if n > 0 => bail!("--device cpu with -ngl {n}: pick one"),
            (None, 0) => return Ok(Device::Cpu),
            (None, _) => return cuda_or_explain(0),
            _ => {}
        }
    }
    match explicit {
        Some(Device::Cuda(n)) => cuda_or_explain(n),
        Some(d) => Ok(d),
        None => Ok(default_device()),
    }
}

#[cfg(feature = "cuda")]
fn cuda_or_explain(n: usize) -> Result<Device> {
    let count = nexus_kernels::cuda::device_count()?;
    if n >= count {
        bail!("--device cuda:{n}: this machine has {count} CUDA device(s)");
    }
    Ok(Device::Cuda(n))
}

#[cfg(not(feature = "cuda"))]
fn cuda_or_explain(_: usize) -> Result<Device> {
    bail!("this nexus-cli was built without CUDA; rebuild with `cargo build --release --features cuda`")
}

#[cfg(feature = "cuda")]
fn default_device() -> Device {
    match nexus_kernels::cuda::device_count() {
        Ok(n) if n > 0 => Device::Cuda(0),
        _ => Device::Cpu,
    }
}

#[cfg(not(feature = "cuda"))]
fn default_device() -> Device {
    Device::Cpu
}

/// Refuses a KV cache type `device` cannot hold, naming the flag: the CUDA backend's kernels
/// read f16 or Q8_0 rows, not f32. Its Q8_0 cache is written but has not yet passed its
/// parity tests on a GPU (docs/CUDA.md), so it is refused too unless `NEXUS_CUDA_UNVERIFIED=1`
/// says to use it anyway.
pub fn check_cache_types(device: Device, types: CacheTypes) -> Result<()> {
    if let Device::Cuda(_) = device {
        let unverified_ok = std::env::var_os("NEXUS_CUDA_UNVERIFIED").is_some_and(|v| v == "1");
        for (flag, ty) in [("--cache-type-k", types.k), ("--cache-type-v", types.v)] {
            match ty {
                Some(KvType::F32) => {
                    bail!("{flag} f32: the CUDA backend keeps its KV cache in f16 or q8_0 (an f32 cache runs on the CPU: --device cpu)")
                }
                Some(KvType::Q8_0) if !unverified_ok => bail!(
                    "{flag} q8_0: the CUDA backend's Q8_0 cache has not passed its parity tests on a GPU yet \
                     (scripts/cuda/device_check.sh); use --device cpu, or set NEXUS_CUDA_UNVERIFIED=1 to run it anyway"
                ),
                _ => {}
            }
        }
    }
    Ok(())
}

/// A backend on `device` for `model` with `n_ctx` positions, its KV cache stored as `types`.
pub fn open<'a>(device: Device, model: &'a Model, n_ctx: usize, types: CacheTypes) -> Result<Box<dyn Decoder + 'a>> {
    check_cache_types(device, types)?;
    match device {
        Device::Cpu => Ok(Box::new(CpuDecoder { model, cache: model.new_cache_typed(n_ctx, types)? })),
        #[cfg(feature = "cuda")]
        Device::Cuda(n) => Ok(Box::new(nexus_runtime::model::CudaModel::load(model, n_ctx, n, types)?)),
        #[cfg(not(feature = "cuda"))]
        Device::Cuda(_) => cuda_or_explain(0).map(|_| unreachable!("cuda_or_explain always fails without CUDA")),
    }
}
