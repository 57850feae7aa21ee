//! `nexus-cli convert`: an HF model directory → GGUF, like llama.cpp's convert_hf_to_gguf.py.

use std::io::IsTerminal;
use std::path::PathBuf;

use anyhow::Result;
use clap::{Args, ValueEnum};
use indicatif::ProgressBar;
use nexus_convert::hf::{convert as convert_hf, OutType};

/// `--outtype` of `convert` and `convert-lora` (llama.cpp's converters' names).
#[derive(Clone, Copy, ValueEnum)]
pub enum OutTypeArg {
    F32,
    F16,
    Bf16,
    #[value(name = "q8_0")]
    Q8_0,
}

impl From<OutTypeArg> for OutType {
    fn from(t: OutTypeArg) -> OutType {
        match t {
            OutTypeArg::F32 => OutType::F32,
            OutTypeArg::F16 => OutType::F16,
            OutTypeArg::Bf16 => OutType::Bf16,
            OutTypeArg::Q8_0 => OutType::Q8_0,
        }
    }
}

#[derive(Args)]
pub struct ConvertArgs {
    /// HF model directory (config.json, tokenizer.json or SentencePiece tokenizer.model, *.safetensors).
    dir: PathBuf,
    /// Output GGUF file.
    #[arg(short, long)]
    output: PathBuf,
    /// Type of the 2-D weights; norms and 1-D tensors stay F32.
    #[arg(long, value_enum, default_value = "f16")]
    outtype: OutTypeArg,
}

pub fn convert(args: ConvertArgs) -> Result<()> {
    let outtype = OutType::from(args.outtype);
    // A progress bar on a terminal only, so logs and pipes stay clean.
    let tty = std::io::stderr().is_terminal();
    let mut bar: Option<ProgressBar> = None;
    let result = convert_hf(&args.dir, &args.output, outtype, |done, total| {
        let bar = bar.get_or_insert_with(|| crate::progress::tensor_bar(tty, total, "converting"));
        bar.set_position(done as u64);
    });
    crate::progress::finish_bar(bar, result.is_ok());
    let summary = result?;
    println!("wrote {} ({} tensors, {})", args.output.display(), summary.n_tensors, summary.arch.gguf_name());
    Ok(())
}
