//! The adapter's gradients: the chain rule through `W + s·B·A` against exact finite
//! differences in f64, and the whole path (merge → student forward → fused head + CE/KL →
//! backward → pair gradients) against central differences of the f32 loss, with the engine's
//! bound (`engine::tests`: h = 1e-2, |fd − analytic| ≤ 1e-2·max|analytic| + 1e-4); initialization
//! and the file written.

use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;

use super::*;
use crate::engine::head_loss::{head_loss, LossWeights, TeacherHead};
use crate::engine::tests::{fd_check, rand_vec};
use crate::engine::tests_model::{random_params, tiny_config};
use crate::student::{backward, forward};

/// A set with random (non-zero) B so both halves get gradients.
fn random_set(cfg: &StudentConfig, targets: &[Target], rank: usize, seed: u64) -> LoraSet {
    let mut set = LoraSet::init(cfg, targets, rank, 3.0, seed).unwrap();
    let mut rng = ChaCha8Rng::seed_from_u64(seed + 1);
    for p in &mut set.pairs {
        p.b.iter_mut().for_each(|x| *x = rng.gen_range(-0.5..0.5));
    }
    set
}

/// With a loss linear in the merged weights, `L = Σ_pairs Σ C ⊙ (W + s·B·A)`, G = C exactly and L
/// is bilinear in (A, B): a central difference in f64 has no truncation error, so the f32
/// analytic gradients must match it to f32 rounding of a rank-length (or n-length) dot
/// product, bounded here by 1e-5 of the gradient's scale.
#[test]
fn chain_rule_matches_exact_differences_in_f64() {
    let cfg = tiny_config(true);
    let set = random_set(&cfg, &Target::ALL, 3, 5);
    let mut rng = ChaCha8Rng::seed_from_u64(9);
    let mut g = Params::zeros(&cfg);
    for p in &set.pairs {
        let w = p.target.weight_mut(&mut g.layers[p.layer]);
        w.iter_mut().for_each(|x| *x = rng.gen_range(-1.0..1.0));
    }
    let mut out = set.zero_grads();
    set.grads_from_full(&g, &mut out);
    let s = set.scale() as f64;
    let r = set.rank;
    for (p, (da, db)) in set.pairs.iter().zip(&out) {
        let c: Vec<f64> = p.target.weight(&g.layers[p.layer]).iter().map(|&x| x as f64).collect();
        let loss = |a: &[f64], b: &[f64]| -> f64 {
            let mut sum = 0.0;
            for o in 0..p.n_out {
                for i in 0..p.n_in {
                    let ba: f64 = (0..r).map(|k| b[o * r + k] * a[k * p.n_in + i]).sum();
                    sum += c[o * p.n_in + i] * s * ba;
                }
            }
            sum
        };
        let (a, b): (Vec<f64>, Vec<f64>) = (p.a.iter().map(|&x| x as f64).collect(), p.b.iter().map(|&x| x as f64).collect());
        let h = 0.5;
        let check = |what: &str, x: &[f64], analytic: &[f32], f: &dyn Fn(&[f64]) -> f64| {
            let scale = analytic.iter().fold(0f64, |m, &v| m.max(v.abs() as f64));
            assert!(scale > 0.0, "{what}: zero gradient");
            let mut xp = x.to_vec();
            for i in 0..x.len() {
                xp[i] = x[i] + h;
                let up = f(&xp);
                xp[i] = x[i] - h;
                let down = f(&xp);
                xp[i] = x[i];
                let fd = (up - down) / (2.0 * h);
                assert!((fd - analytic[i] as f64).abs() <= 1e-5 * scale, "{what}[{i}]: fd {fd}, analytic {}", analytic[i]);
            }
        };
        check(&format!("{} dA", p.base_name()), &a, da, &|x| loss(x, &b));
        check(&format!("{} dB", p.base_name()), &b, db, &|x| loss(&a, x));
    }
}

/// The whole training path on a tiny student: CE + T²·KL against a random teacher head.
#[test]
fn adapter_gradients_through_the_student_match_finite_differences() {
    for tied in [true, false] {
        let cfg = tiny_config(tied);
        let mut rng = ChaCha8Rng::seed_from_u64(31);
        let base = random_params(&cfg, &mut rng);
        let set = random_set(&cfg, &[Target::Q, Target::K, Target::V, Target::O, Target::Gate, Target::Up, Target::Down], 2, 7);
        let (n_seq, seq_len, td) = (2, 5, 6);
        let n = n_seq * seq_len;
        let tokens: Vec<u32> = (0..n).map(|_| rng.gen_range(0..cfg.n_vocab as u32)).collect();
        let targets: Vec<u32> = (0..n).map(|_| rng.gen_range(0..cfg.n_vocab as u32)).collect();
        let t_hidden = rand_vec(&mut rng, n * td, 1.0);
        let t_head = rand_vec(&mut rng, cfg.n_vocab * td, 1.5);
        let w = LossWeights { ce: 0.5, kl: 1.0, temperature: 1.3 };
        // Loss (and, when asked, the pair gradients) of `set` on top of `base`.
        let run = |set: &LoraSet, grads_out: Option<&mut Vec<(Vec<f32>, Vec<f32>)>>| -> f64 {
            let mut merged = base.clone();
            set.merge_into(&base, &mut merged);
            let acts = forward(&cfg, &merged, &tokens, n_seq).unwrap();
            let head = merged.output.as_deref().unwrap_or(&merged.embed);
            let mut grads = Params::zeros(&cfg);
            let mut d_hidden = vec![0f32; acts.hidden().len()];
            let d_head = grads.output.as_mut().unwrap_or(&mut grads.embed);
            let teacher = TeacherHead { hidden: &t_hidden, weight: &t_head, n_embd: td, rows: None };
            let parts = head_loss(acts.hidden(), head, cfg.n_embd, &targets, Some(teacher), &w, 4, 1.0, &mut d_hidden, d_head).unwrap();
            if let Some(out) = grads_out {
                backward(&cfg, &merged, &acts, &d_hidden, &[], &mut grads).unwrap();
                set.grads_from_full(&grads, out);
            }
            parts.loss
        };
        let mut analytic = set.zero_grads();
        run(&set, Some(&mut analytic));
        for (i, p) in set.pairs.iter().enumerate() {
            for half in 0..2 {
                let (x, g) = if half == 0 { (&p.a, &analytic[i].0) } else { (&p.b, &analytic[i].1) };
                let what = format!("tied={tied} {} lora_{}", p.base_name(), ["a", "b"][half]);
                fd_check(&what, &mut rng, x, g, 6, |x| {
                    let mut q = set.clone();
                    if half == 0 { q.pairs[i].a.copy_from_slice(x) } else { q.pairs[i].b.copy_from_slice(x) }
                    run(&q, None)
                });
            }
        }
    }
}

#[test]
fn init_is_peft_like_and_bad_settings_are_refused() {
    let cfg = tiny_config(true);
    let set = LoraSet::init(&cfg, &[Target::Q, Target::Down], 2, 4.0, 1).unwrap();
    assert_eq!(set.pairs.len(), 2 * cfg.n_layer);
    assert_eq!(set.scale(), 2.0);
    for p in &set.pairs {
        let bound = 1.0 / (p.n_in as f32).sqrt();
        assert!(p.a.iter().all(|x| x.abs() <= bound) && p.a.iter().any(|&x| x != 0.0));
        assert!(p.b.iter().all(|&x| x == 0.0));
    }
    // B = 0: merging gives the base weights back exactly.
    let base = random_params(&cfg, &mut ChaCha8Rng::seed_from_u64(2));
    let mut merged = base.clone();
    set.merge_into(&base, &mut merged);
    assert_eq!(merged, base);
    assert!(LoraSet::init(&cfg, &[Target::Q], 0, 4.0, 1).is_err());
    assert!(LoraSet::init(&cfg, &[Target::Q], 99, 4.0, 1).unwrap_err().to_string().contains("99"));
    assert!(LoraSet::init(&cfg, &[Target::Q], 2, f32::NAN, 1).is_err());
    assert!(LoraSet::init(&cfg, &[], 2, 4.0, 1).is_err());
    assert_eq!(parse_targets("q, gate,q").unwrap(), vec![Target::Q, Target::Gate]);
    assert_eq!(parse_targets("all").unwrap(), Target::ALL.to_vec());
    let err = parse_targets("q,proj").unwrap_err().to_string();
    assert!(err.contains("\"proj\""), "{err}");
}

#[test]
fn the_written_adapter_loads_in_the_runtime_with_the_same_numbers() {
    let cfg = tiny_config(true);
    let set = random_set(&cfg, &[Target::V, Target::Up], 2, 3);
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("a.lora.gguf");
    set.write_gguf("llama", &[], &path).unwrap();
    let loaded = nexus_runtime::adapter::LoraAdapter::load(&path).unwrap();
    assert_eq!(loaded.alpha, 3.0);
    assert_eq!(loaded.weights.len(), set.pairs.len());
    for p in &set.pairs {
        let w = loaded.weights.iter().find(|w| w.base == p.base_name()).unwrap();
        assert_eq!((w.rank, w.n_in, w.n_out), (2, p.n_in, p.n_out));
        assert_eq!((&w.a_f32()[..], &w.b_f32()[..]), (&p.a[..], &p.b[..]));
        assert_eq!(loaded.effective_scale(1.0, w.rank), set.scale());
    }
}
