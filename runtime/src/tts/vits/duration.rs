//! The stochastic duration predictor (`dp`) run in reverse: noise `[2][N]` through the inverse
//! flows, conditioned on the encoder output, gives the log-duration of every phoneme id.

use super::config::VitsConfig;
use super::ops::{add_inplace, flip_channels, gelu, map_inplace};
use super::spline::{inverse_rq_spline, SplineParams};
use super::weights::{Conv1d, ConvShape, LayerNorm, Tensors};
use crate::tts::TtsError;

/// DDSConv layers and kernel size, fixed by VITS's `StochasticDurationPredictor`.
const DDS_LAYERS: usize = 3;
const DDS_KERNEL: usize = 3;
/// ConvFlows applied in reverse, in that order (VITS drops `flows.1`, the "useless vflow").
const REVERSE_FLOWS: [usize; 3] = [7, 5, 3];

pub struct DurationPredictor {
    pre: Conv1d,
    convs: DdsConv,
    proj: Conv1d,
    flows: Vec<ConvFlow>,
    /// ElementwiseAffine (`flows.0`): `z = (z − m)·exp(−logs)`, per channel.
    affine_m: Vec<f32>,
    affine_exp_neg_logs: Vec<f32>,
}

/// Dilated depth-separable convolutions: layer i is a depthwise conv with dilation 3^i, then a
/// 1×1 conv, each followed by LayerNorm and GELU, added back residually.
struct DdsConv {
    sep: Vec<Conv1d>,
    conv_1x1: Vec<Conv1d>,
    norms_1: Vec<LayerNorm>,
    norms_2: Vec<LayerNorm>,
}

/// A coupling layer: channel 0 passes through and parameterises a spline applied to channel 1.
struct ConvFlow {
    pre: Conv1d,
    convs: DdsConv,
    proj: Conv1d,
    n_bins: usize,
    tail_bound: f32,
    /// The spline's unnormalised bin sizes are divided by √filter_channels.
    scale: f32,
}

impl DurationPredictor {
    pub fn load(t: &Tensors, c: &VitsConfig) -> Result<Self, TtsError> {
        let h = c.hidden_channels;
        let flows = REVERSE_FLOWS
            .iter()
            .map(|i| {
                let p = format!("dp.flows.{i}");
                Ok(ConvFlow {
                    pre: t.conv1x1(&format!("{p}.pre"), 1, h)?,
                    convs: DdsConv::load(t, &format!("{p}.convs"), h, c.layer_norm_eps)?,
                    proj: t.conv1x1(&format!("{p}.proj"), h, 3 * c.dp_n_bins - 1)?,
                    n_bins: c.dp_n_bins,
                    tail_bound: c.dp_tail_bound,
                    scale: (h as f32).sqrt(),
                })
            })
            .collect::<Result<_, TtsError>>()?;
        Ok(DurationPredictor {
            pre: t.conv1x1("dp.pre", h, h)?,
            convs: DdsConv::load(t, "dp.convs", h, c.layer_norm_eps)?,
            proj: t.conv1x1("dp.proj", h, h)?,
            flows,
            affine_m: t.get("dp.flows.0.m", &[2, 1])?,
            affine_exp_neg_logs: t.get("dp.flows.0.exp_neg_logs", &[2, 1])?,
        })
    }

    /// Log-durations `[len]` from the encoder output `x` `[hidden][len]` and the noise
    /// `[2][len]` (already multiplied by `noise_w`).
    pub fn forward(&self, x: &[f32], len: usize, mut z: Vec<f32>) -> Result<Vec<f32>, TtsError> {
        let g = self.pre.forward(x, len)?;
        let g = self.convs.forward(g, len)?;
        let g = self.proj.forward(&g, len)?;
        for flow in &self.flows {
            flip_channels(&mut z, len);
            flow.reverse(&mut z, &g, len)?;
        }
        flip_channels(&mut z, len);
        for (ch, row) in z.chunks_exact_mut(len).enumerate() {
            let (m, s) = (self.affine_m[ch], self.affine_exp_neg_logs[ch]);
            row.iter_mut().for_each(|v| *v = (*v - m) * s);
        }
        z.truncate(len);
        Ok(z)
    }
}

impl DdsConv {
    fn load(t: &Tensors, prefix: &str, ch: usize, eps: f32) -> Result<Self, TtsError> {
        let mut s = DdsConv { sep: vec![], conv_1x1: vec![], norms_1: vec![], norms_2: vec![] };
        for i in 0..DDS_LAYERS {
            let dilation = DDS_KERNEL.pow(i as u32);
            let shape = ConvShape::new(ch, ch, DDS_KERNEL).dilation(dilation).groups(ch);
            s.sep.push(t.conv(&format!("{prefix}.convs_sep.{i}"), shape)?);
            s.conv_1x1.push(t.conv1x1(&format!("{prefix}.convs_1x1.{i}"), ch, ch)?);
            s.norms_1.push(t.layer_norm(&format!("{prefix}.norms_1.{i}"), ch, eps)?);
            s.norms_2.push(t.layer_norm(&format!("{prefix}.norms_2.{i}"), ch, eps)?);
        }
        Ok(s)
    }

    fn forward(&self, mut x: Vec<f32>, len: usize) -> Result<Vec<f32>, TtsError> {
        for i in 0..self.sep.len() {
            let mut y = self.sep[i].forward(&x, len)?;
            self.norms_1[i].forward(&mut y, len);
            map_inplace(&mut y, gelu);
            let mut y = self.conv_1x1[i].forward(&y, len)?;
            self.norms_2[i].forward(&mut y, len);
            map_inplace(&mut y, gelu);
            add_inplace(&mut x, &y);
        }
        Ok(x)
    }
}

impl ConvFlow {
    /// `z` `[2][len]`: channel 1 goes back through the spline that channel 0 and `g` define.
    fn reverse(&self, z: &mut [f32], g: &[f32], len: usize) -> Result<(), TtsError> {
        let (x0, x1) = z.split_at_mut(len);
        let mut h = self.pre.forward(x0, len)?;
        add_inplace(&mut h, g);
        let h = self.convs.forward(h, len)?;
        let h = self.proj.forward(&h, len)?;
        let mut raw = vec![0f32; 3 * self.n_bins - 1];
        for (t, v) in x1.iter_mut().enumerate() {
            raw.iter_mut().enumerate().for_each(|(k, r)| *r = h[k * len + t]);
            let p = SplineParams { raw: &raw, n_bins: self.n_bins, scale: self.scale, tail_bound: self.tail_bound };
            *v = inverse_rq_spline(*v, &p);
        }
        Ok(())
    }
}

/// Frames per phoneme id: `ceil(exp(logw)·length_scale)`, as the exported graph rounds.
pub fn durations(logw: &[f32], length_scale: f32) -> Vec<usize> {
    logw.iter().map(|&l| (l.exp() * length_scale).ceil().max(0.0) as usize).collect()
}
