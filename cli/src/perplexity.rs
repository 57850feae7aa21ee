//! `nexus-cli perplexity`: llama-perplexity's method and output (`[1]x,[2]y,…` then
//! `Final estimate: PPL = X +/- Y`), plus KL divergence against a saved base model.

use std::io::Write;
use std::path::{Path, PathBuf};

use anyhow::{bail, Context, Result};
use clap::Args;
use nexus_runtime::eval::{self, Chunks, KlBase, KlBaseWriter, KlReport, NllStats};

use crate::args::ModelArgs;
use crate::load::{self, Loaded};

#[derive(Args)]
pub struct PerplexityArgs {
    #[command(flatten)]
    model: ModelArgs,
    /// Text file to evaluate (optional with --kl-divergence, which reuses the base's tokens;
    /// if given there, its tokens must match the base's).
    #[arg(short = 'f', long = "file")]
    file: Option<PathBuf>,
    /// Tokens per chunk; the second half of each chunk is scored (llama.cpp's default: 512).
    #[arg(short = 'c', long = "ctx-size", default_value_t = 512)]
    ctx_size: usize,
    /// Evaluate at most N chunks.
    #[arg(long = "chunks")]
    chunks: Option<usize>,
    /// Save this model's top-k log-probabilities of the scored positions to OUT, as the base
    /// for a later --kl-divergence run.
    #[arg(long = "kl-divergence-base", value_name = "OUT", conflicts_with = "kl_divergence")]
    kl_divergence_base: Option<PathBuf>,
    /// Compare this model against BASE (from --kl-divergence-base): KL divergence, same top
    /// token, perplexity ratio.
    #[arg(long = "kl-divergence", value_name = "BASE")]
    kl_divergence: Option<PathBuf>,
    /// Log-probabilities kept per position in the base file.
    #[arg(long = "kl-top-k", default_value_t = eval::DEFAULT_TOP_K)]
    kl_top_k: usize,
}

fn progress(i: usize, ppl: f64) {
    let mut out = std::io::stdout().lock();
    let _ = write!(out, "[{}]{ppl:.4},", i + 1);
    let _ = out.flush();
}

fn final_estimate(stats: &NllStats) {
    println!();
    match stats.ppl_uncertainty() {
        Some(u) => println!("Final estimate: PPL = {:.4} +/- {u:.5}", stats.ppl()),
        None => println!("Final estimate: PPL = {:.4} (no spread in the log-probabilities: uncertainty undefined)", stats.ppl()),
    }
}

fn text_tokens(loaded: &Loaded, file: &Path) -> Result<Vec<u32>> {
    let text = std::fs::read_to_string(file).with_context(|| format!("{}: reading the evaluation text", file.display()))?;
    // llama.cpp: common_tokenize(ctx, text, add_special = true, parse_special = false).
    Ok(loaded.tokenizer.encode(&text, true, false))
}

pub fn perplexity(args: PerplexityArgs) -> Result<()> {
    let loaded = load::load(&args.model)?;
    let model = &loaded.model;
    let bos = if loaded.tokenizer.add_bos() { loaded.tokenizer.bos() } else { None };
    if let Some(base_path) = &args.kl_divergence {
        return kl_divergence(&loaded, &args, base_path, bos);
    }
    let Some(file) = &args.file else { bail!("give the evaluation text with -f FILE") };
    let n_ctx = load::context_size(&loaded, Some(args.ctx_size))?;
    let tokens = text_tokens(&loaded, file)?;
    let chunks = Chunks::new(tokens, n_ctx, args.chunks).with_context(|| file.display().to_string())?;
    eprintln!("perplexity: {} chunks of {n_ctx} tokens, {} scored per chunk", chunks.n_chunk(), chunks.scored_per_chunk());
    let mut cache = model.new_cache_typed(n_ctx, loaded.cache_types)?;
    let result = match &args.kl_divergence_base {
        None => eval::perplexity_with(model, &mut cache, &chunks, bos, |_, _| Ok(()), progress)?,
        Some(out) => {
            let mut writer = KlBaseWriter::create(out, model.config.n_vocab, &chunks, args.kl_top_k)?;
            let r = eval::perplexity_with(model, &mut cache, &chunks, bos, |i, logits| writer.add_chunk(logits, chunks.targets(i)), progress)?;
            writer.finish()?;
            eprintln!("\nsaved the top-{} log-probabilities of {} positions to {}", args.kl_top_k, r.stats.count, out.display());
            r
        }
    };
    final_estimate(&result.stats);
    Ok(())
}

fn kl_divergence(loaded: &Loaded, args: &PerplexityArgs, base_path: &Path, bos: Option<u32>) -> Result<()> {
    let model = &loaded.model;
    let base = KlBase::read(base_path)?;
    base.check_vocab(model.config.n_vocab)?;
    let chunks = base.chunks();
    if args.ctx_size != 512 && args.ctx_size != chunks.n_ctx() {
        bail!("{}: the base was computed with -c {}, not {}", base_path.display(), chunks.n_ctx(), args.ctx_size);
    }
    load::context_size(loaded, Some(chunks.n_ctx()))?;
    if let Some(file) = &args.file {
        base.check_tokens(&text_tokens(loaded, file)?)?;
    }
    let n_chunk = chunks.n_chunk().min(args.chunks.unwrap_or(usize::MAX));
    eprintln!("kl-divergence: {n_chunk} chunks of {} tokens against {} (top-{} + rest)", chunks.n_ctx(), base_path.display(), base.top_k);
    let mut cache = model.new_cache_typed(chunks.n_ctx(), loaded.cache_types)?;
    let mut report = KlReport::default();
    for i in 0..n_chunk {
        let logits = eval::chunk_logits(model, &mut cache, chunks, i, bos)?;
        report.add_chunk(&base, i, &logits);
        progress(i, report.nll.ppl());
    }
    final_estimate(&report.nll);
    let (kl, kl_ci) = report.mean_kl();
    let (top, top_ci) = report.same_top();
    let (ratio, lo, hi) = report.ppl_ratio();
    println!("PPL(base)          = {:.4}", report.nll_base.ppl());
    println!("PPL(Q)/PPL(base)   = {ratio:.5} (95% CI {lo:.5} .. {hi:.5})");
    println!("Mean KL divergence = {kl:.6} +/- {kl_ci:.6} (95% CI; over the base's top-{} + rest)", base.top_k);
    println!("Same top token     = {:.3}% +/- {:.3}% (95% CI)", 100.0 * top, 100.0 * top_ci);
    println!("Positions          = {}", report.count());
    Ok(())
}
