//! Resource limits a user relies on (issue 9): a prompt longer than the context is refused
//! with a message saying so, never a panic or a silent truncation, and a chat message that
//! does not fit is refused without ending the chat.

use std::io::Write;
use std::path::Path;
use std::process::{Command, Output, Stdio};

use nexus_tests::TinyModel;

fn cli(args: &[&str], stdin: &str) -> Output {
    let mut child = Command::new(env!("CARGO_BIN_EXE_nexus-cli"))
        .args(args)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    child.stdin.take().unwrap().write_all(stdin.as_bytes()).unwrap();
    child.wait_with_output().unwrap()
}

fn tiny(dir: &Path) -> String {
    let path = dir.join("tiny.gguf");
    TinyModel { n_ctx: 512, ..Default::default() }.write(&path);
    path.to_str().unwrap().to_string()
}

#[test]
fn run_refuses_a_prompt_longer_than_the_context() {
    let dir = tempfile::tempdir().unwrap();
    let m = tiny(dir.path());
    let prompt = "many words in a long prompt ".repeat(20);
    let o = cli(&["run", "-m", &m, "-c", "16", "-p", &prompt, "-n", "4", "--temp", "0"], "");
    let err = String::from_utf8_lossy(&o.stderr);
    assert_eq!(o.status.code(), Some(1), "expected a clean error exit: {err}");
    assert!(!err.contains("panicked"), "{err}");
    assert!(err.contains("the context holds 16") && err.contains("--ctx-size"), "{err}");
    assert!(o.stdout.is_empty(), "nothing should be generated: {:?}", String::from_utf8_lossy(&o.stdout));
}

#[test]
fn run_refuses_a_context_larger_than_the_model_was_trained_for() {
    let dir = tempfile::tempdir().unwrap();
    let m = tiny(dir.path());
    let o = cli(&["run", "-m", &m, "-c", "1000000", "-p", "hi", "-n", "1"], "");
    let err = String::from_utf8_lossy(&o.stderr);
    assert_eq!(o.status.code(), Some(1), "{err}");
    assert!(err.contains("exceeds the model's training context of 512"), "{err}");
}

#[test]
fn chat_refuses_a_message_longer_than_the_context_and_goes_on() {
    let dir = tempfile::tempdir().unwrap();
    let m = tiny(dir.path());
    let long = "word ".repeat(200);
    let input = format!("{long}\nhi\n/exit\n");
    let o = cli(&["chat", "-m", &m, "-c", "64", "-n", "4", "--temp", "0", "--chat-template", "chatml"], &input);
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(o.status.success(), "the chat must survive a message that does not fit: {err}");
    assert!(!err.contains("panicked"), "{err}");
    assert!(err.contains("the context holds"), "no message about the context: {err}");
}

#[test]
fn a_model_larger_than_max_memory_is_refused_before_loading() {
    let dir = tempfile::tempdir().unwrap();
    let m = tiny(dir.path());
    let o = cli(&["run", "-m", &m, "--max-memory", "1K", "-p", "hi", "-n", "1"], "");
    let err = String::from_utf8_lossy(&o.stderr);
    assert_eq!(o.status.code(), Some(1), "expected a clean error exit: {err}");
    assert!(err.contains("the weights need") && err.contains("--max-memory is 1.0 KiB"), "{err}");
    assert!(o.stdout.is_empty());
}

#[test]
fn a_kv_cache_beyond_max_memory_is_refused_and_a_smaller_context_fits() {
    let dir = tempfile::tempdir().unwrap();
    let m = tiny(dir.path());
    let len = std::fs::metadata(&m).unwrap().len();
    // The weights fit with 4 KiB to spare; a 512-token f32 KV cache of the tiny model does not.
    let limit = (len + 4096).to_string();
    let o = cli(&["run", "-m", &m, "--max-memory", &limit, "-c", "512", "-p", "hi", "-n", "1", "--temp", "0"], "");
    let err = String::from_utf8_lossy(&o.stderr);
    assert_eq!(o.status.code(), Some(1), "expected a clean error exit: {err}");
    assert!(err.contains("a 512-token KV cache need") && err.contains("--max-memory"), "{err}");
    let o = cli(&["run", "-m", &m, "--max-memory", &limit, "-c", "4", "-p", "hi", "-n", "1", "--temp", "0"], "");
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let o = cli(&["run", "-m", &m, "--max-memory", "lots", "-p", "hi"], "");
    let err = String::from_utf8_lossy(&o.stderr);
    assert_eq!(o.status.code(), Some(2), "a bad size is a usage error: {err}");
    assert!(err.contains("--max-memory") && err.contains("lots"), "{err}");
}
