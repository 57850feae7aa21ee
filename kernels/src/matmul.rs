//! Matrix-vector and matrix-matrix products over ggml-typed weight rows.
//!
//! Like ggml, activations are quantized once per call (Q8_0/Q8_1/Q8_K, or kept f32 for float
//! weights) so the inner loops are integer dot products over whole blocks. Work is split over
//! row chunks on the caller's rayon pool.

use crate::quant::quantize_activation_row;
use crate::simd::{self, Isa, Kernel};
use crate::{GgmlType, KernelError};
use rayon::prelude::*;
use std::borrow::Cow;

/// The order in which a product over quantized blocks is summed. llama.cpp's CPU backend uses
/// two, and matching its results bit for bit means using the one it uses for each weight:
/// ggml's `vec_dot` (eight float lanes per output, added up at the end) and, for weights it
/// repacks into interleaved rows when it loads them, one exact integer sum per block joined to
/// the output by one fused multiply-add (`simd::avx2_repacked`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum DotOrder {
    #[default]
    VecDot,
    Repacked,
    /// llama.cpp's tiled K-quant product (`ggml-cpu/tiled`, its AVX2 kernel), which it takes
    /// instead of `vec_dot` for batches of [`TILED_MIN_BATCH`] tokens or more: per super-block
    /// the exact integer sum times the weight scale, then one fused multiply-add by the
    /// activation scale. [`matmul_in`] switches to it by itself for such batches of the types
    /// it covers.
    Tiled,
}

/// The batch size from which llama.cpp multiplies K-quant weights with its tiled product.
pub const TILED_MIN_BATCH: usize = 8;

/// Whether llama.cpp's tiled product covers this type. It also takes Q2_K and Q3_K (and
/// i-quants); we have it for these three, so batches of those types sum in `vec_dot`'s order,
/// close to llama.cpp's but not bitwise.
fn tiled_covers(ty: GgmlType) -> bool {
    matches!(ty, GgmlType::Q4_K | GgmlType::Q5_K | GgmlType::Q6_K)
}

impl DotOrder {
    /// The order llama.cpp's CPU backend uses on an x86 CPU with AVX2 for a `rows`-row weight
    /// of type `ty` that is multiplied: ggml-cpu repacks Q4_0 and Q4_K eight rows at a time
    /// when the row count allows (`ggml_repack_get_optimal_repack_type`). A matrix that is also looked
    /// up by rows (the token embedding, and an output head tied to it) is not repacked: pass
    /// [`DotOrder::VecDot`] for those.
    pub fn llama_cpp(ty: GgmlType, rows: usize) -> Self {
        match ty {
            GgmlType::Q4_0 | GgmlType::Q4_K if rows.is_multiple_of(8) => DotOrder::Repacked,
            _ => DotOrder::VecDot,
        }
    }
}

/// Below this many weight bytes per task, rayon's scheduling costs more than it saves.
const MIN_TASK_BYTES: usize = 48 * 1024;

/// `y[r] = dot(W[r], x)` for the `rows x cols` row-major matrix `w` of type `ty`.
pub fn matvec(
    ty: GgmlType,
    w: &[u8],
    rows: usize,
    cols: usize,
    x: &[f32],
    y: &mut [f32],
) -> Result<(), KernelError> {
    matvec_with(simd::detected(), DotOrder::VecDot, ty, w, rows, cols, x, y)
}

/// [`matmul`] summing in `order` (llama.cpp's choice for the weight: [`DotOrder::llama_cpp`]).
/// In [`DotOrder::Repacked`] every output is one chain over the blocks, so a token's result
/// does not depend on the batch it came in.
#[allow(clippy::too_many_arguments)]
pub fn matmul_in(
    order: DotOrder,
    ty: GgmlType,
    w: &[u8],
    rows: usize,
    cols: usize,
    x: &[f32],
    n: usize,
    y: &mut [f32],
) -> Result<(), KernelError> {
    matmul_impl(simd::detected(), order, ty, w, rows, cols, x, n, y, true)
}

/// [`matmul_rowwise`] summing in `order`.
#[allow(clippy::too_many_arguments)]
pub fn matmul_rowwise_in(
    order: DotOrder,
    ty: GgmlType,
    w: &[u8],
    rows: usize,
    cols: usize,
    x: &[f32],
    n: usize,
    y: &mut [f32],
) -> Result<(), KernelError> {
    matmul_impl(simd::detected(), order, ty, w, rows, cols, x, n, y, false)
}

/// [`matvec`] on an explicit instruction set (falls back to scalar if `isa` is unavailable)
/// summing in `order`; for tests and benchmarks.
#[allow(clippy::too_many_arguments)]
pub fn matvec_with(
    isa: Isa,
    order: DotOrder,
    ty: GgmlType,
    w: &[u8],
    rows: usize,
    cols: usize,
    x: &[f32],
    y: &mut [f32],
) -> Result<(), KernelError> {
    let (k, row_bytes) = prepare(isa, order, ty, w, rows, cols, "matvec")?;
    check_len("matvec x", cols, x.len())?;
    check_len("matvec y", rows, y.len())?;
    let act = quantize_acts(k.act, x, cols)?;
    let chunk = chunk_rows(rows, row_bytes);
    let body = |(ci, ys): (usize, &mut [f32])| {
        for (i, out) in ys.iter_mut().enumerate() {
            let r = ci * chunk + i;
            *out = (k.dot)(&w[r * row_bytes..(r + 1) * row_bytes], &act, cols);
        }
    };
    if chunk >= rows {
        body((0, y));
    } else {
        y.par_chunks_mut(chunk).enumerate().for_each(body);
    }
    Ok(())
}

/// Dot products of one vector with rows of type `ty` that do not form one matrix — a KV cache's
/// per-head slices, strided by the other heads' — each summed as [`matvec`] sums a row: the
/// vector is put in the kernel's activation format (Q8_0 for Q8_0 rows, f32 for float rows)
/// once, then every row is one call of the same kernel.
pub struct RowDot {
    dot: simd::DotFn,
    act: Vec<u8>,
    cols: usize,
    row_bytes: usize,
}

impl RowDot {
    pub fn new(ty: GgmlType, x: &[f32]) -> Result<Self, KernelError> {
        let cols = x.len();
        let (k, row_bytes) = prepare(simd::detected(), DotOrder::VecDot, ty, &[], 0, cols, "row dot")?;
        let act = quantize_acts(k.act, x, cols)?.into_owned();
        Ok(RowDot { dot: k.dot, act, cols, row_bytes })
    }

    /// Bytes of one row of the type for this vector's length.
    pub fn row_bytes(&self) -> usize {
        self.row_bytes
    }

    /// `dot(row, x)`. `row` must be exactly one row ([`RowDot::row_bytes`] long): callers cut
    /// rows out of buffers they sized, so a wrong length is a bug, not bad input.
    pub fn dot(&self, row: &[u8]) -> f32 {
        assert_eq!(row.len(), self.row_bytes, "RowDot::dot: not one row");
        (self.dot)(row, &self.act, self.cols)
    }
}

/// `y[t*rows + r] = dot(W[r], x[t])` for `n` activation rows `x` (`n x cols`, row-major).
pub fn matmul(
    ty: GgmlType,
    w: &[u8],
    rows: usize,
    cols: usize,
    x: &[f32],
    n: usize,
    y: &mut [f32],
) -> Result<(), KernelError> {
    matmul_impl(simd::detected(), DotOrder::VecDot, ty, w, rows, cols, x, n, y, true)
}

/// [`matmul`] where every token row is computed with the single-token kernel [`matvec`] uses,
/// so row `t` of `y` is bitwise what `matvec` gives for row `t` of `x`, whatever `n` is. The
/// multi-token tiles of [`matmul`] sum in another order and differ in the last bits; speculative
/// decoding verifies a batch of drafted tokens with this product so that its logits are exactly
/// those of decoding the tokens one at a time. Each weight row is still read from memory once
/// for all `n` tokens.
pub fn matmul_rowwise(
    ty: GgmlType,
    w: &[u8],
    rows: usize,
    cols: usize,
    x: &[f32],
    n: usize,
    y: &mut [f32],
) -> Result<(), KernelError> {
    matmul_impl(simd::detected(), DotOrder::VecDot, ty, w, rows, cols, x, n, y, false)
}

/// [`matmul`] on an explicit instruction set summing in `order`; for tests and benchmarks.
#[allow(clippy::too_many_arguments)]
pub fn matmul_with(
    isa: Isa,
    order: DotOrder,
    ty: GgmlType,
    w: &[u8],
    rows: usize,
    cols: usize,
    x: &[f32],
    n: usize,
    y: &mut [f32],
) -> Result<(), KernelError> {
    matmul_impl(isa, order, ty, w, rows, cols, x, n, y, true)
}

/// The product; `tiled` allows the multi-token kernels and orders (see [`matmul_rowwise`]).
#[allow(clippy::too_many_arguments)]
fn matmul_impl(
    isa: Isa,
    order: DotOrder,
    ty: GgmlType,
    w: &[u8],
    rows: usize,
    cols: usize,
    x: &[f32],
    n: usize,
    y: &mut [f32],
    tiled: bool,
) -> Result<(), KernelError> {
    if n == 1 {
        return matvec_with(isa, order, ty, w, rows, cols, x, y);
    }
    // A batch as llama.cpp multiplies it; row-wise products keep the single-token order.
    let order = if tiled && order == DotOrder::VecDot && n >= TILED_MIN_BATCH && tiled_covers(ty) {
        DotOrder::Tiled
    } else {
        order
    };
    let (k, row_bytes) = prepare(isa, order, ty, w, rows, cols, "matmul")?;
    check_len("matmul x", mul(n, cols)?, x.len())?;
    check_len("matmul y", mul(n, rows)?, y.len())?;
    if n == 0 || rows == 0 {
        return Ok(());
    }
    let act = quantize_acts(k.act, x, cols)?;
    let act_row = act.len() / n;
    // llama.cpp takes a batch's tokens four at a time and the last `n % 4` alone.
    let in_fours_end = n / 4 * 4;
    // Results land weight-row-major so each task owns a contiguous slice; one transpose at
    // the end is cheap next to the dot products.
    let mut tmp = vec![0.0f32; rows * n];
    let chunk = chunk_rows(rows, row_bytes);
    tmp.par_chunks_mut(chunk * n)
        .enumerate()
        .for_each(|(ci, out)| {
            let a = |t: usize| &act[t * act_row..(t + 1) * act_row];
            let wrow = |r: usize| &w[r * row_bytes..(r + 1) * row_bytes];
            let rows_here = out.len() / n;
            let mut i = 0;
            // Four weight rows × four tokens in registers where the type has that tile: with a
            // row per lane (`rows4x4`, `[token][row]`; bitwise the single-token result, so
            // row-wise products may take it too), or `dot4x4` (`[row][token]`) in tiled
            // products. Then pairs of rows (`dot2x4`), which sum each (row, token) alike.
            let quad_tile = match (k.rows4x4, k.dot4x4) {
                (Some(tile), _) => Some((tile, true)),
                (None, Some(tile)) if tiled && n >= 4 => Some((tile, false)),
                _ => None,
            };
            if let Some((tile, token_major)) = quad_tile {
                while i + 4 <= rows_here {
                    let r = ci * chunk + i;
                    let quad = [wrow(r), wrow(r + 1), wrow(r + 2), wrow(r + 3)];
                    let mut t = 0;
                    while t + 4 <= n {
                        let y = tile(quad, [a(t), a(t + 1), a(t + 2), a(t + 3)], cols);
                        for j in 0..4 {
                            for dt in 0..4 {
                                out[(i + j) * n + t + dt] = if token_major { y[dt][j] } else { y[j][dt] };
                            }
                        }
                        t += 4;
                    }
                    for t in t..n {
                        for (j, wr) in quad.into_iter().enumerate() {
                            out[(i + j) * n + t] = (k.dot)(wr, a(t), cols);
                        }
                    }
                    i += 4;
                }
            }
            if let Some(dot2x4) = k.dot2x4.filter(|_| tiled && n >= 4) {
                while i + 2 <= rows_here {
                    let r = ci * chunk + i;
                    let (o0, o1) = out[i * n..(i + 2) * n].split_at_mut(n);
                    let mut t = 0;
                    while t + 4 <= n {
                        let [y0, y1] = dot2x4([wrow(r), wrow(r + 1)], [a(t), a(t + 1), a(t + 2), a(t + 3)], cols);
                        o0[t..t + 4].copy_from_slice(&y0);
                        o1[t..t + 4].copy_from_slice(&y1);
                        t += 4;
                    }
                    for t in t..n {
                        o0[t] = (k.dot)(wrow(r), a(t), cols);
                        o1[t] = (k.dot)(wrow(r + 1), a(t), cols);
                    }
                    i += 2;
                }
            }
            for (i, orow) in out.chunks_exact_mut(n).enumerate().skip(i) {
                let wr = wrow(ci * chunk + i);
                // The weight row stays in L1 while all tokens stream past it, four at a time
                // where the type has a four-token kernel.
                let mut t = 0;
                if let Some(dot4) = k.dot4.filter(|_| tiled) {
                    while t + 4 <= n {
                        orow[t..t + 4].copy_from_slice(&dot4(wr, [a(t), a(t + 1), a(t + 2), a(t + 3)], cols));
                        t += 4;
                    }
                }
                for (t, o) in orow.iter_mut().enumerate().skip(t) {
                    let dot = match k.dot_in_fours {
                        Some(in_fours) if tiled && t < in_fours_end => in_fours,
                        _ => k.dot,
                    };
                    *o = dot(wr, a(t), cols);
                }
            }
        });
    y.par_chunks_mut(rows).enumerate().for_each(|(t, yt)| {
        for (r, v) in yt.iter_mut().enumerate() {
            *v = tmp[r * n + t];
        }
    });
    Ok(())
}

fn check_len(what: &'static str, expected: usize, got: usize) -> Result<(), KernelError> {
    if expected != got {
        return Err(KernelError::Size {
            what,
            expected,
            got,
        });
    }
    Ok(())
}

fn mul(a: usize, b: usize) -> Result<usize, KernelError> {
    a.checked_mul(b).ok_or(KernelError::Size {
        what: "overflowing shape",
        expected: usize::MAX,
        got: 0,
    })
}

/// Picks the kernel and validates the weight buffer; returns the bytes per weight row.
fn prepare(
    isa: Isa,
    order: DotOrder,
    ty: GgmlType,
    w: &[u8],
    rows: usize,
    cols: usize,
    what: &'static str,
) -> Result<(Kernel, usize), KernelError> {
    let k = simd::kernel(ty, isa, order).ok_or(KernelError::Unsupported { ty, what })?;
    let block = ty.block_size();
    if !cols.is_multiple_of(block) {
        return Err(KernelError::Misaligned { ty, n: cols, block });
    }
    let row_bytes = cols / block * ty.type_size();
    check_len("weights", mul(rows, row_bytes)?, w.len())?;
    Ok((k, row_bytes))
}

/// Activations in the kernel's format: f32 as-is (viewed as bytes), else each `cols`-long
/// row quantized as ggml-cpu quantizes activations.
fn quantize_acts(act: GgmlType, x: &[f32], cols: usize) -> Result<Cow<'_, [u8]>, KernelError> {
    if act == GgmlType::F32 {
        // SAFETY: any f32 bit pattern is valid as bytes, u8 has alignment 1, and the length
        // covers exactly the same memory.
        let bytes = unsafe { std::slice::from_raw_parts(x.as_ptr() as *const u8, x.len() * 4) };
        return Ok(Cow::Borrowed(bytes));
    }
    let n = x.len().checked_div(cols).unwrap_or(0);
    let row = cols / act.block_size() * act.type_size();
    let mut buf = vec![0u8; n * row];
    if n > 0 && row > 0 {
        buf.par_chunks_mut(row)
            .zip(x.par_chunks(cols))
            .try_for_each(|(dst, src)| quantize_activation_row(act, src, dst))?;
    }
    Ok(Cow::Owned(buf))
}

/// Rows per rayon task: about four tasks per thread for load balance, but never so few
/// bytes that scheduling dominates.
fn chunk_rows(rows: usize, row_bytes: usize) -> usize {
    let threads = rayon::current_num_threads().max(1);
    let min_rows = MIN_TASK_BYTES.div_ceil(row_bytes.max(1));
    rows.div_ceil(threads * 4).max(min_rows).max(1)
}
