//! The rejection rule keeps the target's distribution: a chi-square test over many seeded
//! draws on a small vocabulary, and the same test failing for rules known to be wrong.

use rand::SeedableRng;
use rand_chacha::ChaCha8Rng;

use super::{top_probability, verify_token};
use crate::sampling::TokenProbs;

/// The target's distribution: token 5 impossible, the rest not.
const P: [f64; 6] = [0.35, 0.25, 0.2, 0.1, 0.1, 0.0];
/// The draft's: overconfident on 1, never proposes 3, proposes the impossible 5.
const Q: [f64; 6] = [0.1, 0.4, 0.2, 0.0, 0.05, 0.25];
const DRAWS: usize = 200_000;

fn probs(p: &[f64]) -> TokenProbs {
    TokenProbs::from_weights(p.iter().enumerate().map(|(i, &w)| (i as u32, w))).unwrap()
}

/// A rule maps (p, q, the draft's token, rng) to the token that comes out.
type Rule = fn(&TokenProbs, &TokenProbs, u32, &mut ChaCha8Rng) -> u32;

/// How often each token comes out when the draft draws from `Q` and `rule` decides.
fn outcomes(rule: Rule, seed: u64) -> [usize; 6] {
    let (p, q) = (probs(&P), probs(&Q));
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    let mut counts = [0usize; 6];
    for _ in 0..DRAWS {
        let x = q.draw(&mut rng);
        counts[rule(&p, &q, x, &mut rng) as usize] += 1;
    }
    counts
}

/// Pearson's chi-square of `counts` against `P`; a token `P` makes impossible counts as an
/// infinite deviation if it ever comes out.
fn chi_square(counts: &[usize; 6]) -> f64 {
    counts
        .iter()
        .zip(P)
        .map(|(&c, p)| {
            let expected = p * DRAWS as f64;
            match (expected > 0.0, c) {
                (true, _) => (c as f64 - expected).powi(2) / expected,
                (false, 0) => 0.0,
                (false, _) => f64::INFINITY,
            }
        })
        .sum()
}

/// Four degrees of freedom (five possible tokens): P(χ² > 25) ≈ 5e-5 for a correct rule, while a
/// wrong rule below lands in the thousands. Seeded, so the verdicts cannot flake.
const CRITICAL: f64 = 25.0;

fn the_rule(p: &TokenProbs, q: &TokenProbs, x: u32, rng: &mut ChaCha8Rng) -> u32 {
    verify_token(p, q, x, rng).unwrap_or(x)
}

#[test]
fn rejection_rule_gives_the_target_distribution() {
    for seed in [1, 2, 3] {
        let counts = outcomes(the_rule, seed);
        let chi2 = chi_square(&counts);
        assert!(chi2 < CRITICAL, "seed {seed}: chi2 = {chi2}, counts = {counts:?}");
    }
}

#[test]
fn the_test_rejects_wrong_rules() {
    // Keeping every draft token gives the draft's distribution.
    let always_accept: Rule = |_, _, x, _| x;
    // Replacing a rejected token with a draw from p instead of the residual over-weights the
    // tokens both models like.
    let resample_from_p: Rule = |p, q, x, rng| verify_token(p, q, x, rng).map_or(x, |_| p.draw(rng));
    for (name, rule) in [("always accept", always_accept), ("resample from p", resample_from_p)] {
        let counts = outcomes(rule, 1);
        let chi2 = chi_square(&counts);
        assert!(chi2 > 1000.0, "{name}: chi2 = {chi2} would pass, counts = {counts:?}");
    }
}

#[test]
fn greedy_distributions_keep_only_the_argmax() {
    let mut rng = ChaCha8Rng::seed_from_u64(0);
    let (target, draft) = (TokenProbs::one_hot(4), TokenProbs::one_hot(7));
    for _ in 0..100 {
        assert_eq!(verify_token(&target, &target, 4, &mut rng), None);
        assert_eq!(verify_token(&target, &draft, 7, &mut rng), Some(4));
    }
}

#[test]
fn top_probability_is_the_softmax_maximum() {
    assert!((top_probability(&[0.0, 0.0]) - 0.5).abs() < 1e-6);
    assert!((top_probability(&[2.0f32.ln(), 0.0, f32::NEG_INFINITY, f32::NAN]) - 2.0 / 3.0).abs() < 1e-6);
    assert_eq!(top_probability(&[f32::NAN]), 0.0);
    assert_eq!(top_probability(&[]), 0.0);
}
