//! Choosing a capability per request: an explicit one overrides the router, the router's
//! pick below its threshold falls back to the base, and the chosen adapter is attached.

use std::sync::atomic::AtomicBool;

use super::{pooled_hidden, route_tokens, Router, RouterError, BASE};
use crate::adapter::LoraAdapter;
use crate::decoder::CpuDecoder;
use crate::generate::{self, GenerateParams, Generation};
use crate::model::Model;
use crate::tokenizer::Tokenizer;

/// Who made a [`Choice`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Source {
    /// The caller named the capability (or `none`); the router was not asked.
    Explicit,
    /// The router's most likely class, at or above its threshold.
    Router,
    /// The router's most likely class was a capability below the threshold: the base runs.
    BelowThreshold,
    /// No router and no capability named: the base runs.
    NoRouter,
}

/// Which adapter a request runs with.
#[derive(Debug, Clone, PartialEq)]
pub struct Choice {
    /// The capability whose adapter is applied; `None` is the base.
    pub capability: Option<String>,
    pub source: Source,
    /// The router's probability of its most likely class (`None` when it was not asked).
    pub confidence: Option<f32>,
    /// The router's most likely class (`none` or a capability), when it was asked.
    pub best: Option<String>,
}

impl Choice {
    /// One line for stderr: what runs, and why.
    pub fn describe(&self) -> String {
        let what = match &self.capability {
            Some(c) => format!("capability {c} (adapter {c})"),
            None => "the base (no adapter)".to_string(),
        };
        let conf = self.confidence.unwrap_or(f32::NAN);
        let best = self.best.as_deref().unwrap_or("?");
        match self.source {
            Source::Explicit => format!("{what}, named explicitly (router not asked)"),
            Source::Router => format!("{what}, chosen by the router with confidence {conf:.3}"),
            Source::BelowThreshold => format!("{what}: the router's best, {best}, has confidence {conf:.3}, below its threshold"),
            Source::NoRouter => format!("{what}: no router and no capability named"),
        }
    }
}

/// The capabilities a model can run with: one adapter each, and the router that picks them.
pub struct Capabilities {
    /// The backbone without adapters, a second view of the same mapped weights (no copy):
    /// the router reads the base model's hidden state whatever adapter the request runs with.
    base: Model,
    router: Option<Router>,
    adapters: Vec<(String, LoraAdapter)>,
}

impl Capabilities {
    /// Checks the router against `model`'s backbone, that every capability it can pick has an
    /// adapter, and every adapter against the model.
    pub fn new(model: &Model, router: Option<Router>, adapters: Vec<(String, LoraAdapter)>) -> Result<Self, RouterError> {
        if let Some(r) = &router {
            r.check_backbone(model)?;
        }
        let base = Model::from_file(model.file().clone())?;
        for (name, adapter) in &adapters {
            model.check_lora(&[(adapter, 1.0)])?;
            if adapters.iter().filter(|(n, _)| n == name).count() > 1 {
                return Err(RouterError::Invalid { path: adapter.path.clone(), what: format!("capability {name:?} is given twice") });
            }
        }
        if let Some(r) = &router {
            if let Some(missing) = r.capabilities.iter().find(|c| !adapters.iter().any(|(n, _)| n == *c)) {
                let what = format!(
                    "the router can pick capability {missing:?}, which has no adapter (have: {})",
                    Self::list(adapters.iter().map(|(n, _)| n.as_str()))
                );
                return Err(RouterError::Invalid { path: r.path.clone(), what });
            }
        }
        Ok(Capabilities { base, router, adapters })
    }

    pub fn router(&self) -> Option<&Router> {
        self.router.as_ref()
    }

    pub fn names(&self) -> Vec<&str> {
        self.adapters.iter().map(|(n, _)| n.as_str()).collect()
    }

    fn list<'a>(names: impl Iterator<Item = &'a str>) -> String {
        let v: Vec<&str> = names.collect();
        if v.is_empty() {
            "none".into()
        } else {
            v.join(", ")
        }
    }

    pub fn adapter(&self, name: &str) -> Option<&LoraAdapter> {
        self.adapters.iter().find(|(n, _)| n == name).map(|(_, a)| a)
    }

    /// The capability for a request whose text is `text`: `explicit` (a capability, or
    /// `none` for the base) overrides the router; `auto` or `None` asks it.
    pub fn choose(&self, tokenizer: &Tokenizer, text: &str, explicit: Option<&str>) -> Result<Choice, RouterError> {
        match explicit {
            Some(BASE) => return Ok(Choice { capability: None, source: Source::Explicit, confidence: None, best: None }),
            Some("auto") | None => {}
            Some(name) => {
                if self.adapter(name).is_none() {
                    let known = format!("the capabilities are {} (or {BASE})", Self::list(self.adapters.iter().map(|(n, _)| n.as_str())));
                    return Err(RouterError::UnknownCapability { name: name.into(), known });
                }
                return Ok(Choice { capability: Some(name.into()), source: Source::Explicit, confidence: None, best: None });
            }
        }
        let Some(router) = &self.router else {
            return Ok(Choice { capability: None, source: Source::NoRouter, confidence: None, best: None });
        };
        let tokens = route_tokens(tokenizer, text);
        let pooled = pooled_hidden(&self.base, &tokens, router.layer)?;
        let probs = router.probabilities(&pooled);
        let (best, &conf) = probs.iter().enumerate().fold((0, &f32::NEG_INFINITY), |acc, (i, p)| if *p > *acc.1 { (i, p) } else { acc });
        let classes = router.classes();
        let best_name = classes[best].to_string();
        let (capability, source) = match best {
            0 => (None, Source::Router),
            _ if conf < router.threshold => (None, Source::BelowThreshold),
            _ => (Some(best_name.clone()), Source::Router),
        };
        Ok(Choice { capability, source, confidence: Some(conf), best: Some(best_name) })
    }

    /// Makes `model` run `choice`: its adapters replaced by the chosen one at scale 1, or by
    /// none ([`Model::replace_lora`]).
    pub fn apply(&self, model: &mut Model, choice: &Choice) -> Result<(), RouterError> {
        let adapter = match &choice.capability {
            Some(name) => Some(self.adapter(name).ok_or_else(|| RouterError::UnknownCapability { name: name.clone(), known: self.names().join(", ") })?),
            None => None,
        };
        let adapters: Vec<(&LoraAdapter, f32)> = adapter.into_iter().map(|a| (a, 1.0)).collect();
        Ok(model.replace_lora(&adapters)?)
    }
}

/// Generates a continuation of `text` on the CPU with the capability chosen for it:
/// `capability` (a name, `none`, or `auto`/`None` to ask the router). Returns the choice
/// with the generation; `model` keeps the chosen adapter attached afterwards.
#[allow(clippy::too_many_arguments)]
pub fn generate(
    model: &mut Model,
    capabilities: &Capabilities,
    tokenizer: &Tokenizer,
    text: &str,
    capability: Option<&str>,
    n_ctx: usize,
    params: &GenerateParams,
    cancel: &AtomicBool,
    on_text: impl FnMut(&str),
) -> Result<(Choice, Generation), RouterError> {
    let choice = capabilities.choose(tokenizer, text, capability)?;
    capabilities.apply(model, &choice)?;
    let prompt = tokenizer.encode(text, true, true);
    let mut cache = model.new_cache(n_ctx);
    let mut decoder = CpuDecoder { model, cache: &mut cache };
    let generation = generate::generate(&mut decoder, tokenizer, &prompt, params, cancel, on_text)?;
    Ok((choice, generation))
}
