//! Reading the voice's tensors (F32, named by VITS module path, ONNX shapes stored reversed)
//! and the layer types built from them: convolutions, transposed convolutions, layer norms.

use nexus_kernels::conv::{self, ConvParams};
use nexus_kernels::GgmlType;

use crate::gguf::GgufFile;
use crate::tts::TtsError;

/// Tensor lookup on an open voice file; every read checks name, type and shape.
pub struct Tensors<'a> {
    pub file: &'a GgufFile,
}

impl Tensors<'_> {
    fn voice_error(&self, what: String) -> TtsError {
        TtsError::Voice { path: self.file.path().to_path_buf(), what }
    }

    /// The tensor `name` with ONNX shape `shape` (outermost first), copied out as f32.
    pub fn get(&self, name: &str, shape: &[usize]) -> Result<Vec<f32>, TtsError> {
        let dims: Vec<u64> = shape.iter().rev().map(|&d| d as u64).collect();
        let (info, data) = self.file.tensor_checked(name, &dims)?;
        if info.ty != GgmlType::F32 {
            return Err(self.voice_error(format!("tensor {name:?} has type {}, expected F32", info.ty)));
        }
        Ok(data.chunks_exact(4).map(|b| f32::from_le_bytes([b[0], b[1], b[2], b[3]])).collect())
    }

    /// `prefix.weight` [c_out, c_in/groups, k] (+ `prefix.bias` [c_out]) with "same" padding.
    pub fn conv(&self, prefix: &str, shape: ConvShape) -> Result<Conv1d, TtsError> {
        let ConvShape { c_in, c_out, kernel, dilation, groups, bias } = shape;
        let weight = self.get(&format!("{prefix}.weight"), &[c_out, c_in / groups, kernel])?;
        let bias = if bias { Some(self.get(&format!("{prefix}.bias"), &[c_out])?) } else { None };
        let params =
            ConvParams { c_in, c_out, kernel, stride: 1, dilation, padding: dilation * (kernel - 1) / 2, groups };
        Ok(Conv1d { conv: conv::Conv1d::new(&weight, bias.as_deref(), &params)? })
    }

    /// A 1×1 convolution with bias: a dense layer over channels.
    pub fn conv1x1(&self, prefix: &str, c_in: usize, c_out: usize) -> Result<Conv1d, TtsError> {
        self.conv(prefix, ConvShape::new(c_in, c_out, 1))
    }

    /// `prefix.weight` [c_in, c_out, k] + `prefix.bias` [c_out], PyTorch's ConvTranspose1d.
    pub fn conv_transpose(
        &self,
        prefix: &str,
        c_in: usize,
        c_out: usize,
        kernel: usize,
        stride: usize,
    ) -> Result<ConvTranspose1d, TtsError> {
        if kernel < stride || !(kernel - stride).is_multiple_of(2) {
            return Err(self.voice_error(format!(
                "{prefix}: transposed convolution with kernel {kernel} and stride {stride} has no symmetric padding"
            )));
        }
        let weight = self.get(&format!("{prefix}.weight"), &[c_in, c_out, kernel])?;
        let bias = Some(self.get(&format!("{prefix}.bias"), &[c_out])?);
        let params =
            ConvParams { c_in, c_out, kernel, stride, dilation: 1, padding: (kernel - stride) / 2, groups: 1 };
        Ok(ConvTranspose1d { conv: conv::ConvTranspose1d::new(&weight, bias.as_deref(), &params)? })
    }

    pub fn layer_norm(&self, prefix: &str, channels: usize, eps: f32) -> Result<LayerNorm, TtsError> {
        Ok(LayerNorm {
            gamma: self.get(&format!("{prefix}.gamma"), &[channels])?,
            beta: self.get(&format!("{prefix}.beta"), &[channels])?,
            eps,
        })
    }
}

/// What a convolution's weight must look like; `new` is the common dense, biased, undilated case.
#[derive(Clone, Copy)]
pub struct ConvShape {
    pub c_in: usize,
    pub c_out: usize,
    pub kernel: usize,
    pub dilation: usize,
    pub groups: usize,
    pub bias: bool,
}

impl ConvShape {
    pub fn new(c_in: usize, c_out: usize, kernel: usize) -> Self {
        ConvShape { c_in, c_out, kernel, dilation: 1, groups: 1, bias: true }
    }
    pub fn dilation(self, dilation: usize) -> Self {
        ConvShape { dilation, ..self }
    }
    pub fn groups(self, groups: usize) -> Self {
        ConvShape { groups, ..self }
    }
    pub fn no_bias(self) -> Self {
        ConvShape { bias: false, ..self }
    }
}

/// Conv1d over a channels-first `[c_in][len]` input; stride 1 and "same" padding keep the length.
/// The weights are packed for the GEMM once, at load.
pub struct Conv1d {
    conv: conv::Conv1d,
}

impl Conv1d {
    pub fn c_out(&self) -> usize {
        self.conv.params().c_out
    }

    /// `[c_out][len]` from `[c_in][len]`.
    pub fn forward(&self, x: &[f32], len: usize) -> Result<Vec<f32>, TtsError> {
        let mut y = Vec::new();
        self.forward_into(x, len, &mut y)?;
        Ok(y)
    }

    /// [`Conv1d::forward`] into a reused buffer: the decoder's are megabytes, and fresh ones
    /// cost a page fault per 4 KiB.
    pub fn forward_into(&self, x: &[f32], len: usize, y: &mut Vec<f32>) -> Result<(), TtsError> {
        y.resize(self.c_out() * len, 0.0);
        self.conv.forward(x, len, y)?;
        Ok(())
    }

    /// `y = conv(leaky_relu(x, slope)) + residual` with both folded into the convolution
    /// (no passes over the signal of their own), bit-identical to the separate steps.
    pub fn forward_leaky_residual_into(
        &self,
        x: &[f32],
        len: usize,
        slope: f32,
        residual: &[f32],
        y: &mut Vec<f32>,
    ) -> Result<(), TtsError> {
        y.resize(self.c_out() * len, 0.0);
        self.conv.forward_fused(x, len, Some(slope), Some(residual), y)?;
        Ok(())
    }
}

/// ConvTranspose1d with padding `(k − stride)/2`: the output is exactly `stride·len` long.
pub struct ConvTranspose1d {
    conv: conv::ConvTranspose1d,
}

impl ConvTranspose1d {
    pub fn stride(&self) -> usize {
        self.conv.params().stride
    }

    /// `y = [c_out][stride·len]` from `[c_in][len]`, into a reused buffer.
    pub fn forward_into(&self, x: &[f32], len: usize, y: &mut Vec<f32>) -> Result<(), TtsError> {
        let p = self.conv.params();
        y.resize(p.c_out * len * p.stride, 0.0);
        self.conv.forward(x, len, y)?;
        Ok(())
    }
}

pub struct LayerNorm {
    gamma: Vec<f32>,
    beta: Vec<f32>,
    eps: f32,
}

impl LayerNorm {
    pub fn forward(&self, x: &mut [f32], len: usize) {
        super::ops::layer_norm_channels(x, len, &self.gamma, &self.beta, self.eps);
    }
}
