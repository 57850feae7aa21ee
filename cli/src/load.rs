//! Finding, opening and checking the model a command runs.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use anyhow::{bail, Context, Result};
use nexus_runtime::gguf::GgufFile;
use nexus_runtime::kv_cache::CacheTypes;
use nexus_runtime::model::Model;
use nexus_runtime::tokenizer::Tokenizer;

use crate::args::ModelArgs;

/// The model `chat` and `run` use without `-m`: the one `models/fetch.sh` places.
pub const DEFAULT_MODEL: &str = "models/SmolLM2-135M-Instruct.Q4_1.gguf";

/// The default model is looked for in the working directory, then beside the workspace the
/// binary was built in (so `target/release/nexus-cli` works from anywhere in a checkout).
fn default_model() -> Result<PathBuf> {
    let mut candidates = vec![PathBuf::from(DEFAULT_MODEL)];
    if let Ok(exe) = std::env::current_exe() {
        for dir in exe.ancestors().skip(1).take(4) {
            candidates.push(dir.join(DEFAULT_MODEL));
        }
    }
    match candidates.iter().find(|p| p.is_file()) {
        Some(p) => Ok(p.clone()),
        None => bail!("no model given (-m FILE) and the default model {DEFAULT_MODEL} is absent: run models/fetch.sh first"),
    }
}

pub fn set_threads(threads: Option<usize>) -> Result<usize> {
    let n = threads.unwrap_or_else(|| std::thread::available_parallelism().map(|n| n.get()).unwrap_or(1));
    if n == 0 {
        bail!("--threads must be at least 1");
    }
    rayon::ThreadPoolBuilder::new().num_threads(n).build_global().context("setting up the thread pool")?;
    Ok(n)
}

pub struct Loaded {
    pub path: PathBuf,
    pub model: Model,
    pub tokenizer: Tokenizer,
    /// Host memory the weights (the mapped file) and the KV cache may take, when known.
    pub memory_limit: Option<MemoryLimit>,
    /// How the KV cache stores keys and values (`--cache-type-k/-v`).
    pub cache_types: CacheTypes,
}

/// A memory budget and where it came from, for the error message.
#[derive(Debug, Clone, Copy)]
pub struct MemoryLimit {
    pub bytes: u64,
    pub from_flag: bool,
}

impl MemoryLimit {
    fn of(args: &ModelArgs) -> Option<MemoryLimit> {
        match args.max_memory {
            Some(bytes) => Some(MemoryLimit { bytes, from_flag: true }),
            None => available_memory().map(|bytes| MemoryLimit { bytes, from_flag: false }),
        }
    }

    fn check(self, path: &Path, what: &str, need: u64) -> Result<()> {
        if need > self.bytes {
            let source = if self.from_flag { "--max-memory" } else { "the memory this machine has available" };
            bail!(
                "{}: {what} need {} but {source} is {}{}",
                path.display(),
                human(need),
                human(self.bytes),
                if self.from_flag { "" } else { " (set --max-memory to override)" }
            );
        }
        Ok(())
    }
}

pub fn load(args: &ModelArgs) -> Result<Loaded> {
    let path = match &args.model {
        Some(p) => p.clone(),
        None => default_model()?,
    };
    set_threads(args.threads)?;
    // Before the file is mapped: the mapping would be paged in as the weights are used, and a
    // model that cannot fit should fail here, not in the middle of a forward pass.
    let memory_limit = MemoryLimit::of(args);
    if let Some(limit) = memory_limit {
        let len = std::fs::metadata(&path).with_context(|| format!("{}: reading its size", path.display()))?.len();
        limit.check(&path, "the weights", len)?;
    }
    let mut loaded = load_path(&path)?;
    loaded.memory_limit = memory_limit;
    loaded.cache_types = args.cache_types();
    Ok(loaded)
}

pub fn load_path(path: &Path) -> Result<Loaded> {
    let file = Arc::new(GgufFile::open(path)?);
    let tokenizer = Tokenizer::from_gguf(&file).with_context(|| format!("{}: reading the tokenizer", path.display()))?;
    let model = Model::from_file(file)?;
    Ok(Loaded { path: path.to_path_buf(), model, tokenizer, memory_limit: None, cache_types: CacheTypes::default() })
}

/// `MemAvailable` of /proc/meminfo, where there is one.
fn available_memory() -> Option<u64> {
    let info = std::fs::read_to_string("/proc/meminfo").ok()?;
    let line = info.lines().find(|l| l.starts_with("MemAvailable:"))?;
    let kib: u64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kib * 1024)
}

/// A size in bytes, with an optional K, M, G or T suffix (powers of 1024; `B`/`iB` allowed).
pub fn parse_size(s: &str) -> Result<u64, String> {
    let t = s.trim();
    let t = t.strip_suffix("iB").or_else(|| t.strip_suffix('B')).unwrap_or(t);
    let (num, shift) = match t.char_indices().last() {
        Some((i, c)) if c.is_ascii_alphabetic() => {
            let shift = match c.to_ascii_uppercase() {
                'K' => 10,
                'M' => 20,
                'G' => 30,
                'T' => 40,
                _ => return Err(format!("{s:?}: unknown size suffix {c:?} (use K, M, G or T)")),
            };
            (&t[..i], shift)
        }
        _ => (t, 0),
    };
    let value: f64 = num.trim().parse().map_err(|_| format!("{s:?} is not a size (e.g. 512M, 8G, 1073741824)"))?;
    let bytes = value * (1u64 << shift) as f64;
    if !(bytes.is_finite() && bytes >= 1.0 && bytes < u64::MAX as f64) {
        return Err(format!("{s:?} is not a usable memory size"));
    }
    Ok(bytes as u64)
}

fn human(bytes: u64) -> String {
    let b = bytes as f64;
    match bytes {
        0..1_048_576 => format!("{:.1} KiB", b / 1024.0),
        1_048_576..1_073_741_824 => format!("{:.1} MiB", b / 1_048_576.0),
        _ => format!("{:.2} GiB", b / 1_073_741_824.0),
    }
}

/// Context used when `--ctx-size` is not given (llama.cpp's default), capped by the model's.
const DEFAULT_CTX: usize = 4096;

/// The context size to allocate: 0 means the model's own, and more than that is refused
/// before any work, since positions past the training context give garbage. The weights and
/// a host KV cache of that size (of the types asked for) must fit the memory limit (a file's
/// `context_length` is whatever its author wrote, so `-c 0` could otherwise ask for any
/// amount).
pub fn context_size(loaded: &Loaded, requested: Option<usize>) -> Result<usize> {
    let config = &loaded.model.config;
    let train = config.n_ctx_train;
    let n_ctx = match requested {
        None => DEFAULT_CTX.min(train),
        Some(0) => train,
        Some(n) if n > train => bail!("--ctx-size {n} exceeds the model's training context of {train} tokens"),
        Some(n) => n,
    };
    if let Some(limit) = loaded.memory_limit {
        let weights = std::fs::metadata(&loaded.path).map(|m| m.len()).unwrap_or(0);
        let kv = loaded.cache_types.cpu_bytes(config.n_layer, config.kv_dim(), n_ctx);
        limit.check(&loaded.path, &format!("the weights and a {n_ctx}-token KV cache"), weights.saturating_add(kv))?;
    }
    Ok(n_ctx)
}

#[cfg(test)]
mod tests {
    use super::parse_size;

    #[test]
    fn sizes_parse_with_binary_suffixes() {
        assert_eq!(parse_size("1073741824"), Ok(1 << 30));
        assert_eq!(parse_size("8G"), Ok(8 << 30));
        assert_eq!(parse_size("512MiB"), Ok(512 << 20));
        assert_eq!(parse_size("1.5k"), Ok(1536));
        assert_eq!(parse_size("2TB"), Ok(2 << 40));
        for bad in ["", "G", "lots", "8X", "-1G", "0", "1e30T"] {
            assert!(parse_size(bad).is_err(), "{bad:?}");
        }
    }
}
