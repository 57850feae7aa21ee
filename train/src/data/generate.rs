//! Text the teacher writes itself: each prompt of the committed prompt set, rendered with
//! the teacher's chat template, answered `per_prompt` times. Prompts run concurrently (one
//! shared model, one KV cache per worker); every answer has its own seed derived from the
//! run seed and its (prompt, sample) index, so the output is the same whatever the thread
//! count or the order in which workers finish.

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc;

use nexus_runtime::chat_template::{ChatTemplate, Message};
use nexus_runtime::decoder::CpuDecoder;
use nexus_runtime::generate::{generate, GenerateParams, Generation, StopReason};
use nexus_runtime::model::Model;
use nexus_runtime::sampling::SamplingParams;
use nexus_runtime::tokenizer::Tokenizer;
use rayon::prelude::*;
use serde::{Deserialize, Serialize};

use super::load::{parse_line, read_text, string_field};
use super::provenance::sha256_file;
use super::{write_atomic, DataError};

/// Sampling of the teacher's answers. Only temperature and top-p shape the distribution
/// (top-k, min-p and the repetition penalty are off), so these numbers say it all.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct GenerateConfig {
    /// Tokens per answer at most.
    pub max_tokens: usize,
    pub temperature: f32,
    pub top_p: f32,
    pub seed: u64,
    /// Answers drawn per prompt (each with its own seed).
    pub per_prompt: usize,
}

impl Default for GenerateConfig {
    fn default() -> Self {
        GenerateConfig { max_tokens: 256, temperature: 0.7, top_p: 0.9, seed: 20_260_101, per_prompt: 1 }
    }
}

/// One prompt of the prompt set: a JSONL line `{"id": …, "category": …, "prompt": …}`
/// (`id` defaults to the line number, `category` to "general").
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Prompt {
    pub id: String,
    pub category: String,
    pub prompt: String,
}

pub fn load_prompts(path: &Path) -> Result<Vec<Prompt>, DataError> {
    let text = read_text(path)?;
    let mut prompts = Vec::new();
    for (i, line) in text.lines().enumerate() {
        if line.trim().is_empty() {
            continue;
        }
        let item = parse_line(path, i + 1, line)?;
        let prompt = string_field(path, i + 1, &item, "prompt")?
            .ok_or_else(|| DataError::NoUsableField { path: path.to_path_buf(), line: i + 1, what: "no \"prompt\"".into() })?;
        let id = string_field(path, i + 1, &item, "id")?.map_or_else(|| (i + 1).to_string(), str::to_string);
        let category = string_field(path, i + 1, &item, "category")?.unwrap_or("general").to_string();
        prompts.push(Prompt { id, category, prompt: prompt.to_string() });
    }
    Ok(prompts)
}

/// What a generation run did, for `provenance.json`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct GenerationRecord {
    pub prompts_path: PathBuf,
    pub prompts_sha256: String,
    pub output_path: PathBuf,
    pub output_sha256: String,
    pub n_prompts: usize,
    pub per_prompt: usize,
    pub temperature: f32,
    pub top_p: f32,
    pub seed: u64,
    pub max_tokens: usize,
    /// How each answer's seed follows from `seed`.
    pub seed_rule: String,
    /// Answers written (empty answers are left out: there is nothing to learn from them).
    pub count: usize,
    pub empty_answers: usize,
    pub generated_tokens: usize,
    /// Which teacher answered: its file's name and size (answers are reused only for the same
    /// teacher; records written before this field read as no teacher, so they are redone).
    #[serde(default)]
    pub teacher: String,
    #[serde(default)]
    pub teacher_bytes: u64,
}

/// The `(name, size)` a [`GenerationRecord`] gives for the teacher `model`.
pub fn teacher_identity(model: &Model) -> (String, u64) {
    let path = model.file().path();
    let name = path.file_name().map_or_else(String::new, |n| n.to_string_lossy().into_owned());
    (name, std::fs::metadata(path).map_or(0, |m| m.len()))
}

/// One line of the output JSONL.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct GeneratedAnswer {
    pub id: String,
    pub category: String,
    pub sample: usize,
    pub prompt: String,
    pub response: String,
    pub seed: u64,
    pub temperature: f32,
    pub top_p: f32,
    pub tokens: usize,
    /// "eog" (the teacher ended its turn), "max_tokens" or "context_full".
    pub stop: String,
}

fn splitmix64(x: u64) -> u64 {
    let mut z = x.wrapping_add(0x9E37_79B9_7F4A_7C15);
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}

pub const SEED_RULE: &str = "splitmix64(splitmix64(seed + prompt_index) + sample)";

/// The seed of answer `sample` to prompt `prompt_index` (0-based, in file order).
pub fn answer_seed(seed: u64, prompt_index: usize, sample: usize) -> u64 {
    splitmix64(splitmix64(seed.wrapping_add(prompt_index as u64)).wrapping_add(sample as u64))
}

/// A prompt as the teacher sees it: the chat template's user turn and assistant header, BOS
/// added only when the vocabulary wants one and the template did not write it.
pub fn chat_prompt_tokens(tok: &Tokenizer, template: &ChatTemplate, prompt: &str) -> Result<Vec<u32>, nexus_runtime::chat_template::ChatTemplateError> {
    let text = template.render(&[Message::new("user", prompt)], true)?;
    let bos_text = tok.bos().and_then(|b| tok.token_text(b));
    let add_bos = tok.add_bos() && !bos_text.is_some_and(|b| !b.is_empty() && text.starts_with(b));
    let mut ids: Vec<u32> = if add_bos { tok.bos().into_iter().collect() } else { Vec::new() };
    ids.extend(tok.encode(&text, false, true));
    Ok(ids)
}

struct Job {
    prompt: usize,
    sample: usize,
    seed: u64,
}

fn stop_name(r: StopReason) -> &'static str {
    match r {
        StopReason::EndOfGeneration => "eog",
        StopReason::MaxTokens => "max_tokens",
        StopReason::StopString => "stop_string",
        StopReason::ContextFull => "context_full",
        StopReason::Cancelled => "cancelled",
    }
}

/// Answers every prompt of `prompts_path` `cfg.per_prompt` times and writes the answers to
/// `out_jsonl` (atomically, in prompt order). `progress(done, total)` is called on the
/// calling thread as answers complete.
pub fn generate_from_teacher(
    model: &Model,
    tok: &Tokenizer,
    template: &ChatTemplate,
    prompts_path: &Path,
    cfg: &GenerateConfig,
    out_jsonl: &Path,
    progress: &mut dyn FnMut(usize, usize),
) -> Result<GenerationRecord, DataError> {
    let bad = |what: String| DataError::BadConfig { path: prompts_path.to_path_buf(), what };
    if cfg.per_prompt == 0 || cfg.max_tokens == 0 {
        return Err(bad(format!("per_prompt ({}) and max_tokens ({}) must be at least 1", cfg.per_prompt, cfg.max_tokens)));
    }
    if !(cfg.temperature.is_finite() && cfg.temperature >= 0.0 && cfg.top_p > 0.0 && cfg.top_p <= 1.0) {
        return Err(bad(format!("temperature {} must be ≥ 0 and top_p {} in (0, 1]", cfg.temperature, cfg.top_p)));
    }
    let prompts = load_prompts(prompts_path)?;
    let rendered = prompts
        .iter()
        .enumerate()
        .map(|(i, p)| chat_prompt_tokens(tok, template, &p.prompt).map_err(|source| DataError::Template { path: prompts_path.to_path_buf(), line: i + 1, source }))
        .collect::<Result<Vec<_>, _>>()?;
    let capacity = rendered.iter().map(Vec::len).max().unwrap_or(0) + cfg.max_tokens;
    let jobs: Vec<Job> = (0..prompts.len())
        .flat_map(|p| (0..cfg.per_prompt).map(move |s| (p, s)))
        .map(|(prompt, sample)| Job { prompt, sample, seed: answer_seed(cfg.seed, prompt, sample) })
        .collect();
    let params = |seed| GenerateParams {
        max_tokens: Some(cfg.max_tokens),
        sampling: SamplingParams { temperature: cfg.temperature, top_k: 0, top_p: cfg.top_p, min_p: 0.0, repeat_penalty: 1.0, repeat_last_n: 0, seed },
        stop: Vec::new(),
    };

    let total = jobs.len();
    let cancel = AtomicBool::new(false);
    let mut results: Vec<Option<Generation>> = (0..total).map(|_| None).collect();
    let mut first_error: Option<(usize, nexus_runtime::model::ModelError)> = None;
    let (tx, rx) = mpsc::channel();
    // The workers run in the caller's rayon pool; this thread takes their results and reports
    // progress, lending itself to the pool while it waits (a one-thread pool would otherwise
    // never run them).
    rayon::in_place_scope(|s| {
        let (jobs, rendered, cancel, params) = (&jobs, &rendered, &cancel, &params);
        s.spawn(move |_| {
            jobs.par_iter().enumerate().for_each_init(
                || model.new_cache(capacity),
                |cache, (j, job)| {
                    if cancel.load(Ordering::Relaxed) {
                        return;
                    }
                    cache.clear();
                    let mut decoder = CpuDecoder { model, cache };
                    let r = generate(&mut decoder, tok, &rendered[job.prompt], &params(job.seed), cancel, |_| {});
                    if r.is_err() {
                        cancel.store(true, Ordering::Relaxed);
                    }
                    let _ = tx.send((j, r));
                },
            );
        });
        let mut done = 0;
        loop {
            match rx.try_recv() {
                Ok((j, r)) => {
                    match r {
                        Ok(g) => results[j] = Some(g),
                        Err(e) if first_error.as_ref().is_none_or(|(k, _)| j < *k) => first_error = Some((j, e)),
                        Err(_) => {}
                    }
                    done += 1;
                    progress(done, total);
                }
                Err(mpsc::TryRecvError::Disconnected) => break,
                Err(mpsc::TryRecvError::Empty) => {
                    if !matches!(rayon::yield_now(), Some(rayon::Yield::Executed)) {
                        std::thread::sleep(std::time::Duration::from_millis(2));
                    }
                }
            }
        }
    });
    if let Some((_, e)) = first_error {
        return Err(DataError::Generate(e));
    }

    let mut out = Vec::new();
    let (mut count, mut empty_answers, mut generated_tokens) = (0, 0, 0);
    for (job, g) in jobs.iter().zip(results) {
        let g = g.ok_or_else(|| bad("an answer was never produced (cancelled)".into()))?;
        generated_tokens += g.tokens.len();
        if g.text.trim().is_empty() {
            empty_answers += 1;
            continue;
        }
        let p = &prompts[job.prompt];
        let line = GeneratedAnswer {
            id: p.id.clone(),
            category: p.category.clone(),
            sample: job.sample,
            prompt: p.prompt.clone(),
            response: g.text,
            seed: job.seed,
            temperature: cfg.temperature,
            top_p: cfg.top_p,
            tokens: g.tokens.len(),
            stop: stop_name(g.stats.stop_reason).to_string(),
        };
        out.extend(serde_json::to_vec(&line).map_err(|e| bad(e.to_string()))?);
        out.push(b'\n');
        count += 1;
    }
    write_atomic(out_jsonl, &out).map_err(|source| DataError::Io { path: out_jsonl.to_path_buf(), source })?;
    let (teacher, teacher_bytes) = teacher_identity(model);
    Ok(GenerationRecord {
        prompts_path: prompts_path.to_path_buf(),
        prompts_sha256: sha256_file(prompts_path)?,
        output_path: out_jsonl.to_path_buf(),
        output_sha256: sha256_file(out_jsonl)?,
        n_prompts: prompts.len(),
        per_prompt: cfg.per_prompt,
        temperature: cfg.temperature,
        top_p: cfg.top_p,
        seed: cfg.seed,
        max_tokens: cfg.max_tokens,
        seed_rule: SEED_RULE.to_string(),
        count,
        empty_answers,
        generated_tokens,
        teacher,
        teacher_bytes,
    })
}
