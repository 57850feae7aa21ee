//! Chat prompts from the model's own `tokenizer.chat_template` (Jinja, as in HF's
//! `tokenizer_config.json`), rendered with minijinja set up the way HF transformers'
//! `apply_chat_template` sets up jinja2, so the prompt matches what the model was
//! trained on byte for byte.
//!
//! The rendered text already contains whatever BOS the template writes
//! (`{{ bos_token }}`); tokenize it without adding another BOS when
//! [`ChatTemplate::renders_bos`] says so.

mod builtins;
mod pyfuncs;
pub mod sandbox;
#[cfg(test)]
mod tests;

use minijinja::{context, Environment, ErrorKind};
use serde::{Deserialize, Serialize};

pub use builtins::BUILTIN_NAMES;

const TEMPLATE_NAME: &str = "chat_template";

/// Template instructions one render may execute. Real templates spend a few hundred per
/// message (Qwen3's, with tools, about 250), so this allows conversations of some twenty
/// thousand messages while a runaway loop stops within a fraction of a second. It also bounds
/// how deeply a template can nest values (`{% set ns.x = [ns.x] %}` in a loop: about 550 000
/// levels), which minijinja drops and prints recursively; see [`RENDER_STACK`].
pub const RENDER_FUEL: u64 = 5_000_000;

/// Stack of the thread each render runs on. A value nested as deep as [`RENDER_FUEL`] allows
/// takes about 45 MiB of stack to drop (measured: 1 000 000 levels fit in ~80 MiB); the main
/// thread's 8 MiB overflowed at ~180 000 levels, which killed the process (found by the
/// `chat_template` fuzz target). Only the pages a render touches are committed.
pub const RENDER_STACK: usize = 256 << 20;
/// Bytes one render may produce: far beyond any context window's worth of text, small
/// enough that a template repeating a string cannot exhaust memory through the output.
pub const MAX_RENDER_BYTES: usize = 64 << 20;

/// One turn of the conversation. `role` is usually `system`, `user` or `assistant`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Message {
    pub role: String,
    pub content: String,
}

impl Message {
    pub fn new(role: impl Into<String>, content: impl Into<String>) -> Self {
        Self { role: role.into(), content: content.into() }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum ChatTemplateError {
    /// The template cannot be compiled or rendered by this engine (syntax it does not
    /// know, a missing filter or method, ...).
    #[error(
        "unsupported chat template (detected family: {family}): {reason}; \
         pass --chat-template NAME to use a built-in template instead (one of: {})",
        BUILTIN_NAMES.join(", ")
    )]
    Unsupported { family: String, reason: String },

    /// The template itself refused the conversation through `raise_exception`,
    /// e.g. roles that do not alternate or a system message it does not accept.
    #[error("the {family} chat template rejected the conversation: {message}")]
    Rejected { family: String, message: String },

    #[error(
        "the model has no chat template; pass --chat-template NAME (one of: {}) \
         or --chat-template with a Jinja template",
        BUILTIN_NAMES.join(", ")
    )]
    NoTemplate,

    #[error("unknown built-in chat template {name:?}; available: {}", BUILTIN_NAMES.join(", "))]
    UnknownBuiltin { name: String },

    /// The render hit [`RENDER_FUEL`] or [`MAX_RENDER_BYTES`]: a template that loops without
    /// end or produces an unbounded prompt.
    #[error("the {family} chat template exceeded its limit: {limit}")]
    TooLarge { family: String, limit: String },

    /// The child process that renders untrusted templates ([`sandbox`]) could not be started
    /// or ended in a way no limit explains.
    #[error("the chat template renderer process ({program}) failed: {reason}")]
    Renderer { program: String, reason: String },

    #[error("could not start the thread that renders the chat template ({stack_mib} MiB of stack): {source}", stack_mib = RENDER_STACK >> 20)]
    RenderThread {
        #[source]
        source: std::io::Error,
    },
}

/// A compiled chat template plus the special-token strings it is rendered with.
pub struct ChatTemplate {
    env: Environment<'static>,
    source: String,
    bos_token: String,
    eos_token: String,
    family: Option<&'static str>,
    builtin: Option<&'static str>,
    fixed_now: Option<i64>,
    /// The process that renders this template when a sandbox is installed.
    child: sandbox::ChildSlot,
}

impl std::fmt::Debug for ChatTemplate {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ChatTemplate")
            .field("family", &self.family)
            .field("builtin", &self.builtin)
            .field("bos_token", &self.bos_token)
            .field("eos_token", &self.eos_token)
            .finish_non_exhaustive()
    }
}

impl ChatTemplate {
    /// Compiles a Jinja chat template. Besides syntax errors, this also renders a
    /// one-message probe conversation, so that a template using something the engine
    /// lacks (unknown filter, Python method) fails here, at startup, with a message
    /// naming `--chat-template`, rather than on the first prompt.
    pub fn from_jinja(source: &str, bos_token: &str, eos_token: &str) -> Result<Self, ChatTemplateError> {
        let tmpl = Self::build(source.to_string(), bos_token, eos_token, None, None)?;
        let probe = [Message::new("user", "Hello")];
        match tmpl.render(&probe, true) {
            // A refusal is the template working as designed (e.g. it insists on a
            // system message); only engine failures mean "unsupported".
            Ok(_) | Err(ChatTemplateError::Rejected { .. }) => Ok(tmpl),
            Err(e) => Err(e),
        }
    }

    /// A built-in template by name (see [`BUILTIN_NAMES`]; case-insensitive).
    pub fn builtin(name: &str, bos_token: &str, eos_token: &str) -> Result<Self, ChatTemplateError> {
        let (canonical, source) =
            builtins::source(name).ok_or_else(|| ChatTemplateError::UnknownBuiltin { name: name.to_string() })?;
        Self::build(source.to_string(), bos_token, eos_token, Some(canonical), None)
    }

    /// Pins what `strftime_now` returns (seconds since the Unix epoch, UTC), for
    /// reproducible prompts and tests; by default it reads the system clock.
    pub fn with_fixed_time(self, unix_secs: i64) -> Result<Self, ChatTemplateError> {
        Self::build(self.source, &self.bos_token, &self.eos_token, self.builtin, Some(unix_secs))
    }

    fn build(
        source: String,
        bos_token: &str,
        eos_token: &str,
        builtin: Option<&'static str>,
        fixed_now: Option<i64>,
    ) -> Result<Self, ChatTemplateError> {
        let family = builtin.or_else(|| detect_family(&source));
        let mut env = Environment::new();
        // HF renders with trim_blocks and lstrip_blocks; without them most
        // templates emit stray newlines and indentation.
        env.set_trim_blocks(true);
        env.set_lstrip_blocks(true);
        env.set_unknown_method_callback(minijinja_contrib::pycompat::unknown_method_callback);
        minijinja_contrib::add_to_environment(&mut env);
        env.add_function("raise_exception", pyfuncs::raise_exception);
        env.add_filter("tojson", pyfuncs::tojson);
        env.add_function("strftime_now", move |fmt: String| {
            pyfuncs::strftime(fixed_now.unwrap_or_else(pyfuncs::now_unix), &fmt)
        });
        // Hostile or buggy templates must not hang or overflow the stack.
        env.set_recursion_limit(100);
        env.set_fuel(Some(RENDER_FUEL));
        env.add_filter("length", pyfuncs::length);
        env.add_filter("count", pyfuncs::length);
        env.add_template_owned(TEMPLATE_NAME, pyfuncs::rewrite_generation_tags(&source))
            .map_err(|e| unsupported(family, &e))?;
        Ok(Self {
            env,
            source,
            bos_token: bos_token.to_string(),
            eos_token: eos_token.to_string(),
            family,
            builtin,
            fixed_now,
            child: sandbox::ChildSlot::default(),
        })
    }

    /// Renders the conversation; with `add_generation_prompt` the text ends with the
    /// header of an assistant turn so the model continues as the assistant. A template that is
    /// not a built-in renders in the child process of [`sandbox`] when the binary installed
    /// one; otherwise the render runs on a thread of its own with a [`RENDER_STACK`]-byte stack.
    pub fn render(&self, messages: &[Message], add_generation_prompt: bool) -> Result<String, ChatTemplateError> {
        match sandbox::installed() {
            Some(command) if self.builtin.is_none() => self.child.render(command, self, messages, add_generation_prompt),
            _ => self.render_in_process(messages, add_generation_prompt),
        }
    }

    fn render_in_process(&self, messages: &[Message], add_generation_prompt: bool) -> Result<String, ChatTemplateError> {
        std::thread::scope(|scope| {
            let render = std::thread::Builder::new()
                .name("chat-template".into())
                .stack_size(RENDER_STACK)
                .spawn_scoped(scope, || self.render_here(messages, add_generation_prompt))
                .map_err(|source| ChatTemplateError::RenderThread { source })?;
            // A panic inside minijinja is a bug there; pass it on as the caller's own.
            render.join().unwrap_or_else(|panic| std::panic::resume_unwind(panic))
        })
    }

    fn render_here(&self, messages: &[Message], add_generation_prompt: bool) -> Result<String, ChatTemplateError> {
        let tmpl = self.env.get_template(TEMPLATE_NAME).map_err(|e| unsupported(self.family, &e))?;
        let ctx = context! {
            messages => messages,
            add_generation_prompt => add_generation_prompt,
            bos_token => &self.bos_token,
            eos_token => &self.eos_token,
        };
        let family = || self.family.unwrap_or("unknown").to_string();
        let mut out = BoundedOutput { bytes: Vec::new(), overflowed: false };
        match tmpl.render_captured_to(ctx, &mut out) {
            Ok(_) => {}
            Err(_) if out.overflowed => {
                let limit = format!("the prompt grew past {MAX_RENDER_BYTES} bytes");
                return Err(ChatTemplateError::TooLarge { family: family(), limit });
            }
            Err(e) if e.kind() == ErrorKind::OutOfFuel => {
                let limit = format!("rendering took more than {RENDER_FUEL} template instructions");
                return Err(ChatTemplateError::TooLarge { family: family(), limit });
            }
            Err(e) => {
                return Err(match raised_message(&e) {
                    Some(message) => ChatTemplateError::Rejected { family: family(), message },
                    None => unsupported(self.family, &e),
                })
            }
        }
        // Every piece minijinja writes is a &str, so the concatenation is valid UTF-8.
        String::from_utf8(out.bytes).map_err(|e| ChatTemplateError::Unsupported { family: family(), reason: e.to_string() })
    }

    /// The template family: the builtin's name, or one guessed from the source's
    /// marker tokens (`chatml`, `llama3`, `llama2`, `mistral`, `zephyr`, `phi3`,
    /// `gemma`, `deepseek`); `None` when nothing is recognized.
    pub fn family(&self) -> Option<&'static str> {
        self.family
    }

    /// The Jinja source this template was compiled from.
    pub fn source(&self) -> &str {
        &self.source
    }

    /// Whether the template writes `bos_token` itself, in which case the tokenizer
    /// must not prepend another BOS.
    pub fn renders_bos(&self) -> bool {
        !self.bos_token.is_empty() && self.source.contains("bos_token")
    }

    /// The pinned `strftime_now` instant, if any.
    pub fn fixed_time(&self) -> Option<i64> {
        self.fixed_now
    }
}

/// The CLI rule for choosing a template: `--chat-template NAME` picks a builtin; a
/// flag value containing `{%` or `{{` is Jinja source; with no flag the GGUF's
/// `tokenizer.chat_template` is used; with neither it is an error listing the builtins.
pub fn resolve(
    template_flag: Option<&str>,
    gguf_template: Option<&str>,
    bos_token: &str,
    eos_token: &str,
) -> Result<ChatTemplate, ChatTemplateError> {
    if let Some(flag) = template_flag {
        if flag.contains("{%") || flag.contains("{{") {
            return ChatTemplate::from_jinja(flag, bos_token, eos_token);
        }
        return ChatTemplate::builtin(flag, bos_token, eos_token);
    }
    match gguf_template {
        Some(src) if !src.trim().is_empty() => ChatTemplate::from_jinja(src, bos_token, eos_token),
        _ => Err(ChatTemplateError::NoTemplate),
    }
}

/// Guesses the family from marker tokens, most specific first: several families
/// share `<|user|>` or `[INST]`.
pub fn detect_family(source: &str) -> Option<&'static str> {
    let has = |s: &str| source.contains(s);
    if has("<|im_start|>") {
        Some("chatml")
    } else if has("<|start_header_id|>") {
        Some("llama3")
    } else if has("[INST]") {
        Some(if has("<<SYS>>") { "llama2" } else { "mistral" })
    } else if has("<|user|>") && has("<|end|>") {
        Some("phi3")
    } else if has("<|user|>") {
        Some("zephyr")
    } else if has("<start_of_turn>") {
        Some("gemma")
    } else if has("<｜User｜>") {
        Some("deepseek")
    } else {
        None
    }
}

fn unsupported(family: Option<&str>, err: &minijinja::Error) -> ChatTemplateError {
    let mut reason = err.to_string();
    // minijinja keeps the cause of a failed call (e.g. a bad argument) as a source.
    let mut source = std::error::Error::source(err);
    while let Some(s) = source {
        reason.push_str(": ");
        reason.push_str(&s.to_string());
        source = s.source();
    }
    if err.kind() == ErrorKind::UnknownMethod {
        reason.push_str(" (a Python method this engine does not implement)");
    }
    ChatTemplateError::Unsupported { family: family.unwrap_or("unknown").to_string(), reason }
}

/// The render's output, refusing to grow past [`MAX_RENDER_BYTES`].
struct BoundedOutput {
    bytes: Vec<u8>,
    overflowed: bool,
}

impl std::io::Write for BoundedOutput {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        if self.bytes.len() + buf.len() > MAX_RENDER_BYTES {
            self.overflowed = true;
            return Err(std::io::Error::other("chat template output limit"));
        }
        self.bytes.extend_from_slice(buf);
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

fn raised_message(err: &minijinja::Error) -> Option<String> {
    let mut source: Option<&(dyn std::error::Error + 'static)> = Some(err);
    while let Some(s) = source {
        if let Some(raised) = s.downcast_ref::<pyfuncs::Raised>() {
            return Some(raised.0.clone());
        }
        source = s.source();
    }
    None
}
