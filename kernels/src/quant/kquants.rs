//! K-quant super-blocks (256 elements). The scale searches (`make_qkx2_quants`,
//! `make_qx_quants`) replicate ggml's float operation order exactly: a reordered sum can flip
//! which candidate scale wins and so change the output bytes.

use super::{f16_at, f32_at, nearest_int, put_f16, signed_absmax};
use crate::ggml_type::QK_K;

const GROUP_MAX_EPS: f32 = 1e-15;

/// Byte offsets inside a Q8_K block: f32 d, 256 i8 quants, 16 i16 sums of 16 quants each.
pub(crate) const Q8K_QS: usize = 4;
pub(crate) const Q8K_BSUMS: usize = 4 + QK_K;

/// Asymmetric (scale, min) search over `x.len()` values; returns (scale, -min) like ggml's
/// `make_qkx2_quants` with its `the_min` out-parameter. `use_mad` scores candidates by
/// absolute instead of squared error (Q2_K's choice).
#[allow(clippy::too_many_arguments)]
pub(super) fn make_qkx2_quants(
    nmax: i32,
    x: &[f32],
    weights: &[f32],
    l_out: &mut [u8],
    laux: &mut [u8],
    rmin: f32,
    rdelta: f32,
    nstep: i32,
    use_mad: bool,
) -> (f32, f32) {
    let n = x.len();
    let mut min = x[0];
    let mut max = x[0];
    let mut sum_w = weights[0];
    let mut sum_x = sum_w * x[0];
    for i in 1..n {
        if x[i] < min {
            min = x[i];
        }
        if x[i] > max {
            max = x[i];
        }
        let w = weights[i];
        sum_w += w;
        sum_x += w * x[i];
    }
    if min > 0.0 {
        min = 0.0;
    }
    if max == min {
        l_out[..n].fill(0);
        return (0.0, -min);
    }
    let mut iscale = nmax as f32 / (max - min);
    let mut scale = 1.0 / iscale;
    let mut best_error = 0.0f32;
    for i in 0..n {
        let l = nearest_int(iscale * (x[i] - min)).clamp(0, nmax);
        l_out[i] = l as u8;
        let diff = scale * l as f32 + min - x[i];
        let diff = if use_mad { diff.abs() } else { diff * diff };
        best_error += weights[i] * diff;
    }
    for is in 0..=nstep {
        iscale = (rmin + rdelta * is as f32 + nmax as f32) / (max - min);
        let (mut sum_l, mut sum_l2, mut sum_xl) = (0.0f32, 0.0f32, 0.0f32);
        for i in 0..n {
            let l = nearest_int(iscale * (x[i] - min)).clamp(0, nmax);
            laux[i] = l as u8;
            let w = weights[i];
            let lf = l as f32;
            sum_l += w * lf;
            sum_l2 += w * lf * lf;
            sum_xl += w * lf * x[i];
        }
        let d = sum_w * sum_l2 - sum_l * sum_l;
        if d > 0.0 {
            let mut this_scale = (sum_w * sum_xl - sum_x * sum_l) / d;
            let mut this_min = (sum_l2 * sum_x - sum_l * sum_xl) / d;
            if this_min > 0.0 {
                this_min = 0.0;
                this_scale = sum_xl / sum_l2;
            }
            let mut cur_error = 0.0f32;
            for i in 0..n {
                let diff = this_scale * laux[i] as f32 + this_min - x[i];
                let diff = if use_mad { diff.abs() } else { diff * diff };
                cur_error += weights[i] * diff;
            }
            if cur_error < best_error {
                l_out[..n].copy_from_slice(&laux[..n]);
                best_error = cur_error;
                scale = this_scale;
                min = this_min;
            }
        }
    }
    (scale, -min)
}

/// Symmetric scale search of ggml's `make_qx_quants` for `rmse_type == 1` without importance
/// weights (the only variant the reference Q6_K quantizer uses). Writes `l + nmax` into `l_out`.
fn make_qx_quants_rmse1(nmax: i32, x: &[f32], l_out: &mut [i8]) -> f32 {
    let n = x.len();
    let max = signed_absmax(x);
    let amax = max.abs();
    if amax < GROUP_MAX_EPS {
        l_out[..n].fill(0);
        return 0.0;
    }
    let mut iscale = -(nmax as f32) / max;
    let (mut sumlx, mut suml2) = (0.0f32, 0.0f32);
    for i in 0..n {
        let l = nearest_int(iscale * x[i]).clamp(-nmax, nmax - 1);
        l_out[i] = (l + nmax) as i8;
        let w = x[i] * x[i];
        sumlx += w * x[i] * l as f32;
        suml2 += w * l as f32 * l as f32;
    }
    let mut scale = if suml2 != 0.0 { sumlx / suml2 } else { 0.0 };
    let mut best = scale * sumlx;
    for is in -9i32..=9 {
        if is == 0 {
            continue;
        }
        iscale = -(nmax as f32 + 0.1f32 * is as f32) / max;
        sumlx = 0.0;
        suml2 = 0.0;
        for &xi in x {
            let l = nearest_int(iscale * xi).clamp(-nmax, nmax - 1);
            let w = xi * xi;
            sumlx += w * xi * l as f32;
            suml2 += w * l as f32 * l as f32;
        }
        if suml2 > 0.0 && sumlx * sumlx > best * suml2 {
            for i in 0..n {
                let l = nearest_int(iscale * x[i]).clamp(-nmax, nmax - 1);
                l_out[i] = (nmax + l) as i8;
            }
            scale = sumlx / suml2;
            best = scale * sumlx;
        }
    }
    scale
}

/// The 6-bit scale/min packing shared by Q4_K and Q5_K (ggml's `get_scale_min_k4`).
#[inline(always)]
pub(crate) fn scale_min_k4(j: usize, q: &[u8]) -> (u8, u8) {
    if j < 4 {
        (q[j] & 63, q[j + 4] & 63)
    } else {
        (
            (q[j + 4] & 0xf) | ((q[j - 4] >> 6) << 4),
            (q[j + 4] >> 4) | ((q[j] >> 6) << 4),
        )
    }
}

/// Shared front half of Q4_K/Q5_K: per-32 (scale, min) search, 6-bit packing into
/// `scales` (12 bytes), and final levels in `l`. Returns the f16-rounded (d, dmin) header.
fn quantize_scale_min_block(
    x: &[f32],
    nmax: i32,
    rmin: f32,
    nstep: i32,
    l: &mut [u8; QK_K],
    scales_out: &mut [u8],
    header: &mut [u8],
) {
    let mut laux = [0u8; 32];
    let mut weights = [0.0f32; 32];
    let mut mins = [0.0f32; QK_K / 32];
    let mut scales = [0.0f32; QK_K / 32];
    let (mut max_scale, mut max_min) = (0.0f32, 0.0f32);
    for j in 0..QK_K / 32 {
        let xs = &x[32 * j..32 * j + 32];
        let mut sum_x2 = 0.0f32;
        for &v in xs {
            sum_x2 += v * v;
        }
        let av_x = (sum_x2 / 32.0).sqrt();
        for (w, &v) in weights.iter_mut().zip(xs) {
            *w = av_x + v.abs();
        }
        let lj = &mut l[32 * j..32 * j + 32];
        let (s, m) = make_qkx2_quants(nmax, xs, &weights, lj, &mut laux, rmin, 0.1, nstep, false);
        scales[j] = s;
        mins[j] = m;
        if s > max_scale {
            max_scale = s;
        }
        if m > max_min {
            max_min = m;
        }
    }
    let inv_scale = if max_scale > 0.0 {
        63.0 / max_scale
    } else {
        0.0
    };
    let inv_min = if max_min > 0.0 { 63.0 / max_min } else { 0.0 };
    for j in 0..QK_K / 32 {
        // Truncation to u8 before the MIN matches ggml's `uint8_t ls = nearest_int(..)`.
        let ls = (nearest_int(inv_scale * scales[j]) as u8).min(63);
        let lm = (nearest_int(inv_min * mins[j]) as u8).min(63);
        if j < 4 {
            scales_out[j] = ls;
            scales_out[j + 4] = lm;
        } else {
            scales_out[j + 4] = (ls & 0xf) | ((lm & 0xf) << 4);
            scales_out[j - 4] |= (ls >> 4) << 6;
            scales_out[j] |= (lm >> 4) << 6;
        }
    }
    put_f16(header, 0, max_scale / 63.0);
    put_f16(header, 2, max_min / 63.0);
    let (d_all, dmin_all) = (f16_at(header, 0), f16_at(header, 2));
    for j in 0..QK_K / 32 {
        let (sc, m) = scale_min_k4(j, scales_out);
        let d = d_all * sc as f32;
        if d == 0.0 {
            continue;
        }
        let dm = dmin_all * m as f32;
        for ii in 0..32 {
            l[32 * j + ii] = nearest_int((x[32 * j + ii] + dm) / d).clamp(0, nmax) as u8;
        }
    }
}

pub(super) fn quantize_q4_k(x: &[f32], y: &mut [u8]) {
    for (xb, yb) in x.chunks_exact(QK_K).zip(y.chunks_exact_mut(144)) {
        let mut l = [0u8; QK_K];
        let (header, rest) = yb.split_at_mut(4);
        let (scales, qs) = rest.split_at_mut(12);
        quantize_scale_min_block(xb, 15, -1.0, 20, &mut l, scales, header);
        for (c, q) in qs.chunks_exact_mut(32).enumerate() {
            let j = 64 * c;
            for i in 0..32 {
                q[i] = l[j + i] | (l[j + i + 32] << 4);
            }
        }
    }
}

pub(super) fn quantize_q5_k(x: &[f32], y: &mut [u8]) {
    for (xb, yb) in x.chunks_exact(QK_K).zip(y.chunks_exact_mut(176)) {
        let mut l = [0u8; QK_K];
        let (header, rest) = yb.split_at_mut(4);
        let (scales, rest) = rest.split_at_mut(12);
        let (qh, ql) = rest.split_at_mut(32);
        quantize_scale_min_block(xb, 31, -0.5, 15, &mut l, scales, header);
        qh.fill(0);
        let (mut m1, mut m2) = (1u8, 2u8);
        for (c, q) in ql.chunks_exact_mut(32).enumerate() {
            let n = 64 * c;
            for j in 0..32 {
                let mut l1 = l[n + j];
                if l1 > 15 {
                    l1 -= 16;
                    qh[j] |= m1;
                }
                let mut l2 = l[n + j + 32];
                if l2 > 15 {
                    l2 -= 16;
                    qh[j] |= m2;
                }
                q[j] = l1 | (l2 << 4);
            }
            m1 <<= 2;
            m2 <<= 2;
        }
    }
}

pub(super) fn quantize_q6_k(x: &[f32], y: &mut [u8]) {
    for (xb, yb) in x.chunks_exact(QK_K).zip(y.chunks_exact_mut(210)) {
        let mut l = [0i8; QK_K];
        let mut scales = [0.0f32; QK_K / 16];
        let (mut max_scale, mut max_abs_scale) = (0.0f32, 0.0f32);
        for ib in 0..QK_K / 16 {
            let s = make_qx_quants_rmse1(32, &xb[16 * ib..16 * ib + 16], &mut l[16 * ib..]);
            scales[ib] = s;
            if s.abs() > max_abs_scale {
                max_abs_scale = s.abs();
                max_scale = s;
            }
        }
        yb.fill(0);
        if max_abs_scale < GROUP_MAX_EPS {
            continue;
        }
        let iscale = -128.0 / max_scale;
        put_f16(yb, 208, 1.0 / iscale);
        for ib in 0..QK_K / 16 {
            yb[192 + ib] = nearest_int(iscale * scales[ib]).min(127) as i8 as u8;
        }
        let d_all = f16_at(yb, 208);
        for j in 0..QK_K / 16 {
            let d = d_all * (yb[192 + j] as i8) as f32;
            if d == 0.0 {
                continue;
            }
            for ii in 0..16 {
                l[16 * j + ii] = (nearest_int(xb[16 * j + ii] / d).clamp(-32, 31) + 32) as i8;
            }
        }
        let (ql, rest) = yb.split_at_mut(128);
        let qh = &mut rest[..64];
        for h in 0..2 {
            let (j, ql, qh) = (128 * h, &mut ql[64 * h..], &mut qh[32 * h..]);
            for i in 0..32 {
                let q = |k: usize| l[j + i + 32 * k] as u8;
                ql[i] = (q(0) & 0xf) | ((q(2) & 0xf) << 4);
                ql[i + 32] = (q(1) & 0xf) | ((q(3) & 0xf) << 4);
                qh[i] = (q(0) >> 4) | ((q(1) >> 4) << 2) | ((q(2) >> 4) << 4) | ((q(3) >> 4) << 6);
            }
        }
    }
}

/// Q8_K is the activation format for K-quant dot products; `bsums` let the Q4_K/Q5_K minimum
/// terms be applied per 16 values without touching the quants again.
pub(crate) fn quantize_q8_k(x: &[f32], y: &mut [u8]) {
    for (xb, yb) in x.chunks_exact(QK_K).zip(y.chunks_exact_mut(292)) {
        let max = signed_absmax(xb);
        let amax = max.abs();
        if amax == 0.0 {
            yb.fill(0);
            continue;
        }
        let iscale = -127.0 / max;
        for (q, &v) in yb[Q8K_QS..Q8K_BSUMS].iter_mut().zip(xb) {
            *q = nearest_int(iscale * v).min(127) as i8 as u8;
        }
        for j in 0..QK_K / 16 {
            let qs = &yb[Q8K_QS + 16 * j..Q8K_QS + 16 * j + 16];
            let sum: i32 = qs.iter().map(|&q| q as i8 as i32).sum();
            let o = Q8K_BSUMS + 2 * j;
            yb[o..o + 2].copy_from_slice(&(sum as i16).to_le_bytes());
        }
        yb[..4].copy_from_slice(&(1.0 / iscale).to_le_bytes());
    }
}

pub(super) fn dequantize_q4_k(x: &[u8], y: &mut [f32]) {
    for (xb, yb) in x.chunks_exact(144).zip(y.chunks_exact_mut(QK_K)) {
        let (d, min) = (f16_at(xb, 0), f16_at(xb, 2));
        let scales = &xb[4..16];
        for c in 0..4 {
            let q = &xb[16 + 32 * c..16 + 32 * c + 32];
            let (sc1, m1) = scale_min_k4(2 * c, scales);
            let (sc2, m2) = scale_min_k4(2 * c + 1, scales);
            let (d1, m1) = (d * sc1 as f32, min * m1 as f32);
            let (d2, m2) = (d * sc2 as f32, min * m2 as f32);
            let out = &mut yb[64 * c..64 * c + 64];
            for l in 0..32 {
                out[l] = d1 * (q[l] & 0xf) as f32 - m1;
                out[l + 32] = d2 * (q[l] >> 4) as f32 - m2;
            }
        }
    }
}

pub(super) fn dequantize_q5_k(x: &[u8], y: &mut [f32]) {
    for (xb, yb) in x.chunks_exact(176).zip(y.chunks_exact_mut(QK_K)) {
        let (d, min) = (f16_at(xb, 0), f16_at(xb, 2));
        let scales = &xb[4..16];
        let qh = &xb[16..48];
        let (mut u1, mut u2) = (1u8, 2u8);
        for c in 0..4 {
            let ql = &xb[48 + 32 * c..48 + 32 * c + 32];
            let (sc1, m1) = scale_min_k4(2 * c, scales);
            let (sc2, m2) = scale_min_k4(2 * c + 1, scales);
            let (d1, m1) = (d * sc1 as f32, min * m1 as f32);
            let (d2, m2) = (d * sc2 as f32, min * m2 as f32);
            let out = &mut yb[64 * c..64 * c + 64];
            for l in 0..32 {
                let h1 = if qh[l] & u1 != 0 { 16 } else { 0 };
                let h2 = if qh[l] & u2 != 0 { 16 } else { 0 };
                out[l] = d1 * ((ql[l] & 0xf) + h1) as f32 - m1;
                out[l + 32] = d2 * ((ql[l] >> 4) + h2) as f32 - m2;
            }
            u1 <<= 2;
            u2 <<= 2;
        }
    }
}

pub(super) fn dequantize_q6_k(x: &[u8], y: &mut [f32]) {
    for (xb, yb) in x.chunks_exact(210).zip(y.chunks_exact_mut(QK_K)) {
        let d = f16_at(xb, 208);
        for h in 0..2 {
            let ql = &xb[64 * h..64 * h + 64];
            let qh = &xb[128 + 32 * h..128 + 32 * h + 32];
            let sc = &xb[192 + 8 * h..192 + 8 * h + 8];
            let out = &mut yb[128 * h..128 * h + 128];
            for l in 0..32 {
                let is = l / 16;
                let q1 = ((ql[l] & 0xf) | ((qh[l] & 3) << 4)) as i32 - 32;
                let q2 = ((ql[l + 32] & 0xf) | (((qh[l] >> 2) & 3) << 4)) as i32 - 32;
                let q3 = ((ql[l] >> 4) | (((qh[l] >> 4) & 3) << 4)) as i32 - 32;
                let q4 = ((ql[l + 32] >> 4) | (((qh[l] >> 6) & 3) << 4)) as i32 - 32;
                let s = |k: usize| d * (sc[is + k] as i8) as f32;
                out[l] = s(0) * q1 as f32;
                out[l + 32] = s(2) * q2 as f32;
                out[l + 64] = s(4) * q3 as f32;
                out[l + 96] = s(6) * q4 as f32;
            }
        }
    }
}

pub(super) fn dequantize_q8_k(x: &[u8], y: &mut [f32]) {
    for (xb, yb) in x.chunks_exact(292).zip(y.chunks_exact_mut(QK_K)) {
        let d = f32_at(xb, 0);
        for (v, &q) in yb.iter_mut().zip(&xb[Q8K_QS..Q8K_BSUMS]) {
            *v = d * q as i8 as f32;
        }
    }
}
