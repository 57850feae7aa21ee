//! Where the GEMM's B operand comes from. Packing is the one pass over B the GEMM makes
//! anyway, so a convolution can pack its im2col rows straight from the signal instead of
//! materialising a `(c_in·kernel) × len` matrix first.

use super::micro::NR;

/// Something that packs B rows `k0..k0+kc`, columns `n0..n0+ncols` (`ncols <= NR`) into
/// `out[kk·NR + j]`, with zeros in columns `ncols..NR`.
pub(crate) trait PanelSource: Sync {
    fn pack_panel(&self, k0: usize, kc: usize, n0: usize, ncols: usize, out: &mut [f32]);
}

/// A plain row-major matrix with leading dimension `ldb`.
pub(crate) struct MatrixSource<'a> {
    pub b: &'a [f32],
    pub ldb: usize,
}

impl PanelSource for MatrixSource<'_> {
    fn pack_panel(&self, k0: usize, kc: usize, n0: usize, ncols: usize, out: &mut [f32]) {
        for (kk, dst) in out.chunks_exact_mut(NR).take(kc).enumerate() {
            let row = &self.b[(k0 + kk) * self.ldb + n0..][..ncols];
            dst[..ncols].copy_from_slice(row);
            dst[ncols..].fill(0.0);
        }
    }
}

/// Implicit im2col of a channels-first signal `x[channel][len]`: row `kk = i·taps + tap`,
/// column `j` reads `x[i][base + j·stride + offsets[tap]]`, zero outside `0..len`.
pub(crate) struct Im2colSource<'a> {
    pub x: &'a [f32],
    pub len: usize,
    pub offsets: &'a [isize],
    pub base: isize,
    pub stride: usize,
}

impl PanelSource for Im2colSource<'_> {
    fn pack_panel(&self, k0: usize, kc: usize, n0: usize, ncols: usize, out: &mut [f32]) {
        let taps = self.offsets.len();
        let len = self.len as isize;
        for (kk, dst) in out.chunks_exact_mut(NR).take(kc).enumerate() {
            let (i, tap) = ((k0 + kk) / taps, (k0 + kk) % taps);
            let row = &self.x[i * self.len..(i + 1) * self.len];
            let start = self.base + (n0 * self.stride) as isize + self.offsets[tap];
            if self.stride == 1 {
                // Columns whose source position lies inside the signal: [lo, hi).
                let lo = (-start).clamp(0, ncols as isize) as usize;
                let hi = (len - start).clamp(lo as isize, ncols as isize) as usize;
                dst[..lo].fill(0.0);
                if hi > lo {
                    let s = (start + lo as isize) as usize;
                    dst[lo..hi].copy_from_slice(&row[s..s + (hi - lo)]);
                }
                dst[hi..].fill(0.0);
            } else {
                for (j, d) in dst.iter_mut().enumerate() {
                    let pos = start + (j * self.stride) as isize;
                    *d = if j < ncols && pos >= 0 && pos < len {
                        row[pos as usize]
                    } else {
                        0.0
                    };
                }
            }
        }
    }
}
