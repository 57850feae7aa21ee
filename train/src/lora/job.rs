//! `nexus-cli distill train-lora` as one call: the frozen base and the teacher checked against
//! each other, the capability's data tokenized (refused where it overlaps a held-out set),
//! the adapter initialized (or resumed from its checkpoint), trained and written.

use std::path::{Path, PathBuf};
use std::sync::atomic::AtomicBool;

use nexus_runtime::gguf::{Value, ValueType};
use nexus_runtime::model::Model;
use serde::{Deserialize, Serialize};

use super::base::load_base;
use super::checkpoint::{self as lora_checkpoint, beside, checkpoint_path, LoraJobId};
use super::train::{train_lora, LoraKeeping, LoraStep};
use super::{LoraSet, Target};
use crate::config::TrainSection;
use crate::data::{build_corpus, sha256_file, Dataset, GenerateConfig};
use crate::error::TrainError;
use crate::pipeline::{teacher_answers, Progress, TeacherKit};
use crate::verify::check_same_vocabulary;

/// What to train.
pub struct LoraJob<'a> {
    /// The student GGUF the adapter is for (read, never written).
    pub base: &'a Path,
    pub teacher_path: &'a Path,
    /// The capability's training text (text files or JSONL, as `distill` reads sources).
    pub data: &'a [PathBuf],
    /// Prompts (JSONL, as `data.prompts`) the teacher answers first, with these settings; the
    /// answers (`<out>.answers.jsonl`, reused while prompts and settings are unchanged) join
    /// the data.
    pub prompts: Option<(&'a Path, GenerateConfig)>,
    /// Files no training document may overlap (the capability's held-out set).
    pub held_out: &'a [PathBuf],
    pub targets: &'a [Target],
    pub rank: usize,
    pub alpha: f32,
    pub seq_len: usize,
    pub seed: u64,
    /// Steps, batch, accumulation, schedule, AdamW, clipping and the loss weights.
    pub train: TrainSection,
    pub out: &'a Path,
    /// Save the run's state in `<out>.checkpoint/` every this many steps (0: only when
    /// stopped), and stop after the step during which `stop` is set.
    pub checkpoint_every: usize,
    pub stop: &'a AtomicBool,
    /// Continue the run saved in `<out>.checkpoint/` (refused when there is none or it is of
    /// another job); without it, a saved run there is refused too, so none is overwritten.
    pub resume: bool,
}

/// What a finished job reports.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct LoraSummary {
    pub out: PathBuf,
    pub pairs: usize,
    /// Trainable parameters (A and B of every pair).
    pub parameters: usize,
    pub base_parameters: usize,
    pub data_tokens: usize,
    pub steps: usize,
    /// Means over the first and the last (up to) 10 steps.
    pub first_loss: f64,
    pub last_loss: f64,
    pub first_kl: f64,
    pub last_kl: f64,
    pub seconds: f64,
}

fn mean(xs: impl Iterator<Item = f64>) -> f64 {
    let (s, n) = xs.fold((0.0, 0usize), |(s, n), x| (s + x, n + 1));
    s / n.max(1) as f64
}

/// Runs the job with `kit` (the teacher, its tokenizer and template); `progress` sees the
/// teacher's answers being generated, `on_step` every step.
pub fn run_lora_job(job: &LoraJob, kit: &TeacherKit, progress: Progress, on_step: &mut dyn FnMut(&LoraStep)) -> Result<(LoraSummary, Vec<LoraStep>), TrainError> {
    let (cfg, base) = load_base(job.base)?;
    let teacher_vocab = kit.teacher.model.config.n_vocab;
    if teacher_vocab != cfg.n_vocab {
        return Err(TrainError::Invalid(format!(
            "the base {} has a vocabulary of {} tokens but the teacher {} has {teacher_vocab}: an adapter is distilled from a teacher of the same vocabulary",
            job.base.display(),
            cfg.n_vocab,
            job.teacher_path.display()
        )));
    }
    check_same_vocabulary(&kit.teacher.model, &Model::load(job.base)?, &kit.tokenizer)?;
    let mut lora = LoraSet::init(&cfg, job.targets, job.rank, job.alpha, job.seed)?;
    // Before the teacher answers anything: --resume needs a checkpoint, and a fresh run must
    // not overwrite a saved one.
    let ck = checkpoint_path(job.out);
    match (job.resume, lora_checkpoint::exists(&ck)) {
        (true, false) => return Err(TrainError::Config { path: ck, what: "--resume, but there is no checkpoint to resume".into() }),
        (false, true) => {
            return Err(TrainError::Config { path: ck, what: "an unfinished run of this adapter is saved here: pass --resume to continue it, or remove it".into() })
        }
        _ => {}
    }
    let mut data = job.data.to_vec();
    if let Some((prompts, gen)) = &job.prompts {
        let no_template = || TrainError::Config { path: job.teacher_path.to_path_buf(), what: "the teacher has no chat template, so it cannot answer --prompts".into() };
        let (out, record) = (beside(job.out, "answers.jsonl"), beside(job.out, "answers.json"));
        let record = teacher_answers(kit, prompts, gen, &out, &record, no_template, progress)?;
        data.push(record.output_path);
    }
    if data.is_empty() {
        return Err(TrainError::Invalid("no training data: give --data or --prompts".into()));
    }
    let corpus = build_corpus(&data, &kit.tokenizer, kit.template.as_ref(), job.held_out)?;
    let data_tokens = corpus.tokens.len();
    let mut dataset = Dataset::new(corpus.tokens, job.seq_len, job.seed)?;
    let base_sha = sha256_file(job.base)?;

    let id = LoraJobId {
        base_sha256: base_sha.clone(),
        targets: job.targets.iter().map(|t| t.short().to_string()).collect(),
        rank: job.rank,
        alpha: job.alpha,
        seq_len: job.seq_len,
        batch: job.train.batch,
        accum: job.train.accum,
        seed: job.seed,
    };
    let resume = match job.resume {
        true => Some(lora_checkpoint::load(&ck, &id, &mut lora)?),
        false => None,
    };
    let mut save = |lora: &LoraSet, state: &super::train::LoraResume| lora_checkpoint::save(&ck, &id, lora, state);
    let keeping = LoraKeeping { every: job.checkpoint_every, stop: job.stop, path: &ck, save: &mut save };

    let t0 = std::time::Instant::now();
    let log = train_lora(&cfg, &base, &kit.teacher, &mut dataset, &mut lora, &job.train, resume, Some(keeping), on_step)?;
    let seconds = t0.elapsed().as_secs_f64();

    let file_name = |p: &Path| p.file_name().map_or_else(String::new, |n| n.to_string_lossy().into_owned());
    let stem = job.out.file_name().map_or_else(|| "adapter".into(), |n| n.to_string_lossy().trim_end_matches(".gguf").to_string());
    let data_names: Vec<Value> = data.iter().map(|p| Value::String(file_name(p))).collect();
    let targets: Vec<Value> = job.targets.iter().map(|t| Value::String(t.short().into())).collect();
    let meta = vec![
        ("general.name".to_string(), Value::String(stem)),
        ("nexus.lora.base".to_string(), Value::String(file_name(job.base))),
        ("nexus.lora.base_sha256".to_string(), Value::String(base_sha)),
        ("nexus.lora.teacher".to_string(), Value::String(file_name(job.teacher_path))),
        ("nexus.lora.data".to_string(), Value::Array(ValueType::String, data_names)),
        ("nexus.lora.targets".to_string(), Value::Array(ValueType::String, targets)),
        ("nexus.lora.steps".to_string(), Value::U64(log.len() as u64)),
    ];
    lora.write_gguf("llama", &meta, job.out)?;
    // The adapter is written: nothing is left to resume.
    lora_checkpoint::remove(&ck)?;

    let k = log.len().min(10);
    let summary = LoraSummary {
        out: job.out.to_path_buf(),
        pairs: lora.pairs.len(),
        parameters: lora.pairs.iter().map(|p| p.a.len() + p.b.len()).sum(),
        base_parameters: cfg.n_params(),
        data_tokens,
        steps: log.len(),
        first_loss: mean(log[..k].iter().map(|s| s.loss)),
        last_loss: mean(log[log.len() - k..].iter().map(|s| s.loss)),
        first_kl: mean(log[..k].iter().map(|s| s.kl)),
        last_kl: mean(log[log.len() - k..].iter().map(|s| s.kl)),
        seconds,
    };
    Ok((summary, log))
}
