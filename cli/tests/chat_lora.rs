//! Chat's `/lora load FILE [SCALE]`, `/lora off` and `/lora list` between turns, end to end:
//! greedy answers after a switch equal those of a fresh chat with the same history on the
//! merged model (or the base after `/lora off`), so the history is recomputed with the new
//! weights; bad commands print an error and the conversation goes on.

use std::collections::HashMap;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use nexus_kernels::GgmlType;
use nexus_tests::lora::{add_merged_deltas, write_merged, LoraSpec};
use nexus_tests::TinyModel;

const TARGETS: [&str; 5] =
    ["blk.0.attn_k.weight", "blk.1.attn_v.weight", "blk.0.attn_output.weight", "blk.1.ffn_up.weight", "output.weight"];

/// ChatML, except that a system message is written as it is: a reference chat passes an
/// earlier history, rendered by [`render`], as its system prompt.
const TEMPLATE: &str = "{% for m in messages %}{% if m.role == 'system' %}{{ m.content }}{% else %}\
<|im_start|>{{ m.role }}\n{{ m.content }}<|im_end|>\n{% endif %}{% endfor %}\
{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}";

fn render(history: &[(&str, &str)]) -> String {
    history.iter().map(|(role, content)| format!("<|im_start|>{role}\n{content}<|im_end|>\n")).collect()
}

struct Files {
    _dir: tempfile::TempDir,
    base: PathBuf,
    adapter: PathBuf,
    /// base + adapter at scale 1, and at scale 0.5.
    merged: PathBuf,
    merged_half: PathBuf,
}

fn files() -> Files {
    files_of(GgmlType::F32)
}

/// The base, an adapter whose pairs are stored as `ty`, and the merged models.
fn files_of(ty: GgmlType) -> Files {
    let dir = tempfile::tempdir().unwrap();
    let m = TinyModel { n_ctx: 512, ..Default::default() };
    let base = dir.path().join("base.gguf");
    m.write(&base);
    let adapter = dir.path().join("style.lora.gguf");
    LoraSpec { ty, ..LoraSpec::for_model(&m, &TARGETS, 4, 8.0, 41) }.write(&adapter);
    let merge = |scale: f64, name: &str| {
        let mut deltas = HashMap::new();
        add_merged_deltas(&adapter, scale, &mut deltas);
        let out = dir.path().join(name);
        write_merged(&base, &deltas, &out);
        out
    };
    let (merged, merged_half) = (merge(1.0, "merged.gguf"), merge(0.5, "merged-half.gguf"));
    Files { _dir: dir, base, adapter, merged, merged_half }
}

struct Chat {
    /// What the chat printed after each input line: the answer to a message, "" after a command.
    replies: Vec<String>,
    stderr: String,
}

/// `nexus-cli chat` on `model`, greedy, fed `lines`; `system` is the reference's history.
fn chat(model: &Path, extra: &[&str], system: Option<&str>, lines: &[&str]) -> Chat {
    let m = model.to_str().unwrap();
    let mut args = vec!["chat", "-m", m, "--chat-template", TEMPLATE, "-n", "8", "--temp", "0", "-t", "2"];
    if let Some(s) = system {
        args.extend(["-s", s]);
    }
    args.extend_from_slice(extra);
    let mut child = Command::new(env!("CARGO_BIN_EXE_nexus-cli"))
        .args(&args)
        // On a GPU, prompts through the decode graph too: the batched path rounds x and the
        // weights to f16, and a continued chat and a fresh one split the same tokens between
        // prompt and decode differently, so a near-tie of these tiny random models could flip
        // a token. Ignored on the CPU.
        .env("NEXUS_CUDA_PREFILL", "0")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut input = child.stdin.take().unwrap();
    input.write_all(lines.iter().map(|l| format!("{l}\n")).collect::<String>().as_bytes()).unwrap();
    drop(input);
    let o = child.wait_with_output().unwrap();
    let (stdout, stderr) = (String::from_utf8_lossy(&o.stdout).into_owned(), String::from_utf8_lossy(&o.stderr).into_owned());
    assert!(o.status.success(), "{stderr}");
    assert!(!stderr.contains("panicked"), "{stderr}");
    // Each line is answered after a "\n> " prompt, then a newline; commands print to stderr.
    let replies: Vec<String> = stdout.split("\n> ").skip(1).map(|r| r.strip_suffix('\n').unwrap_or(r).to_string()).collect();
    Chat { replies, stderr }
}

/// The answer of a fresh chat on `model` (with `extra` arguments) to `user` after `history`.
fn reference(model: &Path, extra: &[&str], history: &[(&str, &str)], user: &str) -> String {
    let system = render(history);
    let c = chat(model, extra, (!history.is_empty()).then_some(system.as_str()), &[user]);
    c.replies[0].clone()
}

#[test]
fn answers_after_a_switch_are_the_merged_or_base_models_with_the_same_history() {
    switches_match_the_merged_model(&["--device", "cpu"], GgmlType::F32);
}

/// The same on the GPU, where each switch uploads the model again: the adapted chat against
/// fresh GPU chats on the merged models. Without a usable GPU (or CUDA in this binary) the
/// chat does not start: skipped, unless NEXUS_REQUIRE_CUDA is set.
#[test]
fn answers_after_a_switch_on_cuda_are_the_merged_models_there() {
    let f = files();
    let o = Command::new(env!("CARGO_BIN_EXE_nexus-cli"))
        .args(["chat", "-m", f.base.to_str().unwrap(), "--chat-template", "chatml", "-n", "1", "--device", "cuda"])
        .stdin(Stdio::null())
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&o.stderr);
    if !o.status.success() {
        assert!(err.contains("CUDA") && !err.contains("panicked"), "{err}");
        assert!(std::env::var_os("NEXUS_REQUIRE_CUDA").is_none(), "NEXUS_REQUIRE_CUDA is set: {err}");
        eprintln!("skipped: no usable GPU here ({})", err.trim());
        return;
    }
    // F16 adapters: what the GPU keeps of them is then exactly what the merge adds.
    switches_match_the_merged_model(&["--device", "cuda"], GgmlType::F16);
}

fn switches_match_the_merged_model(dev: &[&str], ty: GgmlType) {
    let f = files_of(ty);
    let a = f.adapter.to_str().unwrap();
    let (load, load_half) = (format!("/lora load {a}"), format!("/lora load {a} 0.5"));
    let lines = ["hi", &load, "tell me more", "/lora list", "go on", "/lora off", "and now?", &load_half, "again", "/exit", "ignored"];
    let c = chat(&f.base, dev, None, &lines);
    let r = &c.replies;
    assert_eq!(r.len(), 10, "/exit did not end the chat: {r:?}");
    for i in [0, 2, 4, 6, 8] {
        assert!(!r[i].is_empty(), "turn {i} has no answer: {r:?}");
    }
    for i in [1, 3, 5, 7] {
        assert!(r[i].is_empty(), "command {i} printed to stdout: {r:?}");
    }

    let mut h: Vec<(&str, &str)> = vec![];
    assert_eq!(r[0], reference(&f.base, dev, &h, "hi"));
    h.extend([("user", "hi"), ("assistant", r[0].as_str())]);
    let plain = reference(&f.base, dev, &h, "tell me more");
    assert_eq!(r[2], reference(&f.merged, dev, &h, "tell me more"), "after /lora load");
    assert_ne!(r[2], plain, "the adapter does not change the answer, so the test sees nothing");
    h.extend([("user", "tell me more"), ("assistant", r[2].as_str())]);
    assert_eq!(r[4], reference(&f.merged, dev, &h, "go on"), "the adapter stays for the next turn");
    h.extend([("user", "go on"), ("assistant", r[4].as_str())]);
    assert_eq!(r[6], reference(&f.base, dev, &h, "and now?"), "after /lora off");
    h.extend([("user", "and now?"), ("assistant", r[6].as_str())]);
    assert_eq!(r[8], reference(&f.merged_half, dev, &h, "again"), "after /lora load FILE 0.5");

    let err = &c.stderr;
    assert!(err.contains("/lora load FILE [SCALE]"), "the banner does not list /lora: {err}");
    let list = err.lines().skip_while(|l| !l.contains("adapter(s) attached")).take(2).collect::<Vec<_>>().join("\n");
    assert!(list.contains("1 adapter(s) attached") && list.contains(a) && list.contains("scale 1,"), "{err}");
    assert!(list.contains("alpha 8, rank 4, effective scale 2, 5 tensors"), "{list}");
    assert!(err.contains("removed 1 adapter(s)"), "{err}");
    assert!(err.contains(&format!("attached {a} (scale 0.5,")), "{err}");
}

#[test]
fn lora_list_shows_the_adapters_given_at_start_and_off_removes_them() {
    let f = files();
    let a = f.adapter.to_str().unwrap();
    let c = chat(&f.base, &["--lora-scaled", a, "0.5"], None, &["/lora list", "hi", "/lora off", "/lora list", "/lora off"]);
    assert!(c.stderr.contains(&format!("1. {a} (scale 0.5, alpha 8, rank 4, effective scale 1, 5 tensors)")), "{}", c.stderr);
    assert_eq!(c.replies[1], reference(&f.merged_half, &[], &[], "hi"));
    assert!(c.stderr.contains("LoRA: no adapter attached"), "{}", c.stderr);
    assert!(c.stderr.contains("no adapter was attached"), "{}", c.stderr);
}

#[test]
fn bad_lora_commands_print_an_error_and_the_chat_goes_on() {
    let f = files();
    let dir = f.base.parent().unwrap();
    let other = dir.join("other.lora.gguf");
    LoraSpec::for_model(&TinyModel { n_embd: 32, n_ff: 48, ..Default::default() }, &TARGETS, 4, 8.0, 2).write(&other);
    let (a, base, missing) = (f.adapter.to_str().unwrap(), f.base.to_str().unwrap(), dir.join("absent.lora.gguf"));
    let missing = missing.to_str().unwrap();
    let cases = [
        (format!("/lora load {missing}"), format!("/lora load: {missing}: cannot open")),
        (format!("/lora load {base}"), "not an adapter file".into()),
        (format!("/lora load {}", other.display()), "shape mismatch".into()),
        (format!("/lora load {a} lots"), "the scale \"lots\" is not a number".into()),
        (format!("/lora load {a} inf"), "the scale \"inf\" is not a number".into()),
        ("/lora load".into(), "/lora load needs a FILE".into()),
        ("/lora frobnicate".into(), "unknown /lora command \"frobnicate\"".into()),
        ("/lora".into(), "/lora needs a command".into()),
        ("/lora list everything".into(), "/lora list takes no argument".into()),
    ];
    let mut lines = vec!["hi".to_string()];
    lines.extend(cases.iter().map(|(l, _)| l.clone()));
    lines.extend(["/lora list".into(), "tell me more".into()]);
    let lines: Vec<&str> = lines.iter().map(String::as_str).collect();
    let c = chat(&f.base, &[], None, &lines);
    for (line, want) in &cases {
        assert!(c.stderr.contains(want.as_str()), "{line}: expected {want:?} in {}", c.stderr);
    }
    assert_eq!(c.stderr.matches("(nothing changed; the conversation goes on)").count(), cases.len(), "{}", c.stderr);
    assert!(c.stderr.contains("LoRA: no adapter attached"), "{}", c.stderr);
    // The history survived, and the model is still the base: the same answers as a chat
    // without the bad commands.
    let plain = chat(&f.base, &[], None, &["hi", "tell me more"]);
    assert_eq!(c.replies[0], plain.replies[0]);
    assert_eq!(c.replies[lines.len() - 1], plain.replies[1]);
}
