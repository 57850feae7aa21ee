//! `nexus-cli distill train-lora` end to end on a tiny random teacher: a student distilled
//! from it on prose gets an adapter for an "arithmetic" capability it never saw; the loss falls,
//! the file loads with `run --lora` and changes the output, `distill verify --lora` measures a
//! lower KL to the teacher on that capability's held-out set with the adapter than without,
//! and the base file is untouched. Bad input is refused with the problem named.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use nexus_tests::TinyModel;

fn cli(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_nexus-cli")).args(args).output().unwrap()
}

fn text(b: &[u8]) -> String {
    String::from_utf8_lossy(b).into_owned()
}

fn ok(out: &Output) {
    assert!(out.status.success(), "stdout:\n{}\nstderr:\n{}", text(&out.stdout), text(&out.stderr));
}

fn lcg(x: &mut u64) -> u64 {
    *x = x.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
    *x >> 33
}

/// English-like word salad: what the student is distilled on.
fn prose(seed: u64, n: usize) -> String {
    let words = ["the", "river", "keeps", "a", "slow", "boat", "under", "bridges", "where", "lamps", "burn", "late", "and", "children", "count", "ducks"];
    let mut x = seed + 1;
    let mut s = String::new();
    for i in 0..n {
        s.push_str(words[lcg(&mut x) as usize % words.len()]);
        s.push_str(if i % 11 == 10 { ".\n" } else { " " });
    }
    s
}

/// Sums, one a line: the adapter's capability.
fn sums(seed: u64, lines: usize) -> String {
    let mut x = seed + 1;
    (0..lines)
        .map(|_| {
            let (a, b) = (lcg(&mut x) % 50, lcg(&mut x) % 50);
            format!("{a} + {b} = {}.\n", a + b)
        })
        .collect()
}

struct Setup {
    dir: tempfile::TempDir,
}

impl Setup {
    fn new() -> Setup {
        let dir = tempfile::tempdir().unwrap();
        let s = Setup { dir };
        TinyModel { n_embd: 64, n_layer: 4, n_ff: 128, tied: true, n_ctx: 256, ..Default::default() }.write(&s.path("teacher.gguf"));
        std::fs::write(s.path("prose.txt"), prose(1, 5000)).unwrap();
        std::fs::write(s.path("general.txt"), prose(99, 400)).unwrap();
        std::fs::write(s.path("sums.txt"), sums(7, 1500)).unwrap();
        std::fs::write(s.path("sums_heldout.txt"), sums(1234, 120)).unwrap();
        std::fs::write(s.path("lenient.toml"), "[capability.general]\nmin_top1 = 0.0\n").unwrap();
        let p = |n: &str| s.path(n).display().to_string();
        let cfg = format!(
            r#"teacher = "{}"
run_dir = "{}"
seed = 3
[data]
sources = ["{}"]
seq_len = 32
[profile]
n_ctx = 32
max_tokens = 256
ablation_tokens = 32
[student]
n_embd = 32
n_layer = 2
n_head = 2
n_head_kv = 1
n_ff = 64
[train]
steps = 30
batch = 4
lr = 3e-3
warmup = 4
anchor = 0.1
anchor_every = 1
vocab_chunk = 100
checkpoint_every = 30
[verify]
contract = "{}"
sets = [["general", "{}"], ["arithmetic", "{}"]]
n_ctx = 64
max_tokens = 1024
top_k = 8
"#,
            p("teacher.gguf"),
            p("run"),
            p("prose.txt"),
            p("lenient.toml"),
            p("general.txt"),
            p("sums_heldout.txt")
        );
        std::fs::write(s.path("run.toml"), cfg).unwrap();
        s
    }

    fn path(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }

    fn s(&self, name: &str) -> String {
        self.path(name).display().to_string()
    }
}

fn train_lora_args<'a>(s: &'a [String], extra: &[&'a str]) -> Vec<&'a str> {
    let mut v: Vec<&str> = s.iter().map(String::as_str).collect();
    v.extend_from_slice(extra);
    v
}

fn report(path: &Path) -> serde_json::Value {
    serde_json::from_str(&std::fs::read_to_string(path).unwrap()).unwrap()
}

#[test]
fn an_adapter_is_trained_served_and_lowers_the_kl_on_its_capability() {
    let s = Setup::new();
    ok(&cli(&["distill", "run", "-c", &s.s("run.toml"), "-t", "2"]));
    // The adapter's base is a copy: `distill verify` below re-exports the run's own file.
    let student = s.path("base.q8_0.gguf");
    std::fs::copy(s.path("run/student.q8_0.gguf"), &student).unwrap();
    let base_bytes = std::fs::read(&student).unwrap();
    let adapter = s.s("sums.lora.gguf");
    let args = [
        "distill", "train-lora", "--base", &s.s("base.q8_0.gguf"), "--teacher", &s.s("teacher.gguf"),
        "--data", &s.s("sums.txt"), "--held-out", &s.s("sums_heldout.txt"), "--rank", "4", "--alpha", "8",
        "--targets", "q,k,v,o,gate,up,down", "--steps", "100", "--batch", "4", "--seq-len", "32", "--lr", "1e-2",
        "--warmup", "5", "--ce", "0", "--vocab-chunk", "100", "-t", "2", "--metrics", &s.s("lora_metrics.jsonl"), "-o", &adapter,
    ];
    let out = cli(&args);
    ok(&out);
    assert!(text(&out.stdout).contains("14 pairs, rank 4"), "{}", text(&out.stdout));

    // The loss falls by a clear margin. It is the KL term alone (--ce 0): the tiny teacher has
    // random weights, so the text's own next tokens are not what it predicts and a CE term
    // would pull the adapter away from the teacher this test measures against.
    let loss: Vec<f64> = std::fs::read_to_string(s.path("lora_metrics.jsonl"))
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str::<serde_json::Value>(l).unwrap()["loss"].as_f64().unwrap())
        .collect();
    assert_eq!(loss.len(), 100);
    let (first, last) = (loss[..10].iter().sum::<f64>() / 10.0, loss[90..].iter().sum::<f64>() / 10.0);
    assert!(last < 0.8 * first, "loss did not fall: {first} → {last}");

    // The base file is untouched; the adapter is llama.cpp's LoRA GGUF with only A/B tensors.
    assert!(std::fs::read(&student).unwrap() == base_bytes, "the base file changed");
    let file = nexus_runtime::gguf::GgufFile::open(&adapter).unwrap();
    assert_eq!(file.get("general.type").and_then(|v| v.as_str()), Some("adapter"));
    assert_eq!(file.get("adapter.type").and_then(|v| v.as_str()), Some("lora"));
    assert_eq!(file.get_f32("adapter.lora.alpha").unwrap(), 8.0);
    let names: Vec<&str> = file.tensors().iter().map(|t| t.name.as_str()).collect();
    assert_eq!(names.len(), 28, "{names:?}");
    assert!(names.iter().all(|n| n.ends_with(".weight.lora_a") || n.ends_with(".weight.lora_b")), "{names:?}");
    let a = file.tensor_info("blk.1.ffn_down.weight.lora_a").unwrap();
    let b = file.tensor_info("blk.1.ffn_down.weight.lora_b").unwrap();
    assert_eq!((a.dims.as_slice(), b.dims.as_slice()), (&[64u64, 4][..], &[4u64, 32][..]), "lora_a is [n_in, rank], lora_b [rank, n_out]");

    // `run --lora` loads it and it changes the output.
    let st = s.s("base.q8_0.gguf");
    let gen = |lora: Option<&str>| {
        let mut a = vec!["run", "-m", &st, "-p", "12 + 30 =", "-n", "16", "--temp", "0", "-t", "2"];
        if let Some(l) = lora {
            a.extend(["--lora", l]);
        }
        let out = cli(&a);
        ok(&out);
        text(&out.stdout)
    };
    let (plain, adapted) = (gen(None), gen(Some(&adapter)));
    assert_ne!(plain, adapted, "the adapter did not change the output");

    // distill verify --lora: lower KL to the teacher on the capability's held-out set.
    let lora_arg = format!("arithmetic={adapter}");
    let out = cli(&["distill", "verify", "-c", &s.s("run.toml"), "-t", "2", "--lora", &lora_arg]);
    ok(&out);
    assert!(text(&out.stderr).contains("KL without → with"), "{}", text(&out.stderr));
    let check = |r: &serde_json::Value| {
        let cmp = &r["adapters"][0];
        assert_eq!(cmp["capability"], "arithmetic");
        let (without, with) = (cmp["without"]["kl"]["value"].as_f64().unwrap(), cmp["with"]["kl"]["value"].as_f64().unwrap());
        assert!(with < 0.9 * without, "KL with the adapter {with}, without {without}");
        let plain = r["capabilities"].as_array().unwrap().iter().find(|c| c["name"] == "arithmetic").unwrap();
        assert_eq!(plain["kl"], cmp["without"]["kl"]);
    };
    check(&report(&s.path("run/verify_report.json")));
    // The same on a student file named directly (no checkpoint involved).
    ok(&cli(&["distill", "verify", "-c", &s.s("run.toml"), "-t", "2", "--student", &st, "--lora", &lora_arg]));
    check(&report(&s.path("run/verify_base.q8_0.json")));
    assert!(std::fs::read(&student).unwrap() == base_bytes, "the base file changed");
}

#[test]
fn bad_input_is_refused_with_the_problem_named() {
    let s = Setup::new();
    let base = s.path("student.gguf");
    TinyModel { n_embd: 32, n_layer: 2, n_ff: 64, tied: true, seed: 5, ..Default::default() }.write(&base);
    let common: Vec<String> = ["distill", "train-lora", "--base", &s.s("student.gguf"), "--teacher", &s.s("teacher.gguf"), "-o", &s.s("x.lora.gguf"), "--steps", "2", "--batch", "2", "--seq-len", "16", "-t", "2"]
        .iter()
        .map(|x| x.to_string())
        .collect();
    let expect_err = |extra: &[&str], needles: &[&str]| {
        let out = cli(&train_lora_args(&common, extra));
        let err = text(&out.stderr);
        assert!(!out.status.success(), "{extra:?} succeeded");
        assert!(!err.contains("panicked"), "{err}");
        for n in needles {
            assert!(err.contains(n), "{extra:?}: {n:?} not in: {err}");
        }
        assert!(!s.path("x.lora.gguf").exists(), "{extra:?} wrote an adapter");
    };
    let sums = s.s("sums.txt");
    expect_err(&["--data", &sums, "--rank", "0"], &["--rank", "0"]);
    expect_err(&["--data", &sums, "--rank", "2", "--targets", "q,proj"], &["proj", "gate"]);
    expect_err(&["--data", &sums, "--rank", "999"], &["999"]);
    expect_err(&["--data", "/nonexistent/d.txt", "--rank", "2"], &["/nonexistent/d.txt"]);
    std::fs::write(s.path("empty.txt"), "\n").unwrap();
    expect_err(&["--data", &s.s("empty.txt"), "--rank", "2"], &["empty.txt"]);
    // Training data that overlaps the capability's held-out set.
    expect_err(&["--data", &sums, "--held-out", &sums, "--rank", "2"], &["sums.txt"]);
    // A teacher of another vocabulary.
    TinyModel { n_vocab: 400, n_embd: 64, n_layer: 2, n_ff: 128, tied: true, ..Default::default() }.write(&s.path("other.gguf"));
    let mut other = common.clone();
    other[5] = s.s("other.gguf");
    let out = cli(&train_lora_args(&other, &["--data", &sums, "--rank", "2"]));
    let err = text(&out.stderr);
    assert!(!out.status.success() && err.contains("vocabulary") && err.contains("400") && err.contains("other.gguf"), "{err}");
    // A base that is not a model.
    let mut not_model = common.clone();
    not_model[3] = sums.clone();
    let out = cli(&train_lora_args(&not_model, &["--data", &sums, "--rank", "2"]));
    assert!(!out.status.success() && text(&out.stderr).contains("sums.txt"), "{}", text(&out.stderr));
    // It works once the input is right; verify refuses an adapter for a capability it does not measure.
    ok(&cli(&train_lora_args(&common, &["--data", &sums, "--rank", "2"])));
    let lora = format!("nosuch={}", s.s("x.lora.gguf"));
    let out = cli(&["distill", "verify", "-c", &s.s("run.toml"), "--student", &s.s("student.gguf"), "--lora", &lora]);
    let err = text(&out.stderr);
    assert!(!out.status.success() && err.contains("nosuch") && err.contains("arithmetic"), "{err}");
    let out = cli(&["distill", "verify", "-c", &s.s("run.toml"), "--student", &s.s("student.gguf"), "--lora", "arithmetic"]);
    assert!(!out.status.success() && text(&out.stderr).contains("CAPABILITY=FILE"), "{}", text(&out.stderr));
}

fn as_refs(v: &[String]) -> Vec<&str> {
    v.iter().map(String::as_str).collect()
}

/// Ctrl-C stops an adapter run after its step with the state saved in `OUT.checkpoint/` (exit
/// 130, nothing written at OUT); running again without `--resume` is refused, with another
/// rank too; `--resume` finishes it to the very adapter and losses of an uninterrupted run, and
/// the checkpoint folder goes once the adapter is written.
#[test]
fn an_interrupted_adapter_run_resumes_to_the_same_adapter() {
    use std::time::{Duration, Instant};
    let s = Setup::new();
    TinyModel { n_embd: 32, n_layer: 2, n_ff: 64, tied: true, n_ctx: 256, ..Default::default() }.write(&s.path("base.gguf"));
    let run = |out: &str, extra: &[&str]| -> Vec<String> {
        let mut v: Vec<String> = [
            "distill", "train-lora", "--base", &s.s("base.gguf"), "--teacher", &s.s("teacher.gguf"), "--data", &s.s("sums.txt"),
            "--rank", "4", "--steps", "400", "--batch", "2", "--seq-len", "32", "--vocab-chunk", "100", "-t", "2",
            "--checkpoint-every", "4", "--metrics", &s.s(&format!("{out}.jsonl")), "-o", &s.s(out),
        ]
        .iter()
        .map(|x| x.to_string())
        .collect();
        v.extend(extra.iter().map(|x| x.to_string()));
        v
    };
    ok(&cli(&as_refs(&run("whole.gguf", &[]))));
    assert!(!s.path("whole.gguf.checkpoint").exists(), "a finished run leaves its checkpoint");

    let mut child = Command::new(env!("CARGO_BIN_EXE_nexus-cli")).args(run("parts.gguf", &[])).stderr(std::process::Stdio::piped()).spawn().unwrap();
    let t0 = Instant::now();
    while !s.path("parts.gguf.checkpoint").exists() && t0.elapsed() < Duration::from_secs(120) {
        assert!(child.try_wait().unwrap().is_none(), "the run ended before its first checkpoint");
        std::thread::sleep(Duration::from_millis(2));
    }
    assert_eq!(unsafe { libc::kill(child.id() as i32, libc::SIGINT) }, 0);
    let out = child.wait_with_output().unwrap();
    let err = text(&out.stderr);
    assert_eq!(out.status.code(), Some(130), "{err}");
    assert!(err.contains("interrupted at step") && err.contains("--resume"), "{err}");
    assert!(!s.path("parts.gguf").exists(), "an interrupted run wrote its adapter");

    // Without --resume (the saved run is not overwritten), and resumed with another rank.
    let mut other_rank = run("parts.gguf", &["--resume"]);
    let i = other_rank.iter().position(|a| a == "--rank").unwrap();
    other_rank[i + 1] = "2".into();
    for (args, says) in [(run("parts.gguf", &[]), "--resume"), (other_rank, "another run")] {
        let out = cli(&as_refs(&args));
        let err = text(&out.stderr);
        assert!(!out.status.success() && err.contains("parts.gguf.checkpoint") && err.contains(says), "{err}");
    }
    ok(&cli(&as_refs(&run("parts.gguf", &["--resume"]))));
    assert!(!s.path("parts.gguf.checkpoint").exists());

    let losses = |name: &str| -> Vec<f64> {
        std::fs::read_to_string(s.path(name)).unwrap().lines().map(|l| serde_json::from_str::<serde_json::Value>(l).unwrap()["loss"].as_f64().unwrap()).collect()
    };
    assert_eq!(losses("whole.gguf.jsonl").len(), 400);
    assert_eq!(losses("whole.gguf.jsonl"), losses("parts.gguf.jsonl"));
    let (a, b) = (nexus_runtime::gguf::GgufFile::open(s.path("whole.gguf")).unwrap(), nexus_runtime::gguf::GgufFile::open(s.path("parts.gguf")).unwrap());
    assert_eq!(a.tensors().len(), b.tensors().len());
    for (x, y) in a.tensors().iter().zip(b.tensors()) {
        assert_eq!((&x.name, a.tensor_data(x)), (&y.name, b.tensor_data(y)), "tensor {}", x.name);
    }
}

/// `--prompts`: the teacher answers the capability's prompts first (OUTPUT.answers.jsonl with
/// its record), the answers are the training data, and a second run reuses them; a teacher
/// without a chat template cannot answer, and a run needs `--data` or `--prompts`.
#[test]
fn an_adapter_trains_on_the_teachers_answers_to_prompts() {
    use nexus_runtime::gguf::Value;
    let s = Setup::new();
    let chatml = "{% for message in messages %}{{'<|im_start|>' + message['role'] + '\\n' + message['content'] + '<|im_end|>' + '\\n'}}{% endfor %}{% if add_generation_prompt %}{{ '<|im_start|>assistant\\n' }}{% endif %}";
    let mut w = TinyModel { n_embd: 64, n_layer: 4, n_ff: 128, tied: true, n_ctx: 256, ..Default::default() }.writer(&[]);
    w.set("tokenizer.chat_template".to_string(), Value::String(chatml.into()));
    w.write(s.path("chat_teacher.gguf")).unwrap();
    TinyModel { n_embd: 32, n_layer: 2, n_ff: 64, tied: true, n_ctx: 256, ..Default::default() }.write(&s.path("base.gguf"));
    let prompts: Vec<String> = ["What is 2 plus 3?", "Add 7 and 8.", "What is 10 minus 4?"]
        .iter()
        .enumerate()
        .map(|(i, p)| serde_json::json!({"id": format!("a{i}"), "category": "arithmetic", "prompt": p}).to_string())
        .collect();
    std::fs::write(s.path("prompts.jsonl"), prompts.join("\n") + "\n").unwrap();
    let args = |teacher: &str, data: &[&str]| -> Vec<String> {
        let mut v: Vec<String> = ["distill", "train-lora", "--base", &s.s("base.gguf"), "--teacher", &s.s(teacher), "--rank", "2", "--steps", "3", "--batch", "2", "--seq-len", "16", "--vocab-chunk", "100", "-t", "2", "-o", &s.s("ans.lora.gguf")]
            .iter()
            .map(|x| x.to_string())
            .collect();
        v.extend(data.iter().map(|x| x.to_string()));
        v
    };
    let with_prompts = ["--prompts", &s.s("prompts.jsonl"), "--per-prompt", "2", "--answer-tokens", "24"];
    let out = cli(&as_refs(&args("chat_teacher.gguf", &with_prompts)));
    ok(&out);
    assert!(text(&out.stderr).contains("answers"), "{}", text(&out.stderr));
    let answers = std::fs::read_to_string(s.path("ans.lora.gguf.answers.jsonl")).unwrap();
    assert!((1..=6).contains(&answers.lines().count()), "{answers}");
    assert!(s.path("ans.lora.gguf.answers.json").exists());
    let file = nexus_runtime::gguf::GgufFile::open(s.path("ans.lora.gguf")).unwrap();
    assert!(format!("{:?}", file.get("nexus.lora.data")).contains("ans.lora.gguf.answers.jsonl"));

    // Again: the answers are reused, not generated again.
    let out = cli(&as_refs(&args("chat_teacher.gguf", &with_prompts)));
    ok(&out);
    assert!(!text(&out.stderr).contains("answers"), "{}", text(&out.stderr));
    assert_eq!(std::fs::read_to_string(s.path("ans.lora.gguf.answers.jsonl")).unwrap(), answers);

    let out = cli(&as_refs(&args("teacher.gguf", &with_prompts)));
    assert!(!out.status.success() && text(&out.stderr).contains("chat template"), "{}", text(&out.stderr));
    let out = cli(&as_refs(&args("chat_teacher.gguf", &[])));
    assert!(!out.status.success() && text(&out.stderr).contains("--data"), "{}", text(&out.stderr));
}
