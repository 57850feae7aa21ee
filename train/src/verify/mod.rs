//! Stage 4: what the student kept. Per capability (general prose, chat, code, arithmetic) the
//! teacher and the student read the same held-out tokens in chunks of `n_ctx`, scored as
//! llama-perplexity scores (second half of each chunk), and the runtime's KL machinery
//! (`nexus_runtime::eval::kl`) compares them position by position in memory: mean
//! KL(teacher ‖ student), top-1 agreement and the perplexity ratio, each with a 95%
//! interval. A [`Contract`] sets the minimum per capability; the student is verified only
//! when every check passes.

pub mod contract;
mod measure;
pub mod report;

use std::path::{Path, PathBuf};

use nexus_runtime::chat_template::ChatTemplate;
use nexus_runtime::eval::{EvalError, DEFAULT_TOP_K};
use nexus_runtime::adapter::LoraAdapter;
use nexus_runtime::model::{Model, ModelError};
use nexus_runtime::tokenizer::{Tokenizer, TokenizerError};

use crate::data::{sha256_file, DataError};

pub use contract::{Contract, Limits};
pub use measure::check_same_vocabulary;
pub use report::{AdapterComparison, CapabilityReport, Check, Interval, VerifyReport, REPORT_FILE};

#[derive(Debug, thiserror::Error)]
pub enum VerifyError {
    #[error(transparent)]
    Data(#[from] DataError),
    #[error(transparent)]
    Eval(#[from] EvalError),
    #[error(transparent)]
    Tokenizer(#[from] TokenizerError),
    #[error("{}: {source}", path.display())]
    Io { path: PathBuf, source: std::io::Error },
    #[error("teacher {} and student {} do not share a vocabulary: {what}", teacher.display(), student.display())]
    VocabMismatch { teacher: PathBuf, student: PathBuf, what: String },
    #[error("{}: {what}", path.display())]
    Contract { path: PathBuf, what: String },
    #[error("the contract {} sets limits for capability {name:?}, but no held-out set of that name was measured", contract.display())]
    MissingCapability { name: String, contract: PathBuf },
    #[error("{}: capability {name:?} has {tokens} tokens; a context of {n_ctx} needs at least {} (two chunks)", path.display(), 2 * n_ctx)]
    TooFewTokens { name: String, path: PathBuf, tokens: usize, n_ctx: usize },
    #[error("{}: {what}", path.display())]
    BadReport { path: PathBuf, what: String },
    #[error(transparent)]
    Model(#[from] ModelError),
    #[error("--lora {name}={}: no held-out set named {name:?} is measured (sets: {known})", adapter.display())]
    UnknownCapability { name: String, adapter: PathBuf, known: String },
}

/// A held-out set measured as one capability. Plain text files are read whole; JSONL chat
/// items are rendered with the teacher's chat template (see [`crate::data::load_documents`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Capability {
    pub name: String,
    pub path: PathBuf,
}

/// The committed sets (`models/distill/heldout/`): general prose, chat, code, arithmetic.
pub fn default_capabilities(dir: &Path) -> Vec<Capability> {
    [("general", "general.txt"), ("chat", "chat.jsonl"), ("code", "code.txt"), ("arithmetic", "arithmetic.txt")]
        .into_iter()
        .map(|(name, file)| Capability { name: name.to_string(), path: dir.join(file) })
        .collect()
}

#[derive(Debug, Clone, PartialEq)]
pub struct VerifyConfig {
    /// Tokens per chunk (each chunk starts from an empty cache; the second half is scored).
    pub n_ctx: usize,
    /// Whole chunks are taken from the start of each set up to this many tokens.
    pub max_tokens_per_capability: usize,
    /// Teacher log-probabilities kept per position; the KL is over these plus one "rest"
    /// bucket, a lower bound on the full-vocabulary KL (see `nexus_runtime::eval::kl`).
    pub top_k: usize,
}

impl Default for VerifyConfig {
    fn default() -> Self {
        VerifyConfig { n_ctx: 512, max_tokens_per_capability: 8192, top_k: DEFAULT_TOP_K }
    }
}

/// Measures every capability and checks the contract. `progress(capability, chunk, n_chunk)`
/// is called after each chunk.
#[allow(clippy::too_many_arguments)]
pub fn verify(
    teacher: &Model,
    student: &Model,
    tok: &Tokenizer,
    template: Option<&ChatTemplate>,
    caps: &[Capability],
    contract: &Contract,
    cfg: &VerifyConfig,
    progress: &mut dyn FnMut(&str, usize, usize),
) -> Result<VerifyReport, VerifyError> {
    check_same_vocabulary(teacher, student, tok)?;
    // A contract naming a capability without a set fails before any model runs.
    if let Some(name) = contract.capabilities.keys().find(|n| !caps.iter().any(|c| &c.name == *n)) {
        return Err(VerifyError::MissingCapability { name: name.clone(), contract: contract.path.clone() });
    }
    let capabilities = caps
        .iter()
        .map(|cap| measure::measure(teacher, student, tok, template, cap, cfg, &mut |i, n| progress(&cap.name, i, n)))
        .collect::<Result<Vec<_>, _>>()?;
    let checks = contract.check(&capabilities)?;
    let verified = !checks.is_empty() && checks.iter().all(|c| c.passed);
    Ok(VerifyReport {
        teacher: teacher.file().path().to_path_buf(),
        student: student.file().path().to_path_buf(),
        contract: contract.path.clone(),
        contract_sha256: if contract.path.is_file() { sha256_file(&contract.path)? } else { String::new() },
        n_ctx: cfg.n_ctx,
        top_k: cfg.top_k,
        max_tokens_per_capability: cfg.max_tokens_per_capability,
        capabilities,
        checks,
        verified,
        adapters: Vec::new(),
    })
}

/// Measures each `(capability, adapter file)` pair: the student file `student` with the
/// adapter attached (scale 1, as `run --lora` applies it) on that capability's held-out set,
/// beside `measured`'s figures for the student alone. An adapter is checked against the
/// student (architecture, tensor names, shapes) before anything runs.
#[allow(clippy::too_many_arguments)]
pub fn compare_adapters(
    teacher: &Model,
    student: &Path,
    tok: &Tokenizer,
    template: Option<&ChatTemplate>,
    caps: &[Capability],
    measured: &[CapabilityReport],
    adapters: &[(String, PathBuf)],
    cfg: &VerifyConfig,
    progress: &mut dyn FnMut(&str, usize, usize),
) -> Result<Vec<AdapterComparison>, VerifyError> {
    let mut plan = Vec::with_capacity(adapters.len());
    for (name, file) in adapters {
        let found = caps.iter().zip(measured).find(|(c, _)| &c.name == name);
        let Some((cap, without)) = found else {
            let known = caps.iter().map(|c| c.name.as_str()).collect::<Vec<_>>().join(", ");
            return Err(VerifyError::UnknownCapability { name: name.clone(), adapter: file.clone(), known });
        };
        let adapter = LoraAdapter::load(file)?;
        let mut model = Model::load(student)?;
        model.apply_lora(&[(&adapter, 1.0)])?;
        plan.push((cap, without, file, model));
    }
    let mut out = Vec::with_capacity(plan.len());
    for (cap, without, file, model) in plan {
        let label = format!("{} + {}", cap.name, file.display());
        let with = measure::measure(teacher, &model, tok, template, cap, cfg, &mut |i, n| progress(&label, i, n))?;
        out.push(AdapterComparison { capability: cap.name.clone(), adapter: file.clone(), without: without.clone(), with });
    }
    Ok(out)
}
