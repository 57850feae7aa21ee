//! The training engine against PyTorch autograd: every op's output and gradients, and a tiny
//! whole student's (tied and untied head, with an anchoring gradient on one residual stream),
//! on the inputs `scripts/train/make_grad_fixtures.py` wrote to `tests/fixtures/train_grads/`.
//!
//! Tolerance, per tensor: max|rust − torch| / max(max|torch|, 1e-3) ≤ 1e-4, i.e. relative to
//! the tensor's scale (both sides are f32 with different summation orders; measured errors are
//! around 1e-6), absolute below 1e-3 so an all-but-zero tensor cannot demand exactness.

use nexus_train::engine::attention::{self, AttnShape};
use nexus_train::engine::head_loss::{head_loss, LossWeights, TeacherHead, IGNORE};
use nexus_train::engine::rope::RopeTable;
use nexus_train::engine::{embedding, linear, rmsnorm, swiglu};
use nexus_train::student::{backward, forward, Params, StudentConfig};
use safetensors::{Dtype, SafeTensors};
use std::path::PathBuf;

const TOL: f64 = 1e-4;

struct Fixture {
    name: String,
    bytes: Vec<u8>,
}

impl Fixture {
    fn load(name: &str) -> Fixture {
        let path = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
            .join("../tests/fixtures/train_grads")
            .join(format!("{name}.safetensors"));
        let bytes = std::fs::read(&path).unwrap_or_else(|e| {
            panic!(
                "{}: {e} (made by scripts/train/make_grad_fixtures.py)",
                path.display()
            )
        });
        Fixture {
            name: name.into(),
            bytes,
        }
    }

    fn raw(&self, key: &str, dtype: Dtype) -> Vec<[u8; 4]> {
        let st = SafeTensors::deserialize(&self.bytes).expect("valid safetensors");
        let t = st
            .tensor(key)
            .unwrap_or_else(|e| panic!("{}: {key}: {e}", self.name));
        assert_eq!(t.dtype(), dtype, "{}: {key} dtype", self.name);
        t.data()
            .chunks_exact(4)
            .map(|c| c.try_into().unwrap())
            .collect()
    }

    fn f32(&self, key: &str) -> Vec<f32> {
        self.raw(key, Dtype::F32)
            .into_iter()
            .map(f32::from_le_bytes)
            .collect()
    }

    fn i32(&self, key: &str) -> Vec<i32> {
        self.raw(key, Dtype::I32)
            .into_iter()
            .map(i32::from_le_bytes)
            .collect()
    }

    /// Token ids, or targets with -1 as [`IGNORE`].
    fn ids(&self, key: &str) -> Vec<u32> {
        self.i32(key)
            .into_iter()
            .map(|v| if v < 0 { IGNORE } else { v as u32 })
            .collect()
    }

    fn meta(&self, key: &str) -> String {
        let (_, m) = SafeTensors::read_metadata(&self.bytes).expect("valid safetensors");
        let map = m.metadata().as_ref().expect("metadata");
        map.get(key)
            .unwrap_or_else(|| panic!("{}: metadata {key}", self.name))
            .clone()
    }

    fn usize(&self, key: &str) -> usize {
        self.meta(key).parse().unwrap()
    }

    fn float(&self, key: &str) -> f32 {
        self.meta(key).parse().unwrap()
    }

    /// Asserts `got` matches the fixture's `key` within [`TOL`] of its scale.
    fn check(&self, key: &str, got: &[f32]) {
        let want = self.f32(key);
        assert_eq!(got.len(), want.len(), "{}: {key} length", self.name);
        let scale = want
            .iter()
            .fold(0f64, |m, &v| m.max(v.abs() as f64))
            .max(1e-3);
        let (mut worst, mut at) = (0f64, 0);
        for (i, (&a, &b)) in got.iter().zip(&want).enumerate() {
            let e = (a as f64 - b as f64).abs();
            if e > worst || e.is_nan() {
                (worst, at) = (e, i);
            }
        }
        let rel = worst / scale;
        println!("{}: {key}: relative error {rel:.2e}", self.name);
        assert!(
            rel <= TOL,
            "{}: {key}[{at}]: {} vs torch {} (error {rel:.2e} of scale {scale:.3e})",
            self.name,
            got[at],
            want[at]
        );
    }

    fn check_scalar(&self, key: &str, got: f64) {
        self.check(key, &[got as f32]);
    }
}

#[test]
fn linear_matches_torch() {
    let f = Fixture::load("linear");
    let (x, w, dy) = (f.f32("x"), f.f32("w"), f.f32("dy"));
    let (n, d_in) = (13, 19);
    let d_out = w.len() / d_in;
    let mut y = vec![0f32; n * d_out];
    linear::forward(&x, &w, n, d_in, d_out, &mut y, false);
    f.check("y", &y);
    let (mut dx, mut dw) = (vec![0f32; n * d_in], vec![0f32; w.len()]);
    linear::backward_input(&dy, &w, n, d_in, d_out, &mut dx, false);
    linear::backward_weight(&x, &dy, n, d_in, d_out, &mut dw);
    f.check("dx", &dx);
    f.check("dw", &dw);
}

#[test]
fn rmsnorm_matches_torch() {
    let f = Fixture::load("rmsnorm");
    let (x, w, dy) = (f.f32("x"), f.f32("w"), f.f32("dy"));
    let d = w.len();
    let rows = x.len() / d;
    let (mut y, mut rstd) = (vec![0f32; x.len()], vec![0f32; rows]);
    rmsnorm::forward(&x, &w, d, f.float("eps"), &mut y, &mut rstd);
    f.check("y", &y);
    let (mut dx, mut dw) = (vec![0f32; x.len()], vec![0f32; d]);
    rmsnorm::backward(&x, &w, &rstd, &dy, d, &mut dx, false, &mut dw);
    f.check("dx", &dx);
    f.check("dw", &dw);
}

#[test]
fn rope_matches_torch() {
    let f = Fixture::load("rope");
    let (x, dy) = (f.f32("x"), f.f32("dy"));
    let (n_seq, seq_len, hd) = (f.usize("n_seq"), f.usize("seq_len"), f.usize("head_dim"));
    let width = x.len() / (n_seq * seq_len);
    let table = RopeTable::new(hd, f.float("base"), seq_len);
    let mut y = x.clone();
    table.forward(&mut y, width, seq_len);
    f.check("y", &y);
    let mut dx = dy.clone();
    table.backward(&mut dx, width, seq_len);
    f.check("dx", &dx);
}

#[test]
fn attention_matches_torch() {
    for name in ["attention", "attention_long"] {
        let f = Fixture::load(name);
        let s = AttnShape {
            n_seq: f.usize("n_seq"),
            seq_len: f.usize("seq_len"),
            n_head: f.usize("n_head"),
            n_head_kv: f.usize("n_head_kv"),
            head_dim: f.usize("head_dim"),
        };
        let (q, k, v, dy) = (f.f32("q"), f.f32("k"), f.f32("v"), f.f32("dy"));
        let (mut y, mut lse) = (vec![0f32; q.len()], vec![0f32; s.n() * s.n_head]);
        attention::forward(&s, &q, &k, &v, &mut y, &mut lse);
        f.check("y", &y);
        let (mut dq, mut dk, mut dv) = (
            vec![0f32; q.len()],
            vec![0f32; k.len()],
            vec![0f32; v.len()],
        );
        attention::backward(&s, &q, &k, &v, &y, &lse, &dy, &mut dq, &mut dk, &mut dv);
        f.check("dq", &dq);
        f.check("dk", &dk);
        f.check("dv", &dv);
    }
}

#[test]
fn swiglu_matches_torch() {
    let f = Fixture::load("swiglu");
    let (gate, up, dy) = (f.f32("gate"), f.f32("up"), f.f32("dy"));
    let mut y = vec![0f32; gate.len()];
    swiglu::forward(&gate, &up, &mut y);
    f.check("y", &y);
    let (mut dg, mut du) = (vec![0f32; gate.len()], vec![0f32; gate.len()]);
    swiglu::backward(&gate, &up, &dy, &mut dg, &mut du);
    f.check("d_gate", &dg);
    f.check("d_up", &du);
}

#[test]
fn embedding_matches_torch() {
    let f = Fixture::load("embedding");
    let (embed, tokens, dy) = (f.f32("embed"), f.ids("tokens"), f.f32("dy"));
    let d = dy.len() / tokens.len();
    let mut y = vec![0f32; dy.len()];
    embedding::forward(&embed, &tokens, d, &mut y);
    f.check("y", &y);
    let mut de = vec![0f32; embed.len()];
    embedding::backward(&tokens, &dy, d, &mut de);
    f.check("d_embed", &de);
}

#[test]
fn head_loss_matches_torch_at_every_chunk_size() {
    for name in ["head_loss", "head_loss_ce"] {
        let f = Fixture::load(name);
        let (hidden, head, targets) = (f.f32("hidden"), f.f32("head"), f.ids("targets"));
        let d = hidden.len() / targets.len();
        let n_vocab = head.len() / d;
        let with_teacher = f.f32("kl")[0] != 0.0;
        let (t_hidden, t_head) = if with_teacher {
            (f.f32("t_hidden"), f.f32("t_head"))
        } else {
            (vec![], vec![])
        };
        let td = t_hidden.len() / targets.len().max(1);
        let w = LossWeights {
            ce: f.float("ce"),
            kl: f.float("kl"),
            temperature: f.float("temperature"),
        };
        for chunk in [1, 7, n_vocab] {
            let teacher = with_teacher.then(|| TeacherHead {
                hidden: &t_hidden,
                weight: &t_head,
                n_embd: td,
                rows: None,
            });
            let (mut dh, mut dw) = (vec![0f32; hidden.len()], vec![0f32; head.len()]);
            let p = head_loss(
                &hidden,
                &head,
                d,
                &targets,
                teacher,
                &w,
                chunk,
                f.float("grad_scale"),
                &mut dh,
                &mut dw,
            )
            .unwrap();
            println!("{name}: chunk {chunk}");
            f.check_scalar("loss", p.loss);
            f.check_scalar("ce", p.ce);
            f.check_scalar("kl", p.kl);
            assert_eq!(p.agree as i32, f.i32("agree")[0], "{name}: agree");
            assert_eq!(p.n, targets.iter().filter(|&&t| t != IGNORE).count());
            f.check("d_hidden", &dh);
            f.check("d_head", &dw);
        }
    }
}

fn check_model(name: &str) {
    let f = Fixture::load(name);
    let tokens = f.ids("tokens");
    let n_seq = f.usize("n_seq");
    let cfg = StudentConfig {
        n_vocab: f.usize("n_vocab"),
        n_embd: f.usize("n_embd"),
        n_layer: f.usize("n_layer"),
        n_head: f.usize("n_head"),
        n_head_kv: f.usize("n_head_kv"),
        head_dim: f.usize("head_dim"),
        n_ff: f.usize("n_ff"),
        rms_eps: f.float("rms_eps"),
        rope_base: f.float("rope_base"),
        n_ctx: tokens.len() / n_seq,
        tied: f.meta("tied") == "true",
    };
    let mut p = Params::zeros(&cfg);
    let names: Vec<String> = p.named().into_iter().map(|(n, _)| n).collect();
    for (t, n) in p.tensors_mut().into_iter().zip(&names) {
        t.copy_from_slice(&f.f32(&format!("param.{n}")));
    }

    let acts = forward(&cfg, &p, &tokens, n_seq).unwrap();
    for l in 0..cfg.n_layer {
        f.check(&format!("residual.{l}"), acts.residual(l));
    }
    f.check("hidden", acts.hidden());

    let (t_hidden, t_head) = (f.f32("t_hidden"), f.f32("t_head"));
    let teacher = TeacherHead {
        hidden: &t_hidden,
        weight: &t_head,
        n_embd: t_hidden.len() / tokens.len(),
        rows: None,
    };
    let w = LossWeights {
        ce: f.float("ce"),
        kl: f.float("kl"),
        temperature: f.float("temperature"),
    };
    let mut grads = Params::zeros(&cfg);
    let mut d_hidden = vec![0f32; acts.hidden().len()];
    let head = p.output.as_deref().unwrap_or(&p.embed);
    let d_head = grads.output.as_mut().unwrap_or(&mut grads.embed);
    let parts = head_loss(
        acts.hidden(),
        head,
        cfg.n_embd,
        &f.ids("targets"),
        Some(teacher),
        &w,
        16,
        1.0,
        &mut d_hidden,
        d_head,
    )
    .unwrap();
    f.check_scalar("loss", parts.loss);
    assert_eq!(parts.agree as i32, f.i32("agree")[0], "{name}: agree");
    let anchoring = [(f.usize("anchor_layer"), f.f32("anchor"))];
    backward(&cfg, &p, &acts, &d_hidden, &anchoring, &mut grads).unwrap();
    for (n, g) in grads.named() {
        f.check(&format!("grad.{n}"), g);
    }
}

#[test]
fn untied_student_matches_torch() {
    check_model("model_untied");
}

#[test]
fn tied_student_matches_torch() {
    check_model("model_tied");
}
