//! `nexus-cli distill` end to end on a tiny random teacher: every stage, the exported student
//! served by `run`, an interrupted run resumed to the same losses as an uninterrupted one, and
//! bad input refused with the file and the problem named.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::time::{Duration, Instant};

use nexus_tests::TinyModel;

fn cli(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_nexus-cli")).args(args).output().unwrap()
}

fn text(b: &[u8]) -> String {
    String::from_utf8_lossy(b).into_owned()
}

/// Varied English-like text, so batches differ and the losses mean something.
fn prose(seed: usize, n: usize) -> String {
    let words = ["the", "river", "keeps", "a", "slow", "boat", "under", "bridges", "where", "lamps", "burn", "late", "and", "children", "count", "ducks", "while", "bakers", "sing", "of", "bread"];
    let mut s = String::new();
    let mut x = seed as u64 + 1;
    for i in 0..n {
        x = x.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
        s.push_str(words[(x >> 33) as usize % words.len()]);
        s.push(if i % 13 == 12 { '.' } else { ' ' });
        if i % 13 == 12 {
            s.push(' ');
        }
        if i % 130 == 129 {
            s.push_str("\n\n");
        }
    }
    s
}

struct Setup {
    dir: tempfile::TempDir,
    teacher: PathBuf,
}

impl Setup {
    fn new() -> Setup {
        let dir = tempfile::tempdir().unwrap();
        let teacher = dir.path().join("teacher.gguf");
        TinyModel { n_embd: 64, n_layer: 4, n_ff: 128, tied: true, n_ctx: 256, ..Default::default() }.write(&teacher);
        std::fs::write(dir.path().join("train.txt"), prose(1, 6000)).unwrap();
        std::fs::write(dir.path().join("general.txt"), "Sailors mend nets at dawn; gulls wait on the posts for scraps and the tide turns twice a day.\n".repeat(12)).unwrap();
        std::fs::write(dir.path().join("lenient.toml"), "[capability.general]\nmin_top1 = 0.0\nmax_ppl_ratio = 1000.0\nmax_kl = 100.0\n").unwrap();
        std::fs::write(dir.path().join("strict.toml"), "[capability.general]\nmin_top1 = 0.999\n").unwrap();
        Setup { dir, teacher }
    }

    fn path(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }

    /// A run config named `name` with its own run directory; `extra` is appended.
    fn config(&self, name: &str, extra: &str) -> PathBuf {
        let p = |n: &str| self.path(n).display().to_string();
        let text = format!(
            r#"teacher = "{teacher}"
run_dir = "{run}"
seed = 3
[data]
sources = ["{train}"]
seq_len = 32
[profile]
n_ctx = 32
max_tokens = 512
ablation_tokens = 64
[student]
n_embd = 32
n_layer = 2
n_head = 2
n_head_kv = 1
n_ff = 64
[train]
steps = 24
batch = 4
accum = 2
lr = 3e-3
warmup = 4
anchor = 0.1
anchor_every = 1
vocab_chunk = 100
checkpoint_every = 8
[verify]
contract = "{contract}"
sets = [["general", "{general}"]]
n_ctx = 64
max_tokens = 512
top_k = 8
{extra}"#,
            teacher = self.teacher.display(),
            run = p(name),
            train = p("train.txt"),
            contract = p("lenient.toml"),
            general = p("general.txt"),
        );
        let path = self.path(&format!("{name}.toml"));
        std::fs::write(&path, text).unwrap();
        path
    }
}

fn losses(run_dir: &Path) -> Vec<f64> {
    std::fs::read_to_string(run_dir.join("metrics.jsonl"))
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str::<serde_json::Value>(l).unwrap()["loss"].as_f64().unwrap())
        .collect()
}

fn ok(out: &Output) {
    assert!(out.status.success(), "stdout:\n{}\nstderr:\n{}", text(&out.stdout), text(&out.stderr));
}

#[test]
fn every_stage_runs_and_the_student_is_served() {
    let s = Setup::new();
    let cfg = s.config("run", "");
    let cfg = cfg.to_str().unwrap();
    // A few hundred steps: a second or two on a tiny teacher.
    ok(&cli(&["distill", "run", "-c", cfg, "-t", "2", "--set", "train.steps=200", "--set", "train.checkpoint_every=50"]));
    let run = s.path("run");
    for f in ["profile.safetensors", "profile/profile_report.md", "profile/head_importance.png", "provenance.json", "student.json", "checkpoint/state.json", "metrics.jsonl", "training_loss.png", "train_summary.json", "verify_report.json", "verify_report.md", "student.q8_0.gguf"] {
        assert!(run.join(f).exists(), "{f} missing");
    }
    let l = losses(&run);
    assert_eq!(l.len(), 200);
    let first: f64 = l[..4].iter().sum::<f64>() / 4.0;
    let last: f64 = l[l.len() - 4..].iter().sum::<f64>() / 4.0;
    assert!(last < 0.9 * first, "loss did not fall: {first} → {last}");
    // The summary carries the issue's MFU (student 6·N·tokens/s over the H100's BF16 peak) and
    // the teacher's forward rate on its own.
    let summary: serde_json::Value = serde_json::from_slice(&std::fs::read(run.join("train_summary.json")).unwrap()).unwrap();
    let f = |k: &str| summary[k].as_f64().unwrap_or_else(|| panic!("{k} missing: {summary}"));
    assert!(f("student_tflops") > 0.0 && f("teacher_tflops") > 0.0, "{summary}");
    assert!((f("mfu_h100_bf16") - f("student_tflops") / 989.0).abs() <= 1e-12, "{summary}");

    let student = run.join("student.q8_0.gguf");
    let meta = text(&cli(&["inspect", student.to_str().unwrap()]).stdout);
    assert!(meta.contains("nexus.distill.verified") && meta.contains("true"), "{meta}");
    let out = cli(&["run", "-m", student.to_str().unwrap(), "-p", "the river", "-n", "8", "--temp", "0", "-t", "2"]);
    ok(&out);
    assert!(text(&out.stdout).starts_with("the river"), "{}", text(&out.stdout));

    // A stricter contract fails, and the export says so.
    let strict = s.path("strict.toml");
    let out = cli(&["distill", "verify", "-c", cfg, "--set", &format!("verify.contract={}", strict.display())]);
    ok(&out);
    assert!(text(&out.stdout).contains("NOT verified"), "{}", text(&out.stdout));
    let report: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(run.join("verify_report.json")).unwrap()).unwrap();
    assert_eq!(report["verified"], false);
    let f32_out = s.path("student.f32.gguf");
    ok(&cli(&["distill", "export", "-c", cfg, "--type", "f32", "-o", f32_out.to_str().unwrap()]));
    let meta = text(&cli(&["inspect", f32_out.to_str().unwrap()]).stdout);
    let line = meta.lines().find(|l| l.contains("nexus.distill.verified")).unwrap().to_string();
    assert!(line.contains("false"), "{line}");

    // Training again into the same directory needs --resume.
    let out = cli(&["distill", "train", "-c", cfg]);
    assert!(!out.status.success());
    assert!(text(&out.stderr).contains("--resume"), "{}", text(&out.stderr));
}

/// Starts `distill train ARGS` (stderr kept for the caller) and returns once `run` has logged
/// `steps` steps, the process still running.
fn train_until(run: &Path, steps: usize, args: &[&str]) -> std::process::Child {
    let mut child = Command::new(env!("CARGO_BIN_EXE_nexus-cli")).args(["distill", "train", "-t", "2"]).args(args).stderr(std::process::Stdio::piped()).spawn().unwrap();
    let t0 = Instant::now();
    while std::fs::read_to_string(run.join("metrics.jsonl")).map_or(0, |t| t.lines().count()) < steps && t0.elapsed() < Duration::from_secs(120) {
        assert!(child.try_wait().unwrap().is_none(), "training ended after fewer than {steps} steps");
        std::thread::sleep(Duration::from_millis(2));
    }
    child
}

#[test]
fn a_killed_run_resumes_to_the_same_losses() {
    let s = Setup::new();
    let whole = s.config("whole", "");
    let parts = s.config("parts", "");
    // Long enough (in steps) that the kill lands mid-run.
    let steps = "train.steps=400";
    for c in [&whole, &parts] {
        ok(&cli(&["distill", "profile", "-c", c.to_str().unwrap(), "-t", "2"]));
    }
    ok(&cli(&["distill", "train", "-c", whole.to_str().unwrap(), "-t", "2", "--set", steps]));

    // Killed without warning (SIGKILL) once a checkpoint exists and training went past it.
    let run = s.path("parts");
    let mut child = train_until(&run, 7, &["-c", parts.to_str().unwrap(), "--set", steps, "--set", "train.checkpoint_every=5"]);
    child.kill().unwrap();
    child.wait().unwrap();
    let at_kill = losses(&run).len();
    assert!(at_kill < 400, "the kill came after the end");
    assert!(run.join("checkpoint").exists() || run.join("checkpoint.old").exists(), "no checkpoint before the kill");
    ok(&cli(&["distill", "train", "-c", parts.to_str().unwrap(), "-t", "2", "--set", steps, "--resume"]));

    let (a, b) = (losses(&s.path("whole")), losses(&run));
    assert_eq!(a.len(), b.len());
    for (i, (x, y)) in a.iter().zip(&b).enumerate() {
        assert!((x - y).abs() <= 1e-5 * x.abs().max(1.0), "step {}: {x} uninterrupted, {y} resumed", i + 1);
    }
}

#[test]
fn an_interrupt_delivered_twice_at_once_still_checkpoints() {
    // GNU `timeout -s INT` signals its child and then its own process group: the trainer gets
    // the same SIGINT twice, microseconds apart. That is one request to stop, not an abort.
    let s = Setup::new();
    let c = s.config("twice", "");
    ok(&cli(&["distill", "profile", "-c", c.to_str().unwrap(), "-t", "2"]));
    let run = s.path("twice");
    // Steps long enough (many micro-batches) that both signals land inside one step.
    let child = train_until(&run, 1, &["-c", c.to_str().unwrap(), "--set", "train.steps=100000", "--set", "train.accum=1500", "--set", "train.checkpoint_every=100000"]);
    // The second after the first was handled (signals sent back to back would merge into one).
    for pause in [100, 0] {
        assert_eq!(unsafe { libc::kill(child.id() as i32, libc::SIGINT) }, 0);
        std::thread::sleep(Duration::from_millis(pause));
    }
    let out = child.wait_with_output().unwrap();
    assert_eq!(out.status.code(), Some(130), "{}", text(&out.stderr));
    assert!(run.join("checkpoint").exists(), "no checkpoint after the interrupt: {}", text(&out.stderr));
}

#[test]
fn bad_input_is_refused_with_the_file_named() {
    let s = Setup::new();
    let expect_err = |args: &[&str], needles: &[&str]| {
        let out = cli(args);
        let err = text(&out.stderr);
        assert!(!out.status.success(), "{args:?} succeeded");
        assert!(!err.contains("panicked"), "{err}");
        for n in needles {
            assert!(err.contains(n), "{args:?}: {n:?} not in: {err}");
        }
    };
    let c = s.config("a", "");
    let c = c.to_str().unwrap();
    // A typo in the config.
    let typo = s.config("typo", "[export]\ntipe = \"f16\"\n");
    expect_err(&["distill", "train", "-c", typo.to_str().unwrap()], &["typo.toml", "tipe"]);
    // A device or precision the trainer does not have.
    expect_err(&["distill", "train", "-c", c, "--set", "train.device=tpu"], &["a.toml", "train.device", "tpu"]);
    expect_err(&["distill", "train", "-c", c, "--set", "train.precision=bf16"], &["a.toml", "bf16", "cuda"]);
    // A teacher that is not there.
    expect_err(&["distill", "profile", "-c", c, "--set", "teacher=/nonexistent/t.gguf"], &["/nonexistent/t.gguf"]);
    // Empty and non-UTF-8 training data.
    std::fs::write(s.path("empty.txt"), "").unwrap();
    expect_err(&["distill", "profile", "-c", c, "--set", &format!("data.sources=[\"{}\"]", s.path("empty.txt").display())], &["empty.txt", "empty"]);
    std::fs::write(s.path("latin1.txt"), b"caf\xe9 au lait").unwrap();
    expect_err(&["distill", "profile", "-c", c, "--set", &format!("data.sources=[\"{}\"]", s.path("latin1.txt").display())], &["latin1.txt", "UTF-8"]);
    // Held-out text in the training data.
    expect_err(&["distill", "profile", "-c", c, "--set", &format!("data.sources=[\"{}\"]", s.path("general.txt").display())], &["general.txt"]);
    // A student wider than its teacher cannot be pruned from it.
    ok(&cli(&["distill", "profile", "-c", c, "-t", "2"]));
    expect_err(&["distill", "train", "-c", c, "--set", "student.n_embd=128"], &["128"]);
    // A student deeper than its teacher (4 layers) asks for layers the teacher lacks.
    expect_err(&["distill", "train", "-c", c, "--set", "student.n_layer=9"], &["9", "4"]);
    // Resuming what never started.
    expect_err(&["distill", "train", "-c", c, "--resume"], &["no checkpoint"]);
    // Resuming with a teacher of another vocabulary.
    ok(&cli(&["distill", "train", "-c", c, "-t", "2", "--set", "train.steps=2"]));
    let other = s.path("other.gguf");
    TinyModel { n_vocab: 400, n_embd: 64, n_layer: 4, n_ff: 128, tied: true, ..Default::default() }.write(&other);
    expect_err(&["distill", "train", "-c", c, "--resume", "--set", &format!("teacher={}", other.display())], &["other.gguf", "vocabulary", "400", "300"]);
    // A learning rate that blows the loss up stops the run, naming the step, and the last
    // checkpoint (step 2) stays as it was.
    let before = std::fs::read(s.path("a/checkpoint/weights.safetensors")).unwrap();
    expect_err(&["distill", "train", "-c", c, "--resume", "--set", "train.lr=1e30", "--set", "train.clip=0", "--set", "train.steps=20"], &["not finite", "step"]);
    assert_eq!(std::fs::read(s.path("a/checkpoint/weights.safetensors")).unwrap(), before);
}

#[test]
fn the_committed_reference_student_runs_and_carries_its_verdict() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).parent().unwrap();
    let path = root.join("models/smollm2-student.q8_0.gguf");
    let file = nexus_runtime::gguf::GgufFile::open(&path).unwrap();
    let flag = file.get("nexus.distill.verified").and_then(|v| v.as_bool()).unwrap();
    let report: serde_json::Value = serde_json::from_str(file.get("nexus.distill.verify_report").and_then(|v| v.as_str()).unwrap()).unwrap();
    assert_eq!(report["verified"].as_bool(), Some(flag), "the mark and the embedded report disagree");
    assert_eq!(file.get("tokenizer.ggml.pre").and_then(|v| v.as_str()), Some("smollm"));
    let p = path.to_str().unwrap();
    let args = ["run", "-m", p, "-p", "The river", "-n", "12", "--temp", "0", "-t", "2"];
    let (a, b) = (cli(&args), cli(&args));
    ok(&a);
    assert_eq!(a.stdout, b.stdout);
    assert!(text(&a.stdout).len() > "The river".len() + 10, "{}", text(&a.stdout));
}

/// `train.device = "cuda"`: the student (and the teacher) train on the GPU to the CPU engine's
/// losses, and a run stopped at a checkpoint resumes there to the uninterrupted run's losses.
/// The learning rate is held after the warm-up (`min_lr_ratio = 1`) so that a run of 16 steps
/// and one of 24 share their schedule. The engines sum in different orders and Adam can turn
/// rounding-level differences in near-zero gradients into whole steps, so after the first
/// steps the CPU and GPU curves are compared within training noise; the GPU engine itself is
/// deterministic. Without a usable GPU (or CUDA in this binary) the run fails for that reason
/// alone: skipped, unless NEXUS_REQUIRE_CUDA is set.
#[test]
fn training_on_cuda_follows_the_cpu_losses() {
    let s = Setup::new();
    let names = ["cpu", "gpu", "gpu_parts"];
    let cfgs: Vec<PathBuf> = names.iter().map(|n| s.config(n, "")).collect();
    let c = |i: usize| cfgs[i].to_str().unwrap().to_string();
    for i in 0..3 {
        ok(&cli(&["distill", "profile", "-c", &c(i), "-t", "2"]));
    }
    let flat = ["--set", "train.min_lr_ratio=1.0"];
    ok(&cli(&[&["distill", "train", "-c", &c(0), "-t", "2"][..], &flat].concat()));
    let cuda = ["--set", "train.device=cuda", "--set", "train.min_lr_ratio=1.0"];
    let out = cli(&[&["distill", "train", "-c", &c(1), "-t", "2"][..], &cuda].concat());
    if !out.status.success() {
        let err = text(&out.stderr);
        assert!(err.contains("CUDA") && !err.contains("panicked"), "{err}");
        assert!(std::env::var_os("NEXUS_REQUIRE_CUDA").is_none(), "NEXUS_REQUIRE_CUDA is set: {err}");
        eprintln!("skipped: no usable GPU here ({})", err.trim());
        return;
    }
    ok(&cli(&[&["distill", "train", "-c", &c(2), "-t", "2", "--set", "train.steps=16"][..], &cuda].concat()));
    ok(&cli(&[&["distill", "train", "-c", &c(2), "-t", "2", "--resume"][..], &cuda].concat()));
    let [cpu, gpu, parts] = names.map(|n| losses(&s.path(n)));
    assert_eq!((cpu.len(), gpu.len(), parts.len()), (24, 24, 24));
    for (i, ((x, y), z)) in cpu.iter().zip(&gpu).zip(&parts).enumerate() {
        eprintln!("step {}: cpu {x:.6} cuda {y:.6} cuda resumed {z:.6}", i + 1);
        assert!((y - z).abs() <= 1e-5 * y.abs().max(1.0), "step {}: {y} uninterrupted, {z} resumed on CUDA", i + 1);
        let tol = if i < 6 { 1e-4 } else { 1e-2 };
        assert!((x - y).abs() <= tol * x.abs().max(1.0), "step {}: {x} on the CPU, {y} on CUDA", i + 1);
    }
}
