//! The 32-element "legacy" block formats. Float operation order mirrors ggml's reference
//! quantizers so the output bytes are identical, e.g. `id` comes from the f32 `d`, not from
//! the f16 that is stored.

use super::{f16_at, put_f16, signed_absmax};

const QK: usize = 32;

#[inline(always)]
fn min_max(xb: &[f32]) -> (f32, f32) {
    let (mut min, mut max) = (f32::MAX, -f32::MAX);
    for &v in xb {
        if v < min {
            min = v;
        }
        if v > max {
            max = v;
        }
    }
    (min, max)
}

#[inline(always)]
fn inv(d: f32) -> f32 {
    if d != 0.0 {
        1.0 / d
    } else {
        0.0
    }
}

pub(super) fn quantize_q4_0(x: &[f32], y: &mut [u8]) {
    for (xb, yb) in x.chunks_exact(QK).zip(y.chunks_exact_mut(18)) {
        let d = signed_absmax(xb) / -8.0;
        let id = inv(d);
        put_f16(yb, 0, d);
        for j in 0..QK / 2 {
            // `as i8` truncates like C's (int8_t) cast for the in-range values that occur.
            let xi0 = ((xb[j] * id + 8.5) as i8).min(15) as u8;
            let xi1 = ((xb[QK / 2 + j] * id + 8.5) as i8).min(15) as u8;
            yb[2 + j] = xi0 | (xi1 << 4);
        }
    }
}

pub(super) fn quantize_q4_1(x: &[f32], y: &mut [u8]) {
    for (xb, yb) in x.chunks_exact(QK).zip(y.chunks_exact_mut(20)) {
        let (min, max) = min_max(xb);
        let d = (max - min) / 15.0;
        let id = inv(d);
        put_f16(yb, 0, d);
        put_f16(yb, 2, min);
        for j in 0..QK / 2 {
            let xi0 = (((xb[j] - min) * id + 0.5) as i8).min(15) as u8;
            let xi1 = (((xb[QK / 2 + j] - min) * id + 0.5) as i8).min(15) as u8;
            yb[4 + j] = xi0 | (xi1 << 4);
        }
    }
}

pub(super) fn quantize_q5_0(x: &[f32], y: &mut [u8]) {
    for (xb, yb) in x.chunks_exact(QK).zip(y.chunks_exact_mut(22)) {
        let d = signed_absmax(xb) / -16.0;
        let id = inv(d);
        put_f16(yb, 0, d);
        let mut qh = 0u32;
        for j in 0..QK / 2 {
            let xi0 = ((xb[j] * id + 16.5) as i8).min(31) as u8;
            let xi1 = ((xb[QK / 2 + j] * id + 16.5) as i8).min(31) as u8;
            yb[6 + j] = (xi0 & 0x0f) | ((xi1 & 0x0f) << 4);
            qh |= (((xi0 & 0x10) >> 4) as u32) << j;
            qh |= (((xi1 & 0x10) >> 4) as u32) << (j + QK / 2);
        }
        yb[2..6].copy_from_slice(&qh.to_le_bytes());
    }
}

pub(super) fn quantize_q5_1(x: &[f32], y: &mut [u8]) {
    for (xb, yb) in x.chunks_exact(QK).zip(y.chunks_exact_mut(24)) {
        let (min, max) = min_max(xb);
        let d = (max - min) / 31.0;
        let id = inv(d);
        put_f16(yb, 0, d);
        put_f16(yb, 2, min);
        let mut qh = 0u32;
        for j in 0..QK / 2 {
            let xi0 = ((xb[j] - min) * id + 0.5) as u8;
            let xi1 = ((xb[QK / 2 + j] - min) * id + 0.5) as u8;
            yb[8 + j] = (xi0 & 0x0f) | ((xi1 & 0x0f) << 4);
            qh |= (((xi0 & 0x10) >> 4) as u32) << j;
            qh |= (((xi1 & 0x10) >> 4) as u32) << (j + QK / 2);
        }
        yb[4..8].copy_from_slice(&qh.to_le_bytes());
    }
}

/// C `roundf` (half away from zero) for |v| <= 127 without a libm call, so activation
/// quantization vectorizes; exact because `v - trunc(v)` is exact in that range.
#[inline(always)]
fn round_q8(v: f32) -> i8 {
    let i = v as i32;
    let frac = v - i as f32;
    (if frac >= 0.5 {
        i + 1
    } else if frac <= -0.5 {
        i - 1
    } else {
        i
    }) as i8
}

#[inline(always)]
fn q8_scale(xb: &[f32]) -> (f32, f32) {
    let mut amax = 0.0f32;
    for &v in xb {
        amax = amax.max(v.abs());
    }
    let d = amax / 127.0;
    (d, inv(d))
}

pub(super) fn quantize_q8_0(x: &[f32], y: &mut [u8]) {
    for (xb, yb) in x.chunks_exact(QK).zip(y.chunks_exact_mut(34)) {
        let (d, id) = q8_scale(xb);
        put_f16(yb, 0, d);
        for (q, &v) in yb[2..].iter_mut().zip(xb) {
            *q = round_q8(v * id) as u8;
        }
    }
}

/// Q8_1 also stores `d * sum(q)`, which lets Q4_1/Q5_1 dot products fold in their block
/// minimum with one multiply.
pub(super) fn quantize_q8_1(x: &[f32], y: &mut [u8]) {
    for (xb, yb) in x.chunks_exact(QK).zip(y.chunks_exact_mut(36)) {
        let (d, id) = q8_scale(xb);
        put_f16(yb, 0, d);
        let mut sum = 0i32;
        for (q, &v) in yb[4..].iter_mut().zip(xb) {
            let qi = round_q8(v * id);
            *q = qi as u8;
            sum += qi as i32;
        }
        put_f16(yb, 2, sum as f32 * d);
    }
}

/// Activation quantizers as llama.cpp runs them on x86 (ggml-cpu's AVX2 `quantize_row_q8_0`
/// / `_q8_1`): the inverse scale is `127 / amax` rather than `1 / (amax / 127)`, and rounding
/// is half-to-even. Activations never reach a file, so matching what llama.cpp computes at
/// run time matters more here than matching its reference quantizer.
/// Round half to even for |v| <= 2^22 without a libm call: adding 1.5 * 2^23 leaves no
/// fraction bits, so the FPU's default rounding (to nearest, ties to even) does the work.
#[inline(always)]
fn round_half_even(v: f32) -> i32 {
    const MAGIC: f32 = 12_582_912.0;
    ((v + MAGIC) - MAGIC) as i32
}

fn quantize_q8_act_block(xb: &[f32], qs: &mut [u8]) -> (f32, i32) {
    let amax = xb.iter().fold(0f32, |m, v| m.max(v.abs()));
    let d = amax / 127.0;
    let id = if amax != 0.0 { 127.0 / amax } else { 0.0 };
    let mut sum = 0i32;
    for (q, &v) in qs.iter_mut().zip(xb) {
        // A no-op unless 127 / amax overflowed to infinity (amax below ~3.7e-37): then
        // v * id is ±inf and the cast saturates to ±2^31, which would overflow `sum` (found
        // by the bundle_reader fuzz target on a model of subnormal weights).
        let qi = round_half_even(v * id).clamp(-127, 127);
        *q = qi as i8 as u8;
        sum += qi;
    }
    (d, sum)
}

pub(super) fn quantize_q8_0_act(x: &[f32], y: &mut [u8]) {
    for (xb, yb) in x.chunks_exact(QK).zip(y.chunks_exact_mut(34)) {
        let (d, _) = quantize_q8_act_block(xb, &mut yb[2..]);
        put_f16(yb, 0, d);
    }
}

pub(super) fn quantize_q8_1_act(x: &[f32], y: &mut [u8]) {
    for (xb, yb) in x.chunks_exact(QK).zip(y.chunks_exact_mut(36)) {
        let (d, sum) = quantize_q8_act_block(xb, &mut yb[4..]);
        put_f16(yb, 0, d);
        put_f16(yb, 2, sum as f32 * d);
    }
}

pub(super) fn dequantize_q4_0(x: &[u8], y: &mut [f32]) {
    for (xb, yb) in x.chunks_exact(18).zip(y.chunks_exact_mut(QK)) {
        let d = f16_at(xb, 0);
        for j in 0..QK / 2 {
            let q = xb[2 + j];
            yb[j] = ((q & 0x0f) as i32 - 8) as f32 * d;
            yb[j + QK / 2] = ((q >> 4) as i32 - 8) as f32 * d;
        }
    }
}

pub(super) fn dequantize_q4_1(x: &[u8], y: &mut [f32]) {
    for (xb, yb) in x.chunks_exact(20).zip(y.chunks_exact_mut(QK)) {
        let (d, m) = (f16_at(xb, 0), f16_at(xb, 2));
        for j in 0..QK / 2 {
            let q = xb[4 + j];
            yb[j] = (q & 0x0f) as f32 * d + m;
            yb[j + QK / 2] = (q >> 4) as f32 * d + m;
        }
    }
}

#[inline(always)]
fn q5_values(qs: &[u8], qh: u32, j: usize) -> (i32, i32) {
    let xh0 = ((qh >> j) << 4) & 0x10;
    let xh1 = (qh >> (j + 12)) & 0x10;
    (
        (qs[j] as u32 & 0x0f | xh0) as i32,
        ((qs[j] as u32 >> 4) | xh1) as i32,
    )
}

pub(super) fn dequantize_q5_0(x: &[u8], y: &mut [f32]) {
    for (xb, yb) in x.chunks_exact(22).zip(y.chunks_exact_mut(QK)) {
        let d = f16_at(xb, 0);
        let qh = u32::from_le_bytes([xb[2], xb[3], xb[4], xb[5]]);
        for j in 0..QK / 2 {
            let (x0, x1) = q5_values(&xb[6..], qh, j);
            yb[j] = (x0 - 16) as f32 * d;
            yb[j + QK / 2] = (x1 - 16) as f32 * d;
        }
    }
}

pub(super) fn dequantize_q5_1(x: &[u8], y: &mut [f32]) {
    for (xb, yb) in x.chunks_exact(24).zip(y.chunks_exact_mut(QK)) {
        let (d, m) = (f16_at(xb, 0), f16_at(xb, 2));
        let qh = u32::from_le_bytes([xb[4], xb[5], xb[6], xb[7]]);
        for j in 0..QK / 2 {
            let (x0, x1) = q5_values(&xb[8..], qh, j);
            yb[j] = x0 as f32 * d + m;
            yb[j + QK / 2] = x1 as f32 * d + m;
        }
    }
}

pub(super) fn dequantize_q8_0(x: &[u8], y: &mut [f32]) {
    for (xb, yb) in x.chunks_exact(34).zip(y.chunks_exact_mut(QK)) {
        let d = f16_at(xb, 0);
        for (v, &q) in yb.iter_mut().zip(&xb[2..]) {
            *v = q as i8 as f32 * d;
        }
    }
}

pub(super) fn dequantize_q8_1(x: &[u8], y: &mut [f32]) {
    for (xb, yb) in x.chunks_exact(36).zip(y.chunks_exact_mut(QK)) {
        let d = f16_at(xb, 0);
        for (v, &q) in yb.iter_mut().zip(&xb[4..]) {
            *v = q as i8 as f32 * d;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A block whose largest magnitude is subnormal: 127 / amax is infinite. Each value still
    /// quantizes into [-127, 127] and the Q8_1 sum is theirs (it overflowed before).
    #[test]
    fn activations_of_subnormal_magnitude_quantize_in_range() {
        let mut x = [0f32; QK];
        x[0] = 1e-40;
        x[1] = -1e-40;
        x[2] = 5e-41;
        let mut qs = [0u8; QK];
        let (_, sum) = quantize_q8_act_block(&x, &mut qs);
        assert_eq!((qs[0] as i8, qs[1] as i8, qs[2] as i8), (127, -127, 127));
        assert_eq!(sum, 127);
        assert!(qs[3..].iter().all(|&q| q == 0));
    }
}
