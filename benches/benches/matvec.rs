//! Weight-streaming throughput of the kernels' matvec/matmul on SmolLM2-135M shapes and a
//! 4096² square. Throughput is bytes of quantized weights read per second. Each product sums in
//! the order the runtime uses for that weight (`DotOrder::llama_cpp`: Q4_0 and Q4_K in the
//! order of llama.cpp's repacked rows).
//! Quick run: `cargo bench -p nexus-benches --bench matvec -- --quick`.

use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion, Throughput};
use nexus_kernels::{matmul_in, quantize_row, DotOrder, GgmlType};
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use std::time::Duration;

const TYPES: [GgmlType; 5] = [
    GgmlType::Q8_0,
    GgmlType::Q4_K,
    GgmlType::Q4_0,
    GgmlType::Q4_1,
    GgmlType::F16,
];
const SHAPES: [(usize, usize); 4] = [(576, 1536), (1536, 576), (49152, 576), (4096, 4096)];

fn weights(ty: GgmlType, rows: usize, cols: usize, rng: &mut ChaCha8Rng) -> Vec<u8> {
    let rb = ty.row_size(cols as u64).unwrap() as usize;
    let mut w = vec![0u8; rows * rb];
    let mut row = vec![0f32; cols];
    for r in 0..rows {
        row.iter_mut().for_each(|v| *v = rng.gen::<f32>() - 0.5);
        quantize_row(ty, &row, &mut w[r * rb..(r + 1) * rb]).unwrap();
    }
    w
}

fn bench(c: &mut Criterion) {
    let mut rng = ChaCha8Rng::seed_from_u64(1);
    let mut g = c.benchmark_group("matvec");
    g.warm_up_time(Duration::from_millis(300))
        .measurement_time(Duration::from_secs(1));
    for ty in TYPES {
        for (rows, cols) in SHAPES {
            if cols % ty.block_size() != 0 {
                continue; // e.g. Q4_K needs 256-multiples; ggml falls back to other types there
            }
            let w = weights(ty, rows, cols, &mut rng);
            let x: Vec<f32> = (0..cols).map(|_| rng.gen::<f32>() - 0.5).collect();
            let mut y = vec![0f32; rows];
            g.throughput(Throughput::Bytes(w.len() as u64));
            g.bench_with_input(
                BenchmarkId::new(ty.name(), format!("{rows}x{cols}")),
                &(),
                |b, _| b.iter(|| matmul_in(DotOrder::llama_cpp(ty, rows), ty, &w, rows, cols, &x, 1, &mut y).unwrap()),
            );
        }
    }
    g.finish();

    let mut g = c.benchmark_group("matmul_n64");
    g.warm_up_time(Duration::from_millis(300))
        .measurement_time(Duration::from_secs(2));
    let n = 64;
    for ty in TYPES {
        for (rows, cols) in [(576, 1536), (1536, 576)] {
            if cols % ty.block_size() != 0 {
                continue;
            }
            let w = weights(ty, rows, cols, &mut rng);
            let x: Vec<f32> = (0..n * cols).map(|_| rng.gen::<f32>() - 0.5).collect();
            let mut y = vec![0f32; n * rows];
            g.throughput(Throughput::Bytes((w.len() * n) as u64));
            g.bench_with_input(
                BenchmarkId::new(ty.name(), format!("{rows}x{cols}")),
                &(),
                |b, _| b.iter(|| matmul_in(DotOrder::llama_cpp(ty, rows), ty, &w, rows, cols, &x, n, &mut y).unwrap()),
            );
        }
    }
    g.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
