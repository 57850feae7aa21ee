//! `nexus-cli`: parses arguments and calls library code; nothing else lives here.

mod args;
mod bench;
mod chat;
mod inspect;
mod load;
mod run;

use clap::Parser;

#[derive(Parser)]
#[command(name = "nexus-cli", version, about = "Nexus: run LLaMA-family GGUF models")]
enum Command {
    /// Generate a continuation of a prompt, streaming it to stdout.
    Run(run::RunArgs),
    /// Talk to a chat model in the terminal.
    Chat(chat::ChatArgs),
    /// Print a GGUF file's metadata and tensor table.
    Inspect(inspect::InspectArgs),
    /// Measure prompt processing and generation speed, like llama-bench.
    Bench(bench::BenchArgs),
}

fn main() {
    let result = match Command::parse() {
        Command::Run(a) => run::run(a),
        Command::Chat(a) => chat::chat(a),
        Command::Inspect(a) => inspect::inspect(a),
        Command::Bench(a) => bench::bench(a),
    };
    if let Err(e) = result {
        eprintln!("error: {e:#}");
        std::process::exit(1);
    }
}
