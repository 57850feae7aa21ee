//! 1-D convolutions over channels-first signals `[C][L]` (f32, row-major), PyTorch semantics.
//!
//! `conv1d` is a GEMM with the weights as A (`M = c_out`, `K = c_in·kernel`) and the signal as
//! B through an implicit im2col: the GEMM's B packing reads the shifted, zero-padded signal
//! rows directly, so no `K × L` matrix is ever built. Depthwise convolutions (one input channel
//! per group) are too thin for a GEMM and run as direct loops. `conv_transpose1d` is split into
//! `stride` polyphase convolutions, each a GEMM of its own (see `transpose`).

mod depthwise;
mod transpose;

use crate::gemm::{self, source::Im2colSource, Out, PackedA};
use crate::simd::{self, Isa};
use crate::KernelError;

/// Shape and hyper-parameters of a Conv1d / ConvTranspose1d (PyTorch's names and meaning).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ConvParams {
    pub c_in: usize,
    pub c_out: usize,
    pub kernel: usize,
    pub stride: usize,
    pub dilation: usize,
    pub padding: usize,
    pub groups: usize,
}

/// `(len + 2·padding − dilation·(kernel−1) − 1)/stride + 1`, or 0 when the padded input is
/// shorter than the dilated kernel or a parameter is 0.
pub fn conv1d_out_len(len: usize, p: &ConvParams) -> usize {
    if p.kernel == 0 || p.stride == 0 || p.dilation == 0 || len == 0 {
        return 0;
    }
    let span = p.dilation * (p.kernel - 1) + 1;
    let padded = len + 2 * p.padding;
    if padded < span {
        0
    } else {
        (padded - span) / p.stride + 1
    }
}

/// `(len−1)·stride − 2·padding + dilation·(kernel−1) + 1` (output_padding 0), or 0 when that
/// is not positive or a parameter is 0.
pub fn conv_transpose1d_out_len(len: usize, p: &ConvParams) -> usize {
    if p.kernel == 0 || p.stride == 0 || p.dilation == 0 || len == 0 {
        return 0;
    }
    ((len - 1) * p.stride + p.dilation * (p.kernel - 1) + 1).saturating_sub(2 * p.padding)
}

/// PyTorch Conv1d: `y[o][t] = bias[o] + Σ_{i ∈ group(o)} Σ_j w[o][i][j]·x[i][t·stride +
/// j·dilation − padding]` (zero outside), weight `[c_out][c_in/groups][kernel]`, `x` holding
/// at least `c_in·len` and `y` at least `c_out·l_out` values. Returns `l_out`.
pub fn conv1d(
    x: &[f32],
    len: usize,
    w: &[f32],
    bias: Option<&[f32]>,
    p: &ConvParams,
    y: &mut [f32],
) -> Result<usize, KernelError> {
    conv1d_with(simd::detected(), x, len, w, bias, p, y)
}

/// [`conv1d`] on an explicit instruction set; for tests and benchmarks.
pub fn conv1d_with(
    isa: Isa,
    x: &[f32],
    len: usize,
    w: &[f32],
    bias: Option<&[f32]>,
    p: &ConvParams,
    y: &mut [f32],
) -> Result<usize, KernelError> {
    Conv1d::new_with(isa, w, bias, p)?.forward(x, len, y)
}

/// A Conv1d layer with its weights packed once for the GEMM: packing A on every call cost as
/// much as a tenth of the small layers' time. Same semantics as [`conv1d`].
pub struct Conv1d {
    p: ConvParams,
    bias: Option<Vec<f32>>,
    offsets: Vec<isize>,
    kind: Conv1dKind,
}

enum Conv1dKind {
    /// One packed `c_out/groups × (c_in/groups)·kernel` matrix per group.
    Gemm(Vec<PackedA>),
    /// The raw `[c_out][1][kernel]` weights of a depthwise convolution.
    Depthwise(Vec<f32>),
}

impl Conv1d {
    /// Weight `[c_out][c_in/groups][kernel]`, bias `[c_out]`, for the detected instruction set.
    pub fn new(w: &[f32], bias: Option<&[f32]>, p: &ConvParams) -> Result<Self, KernelError> {
        Self::new_with(simd::detected(), w, bias, p)
    }

    /// [`Conv1d::new`] on an explicit instruction set; for tests and benchmarks.
    pub fn new_with(
        isa: Isa,
        w: &[f32],
        bias: Option<&[f32]>,
        p: &ConvParams,
    ) -> Result<Self, KernelError> {
        check_params(p)?;
        if !p.c_in.is_multiple_of(p.groups) || !p.c_out.is_multiple_of(p.groups) {
            return Err(size(
                "conv1d groups (must divide c_in and c_out)",
                p.c_in,
                p.groups,
            ));
        }
        let (cin_g, cout_g) = (p.c_in / p.groups, p.c_out / p.groups);
        check_exact("conv1d weight", p.c_out * cin_g * p.kernel, w.len())?;
        check_bias("conv1d bias", p.c_out, bias)?;
        let kind = if cin_g == 1 && p.groups > 1 {
            Conv1dKind::Depthwise(w.to_vec())
        } else {
            let k = cin_g * p.kernel;
            Conv1dKind::Gemm(
                w.chunks_exact(cout_g * k)
                    .map(|wg| PackedA::new(isa, cout_g, k, wg, k))
                    .collect(),
            )
        };
        Ok(Conv1d {
            p: *p,
            bias: bias.map(<[f32]>::to_vec),
            offsets: (0..p.kernel)
                .map(|j| (j * p.dilation) as isize - p.padding as isize)
                .collect(),
            kind,
        })
    }

    pub fn params(&self) -> &ConvParams {
        &self.p
    }

    /// `y = conv(x)` for `x` holding at least `c_in·len` values and `y` at least
    /// `c_out·l_out`; returns `l_out`.
    pub fn forward(&self, x: &[f32], len: usize, y: &mut [f32]) -> Result<usize, KernelError> {
        self.forward_fused(x, len, None, None, y)
    }

    /// `y = conv(leaky_relu(x, slope)) + residual`, the LeakyReLU (when `leaky` is set) fused
    /// into the GEMM's packing and the residual (`c_out·l_out` values, when set) into its
    /// store, each bit-identical to a separate pass; a depthwise layer takes neither.
    pub fn forward_fused(
        &self,
        x: &[f32],
        len: usize,
        leaky: Option<f32>,
        residual: Option<&[f32]>,
        y: &mut [f32],
    ) -> Result<usize, KernelError> {
        let p = &self.p;
        let l_out = conv1d_out_len(len, p);
        if l_out == 0 {
            let span = p.dilation * (p.kernel - 1) + 1;
            return Err(size(
                "conv1d padded input length",
                span,
                len + 2 * p.padding,
            ));
        }
        check_at_least("conv1d x", p.c_in * len, x.len())?;
        check_at_least("conv1d y", p.c_out * l_out, y.len())?;
        let x = &x[..p.c_in * len];
        let y = &mut y[..p.c_out * l_out];
        if let Some(r) = residual {
            check_at_least("conv1d residual", p.c_out * l_out, r.len())?;
        }
        let bias = self.bias.as_deref();
        let groups = match &self.kind {
            Conv1dKind::Depthwise(_) if leaky.is_some() || residual.is_some() => {
                return Err(KernelError::Unsupported {
                    ty: crate::GgmlType::F32,
                    what: "fused activation or residual on a depthwise conv1d",
                })
            }
            Conv1dKind::Depthwise(w) => {
                depthwise::conv1d_depthwise(x, len, w, bias, p, y, l_out);
                return Ok(l_out);
            }
            Conv1dKind::Gemm(groups) => groups,
        };
        let (cin_g, cout_g) = (p.c_in / p.groups, p.c_out / p.groups);
        for (g, a) in groups.iter().enumerate() {
            let src = Im2colSource {
                x: &x[g * cin_g * len..(g + 1) * cin_g * len],
                len,
                offsets: &self.offsets,
                base: 0,
                stride: p.stride,
                leaky,
            };
            let yg = &mut y[g * cout_g * l_out..(g + 1) * cout_g * l_out];
            let out = Out {
                ptr: yg.as_mut_ptr(),
                rs: l_out,
                cs: 1,
                bias: bias.map_or(std::ptr::null(), |b| b[g * cout_g..].as_ptr()),
                res: residual.map_or(std::ptr::null(), |r| r[g * cout_g * l_out..].as_ptr()),
            };
            // SAFETY: yg holds cout_g rows of l_out, the bias cout_g values and the residual
            // (checked above) as many as y; y aliases none of them, nor the weights or x.
            unsafe { gemm::gemm_packed(a, l_out, &src, out, false, true) };
        }
        Ok(l_out)
    }
}

/// PyTorch ConvTranspose1d (groups 1, output_padding 0), weight `[c_in][c_out][kernel]`:
/// `y[o][t·stride + j·dilation − padding] += w[i][o][j]·x[i][t]`, plus `bias[o]`; `x` holding
/// at least `c_in·len` and `y` at least `c_out·l_out` values. Returns `l_out`.
pub fn conv_transpose1d(
    x: &[f32],
    len: usize,
    w: &[f32],
    bias: Option<&[f32]>,
    p: &ConvParams,
    y: &mut [f32],
) -> Result<usize, KernelError> {
    conv_transpose1d_with(simd::detected(), x, len, w, bias, p, y)
}

/// [`conv_transpose1d`] on an explicit instruction set; for tests and benchmarks.
pub fn conv_transpose1d_with(
    isa: Isa,
    x: &[f32],
    len: usize,
    w: &[f32],
    bias: Option<&[f32]>,
    p: &ConvParams,
    y: &mut [f32],
) -> Result<usize, KernelError> {
    ConvTranspose1d::new_with(isa, w, bias, p)?.forward(x, len, y)
}

/// A ConvTranspose1d layer with its polyphase weights packed once; same semantics as
/// [`conv_transpose1d`].
pub struct ConvTranspose1d {
    p: ConvParams,
    bias: Option<Vec<f32>>,
    phases: Vec<transpose::Phase>,
}

impl ConvTranspose1d {
    /// Weight `[c_in][c_out][kernel]`, bias `[c_out]`, for the detected instruction set.
    pub fn new(w: &[f32], bias: Option<&[f32]>, p: &ConvParams) -> Result<Self, KernelError> {
        Self::new_with(simd::detected(), w, bias, p)
    }

    /// [`ConvTranspose1d::new`] on an explicit instruction set; for tests and benchmarks.
    pub fn new_with(
        isa: Isa,
        w: &[f32],
        bias: Option<&[f32]>,
        p: &ConvParams,
    ) -> Result<Self, KernelError> {
        check_params(p)?;
        if p.groups != 1 {
            return Err(size(
                "conv_transpose1d groups (only 1 is supported)",
                1,
                p.groups,
            ));
        }
        check_exact(
            "conv_transpose1d weight",
            p.c_in * p.c_out * p.kernel,
            w.len(),
        )?;
        check_bias("conv_transpose1d bias", p.c_out, bias)?;
        Ok(ConvTranspose1d {
            p: *p,
            bias: bias.map(<[f32]>::to_vec),
            phases: transpose::pack_phases(isa, w, p),
        })
    }

    pub fn params(&self) -> &ConvParams {
        &self.p
    }

    /// `y = conv_transpose(x)` for `x` holding at least `c_in·len` values and `y` at least
    /// `c_out·l_out`; returns `l_out`.
    pub fn forward(&self, x: &[f32], len: usize, y: &mut [f32]) -> Result<usize, KernelError> {
        let p = &self.p;
        let l_out = conv_transpose1d_out_len(len, p);
        if l_out == 0 {
            return Err(size(
                "conv_transpose1d output length (input too short for the padding)",
                1,
                0,
            ));
        }
        check_at_least("conv_transpose1d x", p.c_in * len, x.len())?;
        check_at_least("conv_transpose1d y", p.c_out * l_out, y.len())?;
        let y = &mut y[..p.c_out * l_out];
        fill_bias(y, l_out, self.bias.as_deref());
        transpose::conv_transpose1d_polyphase(&self.phases, &x[..p.c_in * len], len, p, y, l_out);
        Ok(l_out)
    }
}

/// Rows of y start at the bias (later accumulated into) or at zero.
fn fill_bias(y: &mut [f32], l_out: usize, bias: Option<&[f32]>) {
    match bias {
        Some(b) => y
            .chunks_exact_mut(l_out)
            .zip(b)
            .for_each(|(row, &v)| row.fill(v)),
        None => y.fill(0.0),
    }
}

fn check_params(p: &ConvParams) -> Result<(), KernelError> {
    let fields: [(usize, &'static str); 6] = [
        (p.c_in, "conv c_in (must be >= 1)"),
        (p.c_out, "conv c_out (must be >= 1)"),
        (p.kernel, "conv kernel (must be >= 1)"),
        (p.stride, "conv stride (must be >= 1)"),
        (p.dilation, "conv dilation (must be >= 1)"),
        (p.groups, "conv groups (must be >= 1)"),
    ];
    match fields.iter().find(|(v, _)| *v == 0) {
        Some(&(_, what)) => Err(size(what, 1, 0)),
        None => Ok(()),
    }
}

fn size(what: &'static str, expected: usize, got: usize) -> KernelError {
    KernelError::Size {
        what,
        expected,
        got,
    }
}

fn check_exact(what: &'static str, expected: usize, got: usize) -> Result<(), KernelError> {
    if expected == got {
        Ok(())
    } else {
        Err(size(what, expected, got))
    }
}

fn check_at_least(what: &'static str, expected: usize, got: usize) -> Result<(), KernelError> {
    if got >= expected {
        Ok(())
    } else {
        Err(size(what, expected, got))
    }
}

fn check_bias(what: &'static str, c_out: usize, bias: Option<&[f32]>) -> Result<(), KernelError> {
    match bias {
        Some(b) => check_exact(what, c_out, b.len()),
        None => Ok(()),
    }
}
