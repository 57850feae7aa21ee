//! sgemm, conv1d and conv_transpose1d against float64 reference loops written here from the
//! PyTorch definitions, on both instruction sets, plus thread-count determinism and size errors.
//!
//! Tolerance: |y − ref| ≤ 1e-5 · (|bias| + Σ|w·x|) + 1e-30 per element, i.e. relative to the
//! magnitude of the terms summed (f32 rounding of a sum of n terms is about n·2⁻²⁴ of it in
//! the worst case, far less in practice; these sums have up to a few thousand terms).

use nexus_kernels::conv::{
    conv1d, conv1d_out_len, conv1d_with, conv_transpose1d, conv_transpose1d_out_len,
    conv_transpose1d_with, ConvParams,
};
use nexus_kernels::gemm::{sgemm, sgemm_checked, sgemm_with};
use nexus_kernels::simd::{available, Isa};
use nexus_kernels::KernelError;
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;

const TOL: f64 = 1e-5;

/// Every instruction set this CPU runs; says which it cannot (so a run on a CPU without
/// AVX-512 shows that path went unchecked instead of passing silently).
fn isas() -> Vec<Isa> {
    [Isa::Scalar, Isa::Avx2, Isa::Avx512]
        .into_iter()
        .filter(|&i| {
            let ok = available(i);
            if !ok {
                println!("skipped: {i:?} is not available on this CPU");
            }
            ok
        })
        .collect()
}

fn rand_vec(rng: &mut ChaCha8Rng, n: usize) -> Vec<f32> {
    (0..n).map(|_| rng.gen_range(-1.0f32..1.0)).collect()
}

/// Reference value and the magnitude bound of its terms.
#[derive(Clone, Copy)]
struct RefVal {
    v: f64,
    mag: f64,
}

fn check(what: &str, got: &[f32], want: &[RefVal]) {
    assert_eq!(got.len(), want.len(), "{what}: length");
    for (i, (&g, r)) in got.iter().zip(want).enumerate() {
        let err = (g as f64 - r.v).abs();
        assert!(
            err <= TOL * r.mag + 1e-30,
            "{what}: element {i}: got {g}, want {} (term magnitude {})",
            r.v,
            r.mag
        );
    }
}

fn ref_conv1d(
    x: &[f32],
    len: usize,
    w: &[f32],
    bias: Option<&[f32]>,
    p: &ConvParams,
) -> Vec<RefVal> {
    let l_out = (len + 2 * p.padding - p.dilation * (p.kernel - 1) - 1) / p.stride + 1;
    let (cin_g, cout_g) = (p.c_in / p.groups, p.c_out / p.groups);
    let mut y = Vec::with_capacity(p.c_out * l_out);
    for o in 0..p.c_out {
        let g = o / cout_g;
        for t in 0..l_out {
            let b = bias.map_or(0.0, |b| b[o] as f64);
            let (mut v, mut mag) = (b, b.abs());
            for ii in 0..cin_g {
                let i = g * cin_g + ii;
                for j in 0..p.kernel {
                    let pos = (t * p.stride + j * p.dilation) as isize - p.padding as isize;
                    if pos >= 0 && (pos as usize) < len {
                        let term = w[(o * cin_g + ii) * p.kernel + j] as f64
                            * x[i * len + pos as usize] as f64;
                        v += term;
                        mag += term.abs();
                    }
                }
            }
            y.push(RefVal { v, mag });
        }
    }
    y
}

fn ref_conv_transpose1d(
    x: &[f32],
    len: usize,
    w: &[f32],
    bias: Option<&[f32]>,
    p: &ConvParams,
) -> Vec<RefVal> {
    let l_out = (len - 1) * p.stride + p.dilation * (p.kernel - 1) + 1 - 2 * p.padding;
    let mut y: Vec<RefVal> = (0..p.c_out * l_out)
        .map(|e| {
            let b = bias.map_or(0.0, |b| b[e / l_out] as f64);
            RefVal { v: b, mag: b.abs() }
        })
        .collect();
    for i in 0..p.c_in {
        for o in 0..p.c_out {
            for t in 0..len {
                for j in 0..p.kernel {
                    let pos = (t * p.stride + j * p.dilation) as isize - p.padding as isize;
                    if pos >= 0 && (pos as usize) < l_out {
                        let term =
                            w[(i * p.c_out + o) * p.kernel + j] as f64 * x[i * len + t] as f64;
                        let r = &mut y[o * l_out + pos as usize];
                        r.v += term;
                        r.mag += term.abs();
                    }
                }
            }
        }
    }
    y
}

#[allow(clippy::too_many_arguments)]
fn ref_gemm(
    m: usize,
    n: usize,
    k: usize,
    a: &[f32],
    lda: usize,
    b: &[f32],
    ldb: usize,
    c0: Option<&[f32]>,
    ldc: usize,
) -> Vec<RefVal> {
    let mut out = Vec::with_capacity(m * n);
    for i in 0..m {
        for j in 0..n {
            let init = c0.map_or(0.0, |c| c[i * ldc + j] as f64);
            let (mut v, mut mag) = (init, init.abs());
            for kk in 0..k {
                let term = a[i * lda + kk] as f64 * b[kk * ldb + j] as f64;
                v += term;
                mag += term.abs();
            }
            out.push(RefVal { v, mag });
        }
    }
    out
}

fn params(
    c_in: usize,
    c_out: usize,
    kernel: usize,
    stride: usize,
    dilation: usize,
    padding: usize,
    groups: usize,
) -> ConvParams {
    ConvParams {
        c_in,
        c_out,
        kernel,
        stride,
        dilation,
        padding,
        groups,
    }
}

#[test]
fn sgemm_matches_reference() {
    let mut rng = ChaCha8Rng::seed_from_u64(7);
    // (m, n, k, extra leading-dimension padding): edges of every tile size, k blocks > 1,
    // shapes large enough to be split over tasks.
    let shapes = [
        (1, 1, 1, 0),
        (3, 5, 7, 2),
        (4, 24, 16, 0),
        (5, 25, 17, 3),
        (13, 70, 1, 1),
        (37, 53, 300, 0),
        (64, 500, 257, 5),
        (130, 97, 600, 0),
        (2, 3000, 40, 0),
    ];
    for isa in isas() {
        for &(m, n, k, pad) in &shapes {
            let (lda, ldb, ldc) = (k + pad, n + pad, n + 2 * pad);
            let a = rand_vec(&mut rng, m * lda);
            let b = rand_vec(&mut rng, k * ldb);
            let c0 = rand_vec(&mut rng, m * ldc);
            let mut c = vec![f32::NAN; m * ldc];
            sgemm_with(isa, m, n, k, &a, lda, &b, ldb, &mut c, ldc, false).unwrap();
            let got: Vec<f32> = (0..m)
                .flat_map(|i| c[i * ldc..i * ldc + n].to_vec())
                .collect();
            check(
                &format!("{isa:?} sgemm {m}x{n}x{k}"),
                &got,
                &ref_gemm(m, n, k, &a, lda, &b, ldb, None, ldc),
            );
            for i in 0..m {
                assert!(
                    c[i * ldc + n..(i + 1) * ldc].iter().all(|v| v.is_nan()),
                    "wrote past n"
                );
            }
            let mut c = c0.clone();
            sgemm_with(isa, m, n, k, &a, lda, &b, ldb, &mut c, ldc, true).unwrap();
            let got: Vec<f32> = (0..m)
                .flat_map(|i| c[i * ldc..i * ldc + n].to_vec())
                .collect();
            let want = ref_gemm(m, n, k, &a, lda, &b, ldb, Some(&c0), ldc);
            check(&format!("{isa:?} sgemm+= {m}x{n}x{k}"), &got, &want);
        }
    }
    // k = 0: overwrite gives zeros, accumulate leaves C alone.
    let mut c = vec![3.0f32; 6];
    sgemm(2, 3, 0, &[], 0, &[], 3, &mut c, 3, true);
    assert_eq!(c, vec![3.0; 6]);
    sgemm(2, 3, 0, &[], 0, &[], 3, &mut c, 3, false);
    assert_eq!(c, vec![0.0; 6]);
}

#[test]
fn conv1d_matches_reference() {
    let mut rng = ChaCha8Rng::seed_from_u64(11);
    // (c_in, c_out, kernel, stride, dilation, padding, groups, len)
    let cases = [
        (1, 1, 1, 1, 1, 0, 1, 1),
        (3, 5, 3, 1, 1, 1, 1, 1),
        (7, 9, 5, 1, 2, 4, 1, 3),
        (5, 11, 7, 1, 3, 9, 1, 2),
        (13, 6, 7, 1, 12, 36, 1, 40),
        (10, 3, 16, 4, 1, 7, 1, 33),
        (6, 10, 8, 8, 1, 0, 1, 64),
        (9, 17, 1, 1, 1, 0, 1, 101),
        (17, 33, 3, 1, 6, 6, 1, 250),
        (12, 8, 3, 2, 1, 1, 4, 21),
        (33, 33, 3, 1, 1, 1, 33, 50),
        (20, 20, 3, 1, 3, 3, 20, 7),
        (19, 19, 3, 1, 9, 9, 19, 300),
        (8, 16, 5, 1, 1, 2, 8, 30),
        (6, 6, 5, 4, 2, 5, 6, 23),
        (32, 32, 7, 1, 3, 9, 1, 777),
        (64, 64, 5, 1, 2, 4, 1, 301),
        (40, 72, 7, 1, 1, 3, 1, 130),
    ];
    for isa in isas() {
        for &(c_in, c_out, kernel, stride, dilation, padding, groups, len) in &cases {
            let p = params(c_in, c_out, kernel, stride, dilation, padding, groups);
            let x = rand_vec(&mut rng, c_in * len);
            let w = rand_vec(&mut rng, c_out * (c_in / groups) * kernel);
            let b = rand_vec(&mut rng, c_out);
            for bias in [None, Some(&b[..])] {
                let want = ref_conv1d(&x, len, &w, bias, &p);
                let l_out = conv1d_out_len(len, &p);
                let mut y = vec![f32::NAN; c_out * l_out + 5];
                let got = conv1d_with(isa, &x, len, &w, bias, &p, &mut y).unwrap();
                assert_eq!(got, l_out);
                assert!(
                    y[c_out * l_out..].iter().all(|v| v.is_nan()),
                    "wrote past c_out·l_out"
                );
                check(
                    &format!("{isa:?} conv1d {p:?} len {len} bias {}", bias.is_some()),
                    &y[..c_out * l_out],
                    &want,
                );
            }
        }
    }
}

#[test]
fn conv_transpose1d_matches_reference() {
    let mut rng = ChaCha8Rng::seed_from_u64(13);
    // (c_in, c_out, kernel, stride, dilation, padding, len)
    let cases = [
        (1, 1, 1, 1, 1, 0, 1),
        (3, 5, 16, 8, 1, 4, 1),
        (5, 3, 16, 8, 1, 4, 7),
        (7, 9, 8, 4, 1, 2, 13),
        (6, 4, 3, 1, 1, 1, 10),
        (4, 6, 5, 2, 3, 2, 9),
        (3, 7, 2, 4, 1, 0, 5),
        (9, 5, 7, 3, 2, 6, 4),
        (33, 17, 16, 8, 1, 4, 45),
        (64, 32, 8, 4, 1, 2, 200),
    ];
    for isa in isas() {
        for &(c_in, c_out, kernel, stride, dilation, padding, len) in &cases {
            let p = params(c_in, c_out, kernel, stride, dilation, padding, 1);
            let x = rand_vec(&mut rng, c_in * len);
            let w = rand_vec(&mut rng, c_in * c_out * kernel);
            let b = rand_vec(&mut rng, c_out);
            for bias in [None, Some(&b[..])] {
                let want = ref_conv_transpose1d(&x, len, &w, bias, &p);
                let l_out = conv_transpose1d_out_len(len, &p);
                let mut y = vec![f32::NAN; c_out * l_out];
                assert_eq!(
                    conv_transpose1d_with(isa, &x, len, &w, bias, &p, &mut y).unwrap(),
                    l_out
                );
                check(
                    &format!(
                        "{isa:?} conv_transpose1d {p:?} len {len} bias {}",
                        bias.is_some()
                    ),
                    &y,
                    &want,
                );
            }
        }
    }
}

fn in_pool<T: Send>(threads: usize, f: impl FnOnce() -> T + Send) -> T {
    rayon::ThreadPoolBuilder::new()
        .num_threads(threads)
        .build()
        .unwrap()
        .install(f)
}

#[test]
fn results_do_not_depend_on_thread_count() {
    let mut rng = ChaCha8Rng::seed_from_u64(17);
    let (m, n, k) = (70, 900, 700);
    let a = rand_vec(&mut rng, m * k);
    let b = rand_vec(&mut rng, k * n);
    let gemm_at = |t| {
        in_pool(t, || {
            let mut c = vec![0f32; m * n];
            sgemm(m, n, k, &a, k, &b, n, &mut c, n, false);
            c
        })
    };
    let rb = params(32, 32, 7, 1, 3, 9, 1);
    let x = rand_vec(&mut rng, 32 * 3000);
    let w = rand_vec(&mut rng, 32 * 32 * 7);
    let bias = rand_vec(&mut rng, 32);
    let conv_at = |t| {
        in_pool(t, || {
            let mut y = vec![0f32; 32 * 3000];
            conv1d(&x, 3000, &w, Some(&bias), &rb, &mut y).unwrap();
            y
        })
    };
    let up = params(128, 64, 16, 8, 1, 4, 1);
    let xu = rand_vec(&mut rng, 128 * 100);
    let wu = rand_vec(&mut rng, 128 * 64 * 16);
    let up_at = |t| {
        in_pool(t, || {
            let mut y = vec![0f32; 64 * 800];
            conv_transpose1d(&xu, 100, &wu, None, &up, &mut y).unwrap();
            y
        })
    };
    let dw = params(192, 192, 3, 1, 9, 9, 192);
    let xd = rand_vec(&mut rng, 192 * 500);
    let wd = rand_vec(&mut rng, 192 * 3);
    let dw_at = |t| {
        in_pool(t, || {
            let mut y = vec![0f32; 192 * 500];
            conv1d(&xd, 500, &wd, None, &dw, &mut y).unwrap();
            y
        })
    };
    for t in [2, 3] {
        let bits = |v: Vec<f32>| v.into_iter().map(f32::to_bits).collect::<Vec<_>>();
        assert_eq!(bits(gemm_at(1)), bits(gemm_at(t)), "sgemm 1 vs {t} threads");
        assert_eq!(
            bits(conv_at(1)),
            bits(conv_at(t)),
            "conv1d 1 vs {t} threads"
        );
        assert_eq!(
            bits(up_at(1)),
            bits(up_at(t)),
            "conv_transpose1d 1 vs {t} threads"
        );
        assert_eq!(bits(dw_at(1)), bits(dw_at(t)), "depthwise 1 vs {t} threads");
    }
}

fn is_size(r: Result<usize, KernelError>) -> bool {
    matches!(r, Err(KernelError::Size { .. }))
}

#[test]
fn wrong_sizes_are_errors() {
    let p = params(4, 6, 3, 1, 1, 1, 1);
    let (x, w, b) = (vec![0f32; 4 * 10], vec![0f32; 6 * 4 * 3], vec![0f32; 6]);
    let mut y = vec![0f32; 6 * 10];
    assert_eq!(conv1d(&x, 10, &w, Some(&b), &p, &mut y).unwrap(), 10);
    assert!(
        is_size(conv1d(&x[..39], 10, &w, None, &p, &mut y)),
        "short x"
    );
    assert!(
        is_size(conv1d(&x, 10, &w[..71], None, &p, &mut y)),
        "short w"
    );
    assert!(
        is_size(conv1d(
            &x,
            10,
            &[w.clone(), vec![0.0]].concat(),
            None,
            &p,
            &mut y
        )),
        "long w"
    );
    assert!(
        is_size(conv1d(&x, 10, &w, Some(&b[..5]), &p, &mut y)),
        "short bias"
    );
    assert!(
        is_size(conv1d(&x, 10, &w, None, &p, &mut y[..59])),
        "short y"
    );
    assert!(is_size(conv1d(&x, 0, &w, None, &p, &mut y)), "len 0");
    let long_kernel = ConvParams {
        kernel: 3,
        dilation: 6,
        padding: 0,
        ..p
    };
    let wl = vec![0f32; 6 * 4 * 3];
    assert!(
        is_size(conv1d(&x, 10, &wl, None, &long_kernel, &mut y)),
        "input shorter than the dilated kernel"
    );
    for bad in [
        ConvParams { stride: 0, ..p },
        ConvParams { dilation: 0, ..p },
        ConvParams { kernel: 0, ..p },
        ConvParams { groups: 0, ..p },
        ConvParams { groups: 3, ..p },
        ConvParams { c_in: 0, ..p },
    ] {
        assert!(is_size(conv1d(&x, 10, &w, None, &bad, &mut y)), "{bad:?}");
    }

    let t = params(4, 6, 16, 8, 1, 4, 1);
    let wt = vec![0f32; 4 * 6 * 16];
    let mut yt = vec![0f32; 6 * 80];
    assert_eq!(
        conv_transpose1d(&x, 10, &wt, Some(&b), &t, &mut yt).unwrap(),
        80
    );
    assert!(
        is_size(conv_transpose1d(&x[..30], 10, &wt, None, &t, &mut yt)),
        "short x"
    );
    assert!(
        is_size(conv_transpose1d(&x, 10, &wt[..100], None, &t, &mut yt)),
        "short w"
    );
    assert!(
        is_size(conv_transpose1d(&x, 10, &wt, Some(&b[..2]), &t, &mut yt)),
        "short bias"
    );
    assert!(
        is_size(conv_transpose1d(&x, 10, &wt, None, &t, &mut yt[..479])),
        "short y"
    );
    assert!(
        is_size(conv_transpose1d(&x, 0, &wt, None, &t, &mut yt)),
        "len 0"
    );
    assert!(
        is_size(conv_transpose1d(
            &x,
            10,
            &wt,
            None,
            &ConvParams { groups: 2, ..t },
            &mut yt
        )),
        "groups 2"
    );
    let over_padded = ConvParams {
        padding: 9,
        kernel: 1,
        stride: 1,
        ..t
    };
    assert!(
        is_size(conv_transpose1d(
            &x,
            10,
            &wt[..24],
            None,
            &over_padded,
            &mut yt
        )),
        "padding eats the output"
    );

    let mut c = vec![0f32; 12];
    assert!(
        sgemm_checked(3, 4, 2, &[0.0; 5], 2, &[0.0; 8], 4, &mut c, 4, false).is_err(),
        "short A"
    );
    assert!(
        sgemm_checked(3, 4, 2, &[0.0; 6], 2, &[0.0; 7], 4, &mut c, 4, false).is_err(),
        "short B"
    );
    assert!(
        sgemm_checked(3, 4, 2, &[0.0; 6], 2, &[0.0; 8], 4, &mut c[..11], 4, false).is_err(),
        "short C"
    );
    assert!(
        sgemm_checked(3, 4, 2, &[0.0; 6], 1, &[0.0; 8], 4, &mut c, 4, false).is_err(),
        "lda < k"
    );
    assert!(sgemm_checked(3, 4, 2, &[0.0; 6], 2, &[0.0; 8], 4, &mut c, 4, false).is_ok());
    assert_eq!(conv1d_out_len(5, &ConvParams { stride: 0, ..p }), 0);
    assert_eq!(conv_transpose1d_out_len(0, &t), 0);
}

/// The AVX-512 kernel (8 × 48 tiles, masked edges) against the scalar one on sizes that
/// leave partial tiles in both directions, several K blocks, strided output (transposed
/// convolution) and fused bias; skipped, saying so, on CPUs without AVX-512.
#[test]
fn avx512_matches_scalar_on_odd_sizes() {
    if !available(Isa::Avx512) {
        println!("skipped: this CPU has no AVX-512F, the AVX-512 GEMM kernel went unchecked");
        return;
    }
    let mut rng = ChaCha8Rng::seed_from_u64(23);
    for &(m, n, k) in &[
        (1, 1, 1),
        (7, 47, 3),
        (9, 49, 257),
        (17, 97, 600),
        (33, 130, 31),
    ] {
        let a = rand_vec(&mut rng, m * k);
        let b = rand_vec(&mut rng, k * n);
        let c0 = rand_vec(&mut rng, m * n);
        for acc in [false, true] {
            let (mut c512, mut c1) = (c0.clone(), c0.clone());
            sgemm_with(Isa::Avx512, m, n, k, &a, k, &b, n, &mut c512, n, acc).unwrap();
            sgemm_with(Isa::Scalar, m, n, k, &a, k, &b, n, &mut c1, n, acc).unwrap();
            let want = ref_gemm(m, n, k, &a, k, &b, n, acc.then_some(&c0[..]), n);
            check(&format!("avx512 sgemm {m}x{n}x{k} acc {acc}"), &c512, &want);
            check(&format!("scalar sgemm {m}x{n}x{k} acc {acc}"), &c1, &want);
        }
    }
    for &(c_in, c_out, kernel, stride, len) in
        &[(5, 9, 7, 1, 53), (13, 11, 16, 8, 29), (3, 17, 8, 4, 50)]
    {
        let transposed = stride > 1;
        let p = if transposed {
            params(c_in, c_out, kernel, stride, 1, (kernel - stride) / 2, 1)
        } else {
            params(c_in, c_out, kernel, 1, 2, kernel - 1, 1)
        };
        let x = rand_vec(&mut rng, c_in * len);
        let w = rand_vec(&mut rng, c_in * c_out * kernel);
        let bias = rand_vec(&mut rng, c_out);
        let run = |isa| {
            let l_out = if transposed {
                conv_transpose1d_out_len(len, &p)
            } else {
                conv1d_out_len(len, &p)
            };
            let mut y = vec![f32::NAN; c_out * l_out];
            if transposed {
                conv_transpose1d_with(isa, &x, len, &w, Some(&bias), &p, &mut y).unwrap();
            } else {
                conv1d_with(isa, &x, len, &w, Some(&bias), &p, &mut y).unwrap();
            }
            y
        };
        let want = if transposed {
            ref_conv_transpose1d(&x, len, &w, Some(&bias), &p)
        } else {
            ref_conv1d(&x, len, &w, Some(&bias), &p)
        };
        check(&format!("avx512 {p:?} len {len}"), &run(Isa::Avx512), &want);
        check(&format!("scalar {p:?} len {len}"), &run(Isa::Scalar), &want);
    }
}

/// `forward_fused` (LeakyReLU in the packing, residual in the store) is bit-identical to the
/// separate passes on every instruction set.
#[test]
fn fused_leaky_relu_and_residual_equal_separate_passes() {
    use nexus_kernels::conv::Conv1d;
    let mut rng = ChaCha8Rng::seed_from_u64(29);
    let (c, len, slope) = (19, 301, 0.1f32);
    // kernel 3 keeps K under one block; kernel 37 splits it (residual added after the last).
    for kernel in [3, 37] {
        let p = params(c, c, kernel, 1, 1, kernel / 2, 1);
        let x = rand_vec(&mut rng, c * len);
        let w = rand_vec(&mut rng, c * c * kernel);
        let bias = rand_vec(&mut rng, c);
        let res = rand_vec(&mut rng, c * len);
        for isa in isas() {
            let conv = Conv1d::new_with(isa, &w, Some(&bias), &p).unwrap();
            let act: Vec<f32> = x
                .iter()
                .map(|&v| if v >= 0.0 { v } else { v * slope })
                .collect();
            let mut want = vec![0f32; c * len];
            conv.forward(&act, len, &mut want).unwrap();
            want.iter_mut().zip(&res).for_each(|(y, &r)| *y += r);
            let mut got = vec![f32::NAN; c * len];
            conv.forward_fused(&x, len, Some(slope), Some(&res), &mut got)
                .unwrap();
            let bits = |v: &[f32]| v.iter().map(|f| f.to_bits()).collect::<Vec<_>>();
            assert_eq!(bits(&got), bits(&want), "{isa:?} kernel {kernel}");
        }
    }
}
