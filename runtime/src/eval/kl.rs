//! KL divergence of a model against a saved base model, on the positions perplexity scores.
//!
//! llama.cpp saves the base's full distribution (n_vocab × u16 per position, ~100 kB for a
//! 49k vocabulary); we keep the base's top-k log-probabilities plus the mass of everything
//! else, which is ~30× smaller at k = 32 and loses little: the KL is computed over k + 1
//! outcomes (the base's top-k tokens and one "rest" bucket). Merging outcomes never increases
//! KL (log-sum inequality), so ours is a lower bound on the full-vocabulary KL; the gap is the
//! divergence *inside* the rest bucket, which holds the base's least likely tokens.
//!
//! File format, version 1, all little-endian (docs/QUANT.md has the same table):
//!
//! | field | type |
//! |---|---|
//! | magic | 8 bytes `NXKLBASE` |
//! | version | u32 = 1 |
//! | n_vocab, n_ctx, n_chunk, top_k | u32 each |
//! | tokens | `n_chunk × n_ctx` u32 (the text's tokens, before the BOS replacement) |
//! | records | `n_chunk × (n_ctx - 1 - n_ctx/2)` records, in scoring order |
//!
//! A record is `top_k × (id u32, log_prob f32)` in descending probability, then `rest_log_prob`
//! f32 (ln of the mass outside the top-k; -inf when none) and `target_log_prob` f32 (the base's
//! log-probability of the token that actually follows, for PPL(base)).

use std::fs::File;
use std::io::{BufWriter, Write};
use std::path::{Path, PathBuf};

use rayon::prelude::*;

use super::perplexity::{log_norm, Chunks, NllStats};
use super::EvalError;

/// Base log-probabilities kept per position: enough to hold ~all the mass of a confident
/// model, and small enough that a 300k-token evaluation stays ~40 MB.
pub const DEFAULT_TOP_K: usize = 32;

const MAGIC: &[u8; 8] = b"NXKLBASE";
const VERSION: u32 = 1;
const HEADER_BYTES: usize = 8 + 5 * 4;

/// z for a two-sided 95% normal interval.
const Z95: f64 = 1.959964;

fn record_bytes(top_k: usize) -> usize {
    top_k * 8 + 8
}

/// One position of the base: its top-k (id, log-prob), the rest's log-mass, the target's log-prob.
#[derive(Debug, Clone, PartialEq)]
pub struct BaseRecord {
    pub top: Vec<(u32, f32)>,
    pub rest_log_prob: f32,
    pub target_log_prob: f32,
}

/// Σ exp(l - max) over the ids not in `sorted_ids`, summed directly: 1 - Σ top would lose the
/// small masses that matter most when the two models disagree.
fn rest_sum(row: &[f32], max: f32, sorted_ids: &[u32]) -> f64 {
    row.iter()
        .enumerate()
        .filter(|(i, _)| sorted_ids.binary_search(&(*i as u32)).is_err())
        .map(|(_, &l)| f64::from((l - max).exp()))
        .sum()
}

/// The base record of one row of logits.
pub fn base_record(row: &[f32], target: u32, top_k: usize) -> BaseRecord {
    let (max, ln_sum) = log_norm(row);
    let log_prob = |l: f32| (f64::from(l - max) - ln_sum) as f32;
    let mut idx: Vec<u32> = (0..row.len() as u32).collect();
    let k = top_k.min(row.len());
    let by_logit_desc = |a: &u32, b: &u32| row[*b as usize].total_cmp(&row[*a as usize]).then(a.cmp(b));
    if k < idx.len() {
        idx.select_nth_unstable_by(k - 1, by_logit_desc);
        idx.truncate(k);
    }
    idx.sort_by(by_logit_desc);
    let top = idx.iter().map(|&i| (i, log_prob(row[i as usize]))).collect();
    idx.sort_unstable();
    let rest = rest_sum(row, max, &idx);
    let rest_log_prob = if rest > 0.0 { (rest.ln() - ln_sum) as f32 } else { f32::NEG_INFINITY };
    BaseRecord { top, rest_log_prob, target_log_prob: log_prob(row[target as usize]) }
}

/// Writes a base file as chunks are evaluated; the file appears under its name only when
/// [`KlBaseWriter::finish`] succeeds (temporary file in the same folder, then rename).
pub struct KlBaseWriter {
    path: PathBuf,
    tmp: PathBuf,
    out: Option<BufWriter<File>>,
    top_k: usize,
    records_left: usize,
}

impl KlBaseWriter {
    pub fn create(path: &Path, n_vocab: usize, chunks: &Chunks, top_k: usize) -> Result<Self, EvalError> {
        let bad = |what: String| EvalError::BadBase { path: path.to_path_buf(), what };
        if top_k == 0 || top_k > n_vocab {
            return Err(bad(format!("top-k {top_k} must be between 1 and the vocabulary size {n_vocab}")));
        }
        let as_u32 = |v: usize, name: &str| u32::try_from(v).map_err(|_| bad(format!("{name} {v} does not fit the format's u32")));
        let header = [VERSION, as_u32(n_vocab, "n_vocab")?, as_u32(chunks.n_ctx(), "n_ctx")?, as_u32(chunks.n_chunk(), "n_chunk")?, as_u32(top_k, "top-k")?];
        let dir = path.parent().filter(|d| !d.as_os_str().is_empty()).unwrap_or(Path::new("."));
        let name = path.file_name().ok_or_else(|| bad("not a file name".into()))?.to_string_lossy();
        let tmp = dir.join(format!(".{name}.tmp{}", std::process::id()));
        let io = |source| EvalError::Io { path: tmp.clone(), source };
        let mut out = BufWriter::new(File::create(&tmp).map_err(io)?);
        let mut bytes = MAGIC.to_vec();
        header.iter().for_each(|v| bytes.extend_from_slice(&v.to_le_bytes()));
        chunks.used_tokens().iter().for_each(|t| bytes.extend_from_slice(&t.to_le_bytes()));
        let mut w = KlBaseWriter { path: path.to_path_buf(), tmp: tmp.clone(), out: None, top_k, records_left: chunks.n_chunk() * chunks.scored_per_chunk() };
        out.write_all(&bytes).map_err(io)?;
        w.out = Some(out);
        Ok(w)
    }

    /// Adds the records of one chunk: its scored logits (`targets.len() × n_vocab`) and targets.
    pub fn add_chunk(&mut self, logits: &[f32], targets: &[u32]) -> Result<(), EvalError> {
        let n_vocab = logits.len() / targets.len().max(1);
        let records: Vec<BaseRecord> = logits.par_chunks(n_vocab).zip(targets.par_iter()).map(|(row, &t)| base_record(row, t, self.top_k)).collect();
        if records.len() > self.records_left {
            return Err(EvalError::BadBase { path: self.path.clone(), what: "more records than the header announces".into() });
        }
        self.records_left -= records.len();
        let mut bytes = Vec::with_capacity(records.len() * record_bytes(self.top_k));
        for r in &records {
            for &(id, lp) in &r.top {
                bytes.extend_from_slice(&id.to_le_bytes());
                bytes.extend_from_slice(&lp.to_le_bytes());
            }
            bytes.extend_from_slice(&r.rest_log_prob.to_le_bytes());
            bytes.extend_from_slice(&r.target_log_prob.to_le_bytes());
        }
        let out = self.out.as_mut().expect("present until finish");
        out.write_all(&bytes).map_err(|source| EvalError::Io { path: self.tmp.clone(), source })
    }

    /// Flushes, syncs and renames the file into place.
    pub fn finish(mut self) -> Result<(), EvalError> {
        if self.records_left != 0 {
            return Err(EvalError::BadBase { path: self.path.clone(), what: format!("{} records missing", self.records_left) });
        }
        let out = self.out.take().expect("present until finish");
        let io = |source| EvalError::Io { path: self.tmp.clone(), source };
        let file = out.into_inner().map_err(|e| io(e.into_error()))?;
        file.sync_all().map_err(io)?;
        std::fs::rename(&self.tmp, &self.path).map_err(io)
    }
}

impl Drop for KlBaseWriter {
    fn drop(&mut self) {
        // Still holding the writer means finish() did not succeed: leave no partial file.
        if self.out.take().is_some() {
            let _ = std::fs::remove_file(&self.tmp);
        }
    }
}

/// A base file read back and checked.
#[derive(Debug, Clone)]
pub struct KlBase {
    pub path: PathBuf,
    pub n_vocab: usize,
    pub top_k: usize,
    chunks: Chunks,
    records: Vec<u8>,
}

fn u32_at(b: &[u8], off: usize) -> u32 {
    u32::from_le_bytes(b[off..off + 4].try_into().expect("4 bytes"))
}

fn f32_at(b: &[u8], off: usize) -> f32 {
    f32::from_le_bytes(b[off..off + 4].try_into().expect("4 bytes"))
}

impl KlBase {
    pub fn read(path: &Path) -> Result<Self, EvalError> {
        let bytes = std::fs::read(path).map_err(|source| EvalError::Io { path: path.to_path_buf(), source })?;
        Self::parse(path, bytes)
    }

    fn parse(path: &Path, bytes: Vec<u8>) -> Result<Self, EvalError> {
        let bad = |what: String| EvalError::BadBase { path: path.to_path_buf(), what };
        if bytes.len() < HEADER_BYTES || &bytes[..8] != MAGIC {
            return Err(bad("not a Nexus KL base file (no NXKLBASE header)".into()));
        }
        let version = u32_at(&bytes, 8);
        if version != VERSION {
            return Err(bad(format!("format version {version}; this build reads version {VERSION}")));
        }
        let [n_vocab, n_ctx, n_chunk, top_k] = [12, 16, 20, 24].map(|o| u32_at(&bytes, o) as usize);
        if n_vocab == 0 || top_k == 0 || top_k > n_vocab || n_ctx < 4 || n_chunk == 0 {
            return Err(bad(format!("implausible header: n_vocab {n_vocab}, n_ctx {n_ctx}, n_chunk {n_chunk}, top_k {top_k}")));
        }
        let n_tokens = n_chunk.checked_mul(n_ctx);
        let n_records = n_chunk.checked_mul(n_ctx - 1 - n_ctx / 2);
        let expected = n_tokens
            .and_then(|t| t.checked_mul(4))
            .zip(n_records.and_then(|r| r.checked_mul(record_bytes(top_k))))
            .and_then(|(t, r)| t.checked_add(r))
            .and_then(|b| b.checked_add(HEADER_BYTES));
        if expected != Some(bytes.len()) {
            return Err(bad(format!("{} bytes, but the header (n_ctx {n_ctx}, n_chunk {n_chunk}, top_k {top_k}) implies {expected:?}", bytes.len())));
        }
        let n_tokens = n_chunk * n_ctx;
        let tokens: Vec<u32> = (0..n_tokens).map(|i| u32_at(&bytes, HEADER_BYTES + 4 * i)).collect();
        if let Some(t) = tokens.iter().find(|&&t| t as usize >= n_vocab) {
            return Err(bad(format!("token {t} is outside the vocabulary of {n_vocab}")));
        }
        let records = bytes[HEADER_BYTES + 4 * n_tokens..].to_vec();
        let base = KlBase { path: path.to_path_buf(), n_vocab, top_k, chunks: Chunks::new(tokens, n_ctx, Some(n_chunk))?, records };
        for r in 0..n_chunk * base.chunks.scored_per_chunk() {
            let rec = base.record_at(r);
            if let Some(&(id, _)) = rec.top.iter().find(|(id, _)| *id as usize >= n_vocab) {
                return Err(bad(format!("record {r} names token {id}, outside the vocabulary of {n_vocab}")));
            }
        }
        Ok(base)
    }

    /// The chunks the base was computed on; evaluate the other model on exactly these.
    pub fn chunks(&self) -> &Chunks {
        &self.chunks
    }

    fn record_at(&self, r: usize) -> BaseRecord {
        let b = &self.records[r * record_bytes(self.top_k)..(r + 1) * record_bytes(self.top_k)];
        let top = (0..self.top_k).map(|i| (u32_at(b, 8 * i), f32_at(b, 8 * i + 4))).collect();
        BaseRecord { top, rest_log_prob: f32_at(b, 8 * self.top_k), target_log_prob: f32_at(b, 8 * self.top_k + 4) }
    }

    /// The record of the `j`-th scored position of chunk `chunk`.
    pub fn record(&self, chunk: usize, j: usize) -> BaseRecord {
        self.record_at(chunk * self.chunks.scored_per_chunk() + j)
    }

    pub fn check_vocab(&self, n_vocab: usize) -> Result<(), EvalError> {
        if n_vocab != self.n_vocab {
            return Err(EvalError::VocabMismatch { path: self.path.clone(), base: self.n_vocab, model: n_vocab });
        }
        Ok(())
    }

    /// Checks that a text tokenizes to the tokens the base was computed on.
    pub fn check_tokens(&self, text_tokens: &[u32]) -> Result<(), EvalError> {
        let base = self.chunks.used_tokens();
        let pos = base.iter().zip(text_tokens).position(|(a, b)| a != b);
        match pos {
            Some(pos) => Err(EvalError::TokenMismatch { path: self.path.clone(), pos, base: base[pos], text: text_tokens[pos] }),
            None if text_tokens.len() < base.len() => {
                Err(EvalError::TokenMismatch { path: self.path.clone(), pos: text_tokens.len(), base: base[text_tokens.len()], text: u32::MAX })
            }
            None => Ok(()),
        }
    }
}

/// One position compared: KL(base ‖ model) over top-k + rest, whether the argmaxes agree,
/// and both models' NLL of the target.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct PositionComparison {
    pub kl: f64,
    pub same_top: bool,
    pub nll: f64,
    pub nll_base: f64,
}

pub fn compare_row(row: &[f32], base: &BaseRecord, target: u32) -> PositionComparison {
    let (max, ln_sum) = log_norm(row);
    let log_q = |i: u32| f64::from(row[i as usize] - max) - ln_sum;
    let mut kl: f64 = base.top.iter().map(|&(i, lp)| f64::from(lp).exp() * (f64::from(lp) - log_q(i))).sum();
    let p_rest = f64::from(base.rest_log_prob).exp();
    if p_rest > 0.0 {
        let mut ids: Vec<u32> = base.top.iter().map(|t| t.0).collect();
        ids.sort_unstable();
        // A model that puts no mass at all outside the base's top-k would give infinite KL;
        // the smallest positive double keeps the figure finite and still very large.
        let q_rest = (rest_sum(row, max, &ids) / ln_sum.exp()).max(f64::MIN_POSITIVE);
        kl += p_rest * (f64::from(base.rest_log_prob) - q_rest.ln());
    }
    let argmax = (0..row.len()).max_by(|&a, &b| row[a].total_cmp(&row[b]).then(b.cmp(&a))).unwrap_or(0);
    PositionComparison {
        // Rounding can leave a hair below zero for identical distributions.
        kl: kl.max(0.0),
        same_top: base.top.first().is_some_and(|&(id, _)| id as usize == argmax),
        nll: -log_q(target),
        nll_base: -f64::from(base.target_log_prob),
    }
}

/// Mean and the half-width of its 95% normal interval from running sums.
fn mean_ci(sum: f64, sum2: f64, n: usize) -> (f64, f64) {
    if n == 0 {
        return (0.0, 0.0);
    }
    let mean = sum / n as f64;
    let var = (sum2 / n as f64 - mean * mean).max(0.0);
    let se = if n > 1 { (var / (n - 1) as f64).sqrt() } else { 0.0 };
    (mean, Z95 * se)
}

/// Running totals of a comparison against a base.
#[derive(Debug, Clone, Default)]
pub struct KlReport {
    /// This model's NLL of the targets (its perplexity).
    pub nll: NllStats,
    /// The base's NLL of the same targets.
    pub nll_base: NllStats,
    kl_sum: f64,
    kl_sum2: f64,
    diff_sum: f64,
    diff_sum2: f64,
    same_top: usize,
}

impl KlReport {
    pub fn add(&mut self, c: PositionComparison) {
        self.nll.add(c.nll);
        self.nll_base.add(c.nll_base);
        self.kl_sum += c.kl;
        self.kl_sum2 += c.kl * c.kl;
        let d = c.nll - c.nll_base;
        self.diff_sum += d;
        self.diff_sum2 += d * d;
        self.same_top += usize::from(c.same_top);
    }

    /// Compares one chunk's scored logits against the base's records for it.
    pub fn add_chunk(&mut self, base: &KlBase, chunk: usize, logits: &[f32]) {
        let targets = base.chunks().targets(chunk);
        let rows: Vec<PositionComparison> = logits
            .par_chunks(base.n_vocab)
            .zip(targets.par_iter())
            .enumerate()
            .map(|(j, (row, &t))| compare_row(row, &base.record(chunk, j), t))
            .collect();
        rows.into_iter().for_each(|c| self.add(c));
    }

    pub fn count(&self) -> usize {
        self.nll.count
    }

    /// Mean KL divergence and the half-width of its 95% interval (standard error over positions).
    pub fn mean_kl(&self) -> (f64, f64) {
        mean_ci(self.kl_sum, self.kl_sum2, self.count())
    }

    /// Share of positions whose argmax is the base's, and its 95% half-width (binomial SE).
    pub fn same_top(&self) -> (f64, f64) {
        let n = self.count();
        if n < 2 {
            return (self.same_top as f64 / n.max(1) as f64, 0.0);
        }
        let p = self.same_top as f64 / n as f64;
        (p, Z95 * (p * (1.0 - p) / (n - 1) as f64).sqrt())
    }

    /// PPL(model)/PPL(base) = exp(mean of the per-position NLL difference), with the 95%
    /// interval of that mean mapped through exp (paired, so the two models' shared
    /// difficulty cancels — llama.cpp's covariance formula is the same quantity).
    pub fn ppl_ratio(&self) -> (f64, f64, f64) {
        let (d, half) = mean_ci(self.diff_sum, self.diff_sum2, self.count());
        (d.exp(), (d - half).exp(), (d + half).exp())
    }
}

#[cfg(test)]
#[path = "kl_tests.rs"]
mod tests;
