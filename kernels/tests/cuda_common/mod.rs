//! What the CUDA kernel tests share: opening the GPU (or saying why not), random inputs, and
//! CPU quantization round trips.

use nexus_kernels::cuda::Gpu;
use nexus_kernels::{dequantize_row, quantize_row, GgmlType};
use rand::Rng;
use rand_chacha::ChaCha8Rng;

pub fn gpu() -> Option<Gpu> {
    match Gpu::open(0) {
        Ok(g) => Some(g),
        Err(e) if std::env::var_os("NEXUS_REQUIRE_CUDA").is_none() => {
            eprintln!("skipped: {e}");
            None
        }
        Err(e) => panic!("NEXUS_REQUIRE_CUDA is set but the GPU cannot be used: {e}"),
    }
}

pub fn random(rng: &mut ChaCha8Rng, n: usize, scale: f32) -> Vec<f32> {
    (0..n).map(|_| (rng.gen::<f32>() - 0.5) * 2.0 * scale).collect()
}

pub fn quantize(ty: GgmlType, w: &[f32], rows: usize, cols: usize) -> Vec<u8> {
    let rb = ty.row_size(cols as u64).unwrap() as usize;
    let mut out = vec![0u8; rows * rb];
    for r in 0..rows {
        quantize_row(ty, &w[r * cols..(r + 1) * cols], &mut out[r * rb..(r + 1) * rb]).unwrap();
    }
    out
}

pub fn dequantize(ty: GgmlType, data: &[u8], rows: usize, cols: usize) -> Vec<f64> {
    let rb = ty.row_size(cols as u64).unwrap() as usize;
    let mut row = vec![0f32; cols];
    let mut out = Vec::with_capacity(rows * cols);
    for r in 0..rows {
        dequantize_row(ty, &data[r * rb..(r + 1) * rb], &mut row).unwrap();
        out.extend(row.iter().map(|&v| v as f64));
    }
    out
}

pub fn rel_err(got: &[f32], want: &[f64]) -> f64 {
    let num: f64 = got.iter().zip(want).map(|(&g, &w)| (g as f64 - w).powi(2)).sum();
    let den: f64 = want.iter().map(|w| w * w).sum();
    (num / den.max(1e-300)).sqrt()
}
