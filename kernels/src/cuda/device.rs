//! One GPU: context, the stream every kernel runs on, the compiled kernels, buffers and graphs.

use std::collections::HashMap;
use std::ffi::c_void;
use std::sync::Arc;

use cudarc::driver::sys::{
    self, CUdevice_attribute, CUfunction_attribute, CUgraphInstantiate_flags, CUstreamCaptureMode,
};
use cudarc::driver::{
    result, CudaContext, CudaFunction, CudaGraph, CudaModule, CudaSlice, CudaStream, DevicePtr, DeviceRepr,
    ValidAsZeroBits,
};
use cudarc::cublas::CudaBlas;
use cudarc::nvrtc::Ptx;

use super::{compile, driver_err, CudaError};

/// Every kernel the sources define; each is looked up once when the GPU is opened.
pub(crate) const KERNELS: [&str; 66] = [
    "matvec_f32", "matvec_f16", "matvec_bf16", "matvec_q8_0", "matvec_q4_0", "matvec_q4_1", "matvec_q5_0",
    "matvec_q4_k", "matvec_q5_k", "matvec_q6_k", "matvec_f32_lora", "matvec_f16_lora", "matvec_bf16_lora",
    "matvec_q8_0_lora", "matvec_q4_0_lora", "matvec_q4_1_lora", "matvec_q5_0_lora", "matvec_q4_k_lora",
    "matvec_q5_k_lora", "matvec_q6_k_lora", "lora_down", "embed", "rope_store", "kv_store_q8", "attn_decode", "attn_decode_kq8", "attn_decode_vq8",
    "attn_decode_q8", "argmax", "topk_slices", "advance",
    "swiglu", "embed_batch", "rmsnorm_f16", "to_f16", "swiglu_f16", "add_bias", "dequant_f16", "attn_prefill",
    "attn_prefill_tiled", "attn_prefill_tiled_q8", "quantize_q8_rows", "mmq_q8_0", "tr_embed", "tr_embed_bwd", "tr_rmsnorm", "tr_rmsnorm_bwd", "tr_rmsnorm_dw", "tr_rope", "tr_swiglu",
    "tr_swiglu_bwd", "tr_axpy", "tr_attn_fwd", "tr_attn_bwd_dq", "tr_attn_bwd_dkv", "tr_loss_stats", "tr_loss_grad", "tr_adamw",
    "tr_sum_squares", "tr_scale", "tr_zero_sink_rows", "tr_heads_transpose", "tr_attn_softmax", "tr_attn_probs",
    "tr_attn_dsum", "tr_attn_dscores",
];

/// Dynamic shared memory the mat-vec kernels may use (x of up to 16K columns as f32).
pub(crate) const MATVEC_SMEM_MAX: u32 = 64 * 1024 + 1024;

pub struct Gpu {
    ctx: Arc<CudaContext>,
    stream: Arc<CudaStream>,
    _module: Arc<CudaModule>,
    funcs: HashMap<&'static str, CudaFunction>,
    pub name: String,
    pub arch: String,
    pub sm_count: usize,
    /// Synchronize after every launch so a failing kernel is named (NEXUS_CUDA_SYNC=1).
    sync_each: bool,
    /// Launch with programmatic dependent launch (Hopper and later; NEXUS_CUDA_PDL=0 turns it
    /// off): a kernel may start while the one before it finishes, runs its weight prefetch,
    /// and waits (`griddep_wait` in common.cuh) before it touches anything the earlier one
    /// wrote. Every kernel of ours waits before its first such access, so the attribute is
    /// safe on all of them.
    pdl: bool,
    /// Prompt attention by the tiled kernel (NEXUS_CUDA_TILED_PREFILL=0: one warp per query).
    pub(crate) tiled_prefill: bool,
    /// Warps per mat-vec block; 0 picks by the matrix (NEXUS_CUDA_MV_WARPS, for measuring).
    pub(crate) mv_warps: usize,
    /// Resident blocks per SM by (kernel, threads, dynamic shared memory).
    occupancy: std::sync::Mutex<HashMap<(&'static str, u32, usize), usize>>,
    /// cuBLAS, created on first use: decode never needs it.
    blas: std::sync::OnceLock<CudaBlas>,
}

/// A device allocation with its address kept for kernel arguments.
pub struct GpuBuffer<T> {
    slice: CudaSlice<T>,
    ptr: u64,
}

impl<T> GpuBuffer<T> {
    pub fn ptr(&self) -> u64 {
        self.ptr
    }
    pub fn len(&self) -> usize {
        self.slice.len()
    }
    pub fn is_empty(&self) -> bool {
        self.slice.len() == 0
    }
    /// Address of element `i` (for views into a larger buffer, e.g. one layer of the KV cache).
    pub fn ptr_at(&self, i: usize) -> u64 {
        self.ptr + (i * std::mem::size_of::<T>()) as u64
    }
}

/// A captured sequence of launches, replayed with one call.
pub struct Graph(CudaGraph);

/// Whether the CUDA driver and NVRTC libraries can be loaded, naming the first missing one.
pub fn check_libraries() -> Result<(), CudaError> {
    let missing = |lib: &'static str| CudaError::LibraryMissing {
        lib,
        candidates: cudarc::get_lib_name_candidates(lib).join(", "),
    };
    // cudarc panics on first use of a library it cannot load: ask first.
    if !unsafe { cudarc::driver::sys::is_culib_present() } {
        return Err(missing("cuda"));
    }
    if !unsafe { cudarc::nvrtc::sys::is_culib_present() } {
        return Err(missing("nvrtc"));
    }
    Ok(())
}

/// Number of CUDA devices, or why CUDA cannot be used here.
pub fn device_count() -> Result<usize, CudaError> {
    check_libraries()?;
    result::init().map_err(driver_err("cuInit"))?;
    Ok(CudaContext::device_count().map_err(driver_err("cuDeviceGetCount"))?.max(0) as usize)
}

impl Gpu {
    pub fn open(ordinal: usize) -> Result<Gpu, CudaError> {
        check_libraries()?;
        result::init().map_err(driver_err("cuInit"))?;
        let count = CudaContext::device_count().map_err(driver_err("cuDeviceGetCount"))?;
        if ordinal as i32 >= count {
            return Err(CudaError::NoDevice { ordinal, count });
        }
        let ctx = CudaContext::new(ordinal).map_err(driver_err("cuCtxCreate"))?;
        // One stream, ordered launches: cudarc's per-buffer event tracking would only add cost.
        unsafe { ctx.disable_event_tracking() };
        let stream = ctx.new_stream().map_err(driver_err("cuStreamCreate"))?;
        let (major, minor) = ctx.compute_capability().map_err(driver_err("cuDeviceGetAttribute"))?;
        let arch = format!("sm_{major}{minor}");
        let sm_count = ctx
            .attribute(CUdevice_attribute::CU_DEVICE_ATTRIBUTE_MULTIPROCESSOR_COUNT)
            .map_err(driver_err("cuDeviceGetAttribute"))? as usize;
        let name = ctx.name().map_err(driver_err("cuDeviceGetName"))?;
        let module = ctx.load_module(Ptx::from_binary(compile::cubin(&arch)?)).map_err(driver_err("cuModuleLoadData"))?;
        let mut funcs = HashMap::new();
        for k in KERNELS {
            let f = module.load_function(k).map_err(driver_err(format!("cuModuleGetFunction({k})")))?;
            let smem = match k {
                _ if k.starts_with("matvec_") => MATVEC_SMEM_MAX,
                "tr_attn_fwd" => super::train::TRAIN_ATTN_SMEM_MAX,
                _ => 0,
            };
            if smem > 0 {
                f.set_attribute(CUfunction_attribute::CU_FUNC_ATTRIBUTE_MAX_DYNAMIC_SHARED_SIZE_BYTES, smem as i32)
                    .map_err(driver_err(format!("cuFuncSetAttribute({k})")))?;
            }
            funcs.insert(k, f);
        }
        let sync_each = std::env::var_os("NEXUS_CUDA_SYNC").is_some_and(|v| v != "0");
        let pdl = major >= 9 && std::env::var_os("NEXUS_CUDA_PDL").is_none_or(|v| v != "0");
        let tiled_prefill = std::env::var_os("NEXUS_CUDA_TILED_PREFILL").is_none_or(|v| v != "0");
        let mv_warps = std::env::var("NEXUS_CUDA_MV_WARPS").ok().and_then(|v| v.parse().ok()).filter(|&w| w <= 8).unwrap_or(0);
        Ok(Gpu { ctx, stream, _module: module, funcs, name, arch, sm_count, sync_each, pdl, mv_warps, tiled_prefill, occupancy: Default::default(), blas: std::sync::OnceLock::new() })
    }

    /// (free, total) device memory in bytes.
    pub fn mem_info(&self) -> Result<(usize, usize), CudaError> {
        self.ctx.mem_get_info().map_err(driver_err("cuMemGetInfo"))
    }

    /// Fails with the sizes when `bytes` more would not fit.
    pub fn ensure_free(&self, what: &str, bytes: usize) -> Result<(), CudaError> {
        let (free, total) = self.mem_info()?;
        if bytes > free {
            return Err(CudaError::OutOfMemory {
                what: what.to_string(),
                need_mib: (bytes >> 20) as u64,
                free_mib: (free >> 20) as u64,
                total_mib: (total >> 20) as u64,
            });
        }
        Ok(())
    }

    pub fn alloc<T: DeviceRepr + ValidAsZeroBits>(&self, n: usize) -> Result<GpuBuffer<T>, CudaError> {
        let slice = self.stream.alloc_zeros::<T>(n.max(1)).map_err(|e| self.alloc_error(n * size_of::<T>(), e))?;
        Ok(self.wrap(slice))
    }

    /// A buffer whose contents are undefined until written: for scratch that a kernel or a
    /// GEMM with β = 0 overwrites whole before anything reads it (no clearing pass).
    pub fn alloc_scratch<T: DeviceRepr>(&self, n: usize) -> Result<GpuBuffer<T>, CudaError> {
        // SAFETY: device memory is never read by the host before a device write fills it; the
        // callers' contract (above) is that no kernel reads an element it has not written.
        let slice = unsafe { self.stream.alloc::<T>(n.max(1)) }.map_err(|e| self.alloc_error(n * size_of::<T>(), e))?;
        Ok(self.wrap(slice))
    }

    pub fn upload<T: DeviceRepr>(&self, data: &[T]) -> Result<GpuBuffer<T>, CudaError> {
        if data.is_empty() {
            return Err(CudaError::Unsupported("empty upload".into()));
        }
        let slice = self.stream.clone_htod(data).map_err(|e| self.alloc_error(std::mem::size_of_val(data), e))?;
        Ok(self.wrap(slice))
    }

    pub fn write<T: DeviceRepr>(&self, dst: &mut GpuBuffer<T>, data: &[T]) -> Result<(), CudaError> {
        self.stream.memcpy_htod(data, &mut dst.slice).map_err(driver_err("cuMemcpyHtoD"))
    }

    pub fn read<T: DeviceRepr + Default + Clone>(&self, src: &GpuBuffer<T>, n: usize) -> Result<Vec<T>, CudaError> {
        let mut out = vec![T::default(); n];
        let view = src.slice.slice(0..n);
        self.stream.memcpy_dtoh(&view, &mut out).map_err(driver_err("cuMemcpyDtoH"))?;
        Ok(out)
    }

    /// Copies `n` f32 from device address `src` to `dst` on the stream.
    pub fn copy_f32(&self, src: u64, dst: u64, n: usize) -> Result<(), CudaError> {
        unsafe { result::memcpy_dtod_async(dst, src, n * 4, self.stream.cu_stream()) }.map_err(driver_err("cuMemcpyDtoD"))
    }

    pub fn sync(&self) -> Result<(), CudaError> {
        self.stream.synchronize().map_err(driver_err("cuStreamSynchronize (a kernel failed; NEXUS_CUDA_SYNC=1 names it)"))
    }

    fn wrap<T>(&self, slice: CudaSlice<T>) -> GpuBuffer<T> {
        let ptr = {
            let (p, _guard) = slice.device_ptr(&self.stream);
            p
        };
        GpuBuffer { slice, ptr }
    }

    fn alloc_error(&self, bytes: usize, e: cudarc::driver::DriverError) -> CudaError {
        match self.mem_info() {
            Ok((free, total)) if bytes > free => CudaError::OutOfMemory {
                what: "an allocation".into(),
                need_mib: (bytes >> 20) as u64,
                free_mib: (free >> 20) as u64,
                total_mib: (total >> 20) as u64,
            },
            _ => CudaError::Driver { op: format!("cuMemAlloc({bytes} bytes)"), detail: format!("{e:?}") },
        }
    }

    /// Launches `kernel` with one argument: a `#[repr(C)]` struct mirrored in the CUDA source.
    ///
    /// # Safety
    /// `args` must match the kernel's parameter struct and every address in it must be valid
    /// for the accesses the kernel makes with the given grid.
    pub(crate) unsafe fn launch<A>(
        &self,
        kernel: &str,
        grid: (u32, u32, u32),
        block: u32,
        smem: u32,
        args: &A,
    ) -> Result<(), CudaError> {
        let mut params = [args as *const A as *mut c_void];
        self.launch_raw(kernel, grid, block, smem, &mut params)
    }

    /// # Safety
    /// As [`Gpu::launch`], with `params` pointing at each kernel parameter in order.
    pub(crate) unsafe fn launch_raw(
        &self,
        kernel: &str,
        grid: (u32, u32, u32),
        block: u32,
        smem: u32,
        params: &mut [*mut c_void],
    ) -> Result<(), CudaError> {
        let f = self.funcs.get(kernel).ok_or_else(|| CudaError::Kernel { kernel: kernel.into(), detail: "not compiled".into() })?;
        let fail = |e: cudarc::driver::DriverError| CudaError::Kernel { kernel: kernel.into(), detail: format!("{e:?}") };
        if self.pdl {
            // SAFETY: the config and its one attribute outlive the call; params as for launch_kernel.
            let mut attr: sys::CUlaunchAttribute = std::mem::zeroed();
            attr.id = sys::CUlaunchAttributeID::CU_LAUNCH_ATTRIBUTE_PROGRAMMATIC_STREAM_SERIALIZATION;
            attr.value.programmaticStreamSerializationAllowed = 1;
            let cfg = sys::CUlaunchConfig {
                gridDimX: grid.0,
                gridDimY: grid.1,
                gridDimZ: grid.2,
                blockDimX: block,
                blockDimY: 1,
                blockDimZ: 1,
                sharedMemBytes: smem,
                hStream: self.stream.cu_stream(),
                attrs: &mut attr,
                numAttrs: 1,
            };
            sys::cuLaunchKernelEx(&cfg, f.cu_function(), params.as_mut_ptr(), std::ptr::null_mut()).result().map_err(fail)?;
        } else {
            result::launch_kernel(f.cu_function(), grid, (block, 1, 1), smem, self.stream.cu_stream(), params).map_err(fail)?;
        }
        if self.sync_each {
            self.stream.synchronize().map_err(fail)?;
        }
        Ok(())
    }

    /// Prompt attention by the tiled kernel (the default) or one warp per query, to compare.
    pub fn set_tiled_prefill(&mut self, on: bool) {
        self.tiled_prefill = on;
    }

    /// Whether the device has int8 `mma.sync` (sm_80 and later), which [`Gpu::mmq_q8_0`] needs.
    pub fn has_int8_mma(&self) -> bool {
        self.arch.trim_start_matches("sm_").parse::<u32>().is_ok_and(|cc| cc >= 80)
    }

    /// How many blocks of `kernel` with `block` threads and `smem` bytes of dynamic shared
    /// memory one SM runs at once (its registers decide as much as its size): a grid of
    /// `sm_count` times this is one wave.
    pub(crate) fn blocks_per_sm(&self, kernel: &'static str, block: u32, smem: usize) -> Result<usize, CudaError> {
        let mut cache = self.occupancy.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(&n) = cache.get(&(kernel, block, smem)) {
            return Ok(n);
        }
        let f = self.funcs.get(kernel).ok_or_else(|| CudaError::Kernel { kernel: kernel.into(), detail: "not compiled".into() })?;
        let n = f
            .occupancy_max_active_blocks_per_multiprocessor(block, smem, None)
            .map_err(driver_err(format!("cuOccupancyMaxActiveBlocksPerMultiprocessor({kernel})")))?
            .max(1) as usize;
        cache.insert((kernel, block, smem), n);
        Ok(n)
    }

    /// Records the launches `f` makes into a graph instead of running them.
    pub fn capture(&self, f: impl FnOnce() -> Result<(), CudaError>) -> Result<Graph, CudaError> {
        if self.sync_each {
            return Err(CudaError::Unsupported("NEXUS_CUDA_SYNC=1 cannot be combined with graph capture".into()));
        }
        self.stream
            .begin_capture(CUstreamCaptureMode::CU_STREAM_CAPTURE_MODE_THREAD_LOCAL)
            .map_err(driver_err("cuStreamBeginCapture"))?;
        let recorded = f();
        let graph = self.stream.end_capture(CUgraphInstantiate_flags(0)).map_err(driver_err("cuStreamEndCapture"))?;
        recorded?;
        let graph = graph.ok_or_else(|| CudaError::Driver { op: "graph capture".into(), detail: "empty graph".into() })?;
        graph.upload().map_err(driver_err("cuGraphUpload"))?;
        Ok(Graph(graph))
    }

    pub fn replay(&self, graph: &Graph) -> Result<(), CudaError> {
        graph.0.launch().map_err(driver_err("cuGraphLaunch"))
    }

    /// Device-to-device copy bandwidth in bytes/s (bytes read plus bytes written), over a
    /// 1 GiB copy repeated: the roofline the benchmarks compare against.
    pub fn copy_bandwidth(&self) -> Result<f64, CudaError> {
        const N: usize = 1 << 30;
        let src = self.alloc::<u8>(N)?;
        let mut dst = self.alloc::<u8>(N)?;
        let reps = 10;
        self.stream.memcpy_dtod(&src.slice, &mut dst.slice).map_err(driver_err("cuMemcpyDtoD"))?;
        self.sync()?;
        let start = std::time::Instant::now();
        for _ in 0..reps {
            self.stream.memcpy_dtod(&src.slice, &mut dst.slice).map_err(driver_err("cuMemcpyDtoD"))?;
        }
        self.sync()?;
        Ok((2 * N * reps) as f64 / start.elapsed().as_secs_f64())
    }

    pub(crate) fn cu_device(&self) -> sys::CUdevice {
        self.ctx.cu_device()
    }

    pub(crate) fn stream_raw(&self) -> sys::CUstream {
        self.stream.cu_stream()
    }

    pub fn sync_each(&self) -> bool {
        self.sync_each
    }

    /// The cuBLAS handle on this GPU's stream, or why cuBLAS cannot be loaded.
    pub(crate) fn blas(&self) -> Result<&CudaBlas, CudaError> {
        if let Some(b) = self.blas.get() {
            return Ok(b);
        }
        // cudarc panics on first use of a library it cannot load: ask first.
        if !unsafe { cudarc::cublas::sys::is_culib_present() } {
            return Err(CudaError::LibraryMissing { lib: "cublas", candidates: cudarc::get_lib_name_candidates("cublas").join(", ") });
        }
        let blas = CudaBlas::new(self.stream.clone()).map_err(|e| CudaError::Driver { op: "cublasCreate".into(), detail: format!("{e:?}") })?;
        Ok(self.blas.get_or_init(|| blas))
    }
}
