//! sgemm_t (either operand transposed) against a float64 reference loop, on every instruction
//! set this CPU runs, plus thread-count determinism and size errors.
//!
//! Tolerance: |c − ref| ≤ 1e-5 · (|c0| + Σ|a·b|) + 1e-30 per element, relative to the
//! magnitude of the terms summed, as in `conv.rs`.

use nexus_kernels::gemm::{sgemm_t, sgemm_t_with};
use nexus_kernels::simd::{available, Isa};
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;

const TOL: f64 = 1e-5;

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

/// `(value, Σ|terms|)` of `op(A)·op(B) (+ c0)` at every (i, j), in f64.
#[allow(clippy::too_many_arguments)]
fn reference(
    (ta, tb): (bool, bool),
    (m, n, k): (usize, usize, usize),
    a: &[f32],
    lda: usize,
    b: &[f32],
    ldb: usize,
    c0: Option<&[f32]>,
    ldc: usize,
) -> Vec<(f64, f64)> {
    let at = |i: usize, kk: usize| if ta { a[kk * lda + i] } else { a[i * lda + kk] } as f64;
    let bt = |kk: usize, j: usize| if tb { b[j * ldb + kk] } else { b[kk * ldb + j] } as f64;
    let mut out = Vec::with_capacity(m * n);
    for i in 0..m {
        for j in 0..n {
            let init = c0.map_or(0.0, |c| c[i * ldc + j] as f64);
            let (mut v, mut mag) = (init, init.abs());
            for kk in 0..k {
                let term = at(i, kk) * bt(kk, j);
                v += term;
                mag += term.abs();
            }
            out.push((v, mag));
        }
    }
    out
}

#[test]
fn sgemm_t_matches_reference() {
    let mut rng = ChaCha8Rng::seed_from_u64(17);
    // (m, n, k, leading-dimension padding): tile edges, several K blocks, task splits.
    let shapes = [
        (1, 1, 1, 0),
        (3, 5, 7, 2),
        (9, 17, 33, 1),
        (13, 70, 1, 3),
        (37, 53, 300, 0),
        (64, 129, 257, 5),
        (130, 97, 600, 0),
    ];
    for isa in isas() {
        for &(m, n, k, pad) in &shapes {
            for (ta, tb) in [(false, false), (true, false), (false, true), (true, true)] {
                let (a_rows, a_cols) = if ta { (k, m) } else { (m, k) };
                let (b_rows, b_cols) = if tb { (n, k) } else { (k, n) };
                let (lda, ldb, ldc) = (a_cols + pad, b_cols + pad, n + 2 * pad);
                let a = rand_vec(&mut rng, a_rows * lda);
                let b = rand_vec(&mut rng, b_rows * ldb);
                let c0 = rand_vec(&mut rng, m * ldc);
                for accumulate in [false, true] {
                    let mut c = if accumulate {
                        c0.clone()
                    } else {
                        vec![f32::NAN; m * ldc]
                    };
                    sgemm_t_with(
                        isa, ta, tb, m, n, k, &a, lda, &b, ldb, &mut c, ldc, accumulate,
                    )
                    .unwrap();
                    let want = reference(
                        (ta, tb),
                        (m, n, k),
                        &a,
                        lda,
                        &b,
                        ldb,
                        accumulate.then_some(&c0[..]),
                        ldc,
                    );
                    for i in 0..m {
                        for j in 0..n {
                            let (v, mag) = want[i * n + j];
                            let g = c[i * ldc + j];
                            assert!(
                                (g as f64 - v).abs() <= TOL * mag + 1e-30,
                                "{isa:?} ta={ta} tb={tb} acc={accumulate} {m}x{n}x{k} \
                                 ({i},{j}): got {g}, want {v}"
                            );
                        }
                        let tail = &c[i * ldc + n..(i + 1) * ldc];
                        if accumulate {
                            assert_eq!(tail, &c0[i * ldc + n..(i + 1) * ldc], "wrote past n");
                        } else {
                            assert!(tail.iter().all(|v| v.is_nan()), "wrote past n");
                        }
                    }
                }
            }
        }
    }
}

#[test]
fn sgemm_t_does_not_depend_on_thread_count() {
    let mut rng = ChaCha8Rng::seed_from_u64(5);
    let (m, n, k) = (150, 200, 530);
    let a = rand_vec(&mut rng, k * m);
    let b = rand_vec(&mut rng, n * k);
    let run = |threads: usize| {
        let pool = rayon::ThreadPoolBuilder::new()
            .num_threads(threads)
            .build()
            .unwrap();
        let mut c = vec![0f32; m * n];
        pool.install(|| sgemm_t(true, true, m, n, k, &a, m, &b, k, &mut c, n, false));
        c.iter().map(|v| v.to_bits()).collect::<Vec<_>>()
    };
    let one = run(1);
    for t in [2, 3, 8] {
        assert_eq!(one, run(t), "1 vs {t} threads");
    }
}

#[test]
fn sgemm_t_rejects_inconsistent_sizes() {
    let isa = Isa::Scalar;
    let mut c = vec![0f32; 12];
    // A transposed is stored k × m = 2 × 3: 6 elements at lda 3.
    assert!(
        sgemm_t_with(isa, true, false, 3, 4, 2, &[0.0; 5], 3, &[0.0; 8], 4, &mut c, 4, false)
            .is_err()
    );
    assert!(
        sgemm_t_with(isa, true, false, 3, 4, 2, &[0.0; 6], 2, &[0.0; 8], 4, &mut c, 4, false)
            .is_err()
    );
    // B transposed is stored n × k = 4 × 2.
    assert!(
        sgemm_t_with(isa, false, true, 3, 4, 2, &[0.0; 6], 2, &[0.0; 7], 2, &mut c, 4, false)
            .is_err()
    );
    assert!(sgemm_t_with(
        isa,
        false,
        true,
        3,
        4,
        2,
        &[0.0; 6],
        2,
        &[0.0; 8],
        2,
        &mut c[..11],
        4,
        false
    )
    .is_err());
    assert!(
        sgemm_t_with(isa, true, true, 3, 4, 2, &[0.0; 6], 3, &[0.0; 8], 2, &mut c, 4, false)
            .is_ok()
    );
}
