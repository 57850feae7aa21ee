//! `nexus-cli distill train-router`: a router that picks a capability's adapter per request,
//! trained on capability-labelled prompts over the base model's pooled hidden state; prints
//! the held-out accuracy per capability and writes the confusion matrix as a PNG.

use std::io::IsTerminal;
use std::path::PathBuf;
use std::time::Instant;

use anyhow::{Context, Result};
use clap::Args;
use nexus_runtime::model::Model;
use nexus_runtime::tokenizer::Tokenizer;
use nexus_train::router::{read_labelled, train_router, FitConfig, TrainRouterConfig};

#[derive(Args)]
pub struct TrainRouterArgs {
    /// The backbone (the student) whose hidden states the router reads; never modified.
    #[arg(long)]
    base: PathBuf,
    /// Labelled prompts, JSONL: {"text": ..., "capability": ...} ("none" or absent: the base).
    #[arg(long)]
    data: PathBuf,
    /// The backbone layer whose output is mean-pooled over the prompt (0-based).
    #[arg(long)]
    layer: usize,
    /// Hidden width of a two-layer classifier (0: linear).
    #[arg(long, default_value_t = 0)]
    hidden: usize,
    /// Below this probability the router falls back to the base (no adapter).
    #[arg(long, default_value_t = 0.5)]
    threshold: f32,
    /// The capabilities in class order, comma-separated (default: those the data names,
    /// sorted); a prompt labelled with another is an error.
    #[arg(long, value_delimiter = ',')]
    capabilities: Option<Vec<String>>,
    /// Fraction of each capability's prompts held out for evaluation.
    #[arg(long = "held-out", default_value_t = 0.2)]
    held_out: f32,
    /// Full-batch AdamW steps.
    #[arg(long, default_value_t = 300)]
    steps: usize,
    #[arg(long, default_value_t = 1e-2)]
    lr: f32,
    #[arg(long = "weight-decay", default_value_t = 1e-2)]
    weight_decay: f32,
    /// Seed of the initialization and the held-out split.
    #[arg(long, default_value_t = 0)]
    seed: u64,
    /// Where to draw the confusion matrix (default: OUTPUT with .confusion.png).
    #[arg(long)]
    confusion: Option<PathBuf>,
    /// CPU threads (default: all cores).
    #[arg(short = 't', long = "threads")]
    threads: Option<usize>,
    /// The router GGUF to write.
    #[arg(short = 'o', long = "output")]
    output: PathBuf,
}

pub fn train_router_cmd(a: TrainRouterArgs) -> Result<()> {
    crate::load::set_threads(a.threads)?;
    let model = Model::load(&a.base).with_context(|| format!("loading the base {}", a.base.display()))?;
    let tokenizer = Tokenizer::from_gguf(model.file()).with_context(|| format!("{}: reading the tokenizer", a.base.display()))?;
    let prompts = read_labelled(&a.data)?;
    let cfg = TrainRouterConfig {
        layer: a.layer,
        fit: FitConfig { hidden: a.hidden, steps: a.steps, lr: a.lr, weight_decay: a.weight_decay, seed: a.seed },
        threshold: a.threshold,
        heldout: a.held_out,
        capabilities: a.capabilities.clone(),
    };
    let start = Instant::now();
    let tty = std::io::stderr().is_terminal();
    let (router, report) = train_router(&model, &tokenizer, &a.data, &prompts, &cfg, |i, n| {
        if tty && (i % 16 == 0 || i == n) {
            eprint!("\rpooled hidden states: {i}/{n}");
            if i == n {
                eprintln!();
            }
        }
    })?;
    router.write(&a.output).with_context(|| format!("writing {}", a.output.display()))?;
    let png = a.confusion.clone().unwrap_or_else(|| a.output.with_extension("confusion.png"));
    report.write_confusion_png(&png)?;
    let kind = match a.hidden {
        0 => "linear".to_string(),
        h => format!("two-layer MLP (hidden {h})"),
    };
    println!(
        "router: {kind} over layer {} of {} ({} of {} layers), classes {}, threshold {}",
        a.layer,
        a.base.display(),
        a.layer + 1,
        model.config.n_layer,
        report.classes.join(", "),
        a.threshold
    );
    print!("{}", report.markdown());
    println!("confusion matrix: {}", png.display());
    println!("wrote {} in {:.1} s", a.output.display(), start.elapsed().as_secs_f64());
    Ok(())
}
