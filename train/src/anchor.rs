//! The anchoring (γ) term of the distillation loss: for each chosen student layer, the squared
//! distance between the student's residual stream, mapped to the teacher's width, and the
//! teacher's, measured only inside the teacher layer's principal subspace:
//!
//! `scale · mean_t ‖P (W h_s,t − h_t,t)‖²`
//!
//! with `P` (k × d_t, orthonormal rows) the profile's basis of that teacher layer, `W`
//! (d_t × d_s) a map learned with the student, and `scale = 1/Σ kept eigenvalues`: the kept
//! variance of the teacher's stream, so the term is about 1 for a student that knows nothing
//! (predicts the mean) and comparable across layers whose streams differ in size by orders of
//! magnitude. Directions outside the subspace (the teacher's noise) are left free.
//!
//! The gradient lands in the student through `student::backward`'s `d_residual`.

use rand::SeedableRng;
use rand_chacha::ChaCha8Rng;

use crate::engine::{check_len, linear, EngineError};
use crate::init::fill_normal;
use crate::profile::LayerProfile;

/// How an anchor's map `W` (d_t × d_s) starts.
#[derive(Debug, Clone, Copy)]
pub enum MapInit<'a> {
    /// A pruned student's channel j is teacher channel `kept[j]`: `W[kept[j]][j] = 1`, all else
    /// 0, so the map starts as the identity on the channels pruning kept.
    Selection(&'a [usize]),
    /// N(0, 1/d_s) entries (a random student), seeded.
    Random(u64),
}

#[derive(Debug, thiserror::Error)]
pub enum AnchorError {
    #[error("anchor on teacher layer {layer}: basis: {what}")]
    Basis { layer: usize, what: String },
    #[error("anchor on teacher layer {layer}: map: {what}")]
    Map { layer: usize, what: String },
}

/// One anchored pair of layers and its learned map.
#[derive(Debug, Clone, PartialEq)]
pub struct Anchor {
    pub student_layer: usize,
    pub teacher_layer: usize,
    /// `k × d_teacher`, orthonormal rows.
    pub basis: Vec<f32>,
    pub k: usize,
    pub d_teacher: usize,
    pub d_student: usize,
    /// `1 / Σ kept eigenvalues`, so the term is scale-free across layers.
    pub scale: f32,
    /// `d_teacher × d_student`, row-major (`[out][in]`, like every weight).
    pub map: Vec<f32>,
}

impl Anchor {
    /// An anchor from a basis of `k` rows and the covariance eigenvalues (descending; the
    /// first `k` are the kept ones). `d_teacher` is `basis.len() / k`.
    pub fn new(
        student_layer: usize,
        teacher_layer: usize,
        basis: &[f32],
        k: usize,
        eigenvalues: &[f64],
        d_student: usize,
        init: MapInit,
    ) -> Result<Self, AnchorError> {
        let bad_basis = |what: String| {
            Err(AnchorError::Basis {
                layer: teacher_layer,
                what,
            })
        };
        if k == 0 || basis.is_empty() || !basis.len().is_multiple_of(k) {
            return bad_basis(format!(
                "{} values are not k = {k} non-empty rows",
                basis.len()
            ));
        }
        if basis.iter().any(|v| !v.is_finite()) {
            return bad_basis("holds a non-finite value".into());
        }
        if eigenvalues.len() < k {
            return bad_basis(format!("{} eigenvalues for k = {k}", eigenvalues.len()));
        }
        let kept: f64 = eigenvalues[..k].iter().sum();
        if !(kept.is_finite() && kept > 0.0) {
            return bad_basis(format!("the kept eigenvalues sum to {kept}"));
        }
        let d_teacher = basis.len() / k;
        if d_student == 0 {
            return Err(AnchorError::Map {
                layer: teacher_layer,
                what: "the student width is 0".into(),
            });
        }
        let map = init_map(teacher_layer, d_teacher, d_student, init)?;
        Ok(Anchor {
            student_layer,
            teacher_layer,
            basis: basis.to_vec(),
            k,
            d_teacher,
            d_student,
            scale: (1.0 / kept) as f32,
            map,
        })
    }

    /// An anchor on the teacher layer `profile` describes.
    pub fn from_profile(
        student_layer: usize,
        teacher_layer: usize,
        profile: &LayerProfile,
        d_student: usize,
        init: MapInit,
    ) -> Result<Self, AnchorError> {
        let anchor = Anchor::new(
            student_layer,
            teacher_layer,
            &profile.basis,
            profile.k,
            &profile.eigenvalues,
            d_student,
            init,
        )?;
        if !profile.mean.is_empty() && profile.mean.len() != anchor.d_teacher {
            return Err(AnchorError::Basis {
                layer: teacher_layer,
                what: format!(
                    "rows of {} for a stream of width {}",
                    anchor.d_teacher,
                    profile.mean.len()
                ),
            });
        }
        Ok(anchor)
    }

    /// Over `n` token rows of the student's stream `h_student` (n × d_s) and the teacher's
    /// `h_teacher` (n × d_t): returns `scale · mean ‖B (W h_s − h_t)‖²` over the rows `mask`
    /// lets count (all when `None`; none counting gives 0), and accumulates (`+=`) `weight` ×
    /// its gradient w.r.t. `h_student` into `d_h` (n × d_s) and w.r.t. `W` into `d_map`.
    /// Leave out the attention-sink positions with the mask ([`sink_mask`]): their streams are
    /// ~100× larger than the rest and the profile's subspaces were fitted without them.
    ///
    /// Five products: U = h_s Wᵀ, R = U − h_t, Z = R Bᵀ (n × k); dZ = 2·weight·scale/n · Z;
    /// dR = dZ B; dW += dRᵀ h_s; dh_s += dR W.
    #[allow(clippy::too_many_arguments)]
    pub fn loss_grad(
        &self,
        h_student: &[f32],
        h_teacher: &[f32],
        n: usize,
        mask: Option<&[bool]>,
        weight: f32,
        d_h: &mut [f32],
        d_map: &mut [f32],
    ) -> Result<f64, EngineError> {
        let (ds, dt, k) = (self.d_student, self.d_teacher, self.k);
        let layer = self.teacher_layer;
        check_len(format!("anchor {layer}: basis"), k * dt, self.basis.len())?;
        check_len(format!("anchor {layer}: map"), dt * ds, self.map.len())?;
        check_len(
            format!("anchor {layer}: student stream"),
            n * ds,
            h_student.len(),
        )?;
        check_len(
            format!("anchor {layer}: teacher stream"),
            n * dt,
            h_teacher.len(),
        )?;
        check_len(format!("anchor {layer}: d_h"), n * ds, d_h.len())?;
        check_len(format!("anchor {layer}: d_map"), dt * ds, d_map.len())?;
        if let Some(m) = mask {
            check_len(format!("anchor {layer}: row mask"), n, m.len())?;
        }
        if !weight.is_finite() {
            return Err(EngineError::Invalid(format!(
                "anchor {layer}: weight {weight} is not finite"
            )));
        }
        let counted = mask.map_or(n, |m| m.iter().filter(|&&c| c).count());
        if counted == 0 {
            return Ok(0.0);
        }

        let mut r = vec![0f32; n * dt];
        linear::forward(h_student, &self.map, n, ds, dt, &mut r, false);
        for (x, &t) in r.iter_mut().zip(h_teacher) {
            *x -= t;
        }
        let mut z = vec![0f32; n * k];
        linear::forward(&r, &self.basis, n, dt, k, &mut z, false);
        let dz_scale = 2.0 * weight * self.scale / counted as f32;
        let mut sum = 0f64;
        for (row, zr) in z.chunks_exact_mut(k).enumerate() {
            if mask.is_some_and(|m| !m[row]) {
                zr.fill(0.0);
                continue;
            }
            sum += zr.iter().map(|&v| v as f64 * v as f64).sum::<f64>();
            zr.iter_mut().for_each(|v| *v *= dz_scale);
        }
        let loss = self.scale as f64 * sum / counted as f64;
        if weight == 0.0 {
            return Ok(loss);
        }
        // dR = dZ·B, written over R (no longer needed).
        let dr = &mut r;
        linear::backward_input(&z, &self.basis, n, dt, k, dr, false);
        linear::backward_weight(h_student, dr, n, ds, dt, d_map);
        linear::backward_input(dr, &self.map, n, ds, dt, d_h, true);
        Ok(loss)
    }
}

fn init_map(
    layer: usize,
    d_teacher: usize,
    d_student: usize,
    init: MapInit,
) -> Result<Vec<f32>, AnchorError> {
    let mut map = vec![0f32; d_teacher * d_student];
    match init {
        MapInit::Random(seed) => {
            let mut rng = ChaCha8Rng::seed_from_u64(seed);
            fill_normal(&mut rng, &mut map, 1.0 / (d_student as f32).sqrt());
        }
        MapInit::Selection(kept) => {
            let bad = |what: String| Err(AnchorError::Map { layer, what });
            if kept.len() != d_student {
                return bad(format!(
                    "{} kept channels for a student of width {d_student}",
                    kept.len()
                ));
            }
            let mut seen = vec![false; d_teacher];
            for (j, &c) in kept.iter().enumerate() {
                if c >= d_teacher {
                    return bad(format!(
                        "kept channel {c} is outside the teacher's {d_teacher}"
                    ));
                }
                if std::mem::replace(&mut seen[c], true) {
                    return bad(format!("teacher channel {c} is kept twice"));
                }
                map[c * d_student + j] = 1.0;
            }
        }
    }
    Ok(map)
}

/// The (student, teacher) layer pairs to anchor. With pruning, student layer i is the kept
/// teacher layer `pruned[i]`; without, proportional depth: teacher layer
/// `round((i+1)·n_teacher/n_student) − 1` (the last student layer meets the last teacher
/// layer). Every `every`-th student layer is taken, counting down from the last one (always
/// included); `every = 0` reads as 1. Pairs come in ascending order; student layers `pruned`
/// does not name, or names a layer the teacher lacks, are skipped.
pub fn anchor_layers(
    n_student: usize,
    n_teacher: usize,
    pruned: Option<&[usize]>,
    every: usize,
) -> Vec<(usize, usize)> {
    if n_student == 0 || n_teacher == 0 {
        return Vec::new();
    }
    let proportional = |i: usize| {
        // round half up of (i+1)·n_t/n_s, in integers
        let rounded = (2 * (i + 1) * n_teacher + n_student) / (2 * n_student);
        rounded.saturating_sub(1).min(n_teacher - 1)
    };
    let mut pairs: Vec<(usize, usize)> = (0..n_student)
        .rev()
        .step_by(every.max(1))
        .filter_map(|i| {
            let t = match pruned {
                Some(p) => *p.get(i)?,
                None => proportional(i),
            };
            (t < n_teacher).then_some((i, t))
        })
        .collect();
    pairs.reverse();
    pairs
}

/// The row mask of a batch of `n_seq` sequences of `seq_len` tokens that leaves out each
/// sequence's first `sink_tokens` positions (the profile's `ProfileConfig::sink_tokens`).
pub fn sink_mask(n_seq: usize, seq_len: usize, sink_tokens: usize) -> Vec<bool> {
    (0..n_seq * seq_len)
        .map(|i| i % seq_len >= sink_tokens)
        .collect()
}

#[cfg(test)]
mod tests;
