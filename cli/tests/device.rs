//! `--device` and `-ngl` on a binary without a usable GPU: clear refusals, CPU by default.

use std::process::Command;

use nexus_tests::TinyModel;

fn run(args: &[&str]) -> (bool, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_nexus-cli")).args(args).output().unwrap();
    (out.status.success(), String::from_utf8_lossy(&out.stderr).into_owned())
}

#[test]
fn device_flags_are_checked_before_any_work() {
    let dir = tempfile::tempdir().unwrap();
    let m = dir.path().join("tiny.gguf");
    TinyModel::default().write(&m);
    let m = m.to_str().unwrap();
    let base = ["run", "-m", m, "-p", "hi", "-n", "2", "--temp", "0"];
    let with = |extra: &[&str]| run(&[&base[..], extra].concat());

    let (ok, err) = with(&["--device", "tpu"]);
    assert!(!ok && err.contains("expected cpu, cuda or cuda:N"), "{err}");
    // The tiny model has 2 layers: -ngl 1 would split it, which is refused by name.
    let (ok, err) = with(&["-ngl", "1"]);
    assert!(!ok && err.contains("partial offload is not supported"), "{err}");
    let (ok, err) = with(&["--device", "cpu", "-ngl", "99"]);
    assert!(!ok && err.contains("pick one"), "{err}");
    let (ok, err) = with(&["--device", "cuda"]);
    assert!(!ok, "--device cuda must fail on a machine without a usable GPU");
    assert!(
        err.contains("built without CUDA") || err.contains("not yet passed its parity tests") || err.contains("CUDA library"),
        "{err}"
    );
    // Without flags, and with -ngl 0, the CPU runs it.
    assert!(with(&[]).0);
    assert!(with(&["-ngl", "0"]).0);
}
