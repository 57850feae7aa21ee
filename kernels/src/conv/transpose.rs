//! ConvTranspose1d as `stride` polyphase convolutions.
//!
//! Output position `t' = u·stride + ρ − padding` (phase ρ) only receives the taps `j` with
//! `j·dilation ≡ ρ (mod stride)`, from input `t = u − m_j`, `m_j = (j·dilation − ρ)/stride`.
//! So each phase is an ordinary correlation with `kernel/stride` taps: one GEMM with the
//! phase's weights as A (`c_out × c_in·taps`), the signal through an implicit im2col as B, and
//! C written into every stride-th output column. No column buffer and no scatter-add; the
//! work is cut into blocks of input steps so all phases of a block write into cached output.

use super::ConvParams;
use crate::gemm::{self, source::Im2colSource, Out, PackedA};
use crate::simd::Isa;
use rayon::prelude::*;

/// Most input steps per work block: the block's output (c_out × 128·stride) stays in L2
/// while all phases write their interleaved columns into it.
const MAX_BLOCK: usize = 128;
/// Below this many multiply-adds one thread does everything.
const PAR_MIN_MACS: usize = 1 << 18;

/// One output phase ρ's weights `A[o][i·taps + t] = w[i][o][j_t]`, packed, and the
/// input offsets `−m_j` of its taps.
pub(super) struct Phase {
    rho: usize,
    a: PackedA,
    offsets: Vec<isize>,
}

/// The phases that have taps (independent of the signal length, so packed once per layer).
pub(super) fn pack_phases(isa: Isa, w: &[f32], p: &ConvParams) -> Vec<Phase> {
    let (s, d) = (p.stride, p.dilation);
    let mut out = Vec::new();
    for rho in 0..s {
        let taps: Vec<usize> = (0..p.kernel).filter(|j| (j * d) % s == rho).collect();
        if taps.is_empty() {
            continue;
        }
        let offsets = taps
            .iter()
            .map(|&j| -(((j * d - rho) / s) as isize))
            .collect();
        let k = p.c_in * taps.len();
        let mut a = vec![0f32; p.c_out * k];
        for (o, a_row) in a.chunks_exact_mut(k).enumerate() {
            for i in 0..p.c_in {
                for (t, &j) in taps.iter().enumerate() {
                    a_row[i * taps.len() + t] = w[(i * p.c_out + o) * p.kernel + j];
                }
            }
        }
        out.push(Phase {
            rho,
            a: PackedA::new(isa, p.c_out, k, &a, k),
            offsets,
        });
    }
    out
}

/// The input steps `u_lo..u_hi` whose phase-ρ output lies in `0..l_out`, if any.
fn u_range(rho: usize, p: &ConvParams, l_out: usize) -> Option<(usize, usize)> {
    let (s, pad) = (p.stride, p.padding);
    if l_out + pad <= rho {
        return None;
    }
    let u_lo = if pad > rho {
        (pad - rho).div_ceil(s)
    } else {
        0
    };
    let u_hi = (l_out + pad - rho).div_ceil(s);
    (u_hi > u_lo).then_some((u_lo, u_hi))
}

/// Accumulates the transposed convolution of `x` (`c_in × len`) into `y` (`c_out × l_out`,
/// already holding the bias). Sizes were checked by the caller.
pub(super) fn conv_transpose1d_polyphase(
    phases: &[Phase],
    x: &[f32],
    len: usize,
    p: &ConvParams,
    y: &mut [f32],
    l_out: usize,
) {
    let ranges: Vec<_> = phases
        .iter()
        .filter_map(|f| u_range(f.rho, p, l_out).map(|r| (f, r)))
        .collect();
    let (Some(u_min), Some(u_max)) = (
        ranges.iter().map(|(_, r)| r.0).min(),
        ranges.iter().map(|(_, r)| r.1).max(),
    ) else {
        return;
    };
    let macs = p.c_in * p.c_out * p.kernel * len;
    let parallel = macs >= PAR_MIN_MACS;
    let target = if parallel {
        4 * rayon::current_num_threads()
    } else {
        1
    };
    let nr = ranges[0].0.a.nr();
    let block = (u_max - u_min).div_ceil(target).div_ceil(nr).max(1) * nr;
    let block = block.min(MAX_BLOCK.div_ceil(nr) * nr);
    let n_blocks = (u_max - u_min).div_ceil(block);
    let y_out = Out {
        ptr: y.as_mut_ptr(),
        bias: std::ptr::null(),
        res: std::ptr::null(),
        rs: l_out,
        cs: p.stride,
    };
    // Blocks of input steps in parallel, phases in order inside a block: each output element
    // belongs to exactly one (block, phase) product, summed in a fixed order.
    let run_block = |b: usize| {
        let (b0, b1) = (u_min + b * block, (u_min + (b + 1) * block).min(u_max));
        for &(f, (u_lo, u_hi)) in &ranges {
            let (lo, hi) = (u_lo.max(b0), u_hi.min(b1));
            if lo >= hi {
                continue;
            }
            let src = Im2colSource {
                x,
                len,
                offsets: &f.offsets,
                base: lo as isize,
                stride: 1,
                leaky: None,
            };
            // SAFETY: columns lo..hi of phase rho are the positions lo·s + rho − pad + n·s, all
            // in 0..l_out and owned by this block and phase alone; y aliases neither w nor x.
            unsafe {
                let out = y_out.offset(lo * p.stride + f.rho - p.padding);
                gemm::gemm_packed(&f.a, hi - lo, &src, out, true, false);
            }
        }
    };
    if parallel && n_blocks > 1 {
        (0..n_blocks).into_par_iter().for_each(run_block);
    } else {
        (0..n_blocks).for_each(run_block);
    }
}
