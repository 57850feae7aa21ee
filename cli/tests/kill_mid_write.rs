//! "Never lose a file" (issue 9): a writer killed with SIGKILL halfway through leaves the old
//! output byte for byte and nothing partial under the output's name. The writers put their
//! bytes in `.NAME.tmpPID` beside the output and rename it over the output only when complete;
//! a kill leaves that hidden temporary file behind, which no command reads as output.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// The writer's temporary file for `out`, once the process has written more than `min_len` bytes to it.
fn temp_of(out: &Path, min_len: u64) -> Option<PathBuf> {
    let name = out.file_name()?.to_string_lossy().into_owned();
    let prefix = format!(".{name}.tmp");
    std::fs::read_dir(out.parent()?).ok()?.flatten().map(|e| e.path()).find(|p| {
        let n = p.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default();
        n.starts_with(&prefix) && p.metadata().map(|m| m.len() > min_len).unwrap_or(false)
    })
}

/// Waits until `child` has written more than `min_len` bytes of `out`'s temporary file, then
/// SIGKILLs it.
fn kill_mid_write(mut child: Child, out: &Path, min_len: u64) -> PathBuf {
    let start = Instant::now();
    let tmp = loop {
        if let Some(t) = temp_of(out, min_len) {
            break t;
        }
        if let Some(status) = child.try_wait().unwrap() {
            panic!("the writer finished ({status}) before it could be killed mid-write");
        }
        assert!(start.elapsed() < Duration::from_secs(120), "no temporary file appeared beside {}", out.display());
        std::thread::sleep(Duration::from_millis(2));
    };
    child.kill().unwrap(); // SIGKILL on Unix: no destructor, no cleanup runs.
    let status = child.wait().unwrap();
    assert!(!status.success(), "the writer was not killed: {status}");
    tmp
}

fn check_old_output_intact(out: &Path, old: &[u8], tmp: &Path) {
    let now = std::fs::read(out).unwrap();
    assert!(now == old, "{} changed: {} bytes now, {} before the killed write", out.display(), now.len(), old.len());
    // The leftover must not pass for a model: hidden, not the output's name, and incomplete.
    let name = tmp.file_name().unwrap().to_string_lossy().into_owned();
    assert!(name.starts_with('.') && name != out.file_name().unwrap().to_string_lossy(), "{name}");
}

#[test]
fn quantize_killed_mid_write_keeps_the_old_output() {
    let Some(model) = nexus_tests::smollm2_path() else { return };
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("out.gguf");
    let old = b"the previous output, which must survive".repeat(1000);
    std::fs::write(&out, &old).unwrap();
    // Q4_1 → Q8_0 writes ~140 MB: killed once the 1.5 MB header and some tensors are out.
    let child = Command::new(env!("CARGO_BIN_EXE_nexus-cli"))
        .args(["quantize", model.to_str().unwrap(), out.to_str().unwrap(), "q8_0", "-t", "1"])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let tmp = kill_mid_write(child, &out, 16 << 20);
    check_old_output_intact(&out, &old, &tmp);
}

#[test]
fn kl_base_killed_mid_write_keeps_the_old_output() {
    let Some(model) = nexus_tests::smollm2_path() else { return };
    let dir = tempfile::tempdir().unwrap();
    let text = dir.path().join("text.txt");
    std::fs::write(&text, "The quick brown fox jumps over the lazy dog. ".repeat(400)).unwrap();
    let out = dir.path().join("base.kld");
    let old = b"an earlier KL base".repeat(500);
    std::fs::write(&out, &old).unwrap();
    // The base file is created before the first chunk is evaluated and grows per chunk.
    let child = Command::new(env!("CARGO_BIN_EXE_nexus-cli"))
        .args(["perplexity", "-m", model.to_str().unwrap(), "-f", text.to_str().unwrap(), "-c", "128", "-t", "1"])
        .arg("--kl-divergence-base")
        .arg(&out)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let tmp = kill_mid_write(child, &out, 0);
    check_old_output_intact(&out, &old, &tmp);
}
