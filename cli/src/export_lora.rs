//! `nexus-cli export-lora --base BASE.gguf --lora A.gguf [--lora-scaled B.gguf SCALE]… -o OUT`:
//! llama-export-lora's job, adapters merged into the base model's weights.

use std::io::IsTerminal;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Instant;

use anyhow::Result;
use clap::Args;
use indicatif::ProgressBar;
use nexus_convert::lora_merge::export_lora as merge;

#[derive(Args)]
pub struct ExportLoraArgs {
    /// The base model (GGUF) the adapters were trained for.
    #[arg(short = 'm', long = "base", value_name = "FILE")]
    base: PathBuf,
    #[command(flatten)]
    adapters: crate::lora::LoraArgs,
    /// Where to write the merged model (must differ from every input).
    #[arg(short, long, value_name = "FILE")]
    output: PathBuf,
    /// Worker threads (default: all cores).
    #[arg(short, long)]
    threads: Option<usize>,
}

pub fn export_lora(args: ExportLoraArgs) -> Result<()> {
    let adapters = args.adapters.list()?;
    // Ctrl-C stops at the next chunk of rows; the writer then removes its temporary file, so
    // nothing partial is left. A second Ctrl-C exits at once.
    let cancel = Arc::new(AtomicBool::new(false));
    let flag = cancel.clone();
    ctrlc::set_handler(move || {
        if flag.swap(true, Ordering::Relaxed) {
            std::process::exit(130);
        }
    })?;
    let start = Instant::now();
    // A progress bar on a terminal only, so logs and pipes stay clean.
    let tty = std::io::stderr().is_terminal();
    let mut bar: Option<ProgressBar> = None;
    let result = merge(&args.base, &adapters, &args.output, args.threads, &cancel, |t| {
        let bar = bar.get_or_insert_with(|| crate::progress::tensor_bar(tty, t.total, "merging"));
        bar.set_position(t.index as u64);
        if t.n_deltas > 0 {
            bar.set_message(t.name.clone());
        }
    });
    crate::progress::finish_bar(bar, result.is_ok());
    let summary = result?;
    for (path, scale) in &adapters {
        eprintln!("merged {} (scale {scale})", path.display());
    }
    println!(
        "wrote {} ({} tensors, {} merged, {:.2} MiB) in {:.2} s",
        args.output.display(),
        summary.n_tensors,
        summary.n_merged,
        summary.bytes as f64 / (1024.0 * 1024.0),
        start.elapsed().as_secs_f64()
    );
    Ok(())
}
