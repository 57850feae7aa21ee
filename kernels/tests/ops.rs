use nexus_kernels::ops::*;

fn data(n: usize, k: f32) -> Vec<f32> {
    (0..n).map(|i| (i as f32 * 0.37 + k).sin() * 3.0).collect()
}

fn close(a: f32, b: f64, tol: f64) {
    assert!((a as f64 - b).abs() <= tol * (1.0 + b.abs()), "{a} vs {b}");
}

#[test]
fn ops_match_f64_references() {
    for n in [1usize, 7, 8, 33, 576, 1001] {
        let (x, w) = (data(n, 0.1), data(n, 1.3));
        let dot: f64 = x.iter().zip(&w).map(|(a, b)| *a as f64 * *b as f64).sum();
        close(dot_f32(&x, &w), dot, 1e-5);

        let mut out = vec![0f32; n];
        rms_norm(&x, &w, 1e-5, &mut out);
        let ms: f64 = x.iter().map(|v| (*v as f64).powi(2)).sum::<f64>() / n as f64;
        for i in 0..n {
            close(out[i], x[i] as f64 / (ms + 1e-5).sqrt() * w[i] as f64, 1e-5);
        }

        let mut s = x.clone();
        softmax_inplace(&mut s);
        let m = x.iter().fold(f64::MIN, |a, &b| a.max(b as f64));
        let z: f64 = x.iter().map(|&v| (v as f64 - m).exp()).sum();
        for i in 0..n {
            close(s[i], (x[i] as f64 - m).exp() / z, 1e-5);
        }

        let mut g = x.clone();
        silu_mul_inplace(&mut g, &w);
        for i in 0..n {
            let v = x[i] as f64;
            close(g[i], v / (1.0 + (-v).exp()) * w[i] as f64, 1e-5);
        }

        let mut a = x.clone();
        add_inplace(&mut a, &w);
        axpy_inplace(&mut a, 0.5, &w);
        scale_inplace(&mut a, 2.0);
        for i in 0..n {
            close(a[i], (x[i] as f64 + 1.5 * w[i] as f64) * 2.0, 1e-6);
        }
    }
}

#[test]
fn axpy_row_checks_sizes_and_types() {
    use nexus_kernels::GgmlType;
    let mut y = vec![1f32; 32];
    let mut row = vec![0u8; 34];
    nexus_kernels::quantize_row(GgmlType::Q8_0, &[2.0; 32], &mut row).unwrap();
    axpy_row(GgmlType::Q8_0, &mut y, 0.5, &row).unwrap();
    // 2.0 is stored as 127 steps of an f16 scale: 1.99988.
    assert!(y.iter().all(|&v| (v - 2.0).abs() < 1e-3), "{y:?}");
    assert!(axpy_row(GgmlType::Q8_0, &mut y, 1.0, &row[..33]).is_err());
    assert!(axpy_row(GgmlType::Q8_0, &mut y[..31], 1.0, &row).is_err());
    assert!(axpy_row(GgmlType::Q4_0, &mut y, 1.0, &[0u8; 18]).is_err());
}
