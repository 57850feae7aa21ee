//! `nexus-cli run`: prompt in, continuation streamed out; timings on stderr.

use std::io::Write;
use std::sync::atomic::AtomicBool;
use std::sync::Arc;

use anyhow::Result;
use clap::Args;
use nexus_runtime::generate::generate;

use crate::args::{GenArgs, ModelArgs};
use crate::bundle;
use crate::draft::{self, DraftArgs};
use crate::load;
use crate::lora::{self, LoraArgs};
use crate::router::{self, RouterArgs};

#[derive(Args)]
pub struct RunArgs {
    #[command(flatten)]
    model: ModelArgs,
    #[command(flatten)]
    gen: GenArgs,
    #[command(flatten)]
    lora: LoraArgs,
    #[command(flatten)]
    draft: DraftArgs,
    #[command(flatten)]
    bundle: bundle::UseArgs,
    #[command(flatten)]
    route: RouterArgs,
    /// The prompt.
    #[arg(short = 'p', long = "prompt")]
    prompt: String,
    /// Do not parse special-token texts such as <|im_start|> in the prompt.
    #[arg(long = "no-parse-special")]
    no_parse_special: bool,
}

pub fn run(args: RunArgs) -> Result<()> {
    let mut loaded = load::load(&args.model)?;
    let device = crate::device::select(&args.model, loaded.model.config.n_layer)?;
    let (_, routing) = router::attach(&mut loaded, &args.bundle, &args.route, &args.lora)?;
    lora::apply(&mut loaded.model, &args.lora)?;
    if let Some(routing) = &routing {
        routing.route(&mut loaded.model, &loaded.tokenizer, &args.prompt)?;
    }
    let draft = draft::load(&args.draft, &loaded)?;
    let (model, tokenizer) = (&loaded.model, &loaded.tokenizer);
    let n_ctx = load::context_size(&loaded, args.gen.ctx_size)?;
    let prompt = tokenizer.encode(&args.prompt, true, !args.no_parse_special);
    if prompt.len() >= n_ctx {
        anyhow::bail!("the prompt is {} tokens; the context holds {n_ctx} (raise --ctx-size)", prompt.len());
    }
    // With a draft, the speculative loop opens both models on the device.
    let mut backend = match draft {
        Some(_) => None,
        None => Some(crate::device::open(device, model, n_ctx, loaded.cache_types)?),
    };
    let cancel = Arc::new(AtomicBool::new(false));
    let flag = cancel.clone();
    ctrlc::set_handler(move || flag.store(true, std::sync::atomic::Ordering::Relaxed))?;

    let mut out = std::io::stdout().lock();
    write!(out, "{}", args.prompt)?;
    out.flush()?;
    let on_text = |piece: &str| {
        let _ = out.write_all(piece.as_bytes());
        let _ = out.flush();
    };
    let (generation, draft_stats) = match (&mut backend, &draft) {
        (Some(backend), _) => (generate(backend.as_mut(), tokenizer, &prompt, &args.gen.params(), &cancel, on_text)?, None),
        (None, Some(draft)) => {
            let (generation, stats) = draft::generate(device, &loaded, draft, &prompt, n_ctx, &args.gen.params(), &cancel, on_text)?;
            (generation, Some(stats))
        }
        (None, None) => unreachable!("a backend is opened whenever there is no draft"),
    };
    writeln!(out)?;
    let s = &generation.stats;
    eprintln!(
        "prompt: {} tokens in {:.2} s ({:.2} tokens/s); generation: {} tokens in {:.2} s ({:.2} tokens/s); stop: {:?}",
        s.prompt_tokens,
        s.prompt_secs,
        s.prompt_tokens_per_sec(),
        s.generated_tokens,
        s.generation_secs,
        s.generation_tokens_per_sec(),
        s.stop_reason
    );
    if let Some(stats) = draft_stats {
        eprintln!("{}", draft::summary(&stats));
    }
    Ok(())
}
