//! The `nexus-cli` binary end to end, on a tiny random model written by our own writer.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};

use nexus_tests::TinyModel;

fn tiny_model(dir: &Path) -> PathBuf {
    let path = dir.join("tiny.gguf");
    TinyModel { n_ctx: 512, ..Default::default() }.write(&path);
    path
}

fn cli(args: &[&str], stdin: Option<&str>) -> Output {
    let mut child = Command::new(env!("CARGO_BIN_EXE_nexus-cli"))
        .args(args)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut input = child.stdin.take().unwrap();
    input.write_all(stdin.unwrap_or("").as_bytes()).unwrap();
    drop(input);
    child.wait_with_output().unwrap()
}

fn text(b: &[u8]) -> String {
    String::from_utf8_lossy(b).into_owned()
}

#[test]
fn run_streams_prompt_and_continuation_with_timings_on_stderr() {
    let dir = tempfile::tempdir().unwrap();
    let m = tiny_model(dir.path());
    let args = ["run", "-m", m.to_str().unwrap(), "-p", "hello world", "-n", "12", "--temp", "0", "-t", "2"];
    let a = cli(&args, None);
    assert!(a.status.success(), "{}", text(&a.stderr));
    let out = text(&a.stdout);
    assert!(out.starts_with("hello world"), "{out}");
    assert!(out.len() > "hello world".len(), "nothing generated: {out:?}");
    assert!(text(&a.stderr).contains("tokens/s"), "{}", text(&a.stderr));
    // Greedy is deterministic.
    assert_eq!(cli(&args, None).stdout, a.stdout);
}

#[test]
fn the_same_seed_gives_the_same_text() {
    let dir = tempfile::tempdir().unwrap();
    let m = tiny_model(dir.path());
    let run = |seed: &str| {
        let o = cli(&["run", "-m", m.to_str().unwrap(), "-p", "abc", "-n", "16", "--temp", "1.0", "--seed", seed], None);
        assert!(o.status.success(), "{}", text(&o.stderr));
        o.stdout
    };
    assert_eq!(run("5"), run("5"));
    assert_ne!(run("5"), run("6"), "different seeds should differ on 16 sampled tokens");
}

#[test]
fn chat_keeps_going_across_reset_and_exits_cleanly() {
    let dir = tempfile::tempdir().unwrap();
    let m = tiny_model(dir.path());
    let o = cli(
        &["chat", "-m", m.to_str().unwrap(), "--chat-template", "chatml", "-n", "6", "--temp", "0"],
        Some("hello there\n/reset\nsecond question\n/exit\n"),
    );
    assert!(o.status.success(), "{}", text(&o.stderr));
    assert!(text(&o.stderr).contains("history cleared"), "{}", text(&o.stderr));
    // Three prompts were shown (the random model may print "> " itself too).
    assert!(text(&o.stdout).matches("\n> ").count() >= 3, "{}", text(&o.stdout));
}

#[test]
fn chat_drops_the_oldest_turns_when_the_context_is_full() {
    let dir = tempfile::tempdir().unwrap();
    let m = tiny_model(dir.path());
    let long = "the quick brown fox jumps over the lazy dog ".repeat(2);
    let input = format!("{long}\n{long}\n{long}\n{long}\n");
    let o = cli(&["chat", "-m", m.to_str().unwrap(), "--chat-template", "chatml", "-c", "256", "-n", "8", "--temp", "0"], Some(&input));
    assert!(o.status.success(), "{}", text(&o.stderr));
    assert!(text(&o.stderr).contains("dropped"), "{}", text(&o.stderr));
    // A message longer than the whole context is refused, and the session goes on.
    let huge = "lorem ipsum dolor sit amet ".repeat(40);
    let o = cli(&["chat", "-m", m.to_str().unwrap(), "--chat-template", "chatml", "-c", "128", "-n", "4", "--temp", "0"], Some(&format!("{huge}\nhi\n")));
    assert!(o.status.success(), "{}", text(&o.stderr));
    assert!(text(&o.stderr).contains("context holds 128"), "{}", text(&o.stderr));
    assert!(text(&o.stdout).matches("\n> ").count() >= 3);
}

#[test]
fn chat_without_a_template_says_how_to_choose_one() {
    let dir = tempfile::tempdir().unwrap();
    let m = tiny_model(dir.path());
    let o = cli(&["chat", "-m", m.to_str().unwrap()], Some(""));
    assert_eq!(o.status.code(), Some(1));
    let err = text(&o.stderr);
    assert!(err.contains("--chat-template") && err.contains("chatml"), "{err}");
}

#[test]
fn inspect_prints_metadata_and_tensors() {
    let dir = tempfile::tempdir().unwrap();
    let m = tiny_model(dir.path());
    let o = cli(&["inspect", m.to_str().unwrap()], None);
    assert!(o.status.success());
    let out = text(&o.stdout);
    assert!(out.contains("llama.block_count") && out.contains("blk.1.ffn_down.weight") && out.contains("GGUF v3"), "{out}");
}

#[test]
fn bench_prints_a_llama_bench_table() {
    let dir = tempfile::tempdir().unwrap();
    let m = tiny_model(dir.path());
    let o = cli(&["bench", "-m", m.to_str().unwrap(), "-p", "32", "-n", "8", "-r", "2", "-t", "1"], None);
    assert!(o.status.success(), "{}", text(&o.stderr));
    let out = text(&o.stdout);
    assert!(out.contains("| pp32 |") && out.contains("| tg8 |"), "{out}");
    let o = cli(&["bench", "-m", m.to_str().unwrap(), "-p", "8", "-n", "4", "-r", "1", "-o", "json"], None);
    let v: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    assert_eq!(v.as_array().unwrap().len(), 2);
}

#[test]
fn kv_cache_types_run_and_unusable_ones_fail_cleanly() {
    let dir = tempfile::tempdir().unwrap();
    // Heads of 32 values: one Q8_0 block each.
    let m32 = dir.path().join("h32.gguf");
    TinyModel { n_embd: 128, n_head: 4, n_head_kv: 2, n_ctx: 512, ..Default::default() }.write(&m32);
    let m32 = m32.to_str().unwrap();
    let run = |m: &str, extra: &[&str]| cli(&[&["run", "-m", m, "-p", "hello", "-n", "8", "--temp", "0", "-t", "2"][..], extra].concat(), None);
    let f32_text = run(m32, &[]);
    assert!(f32_text.status.success(), "{}", text(&f32_text.stderr));
    for types in [["-ctk", "q8_0", "-ctv", "q8_0"], ["--cache-type-k", "f16", "--cache-type-v", "q8_0"]] {
        let o = run(m32, &types);
        assert!(o.status.success(), "{types:?}: {}", text(&o.stderr));
        assert!(text(&o.stdout).starts_with("hello") && o.stdout.len() > 5, "{}", text(&o.stdout));
    }
    let o = run(m32, &["-ctk", "q4_0"]);
    assert_eq!(o.status.code(), Some(2), "{}", text(&o.stderr));
    assert!(text(&o.stderr).contains("q4_0") && text(&o.stderr).contains("f32, f16 or q8_0"), "{}", text(&o.stderr));
    // Heads of 16: a Q8_0 cache cannot hold them, said before any work.
    let m16 = tiny_model(dir.path());
    let o = run(m16.to_str().unwrap(), &["-ctv", "q8_0"]);
    assert_eq!(o.status.code(), Some(1), "{}", text(&o.stderr));
    assert!(text(&o.stderr).contains("multiple of 32") && text(&o.stderr).contains("16"), "{}", text(&o.stderr));
    // bench at a depth, with the types in the table as llama-bench shows them.
    let o = cli(&["bench", "-m", m32, "-p", "8", "-n", "4", "-r", "1", "-t", "1", "-d", "16", "-ctk", "q8_0", "-ctv", "f16"], None);
    assert!(o.status.success(), "{}", text(&o.stderr));
    let out = text(&o.stdout);
    assert!(out.contains("| q8_0 | f16 |") && out.contains("| tg4 @ d16 |") && out.contains("| pp8 @ d16 |"), "{out}");
    let o = cli(&["bench", "-m", m32, "-p", "0", "-n", "4", "-r", "1", "-d", "100000"], None);
    assert_eq!(o.status.code(), Some(1), "{}", text(&o.stderr));
    assert!(text(&o.stderr).contains("training context"), "{}", text(&o.stderr));
}

#[test]
fn bad_files_and_flags_fail_cleanly() {
    let dir = tempfile::tempdir().unwrap();
    let missing = dir.path().join("nope.gguf");
    let o = cli(&["run", "-m", missing.to_str().unwrap(), "-p", "x"], None);
    assert_eq!(o.status.code(), Some(1));
    assert!(text(&o.stderr).contains("nope.gguf"), "{}", text(&o.stderr));
    let junk = dir.path().join("junk.gguf");
    std::fs::write(&junk, b"definitely not a model").unwrap();
    let o = cli(&["inspect", junk.to_str().unwrap()], None);
    assert_eq!(o.status.code(), Some(1));
    assert!(text(&o.stderr).contains("junk.gguf") && text(&o.stderr).contains("not a GGUF file"));
    let m = tiny_model(dir.path());
    let o = cli(&["run", "-m", m.to_str().unwrap(), "-p", "x", "-c", "100000"], None);
    assert_eq!(o.status.code(), Some(1));
    assert!(text(&o.stderr).contains("training context"), "{}", text(&o.stderr));
}

#[test]
fn a_closed_stdout_ends_the_command_quietly() {
    let dir = tempfile::tempdir().unwrap();
    // 300 layers: a tensor table far longer than a pipe buffers, and nobody reading it.
    let m = dir.path().join("deep.gguf");
    TinyModel { n_layer: 300, n_embd: 16, n_head: 2, n_head_kv: 1, n_ff: 16, ..Default::default() }.write(&m);
    let mut child = Command::new(env!("CARGO_BIN_EXE_nexus-cli"))
        .args(["inspect", m.to_str().unwrap()])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    drop(child.stdout.take());
    let out = child.wait_with_output().unwrap();
    let err = text(&out.stderr);
    assert!(!err.contains("panicked"), "{err}");
}
