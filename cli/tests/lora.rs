//! `--lora FILE` and `--lora-scaled FILE SCALE` on `run` and `chat`, end to end: greedy text
//! with two adapters equals the merged model's, and bad adapters fail cleanly naming the file.

use std::collections::HashMap;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};

use nexus_kernels::GgmlType;
use nexus_runtime::gguf::{GgufWriter, Value};
use nexus_tests::lora::{add_merged_deltas, write_merged, LoraSpec};
use nexus_tests::TinyModel;

const TARGETS: [&str; 6] = [
    "blk.0.attn_q.weight",
    "blk.1.attn_v.weight",
    "blk.0.attn_output.weight",
    "blk.1.ffn_up.weight",
    "blk.0.ffn_down.weight",
    "output.weight",
];

fn cli(args: &[&str], stdin: &str) -> Output {
    let mut child = Command::new(env!("CARGO_BIN_EXE_nexus-cli"))
        .args(args)
        // On a GPU, prompts through the decode graph too: the batched path rounds x and the
        // weights to f16, so adapted and merged models would differ by ~1e-3 and a near-tie of
        // these tiny random models could flip a token. Ignored on the CPU.
        .env("NEXUS_CUDA_PREFILL", "0")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut input = child.stdin.take().unwrap();
    input.write_all(stdin.as_bytes()).unwrap();
    drop(input);
    child.wait_with_output().unwrap()
}

fn text(b: &[u8]) -> String {
    String::from_utf8_lossy(b).into_owned()
}

struct Files {
    _dir: tempfile::TempDir,
    base: PathBuf,
    first: PathBuf,
    second: PathBuf,
    merged: PathBuf,
}

/// A tiny base, two adapters, and the base merged with the first at scale 1 and the second
/// at scale 0.5.
fn files() -> Files {
    files_of(GgmlType::F32)
}

/// The base, two adapters whose pairs are stored as `ty`, and the merged model.
fn files_of(ty: GgmlType) -> Files {
    let dir = tempfile::tempdir().unwrap();
    let m = TinyModel { n_ctx: 512, ..Default::default() };
    let base = dir.path().join("base.gguf");
    m.write(&base);
    let (first, second) = (dir.path().join("first.lora.gguf"), dir.path().join("second.lora.gguf"));
    LoraSpec { ty, ..LoraSpec::for_model(&m, &TARGETS[..4], 4, 8.0, 31) }.write(&first);
    LoraSpec { ty, ..LoraSpec::for_model(&m, &TARGETS[2..], 4, 4.0, 32) }.write(&second);
    let mut deltas = HashMap::new();
    add_merged_deltas(&first, 1.0, &mut deltas);
    add_merged_deltas(&second, 0.5, &mut deltas);
    let merged = dir.path().join("merged.gguf");
    write_merged(&base, &deltas, &merged);
    Files { _dir: dir, base, first, second, merged }
}

fn run(model: &Path, extra: &[&str]) -> Output {
    let mut args = vec!["run", "-m", model.to_str().unwrap(), "-p", "hello world", "-n", "16", "--temp", "0", "-t", "2"];
    args.extend_from_slice(extra);
    cli(&args, "")
}

#[test]
fn run_with_two_adapters_writes_the_merged_models_text() {
    let f = files();
    let (first, second) = (f.first.to_str().unwrap(), f.second.to_str().unwrap());
    let adapted = run(&f.base, &["--lora", first, "--lora-scaled", second, "0.5"]);
    assert!(adapted.status.success(), "{}", text(&adapted.stderr));
    assert!(text(&adapted.stderr).contains("LoRA: "), "{}", text(&adapted.stderr));
    let merged = run(&f.merged, &[]);
    assert!(merged.status.success(), "{}", text(&merged.stderr));
    assert_eq!(text(&adapted.stdout), text(&merged.stdout));
    // Without the adapters, or with the wrong scale, the text is another.
    let plain = run(&f.base, &[]);
    assert_ne!(text(&plain.stdout), text(&merged.stdout), "the adapters do not change the greedy text");
    let unscaled = run(&f.base, &["--lora", first, "--lora", second]);
    assert_ne!(text(&unscaled.stdout), text(&merged.stdout), "--lora-scaled's scale makes no difference");
}

#[test]
fn chat_takes_adapters_too() {
    let f = files();
    let m = f.base.to_str().unwrap();
    let o = cli(&["chat", "-m", m, "--lora", f.first.to_str().unwrap(), "-n", "8", "--temp", "0", "--chat-template", "chatml"], "hi\n");
    assert!(o.status.success(), "{}", text(&o.stderr));
    assert!(text(&o.stderr).contains("first.lora.gguf"), "{}", text(&o.stderr));
}

fn assert_fails_naming(o: &Output, file: &str, want: &str) {
    let err = text(&o.stderr);
    assert!(!o.status.success(), "succeeded: {err}");
    assert!(!err.contains("panicked"), "{err}");
    assert!(err.contains(file), "the error does not name {file}: {err}");
    assert!(err.contains(want), "expected {want:?} in: {err}");
}

#[test]
fn bad_adapters_fail_cleanly_naming_the_file() {
    let f = files();
    let dir = f.base.parent().unwrap();
    let write = |name: &str, w: GgufWriter<'static>| {
        let p = dir.join(name);
        w.write(&p).unwrap();
        p
    };
    let spec = LoraSpec::for_model(&TinyModel::default(), &TARGETS, 4, 8.0, 1);
    let mut missing = GgufWriter::new();
    let mut wrong_arch = spec.writer();
    wrong_arch.set("general.architecture", Value::String("qwen2".into()));
    for (k, v) in [("general.architecture", "llama"), ("general.type", "adapter"), ("adapter.type", "lora")] {
        missing.set(k, Value::String(v.into()));
    }
    missing.add_tensor("blk.0.attn_q.weight.lora_a", &[64, 4], nexus_kernels::GgmlType::F32, vec![0u8; 64 * 4 * 4]).unwrap();
    let other_base = LoraSpec::for_model(&TinyModel { n_embd: 32, n_ff: 48, ..Default::default() }, &TARGETS, 4, 8.0, 2);
    let cases = [
        (f.base.clone(), "not an adapter file"),
        (write("missing.lora.gguf", missing), "has no partner"),
        (write("arch.lora.gguf", wrong_arch), "architecture \"qwen2\""),
        (write("other.lora.gguf", other_base.writer()), "shape mismatch"),
        (dir.join("absent.lora.gguf"), "cannot open"),
    ];
    for (path, want) in cases {
        let p = path.to_str().unwrap();
        assert_fails_naming(&run(&f.base, &["--lora", p]), p, want);
        assert_fails_naming(&run(&f.base, &["--lora-scaled", p, "0.5"]), p, want);
    }
    let first = f.first.to_str().unwrap();
    assert_fails_naming(&run(&f.base, &["--lora-scaled", first, "lots"]), first, "not a number");
}

/// `--lora` on the GPU (`--device cuda`, or `-ngl` with every layer): the adapters go up with
/// the model, and the text is the merged model's there. Without a usable GPU (or CUDA in this
/// binary) the run fails for that reason, never for the adapter: skipped, unless
/// NEXUS_REQUIRE_CUDA is set.
#[test]
fn adapters_run_on_cuda() {
    // F16 adapters: what the GPU keeps of them is then exactly what the merge adds.
    let f = files_of(GgmlType::F16);
    let (first, second) = (f.first.to_str().unwrap(), f.second.to_str().unwrap());
    let adapted = run(&f.base, &["--lora", first, "--lora-scaled", second, "0.5", "--device", "cuda"]);
    let err = text(&adapted.stderr);
    if !adapted.status.success() {
        assert!(err.contains("CUDA") && !err.contains("LoRA") && !err.contains("panicked"), "{err}");
        assert!(std::env::var_os("NEXUS_REQUIRE_CUDA").is_none(), "NEXUS_REQUIRE_CUDA is set: {err}");
        eprintln!("skipped: no usable GPU here ({})", err.trim());
        return;
    }
    let merged = run(&f.merged, &["--device", "cuda"]);
    assert!(merged.status.success(), "{}", text(&merged.stderr));
    assert_eq!(text(&adapted.stdout), text(&merged.stdout));
    let plain = run(&f.base, &["--device", "cuda"]);
    assert_ne!(text(&plain.stdout), text(&merged.stdout), "the adapters do not change the greedy text");
    let ngl = run(&f.base, &["--lora", first, "--lora-scaled", second, "0.5", "-ngl", "99"]);
    assert_eq!(text(&ngl.stdout), text(&merged.stdout), "{}", text(&ngl.stderr));
}

/// `bench --lora` times the model with the adapter attached (it says so and still reports
/// pp and tg), takes `--device cuda` (without a GPU it fails for that reason, not for the
/// adapter), and does not combine with a draft model.
#[test]
fn bench_takes_adapters() {
    let f = files();
    let (base, first) = (f.base.to_str().unwrap(), f.first.to_str().unwrap());
    let bench = |extra: &[&str]| {
        let mut args = vec!["bench", "-m", base, "-p", "8", "-n", "8", "-r", "1", "-t", "2", "-o", "json"];
        args.extend_from_slice(extra);
        cli(&args, "")
    };
    let o = bench(&["--lora", first]);
    assert!(o.status.success(), "{}", text(&o.stderr));
    assert!(text(&o.stderr).contains("LoRA: "), "{}", text(&o.stderr));
    let rows: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    let tests: Vec<&str> = rows.as_array().unwrap().iter().map(|r| r["test"].as_str().unwrap()).collect();
    assert_eq!(tests, ["pp8", "tg8"]);
    let o = bench(&["--lora", first, "--device", "cuda"]);
    let err = text(&o.stderr);
    assert!(o.status.success() || (!err.contains("LoRA") && err.contains("CUDA")), "{err}");
    let o = bench(&["--lora", first, "--model-draft", base]);
    assert!(!o.status.success());
    assert!(text(&o.stderr).contains("--model-draft and --lora"), "{}", text(&o.stderr));
}
