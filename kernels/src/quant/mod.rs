//! Row quantization and dequantization, byte-compatible with ggml's reference quantizers
//! (`quantize_row_*_ref`) so files we write load in llama.cpp and vice versa.

mod float;
mod kquants;
mod kquants_low;
mod legacy;

use crate::{GgmlType, KernelError};
use half::f16;

pub(crate) use kquants::{scale_min_k4, Q8K_BSUMS, Q8K_QS};
pub(crate) use kquants_low::q3k_scale;

/// Quantizes `src` into ggml blocks of type `ty`; `dst` must be exactly one row of that type.
pub fn quantize_row(ty: GgmlType, src: &[f32], dst: &mut [u8]) -> Result<(), KernelError> {
    check_sizes(ty, src.len(), dst.len(), "quantize_row")?;
    match ty {
        GgmlType::F32 => float::from_f32_f32(src, dst),
        GgmlType::F16 => float::from_f32_f16(src, dst),
        GgmlType::BF16 => float::from_f32_bf16(src, dst),
        GgmlType::Q4_0 => legacy::quantize_q4_0(src, dst),
        GgmlType::Q4_1 => legacy::quantize_q4_1(src, dst),
        GgmlType::Q5_0 => legacy::quantize_q5_0(src, dst),
        GgmlType::Q5_1 => legacy::quantize_q5_1(src, dst),
        GgmlType::Q8_0 => legacy::quantize_q8_0(src, dst),
        GgmlType::Q8_1 => legacy::quantize_q8_1(src, dst),
        GgmlType::Q2_K => kquants_low::quantize_q2_k(src, dst),
        GgmlType::Q3_K => kquants_low::quantize_q3_k(src, dst),
        GgmlType::Q4_K => kquants::quantize_q4_k(src, dst),
        GgmlType::Q5_K => kquants::quantize_q5_k(src, dst),
        GgmlType::Q6_K => kquants::quantize_q6_k(src, dst),
        GgmlType::Q8_K => kquants::quantize_q8_k(src, dst),
        _ => {
            return Err(KernelError::Unsupported {
                ty,
                what: "quantize",
            })
        }
    }
    Ok(())
}

/// Quantizes one row the way ggml-cpu does at run time (see `legacy::quantize_q8_act_block`):
/// activations for a dot product, and f32 copied into a quantized tensor such as a Q8_0 KV
/// cache. Q8_K activations use the reference quantizer, as ggml-cpu does on x86.
pub fn quantize_activation_row(ty: GgmlType, src: &[f32], dst: &mut [u8]) -> Result<(), KernelError> {
    check_sizes(ty, src.len(), dst.len(), "quantize_activation_row")?;
    match ty {
        GgmlType::Q8_0 => legacy::quantize_q8_0_act(src, dst),
        GgmlType::Q8_1 => legacy::quantize_q8_1_act(src, dst),
        _ => return quantize_row(ty, src, dst),
    }
    Ok(())
}

/// Expands one row of `ty` blocks into f32; `dst.len()` gives the element count.
pub fn dequantize_row(ty: GgmlType, src: &[u8], dst: &mut [f32]) -> Result<(), KernelError> {
    check_sizes(ty, dst.len(), src.len(), "dequantize_row")?;
    match ty {
        GgmlType::F32 => float::to_f32_f32(src, dst),
        GgmlType::F16 => float::to_f32_f16(src, dst),
        GgmlType::BF16 => float::to_f32_bf16(src, dst),
        GgmlType::Q4_0 => legacy::dequantize_q4_0(src, dst),
        GgmlType::Q4_1 => legacy::dequantize_q4_1(src, dst),
        GgmlType::Q5_0 => legacy::dequantize_q5_0(src, dst),
        GgmlType::Q5_1 => legacy::dequantize_q5_1(src, dst),
        GgmlType::Q8_0 => legacy::dequantize_q8_0(src, dst),
        GgmlType::Q8_1 => legacy::dequantize_q8_1(src, dst),
        GgmlType::Q2_K => kquants_low::dequantize_q2_k(src, dst),
        GgmlType::Q3_K => kquants_low::dequantize_q3_k(src, dst),
        GgmlType::Q4_K => kquants::dequantize_q4_k(src, dst),
        GgmlType::Q5_K => kquants::dequantize_q5_k(src, dst),
        GgmlType::Q6_K => kquants::dequantize_q6_k(src, dst),
        GgmlType::Q8_K => kquants::dequantize_q8_k(src, dst),
        _ => {
            return Err(KernelError::Unsupported {
                ty,
                what: "dequantize",
            })
        }
    }
    Ok(())
}

/// Validates that `n` elements form whole blocks and that `bytes` is exactly their row size.
pub(crate) fn check_sizes(
    ty: GgmlType,
    n: usize,
    bytes: usize,
    what: &'static str,
) -> Result<(), KernelError> {
    let block = ty.block_size();
    if !n.is_multiple_of(block) {
        return Err(KernelError::Misaligned { ty, n, block });
    }
    let expected = n / block * ty.type_size();
    if bytes != expected {
        return Err(KernelError::Size {
            what,
            expected,
            got: bytes,
        });
    }
    Ok(())
}

#[inline(always)]
pub(crate) fn f16_at(b: &[u8], off: usize) -> f32 {
    f16::from_bits(u16::from_le_bytes([b[off], b[off + 1]])).to_f32()
}

#[inline(always)]
pub(crate) fn put_f16(b: &mut [u8], off: usize, v: f32) {
    b[off..off + 2].copy_from_slice(&f16::from_f32(v).to_bits().to_le_bytes());
}

#[inline(always)]
pub(crate) fn f32_at(b: &[u8], off: usize) -> f32 {
    f32::from_le_bytes([b[off], b[off + 1], b[off + 2], b[off + 3]])
}

/// ggml's `nearest_int`: rounds half to even via the 1.5*2^23 trick. Kept bit-for-bit rather
/// than `round()` because ties and out-of-range inputs must land where ggml's do.
#[inline(always)]
pub(crate) fn nearest_int(fval: f32) -> i32 {
    let val = fval + 12_582_912.0;
    (val.to_bits() as i32 & 0x007f_ffff) - 0x0040_0000
}

/// Signed absmax of a block: the value of largest magnitude, first one on ties.
#[inline(always)]
pub(super) fn signed_absmax(xb: &[f32]) -> f32 {
    let (mut amax, mut max) = (0.0f32, 0.0f32);
    for &v in xb {
        if amax < v.abs() {
            amax = v.abs();
            max = v;
        }
    }
    max
}
