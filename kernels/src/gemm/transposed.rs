//! GEMM with either operand read transposed, as training needs: `y = x·Wᵀ` for a layer
//! stored `[out][in]`, `dW += dyᵀ·x` for its weight gradient, `Q·Kᵀ` and `Pᵀ·dO` in attention.
//! The transpose is folded into packing (A panels and B panels are copied once per product
//! anyway), so no transposed copy of either matrix is ever made.

use super::source::{MatrixSource, PanelSource, TransposedSource};
use super::{check_matrix, gemm_packed, Out, PackedA};
use crate::simd::{self, Isa};
use crate::KernelError;

/// `C[m][n] (= or +=) op(A)·op(B)`, with `op(A)` the `m × k` matrix A or, when `trans_a`,
/// the transpose of the `k × m` matrix stored in `a`; likewise `op(B)` is `k × n`, stored as
/// `n × k` when `trans_b`. Leading dimensions are those of the stored matrices (BLAS
/// convention: `lda >= m` when `trans_a`, `>= k` otherwise). Summation order is that of
/// [`super::sgemm`], so results do not depend on the thread count either.
///
/// # Panics
/// If a slice is too short for its dimensions or a leading dimension is smaller than its
/// stored row; use [`sgemm_t_with`] to get a [`KernelError::Size`] instead.
#[allow(clippy::too_many_arguments)]
pub fn sgemm_t(
    trans_a: bool,
    trans_b: bool,
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
    let isa = simd::detected();
    if let Err(e) = sgemm_t_with(
        isa, trans_a, trans_b, m, n, k, a, lda, b, ldb, c, ldc, accumulate,
    ) {
        panic!("sgemm_t: {e}");
    }
}

/// [`sgemm_t`] on an explicit instruction set (scalar if `isa` is unavailable), returning an
/// error instead of panicking on inconsistent sizes.
#[allow(clippy::too_many_arguments)]
pub fn sgemm_t_with(
    isa: Isa,
    trans_a: bool,
    trans_b: bool,
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
    if trans_a {
        check_matrix("sgemm_t A (transposed)", k, m, lda, a.len())?;
    } else {
        check_matrix("sgemm_t A", m, k, lda, a.len())?;
    }
    if trans_b {
        check_matrix("sgemm_t B (transposed)", n, k, ldb, b.len())?;
    } else {
        check_matrix("sgemm_t B", k, n, ldb, b.len())?;
    }
    check_matrix("sgemm_t C", m, n, ldc, c.len())?;
    let packed = if trans_a {
        PackedA::new_transposed(isa, m, k, a, lda)
    } else {
        PackedA::new(isa, m, k, a, lda)
    };
    let plain = MatrixSource { b, ldb };
    let transposed = TransposedSource { bt: b, ldbt: ldb };
    let src: &dyn PanelSource = if trans_b { &transposed } else { &plain };
    let out = Out {
        ptr: c.as_mut_ptr(),
        bias: std::ptr::null(),
        res: std::ptr::null(),
        rs: ldc,
        cs: 1,
    };
    // SAFETY: check_matrix proved C holds m rows of n elements at stride ldc >= n, and the
    // sources read only inside the checked extents of a and b, which C cannot alias (&mut).
    unsafe { gemm_packed(&packed, n, src, out, accumulate, true) };
    Ok(())
}
