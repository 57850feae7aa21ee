//! `nexus-cli chat`: an interactive, streaming, multi-turn conversation.

use std::io::{BufRead, Write};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use anyhow::Result;
use clap::Args;
use nexus_runtime::chat::{ChatError, ChatSession};
use nexus_runtime::chat_template;
use nexus_runtime::generate::StopReason;

use crate::args::{GenArgs, ModelArgs};
use crate::device::Device;
use crate::bundle;
use crate::load;
use crate::lora::{self, LoraArgs};
use crate::router::{self, RouterArgs};
use crate::speak::{self, VoiceArgs};

#[derive(Args)]
pub struct ChatArgs {
    #[command(flatten)]
    model: ModelArgs,
    #[command(flatten)]
    gen: GenArgs,
    #[command(flatten)]
    lora: LoraArgs,
    /// System prompt (default: the template's own default, if it has one).
    #[arg(short = 's', long = "system-prompt")]
    system_prompt: Option<String>,
    /// Chat template: a built-in name (chatml, llama3, llama2, mistral, zephyr) or a Jinja
    /// template; overrides the model's tokenizer.chat_template.
    #[arg(long = "chat-template")]
    chat_template: Option<String>,
    /// Speak each answer aloud as it streams, sentence by sentence (needs --features speech).
    #[arg(long = "speak")]
    speak: bool,
    /// With --speak: write the spoken answers to this WAV file instead of the sound card.
    #[arg(long = "speak-out", requires = "speak")]
    speak_out: Option<std::path::PathBuf>,
    #[command(flatten)]
    voice: VoiceArgs,
    #[command(flatten)]
    bundle: bundle::UseArgs,
    #[command(flatten)]
    route: RouterArgs,
}

pub fn chat(args: ChatArgs) -> Result<()> {
    let mut loaded = load::load(&args.model)?;
    let device = crate::device::select(&args.model, loaded.model.config.n_layer)?;
    let (bundle, mut routing) = router::attach(&mut loaded, &args.bundle, &args.route, &args.lora)?;
    let attached = lora::apply(&mut loaded.model, &args.lora)?;
    let mut adapters = lora::ChatLora::new(attached);
    let n_ctx = load::context_size(&loaded, args.gen.ctx_size)?;
    let n_layer = loaded.model.config.n_layer;
    let tokenizer = &loaded.tokenizer;
    let text_of = |id: Option<u32>| id.and_then(|i| tokenizer.token_text(i)).unwrap_or("").to_string();
    let gguf_template = loaded.model.file().get("tokenizer.chat_template").and_then(|v| v.as_str());
    let template = chat_template::resolve(
        args.chat_template.as_deref(),
        gguf_template,
        &text_of(tokenizer.bos()),
        &text_of(tokenizer.eos()),
    )?;
    let params = args.gen.params();
    // The session borrows the model mutably: /lora changes its adapters between turns.
    let system = args.system_prompt.clone();
    crate::device::check_cache_types(device, loaded.cache_types)?;
    let mut session = match device {
        Device::Cpu => {
            let cache = loaded.model.new_cache_typed(n_ctx, loaded.cache_types)?;
            ChatSession::with_cache(&mut loaded.model, tokenizer, template, system, cache)
        }
        #[cfg(feature = "cuda")]
        Device::Cuda(n) => ChatSession::on_cuda(&mut loaded.model, tokenizer, template, system, n_ctx, n, loaded.cache_types)?,
        #[cfg(not(feature = "cuda"))]
        Device::Cuda(_) => anyhow::bail!("this nexus-cli was built without CUDA"),
    };
    let mut speaker = match args.speak {
        true => Some(match bundle::voice(bundle.as_ref(), args.voice.voice.as_deref())? {
            Some(voice) => speak::open_speaker_with(voice, &args.voice, args.speak_out.as_deref(), params.sampling.seed)?,
            None => speak::open_speaker(&args.voice, args.speak_out.as_deref(), params.sampling.seed)?,
        }),
        false => None,
    };
    // Waits for the last answer to be heard (or written) before the session ends.
    let finish_speech = |speaker: Option<nexus_runtime::tts::speaker::Speaker>| -> Result<()> {
        if let Some(s) = speaker {
            speak::report(&s.finish()?);
        }
        Ok(())
    };

    // Ctrl-C while answering stops the answer; at the prompt it ends the session.
    let generating = Arc::new(AtomicBool::new(false));
    let cancel = Arc::new(AtomicBool::new(false));
    {
        let (generating, cancel) = (generating.clone(), cancel.clone());
        ctrlc::set_handler(move || {
            if generating.load(Ordering::SeqCst) {
                cancel.store(true, Ordering::SeqCst);
            } else {
                println!();
                std::process::exit(130);
            }
        })?;
    }

    eprintln!(
        "{} — {n_layer} layers, context {n_ctx}. /reset clears the history, /lora load FILE [SCALE] | off | list \
         changes LoRA adapters, /exit or Ctrl-D quits, Ctrl-C stops an answer.",
        loaded.path.display(),
    );
    let stdin = std::io::stdin();
    let mut line = String::new();
    loop {
        print!("\n> ");
        std::io::stdout().flush()?;
        line.clear();
        if stdin.lock().read_line(&mut line)? == 0 {
            println!();
            return finish_speech(speaker);
        }
        let input = line.trim_end_matches(['\n', '\r']);
        match input.trim() {
            "" => continue,
            "/exit" | "/quit" => return finish_speech(speaker),
            "/reset" => {
                session.reset();
                eprintln!("(history cleared)");
                continue;
            }
            cmd if cmd == "/lora" || cmd.starts_with("/lora ") || cmd.starts_with("/lora\t") => {
                match adapters.command(&cmd["/lora".len()..], &mut session) {
                    Ok(msg) => eprintln!("{msg}"),
                    Err(e) => eprintln!("error: {} (nothing changed; the conversation goes on)", causes(&e)),
                }
                continue;
            }
            _ => {}
        }
        if let Some(routing) = routing.as_mut() {
            if let Err(e) = routing.route_turn(&mut session, tokenizer, input) {
                eprintln!("error: {} (the message was not sent)", causes(&e));
                continue;
            }
        }
        cancel.store(false, Ordering::SeqCst);
        generating.store(true, Ordering::SeqCst);
        let mut out = std::io::stdout().lock();
        let mut speech_error = None;
        let reply = session.respond(input, &params, &cancel, |piece| {
            let _ = out.write_all(piece.as_bytes());
            let _ = out.flush();
            // Text first, then speech: pushing only queues the sentences it completes.
            if let Some(Err(e)) = speaker.as_mut().map(|s| s.push(piece)) {
                speech_error = Some(e);
                speaker = None;
            }
        });
        drop(out);
        if let Some(Err(e)) = speaker.as_mut().map(|s| s.flush()) {
            speech_error = Some(e);
            speaker = None;
        }
        if let Some(e) = speech_error {
            eprintln!("\nerror: {e} (speech is off for the rest of the session)");
        }
        generating.store(false, Ordering::SeqCst);
        println!();
        match reply {
            Ok(r) => {
                if r.dropped_turns > 0 {
                    eprintln!("(context full: dropped the {} oldest exchange(s) from the history)", r.dropped_turns);
                }
                match r.generation.stats.stop_reason {
                    StopReason::Cancelled => eprintln!("(stopped)"),
                    StopReason::ContextFull => eprintln!("(context full: answer cut off)"),
                    _ => {}
                }
            }
            Err(e @ ChatError::MessageTooLong { .. }) => eprintln!("error: {e}"),
            Err(e) => eprintln!("error: {e} (the conversation goes on without that message)"),
        }
    }
}

/// An error and its causes on one line, each cause left out when the text so far already says
/// it (our file errors repeat their source's message).
fn causes(e: &anyhow::Error) -> String {
    let mut out = String::new();
    for cause in e.chain().map(|c| c.to_string()) {
        if !out.contains(&cause) {
            if !out.is_empty() {
                out.push_str(": ");
            }
            out.push_str(&cause);
        }
    }
    out
}
