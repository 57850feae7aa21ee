use super::*;

const N_VOCAB: usize = 50;

/// Deterministic pseudo-random logits (no RNG dependency needed for a handful of rows).
fn logits(n_rows: usize, seed: u64) -> Vec<f32> {
    let mut s = seed.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
    (0..n_rows * N_VOCAB)
        .map(|_| {
            s = s.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
            ((s >> 33) as f32 / (1u64 << 31) as f32) * 8.0 - 4.0
        })
        .collect()
}

fn full_kl(p_row: &[f32], q_row: &[f32]) -> f64 {
    let lp = |row: &[f32], i: usize| {
        let (max, ln_sum) = log_norm(row);
        f64::from(row[i] - max) - ln_sum
    };
    (0..p_row.len()).map(|i| lp(p_row, i).exp() * (lp(p_row, i) - lp(q_row, i))).sum()
}

fn chunks() -> Chunks {
    Chunks::new((0..20).map(|i| i % N_VOCAB as u32).collect(), 8, None).unwrap()
}

#[test]
fn identical_distributions_have_zero_kl_and_full_agreement() {
    let rows = logits(40, 1);
    let mut report = KlReport::default();
    for (k, row) in rows.chunks(N_VOCAB).enumerate() {
        report.add(compare_row(row, &base_record(row, (k % N_VOCAB) as u32, 8), (k % N_VOCAB) as u32));
    }
    let (kl, kl_ci) = report.mean_kl();
    assert!(kl.abs() < 1e-6 && kl_ci < 1e-6, "{kl} ± {kl_ci}");
    assert_eq!(report.same_top(), (1.0, 0.0));
    let (ratio, lo, hi) = report.ppl_ratio();
    assert!((ratio - 1.0).abs() < 1e-6 && lo <= ratio && ratio <= hi);
}

#[test]
fn top_k_kl_is_a_lower_bound_that_is_exact_at_full_vocabulary() {
    let (p, q) = (logits(10, 2), logits(10, 3));
    for (p_row, q_row) in p.chunks(N_VOCAB).zip(q.chunks(N_VOCAB)) {
        let full = full_kl(p_row, q_row);
        let exact = compare_row(q_row, &base_record(p_row, 0, N_VOCAB), 0).kl;
        let bound = compare_row(q_row, &base_record(p_row, 0, 8), 0).kl;
        assert!((exact - full).abs() < 1e-5, "{exact} vs {full}");
        assert!(bound <= full + 1e-6 && bound > 0.0, "{bound} vs {full}");
    }
}

#[test]
fn different_argmax_is_counted_and_kl_is_positive() {
    let p = vec![5.0, 1.0, 0.0, 0.0];
    let q = vec![1.0, 5.0, 0.0, 0.0];
    let c = compare_row(&q, &base_record(&p, 0, 2), 0);
    assert!(!c.same_top);
    assert!(c.kl > 1.0);
    assert!(c.nll > c.nll_base);
}

#[test]
fn base_file_round_trips() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("base.kl");
    let c = chunks();
    let mut w = KlBaseWriter::create(&path, N_VOCAB, &c, 5).unwrap();
    let mut want = Vec::new();
    for i in 0..c.n_chunk() {
        let l = logits(c.scored_per_chunk(), 10 + i as u64);
        want.extend(l.chunks(N_VOCAB).zip(c.targets(i)).map(|(row, &t)| base_record(row, t, 5)));
        w.add_chunk(&l, c.targets(i)).unwrap();
    }
    assert!(!path.exists(), "the file appears only on finish");
    w.finish().unwrap();
    let base = KlBase::read(&path).unwrap();
    assert_eq!((base.n_vocab, base.top_k), (N_VOCAB, 5));
    assert_eq!(base.chunks().used_tokens(), c.used_tokens());
    let got: Vec<BaseRecord> = (0..c.n_chunk()).flat_map(|i| (0..c.scored_per_chunk()).map(move |j| (i, j))).map(|(i, j)| base.record(i, j)).collect();
    assert_eq!(got, want);
    // Probabilities are sorted and, with the rest, sum to one.
    for r in &got {
        assert!(r.top.windows(2).all(|w| w[0].1 >= w[1].1));
        let total: f64 = r.top.iter().map(|t| f64::from(t.1).exp()).sum::<f64>() + f64::from(r.rest_log_prob).exp();
        assert!((total - 1.0).abs() < 1e-5, "{total}");
    }
}

#[test]
fn a_writer_dropped_before_finish_leaves_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("base.kl");
    drop(KlBaseWriter::create(&path, N_VOCAB, &chunks(), 5).unwrap());
    assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 0);
}

#[test]
fn mismatches_and_damage_are_reported() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("base.kl");
    let c = chunks();
    let mut w = KlBaseWriter::create(&path, N_VOCAB, &c, 5).unwrap();
    for i in 0..c.n_chunk() {
        w.add_chunk(&logits(c.scored_per_chunk(), 7), c.targets(i)).unwrap();
    }
    w.finish().unwrap();
    let base = KlBase::read(&path).unwrap();
    assert!(matches!(base.check_vocab(N_VOCAB + 1), Err(EvalError::VocabMismatch { base: N_VOCAB, .. })));
    base.check_vocab(N_VOCAB).unwrap();
    base.check_tokens(c.used_tokens()).unwrap();
    let mut other = c.used_tokens().to_vec();
    other[3] += 1;
    assert!(matches!(base.check_tokens(&other), Err(EvalError::TokenMismatch { pos: 3, .. })));
    assert!(matches!(base.check_tokens(&other[..2]), Err(EvalError::TokenMismatch { pos: 2, .. })));

    let bytes = std::fs::read(&path).unwrap();
    let damaged = dir.path().join("damaged.kl");
    for (what, b) in [("truncated", bytes[..bytes.len() - 3].to_vec()), ("magic", [b"XXXXXXXX", &bytes[8..]].concat()), ("empty", vec![])] {
        std::fs::write(&damaged, &b).unwrap();
        let err = KlBase::read(&damaged).unwrap_err().to_string();
        assert!(err.contains("damaged.kl"), "{what}: {err}");
    }
    // A token id outside the vocabulary.
    let mut b = bytes.clone();
    b[HEADER_BYTES..HEADER_BYTES + 4].copy_from_slice(&1000u32.to_le_bytes());
    std::fs::write(&damaged, &b).unwrap();
    assert!(KlBase::read(&damaged).unwrap_err().to_string().contains("outside the vocabulary"));
}
