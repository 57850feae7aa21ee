//! `nexus-cli distill train-lora`: a per-capability LoRA adapter for a student, distilled from
//! the teacher's logits on that capability's data with the student's weights frozen, written
//! as llama.cpp's LoRA GGUF (`nexus-cli run --lora` loads it).

use std::io::IsTerminal;
use std::path::PathBuf;
use std::time::Instant;

use anyhow::{Context, Result};
use clap::Args;
use nexus_train::config::TrainSection;
use nexus_train::lora::job::{run_lora_job, LoraJob};
use nexus_train::lora::parse_targets;
use nexus_train::pipeline::TeacherKit;

#[derive(Args)]
pub struct TrainLoraArgs {
    /// The student GGUF the adapter is for (never modified).
    #[arg(long)]
    base: PathBuf,
    /// The teacher GGUF whose logits the adapter is distilled from (same vocabulary).
    #[arg(long)]
    teacher: PathBuf,
    /// The capability's training data: text, or JSONL with `text`, `prompt` + `response`, or
    /// chat `messages` (repeatable; needed unless --prompts is given).
    #[arg(long, required_unless_present = "prompts")]
    data: Vec<PathBuf>,
    /// The capability's prompts (JSONL lines with "prompt", as models/distill/prompts.jsonl):
    /// the teacher answers them first (OUTPUT.answers.jsonl, reused while prompts and settings
    /// are unchanged) and the answers join the data.
    #[arg(long, value_name = "JSONL")]
    prompts: Option<PathBuf>,
    /// Answers drawn per prompt (each with its own seed from --seed).
    #[arg(long = "per-prompt", default_value_t = 2)]
    per_prompt: usize,
    /// Tokens per answer at most.
    #[arg(long = "answer-tokens", default_value_t = 200)]
    answer_tokens: usize,
    /// The answers' sampling temperature and top-p.
    #[arg(long = "answer-temp", default_value_t = 0.8)]
    answer_temp: f32,
    #[arg(long = "answer-top-p", default_value_t = 0.95)]
    answer_top_p: f32,
    /// A held-out file no training document may overlap (repeatable).
    #[arg(long = "held-out")]
    held_out: Vec<PathBuf>,
    /// LoRA rank.
    #[arg(long)]
    rank: usize,
    /// LoRA alpha: the update is scaled by alpha / rank (default: the rank, i.e. scale 1).
    #[arg(long)]
    alpha: Option<f32>,
    /// Projections to adapt in every layer, comma-separated: q,k,v,o,gate,up,down (or all).
    #[arg(long, default_value = "q,k,v,o,gate,up,down")]
    targets: String,
    /// The adapter GGUF to write.
    #[arg(short, long)]
    output: PathBuf,
    /// Optimizer steps.
    #[arg(long, default_value_t = 200)]
    steps: usize,
    /// Sequences per micro-batch.
    #[arg(long, default_value_t = 8)]
    batch: usize,
    /// Micro-batches per step.
    #[arg(long, default_value_t = 1)]
    accum: usize,
    /// Tokens per training sequence.
    #[arg(long = "seq-len", default_value_t = 256)]
    seq_len: usize,
    /// Peak learning rate (linear warm-up, then cosine to lr × min-lr-ratio).
    #[arg(long, default_value_t = 1e-3)]
    lr: f32,
    #[arg(long, default_value_t = 10)]
    warmup: usize,
    #[arg(long = "min-lr-ratio", default_value_t = 0.1)]
    min_lr_ratio: f32,
    /// AdamW's decoupled weight decay on A and B.
    #[arg(long = "weight-decay", default_value_t = 0.0)]
    weight_decay: f32,
    /// Global gradient-norm clip (0: none).
    #[arg(long, default_value_t = 1.0)]
    clip: f64,
    /// α: weight of the next-token cross-entropy.
    #[arg(long, default_value_t = 0.5)]
    ce: f32,
    /// β: weight of T²·KL(teacher ‖ student).
    #[arg(long, default_value_t = 1.0)]
    kl: f32,
    /// T: the distillation temperature.
    #[arg(long, default_value_t = 1.0)]
    temperature: f32,
    /// Vocabulary rows per chunk of the fused head and loss.
    #[arg(long = "vocab-chunk", default_value_t = 4096)]
    vocab_chunk: usize,
    /// Seeds A's initialization and the data order.
    #[arg(long, default_value_t = 1)]
    seed: u64,
    /// Also write every step's metrics here (JSONL).
    #[arg(long)]
    metrics: Option<PathBuf>,
    /// CPU threads (default: all cores).
    #[arg(short = 't', long = "threads")]
    threads: Option<usize>,
    /// Save the run's state in OUTPUT.checkpoint/ every this many steps (0: only on Ctrl-C);
    /// the folder goes once the adapter is written.
    #[arg(long = "checkpoint-every", default_value_t = 50)]
    checkpoint_every: usize,
    /// Continue the run saved in OUTPUT.checkpoint/ (after Ctrl-C or a crash).
    #[arg(long)]
    resume: bool,
}

pub fn train_lora(a: TrainLoraArgs) -> Result<()> {
    crate::load::set_threads(a.threads)?;
    // Settings first: a typo costs nothing to report.
    let targets = parse_targets(&a.targets).with_context(|| format!("--targets {}", a.targets))?;
    anyhow::ensure!(a.rank > 0, "--rank must be at least 1 (got 0)");
    anyhow::ensure!(a.seq_len > 0, "--seq-len must be at least 1");
    for d in &a.data {
        anyhow::ensure!(d.is_file(), "--data {}: no such file", d.display());
    }
    if let Some(p) = &a.prompts {
        anyhow::ensure!(p.is_file(), "--prompts {}: no such file", p.display());
    }
    anyhow::ensure!(a.base.is_file(), "--base {}: no such file", a.base.display());
    let train = TrainSection {
        steps: a.steps,
        batch: a.batch,
        accum: a.accum,
        lr: a.lr,
        min_lr_ratio: a.min_lr_ratio,
        warmup: a.warmup,
        weight_decay: a.weight_decay,
        clip: a.clip,
        ce: a.ce,
        kl: a.kl,
        temperature: a.temperature,
        anchor: 0.0,
        vocab_chunk: a.vocab_chunk,
        ..TrainSection::default()
    };
    let t0 = Instant::now();
    let kit = TeacherKit::load(&a.teacher).with_context(|| format!("loading the teacher {}", a.teacher.display()))?;
    eprintln!("teacher {} loaded in {:.1} s", a.teacher.display(), t0.elapsed().as_secs_f64());
    let stop = crate::distill::stop_on_ctrl_c()?;
    let job = LoraJob {
        base: &a.base,
        teacher_path: &a.teacher,
        data: &a.data,
        prompts: a.prompts.as_deref().map(|p| {
            let gen = nexus_train::data::GenerateConfig {
                max_tokens: a.answer_tokens,
                temperature: a.answer_temp,
                top_p: a.answer_top_p,
                seed: a.seed,
                per_prompt: a.per_prompt,
            };
            (p, gen)
        }),
        held_out: &a.held_out,
        targets: &targets,
        rank: a.rank,
        alpha: a.alpha.unwrap_or(a.rank as f32),
        seq_len: a.seq_len,
        seed: a.seed,
        train,
        out: &a.output,
        checkpoint_every: a.checkpoint_every,
        stop: &stop,
        resume: a.resume,
    };
    let tty = std::io::stderr().is_terminal();
    let mut last_line = Instant::now();
    let total = a.steps;
    let mut answered = Instant::now();
    let mut progress = |what: &str, done: usize, total: usize| {
        if done == total || answered.elapsed().as_secs_f64() > 10.0 {
            eprintln!("{what}: {done}/{total} answers");
            answered = Instant::now();
        }
    };
    let result = run_lora_job(&job, &kit, &mut progress, &mut |s| {
        if s.step == 1 || s.step == total || tty || last_line.elapsed().as_secs_f64() > 10.0 {
            eprintln!(
                "step {}/{total} loss {:.4} ce {:.4} kl {:.4} top1 {:.3} lr {:.2e} |g| {:.3} {:.0} tok/s",
                s.step, s.loss, s.ce, s.kl, s.top1, s.lr, s.grad_norm, s.tokens as f64 / s.seconds.max(1e-9)
            );
            last_line = Instant::now();
        }
    });
    let (summary, log) = match result {
        Ok(r) => r,
        // The state is saved: say where, and leave as an interrupted command does.
        Err(e @ nexus_train::error::TrainError::Interrupted { .. }) => {
            eprintln!("{e}");
            std::process::exit(130);
        }
        Err(e) => return Err(e).with_context(|| format!("training a LoRA adapter for {}", a.base.display())),
    };
    if let Some(path) = &a.metrics {
        // Every step of the run, across resumes.
        let metrics: String = log.iter().map(|s| serde_json::to_string(s).unwrap_or_default() + "\n").collect();
        nexus_train::data::write_atomic(path, metrics.as_bytes()).with_context(|| format!("writing {}", path.display()))?;
    }
    println!(
        "wrote {}: {} pairs, rank {}, {} parameters ({:.2}% of the base's {}); {} steps on {} data tokens in {:.0} s: loss {:.4} → {:.4}, KL {:.4} → {:.4} (first and last 10 steps)",
        summary.out.display(),
        summary.pairs,
        a.rank,
        summary.parameters,
        100.0 * summary.parameters as f64 / summary.base_parameters as f64,
        summary.base_parameters,
        summary.steps,
        summary.data_tokens,
        summary.seconds,
        summary.first_loss,
        summary.last_loss,
        summary.first_kl,
        summary.last_kl
    );
    Ok(())
}
