//! The CPU teacher's outputs kept per training sequence, so a run that sees its data more than
//! once (epochs over a small set: the CPU reference run saw its 78 k tokens 7 times; an adapter
//! sees its capability's answers 5–7 times) runs the teacher on each sequence only once. On the
//! CPU the teacher's forward is about half of a step.
//!
//! A sequence's outputs do not depend on the other sequences of its batch (`Teacher::run`
//! runs each on its own), so a batch assembled from kept and fresh sequences is bitwise the
//! batch the teacher would have produced: losses, checkpoints and resumed runs are unchanged.
//! The cache holds at most `budget` bytes, filled by the first sequences seen; a sequence that
//! does not fit is recomputed whenever it comes back.

use std::collections::HashMap;

use crate::data::Batch;
use crate::engine::head_loss::{teacher_rows, TeacherRow};
use crate::error::TrainError;
use crate::teacher::{Teacher, TeacherOut};

pub struct TeacherCache {
    budget: usize,
    used: usize,
    /// The layers whose streams the kept outputs hold (a run asks for the same ones each time).
    layers: Vec<usize>,
    kept: HashMap<usize, Kept>,
    /// The temperature and vocabulary chunk the kept rows' statistics are for.
    rows_for: Option<(u32, usize)>,
}

/// One sequence's teacher outputs and, once asked for, the loss's statistics of its rows
/// ([`TeacherRow`]).
struct Kept {
    out: TeacherOut,
    rows: Option<Vec<TeacherRow>>,
}

impl TeacherCache {
    /// A cache of at most `budget` bytes (0: none, every batch runs the teacher).
    pub fn new(budget: usize) -> Self {
        TeacherCache { budget, used: 0, layers: Vec::new(), kept: HashMap::new(), rows_for: None }
    }

    /// Bytes of outputs held.
    pub fn bytes(&self) -> usize {
        self.used
    }

    /// How many kept sequences hold their rows' statistics.
    #[cfg(test)]
    fn rows_kept(&self) -> usize {
        self.kept.values().filter(|k| k.rows.is_some()).count()
    }

    /// `teacher.run(&batch.inputs, batch.n_seq, layers)`, running the teacher only on the
    /// sequences of `batch` it has not kept.
    pub fn run(&mut self, teacher: &Teacher, batch: &Batch, layers: &[usize]) -> Result<TeacherOut, TrainError> {
        if self.budget == 0 || batch.sequences.len() != batch.n_seq {
            return teacher.run(&batch.inputs, batch.n_seq, layers);
        }
        if self.layers != layers {
            self.kept.clear();
            self.used = 0;
            self.layers = layers.to_vec();
        }
        let len = batch.seq_len;
        let mut missing: Vec<usize> = Vec::new();
        for (j, s) in batch.sequences.iter().enumerate() {
            if !self.kept.contains_key(s) && !missing.iter().any(|&m| batch.sequences[m] == *s) {
                missing.push(j);
            }
        }
        let mut fresh: HashMap<usize, TeacherOut> = HashMap::new();
        if !missing.is_empty() {
            let tokens: Vec<u32> = missing.iter().flat_map(|&j| batch.inputs[j * len..(j + 1) * len].iter().copied()).collect();
            let out = teacher.run(&tokens, missing.len(), layers)?;
            for (i, &j) in missing.iter().enumerate() {
                fresh.insert(batch.sequences[j], slice(&out, i, missing.len()));
            }
        }
        let mut out = TeacherOut { hidden: Vec::new(), residuals: layers.iter().map(|&l| (l, Vec::new())).collect() };
        for s in &batch.sequences {
            let one = fresh.get(s).or_else(|| self.kept.get(s).map(|k| &k.out)).ok_or_else(|| TrainError::Invalid(format!("teacher cache: sequence {s} went missing")))?;
            out.hidden.extend_from_slice(&one.hidden);
            for ((_, dst), (_, src)) in out.residuals.iter_mut().zip(&one.residuals) {
                dst.extend_from_slice(src);
            }
        }
        for (s, one) in fresh {
            let bytes = 4 * (one.hidden.len() + one.residuals.iter().map(|(_, r)| r.len()).sum::<usize>());
            if self.used + bytes <= self.budget {
                self.used += bytes;
                self.kept.insert(s, Kept { out: one, rows: None });
            }
        }
        Ok(out)
    }
}

impl TeacherCache {
    /// The teacher's loss statistics ([`TeacherRow`]) for every row of `batch`, whose outputs
    /// are `out` (from [`TeacherCache::run`]), at `temperature` over vocabulary chunks of
    /// `chunk`. Each sequence's are computed from its own rows alone, so they do not depend on
    /// which sequences share its batch, and kept with the sequence's outputs.
    pub fn teacher_rows(&mut self, teacher: &Teacher, batch: &Batch, out: &TeacherOut, temperature: f32, chunk: usize) -> Result<Vec<TeacherRow>, TrainError> {
        let key = (temperature.to_bits(), chunk);
        if self.rows_for != Some(key) {
            self.kept.values_mut().for_each(|k| k.rows = None);
            self.rows_for = Some(key);
        }
        let td = teacher.n_embd();
        let per_seq = batch.seq_len * td;
        let mut all = Vec::with_capacity(batch.inputs.len());
        // A batch that does not say which sequences it holds is computed, never kept.
        let named = batch.sequences.len() == batch.n_seq;
        for j in 0..batch.n_seq {
            let kept = batch.sequences.get(j).filter(|_| named).and_then(|s| self.kept.get_mut(s));
            if let Some(r) = kept.as_ref().and_then(|k| k.rows.as_ref()) {
                all.extend_from_slice(r);
                continue;
            }
            let hidden = out.hidden.get(j * per_seq..(j + 1) * per_seq).ok_or_else(|| TrainError::Invalid("teacher cache: outputs shorter than the batch".into()))?;
            let r = teacher_rows(hidden, &teacher.head, td, temperature, chunk)?;
            all.extend_from_slice(&r);
            if let Some(k) = kept {
                k.rows = Some(r);
            }
        }
        Ok(all)
    }
}

/// Sequence `i` of the `n` an output holds.
fn slice(out: &TeacherOut, i: usize, n: usize) -> TeacherOut {
    let part = |v: &[f32]| {
        let per = v.len() / n;
        v[i * per..(i + 1) * per].to_vec()
    };
    TeacherOut { hidden: part(&out.hidden), residuals: out.residuals.iter().map(|(l, r)| (*l, part(r))).collect() }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The golden llama fixture (f32): kept and fresh outputs are compared with its direct runs.
    fn teacher() -> Teacher {
        let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../tests/fixtures/golden/llama-spm-gqa.f32.gguf");
        Teacher::load(&path).unwrap()
    }

    fn batch(t: &Teacher, sequences: &[usize], seq_len: usize) -> Batch {
        let v = t.model.config.n_vocab as u32;
        let tokens = |s: usize| (0..seq_len).map(move |p| ((s * 31 + p * 7) as u32) % v);
        Batch {
            n_seq: sequences.len(),
            seq_len,
            inputs: sequences.iter().flat_map(|&s| tokens(s)).collect(),
            targets: vec![0; sequences.len() * seq_len],
            sequences: sequences.to_vec(),
        }
    }

    #[test]
    fn kept_outputs_are_the_teachers_bitwise() {
        let t = teacher();
        let layers = [0, t.model.config.n_layer - 1];
        let mut cache = TeacherCache::new(usize::MAX);
        // Fresh, then kept, then mixed (with a sequence twice in one batch).
        for seqs in [&[3, 5][..], &[5, 3], &[7, 3, 7, 5]] {
            let b = batch(&t, seqs, 9);
            let want = t.run(&b.inputs, b.n_seq, &layers).unwrap();
            let got = cache.run(&t, &b, &layers).unwrap();
            assert_eq!(got.hidden, want.hidden, "{seqs:?}");
            assert_eq!(got.residuals, want.residuals, "{seqs:?}");
        }
        assert_eq!(cache.kept.len(), 3);
        // Other layers asked for: the kept outputs are dropped, not mixed in.
        let b = batch(&t, &[3], 9);
        let got = cache.run(&t, &b, &[1]).unwrap();
        assert_eq!(got.residuals, t.run(&b.inputs, 1, &[1]).unwrap().residuals);
        assert_eq!(cache.kept.len(), 1);
    }

    /// A batch's teacher rows are each sequence's own (computed from its rows alone), whether
    /// fresh, kept or mixed; kept sequences keep theirs.
    #[test]
    fn teacher_rows_are_per_sequence_and_kept() {
        let t = teacher();
        let td = t.n_embd();
        let mut cache = TeacherCache::new(usize::MAX);
        let own = |b: &Batch, out: &TeacherOut, j: usize| {
            let hidden = &out.hidden[j * b.seq_len * td..(j + 1) * b.seq_len * td];
            teacher_rows(hidden, &t.head, td, 1.5, 10).unwrap()
        };
        for seqs in [&[3, 5][..], &[5, 7, 3]] {
            let b = batch(&t, seqs, 9);
            let out = cache.run(&t, &b, &[0]).unwrap();
            let rows = cache.teacher_rows(&t, &b, &out, 1.5, 10).unwrap();
            let want: Vec<TeacherRow> = (0..seqs.len()).flat_map(|j| own(&b, &out, j)).collect();
            assert_eq!(rows, want, "{seqs:?}");
        }
        assert_eq!(cache.rows_kept(), 3);
        // Another temperature: the kept rows are dropped, not mixed in.
        let b = batch(&t, &[3], 9);
        let out = cache.run(&t, &b, &[0]).unwrap();
        cache.teacher_rows(&t, &b, &out, 1.0, 10).unwrap();
        assert_eq!(cache.rows_kept(), 1);
    }

    #[test]
    fn the_budget_bounds_what_is_kept() {
        let t = teacher();
        let d = t.model.config.n_embd;
        // Room for exactly one sequence of 9 rows (hidden + one stream).
        let mut cache = TeacherCache::new(4 * 2 * 9 * d);
        let b = batch(&t, &[1, 2], 9);
        let got = cache.run(&t, &b, &[0]).unwrap();
        assert_eq!(got.hidden, t.run(&b.inputs, 2, &[0]).unwrap().hidden);
        assert_eq!((cache.kept.len(), cache.bytes()), (1, 4 * 2 * 9 * d));
        let mut none = TeacherCache::new(0);
        none.run(&t, &b, &[0]).unwrap();
        assert_eq!(none.bytes(), 0);
    }
}
