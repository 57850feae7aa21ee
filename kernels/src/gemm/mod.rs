//! Single-precision GEMM, `C = A·B` or `C += A·B`, row-major with leading dimensions.
//!
//! Goto/BLIS structure: A is packed once per call into MR-row panels per K block; each rayon
//! task owns a block of C, packs the B columns it needs into NR-column panels (from a plain
//! matrix, or straight from a signal for the convolutions' implicit im2col, see
//! [`PanelSource`]) and runs a register-tiled micro-kernel over them. The B micro-panel
//! (KC × NR) stays in L1 while the A panels stream from L2.
//!
//! Every element of C is summed in one fixed order (K blocks in order, k in order inside a
//! block, whatever the task split), so results do not depend on the thread count.

mod micro;
pub(crate) mod source;
mod transposed;

use crate::simd::{self, Isa};
use crate::KernelError;
use micro::{MicroKernel, TileOut};
use rayon::prelude::*;
pub(crate) use source::{MatrixSource, PanelSource};
pub use transposed::{sgemm_t, sgemm_t_with};
use std::cell::RefCell;

/// Depth of one packed K block: 256 × NR floats of B (16 KiB at NR = 16, 48 KiB at 48) stay
/// in L1 (or next to it) beside the A stream.
const KC: usize = 256;
/// Most columns one task packs per K block (384 columns, 384 KiB of B in L2).
const NC_COLS: usize = 384;
/// Below this many multiply-adds one task does the whole product (fork-join costs more).
const PAR_MIN_MACS: usize = 1 << 18;

/// `C[m][n] (= or +=) A[m][k] · B[k][n]`, all row-major with leading dimensions `lda`, `ldb`,
/// `ldc`; `accumulate = false` overwrites C without reading it.
///
/// # Panics
/// If a slice is too short for its dimensions or a leading dimension is smaller than its row;
/// use [`sgemm_checked`] to get a [`KernelError::Size`] instead.
#[allow(clippy::too_many_arguments)]
pub fn sgemm(
    m: usize,
    n: usize,
    k: usize,
    a: &[f32],
    lda: usize,
    b: &[f32],
    ldb: usize,
    c: &mut [f32],
    ldc: usize,
    accumulate: bool,
) {
    if let Err(e) = sgemm_with(
        simd::detected(),
        m,
        n,
        k,
        a,
        lda,
        b,
        ldb,
        c,
        ldc,
        accumulate,
    ) {
        panic!("sgemm: {e}");
    }
}

/// [`sgemm`] returning an error instead of panicking on inconsistent sizes.
#[allow(clippy::too_many_arguments)]
pub fn sgemm_checked(
    m: usize,
    n: usize,
    k: usize,
    a: &[f32],
    lda: usize,
    b: &[f32],
    ldb: usize,
    c: &mut [f32],
    ldc: usize,
    accumulate: bool,
) -> Result<(), KernelError> {
    sgemm_with(
        simd::detected(),
        m,
        n,
        k,
        a,
        lda,
        b,
        ldb,
        c,
        ldc,
        accumulate,
    )
}

/// [`sgemm_checked`] on an explicit instruction set (scalar if `isa` is unavailable); for
/// tests and benchmarks.
#[allow(clippy::too_many_arguments)]
pub fn sgemm_with(
    isa: Isa,
    m: usize,
    n: usize,
    k: usize,
    a: &[f32],
    lda: usize,
    b: &[f32],
    ldb: usize,
    c: &mut [f32],
    ldc: usize,
    accumulate: bool,
) -> Result<(), KernelError> {
    if m == 0 || n == 0 {
        return Ok(());
    }
    check_matrix("sgemm A", m, k, lda, a.len())?;
    check_matrix("sgemm B", k, n, ldb, b.len())?;
    check_matrix("sgemm C", m, n, ldc, c.len())?;
    let src = MatrixSource { b, ldb };
    let out = Out {
        ptr: c.as_mut_ptr(),
        bias: std::ptr::null(),
        res: std::ptr::null(),
        rs: ldc,
        cs: 1,
    };
    // SAFETY: check_matrix proved C holds m rows of n elements at stride ldc >= n.
    unsafe { gemm(isa, m, n, k, a, lda, &src, out, accumulate) };
    Ok(())
}

/// A `rows × cols` matrix at leading dimension `ld` needs `(rows-1)·ld + cols` elements.
pub(crate) fn check_matrix(
    what: &'static str,
    rows: usize,
    cols: usize,
    ld: usize,
    len: usize,
) -> Result<(), KernelError> {
    if ld < cols {
        return Err(KernelError::Size {
            what,
            expected: cols,
            got: ld,
        });
    }
    if rows == 0 || cols == 0 {
        return Ok(());
    }
    let need = (rows - 1)
        .checked_mul(ld)
        .and_then(|v| v.checked_add(cols))
        .ok_or(KernelError::Size {
            what,
            expected: usize::MAX,
            got: len,
        })?;
    if len < need {
        return Err(KernelError::Size {
            what,
            expected: need,
            got: len,
        });
    }
    Ok(())
}

/// Where C lives: element (i, j) at `ptr + i·rs + j·cs`. `bias` (null for none) holds one
/// value per row of C, added when C is overwritten (`accumulate = false`): folding it into
/// the store saves the convolutions a separate pass over their output. `res` (null for none)
/// is a residual laid out like C, added after the last K block (`c = (c + tile) + res`, the
/// order of a separate pass after the product).
#[derive(Clone, Copy)]
pub(crate) struct Out {
    pub ptr: *mut f32,
    pub rs: usize,
    pub cs: usize,
    pub bias: *const f32,
    pub res: *const f32,
}

impl Out {
    /// The same layout starting `elems` elements further.
    ///
    /// # Safety
    /// The result must stay inside the allocation `ptr` points into.
    pub(crate) unsafe fn offset(self, elems: usize) -> Out {
        Out {
            ptr: self.ptr.add(elems),
            ..self
        }
    }
}

// SAFETY: tasks write disjoint (row, column) blocks of C; see `gemm`.
unsafe impl Send for Out {}
unsafe impl Sync for Out {}

/// K split into equal blocks of at most KC: `(block count, block depth)`; depends on k only,
/// which keeps the summation order independent of the task split.
fn k_blocks(k: usize) -> (usize, usize) {
    let nkb = k.div_ceil(KC).max(1);
    (nkb, k.div_ceil(nkb))
}

/// A packed once per product: `[k block][MR panel][kc][MR]`, zero rows past m. Shared
/// read-only by all tasks (and, for the polyphase transposed convolution, by many products).
/// Packed for the micro-kernel of one instruction set, whose MR it uses.
pub(crate) struct PackedA {
    isa: Isa,
    mr: usize,
    m: usize,
    k: usize,
    data: Vec<f32>,
}

impl PackedA {
    /// Columns of the micro-kernel tile this A was packed for.
    pub(crate) fn nr(&self) -> usize {
        micro::select(self.isa).nr
    }

    /// Packs the `m × k` row-major matrix `a` (leading dimension `lda >= k`) for `isa`'s
    /// micro-kernel.
    pub(crate) fn new(isa: Isa, m: usize, k: usize, a: &[f32], lda: usize) -> Self {
        let mr = micro::select(isa).mr;
        let m_pad = m.div_ceil(mr) * mr;
        let (nkb, kcb) = k_blocks(k);
        let mut data = vec![0f32; m_pad * k];
        if k == 0 {
            return PackedA {
                isa,
                mr,
                m,
                k,
                data,
            };
        }
        for kb in 0..nkb {
            let k0 = kb * kcb;
            let kc = kcb.min(k - k0);
            let block = &mut data[k0 * m_pad..(k0 + kc) * m_pad];
            for (ip, panel) in block.chunks_exact_mut(kc * mr).enumerate() {
                for r in 0..mr.min(m - ip * mr) {
                    let row = &a[(ip * mr + r) * lda + k0..][..kc];
                    for (kk, &v) in row.iter().enumerate() {
                        panel[kk * mr + r] = v;
                    }
                }
            }
        }
        PackedA {
            isa,
            mr,
            m,
            k,
            data,
        }
    }

    /// Packs the `m × k` matrix whose transpose `a` holds row-major (`k` rows of `m`, leading
    /// dimension `lda >= m`): element (i, kk) is `a[kk·lda + i]`. A panel's rows are then
    /// contiguous in `a`, so this packing copies runs instead of gathering.
    pub(crate) fn new_transposed(isa: Isa, m: usize, k: usize, a: &[f32], lda: usize) -> Self {
        let mr = micro::select(isa).mr;
        let m_pad = m.div_ceil(mr) * mr;
        let (nkb, kcb) = k_blocks(k);
        let mut data = vec![0f32; m_pad * k];
        for kb in 0..if k == 0 { 0 } else { nkb } {
            let k0 = kb * kcb;
            let kc = kcb.min(k - k0);
            let block = &mut data[k0 * m_pad..(k0 + kc) * m_pad];
            for (ip, panel) in block.chunks_exact_mut(kc * mr).enumerate() {
                let rows = mr.min(m - ip * mr);
                for (kk, dst) in panel.chunks_exact_mut(mr).enumerate() {
                    let src = &a[(k0 + kk) * lda + ip * mr..][..rows];
                    // Whole panels as fixed-size moves: a memcpy call per 32 bytes cost more
                    // than the copy itself.
                    match (dst.len(), rows) {
                        (8, 8) => copy_fixed::<8>(dst, src),
                        (6, 6) => copy_fixed::<6>(dst, src),
                        _ => dst[..rows].copy_from_slice(src),
                    }
                }
            }
        }
        PackedA {
            isa,
            mr,
            m,
            k,
            data,
        }
    }
}

#[inline(always)]
fn copy_fixed<const N: usize>(dst: &mut [f32], src: &[f32]) {
    let d: &mut [f32; N] = dst.try_into().expect("panel row of N");
    let s: &[f32; N] = src.try_into().expect("source run of N");
    *d = *s;
}

thread_local! {
    /// Per-thread B panel buffer, reused across calls (a task never yields inside).
    static B_PACK: RefCell<Vec<f32>> = const { RefCell::new(Vec::new()) };
}

/// The driver shared by [`sgemm`] and the convolutions: `C (=|+=) A·B` with A row-major
/// (`lda`) and B read through `src`, split over the current rayon pool.
///
/// # Safety
/// `out` must address m × n writable elements, none aliasing `a` or what `src` reads, and
/// distinct (i, j) must map to distinct elements.
#[allow(clippy::too_many_arguments)]
pub(crate) unsafe fn gemm(
    isa: Isa,
    m: usize,
    n: usize,
    k: usize,
    a: &[f32],
    lda: usize,
    src: &dyn PanelSource,
    out: Out,
    accumulate: bool,
) {
    if m == 0 || n == 0 {
        return;
    }
    gemm_packed(
        &PackedA::new(isa, m, k, a, lda),
        n,
        src,
        out,
        accumulate,
        true,
    );
}

/// [`gemm`] with A already packed (on the instruction set it was packed for);
/// `parallel = false` keeps it on the calling thread (for callers that split the work
/// themselves).
///
/// # Safety
/// As for [`gemm`], with `m = a.m`.
pub(crate) unsafe fn gemm_packed(
    a: &PackedA,
    n: usize,
    src: &dyn PanelSource,
    out: Out,
    accumulate: bool,
    parallel: bool,
) {
    let (m, k) = (a.m, a.k);
    if m == 0 || n == 0 {
        return;
    }
    if k == 0 {
        if !accumulate {
            for i in 0..m {
                let bias = if out.bias.is_null() {
                    0.0
                } else {
                    *out.bias.add(i)
                };
                for j in 0..n {
                    let at = i * out.rs + j * out.cs;
                    *out.ptr.add(at) = if out.res.is_null() {
                        bias
                    } else {
                        bias + *out.res.add(at)
                    };
                }
            }
        }
        return;
    }
    let kernel = micro::select(a.isa);
    debug_assert_eq!(kernel.mr, a.mr);
    let m_panels = m.div_ceil(kernel.mr);
    let n_panels = n.div_ceil(kernel.nr);

    let want = if !parallel || m * n * k < PAR_MIN_MACS {
        1
    } else {
        4 * rayon::current_num_threads()
    };
    let mut nc_p = n_panels.min(NC_COLS.div_ceil(kernel.nr));
    let mut n_chunks = n_panels.div_ceil(nc_p);
    let m_chunks = m_panels.min(want.div_ceil(n_chunks));
    let m_per = m_panels.div_ceil(m_chunks);
    let m_chunks = m_panels.div_ceil(m_per);
    if n_chunks * m_chunks < want {
        nc_p = n_panels.div_ceil(want.div_ceil(m_chunks)).max(1);
        n_chunks = n_panels.div_ceil(nc_p);
    }
    let task = |t: usize| {
        let (mc, nc) = (t / n_chunks, t % n_chunks);
        let p0 = mc * m_per;
        let p1 = (p0 + m_per).min(m_panels);
        let q0 = nc * nc_p;
        let q1 = (q0 + nc_p).min(n_panels);
        B_PACK.with(|buf| {
            let mut buf = buf.borrow_mut();
            // SAFETY: this task's block [p0..p1) × [q0..q1) of C is its own.
            unsafe {
                gemm_block(
                    kernel,
                    a,
                    n,
                    src,
                    out,
                    accumulate,
                    (p0, p1),
                    (q0, q1),
                    &mut buf,
                )
            };
        });
    };
    let tasks = m_chunks * n_chunks;
    if tasks == 1 {
        task(0);
    } else {
        (0..tasks).into_par_iter().for_each(task);
    }
}

/// One task: rows of MR panels `ps`, columns of NR panels `qs`, all K blocks in order.
#[allow(clippy::too_many_arguments)]
unsafe fn gemm_block(
    kernel: MicroKernel,
    a: &PackedA,
    n: usize,
    src: &dyn PanelSource,
    out: Out,
    accumulate: bool,
    (p0, p1): (usize, usize),
    (q0, q1): (usize, usize),
    buf: &mut Vec<f32>,
) {
    let (m, k) = (a.m, a.k);
    let (mr, nr) = (kernel.mr, kernel.nr);
    let m_pad = m.div_ceil(mr) * mr;
    let (nkb, kcb) = k_blocks(k);
    // One B panel at a time, used by all of this task's A panels while it is still in L1
    // (packing every panel of the block first left them in L2 for the kernel to re-read).
    let need = kcb * nr;
    if buf.len() < need {
        buf.resize(need, 0.0);
    }
    for kb in 0..nkb {
        let k0 = kb * kcb;
        let kc = kcb.min(k - k0);
        let acc = accumulate || kb > 0;
        let a_block = &a.data[k0 * m_pad..];
        for q in q0..q1 {
            let n0 = q * nr;
            let cols = nr.min(n - n0);
            let panel = &mut buf[..kc * nr];
            src.pack_panel(k0, kc, n0, cols, nr, panel);
            let b = panel.as_ptr();
            for p in p0..p1 {
                let i0 = p * mr;
                let ap = a_block[p * kc * mr..].as_ptr();
                let at = i0 * out.rs + n0 * out.cs;
                let tile = TileOut {
                    c: out.ptr.add(at),
                    res: if out.res.is_null() || kb + 1 < nkb {
                        std::ptr::null()
                    } else {
                        out.res.add(at)
                    },
                    rs: out.rs,
                    cs: out.cs,
                    mr: mr.min(m - i0),
                    nr: cols,
                    accumulate: acc,
                    bias: if out.bias.is_null() {
                        out.bias
                    } else {
                        out.bias.add(i0)
                    },
                };
                (kernel.run)(kc, ap, b, &tile);
            }
        }
    }
}
