//! `nexus-cli convert-lora PEFT_DIR --base BASE.gguf -o ADAPTER.gguf [--outtype T]`: a PEFT
//! LoRA adapter folder → llama.cpp's LoRA GGUF, like `convert_lora_to_gguf.py`.

use std::path::PathBuf;

use anyhow::{Context, Result};
use clap::Args;
use nexus_convert::hf::OutType;
use nexus_convert::lora_peft::convert_peft;

use crate::convert::OutTypeArg;

#[derive(Args)]
pub struct ConvertLoraArgs {
    /// PEFT adapter folder (adapter_config.json, adapter_model.safetensors).
    peft_dir: PathBuf,
    /// The base model (GGUF) the adapter was trained on: its architecture and head counts are
    /// used, and every adapted tensor is checked against it.
    #[arg(short = 'm', long = "base", value_name = "FILE")]
    base: PathBuf,
    /// Output adapter GGUF.
    #[arg(short, long, value_name = "FILE")]
    output: PathBuf,
    /// Type of lora_a / lora_b (llama.cpp's default is f32; with q8_0, rows that are not whole
    /// 32-value blocks, such as lora_b of a rank below 32, are F16 as llama.cpp writes them).
    #[arg(long, value_enum, default_value = "f32")]
    outtype: OutTypeArg,
}

pub fn convert_lora(args: ConvertLoraArgs) -> Result<()> {
    let outtype = OutType::from(args.outtype);
    let summary = convert_peft(&args.peft_dir, &args.base, &args.output, outtype, |_, _| {})
        .with_context(|| format!("converting the PEFT adapter {}", args.peft_dir.display()))?;
    println!(
        "wrote {} ({} {} LoRA pairs, rank {}, alpha {})",
        args.output.display(),
        summary.n_pairs,
        summary.arch,
        summary.rank,
        summary.alpha
    );
    Ok(())
}
