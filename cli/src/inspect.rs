//! `nexus-cli inspect`: metadata and tensor table of a GGUF file.

use std::path::PathBuf;

use anyhow::Result;
use clap::Args;
use nexus_runtime::gguf::GgufFile;

#[derive(Args)]
pub struct InspectArgs {
    /// The GGUF file.
    file: PathBuf,
    /// Print arrays in full instead of their first items.
    #[arg(long)]
    full: bool,
}

pub fn inspect(args: InspectArgs) -> Result<()> {
    let file = GgufFile::open(&args.file)?;
    println!(
        "{}: GGUF v{}, {} metadata keys, {} tensors, alignment {}, data at byte {}",
        args.file.display(),
        file.version,
        file.metadata().len(),
        file.tensors().len(),
        file.alignment,
        file.data_offset
    );
    println!("\nmetadata:");
    for (key, value) in file.metadata() {
        let shown = if args.full { format!("{value:?}") } else { value.to_string() };
        // Chat templates and the like are long: keep the table to one line per key.
        let shown = if !args.full && shown.chars().count() > 120 {
            format!("{}… ({} chars)", shown.chars().take(100).collect::<String>(), shown.chars().count())
        } else {
            shown
        };
        println!("  {key:<44} {:<14} {}", value.type_name(), shown.replace('\n', "\\n"));
    }
    println!("\ntensors:");
    println!("  {:<36} {:<6} {:<24} {:>12} {:>12}", "name", "type", "shape", "bytes", "offset");
    let mut total = 0u64;
    for t in file.tensors() {
        let shape = format!("{:?}", t.dims);
        println!("  {:<36} {:<6} {:<24} {:>12} {:>12}", t.name, t.ty.to_string(), shape, t.n_bytes, t.offset);
        total += t.n_bytes;
    }
    let params: u64 = file.tensors().iter().map(|t| t.n_elements()).sum();
    println!("\n{} parameters, {:.2} MiB of tensor data", params, total as f64 / (1 << 20) as f64);
    Ok(())
}
