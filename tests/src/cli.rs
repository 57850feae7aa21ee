//! Running the `nexus-cli` binary from the cli crate's integration tests, which pass the path
//! Cargo gives them (`env!("CARGO_BIN_EXE_nexus-cli")`).

use std::io::Write;
use std::process::{Command, Output, Stdio};

/// Runs `bin` with `args`, writes `stdin` to it and closes it, and waits for the output.
pub fn run(bin: &str, args: &[&str], stdin: &str) -> Output {
    let mut child = Command::new(bin)
        .args(args)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap_or_else(|e| panic!("cannot start {bin}: {e}"));
    child.stdin.take().expect("piped").write_all(stdin.as_bytes()).unwrap();
    child.wait_with_output().unwrap()
}

/// Output bytes as text (lossy: a test prints whatever came).
pub fn text(b: &[u8]) -> String {
    String::from_utf8_lossy(b).into_owned()
}

/// Fails with exit code 1, no panic, and an `error:` line holding every needle.
pub fn assert_error(o: &Output, needles: &[&str]) {
    let err = text(&o.stderr);
    assert_eq!(o.status.code(), Some(1), "stdout:\n{}\nstderr:\n{err}", text(&o.stdout));
    assert!(!err.contains("panicked"), "{err}");
    let line = err.lines().find(|l| l.starts_with("error: ")).unwrap_or_else(|| panic!("no error line in:\n{err}"));
    for n in needles {
        assert!(line.contains(n), "expected {n:?} in:\n{err}");
    }
}
