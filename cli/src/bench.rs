//! `nexus-cli bench`: prompt processing (pp) and text generation (tg) speed, printed as
//! llama-bench prints it, plus the bandwidth the generation reached reading the weights.

use std::time::Instant;

use anyhow::{bail, Context, Result};
use clap::{Args, ValueEnum};
use nexus_runtime::kv_cache::CacheTypes;
use nexus_runtime::model::{Logits, Model};
use rand::{Rng, SeedableRng};

use crate::args::ModelArgs;
use crate::draft::DraftArgs;
use crate::load;
use crate::lora::LoraArgs;

#[derive(Clone, Copy, ValueEnum)]
enum Format {
    Md,
    Json,
}

#[derive(Args)]
pub struct BenchArgs {
    #[command(flatten)]
    model: ModelArgs,
    /// Prompt length of the pp test (0 skips it).
    #[arg(short = 'p', long = "n-prompt", default_value_t = 512)]
    n_prompt: usize,
    /// Tokens of the tg test (0 skips it).
    #[arg(short = 'n', long = "n-gen", default_value_t = 128)]
    n_gen: usize,
    /// Repetitions of each test.
    #[arg(short = 'r', long = "repetitions", default_value_t = 5)]
    repetitions: usize,
    /// Tokens already in the KV cache when each test starts (llama-bench's -d; filled before
    /// the clock starts), so attention reads a long context.
    #[arg(short = 'd', long = "n-depth", default_value_t = 0)]
    n_depth: usize,
    /// Output format.
    #[arg(short = 'o', long = "output", value_enum, default_value = "md")]
    output: Format,
    /// With --model-draft: greedy tg of one chat prompt alone and with the draft (speedup,
    /// acceptance rate) instead of pp/tg.
    #[command(flatten)]
    draft: DraftArgs,
    /// Adapters attached for the run (CPU, or CUDA with --device cuda), to measure what they cost.
    #[command(flatten)]
    lora: LoraArgs,
}

struct TestResult {
    name: String,
    tokens: usize,
    secs: Vec<f64>,
}

impl TestResult {
    fn rates(&self) -> Vec<f64> {
        self.secs.iter().map(|s| self.tokens as f64 / s).collect()
    }

    fn mean_sd(&self) -> (f64, f64) {
        let r = self.rates();
        let mean = r.iter().sum::<f64>() / r.len() as f64;
        let var = r.iter().map(|x| (x - mean).powi(2)).sum::<f64>() / (r.len().saturating_sub(1).max(1)) as f64;
        (mean, var.sqrt())
    }
}

fn random_tokens(model: &Model, n: usize, seed: u64) -> Vec<u32> {
    let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(seed);
    (0..n).map(|_| rng.gen_range(0..model.config.n_vocab as u32)).collect()
}

/// One timed run: a fresh context holding `depth` tokens, then either one batch of `n` tokens
/// (pp) or `n` single tokens in a row (tg), as llama-bench does.
fn time_once(model: &Model, types: CacheTypes, depth: usize, n: usize, batch: bool, seed: u64) -> Result<f64> {
    let tokens = random_tokens(model, n, seed);
    let mut cache = model.new_cache_typed(depth + n.max(1), types)?;
    if depth > 0 {
        model.forward(&random_tokens(model, depth, seed + 1000), &mut cache, Logits::Last)?;
    }
    let start = Instant::now();
    if batch {
        model.forward(&tokens, &mut cache, Logits::Last)?;
    } else {
        for &t in &tokens {
            model.forward(&[t], &mut cache, Logits::Last)?;
        }
    }
    Ok(start.elapsed().as_secs_f64())
}

/// The same on the GPU. tg keeps greedy decoding on the device: per token the graph is
/// replayed and the picked token read back (a sync per token, as llama-bench's decode has).
#[cfg(feature = "cuda")]
fn time_once_cuda(gpu: &mut nexus_runtime::model::CudaModel, model: &Model, depth: usize, n: usize, batch: bool, seed: u64) -> Result<f64> {
    let tokens = random_tokens(model, n, seed);
    gpu.truncate(0);
    if depth > 0 {
        gpu.forward(&random_tokens(model, depth, seed + 1000), Logits::Last)?;
    }
    let start = Instant::now();
    if batch {
        gpu.forward(&tokens, Logits::Last)?;
    } else {
        gpu.generate_greedy(tokens[0], n)?;
    }
    Ok(start.elapsed().as_secs_f64())
}

pub fn bench(args: BenchArgs) -> Result<()> {
    if args.repetitions == 0 {
        bail!("--repetitions must be at least 1");
    }
    let mut loaded = load::load(&args.model)?;
    if let Some(draft) = crate::draft::load(&args.draft, &loaded)? {
        if !args.lora.is_empty() {
            bail!("--model-draft and --lora cannot be benchmarked together");
        }
        let device = crate::device::select(&args.model, loaded.model.config.n_layer)?;
        return crate::bench_draft::bench_draft(device, &loaded, &draft, args.n_gen, args.repetitions, matches!(args.output, Format::Json));
    }
    let device = crate::device::select(&args.model, loaded.model.config.n_layer)?;
    if !args.lora.is_empty() {
        crate::lora::apply(&mut loaded.model, &args.lora)?;
    }
    crate::device::check_cache_types(device, loaded.cache_types)?;
    let (model, types, depth) = (&loaded.model, loaded.cache_types, args.n_depth);
    if depth > 0 {
        // The deepest context the tests reach must be one the model has and memory holds.
        load::context_size(&loaded, Some(depth + args.n_prompt.max(args.n_gen))).context("-d (--n-depth)")?;
    }
    let threads = rayon::current_num_threads();
    #[cfg(feature = "cuda")]
    let mut gpu = match device {
        crate::device::Device::Cuda(n) => {
            let ctx = depth + args.n_prompt.max(args.n_gen).max(16) + 1;
            Some(nexus_runtime::model::CudaModel::load(model, ctx, n, types)?)
        }
        crate::device::Device::Cpu => None,
    };
    #[allow(unused_mut)]
    let mut timed = |n: usize, batch: bool, seed: u64| -> Result<f64> {
        #[cfg(feature = "cuda")]
        if let Some(g) = gpu.as_mut() {
            return time_once_cuda(g, model, depth, n, batch, seed);
        }
        time_once(model, types, depth, n, batch, seed)
    };
    let mut results = Vec::new();
    for (name, n, batch) in [("pp", args.n_prompt, true), ("tg", args.n_gen, false)] {
        if n == 0 {
            continue;
        }
        // Warm-up: page the weights in, spin up threads, capture the GPU graphs.
        timed(n, batch, 0)?;
        let secs = (0..args.repetitions).map(|r| timed(n, batch, r as u64 + 1)).collect::<Result<_>>()?;
        let at = if depth > 0 { format!(" @ d{depth}") } else { String::new() };
        results.push(TestResult { name: format!("{name}{n}{at}"), tokens: n, secs });
    }
    // The roofline: bytes a tg token must read (weights, plus the KV cache at the average
    // position) over the device's measured copy bandwidth.
    #[allow(unused_mut)]
    let mut roofline: Option<(f64, f64)> = None;
    #[cfg(feature = "cuda")]
    if let Some(g) = gpu.as_ref() {
        let kv = g.kv_bytes_per_token(depth + args.n_gen / 2) as f64;
        roofline = Some((g.copy_bandwidth()?, kv));
    }
    let backend = device.name();
    let par = match device {
        crate::device::Device::Cpu => format!("{threads}"),
        crate::device::Device::Cuda(_) => "99".to_string(),
    };

    let file = model.file();
    let size: u64 = file.tensors().iter().map(|t| t.n_bytes).sum();
    let params: u64 = file.tensors().iter().map(|t| t.n_elements()).sum();
    let model_name = loaded.path.file_name().map(|s| s.to_string_lossy().into_owned()).unwrap_or_default();
    let weight_bytes = model.weight_bytes_per_token() as f64;
    // The cache's types, as llama-bench shows them when they are not the default.
    let (type_k, type_v) = match device {
        crate::device::Device::Cpu => types.on_cpu(),
        crate::device::Device::Cuda(_) => types.on_cuda(model.config.head_dim)?,
    };
    let show_types = types != CacheTypes::default();
    match args.output {
        Format::Md => {
            let par_name = if device == crate::device::Device::Cpu { "threads" } else { "ngl" };
            let roof = if roofline.is_some() { " roofline |" } else { "" };
            let roof_sep = if roofline.is_some() { " ---: |" } else { "" };
            let (types_head, types_sep) = if show_types { (" type_k | type_v |", " --- | --- |") } else { ("", "") };
            println!("| model | size | params | backend | {par_name} |{types_head} test | t/s | weights GB/s |{roof}");
            println!("| --- | ---: | ---: | --- | ---: |{types_sep} ---: | ---: | ---: |{roof_sep}");
            for r in &results {
                let (mean, sd) = r.mean_sd();
                let tg = r.name.starts_with("tg");
                let gbs = if tg { format!("{:.2}", weight_bytes * mean / 1e9) } else { "".into() };
                let roof = match roofline {
                    Some((bw, kv)) if tg => format!(" {:.0}% of {:.0} GB/s |", 100.0 * (weight_bytes + kv) * mean / bw, bw / 1e9),
                    Some(_) => " |".to_string(),
                    None => String::new(),
                };
                let types = if show_types { format!(" {} | {} |", type_k.name(), type_v.name()) } else { String::new() };
                println!(
                    "| {model_name} | {:.2} MiB | {:.2} M | {backend} | {par} |{types} {} | {mean:.2} ± {sd:.2} | {gbs} |{roof}",
                    size as f64 / (1 << 20) as f64,
                    params as f64 / 1e6,
                    r.name
                );
            }
        }
        Format::Json => {
            let rows: Vec<_> = results
                .iter()
                .map(|r| {
                    let (mean, sd) = r.mean_sd();
                    serde_json::json!({
                        "model": model_name, "size": size, "params": params, "backend": backend,
                        "threads": threads, "n_gpu_layers": if device == crate::device::Device::Cpu { 0 } else { 99 },
                        "type_k": type_k.name(), "type_v": type_v.name(), "n_depth": depth,
                        "test": r.name, "avg_ts": mean, "stddev_ts": sd,
                        "samples_s": r.secs, "weight_bytes_per_token": weight_bytes,
                        "copy_bandwidth": roofline.map(|r| r.0), "kv_bytes_per_token": roofline.map(|r| r.1),
                    })
                })
                .collect();
            println!("{}", serde_json::to_string_pretty(&rows)?);
        }
    }
    Ok(())
}
