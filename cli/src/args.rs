//! Flags shared by the commands, with llama.cpp's names and meanings so habits carry over.

use std::path::PathBuf;

use clap::Args;
use nexus_runtime::generate::GenerateParams;
use nexus_runtime::kv_cache::{CacheTypes, KvType};
use nexus_runtime::sampling::SamplingParams;

#[derive(Args, Debug, Clone)]
pub struct ModelArgs {
    /// GGUF model file (default: the model fetched by models/fetch.sh).
    #[arg(short = 'm', long = "model")]
    pub model: Option<PathBuf>,
    /// CPU threads (default: all cores).
    #[arg(short = 't', long = "threads")]
    pub threads: Option<usize>,
    /// Where to run: cpu, cuda or cuda:N (default: CUDA when this binary has it and a GPU is
    /// present, else the CPU).
    #[arg(long = "device")]
    pub device: Option<String>,
    /// Layers on the GPU (llama.cpp's -ngl): 0 runs on the CPU; all layers (e.g. 99) on the GPU.
    #[arg(long = "n-gpu-layers", visible_alias = "ngl")]
    pub n_gpu_layers: Option<i64>,
    /// Refuse a model whose weights plus KV cache would take more host memory than this
    /// (bytes, or with K/M/G/T; default: the memory the system has available).
    #[arg(long = "max-memory", value_parser = crate::load::parse_size)]
    pub max_memory: Option<u64>,
    /// How the KV cache stores keys (llama.cpp's -ctk): f32, f16 or q8_0 (default: f32 on the
    /// CPU; CUDA keeps f16, its only type so far). A --model-draft's cache is stored alike.
    #[arg(long = "cache-type-k", value_parser = parse_kv_type)]
    pub cache_type_k: Option<KvType>,
    /// How the KV cache stores values (llama.cpp's -ctv); as --cache-type-k.
    #[arg(long = "cache-type-v", value_parser = parse_kv_type)]
    pub cache_type_v: Option<KvType>,
}

impl ModelArgs {
    pub fn cache_types(&self) -> CacheTypes {
        CacheTypes { k: self.cache_type_k, v: self.cache_type_v }
    }
}

fn parse_kv_type(s: &str) -> Result<KvType, String> {
    KvType::parse(s).map_err(|e| e.to_string())
}

#[derive(Args, Debug, Clone)]
pub struct GenArgs {
    /// Context size in tokens (0 = the model's training context; default: 4096 or the
    /// model's training context if smaller).
    #[arg(short = 'c', long = "ctx-size", visible_alias = "ctx")]
    pub ctx_size: Option<usize>,
    /// Tokens to generate (-1 = until the end of generation or the context is full).
    #[arg(short = 'n', long = "n-predict", default_value_t = -1, allow_negative_numbers = true)]
    pub n_predict: i64,
    /// Temperature; 0 means greedy.
    #[arg(long = "temp", default_value_t = 0.8)]
    pub temp: f32,
    /// Keep only the K most likely tokens (0 = off).
    #[arg(long = "top-k", default_value_t = 40)]
    pub top_k: usize,
    /// Keep the smallest set of tokens whose probability adds up to P (1.0 = off).
    #[arg(long = "top-p", default_value_t = 0.95)]
    pub top_p: f32,
    /// Drop tokens less likely than P times the most likely one (0.0 = off).
    #[arg(long = "min-p", default_value_t = 0.05)]
    pub min_p: f32,
    /// Penalize tokens seen in the last --repeat-last-n tokens (1.0 = off).
    #[arg(long = "repeat-penalty", default_value_t = 1.0)]
    pub repeat_penalty: f32,
    #[arg(long = "repeat-last-n", default_value_t = 64)]
    pub repeat_last_n: usize,
    /// Random seed (default: a fresh one each run, printed on stderr).
    #[arg(long = "seed")]
    pub seed: Option<u64>,
    /// Stop when this text is generated (repeatable).
    #[arg(long = "stop")]
    pub stop: Vec<String>,
}

impl GenArgs {
    pub fn params(&self) -> GenerateParams {
        let seed = self.seed.unwrap_or_else(|| {
            let s = std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map(|d| d.as_nanos() as u64)
                .unwrap_or(0);
            if self.temp > 0.0 {
                eprintln!("seed: {s} (pass --seed {s} to repeat this run)");
            }
            s
        });
        GenerateParams {
            max_tokens: usize::try_from(self.n_predict).ok(),
            sampling: SamplingParams {
                temperature: self.temp,
                top_k: self.top_k,
                top_p: self.top_p,
                min_p: self.min_p,
                repeat_penalty: self.repeat_penalty,
                repeat_last_n: self.repeat_last_n,
                seed,
            },
            stop: self.stop.clone(),
        }
    }
}
