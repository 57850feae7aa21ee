//! The whole student: forward → head loss (CE + KL against a random teacher) → backward with an
//! anchoring gradient on one layer's residual stream, against finite differences of the
//! same scalar; bad input to forward and backward as errors; gradient accumulation.
//! Bounds as in `tests.rs`.

use super::head_loss::{head_loss, LossWeights, TeacherHead, IGNORE};
use super::tests::{dot, fd_check, rand_vec};
use super::EngineError;
use crate::student::{backward, forward, LayerParams, Params, StudentConfig};
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;

pub(crate) fn tiny_config(tied: bool) -> StudentConfig {
    StudentConfig {
        n_vocab: 11,
        n_embd: 10,
        n_layer: 2,
        n_head: 4,
        n_head_kv: 2,
        head_dim: 4,
        n_ff: 14,
        rms_eps: 1e-5,
        rope_base: 10000.0,
        n_ctx: 16,
        tied,
    }
}

/// Random weights at a scale that keeps activations O(1).
pub(crate) fn random_params(cfg: &StudentConfig, rng: &mut ChaCha8Rng) -> Params {
    let mut p = Params::zeros(cfg);
    for (t, (name, _)) in p.tensors_mut().into_iter().zip(Params::zeros(cfg).named()) {
        let is_norm = name.ends_with("norm.weight");
        for v in t.iter_mut() {
            *v = if is_norm {
                1.0 + rng.gen_range(-0.3..0.3)
            } else {
                rng.gen_range(-0.5..0.5)
            };
        }
    }
    p
}

struct Case {
    cfg: StudentConfig,
    tokens: Vec<u32>,
    targets: Vec<u32>,
    n_seq: usize,
    t_hidden: Vec<f32>,
    t_head: Vec<f32>,
    td: usize,
    /// Gradient of the anchoring term w.r.t. the residual after `anchor_layer`.
    anchor: Vec<f32>,
    anchor_layer: usize,
    w: LossWeights,
}

impl Case {
    fn new(tied: bool, seed: u64) -> Case {
        let mut rng = ChaCha8Rng::seed_from_u64(seed);
        let cfg = tiny_config(tied);
        let (n_seq, seq_len, td) = (2, 5, 7);
        let n = n_seq * seq_len;
        let tokens: Vec<u32> = (0..n)
            .map(|_| rng.gen_range(0..cfg.n_vocab as u32))
            .collect();
        let mut targets: Vec<u32> = (0..n)
            .map(|_| rng.gen_range(0..cfg.n_vocab as u32))
            .collect();
        targets[seq_len - 1] = IGNORE;
        Case {
            t_hidden: rand_vec(&mut rng, n * td, 1.0),
            t_head: rand_vec(&mut rng, cfg.n_vocab * td, 1.5),
            anchor: rand_vec(&mut rng, n * cfg.n_embd, 0.3),
            cfg,
            tokens,
            targets,
            n_seq,
            td,
            anchor_layer: 0,
            w: LossWeights {
                ce: 0.8,
                kl: 1.1,
                temperature: 1.5,
            },
        }
    }

    fn head<'p>(&self, p: &'p Params) -> &'p [f32] {
        p.output.as_deref().unwrap_or(&p.embed)
    }

    /// The scalar: head loss + Σ anchor ⊙ residual(anchor_layer).
    fn loss(&self, p: &Params) -> f64 {
        let acts = forward(&self.cfg, p, &self.tokens, self.n_seq).unwrap();
        let head = self.head(p);
        let (mut dh, mut dw) = (vec![0f32; acts.hidden().len()], vec![0f32; head.len()]);
        let teacher = TeacherHead {
            hidden: &self.t_hidden,
            weight: &self.t_head,
            n_embd: self.td,
            rows: None,
        };
        let parts = head_loss(
            acts.hidden(),
            head,
            self.cfg.n_embd,
            &self.targets,
            Some(teacher),
            &self.w,
            4,
            1.0,
            &mut dh,
            &mut dw,
        )
        .unwrap();
        parts.loss + dot(&self.anchor, acts.residual(self.anchor_layer))
    }

    /// Gradients of [`Case::loss`] by head_loss + backward (into `grads`, which may hold a
    /// previous micro-batch's).
    fn grads(&self, p: &Params, grads: &mut Params) {
        let acts = forward(&self.cfg, p, &self.tokens, self.n_seq).unwrap();
        let mut d_hidden = vec![0f32; acts.hidden().len()];
        let teacher = TeacherHead {
            hidden: &self.t_hidden,
            weight: &self.t_head,
            n_embd: self.td,
            rows: None,
        };
        let head = self.head(p);
        let d_head = grads.output.as_mut().unwrap_or(&mut grads.embed);
        head_loss(
            acts.hidden(),
            head,
            self.cfg.n_embd,
            &self.targets,
            Some(teacher),
            &self.w,
            4,
            1.0,
            &mut d_hidden,
            d_head,
        )
        .unwrap();
        let anchoring = [(self.anchor_layer, self.anchor.clone())];
        backward(&self.cfg, p, &acts, &d_hidden, &anchoring, grads).unwrap();
    }
}

fn check_model(tied: bool, seed: u64) {
    let case = Case::new(tied, seed);
    let mut rng = ChaCha8Rng::seed_from_u64(seed + 100);
    let p = random_params(&case.cfg, &mut rng);
    let mut grads = Params::zeros(&case.cfg);
    case.grads(&p, &mut grads);
    let names: Vec<String> = p.named().into_iter().map(|(n, _)| n).collect();
    for (i, name) in names.iter().enumerate() {
        let analytic = grads.named()[i].1.to_vec();
        let x = p.named()[i].1.to_vec();
        fd_check(
            &format!("tied={tied} {name}"),
            &mut rng,
            &x,
            &analytic,
            24,
            |x| {
                let mut q = p.clone();
                q.tensors_mut()[i].copy_from_slice(x);
                case.loss(&q)
            },
        );
    }
    // A second micro-batch accumulates: gradients double.
    let once = grads.clone();
    case.grads(&p, &mut grads);
    for ((name, a), (_, b)) in grads.named().into_iter().zip(once.named()) {
        for (&x, &y) in a.iter().zip(b) {
            assert!(
                (x - 2.0 * y).abs() <= 1e-5 * y.abs().max(1e-2),
                "{name}: {x} vs 2 × {y}"
            );
        }
    }
}

#[test]
fn whole_model_gradients_untied() {
    check_model(false, 21);
}

#[test]
fn whole_model_gradients_tied() {
    check_model(true, 22);
}

#[test]
fn forward_and_backward_reject_bad_input() {
    let cfg = tiny_config(false);
    let mut rng = ChaCha8Rng::seed_from_u64(5);
    let p = random_params(&cfg, &mut rng);
    let tokens = [1u32, 2, 3, 4, 5, 6];
    assert!(matches!(
        forward(&cfg, &p, &tokens, 4),
        Err(EngineError::Batch { .. })
    ));
    assert!(matches!(
        forward(&cfg, &p, &tokens, 0),
        Err(EngineError::Batch { .. })
    ));
    assert!(matches!(
        forward(&cfg, &p, &[], 1),
        Err(EngineError::Batch { .. })
    ));
    assert!(matches!(
        forward(&cfg, &p, &[1, 11], 1),
        Err(EngineError::Token {
            index: 1,
            token: 11,
            ..
        })
    ));
    let mut odd = cfg.clone();
    odd.head_dim = 3;
    assert!(matches!(
        forward(&odd, &p, &tokens, 2),
        Err(EngineError::Config(_))
    ));
    let mut groups = cfg.clone();
    groups.n_head_kv = 3;
    assert!(matches!(
        forward(&groups, &p, &tokens, 2),
        Err(EngineError::Config(_))
    ));
    let tied = StudentConfig {
        tied: true,
        ..cfg.clone()
    };
    assert!(matches!(
        forward(&tied, &p, &tokens, 2),
        Err(EngineError::Config(_))
    ));
    let mut short = p.clone();
    short.layers[1] = LayerParams {
        w_up: vec![0.0; 3],
        ..short.layers[1].clone()
    };
    let err = forward(&cfg, &short, &tokens, 2).err().expect("short w_up");
    assert!(err.to_string().contains("blk.1.ffn_up.weight"), "{err}");

    let acts = forward(&cfg, &p, &tokens, 2).unwrap();
    let n = tokens.len() * cfg.n_embd;
    let mut grads = Params::zeros(&cfg);
    assert!(
        backward(&cfg, &p, &acts, &vec![0.0; n - 1], &[], &mut grads).is_err(),
        "short d_hidden"
    );
    assert!(
        backward(
            &cfg,
            &p,
            &acts,
            &vec![0.0; n],
            &[(2, vec![0.0; n])],
            &mut grads
        )
        .is_err(),
        "layer 2"
    );
    assert!(
        backward(
            &cfg,
            &p,
            &acts,
            &vec![0.0; n],
            &[(0, vec![0.0; 3])],
            &mut grads
        )
        .is_err(),
        "short anchor"
    );
    let mut tied_grads = Params::zeros(&StudentConfig {
        tied: true,
        ..cfg.clone()
    });
    assert!(
        backward(&cfg, &p, &acts, &vec![0.0; n], &[], &mut tied_grads).is_err(),
        "grads of another shape"
    );
    let other = forward(&cfg, &p, &tokens[..4], 2).unwrap();
    assert!(
        backward(&cfg, &p, &other, &vec![0.0; n], &[], &mut grads).is_err(),
        "activations of another batch"
    );
    assert!(backward(
        &cfg,
        &p,
        &acts,
        &vec![0.0; n],
        &[(1, vec![0.0; n])],
        &mut grads
    )
    .is_ok());
}

/// Sequences in a batch do not see each other: each one's hidden states equal those of the
/// sequence run alone.
#[test]
fn sequences_are_independent() {
    let cfg = tiny_config(true);
    let mut rng = ChaCha8Rng::seed_from_u64(6);
    let p = random_params(&cfg, &mut rng);
    let tokens: Vec<u32> = (0..15)
        .map(|_| rng.gen_range(0..cfg.n_vocab as u32))
        .collect();
    let batch = forward(&cfg, &p, &tokens, 3).unwrap();
    let d = cfg.n_embd;
    for s in 0..3 {
        let alone = forward(&cfg, &p, &tokens[s * 5..(s + 1) * 5], 1).unwrap();
        let got = &batch.hidden()[s * 5 * d..(s + 1) * 5 * d];
        for (a, b) in got.iter().zip(alone.hidden()) {
            assert!(
                (a - b).abs() <= 1e-5 * b.abs().max(1.0),
                "sequence {s}: {a} vs {b}"
            );
        }
        assert_eq!(
            batch.residual(1)[s * 5 * d..(s + 1) * 5 * d].len(),
            alone.residual(1).len()
        );
    }
}

/// Collects what the runtime's forward pass shows a probe.
#[derive(Default)]
struct Recorder {
    residuals: Vec<Vec<f32>>,
    hidden: Vec<f32>,
}

impl nexus_runtime::model::Probe for Recorder {
    fn residual(&mut self, _layer: usize, x: &[f32]) {
        self.residuals.push(x.to_vec());
    }
    fn final_hidden(&mut self, normed: &[f32]) {
        self.hidden = normed.to_vec();
    }
}


/// The engine's forward is the runtime's: the student, written as a GGUF and run by
/// `nexus_runtime::model::Model` one sequence at a time, gives the same residual streams and
/// final hidden states as the batched training forward (to 1e-5 of their scale: both are f32,
/// summed in different orders), tied and untied.
#[test]
fn forward_matches_the_runtime() {
    for tied in [false, true] {
        let cfg = StudentConfig {
            n_ctx: 32,
            ..tiny_config(tied)
        };
        let mut rng = ChaCha8Rng::seed_from_u64(31);
        let p = random_params(&cfg, &mut rng);
        let path = std::env::temp_dir().join(format!(
            "nexus-engine-parity-{}-{tied}.gguf",
            std::process::id()
        ));
        crate::test_util::write_f32_gguf(&cfg, &p, &[], &path);
        let model = nexus_runtime::model::Model::load(&path).unwrap();
        let _ = std::fs::remove_file(&path);
        let (n_seq, seq_len, d) = (3, 9, cfg.n_embd);
        let tokens: Vec<u32> = (0..n_seq * seq_len)
            .map(|_| rng.gen_range(0..cfg.n_vocab as u32))
            .collect();
        let acts = forward(&cfg, &p, &tokens, n_seq).unwrap();
        for s in 0..n_seq {
            let mut rec = Recorder::default();
            let mut cache = model.new_cache(seq_len);
            let seq = &tokens[s * seq_len..(s + 1) * seq_len];
            model
                .forward_probed(
                    seq,
                    &mut cache,
                    nexus_runtime::model::Logits::None,
                    &mut rec,
                )
                .unwrap();
            let rows = s * seq_len * d..(s + 1) * seq_len * d;
            let mut pairs: Vec<(String, &[f32], &[f32])> = (0..cfg.n_layer)
                .map(|l| {
                    (
                        format!("residual {l}"),
                        &acts.residual(l)[rows.clone()],
                        rec.residuals[l].as_slice(),
                    )
                })
                .collect();
            pairs.push(("hidden".into(), &acts.hidden()[rows.clone()], &rec.hidden));
            for (what, ours, theirs) in pairs {
                let what = format!("tied={tied} seq {s} {what}");
                crate::test_util::assert_close(&what, ours, theirs, 1e-5);
            }
        }
    }
}
