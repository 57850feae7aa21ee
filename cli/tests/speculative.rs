//! `--model-draft` on `run` and `bench`, end to end on tiny random models: greedy text with a
//! draft equals the text without; a draft with another vocabulary, a GPU, or a zero
//! `--draft-max` fail with a message naming the problem (and both files for the vocabulary).

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use nexus_kernels::GgmlType;
use nexus_tests::TinyModel;

fn cli(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_nexus-cli")).args(args).output().unwrap()
}

fn text(b: &[u8]) -> String {
    String::from_utf8_lossy(b).into_owned()
}

struct Files {
    _dir: tempfile::TempDir,
    target: PathBuf,
    /// The target's weights in Q8_0: a draft that is mostly right.
    draft: PathBuf,
    /// One more token in the vocabulary.
    other_vocab: PathBuf,
}

fn files() -> Files {
    let dir = tempfile::tempdir().unwrap();
    let base = TinyModel { n_ctx: 512, ..TinyModel::default() };
    let write = |name: &str, m: TinyModel| -> PathBuf {
        let path = dir.path().join(name);
        m.write(&path);
        path
    };
    Files {
        target: write("target.gguf", base.clone()),
        draft: write("draft.gguf", TinyModel { ty: GgmlType::Q8_0, ..base.clone() }),
        other_vocab: write("other-vocab.gguf", TinyModel { n_vocab: 301, ..base.clone() }),
        _dir: dir,
    }
}

fn run(target: &Path, extra: &[&str]) -> Output {
    let mut args = vec!["run", "-m", target.to_str().unwrap(), "-p", "hello world", "-n", "40", "--temp", "0", "-t", "2"];
    args.extend_from_slice(extra);
    cli(&args)
}

#[test]
fn greedy_text_with_a_draft_equals_the_text_without() {
    let f = files();
    let alone = run(&f.target, &[]);
    assert!(alone.status.success(), "{}", text(&alone.stderr));
    let draft = f.draft.to_str().unwrap();
    for extra in [
        vec!["--model-draft", draft],
        vec!["-md", draft, "--draft-max", "3", "--draft-min", "2", "--draft-p-min", "0"],
        vec!["-md", draft, "--draft-max", "1", "--draft-p-min", "0.5"],
    ] {
        let with = run(&f.target, &extra);
        assert!(with.status.success(), "{extra:?}: {}", text(&with.stderr));
        assert_eq!(text(&with.stdout), text(&alone.stdout), "{extra:?}");
        let stderr = text(&with.stderr);
        assert!(stderr.contains("drafted tokens accepted"), "{extra:?}: {stderr}");
    }
}

#[test]
fn bench_reports_speedup_and_acceptance() {
    let f = files();
    let m = f.target.to_str().unwrap();
    let args = ["bench", "-m", m, "--model-draft", f.draft.to_str().unwrap(), "-n", "16", "-r", "1", "-o", "json", "--draft-p-min", "0"];
    let o = cli(&args);
    assert!(o.status.success(), "{}", text(&o.stderr));
    let row: serde_json::Value = serde_json::from_str(&text(&o.stdout)).unwrap();
    for key in ["tg_ts", "tg_draft_ts", "speedup", "acceptance_rate"] {
        assert!(row[key].as_f64().is_some_and(|v| v.is_finite() && v >= 0.0), "{key}: {row}");
    }
    assert!(row["drafted"].as_u64().unwrap() > 0, "{row}");
    let speedup = row["speedup"].as_f64().unwrap();
    let ratio = row["tg_draft_ts"].as_f64().unwrap() / row["tg_ts"].as_f64().unwrap();
    assert!((speedup - ratio).abs() < 1e-9, "{row}");
}

#[test]
fn bad_drafts_and_settings_fail_cleanly() {
    let f = files();
    let target = f.target.to_str().unwrap();
    let other = f.other_vocab.to_str().unwrap();
    let o = run(&f.target, &["--model-draft", other]);
    let err = text(&o.stderr);
    assert!(!o.status.success());
    assert!(err.contains(target) && err.contains(other) && err.contains("vocabular"), "{err}");
    assert!(err.contains("300") && err.contains("301"), "{err}");
    assert!(!err.contains("panicked"), "{err}");

    let draft = f.draft.to_str().unwrap();
    // With a draft the device is chosen as without one: on a machine without a usable GPU,
    // --device cuda fails the same clean way (tests/device.rs).
    let o = run(&f.target, &["--model-draft", draft, "--device", "cuda"]);
    let err = text(&o.stderr);
    assert!(!o.status.success() && !err.contains("panicked"), "{err}");
    assert!(
        err.contains("built without CUDA") || err.contains("not yet passed its parity tests") || err.contains("CUDA library"),
        "{err}"
    );
    for (extra, want) in [
        (vec!["--model-draft", draft, "-ngl", "1"], "partial offload"),
        (vec!["--model-draft", draft, "--draft-max", "0"], "--draft-max"),
        (vec!["--model-draft", draft, "--draft-p-min", "1.5"], "--draft-p-min"),
        (vec!["--model-draft", "/nonexistent/draft.gguf"], "/nonexistent/draft.gguf"),
    ] {
        let o = run(&f.target, &extra);
        let err = text(&o.stderr);
        assert!(!o.status.success(), "{extra:?} succeeded");
        assert!(err.contains(want) && !err.contains("panicked"), "{extra:?}: {err}");
    }
}
