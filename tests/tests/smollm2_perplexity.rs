//! Our perplexity of SmolLM2-135M-Instruct Q4_1 on the committed evaluation text against
//! llama.cpp's `llama-perplexity` on the same file, text and context (fixture made by
//! scripts/eval/llama_cpp_perplexity.sh). The two runtimes round differently (llama.cpp
//! quantizes activations to Q8_1 and keeps an F16 KV cache), so the bar is 0.5%, not equality.

use std::sync::Arc;

use nexus_tests::{root, smollm2_path};
use nexus_runtime::eval::{self, Chunks};
use nexus_runtime::gguf::GgufFile;
use nexus_runtime::model::Model;
use nexus_runtime::tokenizer::Tokenizer;

const N_CTX: usize = 128;
/// Few chunks keep the test to a few seconds; llama.cpp's running value after the same number
/// of chunks is the reference.
const N_CHUNKS: usize = 8;
const TOLERANCE: f64 = 0.005;

/// llama.cpp's running perplexity after `n` chunks, from its `[1]x,[2]y,…` line.
fn llama_cpp_running(fixture: &str, n: usize) -> f64 {
    let line = fixture.lines().find(|l| l.starts_with("[1]")).expect("a [1]… line");
    let tag = format!("[{n}]");
    line.split(',').find_map(|v| v.strip_prefix(&tag)).expect("the chunk's value").parse().unwrap()
}

#[test]
fn perplexity_matches_llama_cpp() {
    let Some(path) = smollm2_path() else { return };
    let fixtures = root().join("tests/fixtures/eval");
    let reference = std::fs::read_to_string(fixtures.join("nexus-prose.smollm2-q4_1.c128.llama_cpp.txt")).unwrap();
    let want = llama_cpp_running(&reference, N_CHUNKS);
    let text = std::fs::read_to_string(fixtures.join("nexus-prose.txt")).unwrap();

    let file = Arc::new(GgufFile::open(&path).unwrap());
    let tokenizer = Tokenizer::from_gguf(&file).unwrap();
    let model = Model::from_file(file).unwrap();
    let tokens = tokenizer.encode(&text, true, false);
    let chunks = Chunks::new(tokens, N_CTX, Some(N_CHUNKS)).unwrap();
    let bos = if tokenizer.add_bos() { tokenizer.bos() } else { None };
    let got = eval::perplexity(&model, &chunks, bos, |_, _| {}).unwrap();
    let rel = got.ppl() / want - 1.0;
    eprintln!("perplexity after {N_CHUNKS} chunks of {N_CTX}: ours {:.4}, llama.cpp {want:.4} ({:+.3}%)", got.ppl(), 100.0 * rel);
    assert!(rel.abs() < TOLERANCE, "ours {} vs llama.cpp {want}", got.ppl());
    // The running values follow llama.cpp's chunk by chunk, not only at the end.
    for (i, &ours) in got.running.iter().enumerate() {
        let theirs = llama_cpp_running(&reference, i + 1);
        assert!((ours / theirs - 1.0).abs() < 2.0 * TOLERANCE, "chunk {}: ours {ours}, llama.cpp {theirs}", i + 1);
    }
}
