//! The KV cache on the device, one allocation per side (keys, values) for all layers: f16 rows
//! `[layer][pos][kv_dim]`, or Q8_0 rows split into int8 quants `[layer][pos][kv_dim]` and their
//! f16 scales `[layer][pos][kv_dim / 32]`, so the kernels' loads stay aligned. A Q8_0 side
//! stores the bytes the CPU cache stores for the same values (`quantize_activation_row`).

use half::f16;
use nexus_kernels::cuda::{CudaError, Gpu, GpuBuffer};

use crate::kv_cache::KvType;

pub(super) struct KvSide {
    pub(super) ty: KvType,
    /// f16 rows, or the Q8_0 quants.
    data: GpuBuffer<u8>,
    /// Q8_0 scales; `None` for f16 rows.
    scales: Option<GpuBuffer<f16>>,
    /// Values of one layer: positions × kv_dim.
    layer_values: usize,
}

impl KvSide {
    /// Device bytes of a side of `ty` for the whole model.
    pub(super) fn bytes(ty: KvType, n_layer: usize, n_ctx: usize, kv_dim: usize) -> usize {
        n_layer * n_ctx * ty.bytes(kv_dim)
    }

    /// `ty` is f16 or Q8_0 (`CacheTypes::on_cuda` checked it and the head size).
    pub(super) fn alloc(gpu: &Gpu, ty: KvType, n_layer: usize, n_ctx: usize, kv_dim: usize) -> Result<Self, CudaError> {
        let layer_values = n_ctx * kv_dim;
        let n = n_layer * layer_values;
        let (data, scales) = match ty {
            KvType::F16 => (gpu.alloc::<u8>(2 * n)?, None),
            KvType::Q8_0 => (gpu.alloc::<u8>(n)?, Some(gpu.alloc::<f16>(n / 32)?)),
            KvType::F32 => return Err(CudaError::Unsupported("an f32 KV cache on the GPU".into())),
        };
        Ok(KvSide { ty, data, scales, layer_values })
    }

    /// Layer `l`'s rows and scales (0 for f16 rows), as the kernels take them.
    pub(super) fn layer(&self, l: usize) -> (u64, u64) {
        match &self.scales {
            None => (self.data.ptr_at(2 * l * self.layer_values), 0),
            Some(s) => (self.data.ptr_at(l * self.layer_values), s.ptr_at(l * self.layer_values / 32)),
        }
    }
}
