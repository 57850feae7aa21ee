//! Each op's backward against central finite differences of its own forward, on random inputs
//! (no fixture needed, so a regression shows even where the PyTorch fixtures are absent), and
//! forwards against float64 loops written here from the definitions.
//!
//! The scalar probed is `L = Σ dy ⊙ y` for a random `dy`, summed in f64. With f32 forwards,
//! a central difference at step h = 1e-2 is good to ~1e-3 of the gradient's scale (rounding
//! ~1e-7·|L|/h, truncation ~h²·|f'''|), so the bound is |fd − analytic| ≤ 1e-2 · max|analytic|
//! (+1e-4 absolute): loose against noise, tight against a wrong term (those are O(1)).

use super::attention::{self, AttnShape, BLOCK_ROWS};
use super::head_loss::{head_loss, teacher_rows, LossWeights, TeacherHead, IGNORE};
use super::rope::RopeTable;
use super::{embedding, linear, rmsnorm, swiglu};
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;

pub(crate) fn rand_vec(rng: &mut ChaCha8Rng, n: usize, scale: f32) -> Vec<f32> {
    (0..n).map(|_| rng.gen_range(-scale..scale)).collect()
}

pub(crate) fn dot(a: &[f32], b: &[f32]) -> f64 {
    a.iter().zip(b).map(|(&x, &y)| x as f64 * y as f64).sum()
}

const H: f32 = 1e-2;

/// Compares `analytic` with central differences of `f` at up to `probes` coordinates of `x`
/// (all when fewer), chosen at random.
pub(crate) fn fd_check(
    what: &str,
    rng: &mut ChaCha8Rng,
    x: &[f32],
    analytic: &[f32],
    probes: usize,
    f: impl Fn(&[f32]) -> f64,
) {
    assert_eq!(x.len(), analytic.len(), "{what}: gradient length");
    let scale = analytic.iter().fold(0f32, |m, &g| m.max(g.abs())) as f64;
    assert!(scale > 0.0, "{what}: analytic gradient is all zero");
    let coords: Vec<usize> = if x.len() <= probes {
        (0..x.len()).collect()
    } else {
        (0..probes).map(|_| rng.gen_range(0..x.len())).collect()
    };
    let mut xp = x.to_vec();
    for i in coords {
        xp[i] = x[i] + H;
        let up = f(&xp);
        xp[i] = x[i] - H;
        let down = f(&xp);
        xp[i] = x[i];
        let fd = (up - down) / (2.0 * H as f64);
        let err = (fd - analytic[i] as f64).abs();
        assert!(
            err <= 1e-2 * scale + 1e-4,
            "{what}[{i}]: finite difference {fd}, analytic {} (scale {scale})",
            analytic[i]
        );
    }
}

#[test]
fn linear_gradients() {
    let mut rng = ChaCha8Rng::seed_from_u64(1);
    let (n, di, dout) = (5, 7, 3);
    let (x, w, dy) = (
        rand_vec(&mut rng, n * di, 1.0),
        rand_vec(&mut rng, dout * di, 1.0),
        rand_vec(&mut rng, n * dout, 1.0),
    );
    let loss = |x: &[f32], w: &[f32]| {
        let mut y = vec![0f32; n * dout];
        linear::forward(x, w, n, di, dout, &mut y, false);
        dot(&y, &dy)
    };
    let mut y = vec![0f32; n * dout];
    linear::forward(&x, &w, n, di, dout, &mut y, false);
    for i in 0..n {
        for o in 0..dout {
            let want: f64 = (0..di)
                .map(|k| x[i * di + k] as f64 * w[o * di + k] as f64)
                .sum();
            assert!(
                (y[i * dout + o] as f64 - want).abs() < 1e-5,
                "linear forward ({i},{o})"
            );
        }
    }
    let mut dx = vec![0f32; n * di];
    linear::backward_input(&dy, &w, n, di, dout, &mut dx, false);
    let mut dw = vec![0f32; dout * di];
    linear::backward_weight(&x, &dy, n, di, dout, &mut dw);
    fd_check("linear dx", &mut rng, &x, &dx, 64, |x| loss(x, &w));
    fd_check("linear dw", &mut rng, &w, &dw, 64, |w| loss(&x, w));
    // The weight gradient accumulates; the input gradient does when asked.
    let before = dw.clone();
    linear::backward_weight(&x, &dy, n, di, dout, &mut dw);
    assert!(dw
        .iter()
        .zip(&before)
        .all(|(a, b)| (a - 2.0 * b).abs() <= 1e-6 * b.abs().max(1.0)));
    let mut dx2 = dx.clone();
    linear::backward_input(&dy, &w, n, di, dout, &mut dx2, true);
    assert!(dx2
        .iter()
        .zip(&dx)
        .all(|(a, b)| (a - 2.0 * b).abs() <= 1e-6 * b.abs().max(1.0)));
}

#[test]
fn rmsnorm_gradients() {
    let mut rng = ChaCha8Rng::seed_from_u64(2);
    let (rows, d, eps) = (37, 9, 1e-5);
    let x = rand_vec(&mut rng, rows * d, 2.0);
    let w: Vec<f32> = (0..d).map(|_| 1.0 + rng.gen_range(-0.5..0.5)).collect();
    let dy = rand_vec(&mut rng, rows * d, 1.0);
    let loss = |x: &[f32], w: &[f32]| {
        let (mut y, mut r) = (vec![0f32; rows * d], vec![0f32; rows]);
        rmsnorm::forward(x, w, d, eps, &mut y, &mut r);
        dot(&y, &dy)
    };
    let (mut y, mut rstd) = (vec![0f32; rows * d], vec![0f32; rows]);
    rmsnorm::forward(&x, &w, d, eps, &mut y, &mut rstd);
    for (i, row) in x.chunks(d).enumerate() {
        let ms: f64 = row.iter().map(|&v| (v as f64).powi(2)).sum::<f64>() / d as f64;
        let r = 1.0 / (ms + eps as f64).sqrt();
        for j in 0..d {
            let want = row[j] as f64 * r * w[j] as f64;
            assert!(
                (y[i * d + j] as f64 - want).abs() < 1e-5 * want.abs().max(1.0),
                "rmsnorm forward"
            );
        }
    }
    let mut again = vec![0f32; rows * d];
    rmsnorm::apply(&x, &w, &rstd, d, &mut again);
    assert_eq!(again, y, "apply reproduces the forward exactly");
    let (mut dx, mut dw) = (vec![0f32; rows * d], vec![0f32; d]);
    rmsnorm::backward(&x, &w, &rstd, &dy, d, &mut dx, false, &mut dw);
    fd_check("rmsnorm dx", &mut rng, &x, &dx, 80, |x| loss(x, &w));
    fd_check("rmsnorm dw", &mut rng, &w, &dw, 80, |w| loss(&x, w));
    let mut dx2 = dx.clone();
    let mut dw2 = dw.clone();
    rmsnorm::backward(&x, &w, &rstd, &dy, d, &mut dx2, true, &mut dw2);
    assert!(dx2
        .iter()
        .zip(&dx)
        .all(|(a, b)| (a - 2.0 * b).abs() <= 1e-6 * b.abs().max(1.0)));
    assert!(dw2
        .iter()
        .zip(&dw)
        .all(|(a, b)| (a - 2.0 * b).abs() <= 1e-6 * b.abs().max(1.0)));
}

#[test]
fn rope_gradients() {
    let mut rng = ChaCha8Rng::seed_from_u64(3);
    let (n_seq, seq_len, heads, hd) = (2, 6, 3, 10);
    let width = heads * hd;
    let table = RopeTable::new(hd, 10000.0, seq_len);
    let x = rand_vec(&mut rng, n_seq * seq_len * width, 1.0);
    let dy = rand_vec(&mut rng, x.len(), 1.0);
    let mut y = x.clone();
    table.forward(&mut y, width, seq_len);
    // Forward from the definition: pair (2i, 2i+1) of each head at angle pos·base^(−2i/hd).
    for (t, row) in x.chunks(width).enumerate() {
        let pos = (t % seq_len) as f64;
        for h in 0..heads {
            for i in 0..hd / 2 {
                let a = pos * 10000f64.powf(-2.0 * i as f64 / hd as f64);
                let (x0, x1) = (row[h * hd + 2 * i] as f64, row[h * hd + 2 * i + 1] as f64);
                let (y0, y1) = (
                    y[t * width + h * hd + 2 * i],
                    y[t * width + h * hd + 2 * i + 1],
                );
                assert!(
                    (y0 as f64 - (x0 * a.cos() - x1 * a.sin())).abs() < 1e-5,
                    "rope forward"
                );
                assert!(
                    (y1 as f64 - (x0 * a.sin() + x1 * a.cos())).abs() < 1e-5,
                    "rope forward"
                );
            }
        }
    }
    let mut dx = dy.clone();
    table.backward(&mut dx, width, seq_len);
    fd_check("rope dx", &mut rng, &x, &dx, 80, |x| {
        let mut y = x.to_vec();
        table.forward(&mut y, width, seq_len);
        dot(&y, &dy)
    });
}

/// Causal GQA attention in f64 from the definition.
fn attention_reference(s: &AttnShape, q: &[f32], k: &[f32], v: &[f32]) -> Vec<f64> {
    let (hd, qd, kvd) = (s.head_dim, s.q_dim(), s.kv_dim());
    let mut out = vec![0f64; s.n() * qd];
    for seq in 0..s.n_seq {
        for h in 0..s.n_head {
            let g = h / (s.n_head / s.n_head_kv);
            for i in 0..s.seq_len {
                let row = seq * s.seq_len + i;
                let scores: Vec<f64> = (0..=i)
                    .map(|j| {
                        let col = seq * s.seq_len + j;
                        (0..hd)
                            .map(|e| {
                                q[row * qd + h * hd + e] as f64 * k[col * kvd + g * hd + e] as f64
                            })
                            .sum::<f64>()
                            / (hd as f64).sqrt()
                    })
                    .collect();
                let m = scores.iter().cloned().fold(f64::NEG_INFINITY, f64::max);
                let z: f64 = scores.iter().map(|s| (s - m).exp()).sum();
                for (j, sc) in scores.iter().enumerate() {
                    let p = (sc - m).exp() / z;
                    let col = seq * s.seq_len + j;
                    for e in 0..hd {
                        out[row * qd + h * hd + e] += p * v[col * kvd + g * hd + e] as f64;
                    }
                }
            }
        }
    }
    out
}

fn check_attention(s: AttnShape, seed: u64, probes: usize) {
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    let (n, qd, kvd) = (s.n(), s.q_dim(), s.kv_dim());
    let q = rand_vec(&mut rng, n * qd, 1.5);
    let k = rand_vec(&mut rng, n * kvd, 1.5);
    let v = rand_vec(&mut rng, n * kvd, 1.0);
    let dy = rand_vec(&mut rng, n * qd, 1.0);
    let run = |q: &[f32], k: &[f32], v: &[f32]| {
        let (mut out, mut lse) = (vec![0f32; n * qd], vec![0f32; n * s.n_head]);
        attention::forward(&s, q, k, v, &mut out, &mut lse);
        (out, lse)
    };
    let (out, lse) = run(&q, &k, &v);
    let want = attention_reference(&s, &q, &k, &v);
    for (i, (&o, &w)) in out.iter().zip(&want).enumerate() {
        assert!(
            (o as f64 - w).abs() < 1e-5,
            "{s:?}: attention forward [{i}]: {o} vs {w}"
        );
    }
    let (mut dq, mut dk, mut dv) = (vec![0f32; n * qd], vec![0f32; n * kvd], vec![0f32; n * kvd]);
    attention::backward(&s, &q, &k, &v, &out, &lse, &dy, &mut dq, &mut dk, &mut dv);
    fd_check("attention dq", &mut rng, &q, &dq, probes, |q| {
        dot(&run(q, &k, &v).0, &dy)
    });
    fd_check("attention dk", &mut rng, &k, &dk, probes, |k| {
        dot(&run(&q, k, &v).0, &dy)
    });
    fd_check("attention dv", &mut rng, &v, &dv, probes, |v| {
        dot(&run(&q, &k, v).0, &dy)
    });
}

#[test]
fn attention_gradients() {
    check_attention(
        AttnShape {
            n_seq: 2,
            seq_len: 5,
            n_head: 4,
            n_head_kv: 2,
            head_dim: 4,
        },
        4,
        200,
    );
    check_attention(
        AttnShape {
            n_seq: 1,
            seq_len: 3,
            n_head: 3,
            n_head_kv: 3,
            head_dim: 2,
        },
        5,
        200,
    );
    // Longer than a block: the row-block walk and its key ranges.
    let long = AttnShape {
        n_seq: 2,
        seq_len: BLOCK_ROWS + 9,
        n_head: 2,
        n_head_kv: 1,
        head_dim: 4,
    };
    check_attention(long, 6, 60);
}

#[test]
fn swiglu_gradients() {
    let mut rng = ChaCha8Rng::seed_from_u64(7);
    let n = 301;
    let gate = rand_vec(&mut rng, n, 4.0);
    let up = rand_vec(&mut rng, n, 2.0);
    let dy = rand_vec(&mut rng, n, 1.0);
    let run = |g: &[f32], u: &[f32]| {
        let mut h = vec![0f32; n];
        swiglu::forward(g, u, &mut h);
        h
    };
    for ((&h, &g), &u) in run(&gate, &up).iter().zip(&gate).zip(&up) {
        let want = g as f64 / (1.0 + (-g as f64).exp()) * u as f64;
        assert!((h as f64 - want).abs() < 1e-5, "swiglu forward");
    }
    let (mut dg, mut du) = (vec![0f32; n], vec![0f32; n]);
    swiglu::backward(&gate, &up, &dy, &mut dg, &mut du);
    fd_check("swiglu d_gate", &mut rng, &gate, &dg, n, |g| {
        dot(&run(g, &up), &dy)
    });
    fd_check("swiglu d_up", &mut rng, &up, &du, n, |u| {
        dot(&run(&gate, u), &dy)
    });
}

#[test]
fn embedding_gradients() {
    let mut rng = ChaCha8Rng::seed_from_u64(8);
    let (vocab, d) = (9, 5);
    let embed = rand_vec(&mut rng, vocab * d, 1.0);
    let tokens = [3u32, 0, 3, 8, 1, 3];
    let mut x = vec![0f32; tokens.len() * d];
    embedding::forward(&embed, &tokens, d, &mut x);
    for (t, &tok) in tokens.iter().enumerate() {
        assert_eq!(
            &x[t * d..(t + 1) * d],
            &embed[tok as usize * d..(tok as usize + 1) * d]
        );
    }
    let dy = rand_vec(&mut rng, x.len(), 1.0);
    let mut de = vec![0f32; vocab * d];
    embedding::backward(&tokens, &dy, d, &mut de);
    fd_check("embedding", &mut rng, &embed, &de, vocab * d, |e| {
        let mut x = vec![0f32; tokens.len() * d];
        embedding::forward(e, &tokens, d, &mut x);
        dot(&x, &dy)
    });
}

struct HeadCase {
    n: usize,
    d: usize,
    vocab: usize,
    td: usize,
    hidden: Vec<f32>,
    head: Vec<f32>,
    t_hidden: Vec<f32>,
    t_head: Vec<f32>,
    targets: Vec<u32>,
}

fn head_case(seed: u64) -> HeadCase {
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    let (n, d, vocab, td) = (9, 6, 23, 5);
    let mut targets: Vec<u32> = (0..n).map(|_| rng.gen_range(0..vocab as u32)).collect();
    targets[2] = IGNORE;
    HeadCase {
        n,
        d,
        vocab,
        td,
        hidden: rand_vec(&mut rng, n * d, 1.0),
        head: rand_vec(&mut rng, vocab * d, 1.0),
        t_hidden: rand_vec(&mut rng, n * td, 1.0),
        t_head: rand_vec(&mut rng, vocab * td, 1.0),
        targets,
    }
}

impl HeadCase {
    fn teacher(&self) -> TeacherHead<'_> {
        TeacherHead {
            hidden: &self.t_hidden,
            weight: &self.t_head,
            n_embd: self.td,
            rows: None,
        }
    }

    /// `(loss parts, d_hidden, d_head)` at chunk size `chunk`.
    fn run(
        &self,
        hidden: &[f32],
        head: &[f32],
        w: &LossWeights,
        chunk: usize,
        teacher: bool,
    ) -> (super::head_loss::LossParts, Vec<f32>, Vec<f32>) {
        let (mut dh, mut dw) = (vec![0f32; hidden.len()], vec![0f32; head.len()]);
        let t = teacher.then(|| self.teacher());
        let parts = head_loss(
            hidden,
            head,
            self.d,
            &self.targets,
            t,
            w,
            chunk,
            1.0,
            &mut dh,
            &mut dw,
        )
        .unwrap();
        (parts, dh, dw)
    }
}

#[test]
fn head_loss_gradients() {
    let c = head_case(9);
    let mut rng = ChaCha8Rng::seed_from_u64(10);
    for (w, teacher) in [
        (
            LossWeights {
                ce: 0.7,
                kl: 1.3,
                temperature: 2.0,
            },
            true,
        ),
        (
            LossWeights {
                ce: 1.0,
                kl: 0.5,
                temperature: 1.0,
            },
            true,
        ),
        (
            LossWeights {
                ce: 1.0,
                kl: 0.0,
                temperature: 1.0,
            },
            false,
        ),
    ] {
        let (_, dh, dw) = c.run(&c.hidden, &c.head, &w, 5, teacher);
        fd_check("head_loss d_hidden", &mut rng, &c.hidden, &dh, 60, |h| {
            c.run(h, &c.head, &w, 5, teacher).0.loss
        });
        fd_check("head_loss d_head", &mut rng, &c.head, &dw, 60, |hd| {
            c.run(&c.hidden, hd, &w, 5, teacher).0.loss
        });
        // An ignored row contributes no gradient.
        assert!(dh[2 * c.d..3 * c.d].iter().all(|&g| g == 0.0));
    }
}

#[test]
fn head_loss_matches_a_direct_computation() {
    let c = head_case(11);
    let w = LossWeights {
        ce: 0.6,
        kl: 1.7,
        temperature: 1.5,
    };
    let (parts, _, _) = c.run(&c.hidden, &c.head, &w, 4, true);
    let logits = |h: &[f32], m: &[f32], d: usize, i: usize| -> Vec<f64> {
        (0..c.vocab)
            .map(|v| {
                (0..d)
                    .map(|e| h[i * d + e] as f64 * m[v * d + e] as f64)
                    .sum()
            })
            .collect()
    };
    let log_softmax = |z: &[f64], t: f64| -> Vec<f64> {
        let m = z.iter().cloned().fold(f64::NEG_INFINITY, f64::max) / t;
        let lse = m + z.iter().map(|x| (x / t - m).exp()).sum::<f64>().ln();
        z.iter().map(|x| x / t - lse).collect()
    };
    let (mut ce, mut kl, mut agree, mut count) = (0.0, 0.0, 0, 0);
    let argmax = |z: &[f64]| (0..z.len()).fold(0, |b, j| if z[j] > z[b] { j } else { b });
    for i in 0..c.n {
        if c.targets[i] == IGNORE {
            continue;
        }
        count += 1;
        let (s, t) = (
            logits(&c.hidden, &c.head, c.d, i),
            logits(&c.t_hidden, &c.t_head, c.td, i),
        );
        ce -= log_softmax(&s, 1.0)[c.targets[i] as usize];
        let (lq, lp) = (log_softmax(&s, 1.5), log_softmax(&t, 1.5));
        kl += lp
            .iter()
            .zip(&lq)
            .map(|(p, q)| p.exp() * (p - q))
            .sum::<f64>();
        agree += usize::from(argmax(&s) == argmax(&t));
    }
    let (ce, kl) = (ce / count as f64, kl / count as f64);
    assert_eq!(parts.n, count);
    assert_eq!(parts.agree, agree);
    assert!((parts.ce - ce).abs() < 1e-5 * ce, "ce {} vs {ce}", parts.ce);
    assert!((parts.kl - kl).abs() < 1e-5 * kl, "kl {} vs {kl}", parts.kl);
    let loss = 0.6 * ce + 1.7 * 1.5f64.powi(2) * kl;
    assert!(
        (parts.loss - loss).abs() < 1e-5 * loss,
        "loss {} vs {loss}",
        parts.loss
    );
}

/// Chunking only changes summation order: chunk sizes 1, 7 and the whole vocabulary agree to
/// f32 rounding (1e-5 of each quantity's scale).
#[test]
fn head_loss_does_not_depend_on_chunk_size() {
    let c = head_case(12);
    let w = LossWeights {
        ce: 0.8,
        kl: 1.2,
        temperature: 2.0,
    };
    let (base, dh0, dw0) = c.run(&c.hidden, &c.head, &w, c.vocab, true);
    for chunk in [1, 7, c.vocab, 10 * c.vocab] {
        let (p, dh, dw) = c.run(&c.hidden, &c.head, &w, chunk, true);
        assert_eq!((p.n, p.agree), (base.n, base.agree), "chunk {chunk}");
        for (a, b, what) in [
            (p.ce, base.ce, "ce"),
            (p.kl, base.kl, "kl"),
            (p.loss, base.loss, "loss"),
        ] {
            assert!(
                (a - b).abs() <= 1e-5 * b.abs(),
                "chunk {chunk}: {what} {a} vs {b}"
            );
        }
        for (got, want, what) in [(&dh, &dh0, "d_hidden"), (&dw, &dw0, "d_head")] {
            let scale = want.iter().fold(0f32, |m, &g| m.max(g.abs()));
            let err = got
                .iter()
                .zip(want.iter())
                .fold(0f32, |m, (a, b)| m.max((a - b).abs()));
            assert!(
                err <= 1e-5 * scale,
                "chunk {chunk}: {what} differs by {err} (scale {scale})"
            );
        }
    }
}

/// The teacher's row statistics computed ahead (`teacher_rows`, as the trainer keeps them with
/// the teacher's outputs) give the same loss and gradients, bit for bit, as the first pass
/// finding them itself, at T = 1 and T ≠ 1 and with a chunk that does not divide the vocabulary.
#[test]
fn head_loss_with_known_teacher_rows_is_the_same() {
    let c = head_case(21);
    for (temperature, chunk) in [(1.0, 7), (2.5, 23), (0.7, 4)] {
        let w = LossWeights { ce: 0.6, kl: 1.1, temperature };
        let (want, dh_want, dw_want) = c.run(&c.hidden, &c.head, &w, chunk, true);
        let rows = teacher_rows(&c.t_hidden, &c.t_head, c.td, temperature, chunk).unwrap();
        assert_eq!(rows.len(), c.n);
        let (mut dh, mut dw) = (vec![0f32; c.hidden.len()], vec![0f32; c.head.len()]);
        let known = TeacherHead { rows: Some(&rows), ..c.teacher() };
        let got = head_loss(&c.hidden, &c.head, c.d, &c.targets, Some(known), &w, chunk, 1.0, &mut dh, &mut dw).unwrap();
        assert_eq!(got, want, "T {temperature}, chunk {chunk}");
        assert_eq!((dh, dw), (dh_want, dw_want), "T {temperature}, chunk {chunk}");
    }
    // Rows for another number of targets are refused.
    let rows = teacher_rows(&c.t_hidden, &c.t_head, c.td, 1.0, 8).unwrap();
    let (mut dh, mut dw) = (vec![0f32; c.hidden.len()], vec![0f32; c.head.len()]);
    let w = LossWeights { ce: 1.0, kl: 1.0, temperature: 1.0 };
    let short = TeacherHead { rows: Some(&rows[1..]), ..c.teacher() };
    assert!(head_loss(&c.hidden, &c.head, c.d, &c.targets, Some(short), &w, 8, 1.0, &mut dh, &mut dw).is_err());
}

#[test]
fn head_loss_accumulates_and_scales() {
    let c = head_case(13);
    let w = LossWeights {
        ce: 1.0,
        kl: 1.0,
        temperature: 1.0,
    };
    let (_, dh, dw) = c.run(&c.hidden, &c.head, &w, 8, true);
    let (mut dh2, mut dw2) = (dh.clone(), dw.clone());
    head_loss(
        &c.hidden,
        &c.head,
        c.d,
        &c.targets,
        Some(c.teacher()),
        &w,
        8,
        0.5,
        &mut dh2,
        &mut dw2,
    )
    .unwrap();
    for (a, b) in dh2.iter().zip(&dh).chain(dw2.iter().zip(&dw)) {
        assert!(
            (a - 1.5 * b).abs() <= 1e-6 * b.abs().max(1e-3),
            "{a} vs 1.5 × {b}"
        );
    }
}

#[test]
fn head_loss_rejects_bad_input() {
    let c = head_case(14);
    let w = LossWeights {
        ce: 1.0,
        kl: 1.0,
        temperature: 1.0,
    };
    let (mut dh, mut dw) = (vec![0f32; c.hidden.len()], vec![0f32; c.head.len()]);
    let mut call = |targets: &[u32],
                    teacher: Option<TeacherHead>,
                    w: &LossWeights,
                    chunk: usize,
                    head: &[f32]| {
        head_loss(
            &c.hidden, head, c.d, targets, teacher, w, chunk, 1.0, &mut dh, &mut dw,
        )
    };
    let mut bad_target = c.targets.clone();
    bad_target[0] = c.vocab as u32;
    assert!(
        call(&bad_target, Some(c.teacher()), &w, 4, &c.head).is_err(),
        "target outside the vocabulary"
    );
    assert!(
        call(&c.targets[1..], Some(c.teacher()), &w, 4, &c.head).is_err(),
        "hidden/targets mismatch"
    );
    assert!(
        call(&c.targets, None, &w, 4, &c.head).is_err(),
        "KL weight without a teacher"
    );
    assert!(
        call(&c.targets, Some(c.teacher()), &w, 0, &c.head).is_err(),
        "chunk 0"
    );
    let hot = LossWeights {
        temperature: 0.0,
        ..w
    };
    assert!(
        call(&c.targets, Some(c.teacher()), &hot, 4, &c.head).is_err(),
        "temperature 0"
    );
    assert!(
        call(&c.targets, Some(c.teacher()), &w, 4, &c.head[1..]).is_err(),
        "ragged head"
    );
    let short = TeacherHead {
        hidden: &c.t_hidden[1..],
        ..c.teacher()
    };
    assert!(
        call(&c.targets, Some(short), &w, 4, &c.head).is_err(),
        "teacher hidden short"
    );
    // Every row ignored: nothing counted, nothing added.
    let ignored = vec![IGNORE; c.n];
    let p = call(&ignored, Some(c.teacher()), &w, 4, &c.head).unwrap();
    assert_eq!((p.n, p.loss), (0, 0.0));
    assert!(dh.iter().chain(&dw).all(|&g| g == 0.0));
}
