//! `nexus-cli bundle` end to end (docs/BUNDLE.md): pack a tiny backbone with two LoRA adapters
//! and a router, inspect, verify, unpack byte for byte; a flipped byte in any component is
//! named by `verify`; `run -m BUNDLE` writes the backbone's greedy text, and with
//! `--capability` the text of `--lora ADAPTER`; an unverified backbone is refused without
//! `--allow-unverified`; bad input fails naming the file and the component.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};

use nexus_runtime::gguf::{GgufFile, GgufWriter, Value};
use nexus_runtime::model::Model;
use nexus_runtime::router::{Backbone, Dense, Router};
use nexus_tests::lora::LoraSpec;
use nexus_tests::cli::{assert_error, text};
use nexus_tests::TinyModel;

fn cli(args: &[&str]) -> Output {
    nexus_tests::cli::run(env!("CARGO_BIN_EXE_nexus-cli"), args, "")
}

fn ok(o: &Output) -> String {
    assert!(o.status.success(), "stdout:\n{}\nstderr:\n{}", text(&o.stdout), text(&o.stderr));
    text(&o.stdout)
}

fn s(p: &Path) -> &str {
    p.to_str().unwrap()
}

struct Files {
    dir: tempfile::TempDir,
    base: PathBuf,
    code: PathBuf,
    math: PathBuf,
    router: PathBuf,
}

impl Files {
    fn path(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }
}

/// A tiny base, two adapters for it (the `math` one with stray bytes after its data, which
/// a byte-identical unpack must keep) and a small router-like GGUF.
fn files() -> Files {
    let dir = tempfile::tempdir().unwrap();
    let m = TinyModel { n_ctx: 512, ..Default::default() };
    let base = dir.path().join("base.gguf");
    m.write(&base);
    let (code, math) = (dir.path().join("code.lora.gguf"), dir.path().join("math.lora.gguf"));
    let mut w = LoraSpec::for_model(&m, &["blk.0.attn_q.weight", "blk.1.ffn_up.weight", "output.weight"], 4, 8.0, 41).writer();
    w.set("general.license", Value::String("Apache-2.0".into()));
    w.write(&code).unwrap();
    LoraSpec::for_model(&m, &["blk.0.attn_v.weight", "blk.1.ffn_down.weight"], 2, 2.0, 42).write(&math);
    std::fs::OpenOptions::new().append(true).open(&math).unwrap().write_all(b"stray bytes after the data").unwrap();
    let router = dir.path().join("router.gguf");
    router_for(&base, &["code", "math"]).write(&router).unwrap();
    Files { dir, base, code, math, router }
}

/// A linear router (random weights) for the backbone `base` over `capabilities`.
fn router_for(base: &Path, capabilities: &[&str]) -> Router {
    let model = Model::load(base).unwrap();
    let (n, k) = (model.config.n_embd, capabilities.len() + 1);
    let weight = (0..n * k).map(|i| ((i * 37 % 101) as f32 - 50.0) / 500.0).collect();
    Router {
        path: PathBuf::new(),
        backbone: Backbone::of(&model),
        layer: 1,
        capabilities: capabilities.iter().map(|c| c.to_string()).collect(),
        threshold: 0.0,
        feat_mean: vec![0.0; n],
        feat_scale: vec![1.0; n],
        layers: vec![Dense { n_in: n, n_out: k, weight, bias: vec![0.0; k] }],
        heldout_accuracy: None,
    }
}

fn pack(f: &Files, out: &Path) {
    let code = format!("code={}", s(&f.code));
    let math = format!("math={}", s(&f.math));
    ok(&cli(&["bundle", "pack", "--backbone", s(&f.base), "--adapter", &code, "--adapter", &math, "--router", s(&f.router), "-o", s(out)]));
}

#[test]
fn pack_inspect_verify_and_unpack_byte_identical() {
    let f = files();
    let bundle = f.path("nexus.gguf");
    pack(&f, &bundle);
    let inspect = ok(&cli(&["bundle", "inspect", s(&bundle)]));
    for needle in ["backbone", "adapter.code", "adapter.math", "router", "code", "math", "Apache-2.0", "not a distilled student"] {
        assert!(inspect.contains(needle), "{needle:?} missing from:\n{inspect}");
    }
    let json: serde_json::Value = serde_json::from_str(&ok(&cli(&["bundle", "inspect", "--json", s(&bundle)]))).unwrap();
    let comps = json["components"].as_array().unwrap();
    assert_eq!(comps.len(), 4);
    assert_eq!(json["capabilities"][1]["name"], "math");
    let verify = ok(&cli(&["bundle", "verify", s(&bundle)]));
    for id in ["backbone", "adapter.code", "adapter.math", "router", "bundle"] {
        assert!(verify.contains(&format!("ok      {id}")), "{verify}");
    }
    // The packed router runs (its choice is the router's tests' business).
    ok(&run(&bundle, &["--capability", "auto"]));
    let out = f.path("unpacked");
    ok(&cli(&["bundle", "unpack", s(&bundle), "-o", s(&out)]));
    for (original, c) in [(&f.base, 0), (&f.code, 1), (&f.math, 2), (&f.router, 3)] {
        let name = original.file_name().unwrap();
        let back = std::fs::read(out.join(name)).unwrap();
        let want = std::fs::read(original).unwrap();
        assert!(back == want, "{name:?}: {} bytes back, {} packed", back.len(), want.len());
        assert_eq!(comps[c]["size"], want.len() as u64);
    }
    // The unpacked backbone is a plain GGUF: no bundle keys, its own tensors only.
    let plain = GgufFile::open(out.join("base.gguf")).unwrap();
    assert!(plain.get("nexus.bundle.manifest").is_none());
    assert_eq!(plain.tensors().len(), GgufFile::open(&f.base).unwrap().tensors().len());
}

/// Flips one byte of `tensor`'s data in a copy of `bundle`.
fn flipped(bundle: &Path, tensor: &str, out: &Path) {
    let file = GgufFile::open(bundle).unwrap();
    let info = file.tensor_info(tensor).unwrap_or_else(|| panic!("no tensor {tensor}"));
    let at = (file.data_offset + info.offset + info.n_bytes / 2) as usize;
    drop(file);
    let mut bytes = std::fs::read(bundle).unwrap();
    bytes[at] ^= 0x10;
    std::fs::write(out, bytes).unwrap();
}

#[test]
fn a_flipped_byte_is_named_by_its_component() {
    let f = files();
    let bundle = f.path("nexus.gguf");
    pack(&f, &bundle);
    let cases = [
        ("backbone", "blk.1.ffn_gate.weight"),
        ("backbone", "nexus.rest.backbone"),
        ("adapter.code", "adapter.code.blk.1.ffn_up.weight.lora_b"),
        ("adapter.math", "nexus.rest.adapter.math"),
        ("router", "router.fc1.weight"),
        ("router", "nexus.rest.router"),
    ];
    for (component, tensor) in cases {
        let bad = f.path("flipped.gguf");
        flipped(&bundle, tensor, &bad);
        let o = cli(&["bundle", "verify", s(&bad)]);
        assert_error(&o, &["1 component failed verification", component]);
        let out = text(&o.stdout);
        let failed: Vec<&str> = out.lines().filter(|l| l.starts_with("FAILED")).collect();
        assert_eq!(failed.len(), 1, "{tensor}: {out}");
        assert!(failed[0].starts_with(&format!("FAILED  {component}: ")), "{tensor}: {out}");
        assert!(failed[0].contains("flipped.gguf"), "{out}");
    }
    // A corrupt adapter is refused when it is applied, naming it.
    let bad = f.path("flipped.gguf");
    flipped(&bundle, "adapter.code.blk.0.attn_q.weight.lora_a", &bad);
    assert_error(&run(&bad, &["--capability", "code"]), &["flipped.gguf", "adapter.code", "corrupt"]);
}

fn run(model: &Path, extra: &[&str]) -> Output {
    let mut args = vec!["run", "-m", s(model), "-p", "hello world", "-n", "16", "--temp", "0", "-t", "2"];
    args.extend_from_slice(extra);
    cli(&args)
}

/// Without a router (the router's own choice is tested with the router), the bundle runs
/// the backbone alone, or the adapter `--capability` names.
#[test]
fn run_from_the_bundle_writes_the_backbones_text() {
    let f = files();
    let bundle = f.path("nexus.gguf");
    let (code, math) = (format!("code={}", s(&f.code)), format!("math={}", s(&f.math)));
    ok(&cli(&["bundle", "pack", "--backbone", s(&f.base), "--adapter", &code, "--adapter", &math, "-o", s(&bundle)]));
    let plain = ok(&run(&f.base, &[]));
    let packed = run(&bundle, &[]);
    assert_eq!(ok(&packed), plain);
    assert!(text(&packed.stderr).contains("capabilities code, math"), "{}", text(&packed.stderr));
    let with_code = run(&bundle, &["--capability", "code"]);
    let with_lora = ok(&run(&f.base, &["--lora", s(&f.code)]));
    assert_eq!(ok(&with_code), with_lora);
    assert_ne!(with_lora, plain, "the adapter changes nothing, so the test could not fail");
    assert!(text(&with_code.stderr).contains("capability code"), "{}", text(&with_code.stderr));
    assert_eq!(ok(&run(&bundle, &["--capability", "math"])), ok(&run(&f.base, &["--lora", s(&f.math)])));
    // No routing is faked: without a router `auto` says so, and an unknown name lists the real ones.
    assert_error(&run(&bundle, &["--capability", "auto"]), &["nexus.gguf", "has no router", "code"]);
    assert_error(&run(&bundle, &["--capability", "poetry"]), &["nexus.gguf", "capability \"poetry\"", "code, math"]);
    assert_error(&run(&f.base, &["--capability", "code"]), &["base.gguf", "is not a bundle"]);
}

/// `chat -m BUNDLE --capability NAME` answers as `chat -m BASE --lora ADAPTER` does.
#[test]
fn chat_from_the_bundle_applies_the_capability() {
    let f = files();
    let bundle = f.path("nexus.gguf");
    pack(&f, &bundle);
    let chat = |model: &Path, extra: &[&str]| {
        let mut args = vec!["chat", "-m", s(model), "--chat-template", "chatml", "-n", "12", "--temp", "0", "-t", "2"];
        args.extend_from_slice(extra);
        let mut child = Command::new(env!("CARGO_BIN_EXE_nexus-cli"))
            .args(&args)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        child.stdin.take().unwrap().write_all(b"hello there\n").unwrap();
        ok(&child.wait_with_output().unwrap())
    };
    let with_code = chat(&bundle, &["--capability", "code"]);
    assert_eq!(with_code, chat(&f.base, &["--lora", s(&f.code)]));
    assert_ne!(with_code, chat(&f.base, &[]));
}

#[test]
fn an_unverified_backbone_needs_allow_unverified() {
    let f = files();
    let m = TinyModel { n_ctx: 512, ..Default::default() };
    let student = f.path("student.gguf");
    let mut w = m.writer(&[]);
    let report = r#"{"checks":[
        {"capability":"chat","metric":"top1","op":">=","limit":0.6,"measured":{"value":0.7,"lo":0.6,"hi":0.8},"passed":true},
        {"capability":"code","metric":"kl","op":"<=","limit":1.2,"measured":{"value":4.4,"lo":4.0,"hi":4.8},"passed":false}],
        "verified":false}"#;
    w.set("nexus.distill.verified", Value::Bool(false));
    w.set("nexus.distill.verify_report", Value::String(report.into()));
    w.write(&student).unwrap();
    let bundle = f.path("student.bundle.gguf");
    ok(&cli(&["bundle", "pack", "--backbone", s(&student), "-o", s(&bundle)]));
    let inspect = ok(&cli(&["bundle", "inspect", s(&bundle)]));
    assert!(inspect.contains("NOT verified") && inspect.contains("capability code"), "{inspect}");
    assert_error(&run(&bundle, &[]), &["student.bundle.gguf", "NOT verified", "capability code", "--allow-unverified"]);
    let allowed = run(&bundle, &["--allow-unverified"]);
    let err = text(&allowed.stderr);
    assert_eq!(ok(&allowed), ok(&run(&student, &[])));
    assert!(err.lines().any(|l| l.starts_with("warning: ") && l.contains("capability code") && !l.contains("capability chat")), "{err}");
    // A report whose checks all pass loads with no flag.
    let good = f.path("good.gguf");
    let mut w = m.writer(&[]);
    w.set("nexus.distill.verified", Value::Bool(true));
    w.set("nexus.distill.verify_report", Value::String(report.replace("\"passed\":false", "\"passed\":true")));
    w.write(&good).unwrap();
    let good_bundle = f.path("good.bundle.gguf");
    ok(&cli(&["bundle", "pack", "--backbone", s(&good), "-o", s(&good_bundle)]));
    ok(&run(&good_bundle, &[]));
}

/// The committed student carries a verify report that failed: packed, it is refused.
#[test]
fn the_committed_student_packs_and_is_refused_as_unverified() {
    let student = Path::new(env!("CARGO_MANIFEST_DIR")).join("../models/smollm2-student.q8_0.gguf");
    if !student.exists() {
        println!("skipped: {} is absent", student.display());
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let bundle = dir.path().join("student.nexus.gguf");
    ok(&cli(&["bundle", "pack", "--backbone", s(&student), "-o", s(&bundle)]));
    assert_error(&run(&bundle, &[]), &["NOT verified", "capability", "--allow-unverified"]);
    let out = dir.path().join("out");
    ok(&cli(&["bundle", "unpack", s(&bundle), "-o", s(&out)]));
    assert!(std::fs::read(out.join("smollm2-student.q8_0.gguf")).unwrap() == std::fs::read(&student).unwrap());
}

/// The real voice: models/en_US-joe-medium.gguf, or converted from the fetched ONNX.
fn real_voice(dir: &Path) -> Option<PathBuf> {
    let models = Path::new(env!("CARGO_MANIFEST_DIR")).join("../models");
    let gguf = models.join("en_US-joe-medium.gguf");
    if gguf.exists() {
        return Some(gguf);
    }
    let onnx = models.join("en_US-joe-medium.onnx");
    if !onnx.exists() {
        // No voice GGUF is small enough to commit (tests/fixtures/voice holds onnxruntime's
        // intermediates, not a voice); models/fetch.sh fetches the ONNX.
        println!("skipped: neither {} nor {} is there (models/fetch.sh)", gguf.display(), onnx.display());
        return None;
    }
    let out = dir.join("en_US-joe-medium.gguf");
    ok(&cli(&["convert-voice", s(&onnx), "-o", s(&out)]));
    Some(out)
}

#[test]
fn a_voice_packs_unpacks_and_speaks_from_the_bundle() {
    let f = files();
    let Some(voice) = real_voice(f.dir.path()) else { return };
    let bundle = f.path("voice.nexus.gguf");
    ok(&cli(&["bundle", "pack", "--backbone", s(&f.base), "--voice", s(&voice), "-o", s(&bundle)]));
    let inspect = ok(&cli(&["bundle", "inspect", s(&bundle)]));
    assert!(inspect.contains("GPL-3.0-or-later") && inspect.contains("espeak-ng"), "{inspect}");
    ok(&cli(&["bundle", "verify", s(&bundle)]));
    let out = f.path("out");
    ok(&cli(&["bundle", "unpack", s(&bundle), "-o", s(&out)]));
    assert!(std::fs::read(out.join("en_US-joe-medium.gguf")).unwrap() == std::fs::read(&voice).unwrap());
    // chat --speak without --voice takes the bundled one.
    let wav = f.path("answer.wav");
    let mut child = Command::new(env!("CARGO_BIN_EXE_nexus-cli"))
        .args(["chat", "-m", s(&bundle), "--chat-template", "chatml", "-n", "6", "--temp", "0", "-t", "2", "--speak", "--speak-out", s(&wav)])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    child.stdin.take().unwrap().write_all(b"hello\n").unwrap();
    let o = child.wait_with_output().unwrap();
    if cfg!(feature = "speech") {
        ok(&o);
        assert!(wav.exists());
    } else {
        // The bundled voice loaded (no "no voice given"); only the phonemizer is missing.
        assert_error(&o, &["espeak"]);
    }
}

#[test]
fn bad_input_is_named() {
    let f = files();
    // An adapter for another base: shapes differ.
    let other = TinyModel { n_embd: 32, n_ff: 96, ..Default::default() };
    let foreign = f.path("foreign.lora.gguf");
    LoraSpec::for_model(&other, &["blk.0.attn_q.weight"], 2, 2.0, 5).write(&foreign);
    let out = f.path("out.gguf");
    let pack_with = |adapter: &str| cli(&["bundle", "pack", "--backbone", s(&f.base), "--adapter", adapter, "-o", s(&out)]);
    assert_error(&pack_with(&format!("x={}", s(&foreign))), &["adapter.x", "foreign.lora.gguf", "shape mismatch"]);
    assert_error(&pack_with(&format!("x={}", s(&f.path("absent.gguf")))), &["absent.gguf"]);
    assert_error(&pack_with(s(&f.code)), &["NAME=FILE"]);
    assert_error(&pack_with(&format!("a/b={}", s(&f.code))), &["adapter.a/b", "capability name"]);
    // A model given as the voice.
    let o = cli(&["bundle", "pack", "--backbone", s(&f.base), "--voice", s(&f.code), "-o", s(&out)]);
    assert_error(&o, &["voice", "code.lora.gguf"]);
    // Routers: not a router, one trained for another backbone, one picking an unpacked capability.
    let code = format!("code={}", s(&f.code));
    let with_router = |router: &Path| cli(&["bundle", "pack", "--backbone", s(&f.base), "--adapter", &code, "--router", s(router), "-o", s(&out)]);
    assert_error(&with_router(&f.code), &["router", "code.lora.gguf", "not a router"]);
    let other_base = f.path("other.gguf");
    other.write(&other_base);
    let foreign_router = f.path("foreign.router.gguf");
    router_for(&other_base, &["code"]).write(&foreign_router).unwrap();
    assert_error(&with_router(&foreign_router), &["router", "foreign.router.gguf", "another backbone"]);
    assert_error(&with_router(&f.router), &["router", "router.gguf", "\"math\"", "no adapter"]);
    assert_error(&pack_with(&format!("auto={}", s(&f.code))), &["adapter.auto", "capability name"]);
    // A base model given as an adapter.
    assert_error(&pack_with(&format!("x={}", s(&f.base))), &["adapter.x", "base.gguf", "not an adapter"]);
    assert!(!out.exists(), "a failed pack left {}", out.display());

    let bundle = f.path("nexus.gguf");
    pack(&f, &bundle);
    // A bundle of a bundle is refused.
    assert_error(&cli(&["bundle", "pack", "--backbone", s(&bundle), "-o", s(&out)]), &["nexus.gguf", "backbone", "bundle already"]);
    // A truncated bundle: the GGUF reader names the file and what is past the end.
    let bytes = std::fs::read(&bundle).unwrap();
    let cut = f.path("truncated.gguf");
    std::fs::write(&cut, &bytes[..bytes.len() * 2 / 3]).unwrap();
    for o in [cli(&["bundle", "verify", s(&cut)]), cli(&["bundle", "unpack", s(&cut), "-o", s(&f.path("u"))]), run(&cut, &[])] {
        assert_error(&o, &["truncated.gguf", "past the end"]);
    }
    // A component missing: the bundle rewritten without the `math` adapter's rest tensor.
    let missing = f.path("missing.gguf");
    let file = GgufFile::open(&bundle).unwrap();
    let mut w = GgufWriter::new();
    for (k, v) in file.metadata() {
        w.set(k.clone(), v.clone());
    }
    for t in file.tensors().iter().filter(|t| t.name != "nexus.rest.adapter.math") {
        w.add_tensor(t.name.clone(), &t.dims, t.ty, file.tensor_data(t)).unwrap();
    }
    w.write(&missing).unwrap();
    assert_error(&cli(&["bundle", "verify", s(&missing)]), &["missing.gguf", "adapter.math", "missing"]);
    assert_error(&run(&missing, &["--capability", "math"]), &["missing.gguf", "adapter.math", "missing"]);
    // Not a bundle at all.
    assert_error(&cli(&["bundle", "inspect", s(&f.base)]), &["base.gguf", "not a Nexus bundle"]);
}
