//! `nexus-cli synth`: a GGUF with random weights in a real model's shapes, for speed runs
//! where the real weights are not available.

use std::path::PathBuf;

use anyhow::{Context, Result};
use clap::Args;
use nexus_convert::quantize::QuantType;
use nexus_convert::synth;

#[derive(Args)]
pub struct SynthArgs {
    /// Model shape: smollm2-135m, llama-3.2-1b, qwen2.5-0.5b or llama-3.1-8b.
    #[arg(long = "config")]
    config: String,
    /// Weight type as for `quantize` (f16, q8_0, q4_0, q4_1, q4_k_m, …).
    #[arg(long = "type", default_value = "f16")]
    ty: String,
    /// Seed of the random weights.
    #[arg(long = "seed", default_value_t = 42)]
    seed: u64,
    /// Output file.
    #[arg(short = 'o', long = "output")]
    output: PathBuf,
}

pub fn synth(args: SynthArgs) -> Result<()> {
    let cfg = synth::config(&args.config)?;
    let qtype = QuantType::from_name(&args.ty)?;
    let start = std::time::Instant::now();
    synth::synth(cfg, qtype, &args.output, args.seed).with_context(|| format!("writing {}", args.output.display()))?;
    let size = std::fs::metadata(&args.output).map(|m| m.len()).unwrap_or(0);
    eprintln!(
        "wrote {} ({} {}, {:.1} MiB) in {:.1} s",
        args.output.display(),
        cfg.name,
        qtype.name(),
        size as f64 / (1 << 20) as f64,
        start.elapsed().as_secs_f64()
    );
    Ok(())
}
