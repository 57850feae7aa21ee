//! Typed launchers: Rust mirrors of the kernels' parameter structs and the checks that make
//! each launch's memory accesses valid.

use super::device::MATVEC_SMEM_MAX;
use super::{CudaError, DeviceWeight, Gpu};
use crate::GgmlType;

#[repr(C)]
#[derive(Clone, Copy, Default)]
struct Mat {
    q: u64,
    a: u64,
    b: u64,
    bias: u64,
    y: u64,
    rows: i32,
    pad: i32,
}

#[repr(C)]
struct MatvecArgs {
    m: [Mat; 3],
    x: u64,
    norm: u64,
    eps: f32,
    cols: i32,
    n_mats: i32,
    mode: i32,
    total_rows: i32,
    pad: i32,
    kc: u64,
    vc: u64,
    inv_freq: u64,
    state: u64,
    freq_scale: f32,
    hd: i32,
    rope_dim: i32,
    kv_dim: i32,
}

/// Each matrix's low-rank update for the `*_lora` kernels (`LoraArgs` in matvec.cu).
#[repr(C)]
#[derive(Default)]
struct LoraArgs {
    b: [u64; 3],
    u: [u64; 3],
    rank: [i32; 3],
    pad: i32,
}

#[repr(C)]
struct MatvecLoraArgs {
    m: MatvecArgs,
    l: LoraArgs,
}

#[repr(C)]
struct LoraDownArgs {
    a: [u64; 3],
    u: [u64; 3],
    x: u64,
    norm: u64,
    eps: f32,
    cols: i32,
    n_mats: i32,
    total_rank: i32,
    rank: [i32; 3],
    pad: i32,
}

#[derive(Clone, Copy, Debug, PartialEq)]
pub enum MatvecMode {
    /// y = W·x (+ bias)
    Store,
    /// y += W·x (+ bias): the residual add fused into the projection.
    Add,
    /// y = silu(W0·x) ⊙ (W1·x): SwiGLU's gate and up projections in one pass.
    SwiGlu,
    /// Q, K and V products with RoPE and the KV-cache store fused (what `rope_store` does for
    /// one token), for the normal RoPE style, whose rotary pairs are adjacent rows.
    QkvRope(QkvRope),
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum QkvRole {
    /// Rotated, stored as f32 in the matrix's output vector.
    Q,
    /// Rotated, stored as f16 at position `state[1]` of `k_cache`.
    K,
    /// Stored as f16 at position `state[1]` of `v_cache`.
    V,
}

/// Where a fused Q/K/V launch puts its results; see [`MatvecMode::QkvRope`].
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct QkvRope {
    /// The role of each matrix of the job, in order.
    pub roles: [QkvRole; 3],
    pub k_cache: u64,
    pub v_cache: u64,
    /// f64 `[rope_dim / 2]`: angle per position of each rotated pair.
    pub inv_freq: u64,
    pub state: u64,
    pub freq_scale: f32,
    pub hd: usize,
    pub rope_dim: usize,
    /// Width of one position of the caches (KV heads × head size).
    pub kv_dim: usize,
}

impl QkvRope {
    /// The same with the roles of matrices `range` of a job that is split into launches.
    pub fn roles_of(&self, range: std::ops::Range<usize>) -> QkvRope {
        let mut roles = [QkvRole::Q; 3];
        roles[..range.len()].copy_from_slice(&self.roles[range]);
        QkvRope { roles, ..*self }
    }
}

/// Up to three matrices with the same type and width that read the same x (Q/K/V, gate/up).
pub struct MatvecJob<'a> {
    /// Each matrix with the address of its output vector (f32, `rows` long).
    pub mats: Vec<(&'a DeviceWeight, u64)>,
    /// f32 input of `cols` elements.
    pub x: u64,
    /// RMSNorm weight (f32, `cols`): x is normalized and scaled before the products.
    pub norm: Option<u64>,
    pub eps: f32,
    pub mode: MatvecMode,
}

const ARGMAX_BLOCKS: usize = 128;
/// f32 elements of scratch `Gpu::argmax` needs: a (value, index) pair per block and a counter.
pub const ARGMAX_SCRATCH: usize = 2 * ARGMAX_BLOCKS + 1;

/// Elements of the `vals` and `ids` buffers [`Gpu::top_k`] writes for `n` logits.
pub fn top_k_len(n: usize, k: usize) -> usize {
    n.div_ceil(crate::ops::TOP_K_SLICE) * k
}

fn kernel_name(ty: GgmlType) -> Result<&'static str, CudaError> {
    use GgmlType::*;
    Ok(match ty {
        F32 => "matvec_f32",
        F16 => "matvec_f16",
        BF16 => "matvec_bf16",
        Q8_0 => "matvec_q8_0",
        Q4_0 => "matvec_q4_0",
        Q4_1 => "matvec_q4_1",
        Q5_0 => "matvec_q5_0",
        Q4_K => "matvec_q4_k",
        Q5_K => "matvec_q5_k",
        Q6_K => "matvec_q6_k",
        other => return Err(CudaError::Unsupported(format!("no CUDA mat-vec kernel for {other}"))),
    })
}

/// The mat-vec kernel of `ty` that adds each matrix's LoRA update in its epilogue.
fn lora_kernel_name(ty: GgmlType) -> Result<&'static str, CudaError> {
    use GgmlType::*;
    Ok(match ty {
        F32 => "matvec_f32_lora",
        F16 => "matvec_f16_lora",
        BF16 => "matvec_bf16_lora",
        Q8_0 => "matvec_q8_0_lora",
        Q4_0 => "matvec_q4_0_lora",
        Q4_1 => "matvec_q4_1_lora",
        Q5_0 => "matvec_q5_0_lora",
        Q4_K => "matvec_q4_k_lora",
        Q5_K => "matvec_q5_k_lora",
        Q6_K => "matvec_q6_k_lora",
        other => return Err(CudaError::Unsupported(format!("no CUDA mat-vec kernel for {other}"))),
    })
}

/// Shared memory a mat-vec block needs for x of `cols` elements.
pub(crate) fn matvec_smem(ty: GgmlType, cols: usize) -> usize {
    match ty {
        GgmlType::F32 | GgmlType::F16 | GgmlType::BF16 => cols * 4,
        _ => (cols / 32 * 8).next_multiple_of(16) + cols,
    }
}

impl Gpu {
    pub fn matvec(&self, job: &MatvecJob) -> Result<(), CudaError> {
        let (first, _) = *job.mats.first().ok_or_else(|| CudaError::Unsupported("mat-vec without a matrix".into()))?;
        let (ty, cols) = (first.ty, first.cols);
        if job.mats.len() > 3 || job.mats.iter().any(|(w, _)| w.ty != ty || w.cols != cols) {
            return Err(CudaError::Unsupported("fused mat-vec needs ≤ 3 matrices of one type and width".into()));
        }
        if job.mode == MatvecMode::SwiGlu && (job.mats.len() != 2 || job.mats[0].0.rows != job.mats[1].0.rows) {
            return Err(CudaError::Unsupported("SwiGLU mat-vec needs two matrices of equal shape".into()));
        }
        let smem = matvec_smem(ty, cols);
        if smem > MATVEC_SMEM_MAX as usize {
            return Err(CudaError::Unsupported(format!("mat-vec over {cols} columns of {ty} exceeds shared memory")));
        }
        let rope = match job.mode {
            MatvecMode::QkvRope(r) => Some(r),
            _ => None,
        };
        if let Some(r) = &rope {
            let bad_rows = job.mats.iter().zip(r.roles).any(|((w, _), role)| {
                w.rows % 2 != 0 || (role != QkvRole::Q && w.rows != r.kv_dim) || w.rows % r.hd != 0
            });
            if r.hd % 2 != 0 || r.rope_dim > r.hd || bad_rows {
                return Err(CudaError::Unsupported(format!(
                    "fused RoPE needs even head sizes ({}), rope_dim ≤ head size ({}) and whole heads per matrix",
                    r.hd, r.rope_dim
                )));
            }
        }
        let mut m = [Mat::default(); 3];
        for (i, (slot, (w, y))) in m.iter_mut().zip(&job.mats).enumerate() {
            let (q, a, b) = w.ptrs();
            let role = rope.map_or(0, |r| r.roles[i] as i32);
            *slot = Mat { q, a, b, bias: w.bias.as_ref().map_or(0, |b| b.ptr()), y: *y, rows: w.rows as i32, pad: role };
        }
        let total_rows = match job.mode {
            MatvecMode::SwiGlu => first.rows,
            _ => job.mats.iter().map(|(w, _)| w.rows).sum(),
        };
        let args = MatvecArgs {
            m,
            x: job.x,
            norm: job.norm.unwrap_or(0),
            eps: job.eps,
            cols: cols as i32,
            n_mats: job.mats.len() as i32,
            mode: match job.mode {
                MatvecMode::Store => 0,
                MatvecMode::Add => 1,
                MatvecMode::SwiGlu => 2,
                MatvecMode::QkvRope(_) => 3,
            },
            total_rows: total_rows as i32,
            pad: 0,
            kc: rope.map_or(0, |r| r.k_cache),
            vc: rope.map_or(0, |r| r.v_cache),
            inv_freq: rope.map_or(0, |r| r.inv_freq),
            state: rope.map_or(0, |r| r.state),
            freq_scale: rope.map_or(0.0, |r| r.freq_scale),
            hd: rope.map_or(0, |r| r.hd as i32),
            rope_dim: rope.map_or(0, |r| r.rope_dim as i32),
            kv_dim: rope.map_or(0, |r| r.kv_dim as i32),
        };
        // Each warp takes two rows at a time (one in SwiGLU mode, which reads two matrices).
        // Eight warps a block, fewer when that would leave SMs idle: a small matrix spread
        // over more SMs has more loads in flight, and each block's prologue (x normalized and
        // quantized) runs in parallel anyway.
        let rows_per_warp = if job.mode == MatvecMode::SwiGlu { 1 } else { 2 };
        // Fewer warps only while each thread still holds at most one 32-wide block of x (the
        // prologue's one-pass case in matvec.cu; Llama-3.2-1B's ffn_down with 4 warps took the
        // two-pass prologue and lost 6% of tg).
        let fits = |w: usize| w * 32 >= cols / 32;
        let mut warps = 8;
        for w in [4, 2] {
            if total_rows.div_ceil(warps * rows_per_warp) >= self.sm_count || !fits(w) {
                break;
            }
            warps = w;
        }
        if self.mv_warps != 0 {
            warps = self.mv_warps;
        }
        let with_lora = job.mats.iter().any(|(w, _)| w.lora.is_some());
        let kernel = if with_lora { lora_kernel_name(ty)? } else { kernel_name(ty)? };
        let wave = self.sm_count * self.blocks_per_sm(kernel, (warps * 32) as u32, smem)?;
        let blocks = total_rows.div_ceil(warps * rows_per_warp).min(wave).max(1);
        let grid = (blocks as u32, 1, 1);
        if !with_lora {
            return unsafe { self.launch(kernel, grid, (warps * 32) as u32, smem as u32, &args) };
        }
        let mut l = LoraArgs::default();
        for (i, (w, _)) in job.mats.iter().enumerate() {
            if let Some(d) = &w.lora {
                let (_, b, u) = d.ptrs();
                (l.b[i], l.u[i], l.rank[i]) = (b, u, d.rank as i32);
            }
        }
        self.lora_down(job)?;
        unsafe { self.launch(kernel, grid, (warps * 32) as u32, smem as u32, &MatvecLoraArgs { m: args, l }) }
    }

    /// `u = s·A·x` (x normalized as the job's mat-vec normalizes it) for every matrix of `job`
    /// with an adapter, into the adapter's own `u`, which the `*_lora` mat-vec then reads.
    fn lora_down(&self, job: &MatvecJob) -> Result<(), CudaError> {
        let cols = job.mats[0].0.cols;
        let mut args = LoraDownArgs {
            a: [0; 3],
            u: [0; 3],
            x: job.x,
            norm: job.norm.unwrap_or(0),
            eps: job.eps,
            cols: cols as i32,
            n_mats: 0,
            total_rank: 0,
            rank: [0; 3],
            pad: 0,
        };
        for d in job.mats.iter().filter_map(|(w, _)| w.lora.as_ref()) {
            let i = args.n_mats as usize;
            let (a, _, u) = d.ptrs();
            (args.a[i], args.u[i], args.rank[i]) = (a, u, d.rank as i32);
            args.n_mats += 1;
            args.total_rank += d.rank as i32;
        }
        // One block of 128 threads (`__launch_bounds__` in matvec.cu) per row of A.
        unsafe { self.launch("lora_down", (args.total_rank as u32, 1, 1), 128, 0, &args) }
    }

    /// x = row `state[0]` of `w` (the token embedding), as f32.
    pub fn embed(&self, w: &DeviceWeight, state: u64, out: u64) -> Result<(), CudaError> {
        #[repr(C)]
        struct EmbedArgs {
            w: Mat,
            state: u64,
            out: u64,
            ty: i32,
            cols: i32,
        }
        kernel_name(w.ty)?;
        let (q, a, b) = w.ptrs();
        let args = EmbedArgs {
            w: Mat { q, a, b, bias: 0, y: 0, rows: w.rows as i32, pad: 0 },
            state,
            out,
            ty: w.ty.id() as i32,
            cols: w.cols as i32,
        };
        let blocks = w.cols.div_ceil(256) as u32;
        unsafe { self.launch("embed", (blocks, 1, 1), 256, 0, &args) }
    }

    pub fn rope_store(&self, a: &RopeStore) -> Result<(), CudaError> {
        let pairs = (a.n_head + a.n_kv) * (a.hd / 2);
        unsafe { self.launch("rope_store", (pairs.div_ceil(128) as u32, a.n_tok as u32, 1), 128, 0, &a.args()) }
    }

    /// The Q8_0 sides of one layer's cache for `n_tok` tokens, after [`Gpu::rope_store`] left
    /// them (keys rotated) in f32; nothing for a cache of f16 sides only.
    pub fn kv_store_q8(&self, a: &KvStore) -> Result<(), CudaError> {
        if a.k_scales == 0 && a.v_scales == 0 {
            return Ok(());
        }
        if !a.kv_dim.is_multiple_of(32) {
            return Err(CudaError::Unsupported(format!("a Q8_0 KV cache of {} values per position (needs whole blocks of 32)", a.kv_dim)));
        }
        #[repr(C)]
        struct KvStoreArgs {
            k: u64,
            v: u64,
            kc: u64,
            ks: u64,
            vc: u64,
            vs: u64,
            state: u64,
            kv_dim: i32,
            n_tok: i32,
        }
        let args = KvStoreArgs {
            k: a.k,
            v: a.v,
            kc: a.k_cache,
            ks: a.k_scales,
            vc: a.v_cache,
            vs: a.v_scales,
            state: a.state,
            kv_dim: a.kv_dim as i32,
            n_tok: a.n_tok as i32,
        };
        // One warp per block of 32, keys then values; 8 warps a block.
        let warps = 2 * a.kv_dim / 32;
        unsafe { self.launch("kv_store_q8", (warps.div_ceil(8) as u32, a.n_tok as u32, 1), 256, 0, &args) }
    }

    /// `splits` blocks per head, each over `split` positions; `splits × split` must cover the
    /// positions the step will see.
    pub fn attn_decode(&self, a: &AttnDecode, splits: usize) -> Result<(), CudaError> {
        if !a.hd.is_multiple_of(2) || a.hd > 256 || !a.n_head.is_multiple_of(a.n_kv) {
            return Err(CudaError::Unsupported(format!(
                "attention with head size {} and {}/{} heads (needs an even size up to 256, whole groups)",
                a.hd, a.n_head, a.n_kv
            )));
        }
        check_q8_heads(a.hd, a.k_scales, a.v_scales)?;
        let kernel = match (a.k_scales != 0, a.v_scales != 0) {
            (false, false) => "attn_decode",
            (true, false) => "attn_decode_kq8",
            (false, true) => "attn_decode_vq8",
            (true, true) => "attn_decode_q8",
        };
        // ATTN_THREADS in ops.cu.
        unsafe { self.launch(kernel, (a.n_head as u32, splits as u32, 1), 256, 0, &a.args()) }
    }

    /// state[0] = index of the largest of `n` logits. `scratch` is f32 of at least
    /// [`ARGMAX_SCRATCH`] elements, zeroed once before first use (the kernel leaves it zeroed).
    pub fn argmax(&self, logits: u64, n: usize, state: u64, scratch: u64) -> Result<(), CudaError> {
        let blocks = n.div_ceil(4096).clamp(1, ARGMAX_BLOCKS);
        let (mut logits, mut n, mut state, mut scratch) = (logits, n as i32, state, scratch);
        let mut params = [
            &mut logits as *mut u64 as *mut std::ffi::c_void,
            &mut n as *mut i32 as *mut std::ffi::c_void,
            &mut state as *mut u64 as *mut std::ffi::c_void,
            &mut scratch as *mut u64 as *mut std::ffi::c_void,
        ];
        unsafe { self.launch_raw("argmax", (blocks as u32, 1, 1), 512, 0, &mut params) }
    }

    /// For each slice of [`crate::ops::TOP_K_SLICE`] of the `n` logits, its `k` largest (the
    /// sampler's order: larger first, lower id on ties, NaN as −∞) into `vals` (f32) and `ids`
    /// (i32), `k` per slice, slice by slice; id −1 pads a slice shorter than `k`. The CPU
    /// reference is [`crate::ops::slice_top_k`]. `vals` and `ids` hold [`top_k_len`]`(n, k)`.
    pub fn top_k(&self, logits: u64, n: usize, k: usize, vals: u64, ids: u64) -> Result<(), CudaError> {
        if k == 0 || k > crate::ops::TOP_K_SLICE || n == 0 {
            return Err(CudaError::Unsupported(format!("top-k of {k} over {n} logits (1 ≤ k ≤ {})", crate::ops::TOP_K_SLICE)));
        }
        let blocks = n.div_ceil(crate::ops::TOP_K_SLICE);
        let (mut logits, mut n, mut k, mut vals, mut ids) = (logits, n as i32, k as i32, vals, ids);
        let mut params = [
            &mut logits as *mut u64 as *mut std::ffi::c_void,
            &mut n as *mut i32 as *mut std::ffi::c_void,
            &mut k as *mut i32 as *mut std::ffi::c_void,
            &mut vals as *mut u64 as *mut std::ffi::c_void,
            &mut ids as *mut u64 as *mut std::ffi::c_void,
        ];
        // 512 threads: `__launch_bounds__` of topk_slices in ops.cu.
        unsafe { self.launch_raw("topk_slices", (blocks as u32, 1, 1), 512, 0, &mut params) }
    }

    /// gate = silu(gate) ⊙ up over `n` elements.
    pub fn swiglu(&self, gate: u64, up: u64, n: usize) -> Result<(), CudaError> {
        let (mut g, mut u, mut n32) = (gate, up, n as i32);
        let mut params = [
            &mut g as *mut u64 as *mut std::ffi::c_void,
            &mut u as *mut u64 as *mut std::ffi::c_void,
            &mut n32 as *mut i32 as *mut std::ffi::c_void,
        ];
        unsafe { self.launch_raw("swiglu", (n.div_ceil(256) as u32, 1, 1), 256, 0, &mut params) }
    }

    /// The step's position advances by `n`.
    pub fn advance(&self, state: u64, n: usize) -> Result<(), CudaError> {
        let mut state = state;
        let mut n = n as i32;
        let mut params = [&mut state as *mut u64 as *mut std::ffi::c_void, &mut n as *mut i32 as *mut std::ffi::c_void];
        unsafe { self.launch_raw("advance", (1, 1, 1), 1, 0, &mut params) }
    }
}

/// Heads of a Q8_0 cache side must be whole blocks: attention reads scale `i` of a head's row
/// for the dimensions `lane + 32·i`.
pub(crate) fn check_q8_heads(hd: usize, k_scales: u64, v_scales: u64) -> Result<(), CudaError> {
    if (k_scales != 0 || v_scales != 0) && !hd.is_multiple_of(32) {
        return Err(CudaError::Unsupported(format!("a Q8_0 KV cache with head size {hd} (needs a multiple of 32)")));
    }
    Ok(())
}

/// RoPE on q (in place) and k, then k and v into the f16 cache at `state[1] + t`. A side with
/// its scales set is Q8_0: rope_store leaves it in f32 (k rotated in place) and
/// [`Gpu::kv_store_q8`] stores it.
pub struct RopeStore {
    pub q: u64,
    pub k: u64,
    pub v: u64,
    pub k_cache: u64,
    pub v_cache: u64,
    /// Q8_0 scales of the keys / values (f16 `[pos][kv_dim / 32]`), 0 for an f16 side.
    pub k_scales: u64,
    pub v_scales: u64,
    /// f64 `[rope_dim / 2]`: angle per position of each rotated pair.
    pub inv_freq: u64,
    pub state: u64,
    pub freq_scale: f32,
    pub n_head: usize,
    pub n_kv: usize,
    pub hd: usize,
    pub rope_dim: usize,
    pub neox: bool,
    pub n_tok: usize,
}

impl RopeStore {
    fn args(&self) -> impl Sized {
        #[repr(C)]
        struct RopeArgs {
            q: u64,
            k: u64,
            v: u64,
            kc: u64,
            vc: u64,
            ks: u64,
            vs: u64,
            inv_freq: u64,
            state: u64,
            freq_scale: f32,
            n_head: i32,
            n_kv: i32,
            hd: i32,
            rope_dim: i32,
            neox: i32,
            n_tok: i32,
        }
        RopeArgs {
            q: self.q,
            k: self.k,
            v: self.v,
            kc: self.k_cache,
            vc: self.v_cache,
            ks: self.k_scales,
            vs: self.v_scales,
            inv_freq: self.inv_freq,
            state: self.state,
            freq_scale: self.freq_scale,
            n_head: self.n_head as i32,
            n_kv: self.n_kv as i32,
            hd: self.hd as i32,
            rope_dim: self.rope_dim as i32,
            neox: self.neox as i32,
            n_tok: self.n_tok as i32,
        }
    }
}

/// Keys (rotated) and values of `n_tok` tokens, f32 `[n_tok][kv_dim]`, into the Q8_0 sides of
/// one layer's cache (those with scales) at positions `state[1] + t`.
pub struct KvStore {
    pub k: u64,
    pub v: u64,
    pub k_cache: u64,
    pub k_scales: u64,
    pub v_cache: u64,
    pub v_scales: u64,
    pub state: u64,
    pub kv_dim: usize,
    pub n_tok: usize,
}

/// One decode step's attention over positions `0..=state[1]` of one layer's cache (f16 sides,
/// or Q8_0 for a side whose scales are set: see [`RopeStore`]).
pub struct AttnDecode {
    pub q: u64,
    pub k_cache: u64,
    pub v_cache: u64,
    pub k_scales: u64,
    pub v_scales: u64,
    pub out: u64,
    /// f32 scratch `[n_head × splits × (hd + 2)]` and i32 `[n_head]` zeroed counters.
    pub part: u64,
    pub counter: u64,
    pub state: u64,
    pub scale: f32,
    pub n_head: usize,
    pub n_kv: usize,
    pub hd: usize,
    pub split: usize,
}

impl AttnDecode {
    fn args(&self) -> impl Sized {
        #[repr(C)]
        struct AttnArgs {
            q: u64,
            kc: u64,
            vc: u64,
            ks: u64,
            vs: u64,
            out: u64,
            part: u64,
            counter: u64,
            state: u64,
            scale: f32,
            n_head: i32,
            n_kv: i32,
            hd: i32,
            split: i32,
        }
        AttnArgs {
            q: self.q,
            kc: self.k_cache,
            vc: self.v_cache,
            ks: self.k_scales,
            vs: self.v_scales,
            out: self.out,
            part: self.part,
            counter: self.counter,
            state: self.state,
            scale: self.scale,
            n_head: self.n_head as i32,
            n_kv: self.n_kv as i32,
            hd: self.hd as i32,
            split: self.split as i32,
        }
    }
}
