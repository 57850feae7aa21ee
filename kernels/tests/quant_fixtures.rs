//! Byte identity with ggml's reference quantizers, on fixtures written by
//! scripts/quant_fixtures/gen.sh.

use nexus_kernels::{dequantize_row, quantize_row, GgmlType};
use std::path::PathBuf;

struct Fixture {
    ty: GgmlType,
    rows: usize,
    cols: usize,
    row_bytes: usize,
    input: Vec<f32>,
    quant: Vec<u8>,
    dequant: Vec<f32>,
}

fn u32_at(b: &[u8], o: usize) -> usize {
    u32::from_le_bytes(b[o..o + 4].try_into().unwrap()) as usize
}

fn f32s(b: &[u8]) -> Vec<f32> {
    b.chunks_exact(4)
        .map(|c| f32::from_le_bytes(c.try_into().unwrap()))
        .collect()
}

fn load(name: &str) -> Fixture {
    let path = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("../tests/fixtures/quant")
        .join(format!("{name}.bin"));
    let b = std::fs::read(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    assert_eq!(&b[..4], b"NXQF");
    assert_eq!(u32_at(&b, 4), 1);
    let ty = GgmlType::from_u32(u32_at(&b, 8) as u32).unwrap();
    assert_eq!(ty.name(), name);
    let (rows, cols, row_bytes) = (u32_at(&b, 12), u32_at(&b, 16), u32_at(&b, 20));
    assert_eq!(
        ty.row_size(cols as u64),
        Some(row_bytes as u64),
        "{name} row size"
    );
    let n = rows * cols;
    let q0 = 24 + 4 * n;
    let d0 = q0 + rows * row_bytes;
    assert_eq!(b.len(), d0 + 4 * n);
    Fixture {
        ty,
        rows,
        cols,
        row_bytes,
        input: f32s(&b[24..q0]),
        quant: b[q0..d0].to_vec(),
        dequant: f32s(&b[d0..]),
    }
}

fn check(name: &str) {
    let f = load(name);
    for r in 0..f.rows {
        let x = &f.input[r * f.cols..(r + 1) * f.cols];
        let want = &f.quant[r * f.row_bytes..(r + 1) * f.row_bytes];
        let mut got = vec![0u8; f.row_bytes];
        quantize_row(f.ty, x, &mut got).unwrap();
        if let Some(i) = got.iter().zip(want).position(|(a, b)| a != b) {
            panic!(
                "{name} row {r}: first differing byte {i}: ours {} ggml {}",
                got[i], want[i]
            );
        }
        let mut deq = vec![0f32; f.cols];
        dequantize_row(f.ty, want, &mut deq).unwrap();
        let want_deq = &f.dequant[r * f.cols..(r + 1) * f.cols];
        for (i, (a, b)) in deq.iter().zip(want_deq).enumerate() {
            assert_eq!(
                a.to_bits(),
                b.to_bits(),
                "{name} row {r} dequant elem {i}: {a} vs {b}"
            );
        }
        // Same bytes, so same round-trip error as ggml; still assert it is sane.
        let err: f64 = x
            .iter()
            .zip(&deq)
            .map(|(a, b)| ((a - b) as f64).powi(2))
            .sum();
        let norm: f64 = x.iter().map(|a| (*a as f64).powi(2)).sum();
        // Two bits per weight cannot reach the 5% the other types meet on gaussian input.
        let bound = if f.ty == GgmlType::Q2_K { 0.12 } else { 0.05 };
        assert!(
            err <= norm * bound + 1e-12,
            "{name} row {r}: rel err {}",
            err / norm
        );
    }
}

macro_rules! fixture_tests {
    ($($t:ident => $name:literal),* $(,)?) => {
        $(#[test] fn $t() { check($name); })*
    };
}

fixture_tests! {
    f32 => "f32", f16 => "f16", bf16 => "bf16",
    q4_0 => "q4_0", q4_1 => "q4_1", q5_0 => "q5_0", q5_1 => "q5_1",
    q8_0 => "q8_0", q8_1 => "q8_1",
    q2_k => "q2_K", q3_k => "q3_K",
    q4_k => "q4_K", q5_k => "q5_K", q6_k => "q6_K", q8_k => "q8_K",
}

#[test]
fn bad_sizes_are_errors() {
    let mut dst = vec![0u8; 34];
    assert!(quantize_row(GgmlType::Q8_0, &[0.0; 31], &mut dst).is_err());
    assert!(quantize_row(GgmlType::Q8_0, &[0.0; 64], &mut dst).is_err());
    assert!(dequantize_row(GgmlType::Q8_0, &dst[..33], &mut [0.0; 32]).is_err());
    assert!(quantize_row(GgmlType::IQ2_XXS, &[0.0; 256], &mut [0u8; 66]).is_err());
}
