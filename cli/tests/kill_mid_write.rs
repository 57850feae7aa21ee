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

/// A distillation checkpoint is a folder of three files: saved into `checkpoint.tmp/`, then
/// swapped in. Killed while the new one is being written, the run still resumes from the
/// previous one, whole.
#[test]
fn distill_checkpoint_killed_mid_save_keeps_the_previous_one() {
    let dir = tempfile::tempdir().unwrap();
    let teacher = dir.path().join("teacher.gguf");
    // A 32,000-token vocabulary makes each checkpoint ~50 MB: long enough to be caught mid-save.
    nexus_tests::TinyModel { n_vocab: 32000, n_embd: 128, n_layer: 2, n_ff: 256, tied: true, n_ctx: 64, ..Default::default() }.write(&teacher);
    let text = "a lamp, a boat and a bridge over the slow river; the bakers sing of bread. ".repeat(400);
    std::fs::write(dir.path().join("train.txt"), text).unwrap();
    std::fs::write(dir.path().join("held_out.txt"), "Gulls wait on the posts for scraps while the tide turns.\n").unwrap();
    let run = dir.path().join("run");
    let config = dir.path().join("run.toml");
    std::fs::write(
        &config,
        format!(
            "teacher = \"{}\"\nrun_dir = \"{}\"\n[data]\nsources = [\"{}\"]\nseq_len = 16\n[student]\nn_embd = 128\nn_layer = 1\nn_head = 2\nn_head_kv = 1\nn_ff = 128\ninit = \"random\"\n[train]\nsteps = 1000\nbatch = 2\nanchor = 0\ncheckpoint_every = 1\n[verify]\nsets = [[\"general\", \"{}\"]]\n",
            teacher.display(),
            run.display(),
            dir.path().join("train.txt").display(),
            dir.path().join("held_out.txt").display(),
        ),
    )
    .unwrap();
    let mut child = Command::new(env!("CARGO_BIN_EXE_nexus-cli"))
        .args(["distill", "train", "-c", config.to_str().unwrap(), "-t", "1"])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    // Killed once a complete checkpoint exists and the next save has written some of its bytes.
    let partial = run.join("checkpoint.tmp").join("optimizer.safetensors");
    let start = Instant::now();
    loop {
        let saving = std::fs::metadata(&partial).map(|m| m.len() > 1 << 20).unwrap_or(false);
        if saving && run.join("checkpoint").join("state.json").exists() {
            break;
        }
        if let Some(status) = child.try_wait().unwrap() {
            panic!("training ended ({status}) before it could be killed mid-save");
        }
        assert!(start.elapsed() < Duration::from_secs(120), "no checkpoint save was caught");
        std::thread::sleep(Duration::from_millis(1));
    }
    child.kill().unwrap();
    child.wait().unwrap();
    let ck = nexus_train::checkpoint::Checkpoint::load(&run).expect("the previous checkpoint loads");
    let step = ck.state["step"].as_u64().unwrap();
    assert!(step >= 1);
    // And the run goes on from it.
    let out = Command::new(env!("CARGO_BIN_EXE_nexus-cli"))
        .args(["distill", "train", "-c", config.to_str().unwrap(), "-t", "1", "--resume", "--set", &format!("train.steps={}", step + 2)])
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let log = std::fs::read_to_string(run.join("metrics.jsonl")).unwrap();
    assert_eq!(log.lines().count() as u64, step + 2);
}

/// `bundle pack` streams the backbone's tensors into `.NAME.tmpPID` and renames it only after
/// fsync: killed halfway, the previous bundle is untouched.
#[test]
fn bundle_pack_killed_mid_write_keeps_the_old_bundle() {
    let Some(model) = nexus_tests::smollm2_path() else { return };
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("nexus.gguf");
    let old = b"the previous bundle, which must survive".repeat(1000);
    std::fs::write(&out, &old).unwrap();
    // ~100 MB to write: killed once the first megabyte is out.
    let child = Command::new(env!("CARGO_BIN_EXE_nexus-cli"))
        .args(["bundle", "pack", "--backbone", model.to_str().unwrap(), "-o", out.to_str().unwrap()])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let tmp = kill_mid_write(child, &out, 1 << 20);
    check_old_output_intact(&out, &old, &tmp);
}
