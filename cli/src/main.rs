//! `nexus-cli`: parses arguments and calls library code; nothing else lives here.

mod device;
mod distill;
mod distill_bench;
mod distill_lora;
mod distill_router;
mod draft;
mod synth;
mod args;
mod bench;
mod bench_draft;
mod bundle;
mod chat;
mod convert;
mod convert_lora;
mod convert_voice;
mod export_lora;
mod inspect;
mod load;
mod lora;
mod perplexity;
mod progress;
mod quantize;
mod router;
mod run;
mod speak;
mod tokenize;

use clap::Parser;
use nexus_runtime::chat_template::sandbox;

#[derive(Parser)]
#[command(name = "nexus-cli", version, about = "Nexus: run LLaMA-family GGUF models")]
enum Command {
    /// Generate a continuation of a prompt, streaming it to stdout.
    Run(run::RunArgs),
    /// Talk to a chat model in the terminal.
    Chat(chat::ChatArgs),
    /// Convert an HF model directory to GGUF, like convert_hf_to_gguf.py.
    Convert(convert::ConvertArgs),
    /// Convert a Piper VITS voice (VOICE.onnx + VOICE.onnx.json) to a voice GGUF.
    ConvertVoice(convert_voice::ConvertVoiceArgs),
    /// Speak text aloud with a VITS voice (or write it to a WAV file).
    Speak(speak::SpeakArgs),
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
    /// Merge LoRA adapters into a base model's weights, like llama-export-lora.
    ExportLora(export_lora::ExportLoraArgs),
    /// Convert a PEFT LoRA adapter folder to a LoRA GGUF, like convert_lora_to_gguf.py.
    ConvertLora(convert_lora::ConvertLoraArgs),
    /// Write a GGUF with random weights in a real model's shapes (for speed runs).
    Synth(synth::SynthArgs),
    /// Distill a teacher GGUF into a smaller student: profile, train, verify, export, run.
    Distill(distill::DistillArgs),
    /// One-file bundles: pack a backbone, adapters, router and voice; inspect, verify, unpack.
    Bundle(bundle::BundleArgs),
}

fn main() {
    // Chat templates come from model files and are programs; this binary renders them in a
    // copy of itself with a memory limit (nexus_runtime::chat_template::sandbox).
    if std::env::args().nth(1).as_deref() == Some(sandbox::CHILD_ARG) {
        std::process::exit(sandbox::serve_process());
    }
    match sandbox::ChildCommand::current_exe() {
        Ok(command) => sandbox::install(command),
        Err(e) => eprintln!("warning: chat templates will render in this process without a memory limit: cannot find this executable ({e})"),
    }
    // Rust starts with SIGPIPE ignored, so a closed stdout (`nexus-cli inspect … | head`) would
    // make the next println! panic; like other Unix tools, end quietly instead.
    #[cfg(unix)]
    // SAFETY: called first thing on the main thread, before any other thread exists.
    unsafe {
        libc::signal(libc::SIGPIPE, libc::SIG_DFL);
    }
    // llama.cpp spells them `-ngl`, `-md`, `-ctk`, `-ctv`; clap only knows single-letter short flags.
    let argv = std::env::args().map(|a| match a.as_str() {
        "-ngl" => "--n-gpu-layers".to_string(),
        "-md" => "--model-draft".to_string(),
        "-ctk" => "--cache-type-k".to_string(),
        "-ctv" => "--cache-type-v".to_string(),
        _ => a,
    });
    let result = match Command::parse_from(argv) {
        Command::Run(a) => run::run(a),
        Command::Chat(a) => chat::chat(a),
        Command::Convert(a) => convert::convert(a),
        Command::ConvertVoice(a) => convert_voice::convert_voice(a),
        Command::Speak(a) => speak::speak(a),
        Command::Inspect(a) => inspect::inspect(a),
        Command::Bench(a) => bench::bench(a),
        Command::Tokenize(a) => tokenize::tokenize(a),
        Command::Perplexity(a) => perplexity::perplexity(a),
        Command::Quantize(a) => quantize::quantize(a),
        Command::ExportLora(a) => export_lora::export_lora(a),
        Command::ConvertLora(a) => convert_lora::convert_lora(a),
        Command::Synth(a) => synth::synth(a),
        Command::Distill(a) => distill::distill(a),
        Command::Bundle(a) => bundle::bundle(a),
    };
    if let Err(e) = result {
        eprintln!("error: {e:#}");
        std::process::exit(1);
    }
}
