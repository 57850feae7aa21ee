//! `--model-draft FILE` (llama.cpp's `-md`), `--draft-max`, `--draft-min` and `--draft-p-min`:
//! speculative decoding for `run` and `bench`, on the CPU or with both models on one GPU.

use std::path::PathBuf;
use std::sync::atomic::AtomicBool;

use anyhow::{bail, Context, Result};
use clap::Args;
use nexus_runtime::generate::{Generation, GenerateParams};
use nexus_runtime::speculative::{check_vocabularies, DraftParams, Speculative, SpeculativeStats};

use crate::device::{self, Device};
use crate::load::{self, Loaded};

#[derive(Args, Debug, Clone)]
pub struct DraftArgs {
    /// Draft model for speculative decoding (llama.cpp's -md): it proposes tokens, the model
    /// checks them in one batch. Must share the model's vocabulary; runs on the model's device.
    #[arg(long = "model-draft", value_name = "FILE")]
    pub model_draft: Option<PathBuf>,
    /// Tokens drafted per step at most.
    #[arg(long = "draft-max", visible_aliases = ["draft", "draft-n"], default_value_t = 16)]
    pub draft_max: usize,
    /// A draft shorter than this is not used (that step decodes one token).
    #[arg(long = "draft-min", visible_alias = "draft-n-min", default_value_t = 0)]
    pub draft_min: usize,
    /// The draft stops when its most likely token is less likely than P.
    #[arg(long = "draft-p-min", default_value_t = 0.8)]
    pub draft_p_min: f32,
}

impl DraftArgs {
    pub fn params(&self) -> DraftParams {
        DraftParams { max: self.draft_max, min: self.draft_min, p_min: self.draft_p_min }
    }
}

/// A loaded draft model and how it drafts.
pub struct Draft {
    pub loaded: Loaded,
    pub params: DraftParams,
}

/// Loads the draft model, if one was given, and checks it shares `target`'s vocabulary.
pub fn load(args: &DraftArgs, target: &Loaded) -> Result<Option<Draft>> {
    let Some(path) = &args.model_draft else { return Ok(None) };
    if args.draft_max == 0 {
        bail!("--draft-max must be at least 1 with --model-draft");
    }
    if !(0.0..=1.0).contains(&args.draft_p_min) {
        bail!("--draft-p-min {}: expected a probability between 0 and 1", args.draft_p_min);
    }
    let draft = load::load_path(path).with_context(|| format!("loading the draft model {}", path.display()))?;
    check_vocabularies((&target.model, &target.tokenizer), (&draft.model, &draft.tokenizer)).with_context(|| {
        format!(
            "the draft model {} cannot draft for {}: their vocabularies differ",
            draft.path.display(),
            target.path.display()
        )
    })?;
    Ok(Some(Draft { loaded: draft, params: args.params() }))
}

/// Generates after `prompt` with `draft` proposing tokens for `target`, both on `device` with
/// `n_ctx` positions.
#[allow(clippy::too_many_arguments)]
pub fn generate(
    device: Device,
    target: &Loaded,
    draft: &Draft,
    prompt: &[u32],
    n_ctx: usize,
    params: &GenerateParams,
    cancel: &AtomicBool,
    on_text: impl FnMut(&str),
) -> Result<(Generation, SpeculativeStats)> {
    let mut target_backend = device::open(device, &target.model, n_ctx, target.cache_types)?;
    let mut draft_backend = device::open(device, &draft.loaded.model, n_ctx, target.cache_types)
        .with_context(|| format!("opening the draft model {} on {}", draft.loaded.path.display(), device.name()))?;
    let mut speculative =
        Speculative { target: target_backend.as_mut(), draft: draft_backend.as_mut(), params: draft.params.clone() };
    Ok(speculative.generate(&target.tokenizer, prompt, params, cancel, on_text)?)
}

/// One line for stderr about how the draft did.
pub fn summary(stats: &SpeculativeStats) -> String {
    format!(
        "draft: {} of {} drafted tokens accepted ({:.1}%) in {} steps",
        stats.accepted,
        stats.drafted,
        100.0 * stats.acceptance_rate(),
        stats.rounds
    )
}
