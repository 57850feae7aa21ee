//! `nexus-cli convert-voice`: a Piper VITS voice (ONNX + .onnx.json) → a voice GGUF.

use std::path::PathBuf;

use anyhow::{Context, Result};
use clap::Args;
use nexus_convert::voice::{convert_voice as convert, default_config_path};

#[derive(Args)]
pub struct ConvertVoiceArgs {
    /// The Piper voice, e.g. en_US-joe-medium.onnx.
    onnx: PathBuf,
    /// Its JSON config [default: VOICE.onnx.json beside VOICE.onnx].
    #[arg(long)]
    config: Option<PathBuf>,
    /// Output voice GGUF.
    #[arg(short, long)]
    output: PathBuf,
}

pub fn convert_voice(args: ConvertVoiceArgs) -> Result<()> {
    let config = args.config.unwrap_or_else(|| default_config_path(&args.onnx));
    let summary = convert(&args.onnx, &config, &args.output)
        .with_context(|| format!("converting {} to {}", args.onnx.display(), args.output.display()))?;
    println!(
        "wrote {} (voice {:?}: {} tensors, {} graph constants checked)",
        args.output.display(),
        summary.name,
        summary.n_tensors,
        summary.n_constants
    );
    Ok(())
}
