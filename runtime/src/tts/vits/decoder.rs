//! The HiFi-GAN generator (`dec`): z `[hidden][T]` → waveform `[hop·T]`, by transposed-conv
//! upsampling stages each followed by the average of multi-receptive-field residual blocks.

use super::config::VitsConfig;
use super::ops::{add_inplace, leaky_relu, map_inplace};
use super::weights::{Conv1d, ConvShape, ConvTranspose1d, Tensors};
use crate::tts::TtsError;
use std::sync::Mutex;

/// HiFi-GAN's LeakyReLU slope inside the generator; the one before `conv_post` is PyTorch's
/// default 0.01.
const LRELU_SLOPE: f32 = 0.1;
const LRELU_SLOPE_POST: f32 = 0.01;
const CONV_PRE_POST_KERNEL: usize = 7;

pub struct Decoder {
    conv_pre: Conv1d,
    stages: Vec<UpsampleStage>,
    conv_post: Conv1d,
    /// Activation buffers kept between calls (about 50 MB for a sentence): fresh ones cost a
    /// page fault per 4 KiB, a twentieth of the decoder's time, and serialise the threads on
    /// the kernel's page-table lock. A second concurrent caller gets fresh ones.
    scratch: Mutex<Scratch>,
}

#[derive(Default)]
struct Scratch {
    x: Vec<f32>,
    up: Vec<f32>,
    sum: Vec<f32>,
    res: ResBlockBuffers,
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
            scratch: Mutex::default(),
        })
    }

    /// Samples per frame: the product of the upsampling strides (256 for Piper voices).
    pub fn hop(&self) -> usize {
        self.stages.iter().map(|s| s.up.stride()).product()
    }

    /// Waveform `[hop·frames]` in [−1, 1] from z `[hidden][frames]`.
    pub fn forward(&self, z: &[f32], frames: usize) -> Result<Vec<f32>, TtsError> {
        let mut fresh = Scratch::default();
        let mut kept = self.scratch.try_lock();
        let s = match kept.as_deref_mut() {
            Ok(kept) => kept,
            Err(_) => &mut fresh,
        };
        self.conv_pre.forward_into(z, frames, &mut s.x)?;
        let mut len = frames;
        // Averaging the resblocks is folded into the LeakyReLU that always follows it.
        let mut n_avg = 1.0;
        for stage in &self.stages {
            map_inplace(&mut s.x, |v| leaky_relu(v / n_avg, LRELU_SLOPE));
            stage.up.forward_into(&s.x, len, &mut s.up)?;
            len *= stage.up.stride();
            for (j, block) in stage.resblocks.iter().enumerate() {
                block.forward(&s.up, len, &mut s.res)?;
                if j == 0 {
                    std::mem::swap(&mut s.sum, &mut s.res.out);
                } else {
                    add_inplace(&mut s.sum, &s.res.out);
                }
            }
            n_avg = stage.resblocks.len() as f32;
            std::mem::swap(&mut s.x, &mut s.sum);
        }
        map_inplace(&mut s.x, |v| leaky_relu(v / n_avg, LRELU_SLOPE_POST));
        let mut audio = self.conv_post.forward(&s.x, len)?;
        map_inplace(&mut audio, f32::tanh);
        Ok(audio)
    }
}

/// Scratch reused by the resblocks of one forward pass.
#[derive(Default)]
struct ResBlockBuffers {
    out: Vec<f32>,
    conv: Vec<f32>,
}

impl ResBlock2 {
    /// `buf.out = block(x)`; each step's LeakyReLU and residual add ride inside its conv.
    fn forward(&self, x: &[f32], len: usize, buf: &mut ResBlockBuffers) -> Result<(), TtsError> {
        self.convs[0].forward_leaky_residual_into(x, len, LRELU_SLOPE, x, &mut buf.out)?;
        for conv in &self.convs[1..] {
            conv.forward_leaky_residual_into(&buf.out, len, LRELU_SLOPE, &buf.out, &mut buf.conv)?;
            std::mem::swap(&mut buf.out, &mut buf.conv);
        }
        Ok(())
    }
}
