//! `--lora FILE` and `--lora-scaled FILE SCALE` (llama.cpp's flags) for `run` and `chat`, and
//! chat's `/lora load FILE [SCALE]`, `/lora off` and `/lora list` between turns.

use std::path::PathBuf;

use anyhow::{anyhow, bail, Context, Result};
use clap::Args;
use nexus_runtime::adapter::LoraAdapter;
use nexus_runtime::chat::ChatSession;
use nexus_runtime::model::Model;


#[derive(Args, Debug, Clone, Default)]
pub struct LoraArgs {
    /// LoRA adapter (llama.cpp's LoRA GGUF) applied at scale 1; repeatable, adapters add up.
    #[arg(long = "lora", value_name = "FILE")]
    pub lora: Vec<PathBuf>,
    /// LoRA adapter applied at SCALE (effective scale SCALE × alpha / rank); repeatable.
    #[arg(long = "lora-scaled", num_args = 2, value_names = ["FILE", "SCALE"], allow_negative_numbers = true)]
    pub lora_scaled: Vec<String>,
}

impl LoraArgs {
    pub fn is_empty(&self) -> bool {
        self.lora.is_empty() && self.lora_scaled.is_empty()
    }

    /// Every adapter with its user scale, `--lora` ones first.
    pub fn list(&self) -> Result<Vec<(PathBuf, f32)>> {
        let mut out: Vec<(PathBuf, f32)> = self.lora.iter().map(|p| (p.clone(), 1.0)).collect();
        for pair in self.lora_scaled.chunks(2) {
            let [file, scale] = pair else { bail!("--lora-scaled takes a FILE and a SCALE") };
            let s: f32 = scale
                .parse()
                .ok()
                .filter(|s: &f32| s.is_finite())
                .with_context(|| format!("--lora-scaled {file} {scale}: the scale is not a number"))?;
            out.push((PathBuf::from(file), s));
        }
        Ok(out)
    }
}

/// An adapter attached to a model with its user scale, kept so chat can list it.
pub struct Attached {
    pub adapter: LoraAdapter,
    pub scale: f32,
}

impl Attached {
    fn describe(&self) -> String {
        let a = &self.adapter;
        let mut ranks: Vec<usize> = a.weights.iter().map(|w| w.rank).collect();
        ranks.sort_unstable();
        ranks.dedup();
        let join = |f: &dyn Fn(usize) -> String| ranks.iter().map(|&r| f(r)).collect::<Vec<_>>().join("/");
        format!(
            "{} (scale {}, alpha {}, rank {}, effective scale {}, {} tensors)",
            a.path.display(),
            self.scale,
            a.alpha,
            join(&|r| r.to_string()),
            join(&|r| a.effective_scale(self.scale, r).to_string()),
            a.weights.len()
        )
    }
}

/// Loads every adapter of `args` and attaches them to `model`; errors name the adapter file.
pub fn apply(model: &mut Model, args: &LoraArgs) -> Result<Vec<Attached>> {
    let list = args.list()?;
    let mut attached = Vec::with_capacity(list.len());
    for (path, scale) in list {
        let adapter = LoraAdapter::load(&path).with_context(|| format!("loading the LoRA adapter {}", path.display()))?;
        attached.push(Attached { adapter, scale });
    }
    let refs: Vec<(&LoraAdapter, f32)> = attached.iter().map(|a| (&a.adapter, a.scale)).collect();
    model.apply_lora(&refs).context("attaching LoRA adapters")?;
    for a in &attached {
        eprintln!("LoRA: {}", a.describe());
    }
    Ok(attached)
}

const USAGE: &str = "/lora load FILE [SCALE], /lora off or /lora list";

/// Chat's `/lora` commands: the adapters attached to the session's model, changed between turns.
pub struct ChatLora {
    attached: Vec<Attached>,
}

impl ChatLora {
    /// `attached`: what `--lora`/`--lora-scaled` attached at start.
    pub fn new(attached: Vec<Attached>) -> Self {
        ChatLora { attached }
    }

    /// Runs `/lora ARGS` (`args` is what follows `/lora`) and returns what to tell the user.
    /// An error changes nothing: the adapters, the model and the history stay as they were.
    pub fn command(&mut self, args: &str, session: &mut ChatSession) -> Result<String> {
        let args = args.trim();
        let (sub, rest) = args.split_once(char::is_whitespace).unwrap_or((args, ""));
        let rest = rest.trim();
        match sub {
            "load" => self.load(rest, session),
            "off" | "list" if !rest.is_empty() => bail!("/lora {sub} takes no argument (got {rest:?})"),
            "off" => {
                let n = self.attached.len();
                session.clear_lora().context("/lora off")?;
                self.attached.clear();
                Ok(match n {
                    0 => "LoRA: no adapter was attached; the model is the base".into(),
                    n => format!("LoRA: removed {n} adapter(s); the next answer recomputes the history with the base model"),
                })
            }
            "list" if self.attached.is_empty() => Ok("LoRA: no adapter attached".into()),
            "list" => {
                let lines: Vec<String> =
                    self.attached.iter().enumerate().map(|(i, a)| format!("  {}. {}", i + 1, a.describe())).collect();
                Ok(format!("LoRA: {} adapter(s) attached, adding up:\n{}", lines.len(), lines.join("\n")))
            }
            "" => bail!("/lora needs a command: {USAGE}"),
            other => bail!("unknown /lora command {other:?}: use {USAGE}"),
        }
    }

    /// `/lora load FILE [SCALE]`: a FILE with spaces in its name is taken whole when it exists.
    fn load(&mut self, rest: &str, session: &mut ChatSession) -> Result<String> {
        if rest.is_empty() {
            bail!("/lora load needs a FILE: /lora load FILE [SCALE]");
        }
        let (file, scale) = match rest.rsplit_once(char::is_whitespace) {
            Some((file, scale)) if !std::path::Path::new(rest).exists() => {
                let s: f32 = scale.parse().ok().filter(|s: &f32| s.is_finite()).ok_or_else(|| {
                    anyhow!("/lora load {rest}: the scale {scale:?} is not a number (/lora load FILE [SCALE])")
                })?;
                (file.trim_end(), s)
            }
            _ => (rest, 1.0),
        };
        // Both errors name the file already.
        let adapter = LoraAdapter::load(file).context("/lora load")?;
        session.apply_lora(&[(&adapter, scale)]).context("/lora load")?;
        let a = Attached { adapter, scale };
        let msg = format!("LoRA: attached {}; the next answer recomputes the history with it", a.describe());
        self.attached.push(a);
        Ok(msg)
    }
}
