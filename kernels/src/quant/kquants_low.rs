//! The 2- and 3-bit K-quants (Q2_K, Q3_K): 256-element super-blocks of 16 sub-blocks of 16.
//! As in `kquants`, float operations follow ggml's order exactly, because a reordered sum
//! can flip which candidate scale wins and so change the output bytes.

use super::kquants::make_qkx2_quants;
use super::{f16_at, nearest_int, put_f16, signed_absmax};
use crate::ggml_type::QK_K;

const GROUP_MAX_EPS: f32 = 1e-15;

/// Q2_K block: 16 scale bytes (low nibble scale, high nibble min), 64 bytes of 2-bit quants,
/// f16 d, f16 dmin.
const Q2K_QS: usize = 16;
const Q2K_D: usize = 80;
const Q2K_BYTES: usize = 84;
/// Q3_K block: 32 bytes of high bits, 64 bytes of low 2 bits, 12 bytes of 6-bit scales, f16 d.
const Q3K_QS: usize = 32;
const Q3K_SCALES: usize = 96;
const Q3K_D: usize = 108;
const Q3K_BYTES: usize = 110;

/// Packs four 2-bit planes the way Q2_K and Q3_K store them: byte `l` of each 32-byte group
/// holds elements l, l+32, l+64, l+96 of its 128-element half.
fn pack_2bit(l: &[u8; QK_K], qs: &mut [u8]) {
    for j in (0..QK_K).step_by(128) {
        for i in 0..32 {
            qs[j / 4 + i] =
                l[j + i] | (l[j + i + 32] << 2) | (l[j + i + 64] << 4) | (l[j + i + 96] << 6);
        }
    }
}

pub(crate) fn quantize_q2_k(x: &[f32], y: &mut [u8]) {
    const Q4SCALE: f32 = 15.0;
    for (x, b) in x.chunks_exact(QK_K).zip(y.chunks_exact_mut(Q2K_BYTES)) {
        let mut l = [0u8; QK_K];
        let mut laux = [0u8; 16];
        let mut weights = [0.0f32; 16];
        let mut mins = [0.0f32; QK_K / 16];
        let mut scales = [0.0f32; QK_K / 16];
        let (mut max_scale, mut max_min) = (0.0f32, 0.0f32);
        for j in 0..QK_K / 16 {
            let xs = &x[16 * j..16 * j + 16];
            for (w, &v) in weights.iter_mut().zip(xs) {
                *w = v.abs();
            }
            let lj = &mut l[16 * j..16 * j + 16];
            let (s, m) = make_qkx2_quants(3, xs, &weights, lj, &mut laux, -0.5, 0.1, 15, true);
            scales[j] = s;
            mins[j] = m;
            if s > max_scale {
                max_scale = s;
            }
            if m > max_min {
                max_min = m;
            }
        }
        let sc = &mut b[..16];
        if max_scale > 0.0 {
            let iscale = Q4SCALE / max_scale;
            for j in 0..16 {
                sc[j] = nearest_int(iscale * scales[j]) as u8;
            }
            put_f16(b, Q2K_D, max_scale / Q4SCALE);
        } else {
            sc.fill(0);
            put_f16(b, Q2K_D, 0.0);
        }
        if max_min > 0.0 {
            let iscale = Q4SCALE / max_min;
            for j in 0..16 {
                b[j] |= (nearest_int(iscale * mins[j]) << 4) as u8;
            }
            put_f16(b, Q2K_D + 2, max_min / Q4SCALE);
        } else {
            put_f16(b, Q2K_D + 2, 0.0);
        }
        let (d, dmin) = (f16_at(b, Q2K_D), f16_at(b, Q2K_D + 2));
        for j in 0..16 {
            let dj = d * (b[j] & 0xf) as f32;
            // A zero sub-block scale keeps the levels of the search, as ggml does.
            if dj == 0.0 {
                continue;
            }
            let dm = dmin * (b[j] >> 4) as f32;
            for ii in 0..16 {
                l[16 * j + ii] = nearest_int((x[16 * j + ii] + dm) / dj).clamp(0, 3) as u8;
            }
        }
        pack_2bit(&l, &mut b[Q2K_QS..Q2K_QS + 64]);
    }
}

pub(crate) fn dequantize_q2_k(src: &[u8], dst: &mut [f32]) {
    for (b, y) in src.chunks_exact(Q2K_BYTES).zip(dst.chunks_exact_mut(QK_K)) {
        let (d, min) = (f16_at(b, Q2K_D), f16_at(b, Q2K_D + 2));
        let mut out = 0;
        for half in 0..2 {
            let q = &b[Q2K_QS + 32 * half..Q2K_QS + 32 * half + 32];
            for shift in (0..8).step_by(2) {
                for part in 0..2 {
                    let sc = b[8 * half + shift + part];
                    let (dl, ml) = (d * (sc & 0xf) as f32, min * (sc >> 4) as f32);
                    for &qv in &q[16 * part..16 * part + 16] {
                        y[out] = dl * ((qv >> shift) & 3) as f32 - ml;
                        out += 1;
                    }
                }
            }
        }
    }
}

/// ggml's `make_q3_quants` with `do_rmse`: symmetric levels in [-nmax, nmax-1], refined by
/// coordinate descent on the weighted error. Writes `l + nmax` into `l_out`.
fn make_q3_quants_rmse(nmax: i32, x: &[f32], l_out: &mut [i8]) -> f32 {
    let max = signed_absmax(x);
    let amax = max.abs();
    if amax < GROUP_MAX_EPS {
        l_out[..x.len()].fill(0);
        return 0.0;
    }
    let iscale = -(nmax as f32) / max;
    let (mut sumlx, mut suml2) = (0.0f32, 0.0f32);
    for (i, &xi) in x.iter().enumerate() {
        let l = nearest_int(iscale * xi).clamp(-nmax, nmax - 1);
        l_out[i] = l as i8;
        let w = xi * xi;
        sumlx += w * xi * l as f32;
        suml2 += w * l as f32 * l as f32;
    }
    for _ in 0..5 {
        let mut n_changed = 0;
        for (i, &xi) in x.iter().enumerate() {
            let w = xi * xi;
            let li = l_out[i] as f32;
            let mut slx = sumlx - w * xi * li;
            if slx > 0.0 {
                let mut sl2 = suml2 - w * li * li;
                let new_l = nearest_int(xi * sl2 / slx).clamp(-nmax, nmax - 1);
                if new_l != l_out[i] as i32 {
                    slx += w * xi * new_l as f32;
                    sl2 += w * new_l as f32 * new_l as f32;
                    if sl2 > 0.0 && slx * slx * suml2 > sumlx * sumlx * sl2 {
                        l_out[i] = new_l as i8;
                        sumlx = slx;
                        suml2 = sl2;
                        n_changed += 1;
                    }
                }
            }
        }
        if n_changed == 0 {
            break;
        }
    }
    for v in l_out[..x.len()].iter_mut() {
        *v += nmax as i8;
    }
    if suml2 > 0.0 {
        sumlx / suml2
    } else {
        0.0
    }
}

/// The 6-bit scale `j` (0..16) of a Q3_K block, still offset by 32: low nibbles in bytes 0..8,
/// the two high bits of scale j in byte 8 + j%4 at bit 2*(j/4).
#[inline(always)]
pub(crate) fn q3k_scale(scales: &[u8], j: usize) -> i32 {
    let lo = if j < 8 {
        scales[j] & 0xf
    } else {
        scales[j - 8] >> 4
    };
    (lo | (((scales[8 + j % 4] >> (2 * (j / 4))) & 3) << 4)) as i32
}

pub(crate) fn quantize_q3_k(x: &[f32], y: &mut [u8]) {
    for (x, b) in x.chunks_exact(QK_K).zip(y.chunks_exact_mut(Q3K_BYTES)) {
        let mut l = [0i8; QK_K];
        let mut scales = [0.0f32; QK_K / 16];
        let (mut max_scale, mut amax) = (0.0f32, 0.0f32);
        for j in 0..QK_K / 16 {
            scales[j] =
                make_q3_quants_rmse(4, &x[16 * j..16 * j + 16], &mut l[16 * j..16 * j + 16]);
            let scale = scales[j].abs();
            if scale > amax {
                amax = scale;
                max_scale = scales[j];
            }
        }
        let sc = &mut b[Q3K_SCALES..Q3K_SCALES + 12];
        sc.fill(0);
        if max_scale != 0.0 {
            let iscale = -32.0 / max_scale;
            for (j, &s) in scales.iter().enumerate() {
                // ggml narrows to int8 before clamping; |iscale*s| <= 32 so nothing wraps.
                let l = (nearest_int(iscale * s) as i8).clamp(-32, 31) as i32 + 32;
                if j < 8 {
                    sc[j] = (l & 0xf) as u8;
                } else {
                    sc[j - 8] |= ((l & 0xf) << 4) as u8;
                }
                sc[j % 4 + 8] |= ((l >> 4) << (2 * (j / 4))) as u8;
            }
            put_f16(b, Q3K_D, 1.0 / iscale);
        } else {
            put_f16(b, Q3K_D, 0.0);
        }
        let d_all = f16_at(b, Q3K_D);
        for j in 0..QK_K / 16 {
            let d = d_all * (q3k_scale(&b[Q3K_SCALES..Q3K_SCALES + 12], j) - 32) as f32;
            if d == 0.0 {
                continue;
            }
            for ii in 0..16 {
                let q = nearest_int(x[16 * j + ii] / d).clamp(-4, 3);
                l[16 * j + ii] = (q + 4) as i8;
            }
        }
        // High bit of element j goes to hmask[j % 32], bit j / 32.
        let mut lu = [0u8; QK_K];
        b[..32].fill(0);
        for j in 0..QK_K {
            let mut v = l[j] as u8;
            if v > 3 {
                b[j % 32] |= 1 << (j / 32);
                v -= 4;
            }
            lu[j] = v;
        }
        pack_2bit(&lu, &mut b[Q3K_QS..Q3K_QS + 64]);
    }
}

pub(crate) fn dequantize_q3_k(src: &[u8], dst: &mut [f32]) {
    for (b, y) in src.chunks_exact(Q3K_BYTES).zip(dst.chunks_exact_mut(QK_K)) {
        let d_all = f16_at(b, Q3K_D);
        let scales = &b[Q3K_SCALES..Q3K_SCALES + 12];
        let hm = &b[..32];
        let mut out = 0;
        let mut is = 0;
        for half in 0..2 {
            let q = &b[Q3K_QS + 32 * half..Q3K_QS + 32 * half + 32];
            for j in 0..4 {
                let (shift, bit) = (2 * j, 4 * half + j);
                for part in 0..2 {
                    let dl = d_all * (q3k_scale(scales, is) - 32) as f32;
                    is += 1;
                    for l in 16 * part..16 * part + 16 {
                        let low = ((q[l] >> shift) & 3) as i32;
                        let high = if hm[l] & (1 << bit) != 0 { 0 } else { 4 };
                        y[out] = dl * (low - high) as f32;
                        out += 1;
                    }
                }
            }
        }
    }
}
