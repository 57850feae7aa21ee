//! `nexus-cli tokenize` and `nexus-cli perplexity` end to end on tiny random models.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::sync::Arc;

use nexus_runtime::gguf::GgufFile;
use nexus_runtime::tokenizer::Tokenizer;
use nexus_tests::TinyModel;

fn tiny_model(dir: &Path, name: &str, model: TinyModel) -> PathBuf {
    let path = dir.join(name);
    model.write(&path);
    path
}

fn cli(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_nexus-cli")).args(args).output().unwrap()
}

fn text(b: &[u8]) -> String {
    String::from_utf8_lossy(b).into_owned()
}

fn ok(args: &[&str]) -> String {
    let o = cli(args);
    assert!(o.status.success(), "{args:?}: {}", text(&o.stderr));
    text(&o.stdout)
}

#[test]
fn tokenize_prints_llama_tokenize_lines_and_id_lists() {
    let dir = tempfile::tempdir().unwrap();
    let m = tiny_model(dir.path(), "tiny.gguf", TinyModel::default());
    let m = m.to_str().unwrap();
    let tokenizer = Tokenizer::from_gguf(&Arc::new(GgufFile::open(m).unwrap())).unwrap();
    let want = tokenizer.encode("hi there", tokenizer.add_bos(), true);

    let lines = ok(&["tokenize", "-m", m, "-p", "hi there"]);
    let got: Vec<(u32, String)> = lines
        .lines()
        .map(|l| {
            let (id, piece) = l.split_once(" -> ").unwrap();
            (id.trim().parse().unwrap(), piece.strip_prefix('\'').unwrap().strip_suffix('\'').unwrap().to_string())
        })
        .collect();
    assert_eq!(got.iter().map(|g| g.0).collect::<Vec<_>>(), want);
    assert_eq!(got.iter().map(|g| g.1.as_str()).collect::<String>(), "hi there");
    assert!(lines.lines().all(|l| l.find(" -> ") == Some(6)), "ids are right-aligned in 6 columns: {lines}");

    let ids: Vec<u32> = serde_json::from_str(ok(&["tokenize", "-m", m, "-p", "hi there", "--ids"]).trim()).unwrap();
    assert_eq!(ids, want);
    // Escapes are processed unless --no-escape, as llama-tokenize does.
    let esc: Vec<u32> = serde_json::from_str(ok(&["tokenize", "-m", m, "-p", r"a\nb", "--ids"]).trim()).unwrap();
    assert_eq!(esc, tokenizer.encode("a\nb", tokenizer.add_bos(), true));
    let raw: Vec<u32> = serde_json::from_str(ok(&["tokenize", "-m", m, "-p", r"a\nb", "--ids", "--no-escape"]).trim()).unwrap();
    assert_eq!(raw, tokenizer.encode(r"a\nb", tokenizer.add_bos(), true));
    assert!(ok(&["tokenize", "-m", m, "-p", "abc", "--show-count"]).ends_with("Total number of tokens: 3\n"));
}

#[test]
fn tokenize_reports_a_missing_file() {
    let o = cli(&["tokenize", "-m", "/nonexistent/model.gguf", "-p", "x"]);
    assert!(!o.status.success());
    assert!(text(&o.stderr).contains("/nonexistent/model.gguf"), "{}", text(&o.stderr));
}

/// ~1500 byte-level tokens of text for the tiny models.
fn eval_text(dir: &Path) -> PathBuf {
    let path = dir.join("text.txt");
    std::fs::write(&path, "The quick brown fox jumps over the lazy dog; 12345 and more. ".repeat(25)).unwrap();
    path
}

#[test]
fn perplexity_prints_running_values_and_the_final_estimate() {
    let dir = tempfile::tempdir().unwrap();
    let m = tiny_model(dir.path(), "tiny.gguf", TinyModel::default());
    let t = eval_text(dir.path());
    let out = ok(&["perplexity", "-m", m.to_str().unwrap(), "-f", t.to_str().unwrap(), "-c", "64", "--chunks", "3", "-t", "2"]);
    assert!(out.starts_with("[1]") && out.contains(",[2]") && out.contains(",[3]") && !out.contains("[4]"), "{out}");
    let ppl: f64 = out.split("Final estimate: PPL = ").nth(1).unwrap().split(' ').next().unwrap().parse().unwrap();
    // A random model is close to uniform over its 300 tokens.
    assert!(ppl > 30.0 && ppl < 3000.0, "{ppl}");

    let short = dir.path().join("short.txt");
    std::fs::write(&short, "too short").unwrap();
    let o = cli(&["perplexity", "-m", m.to_str().unwrap(), "-f", short.to_str().unwrap(), "-c", "64"]);
    assert!(!o.status.success());
    assert!(text(&o.stderr).contains("needs at least 128"), "{}", text(&o.stderr));
}

#[test]
fn kl_divergence_of_a_model_against_itself_is_zero_and_other_models_differ() {
    let dir = tempfile::tempdir().unwrap();
    let m = tiny_model(dir.path(), "tiny.gguf", TinyModel::default());
    let other = tiny_model(dir.path(), "other.gguf", TinyModel { seed: 8, ..Default::default() });
    let small_vocab = tiny_model(dir.path(), "small.gguf", TinyModel { n_vocab: 280, ..Default::default() });
    let t = eval_text(dir.path());
    let base = dir.path().join("base.kl");
    let (m, t, b) = (m.to_str().unwrap(), t.to_str().unwrap(), base.to_str().unwrap());
    let first = ok(&["perplexity", "-m", m, "-f", t, "-c", "64", "--chunks", "4", "--kl-divergence-base", b]);
    assert!(base.is_file());

    let same = ok(&["perplexity", "-m", m, "-f", t, "--kl-divergence", b]);
    assert_eq!(first.lines().last(), same.lines().find(|l| l.starts_with("Final estimate")), "{first}\n{same}");
    assert!(same.contains("Mean KL divergence = 0.000000"), "{same}");
    assert!(same.contains("Same top token     = 100.000%"), "{same}");
    assert!(same.contains("PPL(Q)/PPL(base)   = 1.00000"), "{same}");

    let diff = ok(&["perplexity", "-m", other.to_str().unwrap(), "--kl-divergence", b]);
    let kl: f64 = diff.split("Mean KL divergence = ").nth(1).unwrap().split(' ').next().unwrap().parse().unwrap();
    assert!(kl > 0.01, "{diff}");

    let o = cli(&["perplexity", "-m", small_vocab.to_str().unwrap(), "--kl-divergence", b]);
    assert!(!o.status.success());
    assert!(text(&o.stderr).contains("vocabulary of 300 tokens, this model has 280"), "{}", text(&o.stderr));

    let other_text = dir.path().join("other.txt");
    std::fs::write(&other_text, "Completely different words here, to change the tokens. ".repeat(30)).unwrap();
    let o = cli(&["perplexity", "-m", m, "-f", other_text.to_str().unwrap(), "--kl-divergence", b]);
    assert!(!o.status.success());
    assert!(text(&o.stderr).contains("tokens differ from the base's"), "{}", text(&o.stderr));
}
