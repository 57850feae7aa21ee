//! `--lora FILE` and `--lora-scaled FILE SCALE` (llama.cpp's flags) for `run` and `chat`.

use std::path::PathBuf;

use anyhow::{bail, Context, Result};
use clap::Args;
use nexus_runtime::adapter::LoraAdapter;
use nexus_runtime::model::Model;

use crate::args::ModelArgs;
use crate::device::{self, Device};

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
    fn list(&self) -> Result<Vec<(PathBuf, f32)>> {
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

/// The device for a command that may carry adapters: they run on the CPU only for now, so a
/// GPU asked for explicitly is refused and the default becomes the CPU.
pub fn select_device(model_args: &ModelArgs, n_layer: usize, lora: &LoraArgs) -> Result<Device> {
    if lora.is_empty() {
        return device::select(model_args, n_layer);
    }
    let cuda_asked = model_args.device.as_deref().is_some_and(|d| d.starts_with("cuda"))
        || model_args.n_gpu_layers.is_some_and(|n| n > 0);
    if cuda_asked {
        bail!("LoRA adapters run on the CPU only for now: use --device cpu (or leave --device and -ngl out)");
    }
    match model_args.device.as_deref() {
        None | Some("cpu") => Ok(Device::Cpu),
        Some(other) => bail!("--device {other:?}: expected cpu, cuda or cuda:N"),
    }
}

/// Loads every adapter of `args` and attaches them to `model`; errors name the adapter file.
pub fn apply(model: &mut Model, args: &LoraArgs) -> Result<()> {
    let list = args.list()?;
    let mut adapters = Vec::with_capacity(list.len());
    for (path, scale) in list {
        let adapter = LoraAdapter::load(&path).with_context(|| format!("loading the LoRA adapter {}", path.display()))?;
        adapters.push((adapter, scale));
    }
    let refs: Vec<(&LoraAdapter, f32)> = adapters.iter().map(|(a, s)| (a, *s)).collect();
    model.apply_lora(&refs).context("attaching LoRA adapters")?;
    for (a, scale) in &adapters {
        eprintln!(
            "LoRA: {} (scale {scale}, alpha {}, {} tensors)",
            a.path.display(),
            a.alpha,
            a.weights.len()
        );
    }
    Ok(())
}
