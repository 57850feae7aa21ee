//! `nexus-cli bench --model-draft FILE`: greedy generation of the same prompt by the model
//! alone and with the draft proposing tokens (the output is the same, token for token); the
//! tokens per second of each, their ratio (the speedup) and the share of drafted tokens kept.

use std::sync::atomic::AtomicBool;

use anyhow::{bail, Result};
use nexus_runtime::chat_template::{self, Message};
use nexus_runtime::generate::{generate, Generation, GenerateParams};
use nexus_runtime::sampling::SamplingParams;
use nexus_runtime::speculative::SpeculativeStats;

use crate::device::Device;
use crate::draft::{self, Draft};
use crate::load::Loaded;

/// The request both runs answer; sent through the model's chat template when it has one.
const REQUEST: &str = "Explain in a few paragraphs how a bicycle works, from the pedals to the wheels.";

struct Timed {
    generation: Generation,
    secs: f64,
}

/// The prompt tokens: [`REQUEST`] as a user turn of the model's chat template, or as plain text.
fn prompt(target: &Loaded) -> Vec<u32> {
    let tokenizer = &target.tokenizer;
    let text_of = |id: Option<u32>| id.and_then(|i| tokenizer.token_text(i)).unwrap_or("").to_string();
    let gguf_template = target.model.file().get("tokenizer.chat_template").and_then(|v| v.as_str());
    let rendered = chat_template::resolve(None, gguf_template, &text_of(tokenizer.bos()), &text_of(tokenizer.eos()))
        .and_then(|t| t.render(&[Message::new("user", REQUEST)], true));
    match rendered {
        Ok(text) => tokenizer.encode(&text, true, true),
        Err(_) => tokenizer.encode(REQUEST, true, false),
    }
}

pub fn bench_draft(device: Device, target: &Loaded, draft: &Draft, n_gen: usize, repetitions: usize, json: bool) -> Result<()> {
    if n_gen == 0 {
        bail!("--n-gen must be at least 1 with --model-draft");
    }
    let prompt = prompt(target);
    let n_ctx = prompt.len() + n_gen + 1;
    let params = GenerateParams { max_tokens: Some(n_gen), sampling: SamplingParams::greedy(), stop: Vec::new() };
    let cancel = AtomicBool::new(false);
    let alone = || -> Result<Timed> {
        let mut backend = crate::device::open(device, &target.model, n_ctx, target.cache_types)?;
        let generation = generate(backend.as_mut(), &target.tokenizer, &prompt, &params, &cancel, |_| {})?;
        Ok(Timed { secs: generation.stats.generation_secs, generation })
    };
    let with_draft = || -> Result<(Timed, SpeculativeStats)> {
        let (generation, stats) = draft::generate(device, target, draft, &prompt, n_ctx, &params, &cancel, |_| {})?;
        Ok((Timed { secs: generation.stats.generation_secs, generation }, stats))
    };
    // Warm-up: page both models in, spin up the threads.
    alone()?;
    with_draft()?;
    let (mut plain_secs, mut draft_secs, mut stats) = (Vec::new(), Vec::new(), SpeculativeStats::default());
    for _ in 0..repetitions {
        let a = alone()?;
        let (b, s) = with_draft()?;
        // On the CPU the two are equal token for token; on a GPU the batched check rounds
        // differently from single steps, so a near tie may go the other way (the module
        // documentation of nexus_runtime::speculative).
        if a.generation.tokens != b.generation.tokens && device == Device::Cpu {
            bail!("greedy output with the draft differs from the model's own (a bug: please report it)");
        }
        plain_secs.push(a.secs / a.generation.tokens.len() as f64);
        draft_secs.push(b.secs / b.generation.tokens.len() as f64);
        (stats.rounds, stats.drafted, stats.accepted) =
            (stats.rounds + s.rounds, stats.drafted + s.drafted, stats.accepted + s.accepted);
    }
    let rate = |secs: &[f64]| secs.iter().map(|s| 1.0 / s).sum::<f64>() / secs.len() as f64;
    let (plain, with) = (rate(&plain_secs), rate(&draft_secs));
    let name = |l: &Loaded| l.path.file_name().map(|s| s.to_string_lossy().into_owned()).unwrap_or_default();
    let p = &draft.params;
    if json {
        let row = serde_json::json!({
            "model": name(target), "draft": name(&draft.loaded), "prompt_tokens": prompt.len(), "n_gen": n_gen,
            "draft_max": p.max, "draft_min": p.min, "draft_p_min": p.p_min,
            "backend": device.name(), "threads": rayon::current_num_threads(), "tg_ts": plain, "tg_draft_ts": with,
            "speedup": with / plain, "acceptance_rate": stats.acceptance_rate(),
            "drafted": stats.drafted, "accepted": stats.accepted, "steps": stats.rounds,
        });
        println!("{}", serde_json::to_string_pretty(&row)?);
    } else {
        println!("| model | draft | backend | threads | test | t/s alone | t/s with draft | speedup | acceptance | drafted / step |");
        println!("| --- | --- | --- | ---: | --- | ---: | ---: | ---: | ---: | ---: |");
        println!(
            "| {} | {} | {} | {} | tg{n_gen} greedy, draft-max {} draft-min {} p-min {} | {plain:.2} | {with:.2} | {:.2}× | {:.1}% | {:.2} |",
            name(target),
            name(&draft.loaded),
            device.name(),
            rayon::current_num_threads(),
            p.max,
            p.min,
            p.p_min,
            with / plain,
            100.0 * stats.acceptance_rate(),
            stats.drafted as f64 / stats.rounds.max(1) as f64,
        );
    }
    Ok(())
}
