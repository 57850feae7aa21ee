//! Instruction-set selection and the per-type dot-product table used by matvec/matmul.
//!
//! Detection runs once (OnceLock). `NEXUS_NO_SIMD=1` forces the portable path, which is also
//! what non-x86 CPUs get.

#[cfg(target_arch = "x86_64")]
mod avx2;
#[cfg(target_arch = "x86_64")]
mod avx2_klow;
#[cfg(target_arch = "x86_64")]
mod avx2_repacked;
#[cfg(target_arch = "x86_64")]
mod avx2_x4;
pub mod scalar;

use crate::matmul::DotOrder;
use crate::GgmlType;
use std::sync::OnceLock;

/// Which kernel family to run.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Isa {
    Scalar,
    /// AVX2 + FMA + F16C; only ever selected when the running CPU has all three.
    Avx2,
    /// Avx2 plus AVX-512F. The f32 GEMM (and so the convolutions) has kernels of its own for
    /// it, and with AVX-512 VNNI the Q8_0/Q4_0/Q5_0 prompt tiles (bitwise the AVX2 ones);
    /// everything else runs its AVX2 kernels under this value.
    Avx512,
}

impl Isa {
    /// Whether the AVX2 kernels may run under this value (given it is available).
    pub fn has_avx2(self) -> bool {
        matches!(self, Isa::Avx2 | Isa::Avx512)
    }
}

fn cpu_has_avx2() -> bool {
    #[cfg(target_arch = "x86_64")]
    {
        static HAS: OnceLock<bool> = OnceLock::new();
        *HAS.get_or_init(|| {
            is_x86_feature_detected!("avx2")
                && is_x86_feature_detected!("fma")
                && is_x86_feature_detected!("f16c")
        })
    }
    #[cfg(not(target_arch = "x86_64"))]
    {
        false
    }
}

fn cpu_has_avx512() -> bool {
    #[cfg(target_arch = "x86_64")]
    {
        static HAS: OnceLock<bool> = OnceLock::new();
        *HAS.get_or_init(|| cpu_has_avx2() && is_x86_feature_detected!("avx512f"))
    }
    #[cfg(not(target_arch = "x86_64"))]
    {
        false
    }
}

/// AVX-512 VNNI on 256-bit vectors (`vpdpbusd` on ymm), which the integer prompt tiles use
/// under `Isa::Avx512`.
fn cpu_has_vnni() -> bool {
    #[cfg(target_arch = "x86_64")]
    {
        static HAS: OnceLock<bool> = OnceLock::new();
        *HAS.get_or_init(|| cpu_has_avx512() && is_x86_feature_detected!("avx512vnni") && is_x86_feature_detected!("avx512vl"))
    }
    #[cfg(not(target_arch = "x86_64"))]
    {
        false
    }
}

/// The best instruction set of this CPU, unless `NEXUS_NO_SIMD=1` asks for the scalar path.
pub fn detected() -> Isa {
    static ISA: OnceLock<Isa> = OnceLock::new();
    *ISA.get_or_init(|| {
        let forced_off = std::env::var("NEXUS_NO_SIMD").is_ok_and(|v| v == "1");
        if forced_off {
            Isa::Scalar
        } else if cpu_has_avx512() {
            Isa::Avx512
        } else if cpu_has_avx2() {
            Isa::Avx2
        } else {
            Isa::Scalar
        }
    })
}

/// Whether `isa` can run here (regardless of `NEXUS_NO_SIMD`).
pub fn available(isa: Isa) -> bool {
    match isa {
        Isa::Scalar => true,
        Isa::Avx2 => cpu_has_avx2(),
        Isa::Avx512 => cpu_has_avx512(),
    }
}

/// `dot(weight_row, activation_row, n_elems)`; both slices hold at least one full row.
pub(crate) type DotFn = fn(&[u8], &[u8], usize) -> f32;

/// One weight row against four activation rows at once (prompt processing).
pub(crate) type Dot4Fn = fn(&[u8], [&[u8]; 4], usize) -> [f32; 4];
/// Four weight rows against four activation rows: `[token][row]`.
pub(crate) type Rows4x4Fn = fn([&[u8]; 4], [&[u8]; 4], usize) -> [[f32; 4]; 4];
/// Two weight rows against four activation rows: `[row][token]`.
pub(crate) type Dot2x4Fn = fn([&[u8]; 2], [&[u8]; 4], usize) -> [[f32; 4]; 2];
/// Four weight rows against four activation rows, each row's sums as [`Dot2x4Fn`]'s:
/// `[row][token]` (the transpose of [`Rows4x4Fn`]'s layout).
pub(crate) type Dot4x4Fn = fn([&[u8]; 4], [&[u8]; 4], usize) -> [[f32; 4]; 4];

/// A weight type's dot kernel and the format its activations are quantized to first.
#[derive(Clone, Copy)]
pub(crate) struct Kernel {
    /// F32 means "raw f32 activations"; otherwise a ggml quantized type.
    pub act: GgmlType,
    pub dot: DotFn,
    /// A four-token kernel where one exists; otherwise `dot` is called per token.
    pub dot4: Option<Dot4Fn>,
    /// A two-row, four-token register tile where one exists (tried before `dot4`).
    pub dot2x4: Option<Dot2x4Fn>,
    /// A four-row, four-token tile summing each (row, token) as `dot2x4` does, or for Q4_1 /
    /// Q5_1 as `dot4` does (tried first).
    pub dot4x4: Option<Dot4x4Fn>,
    /// Four weight rows × four tokens with the rows in lanes, bitwise `dot` for each
    /// (`[token][row]`); a batch's leftover tokens go through `dot`.
    pub rows4x4: Option<Rows4x4Fn>,
    /// Where llama.cpp sums a token that comes in a group of four in another order than a
    /// token alone (its repacked GEMM against its GEMV): the kernel for the tokens of a batch's
    /// whole groups of four. Batches use it only when tiled (see `matmul_rowwise`).
    pub dot_in_fours: Option<DotFn>,
}

impl Kernel {
    /// `dot` alone: no multi-token kernel, and the same order for every token of a batch.
    fn single(act: GgmlType, dot: DotFn) -> Self {
        Kernel { act, dot, dot4: None, dot2x4: None, dot4x4: None, rows4x4: None, dot_in_fours: None }
    }
}

macro_rules! avx2_wrappers {
    ($($name:ident: $wty:ident x $aty:ident;)*) => {
        #[cfg(target_arch = "x86_64")]
        mod wrap {
            use crate::GgmlType;
            $(
                // The table hands these out only when `cpu_has_avx2()`; the length checks make
                // the raw-pointer kernels sound for any slices.
                pub(crate) fn $name(w: &[u8], a: &[u8], n: usize) -> f32 {
                    let (wt, at) = (GgmlType::$wty, GgmlType::$aty);
                    assert!(n % wt.block_size() == 0 && n % at.block_size() == 0);
                    assert!(w.len() >= n / wt.block_size() * wt.type_size());
                    assert!(a.len() >= n / at.block_size() * at.type_size());
                    unsafe { super::avx2::$name(w.as_ptr(), a.as_ptr(), n) }
                }
            )*
        }
    };
}

macro_rules! avx2_x4_wrappers {
    ($($name:ident: $wty:ident x $aty:ident;)*) => {
        #[cfg(target_arch = "x86_64")]
        mod wrap4 {
            use crate::GgmlType;
            $(
                // As above: handed out only with AVX2 present, and the length checks cover
                // every row the raw-pointer kernel reads.
                pub(crate) fn $name(w: &[u8], a: [&[u8]; 4], n: usize) -> [f32; 4] {
                    let (wt, at) = (GgmlType::$wty, GgmlType::$aty);
                    assert!(n % wt.block_size() == 0);
                    assert!(w.len() >= n / wt.block_size() * wt.type_size());
                    for r in &a {
                        assert!(r.len() >= n / at.block_size() * at.type_size());
                    }
                    let p = [a[0].as_ptr(), a[1].as_ptr(), a[2].as_ptr(), a[3].as_ptr()];
                    unsafe { super::avx2_x4::$name(w.as_ptr(), p, n) }
                }
            )*
        }
    };
}

/// Wrappers of the weight-rows × four-token tiles (`[row][token]`, `$rows` rows): each
/// checks every row its kernel reads. Handed out only where the CPU has the kernel's features
/// (AVX2; AVX-512 VNNI for the `*_vnni` ones).
macro_rules! tile_wrappers {
    ($module:ident, $rows:literal: $($name:ident = $kernel:expr => $wty:ident x $aty:ident;)*) => {
        #[cfg(target_arch = "x86_64")]
        mod $module {
            use super::avx2_x4;
            use crate::GgmlType;
            $(
                pub(crate) fn $name(w: [&[u8]; $rows], a: [&[u8]; 4], n: usize) -> [[f32; 4]; $rows] {
                    let (wt, at) = (GgmlType::$wty, GgmlType::$aty);
                    assert!(n % wt.block_size() == 0);
                    for r in &w {
                        assert!(r.len() >= n / wt.block_size() * wt.type_size());
                    }
                    for r in &a {
                        assert!(r.len() >= n / at.block_size() * at.type_size());
                    }
                    unsafe { $kernel(w.map(<[u8]>::as_ptr), a.map(<[u8]>::as_ptr), n) }
                }
            )*
        }
    };
}

tile_wrappers! { wrap2x4, 2:
    dot2x4_q8_0 = avx2_x4::dot2x4_q8_0 => Q8_0 x Q8_0;
    dot2x4_q4_0 = avx2_x4::dot2x4_q4_0 => Q4_0 x Q8_0;
    dot2x4_q5_0 = avx2_x4::dot2x4_q5_0 => Q5_0 x Q8_0;
    dot2x4_q8_0_vnni = avx2_x4::tile_q8_0_vnni::<2> => Q8_0 x Q8_0;
    dot2x4_q4_0_vnni = avx2_x4::tile_q4_0_vnni::<2> => Q4_0 x Q8_0;
    dot2x4_q5_0_vnni = avx2_x4::tile_q5_0_vnni::<2> => Q5_0 x Q8_0;
}

tile_wrappers! { wrap4x4, 4:
    dot4x4_q8_0_vnni = avx2_x4::tile_q8_0_vnni::<4> => Q8_0 x Q8_0;
    dot4x4_q4_0_vnni = avx2_x4::tile_q4_0_vnni::<4> => Q4_0 x Q8_0;
    dot4x4_q5_0_vnni = avx2_x4::tile_q5_0_vnni::<4> => Q5_0 x Q8_0;
    dot4x4_q4_1_vnni = avx2_x4::dot4x4_q4_1_vnni => Q4_1 x Q8_1;
    dot4x4_q5_1_vnni = avx2_x4::dot4x4_q5_1_vnni => Q5_1 x Q8_1;
}

/// The repacked-order kernels (`avx2_repacked`), with the same length checks as the others.
#[cfg(target_arch = "x86_64")]
mod wrap_repacked {
    use crate::GgmlType;

    fn check(wt: GgmlType, at: GgmlType, w: &[u8], a: &[u8], n: usize) {
        assert!(n.is_multiple_of(wt.block_size()));
        assert!(w.len() >= n / wt.block_size() * wt.type_size());
        assert!(a.len() >= n / at.block_size() * at.type_size());
    }

    // Handed out only with AVX2 present; `check` covers every byte the kernels read.
    pub(crate) fn dot_q4_0(w: &[u8], a: &[u8], n: usize) -> f32 {
        check(GgmlType::Q4_0, GgmlType::Q8_0, w, a, n);
        unsafe { super::avx2_repacked::dot_q4_0_repacked(w.as_ptr(), a.as_ptr(), n) }
    }

    pub(crate) fn dot4_q4_0(w: &[u8], a: [&[u8]; 4], n: usize) -> [f32; 4] {
        for r in &a {
            check(GgmlType::Q4_0, GgmlType::Q8_0, w, r, n);
        }
        let p = [a[0].as_ptr(), a[1].as_ptr(), a[2].as_ptr(), a[3].as_ptr()];
        unsafe { super::avx2_repacked::dot4_q4_0_repacked(w.as_ptr(), p, n) }
    }

    type Rows4x4Raw = unsafe fn([*const u8; 4], [*const u8; 4], usize) -> [[f32; 4]; 4];

    /// `kernel` on four Q4_0 rows and four Q8_0 activation rows, after the checks.
    fn rows4x4_q4_0_with(w: [&[u8]; 4], a: [&[u8]; 4], n: usize, kernel: Rows4x4Raw) -> [[f32; 4]; 4] {
        for r in &w {
            for t in &a {
                check(GgmlType::Q4_0, GgmlType::Q8_0, r, t, n);
            }
        }
        let p = [w[0].as_ptr(), w[1].as_ptr(), w[2].as_ptr(), w[3].as_ptr()];
        let q = [a[0].as_ptr(), a[1].as_ptr(), a[2].as_ptr(), a[3].as_ptr()];
        unsafe { kernel(p, q, n) }
    }

    pub(crate) fn rows4x4_q4_0(w: [&[u8]; 4], a: [&[u8]; 4], n: usize) -> [[f32; 4]; 4] {
        rows4x4_q4_0_with(w, a, n, super::avx2_repacked::dot4x4_q4_0_repacked)
    }

    // Handed out only with AVX-512 VNNI present.
    pub(crate) fn rows4x4_q4_0_vnni(w: [&[u8]; 4], a: [&[u8]; 4], n: usize) -> [[f32; 4]; 4] {
        rows4x4_q4_0_with(w, a, n, super::avx2_repacked::dot4x4_q4_0_repacked_vnni)
    }

    pub(crate) fn dot_q4_k(w: &[u8], a: &[u8], n: usize) -> f32 {
        check(GgmlType::Q4_K, GgmlType::Q8_K, w, a, n);
        unsafe { super::avx2_repacked::dot_q4_k_repacked(w.as_ptr(), a.as_ptr(), n) }
    }

    pub(crate) fn dot_q4_k_gemm(w: &[u8], a: &[u8], n: usize) -> f32 {
        check(GgmlType::Q4_K, GgmlType::Q8_K, w, a, n);
        unsafe { super::avx2_repacked::dot_q4_k_repacked_gemm(w.as_ptr(), a.as_ptr(), n) }
    }

    pub(crate) fn dot4_q4_k_gemm(w: &[u8], a: [&[u8]; 4], n: usize) -> [f32; 4] {
        for r in &a {
            check(GgmlType::Q4_K, GgmlType::Q8_K, w, r, n);
        }
        let p = [a[0].as_ptr(), a[1].as_ptr(), a[2].as_ptr(), a[3].as_ptr()];
        unsafe { super::avx2_repacked::dot4_q4_k_repacked_gemm(w.as_ptr(), p, n) }
    }
}

avx2_x4_wrappers! {
    dot4_f32: F32 x F32;
    dot4_f16: F16 x F32;
    dot4_bf16: BF16 x F32;
    dot4_q8_0: Q8_0 x Q8_0;
    dot4_q4_0: Q4_0 x Q8_0;
    dot4_q4_1: Q4_1 x Q8_1;
    dot4_q5_0: Q5_0 x Q8_0;
    dot4_q5_1: Q5_1 x Q8_1;
    dot4_q4_k: Q4_K x Q8_K;
    dot4_q5_k: Q5_K x Q8_K;
    dot4_q4_k_tiled: Q4_K x Q8_K;
    dot4_q5_k_tiled: Q5_K x Q8_K;
}

avx2_wrappers! {
    dot_f32: F32 x F32;
    dot_f16: F16 x F32;
    dot_bf16: BF16 x F32;
    dot_q8_0: Q8_0 x Q8_0;
    dot_q4_0: Q4_0 x Q8_0;
    dot_q4_1: Q4_1 x Q8_1;
    dot_q5_0: Q5_0 x Q8_0;
    dot_q5_1: Q5_1 x Q8_1;
    dot_q2_k: Q2_K x Q8_K;
    dot_q3_k: Q3_K x Q8_K;
    dot_q4_k: Q4_K x Q8_K;
    dot_q5_k: Q5_K x Q8_K;
    dot_q6_k: Q6_K x Q8_K;
    dot_q6_k_tiled: Q6_K x Q8_K;
    dot_q4_k_tiled: Q4_K x Q8_K;
    dot_q5_k_tiled: Q5_K x Q8_K;
}

/// The kernel for weights of type `ty` summed in `order` on `isa` (falling back to scalar when
/// `isa` is not available), or None for types without one. `order` matters only for the types
/// llama.cpp repacks (see [`DotOrder`]); the others always sum in `vec_dot`'s order.
pub(crate) fn kernel(ty: GgmlType, isa: Isa, order: DotOrder) -> Option<Kernel> {
    use GgmlType::*;
    let act = match ty {
        F32 | F16 | BF16 => F32,
        Q8_0 | Q4_0 | Q5_0 => Q8_0,
        Q4_1 | Q5_1 => Q8_1,
        Q2_K | Q3_K | Q4_K | Q5_K | Q6_K => Q8_K,
        _ => return None,
    };
    if order == DotOrder::Tiled && matches!(ty, Q4_K | Q5_K | Q6_K) {
        #[cfg(target_arch = "x86_64")]
        if isa.has_avx2() && cpu_has_avx2() {
            let (dot, dot4): (DotFn, Option<Dot4Fn>) = match ty {
                Q4_K => (wrap::dot_q4_k_tiled, Some(wrap4::dot4_q4_k_tiled)),
                Q5_K => (wrap::dot_q5_k_tiled, Some(wrap4::dot4_q5_k_tiled)),
                _ => (wrap::dot_q6_k_tiled, None),
            };
            return Some(Kernel { dot4, ..Kernel::single(act, dot) });
        }
        let dot: DotFn = match ty {
            Q4_K => scalar::dot_q4_k_tiled,
            Q5_K => scalar::dot_q5_k_tiled,
            _ => scalar::dot_q6_k_tiled,
        };
        return Some(Kernel::single(act, dot));
    }
    if order == DotOrder::Repacked && ty == Q4_K {
        #[cfg(target_arch = "x86_64")]
        if isa.has_avx2() && cpu_has_avx2() {
            // `dot4` takes a batch's whole groups of four, the tokens `dot_in_fours` is for,
            // in the same order: each super-block unpacked once per group.
            let dot_in_fours = Some(wrap_repacked::dot_q4_k_gemm as DotFn);
            let dot4 = Some(wrap_repacked::dot4_q4_k_gemm as Dot4Fn);
            return Some(Kernel { dot4, dot_in_fours, ..Kernel::single(act, wrap_repacked::dot_q4_k) });
        }
        let dot_in_fours = Some(scalar::dot_q4_k_repacked_gemm as DotFn);
        return Some(Kernel { dot_in_fours, ..Kernel::single(act, scalar::dot_q4_k_repacked) });
    }
    if order == DotOrder::Repacked && ty == Q4_0 {
        #[cfg(target_arch = "x86_64")]
        if isa.has_avx2() && cpu_has_avx2() {
            // With AVX-512 VNNI the tile's integer lanes come from `vpdpbusd`: the same bits.
            let rows4x4: Rows4x4Fn = if isa == Isa::Avx512 && cpu_has_vnni() {
                wrap_repacked::rows4x4_q4_0_vnni
            } else {
                wrap_repacked::rows4x4_q4_0
            };
            return Some(Kernel {
                dot4: Some(wrap_repacked::dot4_q4_0),
                rows4x4: Some(rows4x4),
                ..Kernel::single(act, wrap_repacked::dot_q4_0)
            });
        }
        return Some(Kernel::single(act, scalar::dot_q4_0_repacked));
    }
    #[cfg(target_arch = "x86_64")]
    if isa.has_avx2() && cpu_has_avx2() {
        let dot: DotFn = match ty {
            F32 => wrap::dot_f32,
            F16 => wrap::dot_f16,
            BF16 => wrap::dot_bf16,
            Q8_0 => wrap::dot_q8_0,
            Q4_0 => wrap::dot_q4_0,
            Q4_1 => wrap::dot_q4_1,
            Q5_0 => wrap::dot_q5_0,
            Q5_1 => wrap::dot_q5_1,
            Q2_K => wrap::dot_q2_k,
            Q3_K => wrap::dot_q3_k,
            Q4_K => wrap::dot_q4_k,
            Q5_K => wrap::dot_q5_k,
            _ => wrap::dot_q6_k,
        };
        let dot4: Option<Dot4Fn> = match ty {
            F32 => Some(wrap4::dot4_f32),
            F16 => Some(wrap4::dot4_f16),
            BF16 => Some(wrap4::dot4_bf16),
            Q8_0 => Some(wrap4::dot4_q8_0),
            Q4_0 => Some(wrap4::dot4_q4_0),
            Q4_1 => Some(wrap4::dot4_q4_1),
            Q5_0 => Some(wrap4::dot4_q5_0),
            Q5_1 => Some(wrap4::dot4_q5_1),
            Q4_K => Some(wrap4::dot4_q4_k),
            Q5_K => Some(wrap4::dot4_q5_k),
            _ => None,
        };
        // With AVX-512 VNNI the prompt tile takes `vpdpbusd` (the same integer sums, so the
        // same bits as the AVX2 tile).
        let vnni = isa == Isa::Avx512 && cpu_has_vnni();
        let dot2x4: Option<Dot2x4Fn> = match (ty, vnni) {
            (Q8_0, false) => Some(wrap2x4::dot2x4_q8_0),
            (Q4_0, false) => Some(wrap2x4::dot2x4_q4_0),
            (Q5_0, false) => Some(wrap2x4::dot2x4_q5_0),
            (Q8_0, true) => Some(wrap2x4::dot2x4_q8_0_vnni),
            (Q4_0, true) => Some(wrap2x4::dot2x4_q4_0_vnni),
            (Q5_0, true) => Some(wrap2x4::dot2x4_q5_0_vnni),
            _ => None,
        };
        let dot4x4: Option<Dot4x4Fn> = match (ty, vnni) {
            (Q8_0, true) => Some(wrap4x4::dot4x4_q8_0_vnni),
            (Q4_0, true) => Some(wrap4x4::dot4x4_q4_0_vnni),
            (Q5_0, true) => Some(wrap4x4::dot4x4_q5_0_vnni),
            (Q4_1, true) => Some(wrap4x4::dot4x4_q4_1_vnni),
            (Q5_1, true) => Some(wrap4x4::dot4x4_q5_1_vnni),
            _ => None,
        };
        return Some(Kernel { dot4, dot2x4, dot4x4, ..Kernel::single(act, dot) });
    }
    let _ = isa;
    let dot: DotFn = match ty {
        F32 => scalar::dot_f32,
        F16 => scalar::dot_f16,
        BF16 => scalar::dot_bf16,
        Q8_0 => scalar::dot_q8_0,
        Q4_0 => scalar::dot_q4_0,
        Q4_1 => scalar::dot_q4_1,
        Q5_0 => scalar::dot_q5_0,
        Q5_1 => scalar::dot_q5_1,
        Q2_K => scalar::dot_q2_k,
        Q3_K => scalar::dot_q3_k,
        Q4_K => scalar::dot_q4_k,
        Q5_K => scalar::dot_q5_k,
        _ => scalar::dot_q6_k,
    };
    Some(Kernel::single(act, dot))
}

/// f32 dot of two slices on the best available path (shared with `ops`).
pub(crate) fn dot_f32_slices(a: &[f32], b: &[f32]) -> f32 {
    let n = a.len().min(b.len());
    #[cfg(target_arch = "x86_64")]
    if detected().has_avx2() {
        // SAFETY: AVX2/FMA/F16C detected; both slices hold n f32s.
        return unsafe { avx2::dot_f32(a.as_ptr() as *const u8, b.as_ptr() as *const u8, n) };
    }
    scalar::dot_f32_slices(&a[..n], &b[..n])
}

/// `y += alpha · x` over the common length, on the best available path (shared with `ops`).
pub(crate) fn axpy_f32_slices(y: &mut [f32], alpha: f32, x: &[f32]) {
    let n = y.len().min(x.len());
    #[cfg(target_arch = "x86_64")]
    if detected().has_avx2() {
        // SAFETY: AVX2/FMA detected; both slices hold n f32s and do not overlap (&mut y).
        return unsafe { avx2::axpy_f32(y.as_mut_ptr(), alpha, x.as_ptr(), n) };
    }
    for (v, &u) in y[..n].iter_mut().zip(&x[..n]) {
        *v += alpha * u;
    }
}

/// `y += alpha · x` for one row `x` of F32, F16 or Q8_0 values (`y.len()` of them, whole
/// blocks), on the best available path; false for other types. Sizes are the caller's to get
/// right ([`crate::ops::axpy_row`] checks them).
pub(crate) fn axpy_row(ty: GgmlType, y: &mut [f32], alpha: f32, x: &[u8]) -> bool {
    axpy_row_on(detected(), ty, y, alpha, x)
}

fn axpy_row_on(isa: Isa, ty: GgmlType, y: &mut [f32], alpha: f32, x: &[u8]) -> bool {
    let n = y.len();
    #[cfg(target_arch = "x86_64")]
    if isa.has_avx2() && cpu_has_avx2() {
        // SAFETY: AVX2/FMA/F16C detected; `x` holds exactly `n` values of `ty` (checked by
        // the caller) and does not overlap `y` (&mut).
        unsafe {
            match ty {
                GgmlType::F32 => avx2::axpy_f32(y.as_mut_ptr(), alpha, x.as_ptr() as *const f32, n),
                GgmlType::F16 => avx2::axpy_f16(y.as_mut_ptr(), alpha, x.as_ptr(), n),
                GgmlType::Q8_0 => avx2::axpy_q8_0(y.as_mut_ptr(), alpha, x.as_ptr(), n),
                _ => return false,
            }
        }
        return true;
    }
    match ty {
        GgmlType::F32 | GgmlType::F16 | GgmlType::Q8_0 => scalar::axpy_row(ty, y, alpha, x),
        _ => return false,
    }
    let _ = isa;
    true
}

#[cfg(test)]
mod axpy_row_tests {
    use super::*;

    /// Both paths against the f64 sum over the dequantized row, on random rows of odd lengths.
    #[test]
    fn axpy_row_matches_the_f64_reference_on_every_path() {
        let mut seed = 0x9e37_79b9_7f4a_7c15u64;
        let mut next = move || {
            seed ^= seed << 13;
            seed ^= seed >> 7;
            seed ^= seed << 17;
            (seed >> 11) as f32 / (1u64 << 53) as f32 * 2.0 - 1.0
        };
        for (ty, n) in [(GgmlType::F32, 37), (GgmlType::F16, 37), (GgmlType::F16, 64), (GgmlType::Q8_0, 32), (GgmlType::Q8_0, 96)] {
            let x: Vec<f32> = (0..n).map(|_| next() * 4.0).collect();
            let mut row = vec![0u8; n / ty.block_size() * ty.type_size()];
            crate::quantize_row(ty, &x, &mut row).unwrap();
            let mut wide = vec![0f32; n];
            crate::dequantize_row(ty, &row, &mut wide).unwrap();
            let y0: Vec<f32> = (0..n).map(|_| next()).collect();
            let alpha = 0.37f32;
            for isa in [Isa::Scalar, detected()] {
                let mut y = y0.clone();
                assert!(axpy_row_on(isa, ty, &mut y, alpha, &row));
                for i in 0..n {
                    let want = y0[i] as f64 + alpha as f64 * wide[i] as f64;
                    assert!((y[i] as f64 - want).abs() < 1e-6 * (1.0 + want.abs()), "{ty} n {n} {isa:?} [{i}]: {} vs {want}", y[i]);
                }
            }
        }
        assert!(!axpy_row(GgmlType::Q4_0, &mut [0f32; 32], 1.0, &[0u8; 18]));
    }
}
