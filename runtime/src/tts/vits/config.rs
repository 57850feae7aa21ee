//! The voice's hyper-parameters (`vits.*` metadata), checked for consistency before any tensor
//! is read; tensor shapes are then checked against them.

use crate::gguf::GgufFile;
use crate::tts::TtsError;

/// Largest value accepted for any size hyper-parameter: far above real voices (192 hidden,
/// 768 filter), low enough that products of them cannot overflow.
const MAX_SIZE: usize = 1 << 16;

#[derive(Debug, Clone)]
pub struct VitsConfig {
    pub sample_rate: u32,
    pub n_vocab: usize,
    pub hidden_channels: usize,
    pub filter_channels: usize,
    pub n_heads: usize,
    pub n_layers: usize,
    pub window_size: usize,
    pub upsample_rates: Vec<usize>,
    pub upsample_kernel_sizes: Vec<usize>,
    pub upsample_initial_channel: usize,
    pub resblock_kernel_sizes: Vec<usize>,
    /// Per resblock kind, the dilations of its convolutions (two each for ResBlock2).
    pub resblock_dilations: Vec<Vec<usize>>,
    pub flow_n_flows: usize,
    pub flow_n_wn_layers: usize,
    pub flow_kernel_size: usize,
    pub dp_n_bins: usize,
    pub dp_tail_bound: f32,
    pub layer_norm_eps: f32,
    pub noise_scale: f32,
    pub length_scale: f32,
    pub noise_w: f32,
}

impl VitsConfig {
    pub fn from_gguf(f: &GgufFile) -> Result<Self, TtsError> {
        let bad = |what: String| TtsError::Voice { path: f.path().to_path_buf(), what };
        let arch = f.get_str("general.architecture")?;
        if arch != "vits" {
            return Err(bad(format!("not a VITS voice (architecture {arch:?})")));
        }
        let size = |key: &str| -> Result<usize, TtsError> {
            let v = f.get_u64(key)? as usize;
            if v == 0 || v > MAX_SIZE {
                return Err(bad(format!("{key} = {v} is outside 1..={MAX_SIZE}")));
            }
            Ok(v)
        };
        let sizes = |key: &str| -> Result<Vec<usize>, TtsError> {
            let v = f.get_i64_array(key)?;
            if v.is_empty() || v.iter().any(|&x| x <= 0 || x as usize > MAX_SIZE) {
                return Err(bad(format!("{key} = {v:?}: expected a non-empty list of sizes in 1..={MAX_SIZE}")));
            }
            Ok(v.into_iter().map(|x| x as usize).collect())
        };
        let c = VitsConfig {
            sample_rate: u32::try_from(size("vits.sample_rate")?).map_err(|e| bad(e.to_string()))?,
            n_vocab: size("vits.n_vocab")?,
            hidden_channels: size("vits.hidden_channels")?,
            filter_channels: size("vits.filter_channels")?,
            n_heads: size("vits.n_heads")?,
            n_layers: size("vits.n_layers")?,
            window_size: size("vits.window_size")?,
            upsample_rates: sizes("vits.upsample_rates")?,
            upsample_kernel_sizes: sizes("vits.upsample_kernel_sizes")?,
            upsample_initial_channel: size("vits.upsample_initial_channel")?,
            resblock_kernel_sizes: sizes("vits.resblock_kernel_sizes")?,
            resblock_dilations: sizes("vits.resblock_dilations")?.chunks(2).map(<[usize]>::to_vec).collect(),
            flow_n_flows: size("vits.flow.n_flows")?,
            flow_n_wn_layers: size("vits.flow.n_wn_layers")?,
            flow_kernel_size: size("vits.flow.kernel_size")?,
            dp_n_bins: size("vits.dp.n_bins")?,
            dp_tail_bound: f.get_f32("vits.dp.tail_bound")?,
            layer_norm_eps: f.get_f32("vits.layer_norm_eps")?,
            noise_scale: f.get_f32("vits.noise_scale")?,
            length_scale: f.get_f32("vits.length_scale")?,
            noise_w: f.get_f32("vits.noise_w")?,
        };
        c.check().map_err(bad)?;
        Ok(c)
    }

    fn check(&self) -> Result<(), String> {
        if !self.hidden_channels.is_multiple_of(self.n_heads) || !self.hidden_channels.is_multiple_of(2) {
            return Err(format!(
                "vits.hidden_channels {} must be even and divisible by vits.n_heads {}",
                self.hidden_channels, self.n_heads
            ));
        }
        if self.upsample_rates.len() != self.upsample_kernel_sizes.len() {
            return Err("vits.upsample_rates and vits.upsample_kernel_sizes differ in length".into());
        }
        if self.upsample_initial_channel >> self.upsample_rates.len() == 0 {
            return Err("vits.upsample_initial_channel halves to zero channels".into());
        }
        let n_dil = self.resblock_dilations.iter().map(Vec::len).sum::<usize>();
        if n_dil != 2 * self.resblock_kernel_sizes.len() {
            return Err(format!(
                "vits.resblock_dilations has {n_dil} entries, expected 2 per resblock kernel size (ResBlock2)"
            ));
        }
        let odd = |k: &usize| k % 2 == 1;
        if !self.resblock_kernel_sizes.iter().all(odd) || !odd(&self.flow_kernel_size) {
            return Err("resblock and flow kernel sizes must be odd".into());
        }
        let positive = |x: f32| x.is_finite() && x > 0.0;
        if self.dp_n_bins < 2 || !positive(self.dp_tail_bound) || !positive(self.layer_norm_eps) {
            return Err("vits.dp.n_bins must be ≥ 2, vits.dp.tail_bound and vits.layer_norm_eps > 0".into());
        }
        Ok(())
    }

    /// Output samples per latent frame.
    pub fn hop(&self) -> usize {
        self.upsample_rates.iter().product()
    }
}
