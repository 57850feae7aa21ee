//! `nexus-cli export-lora`, end to end: the merged F32 model equals the f64-merged reference
//! (tests/src/lora.rs) within f32 rounding and runs like the base with `--lora`; two adapters
//! at scales 1 and 0.5; a Q8_0 base stays Q8_0; metadata copied; bad input refused naming the
//! file with nothing written; a cancel or Ctrl-C mid-write leaves no file.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use nexus_kernels::{dequantize_row, quantize_row, GgmlType};
use nexus_runtime::adapter::LoraAdapter;
use nexus_runtime::gguf::{GgufFile, Value};
use nexus_runtime::model::{Logits, Model};
use nexus_tests::lora::{add_merged_deltas, write_merged, LoraSpec, TARGETS, TOKENS};
use nexus_tests::TinyModel;

fn cli(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_nexus-cli")).args(args).stdin(Stdio::null()).output().unwrap()
}

fn text(b: &[u8]) -> String {
    String::from_utf8_lossy(b).into_owned()
}

fn s(p: &Path) -> &str {
    p.to_str().unwrap()
}

/// `export-lora --base BASE <extra> -o OUT`, which must succeed.
fn export(base: &Path, extra: &[&str], out: &Path) {
    let mut args = vec!["export-lora", "--base", s(base), "-o", s(out), "-t", "2"];
    args.extend_from_slice(extra);
    let o = cli(&args);
    assert!(o.status.success(), "{}", text(&o.stderr));
    assert!(text(&o.stdout).contains("merged"), "{}", text(&o.stdout));
}

fn logits(model: &Model) -> Vec<f32> {
    let mut cache = model.new_cache(TOKENS.len());
    model.forward(&TOKENS, &mut cache, Logits::All).unwrap()
}

/// max |a − b| relative to the largest |b|.
fn rel_diff(a: &[f32], b: &[f32]) -> f32 {
    let d = a.iter().zip(b).map(|(x, y)| (x - y).abs()).fold(0.0, f32::max);
    d / b.iter().map(|x| x.abs()).fold(0.0, f32::max)
}

fn f32s(bytes: &[u8]) -> Vec<f32> {
    bytes.chunks_exact(4).map(|c| f32::from_le_bytes(c.try_into().unwrap())).collect()
}

/// Our merged F32 model against `write_merged`'s: same tensors in the same order; merged ones
/// within one rounding of f32 (both round the f64 sum once), the rest byte for byte. Returns
/// the largest change a merge made to any weight, so callers can check the adapters mattered.
fn assert_matches_reference(ours: &Path, reference: &Path, base: &Path, merged: &[&str]) -> f32 {
    let (a, b) = (GgufFile::open(ours).unwrap(), GgufFile::open(reference).unwrap());
    let base = GgufFile::open(base).unwrap();
    assert_eq!(a.metadata(), b.metadata());
    assert_eq!(a.tensors().len(), b.tensors().len());
    let mut changed = 0f32;
    for (x, y) in a.tensors().iter().zip(b.tensors()) {
        assert_eq!((&x.name, &x.dims, x.ty), (&y.name, &y.dims, y.ty));
        let (dx, dy) = (a.tensor_data(x), b.tensor_data(y));
        if !merged.contains(&x.name.as_str()) {
            assert!(dx == dy, "{}: an untouched tensor changed", x.name);
            continue;
        }
        for (i, (p, q)) in f32s(dx).iter().zip(f32s(dy)).enumerate() {
            assert!((p - q).abs() <= f32::EPSILON * q.abs(), "{} [{i}]: {p} vs the reference {q}", x.name);
        }
        let orig = base.tensor_data(base.tensor_info(&x.name).unwrap());
        changed = changed.max(rel_diff(&f32s(dx), &f32s(orig)));
    }
    changed
}

fn tiny_base(dir: &Path, m: &TinyModel) -> PathBuf {
    let base = dir.join("base.gguf");
    let mut w = m.writer(&[]);
    // Keys a merge must carry over, beyond the tokenizer's.
    w.set("general.name", Value::String("Tiny Base".into()));
    w.set("general.license", Value::String("apache-2.0".into()));
    w.set("tokenizer.chat_template", Value::String("{{ messages[0]['content'] }}".into()));
    w.write(&base).unwrap();
    base
}

#[test]
fn f32_merge_equals_the_f64_reference_and_runs_like_the_base_with_lora() {
    let dir = tempfile::tempdir().unwrap();
    let m = TinyModel { n_ctx: 512, ..Default::default() };
    let base = tiny_base(dir.path(), &m);
    let adapter = dir.path().join("a.lora.gguf");
    LoraSpec::for_model(&m, &TARGETS, 4, 8.0, 41).write(&adapter);
    let out = dir.path().join("merged.gguf");
    export(&base, &["--lora", s(&adapter)], &out);

    let mut deltas = HashMap::new();
    add_merged_deltas(&adapter, 1.0, &mut deltas);
    let reference = dir.path().join("reference.gguf");
    write_merged(&base, &deltas, &reference);
    let changed = assert_matches_reference(&out, &reference, &base, &TARGETS);
    assert!(changed > 1e-3, "the adapter barely changes the weights ({changed})");

    // The merged model's logits equal the base's with the adapter applied unmerged.
    let mut unmerged = Model::load(&base).unwrap();
    let loaded = LoraAdapter::load(&adapter).unwrap();
    unmerged.apply_lora(&[(&loaded, 1.0)]).unwrap();
    let (merged_logits, unmerged_logits) = (logits(&Model::load(&out).unwrap()), logits(&unmerged));
    let d = rel_diff(&merged_logits, &unmerged_logits);
    eprintln!("merged vs unmerged: max |Δlogit| {d:.2e} relative");
    assert!(d < 1e-5, "{d}");
    assert!(rel_diff(&logits(&Model::load(&base).unwrap()), &unmerged_logits) > 1e-2, "the adapter does not matter");

    // And `run` writes the same greedy text from both.
    let run = |model: &Path, extra: &[&str]| {
        let mut args = vec!["run", "-m", s(model), "-p", "hello world", "-n", "16", "--temp", "0", "-t", "2"];
        args.extend_from_slice(extra);
        let o = cli(&args);
        assert!(o.status.success(), "{}", text(&o.stderr));
        text(&o.stdout)
    };
    assert_eq!(run(&out, &[]), run(&base, &["--lora", s(&adapter)]));
}

#[test]
fn two_adapters_at_scales_1_and_half_add_up_like_the_reference() {
    let dir = tempfile::tempdir().unwrap();
    let m = TinyModel::default();
    let base = tiny_base(dir.path(), &m);
    // Overlapping targets, different ranks and alphas (alpha 0: no alpha/rank factor).
    let (first, second) = (dir.path().join("first.lora.gguf"), dir.path().join("second.lora.gguf"));
    LoraSpec::for_model(&m, &TARGETS[..5], 4, 8.0, 51).write(&first);
    LoraSpec::for_model(&m, &TARGETS[3..], 2, 0.0, 52).write(&second);
    let out = dir.path().join("merged.gguf");
    export(&base, &["--lora", s(&first), "--lora-scaled", s(&second), "0.5"], &out);

    let mut deltas = HashMap::new();
    add_merged_deltas(&first, 1.0, &mut deltas);
    add_merged_deltas(&second, 0.5, &mut deltas);
    let reference = dir.path().join("reference.gguf");
    write_merged(&base, &deltas, &reference);
    assert!(assert_matches_reference(&out, &reference, &base, &TARGETS) > 1e-3);

    // With scale 1 for the second adapter the weights are another model's.
    let unscaled = dir.path().join("unscaled.gguf");
    export(&base, &["--lora", s(&first), "--lora", s(&second)], &unscaled);
    let (a, b) = (GgufFile::open(&unscaled).unwrap(), GgufFile::open(&reference).unwrap());
    let name = TARGETS[5];
    let (x, y) = (a.tensor_info(name).unwrap(), b.tensor_info(name).unwrap());
    assert!(rel_diff(&f32s(a.tensor_data(x)), &f32s(b.tensor_data(y))) > 1e-3, "--lora-scaled's scale made no difference");
}

#[test]
fn a_q8_0_base_stays_q8_0_and_untouched_tensors_keep_their_bytes() {
    let dir = tempfile::tempdir().unwrap();
    let m = TinyModel { ty: GgmlType::Q8_0, ..Default::default() };
    let base = tiny_base(dir.path(), &m);
    let adapter = dir.path().join("a.lora.gguf");
    LoraSpec::for_model(&m, &TARGETS, 4, 8.0, 61).write(&adapter);
    let out = dir.path().join("merged.gguf");
    export(&base, &["--lora-scaled", s(&adapter), "0.75"], &out);

    let mut deltas = HashMap::new();
    add_merged_deltas(&adapter, 0.75, &mut deltas);
    let (ours, orig) = (GgufFile::open(&out).unwrap(), GgufFile::open(&base).unwrap());
    assert_eq!(ours.metadata(), orig.metadata());
    assert_eq!(ours.tensors().len(), orig.tensors().len());
    for (t, b) in ours.tensors().iter().zip(orig.tensors()) {
        assert_eq!((&t.name, &t.dims, t.ty), (&b.name, &b.dims, b.ty));
        let Some(delta) = deltas.get(&t.name) else {
            assert!(ours.tensor_data(t) == orig.tensor_data(b), "{}: an untouched tensor changed", t.name);
            continue;
        };
        assert_eq!(t.ty, GgmlType::Q8_0, "{}", t.name);
        // Expected: the base dequantized, the f64 delta added, rounded to f32 once, and
        // quantized again with ggml's reference Q8_0 quantizer.
        let n = t.n_elements() as usize;
        let mut w = vec![0f32; n];
        dequantize_row(b.ty, orig.tensor_data(b), &mut w).unwrap();
        let merged: Vec<f32> = w.iter().zip(delta).map(|(&v, &d)| (v as f64 + d) as f32).collect();
        let mut want = vec![0u8; b.n_bytes as usize];
        quantize_row(GgmlType::Q8_0, &merged, &mut want).unwrap();
        assert!(ours.tensor_data(t) == want.as_slice(), "{}: not the re-quantized merged weights", t.name);
        assert!(ours.tensor_data(t) != orig.tensor_data(b), "{}: the merge changed nothing", t.name);
    }
    // It still runs, close to the base with the adapter applied unmerged.
    let mut unmerged = Model::load(&base).unwrap();
    let loaded = LoraAdapter::load(&adapter).unwrap();
    unmerged.apply_lora(&[(&loaded, 0.75)]).unwrap();
    let d = rel_diff(&logits(&Model::load(&out).unwrap()), &logits(&unmerged));
    eprintln!("Q8_0 merged vs unmerged: max |Δlogit| {d:.2e} relative");
    assert!(d < 0.05, "{d}");
}

#[test]
fn metadata_is_copied_unchanged() {
    let dir = tempfile::tempdir().unwrap();
    let m = TinyModel::default();
    let base = tiny_base(dir.path(), &m);
    let adapter = dir.path().join("a.lora.gguf");
    LoraSpec::for_model(&m, &TARGETS[..2], 4, 8.0, 71).write(&adapter);
    let out = dir.path().join("merged.gguf");
    export(&base, &["--lora", s(&adapter)], &out);
    let (ours, orig) = (GgufFile::open(&out).unwrap(), GgufFile::open(&base).unwrap());
    assert_eq!(ours.metadata(), orig.metadata());
    assert_eq!(ours.get_str("general.name").unwrap(), "Tiny Base");
    assert_eq!(ours.get_str("general.license").unwrap(), "apache-2.0");
    for key in ["tokenizer.ggml.model", "tokenizer.ggml.tokens", "tokenizer.ggml.merges", "tokenizer.chat_template"] {
        assert_eq!(ours.get(key), orig.get(key), "{key}");
        assert!(ours.get(key).is_some(), "{key}");
    }
}

/// The folder's entries, names sorted.
fn listing(dir: &Path) -> Vec<String> {
    let mut v: Vec<String> = std::fs::read_dir(dir).unwrap().map(|e| e.unwrap().file_name().to_string_lossy().into_owned()).collect();
    v.sort();
    v
}

#[test]
fn bad_input_is_refused_naming_the_file_and_writes_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let m = TinyModel::default();
    let base = tiny_base(d, &m);
    let good = d.join("good.lora.gguf");
    LoraSpec::for_model(&m, &TARGETS, 4, 8.0, 81).write(&good);
    let other = TinyModel { n_embd: 32, n_head: 2, n_head_kv: 1, n_ff: 48, ..Default::default() };
    let other_base = d.join("other-base.lora.gguf");
    LoraSpec::for_model(&other, &TARGETS, 4, 8.0, 82).write(&other_base);
    let qwen = d.join("qwen2.lora.gguf");
    LoraSpec { arch: "qwen2".into(), ..LoraSpec::for_model(&m, &TARGETS, 4, 8.0, 83) }.write(&qwen);
    let embd = d.join("token-embd.lora.gguf");
    LoraSpec::for_model(&m, &["token_embd.weight"], 4, 8.0, 84).write(&embd);
    let absent = d.join("absent.lora.gguf");
    let out = d.join("out.gguf");
    let base_bytes = std::fs::read(&base).unwrap();
    let before = listing(d);
    let dotted = d.join(".").join("base.gguf");

    let cases: Vec<(Vec<&str>, &str, &str)> = vec![
        (vec!["--base", s(&base), "--lora", s(&other_base), "-o", s(&out)], s(&other_base), "shape mismatch"),
        (vec!["--base", s(&base), "--lora", s(&qwen), "-o", s(&out)], s(&qwen), "architecture \"qwen2\""),
        (vec!["--base", s(&base), "--lora", s(&embd), "-o", s(&out)], s(&embd), "token embedding is not supported"),
        (vec!["--base", s(&base), "--lora", s(&good), "--lora", s(&absent), "-o", s(&out)], s(&absent), "cannot open"),
        (vec!["--base", s(&absent), "--lora", s(&good), "-o", s(&out)], s(&absent), "cannot open"),
        (vec!["--base", s(&good), "--lora", s(&good), "-o", s(&out)], s(&good), "general.type"),
        (vec!["--base", s(&base), "--lora", s(&good), "-o", s(&base)], s(&base), "the output path is the input file"),
        (vec!["--base", s(&base), "--lora", s(&good), "-o", s(&dotted)], s(&base), "the output path is the input file"),
        (vec!["--base", s(&base), "--lora", s(&good), "-o", s(&good)], s(&good), "the output path is the input file"),
        (vec!["--base", s(&base), "--lora-scaled", s(&good), "lots", "-o", s(&out)], s(&good), "not a number"),
        (vec!["--base", s(&base), "-o", s(&out)], "--lora", "no adapters given"),
    ];
    for (args, file, want) in cases {
        let o = cli(&[&["export-lora"], args.as_slice()].concat());
        let err = text(&o.stderr);
        eprintln!("{err}");
        assert!(!o.status.success(), "{args:?} succeeded");
        assert!(!err.contains("panicked"), "{err}");
        assert!(err.contains(file), "the error does not name {file}: {err}");
        assert!(err.contains(want), "expected {want:?} in: {err}");
        assert_eq!(listing(d), before, "{args:?} left a file behind");
    }
    assert!(std::fs::read(&base).unwrap() == base_bytes, "the base changed");
}

#[test]
fn a_cancel_mid_write_leaves_the_old_output_and_no_temporary_file() {
    let dir = tempfile::tempdir().unwrap();
    let m = TinyModel::default();
    let base = tiny_base(dir.path(), &m);
    let adapter = dir.path().join("a.lora.gguf");
    LoraSpec::for_model(&m, &TARGETS, 4, 8.0, 91).write(&adapter);
    let out = dir.path().join("merged.gguf");
    std::fs::write(&out, b"the previous output").unwrap();
    let before = listing(dir.path());
    let cancel = AtomicBool::new(false);
    let mut seen = 0;
    let result = nexus_convert::lora_merge::export_lora(&base, &[(adapter, 1.0)], &out, Some(1), &cancel, |t| {
        seen = t.index;
        if t.index == 5 {
            cancel.store(true, Ordering::Relaxed);
        }
    });
    let err = result.unwrap_err().to_string();
    assert!(err.contains("interrupted") && err.contains("merged.gguf"), "{err}");
    assert_eq!(seen, 5);
    assert_eq!(std::fs::read(&out).unwrap(), b"the previous output");
    assert_eq!(listing(dir.path()), before);
}

#[cfg(unix)]
#[test]
fn ctrl_c_mid_write_leaves_no_file() {
    let dir = tempfile::tempdir().unwrap();
    // Big enough (≈ 60 MB, a rank-128 adapter on every projection) that the merge is still
    // running when the signal comes.
    let m = TinyModel { n_embd: 512, n_head: 8, n_head_kv: 4, n_ff: 2048, n_layer: 4, ..Default::default() };
    let base = dir.path().join("base.gguf");
    m.write(&base);
    let names: Vec<String> = (0..m.n_layer)
        .flat_map(|i| ["attn_q", "attn_k", "attn_v", "attn_output", "ffn_gate", "ffn_up", "ffn_down"].map(|k| format!("blk.{i}.{k}.weight")))
        .collect();
    let adapter = dir.path().join("a.lora.gguf");
    LoraSpec::for_model(&m, &names.iter().map(String::as_str).collect::<Vec<_>>(), 128, 8.0, 92).write(&adapter);
    let before = listing(dir.path());
    let out = dir.path().join("merged.gguf");
    let mut child = Command::new(env!("CARGO_BIN_EXE_nexus-cli"))
        .args(["export-lora", "--base", s(&base), "--lora", s(&adapter), "-o", s(&out), "-t", "1"])
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    // Wait for the temporary file to hold more than the header, then press Ctrl-C.
    let start = Instant::now();
    loop {
        let tmp = listing(dir.path()).into_iter().find(|n| n.starts_with(".merged.gguf.tmp"));
        if tmp.is_some_and(|n| std::fs::metadata(dir.path().join(n)).map(|m| m.len() > 100_000).unwrap_or(false)) {
            break;
        }
        assert!(child.try_wait().unwrap().is_none(), "the merge finished before it could be interrupted");
        assert!(start.elapsed() < Duration::from_secs(60), "no temporary file appeared");
        std::thread::sleep(Duration::from_millis(1));
    }
    // SAFETY: kill(2) on our own child's pid.
    assert_eq!(unsafe { libc::kill(child.id() as i32, libc::SIGINT) }, 0);
    let o = child.wait_with_output().unwrap();
    assert!(!o.status.success());
    assert!(text(&o.stderr).contains("interrupted"), "{}", text(&o.stderr));
    assert_eq!(listing(dir.path()), before, "a file was left behind");
}
