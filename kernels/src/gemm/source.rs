//! Where the GEMM's B operand comes from. Packing is the one pass over B the GEMM makes
//! anyway, so a convolution can pack its im2col rows straight from the signal instead of
//! materialising a `(c_in·kernel) × len` matrix first.

/// Something that packs B rows `k0..k0+kc`, columns `n0..n0+ncols` (`ncols <= nr`) into
/// `out[kk·nr + j]`, with zeros in columns `ncols..nr`.
pub(crate) trait PanelSource: Sync {
    fn pack_panel(&self, k0: usize, kc: usize, n0: usize, ncols: usize, nr: usize, out: &mut [f32]);
}

/// A plain row-major matrix with leading dimension `ldb`.
pub(crate) struct MatrixSource<'a> {
    pub b: &'a [f32],
    pub ldb: usize,
}

impl PanelSource for MatrixSource<'_> {
    fn pack_panel(
        &self,
        k0: usize,
        kc: usize,
        n0: usize,
        ncols: usize,
        nr: usize,
        out: &mut [f32],
    ) {
        for (kk, dst) in out.chunks_exact_mut(nr).take(kc).enumerate() {
            let row = &self.b[(k0 + kk) * self.ldb + n0..][..ncols];
            dst[..ncols].copy_from_slice(row);
            dst[ncols..].fill(0.0);
        }
    }
}

/// The transpose of a row-major matrix: B is `k × n` and `bt` holds it as `n` rows of `k`
/// (leading dimension `ldbt`), so B row `kk`, column `j` is `bt[j·ldbt + kk]`. Each packed
/// column is read as one contiguous run of `bt`.
pub(crate) struct TransposedSource<'a> {
    pub bt: &'a [f32],
    pub ldbt: usize,
}

impl PanelSource for TransposedSource<'_> {
    fn pack_panel(
        &self,
        k0: usize,
        kc: usize,
        n0: usize,
        ncols: usize,
        nr: usize,
        out: &mut [f32],
    ) {
        if ncols < nr {
            for dst in out.chunks_exact_mut(nr).take(kc) {
                dst[ncols..].fill(0.0);
            }
        }
        for j in 0..ncols {
            let col = &self.bt[(n0 + j) * self.ldbt + k0..][..kc];
            for (kk, &v) in col.iter().enumerate() {
                out[kk * nr + j] = v;
            }
        }
    }
}

/// Implicit im2col of a channels-first signal `x[channel][len]`: row `kk = i·taps + tap`,
/// column `j` reads `x[i][base + j·stride + offsets[tap]]`, zero outside `0..len`, passed
/// through LeakyReLU with slope `leaky` when that is set (HiFi-GAN's pre-activation, fused
/// here instead of a pass over the whole signal; it maps 0 to 0, so padding is unchanged).
pub(crate) struct Im2colSource<'a> {
    pub x: &'a [f32],
    pub len: usize,
    pub offsets: &'a [isize],
    pub base: isize,
    pub stride: usize,
    pub leaky: Option<f32>,
}

#[inline(always)]
fn leaky_relu(v: f32, slope: f32) -> f32 {
    if v >= 0.0 {
        v
    } else {
        v * slope
    }
}

impl PanelSource for Im2colSource<'_> {
    fn pack_panel(
        &self,
        k0: usize,
        kc: usize,
        n0: usize,
        ncols: usize,
        nr: usize,
        out: &mut [f32],
    ) {
        // Compiled for AVX-512 when the GEMM runs there: the baseline build moves 16 bytes at
        // a time, and this copy is a fifth of a small-M convolution's time.
        #[cfg(target_arch = "x86_64")]
        if crate::simd::detected() == crate::simd::Isa::Avx512 {
            // SAFETY: detected() only reports Avx512 when the CPU has AVX-512F.
            return unsafe { self.pack_avx512(k0, kc, n0, ncols, nr, out) };
        }
        self.pack(k0, kc, n0, ncols, nr, out)
    }
}

impl Im2colSource<'_> {
    #[cfg(target_arch = "x86_64")]
    #[target_feature(enable = "avx512f,avx2,fma")]
    unsafe fn pack_avx512(
        &self,
        k0: usize,
        kc: usize,
        n0: usize,
        ncols: usize,
        nr: usize,
        out: &mut [f32],
    ) {
        self.pack(k0, kc, n0, ncols, nr, out)
    }

    #[inline(always)]
    fn pack(&self, k0: usize, kc: usize, n0: usize, ncols: usize, nr: usize, out: &mut [f32]) {
        let taps = self.offsets.len();
        let len = self.len as isize;
        // (channel, tap) of row k0 + kk, stepped rather than divided out per row.
        let (mut i, mut tap) = (k0 / taps, k0 % taps);
        for dst in out.chunks_exact_mut(nr).take(kc) {
            let row = &self.x[i * self.len..(i + 1) * self.len];
            let start = self.base + (n0 * self.stride) as isize + self.offsets[tap];
            if self.stride == 1 {
                // Columns whose source position lies inside the signal: [lo, hi).
                let lo = (-start).clamp(0, ncols as isize) as usize;
                let hi = (len - start).clamp(lo as isize, ncols as isize) as usize;
                if lo == 0 && hi == nr && nr.is_multiple_of(16) {
                    // The common interior case, in fixed 16-float pieces the compiler turns
                    // into vector moves (a memcpy call per 64 bytes cost more than the copy).
                    let src = &row[start as usize..][..nr];
                    for (d, s) in dst.chunks_exact_mut(16).zip(src.chunks_exact(16)) {
                        let d: &mut [f32; 16] = d.try_into().unwrap();
                        let s: &[f32; 16] = s.try_into().unwrap();
                        match self.leaky {
                            None => *d = *s,
                            Some(a) => *d = s.map(|v| leaky_relu(v, a)),
                        }
                    }
                } else {
                    dst[..lo].fill(0.0);
                    if hi > lo {
                        let s = (start + lo as isize) as usize;
                        let (d, s) = (&mut dst[lo..hi], &row[s..s + (hi - lo)]);
                        match self.leaky {
                            None => d.copy_from_slice(s),
                            Some(a) => d
                                .iter_mut()
                                .zip(s)
                                .for_each(|(d, &v)| *d = leaky_relu(v, a)),
                        }
                    }
                    dst[hi..].fill(0.0);
                }
            } else {
                for (j, d) in dst.iter_mut().enumerate() {
                    let pos = start + (j * self.stride) as isize;
                    *d = if j < ncols && pos >= 0 && pos < len {
                        self.leaky
                            .map_or(row[pos as usize], |a| leaky_relu(row[pos as usize], a))
                    } else {
                        0.0
                    };
                }
            }
            tap += 1;
            if tap == taps {
                tap = 0;
                i += 1;
            }
        }
    }
}
