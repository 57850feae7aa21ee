//! The speech decoder's convolutions at their real shapes (Piper en_US-joe-medium, one
//! 306-frame sentence: T = 306, 256·T samples), at 1 and 2 threads. Throughput is FLOPs
//! (2 per multiply-add), so criterion's "elem/s" reads as FLOP/s.
//! Quick run: `cargo bench -p nexus-benches --bench conv -- --quick`.

use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion, Throughput};
use nexus_kernels::conv::{
    conv1d, conv1d_out_len, conv_transpose1d, conv_transpose1d_out_len, ConvParams,
};
use nexus_kernels::gemm::sgemm;
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use std::time::Duration;

const T: usize = 306;

struct Case {
    name: &'static str,
    p: ConvParams,
    len: usize,
    transposed: bool,
}

fn conv(
    name: &'static str,
    c_in: usize,
    c_out: usize,
    kernel: usize,
    dilation: usize,
    len: usize,
) -> Case {
    let padding = dilation * (kernel - 1) / 2;
    let p = ConvParams {
        c_in,
        c_out,
        kernel,
        stride: 1,
        dilation,
        padding,
        groups: 1,
    };
    Case {
        name,
        p,
        len,
        transposed: false,
    }
}

fn up(
    name: &'static str,
    c_in: usize,
    c_out: usize,
    kernel: usize,
    stride: usize,
    len: usize,
) -> Case {
    let padding = (kernel - stride) / 2;
    let p = ConvParams {
        c_in,
        c_out,
        kernel,
        stride,
        dilation: 1,
        padding,
        groups: 1,
    };
    Case {
        name,
        p,
        len,
        transposed: true,
    }
}

fn cases() -> Vec<Case> {
    vec![
        conv("conv_pre_192to256_k7", 192, 256, 7, 1, T),
        up("ups0_256to128_k16s8", 256, 128, 16, 8, T),
        conv("stage1_128_k7d3", 128, 128, 7, 3, 8 * T),
        up("ups1_128to64_k16s8", 128, 64, 16, 8, 8 * T),
        conv("stage2_64_k5d2", 64, 64, 5, 2, 64 * T),
        up("ups2_64to32_k8s4", 64, 32, 8, 4, 64 * T),
        conv("stage3_32_k7d3", 32, 32, 7, 3, 256 * T),
        conv("stage3_32_k3d1", 32, 32, 3, 1, 256 * T),
        conv("conv1x1_192to384", 192, 384, 1, 1, T),
    ]
}

fn rand_vec(rng: &mut ChaCha8Rng, n: usize) -> Vec<f32> {
    (0..n).map(|_| rng.gen_range(-1.0f32..1.0)).collect()
}

fn bench(c: &mut Criterion) {
    let mut rng = ChaCha8Rng::seed_from_u64(3);
    for threads in [1usize, 2] {
        let pool = rayon::ThreadPoolBuilder::new()
            .num_threads(threads)
            .build()
            .unwrap();
        let mut g = c.benchmark_group(format!("conv_t{threads}"));
        g.warm_up_time(Duration::from_millis(500))
            .measurement_time(Duration::from_secs(2));
        g.sample_size(10);
        for case in cases() {
            let p = case.p;
            let x = rand_vec(&mut rng, p.c_in * case.len);
            let w = rand_vec(&mut rng, p.c_in * p.c_out * p.kernel);
            let b = rand_vec(&mut rng, p.c_out);
            let (l_out, macs) = if case.transposed {
                (
                    conv_transpose1d_out_len(case.len, &p),
                    p.c_in * p.c_out * p.kernel * case.len,
                )
            } else {
                let l = conv1d_out_len(case.len, &p);
                (l, p.c_in * p.c_out * p.kernel * l)
            };
            let mut y = vec![0f32; p.c_out * l_out];
            g.throughput(Throughput::Elements(2 * macs as u64));
            g.bench_function(
                BenchmarkId::new(case.name, format!("L{}", case.len)),
                |bch| {
                    bch.iter(|| {
                        pool.install(|| {
                            if case.transposed {
                                conv_transpose1d(&x, case.len, &w, Some(&b), &p, &mut y).unwrap()
                            } else {
                                conv1d(&x, case.len, &w, Some(&b), &p, &mut y).unwrap()
                            }
                        })
                    })
                },
            );
        }
        // Square GEMM, the shape of the OpenBLAS reference figure (scaled down to 1024³).
        let n = 1024;
        let a = rand_vec(&mut rng, n * n);
        let bm = rand_vec(&mut rng, n * n);
        let mut cm = vec![0f32; n * n];
        g.throughput(Throughput::Elements(2 * (n * n * n) as u64));
        g.bench_function(BenchmarkId::new("sgemm", "1024"), |bch| {
            bch.iter(|| pool.install(|| sgemm(n, n, n, &a, n, &bm, n, &mut cm, n, false)))
        });
        g.finish();
    }
}

criterion_group!(benches, bench);
criterion_main!(benches);
