//! The output head fused with the distillation loss, in vocabulary chunks:
//! `loss = ce·CE(targets) + kl·T²·KL(softmax(t/T) ‖ softmax(s/T))`, averaged over the rows
//! whose target is not [`IGNORE`], where `s = hidden·headᵀ` are the student's logits and
//! `t = teacher_hidden·teacher_headᵀ` the teacher's.
//!
//! No `n × n_vocab` tensor is ever held: the teacher's rows' log-sum-exp of `t/T` and argmax
//! ([`teacher_rows`], or given when kept with its outputs) and a first pass over the student's
//! vocabulary in chunks of `chunk` head rows keep, per row, online log-sum-exps (of `s` and
//! `s/T`), the argmax and the target's logit; a second pass recomputes each chunk's logits, turns them into
//! `∂loss/∂s = (ce·(softmax(s) − onehot) + kl·T·(softmax(s/T) − softmax(t/T))) / N` in place
//! and multiplies it back into `d_hidden` and `d_head` with two GEMMs. Memory is
//! `n × chunk` floats for the student and as many for the teacher.

use super::{check_len, EngineError};
use nexus_kernels::gemm::{sgemm, sgemm_t};
use nexus_kernels::ggml_order::exp_affine;
use rayon::prelude::*;

/// The target of a row that takes no part in the loss (padding, a prompt's tokens).
pub const IGNORE: u32 = u32::MAX;

/// The loss terms' weights and the distillation temperature.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct LossWeights {
    pub ce: f32,
    pub kl: f32,
    pub temperature: f32,
}

/// The teacher's side of the KL term: its final normed hidden states (`n × n_embd`) and its
/// output head (`n_vocab × n_embd`); its width may differ from the student's. `rows`, when
/// known ahead ([`teacher_rows`] at the loss's temperature), spares a pass over the teacher's
/// head.
#[derive(Debug, Clone, Copy)]
pub struct TeacherHead<'a> {
    pub hidden: &'a [f32],
    pub weight: &'a [f32],
    pub n_embd: usize,
    pub rows: Option<&'a [TeacherRow]>,
}

/// The teacher's statistics of one row at a temperature T: the log-sum-exp of `t/T` over the
/// whole vocabulary and the argmax of `t`. Known ahead (kept with the teacher's outputs for data
/// seen again), they spare [`head_loss`] a pass over the teacher's head.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct TeacherRow {
    pub lse: f32,
    pub best: u32,
}

/// The [`TeacherRow`]s of the teacher's `hidden` rows (`n × td`) through its `head`
/// (`n_vocab × td`) at `temperature`, over vocabulary chunks of `chunk` head rows ([`head_loss`]
/// computes them so itself when they are not given).
pub fn teacher_rows(hidden: &[f32], head: &[f32], td: usize, temperature: f32, chunk: usize) -> Result<Vec<TeacherRow>, EngineError> {
    if td == 0 || head.is_empty() || !head.len().is_multiple_of(td) || !hidden.len().is_multiple_of(td) || chunk == 0 {
        return Err(EngineError::Invalid(format!(
            "teacher_rows: head of {} and hidden of {} values for width {td}, chunk {chunk}",
            head.len(),
            hidden.len()
        )));
    }
    if !(temperature.is_finite() && temperature > 0.0) {
        return Err(EngineError::Invalid(format!("teacher_rows: temperature {temperature} must be positive")));
    }
    let (n, n_vocab) = (hidden.len() / td, head.len() / td);
    let (chunk, inv_t) = (chunk.min(n_vocab), 1.0 / temperature);
    let mut zt = vec![0f32; n * chunk];
    let mut acc = vec![(Lse::EMPTY, (f32::NEG_INFINITY, 0usize)); n];
    for v0 in (0..n_vocab).step_by(chunk) {
        let c = chunk.min(n_vocab - v0);
        sgemm_t(false, true, n, c, td, hidden, td, &head[v0 * td..], td, &mut zt[..n * c], c, false);
        acc.par_iter_mut().enumerate().with_min_len(8).for_each_init(Vec::new, |scratch, (i, (lse, best))| {
            let z = &zt[i * c..(i + 1) * c];
            lse.add(z, inv_t, scratch);
            argmax_update(best, z, v0);
        });
    }
    Ok(acc.iter().map(|(lse, best)| TeacherRow { lse: lse.value(), best: best.1 as u32 }).collect())
}

/// What one call measured, averaged over its `n` counted rows.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct LossParts {
    /// Mean cross-entropy of the targets (nats), unweighted.
    pub ce: f64,
    /// Mean KL(teacher ‖ student) at temperature T (nats), unweighted and without T²;
    /// 0 without a teacher.
    pub kl: f64,
    /// `ce_weight·ce + kl_weight·T²·kl`: what the gradient is of (before `grad_scale`).
    pub loss: f64,
    /// Counted rows whose student argmax equals the teacher's (0 without a teacher).
    pub agree: usize,
    /// Rows counted (targets other than [`IGNORE`]).
    pub n: usize,
}

/// Online log-sum-exp: `max + ln(sum)`, with `sum` relative to the running max.
#[derive(Clone, Copy)]
struct Lse {
    max: f32,
    sum: f64,
}

impl Lse {
    const EMPTY: Lse = Lse {
        max: f32::NEG_INFINITY,
        sum: 0.0,
    };

    /// Folds in `xs · scale`; `scratch` holds the exponentials on the way.
    fn add(&mut self, xs: &[f32], scale: f32, scratch: &mut Vec<f32>) {
        let m = xs.iter().fold(f32::NEG_INFINITY, |m, &x| m.max(x * scale));
        if m > self.max {
            self.sum *= ((self.max - m) as f64).exp();
            self.max = m;
        }
        // f32 exponentials (ggml's, within 1.5 ulp of exp), summed in f64.
        scratch.resize(xs.len(), 0.0);
        exp_affine(xs, scale, self.max, scratch);
        self.sum += scratch.iter().map(|&e| e as f64).sum::<f64>();
    }

    fn value(&self) -> f32 {
        (self.max as f64 + self.sum.ln()) as f32
    }
}

/// Per row: the first pass's statistics of the student, then the second pass's KL.
#[derive(Clone, Copy)]
struct RowStats {
    s: Lse,
    s_temp: Lse,
    s_best: (f32, usize),
    z_target: f32,
    kl: f64,
}

/// The first index of the largest element after `best`, or `best` itself.
fn argmax_update(best: &mut (f32, usize), xs: &[f32], v0: usize) {
    for (j, &x) in xs.iter().enumerate() {
        if x > best.0 {
            *best = (x, v0 + j);
        }
    }
}

/// The sizes [`head_loss`] checks (its CUDA twin holds its buffers on the device).
pub(crate) struct HeadLossLens {
    pub hidden: usize,
    pub head: usize,
    pub n_embd: usize,
    pub d_hidden: usize,
    pub d_head: usize,
    /// The teacher's hidden and head lengths and its width.
    pub teacher: Option<(usize, usize, usize)>,
}

/// Checks a head-loss call's shapes, targets and weights; `None` when no row counts, else the
/// vocabulary size and the counted rows.
pub(crate) fn check_head_loss(
    l: &HeadLossLens,
    targets: &[u32],
    w: &LossWeights,
    chunk: usize,
    grad_scale: f32,
) -> Result<Option<(usize, usize)>, EngineError> {
    let d = l.n_embd;
    if d == 0 || l.head == 0 || !l.head.is_multiple_of(d) {
        return Err(EngineError::Invalid(format!(
            "head_loss: head of {} elements is not whole rows of n_embd {d}",
            l.head
        )));
    }
    let (n, n_vocab) = (targets.len(), l.head / d);
    check_len("head_loss hidden (targets × n_embd)", n * d, l.hidden)?;
    check_len("head_loss d_hidden", l.hidden, l.d_hidden)?;
    check_len("head_loss d_head", l.head, l.d_head)?;
    if let Some((i, &t)) = targets
        .iter()
        .enumerate()
        .find(|(_, &t)| t != IGNORE && t as usize >= n_vocab)
    {
        return Err(EngineError::Token {
            index: i,
            token: t,
            n_vocab,
        });
    }
    if chunk == 0 {
        return Err(EngineError::Invalid(
            "head_loss: chunk must be at least 1".into(),
        ));
    }
    let temp = w.temperature;
    if !(temp.is_finite()
        && temp > 0.0
        && w.ce.is_finite()
        && w.kl.is_finite()
        && grad_scale.is_finite())
    {
        return Err(EngineError::Invalid(format!(
            "head_loss: weights must be finite and the temperature positive, got ce {} kl {} T {temp} \
             grad_scale {grad_scale}",
            w.ce, w.kl
        )));
    }
    if let Some((t_hidden, t_weight, t_embd)) = l.teacher {
        if t_embd == 0 {
            return Err(EngineError::Invalid(
                "head_loss: teacher n_embd is 0".into(),
            ));
        }
        check_len(
            "head_loss teacher head (n_vocab × teacher n_embd)",
            n_vocab * t_embd,
            t_weight,
        )?;
        check_len(
            "head_loss teacher hidden (targets × teacher n_embd)",
            n * t_embd,
            t_hidden,
        )?;
    } else if w.kl != 0.0 {
        return Err(EngineError::Invalid(format!(
            "head_loss: KL weight {} without a teacher",
            w.kl
        )));
    }
    let counted = targets.iter().filter(|&&t| t != IGNORE).count();
    Ok((counted > 0).then_some((n_vocab, counted)))
}

/// See the module docs. Adds `grad_scale·∂loss/∂hidden` into `d_hidden` (`n × n_embd`) and
/// `grad_scale·∂loss/∂head` into `d_head` (`n_vocab × n_embd`); with a tied head the caller
/// passes the embedding gradient as `d_head`.
#[allow(clippy::too_many_arguments)]
pub fn head_loss(
    hidden: &[f32],
    head: &[f32],
    n_embd: usize,
    targets: &[u32],
    teacher: Option<TeacherHead>,
    w: &LossWeights,
    chunk: usize,
    grad_scale: f32,
    d_hidden: &mut [f32],
    d_head: &mut [f32],
) -> Result<LossParts, EngineError> {
    if let Some(r) = teacher.and_then(|t| t.rows) {
        check_len("head_loss teacher rows", targets.len(), r.len())?;
    }
    let d = n_embd;
    let lens = HeadLossLens {
        hidden: hidden.len(),
        head: head.len(),
        n_embd,
        d_hidden: d_hidden.len(),
        d_head: d_head.len(),
        teacher: teacher.as_ref().map(|t| (t.hidden.len(), t.weight.len(), t.n_embd)),
    };
    let Some((n_vocab, counted)) = check_head_loss(&lens, targets, w, chunk, grad_scale)? else {
        return Ok(LossParts {
            ce: 0.0,
            kl: 0.0,
            loss: 0.0,
            agree: 0,
            n: 0,
        });
    };
    let (n, temp) = (targets.len(), w.temperature);
    let chunk = chunk.min(n_vocab);
    let inv_t = 1.0 / temp;
    // The teacher's row statistics first (given, or one pass over its head), so that the
    // student's first pass below needs only the student's logits.
    let computed;
    let rows: Option<&[TeacherRow]> = match &teacher {
        None => None,
        Some(TeacherHead { rows: Some(r), .. }) => Some(r),
        Some(t) => {
            computed = teacher_rows(t.hidden, t.weight, t.n_embd, temp, chunk)?;
            Some(&computed)
        }
    };
    let mut zs = vec![0f32; n * chunk];
    let mut zt = vec![0f32; if teacher.is_some() { n * chunk } else { 0 }];
    let student_logits = |v0: usize, c: usize, zs: &mut [f32]| {
        sgemm_t(
            false,
            true,
            n,
            c,
            d,
            hidden,
            d,
            &head[v0 * d..],
            d,
            &mut zs[..n * c],
            c,
            false,
        );
    };
    let teacher_logits = |v0: usize, c: usize, zt: &mut [f32]| {
        if let Some(t) = &teacher {
            let td = t.n_embd;
            sgemm_t(
                false,
                true,
                n,
                c,
                td,
                t.hidden,
                td,
                &t.weight[v0 * td..],
                td,
                &mut zt[..n * c],
                c,
                false,
            );
        }
    };
    let has_teacher = teacher.is_some();
    fn row_of(has: bool, zt: &[f32], i: usize, c: usize) -> Option<&[f32]> {
        has.then(|| &zt[i * c..(i + 1) * c])
    }

    let empty = RowStats {
        s: Lse::EMPTY,
        s_temp: Lse::EMPTY,
        s_best: (f32::NEG_INFINITY, 0),
        z_target: 0.0,
        kl: 0.0,
    };
    let mut stats = vec![empty; n];
    for v0 in (0..n_vocab).step_by(chunk) {
        let c = chunk.min(n_vocab - v0);
        student_logits(v0, c, &mut zs);
        stats
            .par_iter_mut()
            .enumerate()
            .with_min_len(8)
            .for_each_init(Vec::new, |scratch, (i, st)| {
                let z = &zs[i * c..(i + 1) * c];
                st.s.add(z, 1.0, scratch);
                argmax_update(&mut st.s_best, z, v0);
                let tgt = targets[i] as usize;
                if (v0..v0 + c).contains(&tgt) {
                    st.z_target = z[tgt - v0];
                }
                // At T = 1 the tempered statistics are the plain ones (`s`).
                if has_teacher && temp != 1.0 {
                    st.s_temp.add(z, inv_t, scratch);
                }
            });
    }

    let coef = grad_scale / counted as f32;
    let (ce_w, kl_w) = (w.ce * coef, w.kl * temp * coef);
    for v0 in (0..n_vocab).step_by(chunk) {
        let c = chunk.min(n_vocab - v0);
        student_logits(v0, c, &mut zs);
        teacher_logits(v0, c, &mut zt);
        zs[..n * c]
            .par_chunks_mut(c)
            .zip(stats.par_iter_mut())
            .enumerate()
            .with_min_len(8)
            .for_each_init(
                || [Vec::new(), Vec::new(), Vec::new()],
                |[ps, pt, qs], (i, (z, st))| {
                    let tgt = targets[i];
                    if tgt == IGNORE {
                        z.fill(0.0);
                        return;
                    }
                    let lse_s = st.s.value();
                    ps.resize(c, 0.0);
                    exp_affine(z, 1.0, lse_s, ps);
                    match row_of(has_teacher, &zt, i, c) {
                        None => z.iter_mut().zip(ps.iter()).for_each(|(x, &p_s)| *x = ce_w * p_s),
                        Some(t) => {
                            // At T = 1 the tempered softmax is the plain one: save its exps.
                            let lse_st = if temp == 1.0 { lse_s } else { st.s_temp.value() };
                            let lse_tt = rows.map_or(0.0, |r| r[i].lse);
                            pt.resize(c, 0.0);
                            exp_affine(t, inv_t, lse_tt, pt);
                            let q_of = match temp == 1.0 {
                                true => &*ps,
                                false => {
                                    qs.resize(c, 0.0);
                                    exp_affine(z, inv_t, lse_st, qs);
                                    &*qs
                                }
                            };
                            let mut kl = 0f64;
                            for (((x, &tv), (&p_s, &p)), &q) in z.iter_mut().zip(t).zip(ps.iter().zip(pt.iter())).zip(q_of) {
                                let log_q = *x * inv_t - lse_st;
                                let log_p = tv * inv_t - lse_tt;
                                kl += p as f64 * (log_p - log_q) as f64;
                                *x = ce_w * p_s + kl_w * (q - p);
                            }
                            st.kl += kl;
                        }
                    }
                    if let Some(j) = (tgt as usize).checked_sub(v0).filter(|&j| j < c) {
                        z[j] -= ce_w;
                    }
                },
            );
        sgemm(
            n,
            d,
            c,
            &zs[..n * c],
            c,
            &head[v0 * d..],
            d,
            d_hidden,
            d,
            true,
        );
        sgemm_t(
            true,
            false,
            c,
            d,
            n,
            &zs[..n * c],
            c,
            hidden,
            d,
            &mut d_head[v0 * d..],
            d,
            true,
        );
    }

    let (mut ce, mut kl, mut agree) = (0f64, 0f64, 0usize);
    for (i, (st, &tgt)) in stats.iter().zip(targets).enumerate() {
        if tgt == IGNORE {
            continue;
        }
        ce += st.s.value() as f64 - st.z_target as f64;
        kl += st.kl;
        agree += usize::from(rows.is_some_and(|r| st.s_best.1 == r[i].best as usize));
    }
    let (ce, kl) = (ce / counted as f64, kl / counted as f64);
    let loss = w.ce as f64 * ce + w.kl as f64 * (temp as f64).powi(2) * kl;
    Ok(LossParts {
        ce,
        kl,
        loss,
        agree,
        n: counted,
    })
}
