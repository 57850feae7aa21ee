//! Our perplexity of SmolLM2-135M-Instruct Q4_1 on the committed evaluation text against
//! llama.cpp's `llama-perplexity` on the same file, text and context (fixtures made by
//! scripts/eval/llama_cpp_perplexity.sh). With the same arithmetic (F32 K/V cache, no flash
//! attention, a chunk per batch) llama.cpp's values are ours exactly; its default run (F16
//! K/V cache, flash attention) rounds otherwise, so there the bar is 0.5%.

use std::sync::Arc;

use nexus_tests::{root, smollm2_path};
use nexus_runtime::eval::{self, Chunks};
use nexus_runtime::gguf::GgufFile;
use nexus_runtime::kv_cache::{CacheTypes, KvType};
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

fn ours(n_chunks: usize) -> Option<Vec<f64>> {
    ours_with(n_chunks, CacheTypes::default())
}

fn ours_with(n_chunks: usize, types: CacheTypes) -> Option<Vec<f64>> {
    let path = smollm2_path()?;
    let text = std::fs::read_to_string(root().join("tests/fixtures/eval/nexus-prose.txt")).unwrap();
    let file = Arc::new(GgufFile::open(&path).unwrap());
    let tokenizer = Tokenizer::from_gguf(&file).unwrap();
    let model = Model::from_file(file).unwrap();
    let tokens = tokenizer.encode(&text, true, false);
    let chunks = Chunks::new(tokens, N_CTX, Some(n_chunks)).unwrap();
    let bos = if tokenizer.add_bos() { tokenizer.bos() } else { None };
    let mut cache = model.new_cache_typed(N_CTX, types).unwrap();
    Some(eval::perplexity_with(&model, &mut cache, &chunks, bos, |_, _| Ok(()), |_, _| {}).unwrap().running)
}

/// A Q8_0 K/V cache (`-ctk q8_0 -ctv q8_0`) against llama.cpp's with the same cache (flash
/// attention, which a quantized V needs there), over all 48 chunks. Not the same arithmetic
/// (llama.cpp's flash attention keeps a running softmax; ours scores every position first), so
/// the bar is the default run's 0.5%; over few chunks that is too tight for any two settings:
/// after 8, llama.cpp's own variants (F32 K/V on AVX2 or AVX-512, F16 with flash attention,
/// Q8_0) spread from 21.01 to 21.11 and ours with Q8_0 reads 20.93; after 48 they all sit
/// within 22.58–22.62, ours 22.5927 against llama.cpp's 22.5801 (+0.06%).
#[test]
fn perplexity_with_a_q8_0_cache_matches_llama_cpp() {
    let q8 = CacheTypes { k: Some(KvType::Q8_0), v: Some(KvType::Q8_0) };
    const ALL: usize = 48;
    let Some(running) = ours_with(ALL, q8) else { return };
    let theirs = llama_cpp_running(&fixture("nexus-prose.smollm2-q4_1.c128.q8_0kv.llama_cpp.txt"), ALL);
    let got = running[ALL - 1];
    eprintln!("after {ALL} chunks with a Q8_0 cache: ours {got:.4}, llama.cpp {theirs:.4} ({:+.3}%)", 100.0 * (got / theirs - 1.0));
    assert!((got / theirs - 1.0).abs() < TOLERANCE, "ours {got} vs llama.cpp's {theirs}");
    // The cache really is Q8_0: the f32 cache's value differs.
    assert_ne!(running[N_CHUNKS - 1], ours(N_CHUNKS).unwrap()[N_CHUNKS - 1]);
}

fn fixture(name: &str) -> String {
    std::fs::read_to_string(root().join("tests/fixtures/eval").join(name)).unwrap()
}

#[test]
fn perplexity_matches_llama_cpp() {
    let Some(running) = ours(N_CHUNKS) else { return };
    // The same arithmetic: equal to the 4 decimals llama.cpp prints, chunk by chunk (the
    // logits are bitwise llama.cpp's on the AVX2 kernels; elsewhere the sums round otherwise).
    let exact = nexus_kernels::simd::detected().has_avx2();
    let same = fixture("nexus-prose.smollm2-q4_1.c128.f32kv.llama_cpp.txt");
    for (i, &value) in running.iter().enumerate() {
        let theirs = llama_cpp_running(&same, i + 1);
        let printed: f64 = format!("{value:.4}").parse().unwrap();
        eprintln!("chunk {}: ours {value:.4}, llama.cpp (F32 K/V, no flash attention) {theirs:.4}", i + 1);
        if exact {
            assert_eq!(printed, theirs, "chunk {}", i + 1);
        } else {
            assert!((value / theirs - 1.0).abs() < TOLERANCE, "chunk {}: ours {value}, llama.cpp {theirs}", i + 1);
        }
    }
    // llama.cpp's default settings round the K/V cache to F16 and use flash attention.
    let default = llama_cpp_running(&fixture("nexus-prose.smollm2-q4_1.c128.llama_cpp.txt"), N_CHUNKS);
    let got = running[N_CHUNKS - 1];
    eprintln!("after {N_CHUNKS} chunks: ours {got:.4}, llama.cpp default {default:.4} ({:+.3}%)", 100.0 * (got / default - 1.0));
    assert!((got / default - 1.0).abs() < TOLERANCE, "ours {got} vs llama.cpp's default {default}");
}
