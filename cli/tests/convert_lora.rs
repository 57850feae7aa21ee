//! `nexus-cli convert-lora`, end to end: a PEFT folder converted by the binary, then `run
//! --lora` with it writes the same greedy text as the base with PEFT's delta merged by hand
//! (`W + (alpha/r)·B·A`, q/k rows permuted as llama.cpp permutes the base); `--outtype q8_0`
//! writes llama.cpp's types; bad input fails with the file named and nothing written.

use std::path::Path;
use std::process::{Command, Output, Stdio};

use nexus_kernels::GgmlType;
use nexus_runtime::gguf::GgufFile;
use nexus_tests::lora::write_merged;
use nexus_tests::peft::PeftSpec;
use nexus_tests::TinyModel;

const TARGETS: [&str; 7] = [
    "blk.0.attn_q.weight",
    "blk.1.attn_k.weight",
    "blk.0.attn_v.weight",
    "blk.1.attn_output.weight",
    "blk.0.ffn_gate.weight",
    "blk.1.ffn_up.weight",
    "blk.0.ffn_down.weight",
];

fn cli(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_nexus-cli")).args(args).stdin(Stdio::null()).output().unwrap()
}

fn text(b: &[u8]) -> String {
    String::from_utf8_lossy(b).into_owned()
}

fn s(p: &Path) -> &str {
    p.to_str().unwrap()
}

fn run(model: &Path, extra: &[&str]) -> String {
    let mut args = vec!["run", "-m", s(model), "-p", "hello world", "-n", "16", "--temp", "0", "-t", "2"];
    args.extend_from_slice(extra);
    let o = cli(&args);
    assert!(o.status.success(), "{}", text(&o.stderr));
    text(&o.stdout)
}

#[test]
fn converted_adapter_runs_like_the_hand_merged_model() {
    let dir = tempfile::tempdir().unwrap();
    let m = TinyModel { n_ctx: 512, ..Default::default() };
    let base = dir.path().join("base.gguf");
    m.write(&base);
    let spec = PeftSpec::for_model(&m, &TARGETS, 4, 8.0, 41);
    let peft = dir.path().join("my-adapter");
    let weights = spec.write(&peft);
    let adapter = dir.path().join("my.lora.gguf");
    let o = cli(&["convert-lora", s(&peft), "--base", s(&base), "-o", s(&adapter)]);
    assert!(o.status.success(), "{}", text(&o.stderr));
    assert!(text(&o.stdout).contains("7 llama LoRA pairs, rank 4, alpha 8"), "{}", text(&o.stdout));

    let merged = dir.path().join("merged.gguf");
    write_merged(&base, &weights.deltas(&spec, Some((m.n_head, m.n_head_kv))), &merged);
    let with_adapter = run(&base, &["--lora", s(&adapter)]);
    assert_eq!(with_adapter, run(&merged, &[]), "run --lora differs from the hand-merged model");
    assert_ne!(with_adapter, run(&base, &[]), "the adapter does not change the text");

    // q8_0: lora_a in Q8_0, lora_b (rank-4 rows) in F16, as llama.cpp writes them.
    let q8 = dir.path().join("my.q8_0.gguf");
    let o = cli(&["convert-lora", s(&peft), "-m", s(&base), "-o", s(&q8), "--outtype", "q8_0"]);
    assert!(o.status.success(), "{}", text(&o.stderr));
    let f = GgufFile::open(&q8).unwrap();
    for t in f.tensors() {
        assert_eq!(t.ty, if t.name.ends_with(".lora_a") { GgmlType::Q8_0 } else { GgmlType::F16 }, "{}", t.name);
    }
}

#[test]
fn bad_input_fails_naming_the_file_and_writes_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let m = TinyModel::default();
    let base = dir.path().join("base.gguf");
    m.write(&base);
    let peft = dir.path().join("peft");
    let spec = PeftSpec::for_model(&m, &TARGETS, 4, 8.0, 1);
    let mut config = spec.config();
    config["use_dora"] = serde_json::json!(true);
    spec.write_with_config(&peft, &config);
    let good = dir.path().join("good");
    spec.write(&good);
    let out = dir.path().join("out.gguf");
    for (args, expect) in [
        (vec!["convert-lora", s(&peft), "--base", s(&base), "-o", s(&out)], "DoRA"),
        (vec!["convert-lora", s(&good), "--base", "/nonexistent/base.gguf", "-o", s(&out)], "/nonexistent/base.gguf"),
        (vec!["convert-lora", "/nonexistent/peft", "--base", s(&base), "-o", s(&out)], "/nonexistent/peft"),
    ] {
        let o = cli(&args);
        assert!(!o.status.success(), "{args:?} succeeded");
        let err = text(&o.stderr);
        assert!(err.starts_with("error: converting the PEFT adapter"), "{err}");
        assert!(err.contains(expect), "{args:?}: {err}");
        assert!(!err.contains("panicked"), "{err}");
        assert!(!out.exists());
    }
    // A bad --outtype is clap's error.
    let o = cli(&["convert-lora", s(&peft), "--base", s(&base), "-o", s(&out), "--outtype", "q4_0"]);
    assert!(!o.status.success() && text(&o.stderr).contains("q4_0"));
}
