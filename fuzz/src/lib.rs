//! The fuzz targets' bodies (`targets`, one module each; `fuzz_targets/*.rs` are one-line
//! `fuzz_target!`s calling them, and `fuzz_targets/all.rs` dispatches on NEXUS_FUZZ_TARGET so
//! one binary can be carried to another machine) and their shared helpers: scratch files (the
//! readers under test open paths, as users' files are opened), the fixtures' location and the
//! real vocabularies the text targets run against.

pub mod targets;

use std::path::{Path, PathBuf};
use std::sync::OnceLock;

use nexus_runtime::gguf::GgufFile;
use nexus_runtime::tokenizer::Tokenizer;

/// A per-process scratch path on tmpfs when there is one, so each run writes memory, not disk.
pub fn scratch_path(name: &str) -> PathBuf {
    let dir = if Path::new("/dev/shm").is_dir() { PathBuf::from("/dev/shm") } else { std::env::temp_dir() };
    dir.join(format!("nexus-fuzz-{}-{name}", std::process::id()))
}

/// Writes `bytes` to this process's scratch file `name` and returns its path.
pub fn write_scratch(name: &str, bytes: &[u8]) -> PathBuf {
    let path = scratch_path(name);
    std::fs::write(&path, bytes).expect("scratch file is writable");
    path
}

/// `rel` (a path from the repository root): under NEXUS_FUZZ_ROOT when it is set (the packed
/// `all` binary runs on a machine without this checkout, scripts/fuzz_pack.sh), else under the
/// checkout this crate was built in.
pub fn data_path(rel: &str) -> PathBuf {
    match std::env::var_os("NEXUS_FUZZ_ROOT") {
        Some(root) => PathBuf::from(root).join(rel),
        None => Path::new(env!("CARGO_MANIFEST_DIR")).join("..").join(rel),
    }
}

/// Vocabularies from real models: the committed SentencePiece fixture, plus the BPE ones
/// `models/fetch.sh` puts in `models/vocab/` when they are there (one per pre-tokenizer).
pub fn real_vocabs() -> &'static [Tokenizer] {
    static VOCABS: OnceLock<Vec<Tokenizer>> = OnceLock::new();
    VOCABS.get_or_init(|| {
        let files = [
            "tests/fixtures/tokenizer/ggml-vocab-llama-spm.gguf",
            "models/vocab/ggml-vocab-gpt-2.gguf",
            "models/vocab/ggml-vocab-llama-bpe.gguf",
            "models/vocab/ggml-vocab-qwen2.gguf",
            "models/vocab/ggml-vocab-starcoder.gguf",
        ];
        let mut out = Vec::new();
        for f in files {
            let path = data_path(f);
            if !path.is_file() {
                eprintln!("nexus-fuzz: {} absent (run models/fetch.sh); fuzzing without it", path.display());
                continue;
            }
            let gguf = GgufFile::open(&path).expect("real vocabulary opens");
            out.push(Tokenizer::from_gguf(&gguf).expect("real vocabulary loads"));
        }
        out
    })
}

/// Checks the StreamDecoder contract on `ids`: the streamed pieces concatenate to the lossy
/// decoding of all the token pieces together, and every piece is emitted as soon as it is
/// complete (so nothing but an unfinished character is ever held back).
pub fn check_stream(tok: &Tokenizer, ids: &[u32], skip_special: bool) {
    let mut dec = nexus_runtime::tokenizer::StreamDecoder::new(tok, skip_special);
    let mut streamed = String::new();
    let mut all = Vec::new();
    for &id in ids {
        streamed.push_str(&dec.push(id));
        all.extend(tok.token_to_piece(id, !skip_special));
    }
    streamed.push_str(&dec.finish());
    assert_eq!(streamed, String::from_utf8_lossy(&all), "stream decoding differs from one-shot decoding");
}
