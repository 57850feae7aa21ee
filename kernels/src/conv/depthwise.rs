//! Depthwise Conv1d (one input channel per group): each output row is a short weighted sum of
//! shifted copies of one input row, a loop the compiler vectorises over time; a GEMM with
//! K = kernel would spend more on packing than on arithmetic.

use super::ConvParams;
use rayon::prelude::*;

/// Below this many multiply-adds one thread does all channels.
const PAR_MIN_MACS: usize = 1 << 16;

/// `y` holds `c_out` rows of `l_out`, weights `[c_out][1][kernel]`; output channel `o` reads
/// input channel `o / (c_out / c_in)`. Sizes were checked by the caller.
pub(super) fn conv1d_depthwise(
    x: &[f32],
    len: usize,
    w: &[f32],
    bias: Option<&[f32]>,
    p: &ConvParams,
    y: &mut [f32],
    l_out: usize,
) {
    let mult = p.c_out / p.c_in;
    let row = |(o, yr): (usize, &mut [f32])| {
        let xr = &x[(o / mult) * len..][..len];
        let wr = &w[o * p.kernel..][..p.kernel];
        yr.fill(bias.map_or(0.0, |b| b[o]));
        for (j, &wj) in wr.iter().enumerate() {
            let off = (j * p.dilation) as isize - p.padding as isize;
            // Output steps t whose input position t·stride + off lies in 0..len.
            let t_lo = if off >= 0 { 0 } else { (-off) as usize }.div_ceil(p.stride);
            let t_hi = if (len as isize) <= off {
                0
            } else {
                ((len as isize - off) as usize)
                    .div_ceil(p.stride)
                    .min(l_out)
            };
            if t_lo >= t_hi {
                continue;
            }
            let s0 = (t_lo * p.stride) as isize + off;
            if p.stride == 1 {
                let src = &xr[s0 as usize..][..t_hi - t_lo];
                for (yv, &xv) in yr[t_lo..t_hi].iter_mut().zip(src) {
                    *yv += wj * xv;
                }
            } else {
                for (n, yv) in yr[t_lo..t_hi].iter_mut().enumerate() {
                    *yv += wj * xr[s0 as usize + n * p.stride];
                }
            }
        }
    };
    if p.c_out * l_out * p.kernel < PAR_MIN_MACS {
        y.chunks_exact_mut(l_out).enumerate().for_each(row);
    } else {
        y.par_chunks_exact_mut(l_out).enumerate().for_each(row);
    }
}
