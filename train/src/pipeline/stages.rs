//! Each stage of a run as a function over the run directory (see `super` for its files).

use std::path::{Path, PathBuf};
use std::sync::atomic::AtomicBool;

use nexus_runtime::gguf::{GgufFile, Value};
use nexus_runtime::model::{Arch, Model};
use serde::{Deserialize, Serialize};

use super::TeacherKit;
use crate::anchor::{anchor_layers, Anchor, MapInit};
use crate::checkpoint::{self, Checkpoint};
use crate::config::{InitKind, RunConfig};
use crate::data::{build_corpus, generate_from_teacher, sha256_file, write_atomic, Dataset, GenerateConfig, GenerationRecord, Provenance};
use crate::error::TrainError;
use crate::export::{export_gguf, ExportSummary, ExportType};
use crate::init::{init_pruned, init_random, Pruning};
use crate::profile::Profile;
use crate::student::StudentConfig;
use crate::trainer::metrics::{read_metrics, write_curves, StepMetrics};
use crate::trainer::step::PhaseSeconds;
use crate::trainer::{self, TrainIo, TrainState};
use crate::verify::{compare_adapters, default_capabilities, verify, Capability, Contract, VerifyConfig, VerifyReport};

/// `progress(stage, done, total)`.
pub type Progress<'a> = &'a mut dyn FnMut(&str, usize, usize);

pub const PROFILE_FILE: &str = "profile.safetensors";
pub const STUDENT_FILE: &str = "student.json";
pub const SUMMARY_FILE: &str = "train_summary.json";
pub const VERIFY_JSON: &str = "verify_report.json";
pub const VERIFY_MD: &str = "verify_report.md";
/// Which checkpoint step the last verification measured, so an export after more training is
/// not marked verified by an older report.
pub const VERIFY_STATE: &str = "verify_state.json";

fn write_json<T: Serialize>(path: &Path, value: &T) -> Result<(), TrainError> {
    let text = serde_json::to_string_pretty(value).expect("serializes");
    write_atomic(path, text.as_bytes()).map_err(|e| TrainError::io(path, e))
}

fn read_json<T: for<'de> Deserialize<'de>>(path: &Path) -> Result<T, TrainError> {
    let text = std::fs::read_to_string(path).map_err(|e| TrainError::io(path, e))?;
    serde_json::from_str(&text).map_err(|e| TrainError::Config { path: path.into(), what: e.to_string() })
}

fn create_run_dir(cfg: &RunConfig) -> Result<(), TrainError> {
    std::fs::create_dir_all(&cfg.run_dir).map_err(|e| TrainError::io(&cfg.run_dir, e))
}

/// The capability sets verify measures (and training must never see).
pub fn verify_sets(cfg: &RunConfig) -> Vec<Capability> {
    match cfg.verify.sets.is_empty() {
        true => default_capabilities(&cfg.verify.heldout_dir),
        false => cfg.verify.sets.iter().map(|(name, path)| Capability { name: name.clone(), path: path.clone() }).collect(),
    }
}

/// The training tokens: the user's sources and the teacher's answers to the prompt set, with
/// any document that overlaps a held-out set refused; `provenance.json` records it all.
pub fn prepare_data(cfg: &RunConfig, kit: &TeacherKit, progress: Progress) -> Result<Vec<u32>, TrainError> {
    create_run_dir(cfg)?;
    let mut held_out: Vec<PathBuf> = verify_sets(cfg).into_iter().map(|c| c.path).collect();
    held_out.extend(cfg.data.held_out.iter().cloned());
    held_out.dedup();
    let generation = match &cfg.data.prompts {
        Some(prompts) => Some(generate(cfg, kit, prompts, progress)?),
        None => None,
    };
    let sources = training_sources(cfg, generation.as_ref().map(|g| g.output_path.as_path()));
    let corpus = build_corpus(&sources, &kit.tokenizer, kit.template.as_ref(), &held_out)?;
    Provenance::write(&corpus.provenance(generation), &cfg.run_dir)?;
    Ok(corpus.tokens)
}

/// The files of the token stream in order: the user's sources, then the teacher's answers
/// `data.answers_repeat` times.
fn training_sources(cfg: &RunConfig, answers: Option<&Path>) -> Vec<PathBuf> {
    let mut sources = cfg.data.sources.clone();
    sources.extend(answers.into_iter().flat_map(|a| std::iter::repeat_n(a.to_path_buf(), cfg.data.answers_repeat)));
    sources
}

/// The teacher's answers, generated once and reused while prompts and settings are unchanged.
fn generate(cfg: &RunConfig, kit: &TeacherKit, prompts: &Path, progress: Progress) -> Result<GenerationRecord, TrainError> {
    let gen = GenerateConfig {
        max_tokens: cfg.data.max_answer_tokens,
        temperature: cfg.data.temperature,
        top_p: cfg.data.top_p,
        seed: cfg.seed,
        per_prompt: cfg.data.per_prompt,
    };
    let no_template = || TrainError::Config {
        path: cfg.teacher.clone(),
        what: "the teacher has no chat template, so it cannot answer data.prompts; give data.sources instead".into(),
    };
    teacher_answers(kit, prompts, &gen, &cfg.run_dir.join("generated.jsonl"), &cfg.run_dir.join("generation.json"), no_template, progress)
}

/// The teacher's answers to `prompts` in `out` (JSONL) with their record in `record_path`:
/// the ones already there when prompts, output and settings are unchanged, else generated
/// now. `no_template` is the error for a teacher without a chat template.
pub fn teacher_answers(
    kit: &TeacherKit,
    prompts: &Path,
    gen: &GenerateConfig,
    out: &Path,
    record_path: &Path,
    no_template: impl FnOnce() -> TrainError,
    progress: Progress,
) -> Result<GenerationRecord, TrainError> {
    let (out, record_path) = (out.to_path_buf(), record_path.to_path_buf());
    if record_path.exists() && out.exists() {
        let old: GenerationRecord = read_json(&record_path)?;
        let same = (old.teacher.clone(), old.teacher_bytes) == crate::data::teacher_identity(&kit.teacher.model)
            && old.prompts_sha256 == sha256_file(prompts)?
            && old.output_sha256 == sha256_file(&out)?
            && (old.per_prompt, old.max_tokens, old.seed) == (gen.per_prompt, gen.max_tokens, gen.seed)
            && (old.temperature, old.top_p) == (gen.temperature, gen.top_p);
        if same {
            // The run directory may have moved since (or been made on another machine).
            return Ok(GenerationRecord { output_path: out, ..old });
        }
    }
    let template = kit.template.as_ref().ok_or_else(no_template)?;
    let record = generate_from_teacher(&kit.teacher.model, &kit.tokenizer, template, prompts, gen, &out, &mut |d, t| progress("generate", d, t))?;
    write_json(&record_path, &record)?;
    Ok(record)
}

/// Stage 1: profiles the teacher on the first calibration tokens of the training data and
/// writes the profile file and its report.
pub fn run_profile(cfg: &RunConfig, kit: &TeacherKit, tokens: &[u32], progress: Progress) -> Result<Profile, TrainError> {
    create_run_dir(cfg)?;
    let p = crate::profile::profile(&kit.teacher.model, tokens, &cfg.profile.to_config(cfg.seed), progress)?;
    p.save(&cfg.run_dir.join(PROFILE_FILE))?;
    p.write_report(&cfg.run_dir.join("profile"))?;
    Ok(p)
}

pub fn load_profile(cfg: &RunConfig) -> Result<Profile, TrainError> {
    let path = cfg.run_dir.join(PROFILE_FILE);
    if !path.exists() {
        return Err(TrainError::Config {
            path,
            what: "no profile: pruned initialization and anchoring need one (run `nexus-cli distill profile` first, or set student.init = \"random\" and train.anchor = 0)".into(),
        });
    }
    Ok(Profile::load(&path)?)
}

/// The student's shape: the config's sizes, the teacher's vocabulary, head size, norms, RoPE.
pub fn student_config(cfg: &RunConfig, teacher: &Model) -> Result<StudentConfig, TrainError> {
    let t = &teacher.config;
    let bad = |what: String| TrainError::Config { path: cfg.teacher.clone(), what };
    if t.arch != Arch::Llama {
        return Err(bad(format!("a {} teacher: distillation writes llama students and needs a llama teacher", t.arch.name())));
    }
    if t.rope_dim != t.head_dim || t.rope_freq_scale != 1.0 || teacher.file().tensor_info("rope_freqs.weight").is_some() {
        return Err(bad("the teacher's RoPE (partial rotation, scaling or frequency factors) is not one the student can copy".into()));
    }
    let s = &cfg.student;
    Ok(StudentConfig {
        n_vocab: t.n_vocab,
        n_embd: s.n_embd,
        n_layer: s.n_layer,
        n_head: s.n_head,
        n_head_kv: s.n_head_kv,
        head_dim: t.head_dim,
        n_ff: s.n_ff,
        rms_eps: t.rms_eps,
        rope_base: t.rope_base,
        n_ctx: cfg.student_n_ctx(),
        tied: teacher.file().tensor_info("output.weight").is_none(),
    })
}

/// How the student was made (`student.json`).
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct StudentRecord {
    pub config: StudentConfig,
    pub init: InitKind,
    pub pruning: Option<Pruning>,
    pub n_params: usize,
    pub teacher_params: usize,
    /// `n_params / teacher_params`.
    pub ratio: f64,
    /// `(student layer, teacher layer)` of each anchor.
    pub anchors: Vec<(usize, usize)>,
}

pub fn teacher_params(teacher: &Model) -> usize {
    teacher.file().tensors().iter().map(|t| t.n_elements() as usize).sum()
}

/// The anchors of the chosen student layers, each onto its teacher layer's protected subspace.
pub fn build_anchors(cfg: &RunConfig, s: &StudentConfig, profile: &Profile, pruning: Option<&Pruning>) -> Result<Vec<Anchor>, TrainError> {
    if cfg.train.anchor == 0.0 {
        return Ok(Vec::new());
    }
    let pairs = anchor_layers(s.n_layer, profile.n_layer, pruning.map(|p| p.layers.as_slice()), cfg.train.anchor_every);
    pairs
        .into_iter()
        .map(|(sl, tl)| {
            let lp = &profile.layers[tl];
            let init = match pruning {
                Some(p) => MapInit::Selection(&p.embd_channels),
                None => MapInit::Random(cfg.seed ^ (sl as u64 + 1)),
            };
            // The anchor divides by the kept variance, so every layer's term reads as "share of
            // the protected variance missed", comparable across depths whose streams differ by 100×.
            Ok(Anchor::from_profile(sl, tl, lp, s.n_embd, init)?)
        })
        .collect()
}

/// What a training run measured (`train_summary.json`).
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct TrainSummary {
    /// Steps taken so far, and the steps the schedule was set for.
    pub steps: usize,
    pub planned_steps: usize,
    pub tokens: usize,
    /// Sum of the steps' own times.
    pub seconds: f64,
    pub tokens_per_s: f64,
    /// Training FLOPs per token: 6·(student matmul weights) for its forward and backward, plus
    /// 2·(teacher matmul weights) for the teacher's forward (attention scores not counted).
    pub flops_per_token: f64,
    pub achieved_tflops: f64,
    /// The MFU numerator: 6·(student matmul weights)·tokens/s over the whole steps'
    /// time, in TFLOP/s, and that over [`H100_BF16_DENSE_TFLOPS`].
    pub student_tflops: f64,
    pub mfu_h100_bf16: f64,
    /// The teacher's forward on its own: 2·(teacher matmul weights)·tokens over the teacher
    /// phase's seconds, TFLOP/s (0 when no step ran the teacher; with a CPU teacher's outputs
    /// kept for data seen again, the phase times lookups and the figure means nothing).
    pub teacher_tflops: f64,
    pub first_loss: f64,
    /// Means over the last 10 steps (training batches, not held-out text).
    pub last10_loss: f64,
    pub last10_kl: f64,
    pub last10_top1: f64,
    /// Threads of this process (the one that wrote the summary).
    pub threads: usize,
    /// Seconds per phase, summed over the logged steps that measured them.
    pub phases: PhaseSeconds,
}

/// Stage 3: initializes (or resumes) and trains the student, checkpointing as it goes.
pub fn run_train(cfg: &RunConfig, kit: &TeacherKit, resume: bool, stop: &AtomicBool, progress: Progress, on_step: &mut dyn FnMut(&StepMetrics, usize)) -> Result<TrainSummary, TrainError> {
    let has_checkpoint = checkpoint::exists(&cfg.run_dir);
    if has_checkpoint && !resume {
        return Err(TrainError::Config {
            path: cfg.run_dir.join("checkpoint"),
            what: "this run already has a checkpoint: pass --resume to continue it, or choose another run_dir".into(),
        });
    }
    if resume && !has_checkpoint {
        return Err(TrainError::Config { path: cfg.run_dir.join("checkpoint"), what: "--resume, but there is no checkpoint to resume".into() });
    }
    let scfg = student_config(cfg, &kit.teacher.model)?;
    let tokens = prepare_data(cfg, kit, progress)?;
    let mut dataset = Dataset::new(tokens, cfg.data.seq_len, cfg.seed)?;
    let mut state = match resume {
        true => {
            let state = TrainState::resume(&cfg.run_dir)?;
            if state.cfg.n_vocab != scfg.n_vocab {
                return Err(TrainError::Config {
                    path: cfg.teacher.clone(),
                    what: format!("this teacher's vocabulary has {} tokens, the checkpoint's student was distilled with {}: teacher and student must share one vocabulary", scfg.n_vocab, state.cfg.n_vocab),
                });
            }
            if state.cfg != scfg {
                return Err(TrainError::Config {
                    path: cfg.run_dir.join("checkpoint"),
                    what: format!("the checkpoint's student {:?} is not the config's {:?}", state.cfg, scfg),
                });
            }
            state
        }
        false => fresh_state(cfg, kit, scfg.clone())?,
    };
    let mut io = TrainIo { run_dir: &cfg.run_dir, stop, progress: on_step };
    let result = trainer::train(&mut state, &kit.teacher, &mut dataset, &cfg.train, cfg.profile.sink_tokens, &mut io);
    // An interrupted run still gets its curves and summary (of the steps so far); a run that
    // failed reports its own error, not the report's (there may be no step to report).
    let summary = write_train_report(cfg, &kit.teacher.model, &scfg);
    result?;
    summary
}

/// Draws the training curves and writes `train_summary.json` from `metrics.jsonl`: every step
/// of the run so far, across resumes (seconds are the steps' own, without loading time).
pub fn write_train_report(cfg: &RunConfig, teacher: &Model, scfg: &StudentConfig) -> Result<TrainSummary, TrainError> {
    let log = read_metrics(&cfg.run_dir)?;
    if log.is_empty() {
        return Err(TrainError::Config { path: cfg.run_dir.join(crate::trainer::metrics::METRICS_FILE), what: "no training steps logged yet".into() });
    }
    write_curves(&cfg.run_dir, &log)?;
    let tokens: usize = log.iter().map(|m| m.tokens).sum();
    let seconds: f64 = log.iter().map(|m| m.seconds).sum();
    let (student_flops, teacher_flops) = (6.0 * matmul_params(scfg) as f64, 2.0 * teacher_matmul_params(teacher) as f64);
    let flops_per_token = student_flops + teacher_flops;
    let phases = log.iter().fold(PhaseSeconds::default(), |a, m| a.plus(&m.phases));
    let student_tflops = student_flops * tokens as f64 / seconds.max(1e-9) / 1e12;
    let tail = &log[log.len().saturating_sub(10)..];
    let mean = |f: &dyn Fn(&StepMetrics) -> f64| tail.iter().map(f).sum::<f64>() / tail.len() as f64;
    let summary = TrainSummary {
        steps: log.last().map_or(0, |m| m.step),
        planned_steps: cfg.train.steps,
        tokens,
        seconds,
        tokens_per_s: tokens as f64 / seconds.max(1e-9),
        flops_per_token,
        achieved_tflops: flops_per_token * tokens as f64 / seconds.max(1e-9) / 1e12,
        student_tflops,
        mfu_h100_bf16: student_tflops / H100_BF16_DENSE_TFLOPS,
        teacher_tflops: match phases.teacher > 0.0 {
            true => teacher_flops * tokens as f64 / phases.teacher / 1e12,
            false => 0.0,
        },
        first_loss: log[0].loss,
        last10_loss: mean(&|m| m.loss),
        last10_kl: mean(&|m| m.kl),
        last10_top1: mean(&|m| m.top1),
        threads: rayon::current_num_threads(),
        phases,
    };
    write_json(&cfg.run_dir.join(SUMMARY_FILE), &summary)?;
    Ok(summary)
}

fn fresh_state(cfg: &RunConfig, kit: &TeacherKit, scfg: StudentConfig) -> Result<TrainState, TrainError> {
    let needs_profile = cfg.student.init == InitKind::Prune || cfg.train.anchor > 0.0;
    let profile = if needs_profile { Some(load_profile(cfg)?) } else { None };
    let (params, pruning) = match (cfg.student.init, &profile) {
        (InitKind::Prune, Some(p)) => {
            let (params, pruning) = init_pruned(&kit.teacher.model, &p.importance, &scfg)?;
            (params, Some(pruning))
        }
        _ => (init_random(&scfg, cfg.seed), None),
    };
    let anchors = match &profile {
        Some(p) => build_anchors(cfg, &scfg, p, pruning.as_ref())?,
        None => Vec::new(),
    };
    let teacher_params = teacher_params(&kit.teacher.model);
    let record = StudentRecord {
        n_params: scfg.n_params(),
        teacher_params,
        ratio: scfg.n_params() as f64 / teacher_params as f64,
        config: scfg.clone(),
        init: cfg.student.init,
        pruning,
        anchors: anchors.iter().map(|a| (a.student_layer, a.teacher_layer)).collect(),
    };
    write_json(&cfg.run_dir.join(STUDENT_FILE), &record)?;
    Ok(TrainState::fresh(scfg, params, anchors))
}

/// The H100 SXM's dense BF16 tensor-core peak, TFLOP/s: the denominator of the MFU the
/// reference run reports.
pub const H100_BF16_DENSE_TFLOPS: f64 = 989.0;

/// Weights that take part in a matrix product per token (the embedding lookup does not; a
/// tied head does).
fn matmul_params(s: &StudentConfig) -> usize {
    let lookup_only = if s.tied { 0 } else { s.n_vocab * s.n_embd };
    s.n_params() - s.n_embd * (2 * s.n_layer + 1) - lookup_only
}

fn teacher_matmul_params(t: &Model) -> usize {
    let c = &t.config;
    let layer = c.q_dim() * c.n_embd * 2 + c.kv_dim() * c.n_embd * 2 + 3 * c.n_ff * c.n_embd;
    c.n_layer * layer + c.n_vocab * c.n_embd
}

/// Which step the last verification measured and whether it passed.
#[derive(Debug, Clone, Serialize, Deserialize)]
struct VerifyState {
    step: usize,
    verified: bool,
}

/// Writes the checkpoint's student as a GGUF; it is marked verified only when the last
/// verification measured this very checkpoint and every contract held.
pub fn export_student(cfg: &RunConfig, ty: ExportType, out: &Path) -> Result<ExportSummary, TrainError> {
    let ck = Checkpoint::load(&cfg.run_dir)?;
    let step = ck.state.get("step").and_then(|s| s.as_u64()).unwrap_or(0) as usize;
    let state_path = cfg.run_dir.join(VERIFY_STATE);
    let report = match state_path.exists() {
        true => {
            let vs: VerifyState = read_json(&state_path)?;
            match vs.step == step {
                true => Some(VerifyReport::load(&cfg.run_dir.join(VERIFY_JSON))?),
                false => None,
            }
        }
        false => None,
    };
    write_export(cfg, &ck, step, ty, out, report.as_ref())
}

fn write_export(cfg: &RunConfig, ck: &Checkpoint, step: usize, ty: ExportType, out: &Path, report: Option<&VerifyReport>) -> Result<ExportSummary, TrainError> {
    let teacher_file = GgufFile::open(&cfg.teacher).map_err(nexus_runtime::model::ModelError::from)?;
    let teacher_name = cfg.teacher.file_name().map_or_else(String::new, |n| n.to_string_lossy().into_owned());
    let mut meta = vec![
        ("general.name".to_string(), Value::String(cfg.export.name.clone())),
        ("nexus.distill.teacher".to_string(), Value::String(teacher_name)),
        ("nexus.distill.steps".to_string(), Value::U64(step as u64)),
        ("nexus.distill.verified".to_string(), Value::Bool(report.is_some_and(|r| r.verified()))),
    ];
    if let Some(r) = report {
        meta.push(("nexus.distill.verify_report".to_string(), Value::String(serde_json::to_string(r).expect("report serializes"))));
    }
    if let Some(dir) = out.parent().filter(|d| !d.as_os_str().is_empty()) {
        std::fs::create_dir_all(dir).map_err(|e| TrainError::io(dir, e))?;
    }
    Ok(export_gguf(&ck.config, &ck.params, &teacher_file, ty, &meta, out)?)
}

/// Stage 4: exports the checkpoint, measures it against the teacher on every held-out set,
/// writes the reports, and re-exports it marked verified when the contract holds.
pub fn run_verify(cfg: &RunConfig, kit: &TeacherKit, progress: Progress) -> Result<(VerifyReport, ExportSummary), TrainError> {
    run_verify_with(cfg, kit, &[], progress)
}

/// [`run_verify`], plus each `(capability, LoRA file)` of `adapters` measured on that
/// capability's set with the adapter attached to the exported student (in the report's
/// `adapters`; the contract still judges the student alone).
pub fn run_verify_with(cfg: &RunConfig, kit: &TeacherKit, adapters: &[(String, PathBuf)], progress: Progress) -> Result<(VerifyReport, ExportSummary), TrainError> {
    let ck = Checkpoint::load(&cfg.run_dir)?;
    let step = ck.state.get("step").and_then(|s| s.as_u64()).unwrap_or(0) as usize;
    let ty = cfg.export.ty.parse::<ExportType>().map_err(|e| TrainError::Config { path: cfg.run_dir.clone(), what: format!("export.type: {e}") })?;
    let out = cfg.export_path();
    write_export(cfg, &ck, step, ty, &out, None)?;
    let student = Model::load(&out)?;
    let contract = Contract::load(&cfg.verify.contract)?;
    let vcfg = VerifyConfig { n_ctx: cfg.verify.n_ctx, max_tokens_per_capability: cfg.verify.max_tokens, top_k: cfg.verify.top_k };
    let sets = verify_sets(cfg);
    let mut report = verify(&kit.teacher.model, &student, &kit.tokenizer, kit.template.as_ref(), &sets, &contract, &vcfg, progress)?;
    drop(student);
    report.adapters = compare_adapters(&kit.teacher.model, &out, &kit.tokenizer, kit.template.as_ref(), &sets, &report.capabilities, adapters, &vcfg, progress)?;
    report.write(&cfg.run_dir.join(VERIFY_JSON))?;
    let md = cfg.run_dir.join(VERIFY_MD);
    write_atomic(&md, report.markdown_table().as_bytes()).map_err(|e| TrainError::io(&md, e))?;
    write_json(&cfg.run_dir.join(VERIFY_STATE), &VerifyState { step, verified: report.verified() })?;
    let summary = write_export(cfg, &ck, step, ty, &out, Some(&report))?;
    Ok((report, summary))
}

/// Verification of a given student file instead of the run's checkpoint (a model trained
/// elsewhere, or one whose run directory is gone): the same measurements, contract and
/// adapters as [`run_verify_with`], written to `RUN_DIR/verify_<file stem>.json` and `.md`;
/// no export is written or marked, and the run's own verification state is left alone.
pub fn verify_student_file(cfg: &RunConfig, kit: &TeacherKit, student_path: &Path, adapters: &[(String, PathBuf)], progress: Progress) -> Result<(VerifyReport, PathBuf), TrainError> {
    create_run_dir(cfg)?;
    let student = Model::load(student_path)?;
    let contract = Contract::load(&cfg.verify.contract)?;
    let vcfg = VerifyConfig { n_ctx: cfg.verify.n_ctx, max_tokens_per_capability: cfg.verify.max_tokens, top_k: cfg.verify.top_k };
    let sets = verify_sets(cfg);
    let mut report = verify(&kit.teacher.model, &student, &kit.tokenizer, kit.template.as_ref(), &sets, &contract, &vcfg, progress)?;
    drop(student);
    report.adapters = compare_adapters(&kit.teacher.model, student_path, &kit.tokenizer, kit.template.as_ref(), &sets, &report.capabilities, adapters, &vcfg, progress)?;
    let stem = student_path.file_stem().map_or_else(|| "student".into(), |s| s.to_string_lossy().into_owned());
    let json = cfg.run_dir.join(format!("verify_{stem}.json"));
    report.write(&json)?;
    let md = json.with_extension("md");
    write_atomic(&md, report.markdown_table().as_bytes()).map_err(|e| TrainError::io(&md, e))?;
    Ok((report, json))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_answers_follow_the_sources_as_often_as_asked() {
        let text = "teacher = \"t.gguf\"\nrun_dir = \"run\"\n[data]\nsources = [\"a.txt\", \"b.jsonl\"]\nanswers_repeat = 3\n[student]\nn_embd = 64\nn_layer = 2\nn_head = 4\nn_head_kv = 2\nn_ff = 128\n";
        let cfg = RunConfig::parse(Path::new("x.toml"), text, &[]).unwrap();
        let names = |v: Vec<PathBuf>| v.into_iter().map(|p| p.display().to_string()).collect::<Vec<_>>();
        assert_eq!(names(training_sources(&cfg, Some(Path::new("run/generated.jsonl")))), ["a.txt", "b.jsonl", "run/generated.jsonl", "run/generated.jsonl", "run/generated.jsonl"]);
        assert_eq!(names(training_sources(&cfg, None)), ["a.txt", "b.jsonl"]);
    }
}
