//! Finding, opening and checking the model a command runs.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use anyhow::{bail, Context, Result};
use nexus_runtime::gguf::GgufFile;
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
}

pub fn load(args: &ModelArgs) -> Result<Loaded> {
    let path = match &args.model {
        Some(p) => p.clone(),
        None => default_model()?,
    };
    set_threads(args.threads)?;
    load_path(&path)
}

pub fn load_path(path: &Path) -> Result<Loaded> {
    let file = Arc::new(GgufFile::open(path)?);
    let tokenizer = Tokenizer::from_gguf(&file).with_context(|| format!("{}: reading the tokenizer", path.display()))?;
    let model = Model::from_file(file)?;
    Ok(Loaded { path: path.to_path_buf(), model, tokenizer })
}

/// Context used when `--ctx-size` is not given (llama.cpp's default), capped by the model's.
const DEFAULT_CTX: usize = 4096;

/// The context size to allocate: 0 means the model's own, and more than that is refused
/// before any work, since positions past the training context give garbage.
pub fn context_size(model: &Model, requested: Option<usize>) -> Result<usize> {
    let train = model.config.n_ctx_train;
    match requested {
        None => Ok(DEFAULT_CTX.min(train)),
        Some(0) => Ok(train),
        Some(n) if n > train => bail!("--ctx-size {n} exceeds the model's training context of {train} tokens"),
        Some(n) => Ok(n),
    }
}
