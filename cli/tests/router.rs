//! The router end to end (`distill train-router`, `run`/`chat --router --lora-cap`, a bundle
//! with a router): on a tiny model, prompts whose capabilities use different token ranges are
//! routed right on held-out prompts (and not with shuffled labels); the router file
//! round-trips; `run` applies the routed adapter (its text is `--lora ADAPTER`'s) and names it
//! on stderr; `--capability` overrides; below the threshold the base runs; a router for another
//! backbone is refused; bad data, unknown capabilities and a layer out of range are named.

use std::path::{Path, PathBuf};
use std::process::Output;

use nexus_runtime::router::Router;
use nexus_tests::lora::LoraSpec;
use nexus_tests::cli::{assert_error, text};
use nexus_tests::TinyModel;
use rand::seq::SliceRandom;
use rand::{Rng, SeedableRng};

fn cli_with_stdin(args: &[&str], stdin: &str) -> Output {
    nexus_tests::cli::run(env!("CARGO_BIN_EXE_nexus-cli"), args, stdin)
}

fn cli(args: &[&str]) -> Output {
    cli_with_stdin(args, "")
}

fn ok(o: &Output) -> (String, String) {
    assert!(o.status.success(), "stdout:\n{}\nstderr:\n{}", text(&o.stdout), text(&o.stderr));
    (text(&o.stdout), text(&o.stderr))
}

fn s(p: &Path) -> &str {
    p.to_str().unwrap()
}

/// Characters of each class: disjoint byte ranges, so disjoint token ranges.
const CLASSES: [(&str, &str); 3] = [("none", "pqrstuvwxyz"), ("code", "abcdefgh"), ("math", "0123456789")];

fn prompt(chars: &str, rng: &mut impl Rng) -> String {
    let c: Vec<char> = chars.chars().collect();
    (0..rng.gen_range(6..20)).map(|_| c[rng.gen_range(0..c.len())]).collect()
}

struct Files {
    dir: tempfile::TempDir,
    base: PathBuf,
    code: PathBuf,
    math: PathBuf,
    data: PathBuf,
}

impl Files {
    fn path(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }
}

/// A tiny base, two adapters for it, and 60 labelled prompts per class (`shuffled`: the same
/// prompts with their labels permuted).
fn files(shuffled: bool) -> Files {
    let dir = tempfile::tempdir().unwrap();
    let m = TinyModel { n_ctx: 512, ..Default::default() };
    let base = dir.path().join("base.gguf");
    m.write(&base);
    let (code, math) = (dir.path().join("code.lora.gguf"), dir.path().join("math.lora.gguf"));
    LoraSpec::for_model(&m, &["blk.0.attn_q.weight", "blk.1.ffn_up.weight", "output.weight"], 4, 8.0, 41).write(&code);
    LoraSpec::for_model(&m, &["blk.0.attn_v.weight", "blk.1.ffn_down.weight", "output.weight"], 2, 4.0, 42).write(&math);
    let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(9);
    let mut rows: Vec<(String, &str)> = Vec::new();
    for _ in 0..60 {
        for (name, chars) in CLASSES {
            rows.push((prompt(chars, &mut rng), name));
        }
    }
    if shuffled {
        let mut labels: Vec<&str> = rows.iter().map(|r| r.1).collect();
        labels.shuffle(&mut rng);
        rows.iter_mut().zip(labels).for_each(|(r, l)| r.1 = l);
    }
    let data = dir.path().join("labelled.jsonl");
    let lines: Vec<String> = rows.iter().map(|(t, c)| serde_json::json!({"text": t, "capability": c}).to_string()).collect();
    std::fs::write(&data, lines.join("\n") + "\n").unwrap();
    Files { dir, base, code, math, data }
}

fn train(f: &Files, out: &Path, extra: &[&str]) -> Output {
    let mut args = vec!["distill", "train-router", "--base", s(&f.base), "--data", s(&f.data), "--layer", "1", "--seed", "3", "-t", "2", "-o", s(out)];
    args.extend_from_slice(extra);
    cli(&args)
}

fn heldout_accuracy(stdout: &str) -> f64 {
    let tail = stdout.split("held-out accuracy ").nth(1).unwrap_or_else(|| panic!("no accuracy in:\n{stdout}"));
    tail.split_whitespace().next().unwrap().parse().unwrap()
}

#[test]
fn train_router_separates_capabilities_and_fails_with_shuffled_labels() {
    let f = files(false);
    let out = f.path("router.gguf");
    let (stdout, _) = ok(&train(&f, &out, &["--hidden", "16"]));
    let acc = heldout_accuracy(&stdout);
    // Chance is 1/3; 36 held-out prompts (12 per class).
    assert!(acc >= 0.9, "held-out accuracy {acc}:\n{stdout}");
    for needle in ["| code |", "| math |", "| none |", "confusion"] {
        assert!(stdout.contains(needle), "{needle:?} in:\n{stdout}");
    }
    let png = std::fs::read(out.with_extension("confusion.png")).unwrap();
    assert_eq!(&png[..8], b"\x89PNG\r\n\x1a\n");

    // The file round-trips: what is read back writes the same bytes again.
    let router = Router::load(&out).unwrap();
    assert_eq!(router.layer, 1);
    assert_eq!(router.capabilities, ["code", "math"]);
    assert_eq!(router.layers.len(), 2);
    let again = f.path("again.gguf");
    router.write(&again).unwrap();
    assert_eq!(std::fs::read(&out).unwrap(), std::fs::read(&again).unwrap());
    let mut back = Router::load(&again).unwrap();
    back.path = router.path.clone();
    assert_eq!(back, router);

    // The same prompts with permuted labels: no router reaches the bound.
    let g = files(true);
    let (stdout, _) = ok(&train(&g, &g.path("shuffled.gguf"), &["--hidden", "16"]));
    let acc = heldout_accuracy(&stdout);
    assert!(acc < 0.6, "shuffled labels gave held-out accuracy {acc}:\n{stdout}");
}

fn run(f: &Files, extra: &[&str], prompt: &str) -> Output {
    let mut args = vec!["run", "-m", s(&f.base), "-p", prompt, "-n", "6", "--temp", "0", "-t", "2", "--device", "cpu"];
    args.extend_from_slice(extra);
    cli(&args)
}

#[test]
fn run_routes_each_prompt_and_capability_overrides() {
    let f = files(false);
    let r = f.path("router.gguf");
    ok(&train(&f, &r, &[]));
    let code = format!("code={}", s(&f.code));
    let math = format!("math={}", s(&f.math));
    let routed = |prompt: &str, extra: &[&str]| {
        let mut a = vec!["--router", s(&r), "--lora-cap", &code, "--lora-cap", &math];
        a.extend_from_slice(extra);
        ok(&run(&f, &a, prompt))
    };
    let (code_p, math_p, none_p) = ("abcabhdeffgab", "3141592653", "qrstuvwxyzzp");
    let with = |lora: &Path, p: &str| ok(&run(&f, &["--lora", s(lora)], p)).0;
    let base = |p: &str| ok(&run(&f, &[], p)).0;
    // The adapters change the text, so the comparisons below tell them apart.
    assert_ne!(with(&f.code, code_p), base(code_p));
    assert_ne!(with(&f.math, math_p), base(math_p));

    let (out, err) = routed(code_p, &[]);
    assert!(err.contains("router: capability code (adapter code), chosen by the router with confidence"), "{err}");
    assert_eq!(out, with(&f.code, code_p));
    let (out, err) = routed(math_p, &[]);
    assert!(err.contains("router: capability math (adapter math), chosen by the router"), "{err}");
    assert_eq!(out, with(&f.math, math_p));
    let (out, err) = routed(none_p, &[]);
    assert!(err.contains("router: the base (no adapter), chosen by the router"), "{err}");
    assert_eq!(out, base(none_p));

    // An explicit capability overrides the router, `none` included.
    let (out, err) = routed(code_p, &["--capability", "math"]);
    assert!(err.contains("capability math (adapter math), named explicitly"), "{err}");
    assert_eq!(out, with(&f.math, code_p));
    let (out, err) = routed(code_p, &["--capability", "none"]);
    assert!(err.contains("the base (no adapter), named explicitly"), "{err}");
    assert_eq!(out, base(code_p));
    assert_error(&run(&f, &["--router", s(&r), "--lora-cap", &code, "--lora-cap", &math, "--capability", "poetry"], code_p), &["unknown capability \"poetry\"", "code, math"]);

    // Below the threshold the base runs: a router whose best class is `code` at ~0.36.
    let mut weak = Router::load(&r).unwrap();
    let last = weak.layers.last_mut().unwrap();
    last.weight.iter_mut().for_each(|w| *w = 0.0);
    last.bias = vec![0.0, 0.1, 0.0];
    let weak_path = f.path("weak.gguf");
    weak.write(&weak_path).unwrap();
    let (out, err) = ok(&run(&f, &["--router", s(&weak_path), "--lora-cap", &code, "--lora-cap", &math], code_p));
    assert!(err.contains("the base (no adapter): the router's best, code, has confidence 0.3"), "{err}");
    assert!(err.contains("below its threshold"), "{err}");
    assert_eq!(out, base(code_p));

    // A capability the router can pick needs an adapter.
    assert_error(&run(&f, &["--router", s(&r), "--lora-cap", &code], code_p), &["router.gguf", "\"math\"", "no adapter"]);
}

#[test]
fn chat_routes_each_turn() {
    let f = files(false);
    let r = f.path("router.gguf");
    ok(&train(&f, &r, &[]));
    let (code, math) = (format!("code={}", s(&f.code)), format!("math={}", s(&f.math)));
    let args = ["chat", "-m", s(&f.base), "--chat-template", "chatml", "-n", "3", "--temp", "0", "-t", "2", "--router", s(&r), "--lora-cap", &code, "--lora-cap", &math];
    let (_, err) = ok(&cli_with_stdin(&args, "abcabhdeffgab\n2718281828\nqrstuvwxyzzp\n"));
    let picks: Vec<&str> = err.lines().filter(|l| l.starts_with("router: ") && l.contains("chosen by")).collect();
    assert_eq!(picks.len(), 3, "{err}");
    assert!(picks[0].contains("capability code"), "{err}");
    assert!(picks[1].contains("capability math"), "{err}");
    assert!(picks[2].contains("the base"), "{err}");
}

/// Routing on the GPU: the router reads the backbone on the CPU (a few layers of the prompt),
/// the chosen adapter goes up with the model, and the text is what `--lora` gives there; chat
/// switches adapters per turn on the device. Without a usable GPU (or CUDA in this binary) the
/// run fails for that reason alone: skipped, unless NEXUS_REQUIRE_CUDA is set.
#[test]
fn routing_runs_on_cuda() {
    let f = files(false);
    let r = f.path("router.gguf");
    ok(&train(&f, &r, &[]));
    let (code, math) = (format!("code={}", s(&f.code)), format!("math={}", s(&f.math)));
    let on_gpu = |extra: &[&str], prompt: &str| {
        let mut a = vec!["run", "-m", s(&f.base), "-p", prompt, "-n", "6", "--temp", "0", "--device", "cuda"];
        a.extend_from_slice(extra);
        cli(&a)
    };
    let math_p = "3141592653";
    let routed = on_gpu(&["--router", s(&r), "--lora-cap", &code, "--lora-cap", &math], math_p);
    let err = text(&routed.stderr);
    if !routed.status.success() {
        assert!(err.contains("CUDA") && !err.contains("router") && !err.contains("panicked"), "{err}");
        assert!(std::env::var_os("NEXUS_REQUIRE_CUDA").is_none(), "NEXUS_REQUIRE_CUDA is set: {err}");
        eprintln!("skipped: no usable GPU here ({})", err.trim());
        return;
    }
    assert!(err.contains("router: capability math (adapter math), chosen by the router"), "{err}");
    assert_eq!(text(&routed.stdout), ok(&on_gpu(&["--lora", s(&f.math)], math_p)).0);

    let args = ["chat", "-m", s(&f.base), "--chat-template", "chatml", "-n", "3", "--temp", "0", "--device", "cuda", "--router", s(&r), "--lora-cap", &code, "--lora-cap", &math];
    let (_, err) = ok(&cli_with_stdin(&args, "abcabhdeffgab\n2718281828\nqrstuvwxyzzp\n"));
    let picks: Vec<&str> = err.lines().filter(|l| l.starts_with("router: ") && l.contains("chosen by")).collect();
    assert_eq!(picks.len(), 3, "{err}");
    assert!(picks[0].contains("capability code") && picks[1].contains("capability math") && picks[2].contains("the base"), "{err}");
}

#[test]
fn bundle_with_a_router_routes_by_itself() {
    let f = files(false);
    let r = f.path("router.gguf");
    ok(&train(&f, &r, &[]));
    let bundle = f.path("nexus.gguf");
    let (code, math) = (format!("code={}", s(&f.code)), format!("math={}", s(&f.math)));
    ok(&cli(&["bundle", "pack", "--backbone", s(&f.base), "--adapter", &code, "--adapter", &math, "--router", s(&r), "-o", s(&bundle)]));
    let run_bundle = |extra: &[&str]| {
        let mut a = vec!["run", "-m", s(&bundle), "-p", "3141592653", "-n", "6", "--temp", "0", "-t", "2"];
        a.extend_from_slice(extra);
        cli(&a)
    };
    let (out, err) = ok(&run_bundle(&[]));
    assert!(err.contains("router: capability math (adapter math), chosen by the router"), "{err}");
    assert!(!err.contains("runs without an adapter"), "{err}");
    assert_eq!(out, ok(&run(&f, &["--lora", s(&f.math)], "3141592653")).0);
    let (_, err) = ok(&run_bundle(&["--capability", "code"]));
    assert!(!err.contains("chosen by the router"), "{err}");
    assert!(err.contains("capability code"), "{err}");
}

#[test]
fn a_router_for_another_backbone_is_refused() {
    let f = files(false);
    let r = f.path("router.gguf");
    ok(&train(&f, &r, &[]));
    let code = format!("code={}", s(&f.code));
    let math = format!("math={}", s(&f.math));
    // Same shapes, other weights.
    let other = f.path("other.gguf");
    TinyModel { n_ctx: 512, seed: 8, ..Default::default() }.write(&other);
    let o = cli(&["run", "-m", s(&other), "-p", "abc", "-n", "2", "--router", s(&r), "--lora-cap", &code, "--lora-cap", &math]);
    assert_error(&o, &["router.gguf", "another backbone", "other.gguf", "tensors sha256"]);
    // Another width.
    let narrow = f.path("narrow.gguf");
    TinyModel { n_ctx: 512, n_embd: 32, ..Default::default() }.write(&narrow);
    let o = cli(&["run", "-m", s(&narrow), "-p", "abc", "-n", "2", "--router", s(&r), "--capability", "none"]);
    assert_error(&o, &["router.gguf", "another backbone", "n_embd 64 vs 32"]);
}

#[test]
fn bad_input_is_named() {
    let f = files(false);
    let out = f.path("router.gguf");
    let bad = f.path("bad.jsonl");
    std::fs::write(&bad, "{\"text\": \"abc\", \"capability\": \"code\"}\n{\"text\": oops}\n").unwrap();
    let o = cli(&["distill", "train-router", "--base", s(&f.base), "--data", s(&bad), "--layer", "0", "-o", s(&out)]);
    assert_error(&o, &["bad.jsonl:2", "not JSON"]);
    std::fs::write(&bad, "{\"capability\": \"code\"}\n").unwrap();
    let o = cli(&["distill", "train-router", "--base", s(&f.base), "--data", s(&bad), "--layer", "0", "-o", s(&out)]);
    assert_error(&o, &["bad.jsonl:1", "no \"text\" field"]);
    let o = train(&f, &out, &["--capabilities", "code"]);
    assert_error(&o, &["labelled.jsonl:", "unknown capability \"math\"", "code"]);
    let o = cli(&["distill", "train-router", "--base", s(&f.base), "--data", s(&f.data), "--layer", "2", "-o", s(&out)]);
    assert_error(&o, &["base.gguf", "--layer 2 is out of range", "2 layers"]);
    assert!(!out.exists());
    // A file that is not a router.
    let o = cli(&["run", "-m", s(&f.base), "-p", "abc", "--router", s(&f.code), "--capability", "none"]);
    assert_error(&o, &["code.lora.gguf", "not a router", "adapter"]);
}
