//! Chat templates from files render in a child process with a memory limit (issue 9, the
//! `chat_template` fuzz finding `memory-blowup-cf0c2373.bin`): a template that grows a string
//! exponentially ends in a clear limit error, and the program and its conversation go on.

use std::io::Write;
use std::path::Path;
use std::process::{Command, Stdio};
use std::sync::{Mutex, MutexGuard, PoisonError};
use std::time::{Duration, Instant};

use nexus_runtime::chat_template::sandbox::{self, ChildCommand};
use nexus_runtime::chat_template::{ChatTemplate, ChatTemplateError, Message};
use nexus_tests::TinyModel;

/// Installs the child for this test process and holds the lock that runs these tests one at a
/// time: each may take a child to its 2 GiB cap, and two at once would double that.
fn install() -> MutexGuard<'static, ()> {
    install_with(Duration::from_secs(TIMEOUT_SECS))
}

/// The first install in a test process wins (the triage below runs alone, with its own limit).
fn install_with(timeout: Duration) -> MutexGuard<'static, ()> {
    static ONE_AT_A_TIME: Mutex<()> = Mutex::new(());
    sandbox::install(ChildCommand { program: env!("CARGO_BIN_EXE_nexus-cli").into(), args: vec![sandbox::CHILD_ARG.to_string()], timeout });
    ONE_AT_A_TIME.lock().unwrap_or_else(PoisonError::into_inner)
}

const TIMEOUT_SECS: u64 = 20;

fn assert_memory_limit(result: Result<impl std::fmt::Debug, ChatTemplateError>) {
    match result {
        Err(ChatTemplateError::TooLarge { limit, .. }) => {
            assert!(limit.contains("more memory than the renderer's 2048 MiB"), "{limit}")
        }
        other => panic!("expected the renderer's memory limit, got {other:?}"),
    }
}

/// The `chat_template` fuzz target's input layout: a flag byte (bit 0: add_generation_prompt),
/// the template up to NUL, then `role NUL content NUL ...`.
fn fuzz_input(input: &[u8]) -> (u8, String, Vec<Message>) {
    let mut parts = input[1..].split(|&b| b == 0).map(|p| String::from_utf8_lossy(p).into_owned());
    let source = parts.next().unwrap_or_default();
    let parts: Vec<String> = parts.collect();
    let messages = parts.chunks(2).map(|p| Message::new(p[0].clone(), p.get(1).cloned().unwrap_or_default())).collect();
    (input[0], source, messages)
}

/// Doubles a string once per character of the last message when that message starts with
/// "grow": harmless for short messages, past any memory for long ones.
const GROWS: &str = "{% for m in messages %}<|im_start|>{{ m.role }}\n{{ m.content }}<|im_end|>\n{% endfor %}\
{% set ns = namespace(s='ab') %}{% if messages[-1].content[:4] == 'grow' %}\
{% for c in messages[-1].content %}{% set ns.s = ns.s ~ ns.s %}{% endfor %}{% endif %}\
{{ ns.s|length }}<|im_start|>assistant\n";

#[test]
fn the_fuzz_finding_is_stopped_by_a_limit() {
    let _one = install();
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
    let input = std::fs::read(root.join("tests/fixtures/fuzz/chat_template/memory-blowup-cf0c2373.bin")).unwrap();
    let (flags, source, messages) = fuzz_input(&input);
    let started = Instant::now();
    let probe = ChatTemplate::from_jinja(&source, "<s>", "</s>").and_then(|t| t.render(&messages, flags & 1 != 0));
    // It grows by escaping JSON inside JSON, a little slower than doubling: stopped by the time
    // limit or by the memory limit, whichever it reaches first (both within seconds).
    match probe {
        Err(ChatTemplateError::TooLarge { limit, .. }) => {
            assert!(limit == format!("rendering took longer than {TIMEOUT_SECS}000 ms") || limit.contains("more memory than the renderer's"), "{limit}")
        }
        other => panic!("expected a limit, got {other:?}"),
    }
    eprintln!("stopped after {:?}", started.elapsed());
}

#[test]
fn a_template_renders_the_same_in_the_child_and_starts_a_new_child_after_one_dies() {
    let _one = install();
    // A built-in is trusted and renders in this process; the same source given as Jinja
    // renders in the child.
    let builtin = ChatTemplate::builtin("chatml", "<s>", "</s>").unwrap();
    let jinja = ChatTemplate::from_jinja(builtin.source(), "<s>", "</s>").unwrap();
    let talk = [Message::new("system", "Be brief."), Message::new("user", "Hello"), Message::new("assistant", "Hi."), Message::new("user", "2+2?")];
    assert_eq!(jinja.render(&talk, true).unwrap(), builtin.render(&talk, true).unwrap());

    let grows = ChatTemplate::from_jinja(GROWS, "<s>", "</s>").unwrap();
    let short = [Message::new("user", "grow")];
    let before = grows.render(&short, true).unwrap();
    assert!(before.ends_with("32<|im_start|>assistant"), "{before:?}");
    assert_memory_limit(grows.render(&[Message::new("user", format!("grow{}", "!".repeat(60)))], true));
    // The dead child is replaced on the next render.
    assert_eq!(grows.render(&short, true).unwrap(), before);
}

#[test]
fn chat_reports_the_limit_and_goes_on() {
    let _one = install();
    let dir = tempfile::tempdir().unwrap();
    let model = dir.path().join("tiny.gguf");
    TinyModel { n_ctx: 512, ..Default::default() }.write(&model);
    let mut child = Command::new(env!("CARGO_BIN_EXE_nexus-cli"))
        .args(["chat", "-m", model.to_str().unwrap(), "-c", "256", "-n", "4", "--temp", "0", "--chat-template", GROWS])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let input = format!("hello\ngrow{}\nhi again\n/exit\n", "!".repeat(60));
    child.stdin.take().unwrap().write_all(input.as_bytes()).unwrap();
    let out = child.wait_with_output().unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "the chat must survive the template's failure: {err}");
    assert!(!err.contains("panicked"), "{err}");
    // Doubling reaches the 2 GiB cap within about a second: either limit may come first.
    let limited = err.contains("more memory than the renderer's 2048 MiB") || err.contains("rendering took longer than 1000 ms");
    assert!(limited, "{err}");
    assert_eq!(err.matches("error:").count(), 1, "only the growing message fails: {err}");
}

/// Triage after a long `chat_template` fuzz run, whose 1 GiB allocation cap and 1 s timeout keep
/// reporting inputs that the child contains: each file in the folder `NEXUS_TEMPLATE_INPUTS`
/// goes through the target's steps with the child installed and must render, be refused, or be
/// stopped by a limit; a child that dies any other way (a crash) fails the test. Run by hand:
/// `NEXUS_TEMPLATE_INPUTS=DIR cargo test --release -p nexus-cli --test chat_template_sandbox --
/// --ignored --nocapture triage`.
#[test]
#[ignore]
fn triage_fuzz_inputs() {
    // The fuzz run's own limit was 1 s; a few seconds tells a slow render from a runaway one.
    let _one = install_with(Duration::from_secs(3));
    let dir = std::env::var("NEXUS_TEMPLATE_INPUTS").expect("NEXUS_TEMPLATE_INPUTS=folder of inputs");
    let mut counts = std::collections::BTreeMap::<&str, usize>::new();
    let mut crashes = Vec::new();
    let mut slowest = 0;
    let mut paths: Vec<_> = std::fs::read_dir(&dir).unwrap().map(|e| e.unwrap().path()).collect();
    paths.sort();
    for path in paths {
        let input = std::fs::read(&path).unwrap();
        if input.is_empty() {
            continue;
        }
        let (flags, source, messages) = fuzz_input(&input);
        let started = Instant::now();
        let outcome = ChatTemplate::from_jinja(&source, "<s>", "</s>")
            .and_then(|t| t.with_fixed_time(1_700_000_000))
            .and_then(|t| t.render(&messages, flags & 1 != 0));
        let kind = match outcome {
            Ok(_) => "renders",
            Err(ChatTemplateError::TooLarge { limit, .. }) if limit.contains("memory") => "stopped: memory",
            Err(ChatTemplateError::TooLarge { limit, .. }) if limit.contains("longer than") => "stopped: time",
            Err(ChatTemplateError::TooLarge { .. }) => "refused: fuel or output",
            Err(ChatTemplateError::Renderer { reason, .. }) => {
                crashes.push(format!("{}: {reason}", path.display()));
                "crash"
            }
            Err(_) => "refused: template error",
        };
        *counts.entry(kind).or_default() += 1;
        let ms = started.elapsed().as_millis();
        slowest = slowest.max(ms);
        eprintln!("{kind:24} {ms:>6} ms  {}", path.display());
    }
    eprintln!("{counts:?}; slowest {slowest} ms (with starting the child)");
    assert!(crashes.is_empty(), "inputs that crash the renderer:\n{}", crashes.join("\n"));
}
