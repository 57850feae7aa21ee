//! The anchoring term against an f64 reference that computes it directly, its gradients
//! against central differences of that reference, and its masks, maps and errors.

use super::*;
use rand::Rng;

fn rand_vec(rng: &mut ChaCha8Rng, n: usize, scale: f32) -> Vec<f32> {
    (0..n).map(|_| rng.gen_range(-scale..scale)).collect()
}

/// `k` orthonormal rows of `d` (Gram–Schmidt in f64 on random vectors).
fn orthonormal(rng: &mut ChaCha8Rng, k: usize, d: usize) -> Vec<f32> {
    let mut rows: Vec<Vec<f64>> = Vec::new();
    while rows.len() < k {
        let mut v: Vec<f64> = (0..d).map(|_| rng.gen_range(-1.0..1.0)).collect();
        for r in &rows {
            let dot: f64 = v.iter().zip(r).map(|(a, b)| a * b).sum();
            v.iter_mut().zip(r).for_each(|(a, b)| *a -= dot * b);
        }
        let norm = v.iter().map(|a| a * a).sum::<f64>().sqrt();
        if norm > 1e-3 {
            rows.push(v.iter().map(|a| a / norm).collect());
        }
    }
    rows.concat().iter().map(|&v| v as f32).collect()
}

/// The term computed directly in f64: `scale · mean over counted rows ‖B (W h_s − h_t)‖²`.
fn reference(
    a: &Anchor,
    map: &[f64],
    hs: &[f64],
    ht: &[f32],
    n: usize,
    mask: Option<&[bool]>,
) -> f64 {
    let (ds, dt, k) = (a.d_student, a.d_teacher, a.k);
    let (mut sum, mut counted) = (0f64, 0usize);
    for t in 0..n {
        if mask.is_some_and(|m| !m[t]) {
            continue;
        }
        counted += 1;
        let r: Vec<f64> = (0..dt)
            .map(|i| {
                (0..ds)
                    .map(|j| map[i * ds + j] * hs[t * ds + j])
                    .sum::<f64>()
                    - ht[t * dt + i] as f64
            })
            .collect();
        for p in 0..k {
            let z: f64 = (0..dt).map(|i| a.basis[p * dt + i] as f64 * r[i]).sum();
            sum += z * z;
        }
    }
    if counted == 0 {
        0.0
    } else {
        a.scale as f64 * sum / counted as f64
    }
}

fn to64(v: &[f32]) -> Vec<f64> {
    v.iter().map(|&x| x as f64).collect()
}

struct Case {
    anchor: Anchor,
    hs: Vec<f32>,
    ht: Vec<f32>,
    mask: Option<Vec<bool>>,
}

fn case(seed: u64, n: usize, ds: usize, dt: usize, k: usize, masked: bool) -> Case {
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    let basis = orthonormal(&mut rng, k, dt);
    let eig: Vec<f64> = (0..dt).map(|i| 4.0 / (1.0 + i as f64)).collect();
    let anchor = Anchor::new(1, 3, &basis, k, &eig, ds, MapInit::Random(seed)).unwrap();
    Case {
        anchor,
        hs: rand_vec(&mut rng, n * ds, 1.0),
        ht: rand_vec(&mut rng, n * dt, 1.0),
        mask: masked.then(|| (0..n).map(|t| t % 3 != 0).collect()),
    }
}

/// Gradients (accumulated onto non-zero buffers) against central differences of the f64
/// reference, on sizes with k < d_t, k = d_t, d_s < d_t and d_s > d_t, with and without a mask.
#[test]
fn gradients_match_finite_differences() {
    let shapes = [
        (5, 3, 7, 4, false),
        (4, 6, 5, 5, false),
        (7, 4, 4, 2, true),
        (6, 9, 12, 3, true),
    ];
    for (seed, &(n, ds, dt, k, masked)) in shapes.iter().enumerate() {
        let c = case(seed as u64, n, ds, dt, k, masked);
        let a = &c.anchor;
        let mask = c.mask.as_deref();
        let weight = 0.7f32;
        let mut rng = ChaCha8Rng::seed_from_u64(100 + seed as u64);
        let d_h0 = rand_vec(&mut rng, n * ds, 1.0);
        let d_map0 = rand_vec(&mut rng, dt * ds, 1.0);
        let (mut d_h, mut d_map) = (d_h0.clone(), d_map0.clone());
        let loss = a
            .loss_grad(&c.hs, &c.ht, n, mask, weight, &mut d_h, &mut d_map)
            .unwrap();
        let (map64, hs64) = (to64(&a.map), to64(&c.hs));
        let want = reference(a, &map64, &hs64, &c.ht, n, mask);
        assert!(
            (loss - want).abs() <= 1e-5 * want.abs(),
            "case {seed}: loss {loss} vs reference {want}"
        );

        let h = 1e-4;
        let check = |what: &str, analytic: Vec<f64>, x: &[f64], f: &dyn Fn(&[f64]) -> f64| {
            let fd: Vec<f64> = (0..x.len())
                .map(|i| {
                    let (mut up, mut down) = (x.to_vec(), x.to_vec());
                    up[i] += h;
                    down[i] -= h;
                    weight as f64 * (f(&up) - f(&down)) / (2.0 * h)
                })
                .collect();
            let gmax = fd.iter().fold(0f64, |m, v| m.max(v.abs()));
            assert!(gmax > 0.0, "case {seed} {what}: zero gradient");
            for (i, (a, f)) in analytic.iter().zip(&fd).enumerate() {
                assert!(
                    (a - f).abs() <= 1e-3 * f.abs().max(0.1 * gmax),
                    "case {seed} {what}[{i}]: analytic {a} vs finite difference {f}"
                );
            }
        };
        let grad = |after: &[f32], before: &[f32]| -> Vec<f64> {
            after
                .iter()
                .zip(before)
                .map(|(&x, &y)| x as f64 - y as f64)
                .collect()
        };
        check("d_h", grad(&d_h, &d_h0), &hs64, &|x| {
            reference(a, &map64, x, &c.ht, n, mask)
        });
        check("d_map", grad(&d_map, &d_map0), &map64, &|x| {
            reference(a, x, &hs64, &c.ht, n, mask)
        });
        if let Some(m) = mask {
            for t in (0..n).filter(|&t| !m[t]) {
                assert_eq!(
                    d_h[t * ds..(t + 1) * ds],
                    d_h0[t * ds..(t + 1) * ds],
                    "masked row {t}"
                );
            }
        }
    }
}

/// A pruned student whose stream is the teacher's on the kept channels costs nothing through
/// the selection map: when the teacher is zero elsewhere (any basis), and when the basis does
/// not see the other channels (any teacher values there).
#[test]
fn selection_map_gives_zero_loss_for_the_teacher_s_own_channels() {
    let (n, dt) = (6, 8);
    let kept = [1usize, 2, 5, 6, 7];
    let ds = kept.len();
    let mut rng = ChaCha8Rng::seed_from_u64(9);
    let mut ht = rand_vec(&mut rng, n * dt, 2.0);
    let hs: Vec<f32> = (0..n)
        .flat_map(|t| kept.iter().map(|&c| ht[t * dt + c]).collect::<Vec<_>>())
        .collect();
    let eig = vec![1.0; dt];

    // The basis sees only the kept channels: k = 3 orthonormal rows of the kept subspace.
    let small = orthonormal(&mut rng, 3, ds);
    let mut basis = vec![0f32; 3 * dt];
    for p in 0..3 {
        for (j, &c) in kept.iter().enumerate() {
            basis[p * dt + c] = small[p * ds + j];
        }
    }
    let blind = Anchor::new(0, 0, &basis, 3, &eig, ds, MapInit::Selection(&kept)).unwrap();
    for (j, &c) in kept.iter().enumerate() {
        assert_eq!(blind.map[c * ds + j], 1.0);
    }
    assert_eq!(blind.map.iter().sum::<f32>(), ds as f32);
    let full = Anchor::new(
        0,
        0,
        &orthonormal(&mut rng, 4, dt),
        4,
        &eig,
        ds,
        MapInit::Selection(&kept),
    )
    .unwrap();

    let run = |a: &Anchor, ht: &[f32]| {
        let (mut d_h, mut d_map) = (vec![0f32; n * ds], vec![0f32; dt * ds]);
        let loss = a
            .loss_grad(&hs, ht, n, None, 1.0, &mut d_h, &mut d_map)
            .unwrap();
        (
            loss,
            d_h.iter().chain(&d_map).fold(0f32, |m, g| m.max(g.abs())),
        )
    };
    assert_eq!(
        run(&blind, &ht),
        (0.0, 0.0),
        "basis blind to the dropped channels"
    );
    let (seen, grad) = run(&full, &ht);
    assert!(
        seen > 0.1 && grad > 0.0,
        "a full basis sees the dropped channels"
    );
    for t in 0..n {
        for c in (0..dt).filter(|c| !kept.contains(c)) {
            ht[t * dt + c] = 0.0;
        }
    }
    assert_eq!(
        run(&full, &ht),
        (0.0, 0.0),
        "teacher zero on the dropped channels"
    );
}

/// A masked row (here 100× larger, like an attention sink) changes nothing: the loss and map
/// gradient equal those of the other rows alone, and its own gradient is zero.
#[test]
fn mask_excludes_rows() {
    let (n, ds, dt, k) = (5, 4, 6, 3);
    let mut c = case(11, n, ds, dt, k, false);
    let a = &c.anchor;
    c.hs[..ds].iter_mut().for_each(|v| *v *= 100.0);
    c.ht[..dt].iter_mut().for_each(|v| *v *= 100.0);
    let mask = sink_mask(1, n, 1);
    assert_eq!(mask, vec![false, true, true, true, true]);
    let (mut d_h, mut d_map) = (vec![0f32; n * ds], vec![0f32; dt * ds]);
    let loss = a
        .loss_grad(&c.hs, &c.ht, n, Some(&mask), 1.3, &mut d_h, &mut d_map)
        .unwrap();
    let (mut d_h_rest, mut d_map_rest) = (vec![0f32; (n - 1) * ds], vec![0f32; dt * ds]);
    let rest = a
        .loss_grad(
            &c.hs[ds..],
            &c.ht[dt..],
            n - 1,
            None,
            1.3,
            &mut d_h_rest,
            &mut d_map_rest,
        )
        .unwrap();
    assert!((loss - rest).abs() <= 1e-6 * rest, "{loss} vs {rest}");
    assert!(d_h[..ds].iter().all(|&g| g == 0.0));
    for (x, y) in d_h[ds..]
        .iter()
        .chain(&d_map)
        .zip(d_h_rest.iter().chain(&d_map_rest))
    {
        assert!((x - y).abs() <= 1e-5 * y.abs().max(1e-3), "{x} vs {y}");
    }
    // No row counting: nothing to measure, nothing accumulated.
    let none = vec![false; n];
    let before = d_map.clone();
    let mut d_h = vec![0f32; n * ds];
    assert_eq!(
        a.loss_grad(&c.hs, &c.ht, n, Some(&none), 1.0, &mut d_h, &mut d_map)
            .unwrap(),
        0.0
    );
    assert_eq!(d_map, before);
    assert_eq!(
        sink_mask(2, 3, 2),
        vec![false, false, true, false, false, true]
    );
    assert_eq!(sink_mask(1, 2, 0), vec![true, true]);
}

#[test]
fn bad_sizes_are_errors() {
    let (n, ds, dt, k) = (3, 4, 5, 2);
    let c = case(12, n, ds, dt, k, false);
    let a = &c.anchor;
    let (mut d_h, mut d_map) = (vec![0f32; n * ds], vec![0f32; dt * ds]);
    let size = |r: Result<f64, EngineError>, what: &str| match r {
        Err(EngineError::Size { what: w, .. }) => assert!(w.contains(what), "{w:?} lacks {what:?}"),
        other => panic!("{what}: expected a size error, got {other:?}"),
    };
    size(
        a.loss_grad(&c.hs[1..], &c.ht, n, None, 1.0, &mut d_h, &mut d_map),
        "student stream",
    );
    size(
        a.loss_grad(&c.hs, &c.ht[1..], n, None, 1.0, &mut d_h, &mut d_map),
        "teacher stream",
    );
    size(
        a.loss_grad(&c.hs, &c.ht, n, None, 1.0, &mut d_h[1..], &mut d_map),
        "d_h",
    );
    size(
        a.loss_grad(&c.hs, &c.ht, n, None, 1.0, &mut d_h, &mut d_map[1..]),
        "d_map",
    );
    size(
        a.loss_grad(&c.hs, &c.ht, n, Some(&[true; 2]), 1.0, &mut d_h, &mut d_map),
        "row mask",
    );
    let mut short = a.clone();
    short.map.pop();
    size(
        short.loss_grad(&c.hs, &c.ht, n, None, 1.0, &mut d_h, &mut d_map),
        "map",
    );
    assert!(matches!(
        a.loss_grad(&c.hs, &c.ht, n, None, f32::NAN, &mut d_h, &mut d_map),
        Err(EngineError::Invalid(_))
    ));
    assert_eq!(
        a.loss_grad(&[], &[], 0, None, 1.0, &mut [], &mut d_map)
            .unwrap(),
        0.0
    );

    let basis = vec![0.5f32; k * dt];
    let eig = vec![1.0; dt];
    let new = |basis: &[f32], k: usize, eig: &[f64], ds: usize, init: MapInit| {
        Anchor::new(0, 7, basis, k, eig, ds, init)
            .expect_err("an error")
            .to_string()
    };
    let r = MapInit::Random(0);
    let cases = [
        (new(&basis[1..], k, &eig, ds, r), "not k = 2"),
        (new(&basis, 0, &eig, ds, r), "not k = 0"),
        (new(&basis, k, &eig[..1], ds, r), "1 eigenvalues for k = 2"),
        (new(&basis, k, &[0.0, 0.0], ds, r), "sum to 0"),
        (new(&[f32::NAN; 10], k, &eig, ds, r), "non-finite"),
        (new(&basis, k, &eig, 0, r), "width is 0"),
        (
            new(&basis, k, &eig, 2, MapInit::Selection(&[0, 1, 2])),
            "3 kept channels",
        ),
        (
            new(&basis, k, &eig, 2, MapInit::Selection(&[0, 5])),
            "channel 5 is outside",
        ),
        (
            new(&basis, k, &eig, 2, MapInit::Selection(&[3, 3])),
            "kept twice",
        ),
    ];
    for (e, want) in cases {
        assert!(
            e.contains(want) && e.contains("teacher layer 7"),
            "{want:?} not in {e:?}"
        );
    }
}

#[test]
fn random_map_is_seeded_with_variance_one_over_d_student() {
    let (dt, ds) = (64, 48);
    let basis = orthonormal(&mut ChaCha8Rng::seed_from_u64(1), 2, dt);
    let eig = [3.0, 1.0];
    let a = Anchor::new(2, 5, &basis, 2, &eig, ds, MapInit::Random(4)).unwrap();
    assert_eq!((a.d_teacher, a.d_student, a.k), (dt, ds, 2));
    assert_eq!(a.scale, 0.25);
    let var = a.map.iter().map(|&v| (v as f64).powi(2)).sum::<f64>() / a.map.len() as f64;
    assert!((var * ds as f64 - 1.0).abs() < 0.05, "variance {var}");
    assert_eq!(
        Anchor::new(2, 5, &basis, 2, &eig, ds, MapInit::Random(4)).unwrap(),
        a
    );
    assert_ne!(
        Anchor::new(2, 5, &basis, 2, &eig, ds, MapInit::Random(5))
            .unwrap()
            .map,
        a.map
    );

    let profile = LayerProfile {
        eigenvalues: vec![3.0, 1.0, 0.5],
        basis: basis.clone(),
        k: 2,
        mean: vec![0.0; dt],
        sensitivity_scale: 0.0,
        sensitivity_noise: 0.0,
        sensitivity_remove: 0.0,
        head_ablation: vec![],
        ffn_ablation: 0.0,
        residual: Default::default(),
        residual_summary: Default::default(),
        ffn: Default::default(),
        ffn_summary: Default::default(),
    };
    assert_eq!(
        Anchor::from_profile(2, 5, &profile, ds, MapInit::Random(4)).unwrap(),
        a
    );
    let narrow = LayerProfile {
        mean: vec![0.0; 3],
        ..profile
    };
    assert!(Anchor::from_profile(2, 5, &narrow, ds, MapInit::Random(4)).is_err());
}

#[test]
fn anchor_layers_pairs_student_and_teacher_depths() {
    // 30 → 8: (i+1)·30/8 = 3.75, 7.5, 11.25, 15, 18.75, 22.5, 26.25, 30, rounded, minus one.
    let all = anchor_layers(8, 30, None, 1);
    let teacher: Vec<usize> = all.iter().map(|p| p.1).collect();
    assert_eq!(teacher, vec![3, 7, 10, 14, 18, 22, 25, 29]);
    assert_eq!(
        all.iter().map(|p| p.0).collect::<Vec<_>>(),
        (0..8).collect::<Vec<_>>()
    );
    assert_eq!(
        anchor_layers(8, 30, None, 3),
        vec![(1, 7), (4, 18), (7, 29)]
    );
    assert_eq!(anchor_layers(8, 30, None, 0), all);
    assert_eq!(anchor_layers(8, 30, None, 100), vec![(7, 29)]);
    let pruned = [0, 2, 3, 9, 11, 20, 28, 29];
    assert_eq!(
        anchor_layers(8, 30, Some(&pruned), 2),
        vec![(1, 2), (3, 9), (5, 20), (7, 29)]
    );
    assert_eq!(anchor_layers(3, 3, None, 1), vec![(0, 0), (1, 1), (2, 2)]);
    assert_eq!(
        anchor_layers(4, 2, None, 1),
        vec![(0, 0), (1, 0), (2, 1), (3, 1)]
    );
    assert_eq!(anchor_layers(0, 30, None, 1), vec![]);
    assert_eq!(anchor_layers(2, 0, None, 1), vec![]);
    assert_eq!(anchor_layers(3, 4, Some(&[0, 9]), 1), vec![(0, 0)]);
}
