//! The register-tiled micro-kernels: an MR × NR block of C from a packed A panel (`kc × MR`)
//! and a packed B panel (`kc × NR`). The tile shape belongs to the kernel, so the packing
//! follows whichever kernel the instruction set selects.
//!
//! 6 × 16 on AVX2 (BLIS's Haswell shape): 12 ymm accumulators, 2 B vectors and the A
//! broadcasts fit the 16 registers. (A 4 × 24 tile would divide the decoder's channel counts
//! exactly, but needs 3 B vectors, and LLVM then spills one accumulator per k step, which
//! put a store-to-load round trip on its FMA chain: 45 instead of 60+ GFLOP/s.)
//! The AVX-512 kernel (8 × 48, see `avx512`) has 32 registers to play with.

use crate::simd::Isa;

#[cfg(target_arch = "x86_64")]
mod avx512;

/// Where a tile goes: C element (i, j) at `c + i·rs + j·cs`; only the `mr × nr` valid corner
/// is written. `accumulate` adds to C; otherwise C is overwritten with the tile plus
/// `bias[i]` when `bias` is not null (the first K block of a convolution with bias). Then
/// `res` (same layout as C), when not null, is added: `c = (c | bias) + tile + res`.
pub(crate) struct TileOut {
    pub c: *mut f32,
    pub res: *const f32,
    pub rs: usize,
    pub cs: usize,
    pub mr: usize,
    pub nr: usize,
    pub accumulate: bool,
    pub bias: *const f32,
}

/// `(kc, packed A panel, packed B panel, destination)`.
pub(crate) type KernelFn = unsafe fn(usize, *const f32, *const f32, &TileOut);

/// A micro-kernel and the tile shape its packed panels must have.
#[derive(Clone, Copy)]
pub(crate) struct MicroKernel {
    pub mr: usize,
    pub nr: usize,
    pub run: KernelFn,
}

const SCALAR_MR: usize = 6;
const SCALAR_NR: usize = 16;

pub(crate) fn select(isa: Isa) -> MicroKernel {
    #[cfg(target_arch = "x86_64")]
    {
        if isa == Isa::Avx512 && crate::simd::available(Isa::Avx512) {
            return MicroKernel {
                mr: avx512::MR,
                nr: avx512::NR,
                run: avx512::kernel,
            };
        }
        if isa.has_avx2() && crate::simd::available(Isa::Avx2) {
            return MicroKernel {
                mr: AVX2_MR,
                nr: AVX2_NR,
                run: avx2_6x16,
            };
        }
    }
    let _ = isa;
    MicroKernel {
        mr: SCALAR_MR,
        nr: SCALAR_NR,
        run: scalar_kernel,
    }
}

/// Writes the valid corner of a finished tile (rows of `N` values).
#[inline(always)]
pub(crate) unsafe fn store_tile<const N: usize>(tile: &[[f32; N]], o: &TileOut) {
    for (i, row) in tile.iter().enumerate().take(o.mr) {
        let bias = if o.bias.is_null() {
            0.0
        } else {
            *o.bias.add(i)
        };
        for (j, &v) in row.iter().enumerate().take(o.nr) {
            let at = i * o.rs + j * o.cs;
            let p = o.c.add(at);
            let v = if o.accumulate { *p + v } else { bias + v };
            *p = if o.res.is_null() {
                v
            } else {
                v + *o.res.add(at)
            };
        }
    }
}

/// Portable kernel: plain multiply then add (no fused rounding), k in order.
unsafe fn scalar_kernel(kc: usize, a: *const f32, b: *const f32, o: &TileOut) {
    const MR: usize = SCALAR_MR;
    const NR: usize = SCALAR_NR;
    let a = std::slice::from_raw_parts(a, kc * MR);
    let b = std::slice::from_raw_parts(b, kc * NR);
    let mut tile = [[0f32; NR]; MR];
    for (ak, bk) in a.chunks_exact(MR).zip(b.chunks_exact(NR)) {
        for (row, &av) in tile.iter_mut().zip(ak) {
            for (t, &bv) in row.iter_mut().zip(bk) {
                *t += av * bv;
            }
        }
    }
    store_tile(&tile, o);
}

const AVX2_MR: usize = 6;
const AVX2_NR: usize = 16;

/// Dispatches on the valid rows, so a last panel of 2 or 4 rows (M = 32 gives 5 panels of 6
/// and one of 2) costs 2 or 4 rows of FMAs, not 6.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2,fma")]
unsafe fn avx2_6x16(kc: usize, a: *const f32, b: *const f32, o: &TileOut) {
    match o.mr {
        0..=2 => avx2_rows::<2>(kc, a, b, o),
        3..=4 => avx2_rows::<4>(kc, a, b, o),
        _ => avx2_rows::<AVX2_MR>(kc, a, b, o),
    }
}

/// The first `R` rows of a 6 × 16 tile (A panels keep their MR stride).
#[cfg(target_arch = "x86_64")]
#[inline]
#[target_feature(enable = "avx2,fma")]
unsafe fn avx2_rows<const R: usize>(kc: usize, a: *const f32, b: *const f32, o: &TileOut) {
    use std::arch::x86_64::*;
    const NR: usize = AVX2_NR;
    let mut acc = [[_mm256_setzero_ps(); 2]; R];
    for kk in 0..kc {
        let bp = b.add(kk * NR);
        let b0 = _mm256_loadu_ps(bp);
        let b1 = _mm256_loadu_ps(bp.add(8));
        let ap = a.add(kk * AVX2_MR);
        for (i, row) in acc.iter_mut().enumerate() {
            let av = _mm256_broadcast_ss(&*ap.add(i));
            row[0] = _mm256_fmadd_ps(av, b0, row[0]);
            row[1] = _mm256_fmadd_ps(av, b1, row[1]);
        }
    }
    if o.mr == R && o.nr == NR && o.cs == 1 {
        for (i, row) in acc.iter().enumerate() {
            let cp = o.c.add(i * o.rs);
            let bias = if o.bias.is_null() {
                0.0
            } else {
                *o.bias.add(i)
            };
            for (v, &r) in row.iter().enumerate() {
                let p = cp.add(8 * v);
                let r = if o.accumulate {
                    _mm256_add_ps(_mm256_loadu_ps(p), r)
                } else if o.bias.is_null() {
                    r
                } else {
                    _mm256_add_ps(_mm256_set1_ps(bias), r)
                };
                let r = if o.res.is_null() {
                    r
                } else {
                    _mm256_add_ps(r, _mm256_loadu_ps(o.res.add(i * o.rs + 8 * v)))
                };
                _mm256_storeu_ps(p, r);
            }
        }
    } else {
        let mut tile = [[0f32; NR]; R];
        for (t, row) in tile.iter_mut().zip(&acc) {
            for (v, &r) in row.iter().enumerate() {
                _mm256_storeu_ps(t.as_mut_ptr().add(8 * v), r);
            }
        }
        store_tile(&tile, o);
    }
}
