//! The AVX-512 micro-kernel: an 8 × 48 tile in 24 zmm accumulators, 3 B vectors per k step
//! and the A values broadcast straight from memory into the FMAs (28 of 32 registers, no
//! spills). 8 rows divide every channel count of the VITS voice (32 … 512), where 12 or 14
//! rows would leave part-empty panels; 24 independent FMA chains cover the 4-cycle latency
//! of two FMA ports. Edge tiles use masked loads and stores instead of a scalar pass.

use super::{store_tile, TileOut};
use std::arch::x86_64::*;

pub(crate) const MR: usize = 8;
/// Vectors of 16 lanes per tile row.
const V: usize = 3;
pub(crate) const NR: usize = 16 * V;

/// Dispatches on the valid rows so a short last panel costs only its rows of FMAs.
#[target_feature(enable = "avx512f,avx2,fma")]
pub(crate) unsafe fn kernel(kc: usize, a: *const f32, b: *const f32, o: &TileOut) {
    match o.mr {
        0..=2 => rows::<2>(kc, a, b, o),
        3..=4 => rows::<4>(kc, a, b, o),
        5..=6 => rows::<6>(kc, a, b, o),
        _ => rows::<MR>(kc, a, b, o),
    }
}

/// The first `R` rows of an 8 × 48 tile (A panels keep their MR stride).
#[inline]
#[target_feature(enable = "avx512f,avx2,fma")]
unsafe fn rows<const R: usize>(kc: usize, a: *const f32, b: *const f32, o: &TileOut) {
    let mut acc = [[_mm512_setzero_ps(); V]; R];
    for kk in 0..kc {
        let bp = b.add(kk * NR);
        let bv: [__m512; V] = std::array::from_fn(|v| _mm512_loadu_ps(bp.add(16 * v)));
        let ap = a.add(kk * MR);
        for (i, row) in acc.iter_mut().enumerate() {
            let av = _mm512_set1_ps(*ap.add(i));
            for (r, &bvv) in row.iter_mut().zip(&bv) {
                *r = _mm512_fmadd_ps(av, bvv, *r);
            }
        }
    }
    if o.cs == 1 {
        // Lanes of vector v inside the valid columns.
        let masks: [__mmask16; V] = std::array::from_fn(|v| {
            let cols = o.nr.saturating_sub(16 * v).min(16);
            ((1u32 << cols) - 1) as __mmask16
        });
        for (i, row) in acc.iter().enumerate().take(o.mr) {
            let cp = o.c.add(i * o.rs);
            let add = if o.bias.is_null() || o.accumulate {
                None
            } else {
                Some(_mm512_set1_ps(*o.bias.add(i)))
            };
            for (v, &r) in row.iter().enumerate() {
                let p = cp.add(16 * v);
                let m = masks[v];
                let r = if o.accumulate {
                    _mm512_add_ps(_mm512_maskz_loadu_ps(m, p), r)
                } else if let Some(bias) = add {
                    _mm512_add_ps(bias, r)
                } else {
                    r
                };
                let r = if o.res.is_null() {
                    r
                } else {
                    let rp = o.res.add(i * o.rs + 16 * v);
                    _mm512_add_ps(r, _mm512_maskz_loadu_ps(m, rp))
                };
                _mm512_mask_storeu_ps(p, m, r);
            }
        }
    } else {
        let mut tile = [[0f32; NR]; R];
        for (t, row) in tile.iter_mut().zip(&acc) {
            for (v, &r) in row.iter().enumerate() {
                _mm512_storeu_ps(t.as_mut_ptr().add(16 * v), r);
            }
        }
        store_tile(&tile, o);
    }
}
