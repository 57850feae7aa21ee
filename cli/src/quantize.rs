//! `nexus-cli quantize IN.gguf OUT.gguf TYPE`: llama-quantize's job, same output bytes.

use std::path::PathBuf;
use std::time::Instant;

use anyhow::Result;
use clap::Args;
use nexus_convert::quantize::{quantize_file, QuantType};

#[derive(Args)]
pub struct QuantizeArgs {
    /// The GGUF model to quantize (F32/F16/BF16, or already quantized: it is then requantized).
    input: PathBuf,
    /// Where to write the quantized model (must differ from the input).
    output: PathBuf,
    /// q8_0, q4_0, q4_1, q5_0, q5_1, q2_k, q3_k_s, q3_k_m, q3_k_l, q4_k_s, q4_k_m, q5_k_s,
    /// q5_k_m, q6_k, f16, bf16 or f32.
    #[arg(value_name = "TYPE")]
    qtype: String,
    /// Worker threads (default: all cores).
    #[arg(short, long)]
    threads: Option<usize>,
}

const MIB: f64 = 1024.0 * 1024.0;

pub fn quantize(args: QuantizeArgs) -> Result<()> {
    let qtype = QuantType::from_name(&args.qtype)?;
    let start = Instant::now();
    let mut warned = false;
    let summary = quantize_file(&args.input, &args.output, qtype, args.threads, |t| {
        if t.requantized && !warned {
            eprintln!("warning: input tensors are already quantized; requantizing loses quality");
            warned = true;
        }
        let shape = t
            .dims
            .iter()
            .map(|d| d.to_string())
            .collect::<Vec<_>>()
            .join(", ");
        let width = t.total.to_string().len();
        if t.from == t.to {
            println!(
                "[{:>width$}/{}] {:<36} [{shape}] {:>6}  size = {:8.3} MiB",
                t.index,
                t.total,
                t.name,
                t.from.name(),
                t.bytes_in as f64 / MIB
            );
        } else {
            println!(
                "[{:>width$}/{}] {:<36} [{shape}] {:>6} → {:<6} size = {:8.2} MiB → {:8.2} MiB",
                t.index,
                t.total,
                t.name,
                t.from.name(),
                t.to.name(),
                t.bytes_in as f64 / MIB,
                t.bytes_out as f64 / MIB
            );
        }
    })?;
    let bpw = |bytes: u64| bytes as f64 * 8.0 / summary.n_elements.max(1) as f64;
    println!(
        "model size  = {:8.2} MiB ({:.2} BPW)",
        summary.bytes_in as f64 / MIB,
        bpw(summary.bytes_in)
    );
    println!(
        "quant size  = {:8.2} MiB ({:.2} BPW)",
        summary.bytes_out as f64 / MIB,
        bpw(summary.bytes_out)
    );
    if summary.n_fallback > 0 {
        println!(
            "{} of {} tensors needed a fallback type (row length not a multiple of the block size)",
            summary.n_fallback, summary.n_tensors
        );
    }
    println!(
        "wrote {} as {} in {:.2} s",
        args.output.display(),
        qtype.name(),
        start.elapsed().as_secs_f64()
    );
    Ok(())
}
