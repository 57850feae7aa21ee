//! `nexus-cli distill {profile,train,verify,export,run}`: the NIWT stages over one TOML run
//! config (`models/distill/smollm2-student.toml` is the reference); `--set key=value`
//! overrides any entry of it.

use std::io::IsTerminal;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{Context, Result};
use clap::{Args, Subcommand};
use indicatif::{ProgressBar, ProgressStyle};
use nexus_train::config::RunConfig;
use nexus_train::error::TrainError;
use nexus_train::export::ExportType;
use nexus_train::pipeline::{self, TeacherKit};
use nexus_train::trainer::metrics::StepMetrics;

#[derive(Args)]
pub struct DistillArgs {
    #[command(subcommand)]
    stage: Stage,
}

#[derive(Subcommand)]
enum Stage {
    /// Profile the teacher: activation statistics, principal subspaces, sensitivity, ablation.
    Profile(Common),
    /// Distill the student (initialized from the profile), checkpointing as it goes.
    Train(TrainArgs),
    /// Measure what the student kept per capability and mark it verified if the contract holds.
    Verify(VerifyArgs),
    /// Write the latest checkpoint's student as a GGUF.
    Export(ExportArgs),
    /// Every stage in order: profile (unless one exists), train, verify.
    Run(TrainArgs),
    /// Redraw the training curves and print the run's summary (from metrics.jsonl).
    Report(Common),
    /// Train a per-capability LoRA adapter for a student from the teacher's logits.
    TrainLora(crate::distill_lora::TrainLoraArgs),
    /// Train a router that picks a capability's adapter per request from labelled prompts.
    TrainRouter(crate::distill_router::TrainRouterArgs),
    /// Time a training step of a student shape on the CPU or the GPU (random weights and data).
    Bench(crate::distill_bench::BenchStepArgs),
}

#[derive(Args)]
struct Common {
    /// The run's TOML config.
    #[arg(short = 'c', long = "config")]
    config: PathBuf,
    /// Override a config entry, e.g. `--set train.steps=200` (repeatable).
    #[arg(long = "set", value_name = "KEY=VALUE")]
    set: Vec<String>,
    /// CPU threads (default: all cores).
    #[arg(short = 't', long = "threads")]
    threads: Option<usize>,
}

#[derive(Args)]
struct TrainArgs {
    #[command(flatten)]
    common: Common,
    /// Continue from the run's checkpoint (same data order, optimizer state and step).
    #[arg(long)]
    resume: bool,
}

#[derive(Args)]
struct VerifyArgs {
    #[command(flatten)]
    common: Common,
    /// Also measure capability CAP with the LoRA adapter FILE attached (repeatable).
    #[arg(long = "lora", value_name = "CAP=FILE")]
    lora: Vec<String>,
    /// Measure this student GGUF instead of the run's checkpoint (report written to
    /// RUN_DIR/verify_<stem>.json; nothing exported or marked).
    #[arg(long)]
    student: Option<PathBuf>,
}

#[derive(Args)]
struct ExportArgs {
    #[command(flatten)]
    common: Common,
    /// Output file (default: export.out, or RUN_DIR/student.TYPE.gguf).
    #[arg(short, long)]
    output: Option<PathBuf>,
    /// f32, f16 or q8_0 (default: export.type).
    #[arg(long = "type")]
    ty: Option<String>,
}

pub fn distill(args: DistillArgs) -> Result<()> {
    let common = match &args.stage {
        Stage::Profile(c) | Stage::Report(c) => c,
        Stage::Verify(a) => &a.common,
        Stage::Train(a) | Stage::Run(a) => &a.common,
        Stage::Export(a) => &a.common,
        Stage::TrainLora(_) => {
            let Stage::TrainLora(a) = args.stage else { unreachable!() };
            return crate::distill_lora::train_lora(a);
        }
        Stage::TrainRouter(_) => {
            let Stage::TrainRouter(a) = args.stage else { unreachable!() };
            return crate::distill_router::train_router_cmd(a);
        }
        Stage::Bench(_) => {
            let Stage::Bench(a) = args.stage else { unreachable!() };
            return crate::distill_bench::bench_step(a);
        }
    };
    let cfg = RunConfig::load(&common.config, &common.set)?;
    let threads = common.threads.or((cfg.train.threads > 0).then_some(cfg.train.threads));
    crate::load::set_threads(threads)?;
    // Export reads only the teacher's tokenizer metadata; every other stage runs the teacher,
    // loaded once even when `run` chains three stages.
    match &args.stage {
        Stage::Export(a) => export(&cfg, a),
        Stage::Profile(_) => profile(&cfg, &kit(&cfg)?),
        Stage::Train(a) => train(&cfg, &kit(&cfg)?, a.resume),
        Stage::Verify(a) => verify_with(&cfg, &kit(&cfg)?, a),
        Stage::Report(_) => report(&cfg, &kit(&cfg)?),
        Stage::TrainLora(_) | Stage::TrainRouter(_) | Stage::Bench(_) => unreachable!("handled above"),
        Stage::Run(a) => {
            let kit = kit(&cfg)?;
            if !cfg.run_dir.join(pipeline::PROFILE_FILE).exists() {
                profile(&cfg, &kit)?;
            }
            train(&cfg, &kit, a.resume)?;
            verify(&cfg, &kit, &[])
        }
    }
}

fn kit(cfg: &RunConfig) -> Result<TeacherKit> {
    let t0 = Instant::now();
    let kit = TeacherKit::load(&cfg.teacher).with_context(|| format!("loading the teacher {}", cfg.teacher.display()))?;
    eprintln!("teacher {} loaded in {:.1} s", cfg.teacher.display(), t0.elapsed().as_secs_f64());
    Ok(kit)
}

/// Stage progress: a bar on a terminal, a line every few seconds otherwise.
struct StageProgress {
    tty: bool,
    bar: Option<(String, ProgressBar)>,
    last_line: Instant,
}

impl StageProgress {
    fn new() -> Self {
        StageProgress { tty: std::io::stderr().is_terminal(), bar: None, last_line: Instant::now() }
    }

    fn update(&mut self, stage: &str, done: usize, total: usize) {
        if !self.tty {
            if done == total || self.last_line.elapsed().as_secs_f64() > 10.0 {
                eprintln!("{stage}: {done}/{total}");
                self.last_line = Instant::now();
            }
            return;
        }
        if self.bar.as_ref().is_none_or(|(s, _)| s != stage) {
            if let Some((_, b)) = self.bar.take() {
                b.finish_and_clear();
            }
            let bar = ProgressBar::new(total as u64);
            if let Ok(style) = ProgressStyle::with_template("{prefix:>13} [{bar:40}] {pos}/{len} ({elapsed}, ETA {eta})") {
                bar.set_style(style.progress_chars("=> "));
            }
            bar.set_prefix(stage.to_string());
            self.bar = Some((stage.to_string(), bar));
        }
        if let Some((_, b)) = &self.bar {
            b.set_length(total as u64);
            b.set_position(done as u64);
        }
    }

    fn finish(&mut self) {
        if let Some((_, b)) = self.bar.take() {
            b.finish_and_clear();
        }
    }
}

fn profile(cfg: &RunConfig, kit: &TeacherKit) -> Result<()> {
    let mut p = StageProgress::new();
    let tokens = pipeline::prepare_data(cfg, kit, &mut |s, d, t| p.update(s, d, t))?;
    let t0 = Instant::now();
    let profile = pipeline::run_profile(cfg, kit, &tokens, &mut |s, d, t| p.update(s, d, t))?;
    p.finish();
    let ks: Vec<usize> = profile.layers.iter().map(|l| l.k).collect();
    eprintln!("profiled {} tokens in {:.0} s; principal subspace sizes per layer: {ks:?}", profile.tokens, t0.elapsed().as_secs_f64());
    println!("wrote {} and {}", cfg.run_dir.join(pipeline::PROFILE_FILE).display(), cfg.run_dir.join("profile").display());
    Ok(())
}

/// A second Ctrl-C aborts training only this long after the first (see `train`).
const SECOND_INTERRUPT_AFTER: Duration = Duration::from_secs(1);

/// The flag Ctrl-C sets: training finishes the current step, writes a checkpoint and exits; a
/// second Ctrl-C aborts — unless it comes within a second of the first: GNU `timeout` (and
/// anything that signals a process group) delivers the same SIGINT twice, microseconds apart,
/// and that must not throw the checkpoint away. A person pressing Ctrl-C again is slower.
pub(crate) fn stop_on_ctrl_c() -> Result<Arc<AtomicBool>> {
    let stop = Arc::new(AtomicBool::new(false));
    let flag = stop.clone();
    let first = std::sync::Mutex::new(None::<Instant>);
    ctrlc::set_handler(move || {
        let mut first = first.lock().unwrap_or_else(|e| e.into_inner());
        match *first {
            Some(t) if t.elapsed() >= SECOND_INTERRUPT_AFTER => std::process::exit(130),
            Some(_) => {}
            None => {
                *first = Some(Instant::now());
                flag.store(true, Ordering::Relaxed);
                eprintln!("\nstopping after this step (Ctrl-C again to abort without a checkpoint)…");
            }
        }
    })?;
    Ok(stop)
}

fn train(cfg: &RunConfig, kit: &TeacherKit, resume: bool) -> Result<()> {
    let stop = stop_on_ctrl_c()?;
    let mut p = StageProgress::new();
    let tty = std::io::stderr().is_terminal();
    let mut bar: Option<ProgressBar> = None;
    let mut last_line = Instant::now();
    let mut on_step = |m: &StepMetrics, total: usize| {
        if tty {
            let b = bar.get_or_insert_with(|| {
                let b = ProgressBar::new(total as u64);
                if let Ok(style) = ProgressStyle::with_template("train [{bar:30}] {pos}/{len} {msg} ({elapsed}, ETA {eta})") {
                    b.set_style(style.progress_chars("=> "));
                }
                b
            });
            b.set_position(m.step as u64);
            b.set_message(format!("loss {:.3} kl {:.3} top1 {:.2} {:.0} tok/s", m.loss, m.kl, m.top1, m.tokens_per_s));
        } else if m.step == total || m.step == 1 || last_line.elapsed().as_secs_f64() > 10.0 {
            eprintln!("step {}/{total} loss {:.4} ce {:.4} kl {:.4} anchor {:.4} top1 {:.3} lr {:.2e} |g| {:.2} {:.0} tok/s", m.step, m.loss, m.ce, m.kl, m.anchor, m.top1, m.lr, m.grad_norm, m.tokens_per_s);
            last_line = Instant::now();
        }
    };
    let result = pipeline::run_train(cfg, kit, resume, &stop, &mut |s, d, t| p.update(s, d, t), &mut on_step);
    p.finish();
    if let Some(b) = bar {
        b.finish_and_clear();
    }
    match result {
        Ok(s) => {
            print_summary(&s);
            println!("checkpoint in {}", cfg.run_dir.join("checkpoint").display());
            Ok(())
        }
        Err(e @ TrainError::Interrupted { .. }) => {
            eprintln!("{e}");
            std::process::exit(130);
        }
        Err(e) => Err(e.into()),
    }
}

/// `--lora CAP=FILE` pairs.
fn parse_loras(specs: &[String]) -> Result<Vec<(String, PathBuf)>> {
    specs
        .iter()
        .map(|s| match s.split_once('=') {
            Some((cap, file)) if !cap.is_empty() && !file.is_empty() => Ok((cap.to_string(), PathBuf::from(file))),
            _ => anyhow::bail!("--lora {s}: expected CAPABILITY=FILE"),
        })
        .collect()
}

fn verify_with(cfg: &RunConfig, kit: &TeacherKit, a: &VerifyArgs) -> Result<()> {
    let loras = parse_loras(&a.lora)?;
    let Some(student) = &a.student else { return verify(cfg, kit, &loras) };
    let mut p = StageProgress::new();
    let (report, path) = pipeline::verify_student_file(cfg, kit, student, &loras, &mut |s, d, t| p.update(s, d, t))?;
    p.finish();
    eprintln!("{}", report.markdown_table());
    println!("{}: {} ({})", student.display(), if report.verified() { "every contract holds" } else { "a contract failed" }, path.display());
    Ok(())
}

fn verify(cfg: &RunConfig, kit: &TeacherKit, loras: &[(String, PathBuf)]) -> Result<()> {
    let mut p = StageProgress::new();
    let (report, export) = pipeline::run_verify_with(cfg, kit, loras, &mut |s, d, t| p.update(s, d, t))?;
    p.finish();
    eprintln!("{}", report.markdown_table());
    println!(
        "{}: {} ({})",
        export.path.display(),
        if report.verified() { "verified: every contract holds" } else { "NOT verified: a contract failed (see verify_report.md)" },
        cfg.run_dir.join(pipeline::VERIFY_JSON).display()
    );
    Ok(())
}

fn export(cfg: &RunConfig, a: &ExportArgs) -> Result<()> {
    let ty_name = a.ty.clone().unwrap_or_else(|| cfg.export.ty.clone());
    let ty = ty_name.parse::<ExportType>().map_err(|e| anyhow::anyhow!("--type {ty_name}: {e}"))?;
    let out = a.output.clone().unwrap_or_else(|| cfg.export_path());
    let s = pipeline::export_student(cfg, ty, &out)?;
    for f in &s.fallbacks {
        eprintln!("note: {f}");
    }
    println!("wrote {} ({} parameters, {:.1} MB)", s.path.display(), s.n_params, s.bytes as f64 / 1e6);
    Ok(())
}

fn print_summary(s: &pipeline::TrainSummary) {
    eprintln!(
        "{}/{} steps, {} tokens: loss {:.4} → {:.4} (last 10 steps; KL {:.4}, top-1 {:.3}); {:.0} tokens/s, {:.3} TFLOP/s ({:.2e} FLOPs/token)",
        s.steps, s.planned_steps, s.tokens, s.first_loss, s.last10_loss, s.last10_kl, s.last10_top1, s.tokens_per_s, s.achieved_tflops, s.flops_per_token
    );
    eprintln!(
        "student 6·N·tokens/s: {:.3} TFLOP/s, MFU {:.3}% of the H100's {} TFLOP/s dense BF16; teacher forward {:.3} TFLOP/s",
        s.student_tflops,
        100.0 * s.mfu_h100_bf16,
        pipeline::H100_BF16_DENSE_TFLOPS,
        s.teacher_tflops
    );
    let p = &s.phases;
    let total = p.total();
    if total > 0.0 {
        let share = |x: f64| 100.0 * x / total;
        eprintln!(
            "time: teacher {:.0}%, student forward {:.0}%, head + loss {:.0}%, anchors {:.0}%, student backward {:.0}%, optimizer {:.0}%",
            share(p.teacher), share(p.student_forward), share(p.head_loss), share(p.anchors), share(p.student_backward), share(p.optimizer)
        );
    }
}

fn report(cfg: &RunConfig, kit: &TeacherKit) -> Result<()> {
    let scfg = pipeline::student_config(cfg, &kit.teacher.model)?;
    let s = pipeline::write_train_report(cfg, &kit.teacher.model, &scfg)?;
    print_summary(&s);
    let md = cfg.run_dir.join(pipeline::VERIFY_MD);
    if let Ok(text) = std::fs::read_to_string(&md) {
        eprintln!("{text}");
    }
    println!("wrote {} and the training_*.png charts", cfg.run_dir.join(pipeline::SUMMARY_FILE).display());
    Ok(())
}
