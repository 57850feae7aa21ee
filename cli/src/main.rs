//! `nexus-cli`: parses arguments and calls library code; nothing else lives here.

mod args;
mod bench;
mod chat;
mod convert;
mod inspect;
mod load;
mod perplexity;
mod quantize;
mod run;
mod tokenize;

use clap::Parser;

#[derive(Parser)]
#[command(name = "nexus-cli", version, about = "Nexus: run LLaMA-family GGUF models")]
enum Command {
    /// Generate a continuation of a prompt, streaming it to stdout.
    Run(run::RunArgs),
    /// Talk to a chat model in the terminal.
    Chat(chat::ChatArgs),
    /// Convert an HF model directory to GGUF, like convert_hf_to_gguf.py.
    Convert(convert::ConvertArgs),
    /// Print a GGUF file's metadata and tensor table.
    Inspect(inspect::InspectArgs),
    /// Measure prompt processing and generation speed, like llama-bench.
    Bench(bench::BenchArgs),
    /// Print the token ids of a text, like llama-tokenize.
    Tokenize(tokenize::TokenizeArgs),
    /// Measure perplexity (and KL divergence against a base model), like llama-perplexity.
    Perplexity(perplexity::PerplexityArgs),
    /// Quantize a GGUF model to another type, like llama-quantize.
    Quantize(quantize::QuantizeArgs),
}

fn main() {
    let result = match Command::parse() {
        Command::Run(a) => run::run(a),
        Command::Chat(a) => chat::chat(a),
        Command::Convert(a) => convert::convert(a),
        Command::Inspect(a) => inspect::inspect(a),
        Command::Bench(a) => bench::bench(a),
        Command::Tokenize(a) => tokenize::tokenize(a),
        Command::Perplexity(a) => perplexity::perplexity(a),
        Command::Quantize(a) => quantize::quantize(a),
    };
    if let Err(e) = result {
        eprintln!("error: {e:#}");
        std::process::exit(1);
    }
}
