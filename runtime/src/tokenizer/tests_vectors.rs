//! Exact-id tests against llama.cpp's own tokenizer vectors and our wider corpus.
//!
//! The llama-spm vocabulary is committed under tests/fixtures/tokenizer; the larger ones
//! (llama-bpe, qwen2, gpt-2) come from scripts/fetch_vocab.sh into models/vocab and are
//! skipped with a message when absent.

use std::path::{Path, PathBuf};

use super::Tokenizer;
use crate::gguf::GgufFile;

fn repo_root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("..")
}

/// The vocabulary file, from the committed fixtures or the fetched set; `None` (after
/// saying so) when it has not been fetched.
fn find_vocab(name: &str) -> Option<PathBuf> {
    let file = format!("ggml-vocab-{name}.gguf");
    for dir in ["tests/fixtures/tokenizer", "models/vocab"] {
        let p = repo_root().join(dir).join(&file);
        if p.exists() {
            return Some(p);
        }
    }
    eprintln!("skipped: {file} not found; run scripts/fetch_vocab.sh");
    None
}

fn load(path: &Path) -> Tokenizer {
    let f = GgufFile::open(path).unwrap_or_else(|e| panic!("{e}"));
    Tokenizer::from_gguf(&f).unwrap_or_else(|e| panic!("{e}"))
}

/// llama.cpp's test-tokenizer-0 format: inputs separated by "\n__ggml_vocab_test__\n",
/// one line of space-separated ids per input.
fn read_vectors(gguf: &Path) -> Vec<(String, Vec<u32>)> {
    let inp = std::fs::read_to_string(gguf.with_extension("gguf.inp")).expect("read .inp");
    let out = std::fs::read_to_string(gguf.with_extension("gguf.out")).expect("read .out");
    let sep = "\n__ggml_vocab_test__\n";
    let mut inputs = Vec::new();
    let mut pos = 0;
    while pos < inp.len() {
        match inp[pos..].find(sep) {
            Some(n) => {
                inputs.push(inp[pos..pos + n].to_string());
                pos += n + sep.len();
            }
            None => {
                inputs.push(inp[pos..].to_string());
                break;
            }
        }
    }
    let outputs: Vec<Vec<u32>> = out
        .lines()
        .map(|l| l.split_whitespace().map(|t| t.parse().expect("id")).collect())
        .collect();
    assert_eq!(inputs.len(), outputs.len(), "{}: .inp and .out disagree on the number of tests", gguf.display());
    inputs.into_iter().zip(outputs).collect()
}

fn check_llama_cpp_vectors(name: &str) {
    let Some(path) = find_vocab(name) else { return };
    let tok = load(&path);
    let vectors = read_vectors(&path);
    let mut failures = Vec::new();
    for (text, want) in &vectors {
        let got = tok.encode(text, false, false);
        if &got != want {
            failures.push(format!("  {text:?}\n    want {want:?}\n    got  {got:?}"));
        }
    }
    eprintln!("{name}: {}/{} llama.cpp vectors match", vectors.len() - failures.len(), vectors.len());
    assert!(failures.is_empty(), "{name}: {} mismatches:\n{}", failures.len(), failures.join("\n"));
}

#[test]
fn llama_cpp_vectors_llama_spm() {
    check_llama_cpp_vectors("llama-spm");
}

#[test]
fn llama_cpp_vectors_llama_bpe() {
    check_llama_cpp_vectors("llama-bpe");
}

#[test]
fn llama_cpp_vectors_qwen2() {
    check_llama_cpp_vectors("qwen2");
}

#[test]
fn llama_cpp_vectors_gpt2() {
    check_llama_cpp_vectors("gpt-2");
}

/// One corpus case as scripts/tokenizer/gen_corpus_ids.py writes it.
#[derive(serde::Deserialize)]
struct Case {
    text: String,
    parse_special: bool,
    /// Ids from HF tokenizers built from the same GGUF vocabulary.
    hf: Option<Vec<u32>>,
    /// Ids from llama.cpp's llama-tokenize, where it was available; these are the bar.
    llama_cpp: Option<Vec<u32>>,
}

fn check_corpus(name: &str) {
    let Some(path) = find_vocab(name) else { return };
    let fixture = repo_root().join(format!("tests/fixtures/tokenizer/corpus-ids-{name}.json"));
    let cases: Vec<Case> = serde_json::from_str(&std::fs::read_to_string(&fixture).expect("read corpus ids"))
        .expect("parse corpus ids");
    let tok = load(&path);
    let (mut failures, mut n_cpp, mut n_hf, mut disagree) = (Vec::new(), 0, 0, 0);
    for c in &cases {
        let got = tok.encode(&c.text, false, c.parse_special);
        // llama.cpp is the reference; HF ids only stand in where llama.cpp's are missing.
        let want = match (&c.llama_cpp, &c.hf) {
            (Some(cpp), hf) => {
                n_cpp += 1;
                if let Some(hf) = hf.as_ref().filter(|hf| *hf != cpp) {
                    disagree += 1;
                    eprintln!("{name}: HF and llama.cpp disagree on {:?}; following llama.cpp\n  hf        {hf:?}\n  llama.cpp {cpp:?}", c.text);
                }
                cpp
            }
            (None, Some(hf)) => {
                n_hf += 1;
                hf
            }
            (None, None) => continue,
        };
        if &got != want {
            failures.push(format!("  {:?} (parse_special={})\n    want {want:?}\n    got  {got:?}", c.text, c.parse_special));
        }
    }
    eprintln!(
        "{name}: {}/{} corpus cases match ({n_cpp} against llama.cpp, {n_hf} against HF only; \
         {disagree} where HF and llama.cpp disagree)",
        cases.len() - failures.len(),
        cases.len()
    );
    assert!(failures.is_empty(), "{name}: {} corpus mismatches:\n{}", failures.len(), failures.join("\n"));
}

#[test]
fn corpus_llama_spm() {
    check_corpus("llama-spm");
}

#[test]
fn corpus_llama_bpe() {
    check_corpus("llama-bpe");
}

#[test]
fn corpus_qwen2() {
    check_corpus("qwen2");
}

/// Decoding what we encoded gives the text back wherever the tokenizer is lossless:
/// byte-level BPE always is (up to llama.cpp's space clean-up, which Qwen 2 turns off).
#[test]
fn qwen2_round_trip() {
    let Some(path) = find_vocab("qwen2") else { return };
    let tok = load(&path);
    let vectors = read_vectors(&path);
    for (text, _) in &vectors {
        let ids = tok.encode(text, false, false);
        assert_eq!(&tok.decode(&ids, false), text);
    }
}

/// Other pre-tokenizer families from the same llama.cpp package, checked when present
/// in models/vocab (scripts/fetch_vocab.sh fetches them too): command-r uses the SmolLM rules, starcoder
/// and refact the same rules with space clean-up, mpt the GPT-2 rules.
#[test]
fn llama_cpp_vectors_optional_families() {
    for name in ["command-r", "starcoder", "refact", "mpt"] {
        check_llama_cpp_vectors(name);
    }
}
