//! One capability measured: both models over the same chunks, each scored row of the
//! teacher turned into a base record and compared with the student's row — the runtime's
//! `perplexity --kl-divergence` computation without the base file in between.

use nexus_runtime::chat_template::ChatTemplate;
use nexus_runtime::eval::kl::{base_record, compare_row, PositionComparison};
use nexus_runtime::eval::{chunk_logits, Chunks, EvalError, KlReport};
use nexus_runtime::model::Model;
use nexus_runtime::tokenizer::Tokenizer;
use rayon::prelude::*;

use super::report::{CapabilityReport, Interval};
use super::{Capability, VerifyConfig, VerifyError};
use crate::data::{load_documents, sha256_file, tokenize_documents};

/// Refuses a student whose vocabulary is not the teacher's: the same size, and the same
/// text for every id (the student's own tokenizer, read from its file).
pub fn check_same_vocabulary(teacher: &Model, student: &Model, tok: &Tokenizer) -> Result<(), VerifyError> {
    let mismatch = |what: String| VerifyError::VocabMismatch {
        teacher: teacher.file().path().to_path_buf(),
        student: student.file().path().to_path_buf(),
        what,
    };
    let (t, s) = (teacher.config.n_vocab, student.config.n_vocab);
    if t != s {
        return Err(mismatch(format!("the teacher has {t} tokens, the student {s}")));
    }
    if tok.n_vocab() != t {
        return Err(mismatch(format!("the tokenizer given has {} tokens, the teacher model {t}", tok.n_vocab())));
    }
    let student_tok = Tokenizer::from_gguf(student.file())?;
    if student_tok.n_vocab() != t {
        return Err(mismatch(format!("the student's tokenizer has {} tokens, its model {s}", student_tok.n_vocab())));
    }
    if let Some(id) = (0..t as u32).find(|&id| tok.token_text(id) != student_tok.token_text(id)) {
        return Err(mismatch(format!(
            "token {id} is {:?} for the teacher and {:?} for the student",
            tok.token_text(id).unwrap_or(""),
            student_tok.token_text(id).unwrap_or("")
        )));
    }
    Ok(())
}

/// The figures of a finished comparison.
pub(super) fn intervals(r: &KlReport) -> [Interval; 5] {
    let (kl, kl_h) = r.mean_kl();
    let (top1, top1_h) = r.same_top();
    let ppl = |s: &nexus_runtime::eval::NllStats| Interval::symmetric(s.ppl(), s.ppl_uncertainty().unwrap_or(0.0), 1.0, f64::INFINITY);
    let (ratio, lo, hi) = r.ppl_ratio();
    [
        Interval::symmetric(kl, kl_h, 0.0, f64::INFINITY),
        Interval::symmetric(top1, top1_h, 0.0, 1.0),
        ppl(&r.nll_base),
        ppl(&r.nll),
        Interval { value: ratio, lo, hi },
    ]
}

pub(super) fn measure(
    teacher: &Model,
    student: &Model,
    tok: &Tokenizer,
    template: Option<&ChatTemplate>,
    cap: &Capability,
    cfg: &VerifyConfig,
    progress: &mut dyn FnMut(usize, usize),
) -> Result<CapabilityReport, VerifyError> {
    let docs = load_documents(&cap.path, template)?;
    let tokens = tokenize_documents(tok, &docs);
    let n_tokens = tokens.len();
    let max_chunks = (cfg.max_tokens_per_capability / cfg.n_ctx.max(1)).max(1);
    let chunks = Chunks::new(tokens, cfg.n_ctx, Some(max_chunks)).map_err(|e| match e {
        EvalError::TooFewTokens { n_tokens, n_ctx } => VerifyError::TooFewTokens { name: cap.name.clone(), path: cap.path.clone(), tokens: n_tokens, n_ctx },
        other => other.into(),
    })?;
    // Each chunk starts like a document, as in llama-perplexity.
    let bos = if tok.add_bos() { tok.bos() } else { None };
    let n_vocab = teacher.config.n_vocab;
    let top_k = cfg.top_k.clamp(1, n_vocab);
    let (mut t_cache, mut s_cache) = (teacher.new_cache(cfg.n_ctx), student.new_cache(cfg.n_ctx));
    let mut report = KlReport::default();
    for i in 0..chunks.n_chunk() {
        let t_logits = chunk_logits(teacher, &mut t_cache, &chunks, i, bos)?;
        let s_logits = chunk_logits(student, &mut s_cache, &chunks, i, bos)?;
        let rows: Vec<PositionComparison> = t_logits
            .par_chunks(n_vocab)
            .zip(s_logits.par_chunks(n_vocab))
            .zip(chunks.targets(i).par_iter())
            .map(|((t_row, s_row), &target)| compare_row(s_row, &base_record(t_row, target, top_k), target))
            .collect();
        rows.into_iter().for_each(|c| report.add(c));
        progress(i + 1, chunks.n_chunk());
    }
    let [kl, top1, ppl_teacher, ppl_student, ppl_ratio] = intervals(&report);
    Ok(CapabilityReport {
        name: cap.name.clone(),
        path: cap.path.clone(),
        sha256: sha256_file(&cap.path)?,
        tokens: n_tokens,
        tokens_evaluated: chunks.used_tokens().len(),
        chunks: chunks.n_chunk(),
        positions: report.count(),
        kl,
        top1,
        ppl_teacher,
        ppl_student,
        ppl_ratio,
    })
}
