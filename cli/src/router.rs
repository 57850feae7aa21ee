//! `--router FILE` and `--lora-cap NAME=FILE` for `run` and `chat`: each request (each chat
//! turn) runs with the adapter the router picks, or the one `--capability NAME` names; a
//! bundle with a router routes by itself. The choice and its confidence go to stderr.

use std::path::PathBuf;
use std::time::Instant;

use anyhow::{bail, Context, Result};
use clap::Args;
use nexus_runtime::adapter::LoraAdapter;
use nexus_runtime::bundle::{is_bundle, Bundle, Kind};
use nexus_runtime::chat::ChatSession;
use nexus_runtime::gguf::GgufFile;
use nexus_runtime::model::Model;
use nexus_runtime::router::{check_capability_name, Capabilities, Choice, Router};
use nexus_runtime::tokenizer::Tokenizer;

use crate::bundle::{self, UseArgs};
use crate::load::Loaded;
use crate::lora::LoraArgs;

#[derive(Args, Debug, Clone, Default)]
pub struct RouterArgs {
    /// Route each request (each chat turn) with this router GGUF (distill train-router) among
    /// the --lora-cap adapters; --capability NAME overrides it.
    #[arg(long = "router", value_name = "FILE")]
    pub router: Option<PathBuf>,
    /// A capability's LoRA adapter, NAME=FILE, for the router or --capability; repeatable.
    #[arg(long = "lora-cap", value_name = "NAME=FILE")]
    pub lora_cap: Vec<String>,
}

impl RouterArgs {
    fn is_empty(&self) -> bool {
        self.router.is_none() && self.lora_cap.is_empty()
    }
}

/// Picks the adapter of each request.
pub struct Routing {
    capabilities: Capabilities,
    /// `--capability` (a name or `none`): overrides the router for every request.
    explicit: Option<String>,
    /// What the chat session's model runs with now.
    current: Option<String>,
}

fn bundle_router(file: &std::sync::Arc<GgufFile>) -> Result<bool> {
    Ok(is_bundle(file) && Bundle::from_file(file.clone())?.manifest().of_kind(Kind::Router).is_some())
}

/// Whether `--capability` leaves the choice to a router.
fn routed(use_args: &UseArgs) -> bool {
    matches!(use_args.capability.as_deref(), None | Some("auto") | Some("none"))
}

/// After `load`, in place of `bundle::attach`: a bundle's gate and `--capability`, and, when
/// a router is given (or the bundle carries one), the routing of each request.
pub fn attach(loaded: &mut Loaded, use_args: &UseArgs, args: &RouterArgs, lora: &LoraArgs) -> Result<(Option<Bundle>, Option<Routing>)> {
    let file = loaded.model.file().clone();
    let explicit = use_args.capability.clone().filter(|c| c != "auto");
    if is_bundle(&file) {
        if !args.is_empty() {
            bail!("{} is a bundle: it carries its own adapters and router (bundle pack --router); --router and --lora-cap are for a plain model", file.path().display());
        }
        if !(routed(use_args) && bundle_router(&file)?) {
            let pass = match explicit.as_deref() {
                Some("none") => UseArgs { capability: None, ..use_args.clone() },
                _ => use_args.clone(),
            };
            return Ok((bundle::attach(loaded, &pass)?, None));
        }
        let bundle = bundle::attach(loaded, &UseArgs { capability: None, ..use_args.clone() })?
            .context("the model file stopped being a bundle")?;
        let router_file = bundle.component_file("router")?;
        let router = Router::from_file(&router_file)?;
        let mut adapters = Vec::new();
        for c in &bundle.manifest().capabilities {
            adapters.push((c.name.clone(), bundle.adapter(&c.name)?));
        }
        let capabilities = Capabilities::new(&loaded.model, Some(router), adapters)?;
        return Ok((Some(bundle), Some(Routing::new(capabilities, explicit))));
    }
    if args.is_empty() {
        return Ok((bundle::attach(loaded, use_args)?, None));
    }
    if !lora.is_empty() {
        bail!("--router and --lora-cap choose one adapter per request; leave --lora and --lora-scaled out");
    }
    let mut adapters = Vec::new();
    for spec in &args.lora_cap {
        let Some((name, path)) = spec.split_once('=') else { bail!("--lora-cap {spec:?}: expected NAME=FILE") };
        check_capability_name(name).map_err(|what| anyhow::anyhow!("--lora-cap {spec}: {what}"))?;
        let adapter = LoraAdapter::load(path).with_context(|| format!("--lora-cap {name}"))?;
        adapters.push((name.to_string(), adapter));
    }
    let router = match &args.router {
        Some(p) => Some(Router::load(p)?),
        None if explicit.is_none() => {
            bail!("--lora-cap without --router: name the capability with --capability NAME, or give --router FILE")
        }
        None => None,
    };
    if router.is_none() && use_args.capability.as_deref() == Some("auto") {
        bail!("--capability auto asks the router: give --router FILE");
    }
    let capabilities = Capabilities::new(&loaded.model, router, adapters)?;
    Ok((None, Some(Routing::new(capabilities, explicit))))
}

impl Routing {
    fn new(capabilities: Capabilities, explicit: Option<String>) -> Self {
        if let Some(r) = capabilities.router() {
            let kind = match r.layers.len() {
                1 => "linear".to_string(),
                _ => format!("MLP, hidden {}", r.layers[0].n_out),
            };
            eprintln!(
                "router: {} ({kind} over layer {}, threshold {}) picks among {} (or none) per request{}",
                r.path.display(),
                r.layer,
                r.threshold,
                capabilities.names().join(", "),
                explicit.as_deref().map_or(String::new(), |c| format!("; --capability {c} overrides it"))
            );
        }
        Routing { capabilities, explicit, current: None }
    }

    fn choose(&self, tokenizer: &Tokenizer, text: &str) -> Result<Choice> {
        let start = Instant::now();
        let choice = self.capabilities.choose(tokenizer, text, self.explicit.as_deref())?;
        eprintln!("router: {} [{:.1} ms]", choice.describe(), start.elapsed().as_secs_f64() * 1e3);
        Ok(choice)
    }

    /// `run`: picks the prompt's capability and attaches its adapter to `model`.
    pub fn route(&self, model: &mut Model, tokenizer: &Tokenizer, prompt: &str) -> Result<()> {
        let choice = self.choose(tokenizer, prompt)?;
        Ok(self.capabilities.apply(model, &choice)?)
    }

    /// `chat`: picks the turn's capability from the user's message; the session's adapter
    /// changes (and its history is recomputed) only when the choice does.
    pub fn route_turn(&mut self, session: &mut ChatSession, tokenizer: &Tokenizer, message: &str) -> Result<()> {
        let choice = self.choose(tokenizer, message)?;
        if choice.capability == self.current {
            return Ok(());
        }
        match &choice.capability {
            None => session.clear_lora().context("removing the adapter of the last capability")?,
            Some(name) => {
                let adapter = self.capabilities.adapter(name).context("the chosen capability has no adapter")?;
                session.replace_lora(&[(adapter, 1.0)]).with_context(|| format!("attaching capability {name}"))?;
            }
        }
        self.current = choice.capability;
        Ok(())
    }
}
