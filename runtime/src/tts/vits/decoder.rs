//! The HiFi-GAN generator (`dec`): z `[hidden][T]` → waveform `[hop·T]`, by transposed-conv
//! upsampling stages each followed by the average of multi-receptive-field residual blocks.

use super::config::VitsConfig;
use super::ops::{add_inplace, leaky_relu, leaky_relu_into, map_inplace};
use super::weights::{Conv1d, ConvShape, ConvTranspose1d, Tensors};
use crate::tts::TtsError;

/// HiFi-GAN's LeakyReLU slope inside the generator; the one before `conv_post` is PyTorch's
/// default 0.01.
const LRELU_SLOPE: f32 = 0.1;
const LRELU_SLOPE_POST: f32 = 0.01;
const CONV_PRE_POST_KERNEL: usize = 7;

pub struct Decoder {
    conv_pre: Conv1d,
    stages: Vec<UpsampleStage>,
    conv_post: Conv1d,
}

struct UpsampleStage {
    up: ConvTranspose1d,
    resblocks: Vec<ResBlock2>,
}

/// HiFi-GAN's ResBlock2: for each dilation, `x += conv_d(leaky_relu(x))`.
struct ResBlock2 {
    convs: Vec<Conv1d>,
}

impl Decoder {
    pub fn load(t: &Tensors, c: &VitsConfig) -> Result<Self, TtsError> {
        let mut ch = c.upsample_initial_channel;
        let n_kinds = c.resblock_kernel_sizes.len();
        let mut stages = Vec::with_capacity(c.upsample_rates.len());
        for (i, (&rate, &kernel)) in c.upsample_rates.iter().zip(&c.upsample_kernel_sizes).enumerate() {
            let out = ch / 2;
            let up = t.conv_transpose(&format!("dec.ups.{i}"), ch, out, kernel, rate)?;
            let resblocks = (0..n_kinds)
                .map(|j| {
                    let k = c.resblock_kernel_sizes[j];
                    let convs = c.resblock_dilations[j]
                        .iter()
                        .enumerate()
                        .map(|(n, &d)| {
                            let name = format!("dec.resblocks.{}.convs.{n}", i * n_kinds + j);
                            t.conv(&name, ConvShape::new(out, out, k).dilation(d))
                        })
                        .collect::<Result<_, TtsError>>()?;
                    Ok(ResBlock2 { convs })
                })
                .collect::<Result<_, TtsError>>()?;
            stages.push(UpsampleStage { up, resblocks });
            ch = out;
        }
        Ok(Decoder {
            conv_pre: t.conv(
                "dec.conv_pre",
                ConvShape::new(c.hidden_channels, c.upsample_initial_channel, CONV_PRE_POST_KERNEL),
            )?,
            stages,
            conv_post: t.conv("dec.conv_post", ConvShape::new(ch, 1, CONV_PRE_POST_KERNEL).no_bias())?,
        })
    }

    /// Samples per frame: the product of the upsampling strides (256 for Piper voices).
    pub fn hop(&self) -> usize {
        self.stages.iter().map(|s| s.up.stride()).product()
    }

    /// Waveform `[hop·frames]` in [−1, 1] from z `[hidden][frames]`.
    pub fn forward(&self, z: &[f32], frames: usize) -> Result<Vec<f32>, TtsError> {
        let mut x = self.conv_pre.forward(z, frames)?;
        let mut len = frames;
        // Averaging the resblocks is folded into the LeakyReLU that always follows it.
        let mut n_avg = 1.0;
        let mut buf = ResBlockBuffers::default();
        for stage in &self.stages {
            map_inplace(&mut x, |v| leaky_relu(v / n_avg, LRELU_SLOPE));
            x = stage.up.forward(&x, len)?;
            len *= stage.up.stride();
            let mut sum = Vec::new();
            for (j, block) in stage.resblocks.iter().enumerate() {
                block.forward(&x, len, &mut buf)?;
                if j == 0 {
                    std::mem::swap(&mut sum, &mut buf.out);
                } else {
                    add_inplace(&mut sum, &buf.out);
                }
            }
            n_avg = stage.resblocks.len() as f32;
            x = sum;
        }
        map_inplace(&mut x, |v| leaky_relu(v / n_avg, LRELU_SLOPE_POST));
        let mut audio = self.conv_post.forward(&x, len)?;
        map_inplace(&mut audio, f32::tanh);
        Ok(audio)
    }
}

/// Scratch reused by the resblocks of one forward pass.
#[derive(Default)]
struct ResBlockBuffers {
    out: Vec<f32>,
    act: Vec<f32>,
    conv: Vec<f32>,
}

impl ResBlock2 {
    /// `buf.out = block(x)`.
    fn forward(&self, x: &[f32], len: usize, buf: &mut ResBlockBuffers) -> Result<(), TtsError> {
        buf.act.resize(x.len(), 0.0);
        leaky_relu_into(x, LRELU_SLOPE, &mut buf.act);
        self.convs[0].forward_into(&buf.act, len, &mut buf.out)?;
        add_inplace(&mut buf.out, x);
        for conv in &self.convs[1..] {
            leaky_relu_into(&buf.out, LRELU_SLOPE, &mut buf.act);
            conv.forward_into(&buf.act, len, &mut buf.conv)?;
            add_inplace(&mut buf.out, &buf.conv);
        }
        Ok(())
    }
}
