//! The data stage end to end: teacher generation on a fixture model (deterministic whatever
//! the thread count), its output loaded back as training documents with provenance, and the
//! committed prompt and held-out sets checked against each other (and, where the real
//! teacher has been fetched, tokenized with it).

use std::path::{Path, PathBuf};

use nexus_runtime::chat_template::{self, ChatTemplate};
use nexus_runtime::model::Model;
use nexus_runtime::tokenizer::Tokenizer;
use nexus_train::data::{
    answer_seed, build_corpus, check_held_out, generate_from_teacher, load_documents, load_held_out_files, load_prompts, tokenize_documents, Dataset,
    GenerateConfig, GeneratedAnswer, Provenance, SourceFormat,
};
use nexus_train::verify::default_capabilities;

fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("..")
}

fn distill() -> PathBuf {
    root().join("models/distill")
}

fn heldout_files() -> Vec<PathBuf> {
    default_capabilities(&distill().join("heldout")).into_iter().map(|c| c.path).collect()
}

fn generate_in_pool(threads: usize, model: &Model, tok: &Tokenizer, prompts: &Path, cfg: &GenerateConfig, out: &Path) -> Vec<(usize, usize)> {
    let template = ChatTemplate::builtin("chatml", "<s>", "</s>").unwrap();
    let pool = rayon::ThreadPoolBuilder::new().num_threads(threads).build().unwrap();
    let mut calls = Vec::new();
    pool.install(|| generate_from_teacher(model, tok, &template, prompts, cfg, out, &mut |d, n| calls.push((d, n))).unwrap());
    calls
}

#[test]
fn generation_is_deterministic_given_the_seed_whatever_the_thread_count() {
    let model = Model::load(root().join("tests/fixtures/golden/llama-spm-gqa.f32.gguf")).unwrap();
    let tok = Tokenizer::from_gguf(model.file()).unwrap();
    let dir = tempfile::tempdir().unwrap();
    let prompts = dir.path().join("prompts.jsonl");
    std::fs::write(
        &prompts,
        "{\"id\": \"a\", \"category\": \"general\", \"prompt\": \"Name three rivers.\"}\n\
         {\"id\": \"b\", \"category\": \"code\", \"prompt\": \"Write a loop.\"}\n\
         {\"prompt\": \"What is 12 plus 30?\"}\n",
    )
    .unwrap();
    let cfg = GenerateConfig { max_tokens: 12, temperature: 1.0, top_p: 0.95, seed: 7, per_prompt: 2 };
    let (one, three) = (dir.path().join("one.jsonl"), dir.path().join("three.jsonl"));
    let calls = generate_in_pool(1, &model, &tok, &prompts, &cfg, &one);
    assert_eq!(calls.last(), Some(&(6, 6)));
    assert_eq!(calls.len(), 6);
    generate_in_pool(3, &model, &tok, &prompts, &cfg, &three);
    let (a, b) = (std::fs::read_to_string(&one).unwrap(), std::fs::read_to_string(&three).unwrap());
    assert_eq!(a, b, "the same answers with 1 and 3 threads");

    let answers: Vec<GeneratedAnswer> = a.lines().map(|l| serde_json::from_str(l).unwrap()).collect();
    assert!(!answers.is_empty());
    for ans in &answers {
        let p = ["a", "b", "3"].iter().position(|id| *id == ans.id).unwrap();
        assert_eq!(ans.seed, answer_seed(7, p, ans.sample));
        assert_eq!((ans.temperature, ans.top_p), (1.0, 0.95));
        assert!(ans.tokens <= 12 && !ans.response.trim().is_empty());
    }
    assert_eq!(answers.iter().find(|a| a.id == "3").map(|a| a.category.as_str()), Some("general"));
    let distinct: std::collections::HashSet<&str> = answers.iter().map(|a| a.response.as_str()).collect();
    assert!(distinct.len() > 1, "answers differ between seeds");

    let other = dir.path().join("other.jsonl");
    generate_in_pool(2, &model, &tok, &prompts, &GenerateConfig { seed: 8, ..cfg.clone() }, &other);
    assert_ne!(std::fs::read_to_string(&other).unwrap(), a, "another seed, other answers");

    // The answers become training data with a record of where they came from.
    let corpus = build_corpus(std::slice::from_ref(&one), &tok, Some(&ChatTemplate::builtin("chatml", "<s>", "</s>").unwrap()), &heldout_files()).unwrap();
    assert_eq!(corpus.sources[0].format, SourceFormat::Jsonl);
    assert_eq!(corpus.sources[0].documents, answers.len());
    assert_eq!(corpus.sources[0].tokens, corpus.tokens.len());
    let prov = corpus.provenance(None);
    assert_eq!(prov.held_out.len(), 4);
    let path = prov.write(dir.path()).unwrap();
    assert_eq!(Provenance::load(&path).unwrap().total_tokens, corpus.tokens.len());
    let mut ds = Dataset::new(corpus.tokens, 8, 1).unwrap();
    assert_eq!(ds.next_batch(2).inputs.len(), 16);
}

#[test]
fn generation_settings_are_checked() {
    let model = Model::load(root().join("tests/fixtures/golden/llama-spm-gqa.f32.gguf")).unwrap();
    let tok = Tokenizer::from_gguf(model.file()).unwrap();
    let template = ChatTemplate::builtin("chatml", "<s>", "</s>").unwrap();
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("out.jsonl");
    let prompts = distill().join("prompts.jsonl");
    for bad in [GenerateConfig { top_p: 0.0, ..Default::default() }, GenerateConfig { per_prompt: 0, ..Default::default() }] {
        let e = generate_from_teacher(&model, &tok, &template, &prompts, &bad, &out, &mut |_, _| {}).unwrap_err();
        assert!(e.to_string().contains("prompts.jsonl"), "{e}");
    }
    let missing = dir.path().join("none.jsonl");
    let e = generate_from_teacher(&model, &tok, &template, &missing, &GenerateConfig::default(), &out, &mut |_, _| {}).unwrap_err();
    assert!(e.to_string().contains("none.jsonl"), "{e}");
    assert!(!out.exists(), "nothing written on failure");
}

#[test]
fn the_committed_prompt_set_is_varied_and_never_overlaps_the_held_out_sets() {
    let prompts = load_prompts(&distill().join("prompts.jsonl")).unwrap();
    assert!((150..=300).contains(&prompts.len()), "{} prompts", prompts.len());
    for cat in ["general", "chat", "code", "arithmetic"] {
        let n = prompts.iter().filter(|p| p.category == cat).count();
        assert!(n >= 25, "only {n} {cat} prompts");
    }
    let mut ids: Vec<&str> = prompts.iter().map(|p| p.id.as_str()).collect();
    ids.sort_unstable();
    ids.dedup();
    assert_eq!(ids.len(), prompts.len(), "prompt ids are unique");

    let held = load_held_out_files(&heldout_files()).unwrap();
    let as_training: Vec<(String, String)> = prompts.iter().map(|p| (format!("prompts.jsonl#{}", p.id), p.prompt.clone())).collect();
    check_held_out(&as_training, &held).unwrap();
    // And the check is live: a held-out paragraph pasted into training is caught.
    let leaked = vec![("leak.txt".to_string(), held[0].1.chars().take(400).collect::<String>())];
    assert!(check_held_out(&leaked, &held).is_err());
}

fn smollm2() -> Option<(Model, Tokenizer, ChatTemplate)> {
    let path = root().join("models/SmolLM2-135M-Instruct.Q4_1.gguf");
    if !path.exists() {
        eprintln!("skipped: {} is absent (models/fetch.sh fetches it)", path.display());
        return None;
    }
    let model = Model::load(&path).unwrap();
    let tok = Tokenizer::from_gguf(model.file()).unwrap();
    let text_of = |id: Option<u32>| id.and_then(|i| tok.token_text(i)).unwrap_or("").to_string();
    let src = model.file().get("tokenizer.chat_template").and_then(|v| v.as_str()).map(str::to_string);
    let template = chat_template::resolve(None, src.as_deref(), &text_of(tok.bos()), &text_of(tok.eos())).unwrap();
    Some((model, tok, template))
}

#[test]
fn chat_items_render_with_the_teachers_template_and_sets_have_the_planned_size() {
    let Some((_model, tok, template)) = smollm2() else { return };
    let dir = tempfile::tempdir().unwrap();
    let p = dir.path().join("chat.jsonl");
    std::fs::write(&p, "{\"messages\": [{\"role\": \"user\", \"content\": \"Hi there\"}, {\"role\": \"assistant\", \"content\": \"Hello! How can I help?\"}]}\n").unwrap();
    let docs = load_documents(&p, Some(&template)).unwrap();
    assert!(docs[0].text.contains("<|im_start|>user\nHi there<|im_end|>"), "{:?}", docs[0].text);
    let ids = tokenize_documents(&tok, &docs);
    let im_start = tok.token_id("<|im_start|>").unwrap();
    assert!(ids.iter().filter(|&&t| t == im_start).count() >= 2, "control tokens are single ids: {ids:?}");
    assert_eq!(ids.last().copied(), tok.eos(), "documents end with the separator");

    for path in heldout_files() {
        let docs = load_documents(&path, Some(&template)).unwrap();
        let n = tokenize_documents(&tok, &docs).len();
        eprintln!("{}: {n} tokens", path.display());
        assert!((3000..=6500).contains(&n), "{}: {n} tokens", path.display());
    }
}

#[test]
fn a_training_file_holding_held_out_text_is_refused_naming_both_files() {
    let model = Model::load(root().join("tests/fixtures/golden/llama-spm-gqa.f32.gguf")).unwrap();
    let tok = Tokenizer::from_gguf(model.file()).unwrap();
    let dir = tempfile::tempdir().unwrap();
    let general = distill().join("heldout/general.txt");
    let paragraph = std::fs::read_to_string(&general).unwrap().split("\n\n").nth(3).unwrap().to_string();
    let clean = dir.path().join("clean.txt");
    std::fs::write(&clean, "Our own notes about gardening, which appear nowhere in the held-out sets at all.\n").unwrap();
    let leaky = dir.path().join("leaky.jsonl");
    std::fs::write(&leaky, format!("{}\n", serde_json::json!({"text": format!("Copied: {}", paragraph.to_uppercase())}))).unwrap();

    let ok = build_corpus(std::slice::from_ref(&clean), &tok, None, &heldout_files()).unwrap();
    assert_eq!(ok.sources[0].documents, 1);
    let e = build_corpus(&[clean, leaky], &tok, None, &heldout_files()).unwrap_err().to_string();
    assert!(e.contains("general.txt") && e.contains("leaky.jsonl"), "{e}");
}

/// The real teacher answering the first prompts of the committed set (slow on a CPU, so
/// ignored by default; needs models/fetch.sh): answers end at the teacher's end of turn or
/// the token limit, and are read back as chat documents.
#[test]
#[ignore]
fn smollm2_answers_the_committed_prompts() {
    let Some((model, tok, template)) = smollm2() else { return };
    let dir = tempfile::tempdir().unwrap();
    let prompts = dir.path().join("prompts.jsonl");
    let lines: Vec<String> = std::fs::read_to_string(distill().join("prompts.jsonl")).unwrap().lines().step_by(50).map(str::to_string).collect();
    std::fs::write(&prompts, lines.join("\n")).unwrap();
    let out = dir.path().join("answers.jsonl");
    let cfg = GenerateConfig { max_tokens: 48, ..GenerateConfig::default() };
    let rec = generate_from_teacher(&model, &tok, &template, &prompts, &cfg, &out, &mut |_, _| {}).unwrap();
    let text = std::fs::read_to_string(&out).unwrap();
    eprintln!("{text}");
    assert_eq!(rec.count + rec.empty_answers, lines.len());
    assert!(text.lines().all(|l| l.contains("\"stop\":\"eog\"") || l.contains("\"stop\":\"max_tokens\"")));
    let docs = load_documents(&out, Some(&template)).unwrap();
    assert!(docs.iter().all(|d| d.special && d.text.contains("<|im_start|>assistant\n")));
}
