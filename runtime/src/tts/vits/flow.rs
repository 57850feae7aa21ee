//! The normalising flow run in reverse: z_p (a sample of the prior) → z (the decoder input),
//! through mean-only residual coupling layers whose shift comes from a WaveNet, with the
//! channel order reversed between them.

use rayon::prelude::*;

use super::config::VitsConfig;
use super::ops::{add_inplace, flip_channels, tanh_sigmoid_gate};
use super::weights::{Conv1d, ConvShape, Tensors};
use crate::tts::TtsError;

pub struct Flow {
    /// In forward order: `flow.flows.0`, `.2`, `.4`, … (the odd modules are the flips).
    couplings: Vec<ResidualCoupling>,
}

/// Mean-only coupling: the first half of the channels passes through and sets the shift that
/// is taken off the second half.
struct ResidualCoupling {
    half: usize,
    pre: Conv1d,
    wn: Vec<WaveNetLayer>,
    post: Conv1d,
}

/// Gated dilated conv (tanh·sigmoid) then a 1×1 conv split into a residual and a skip part;
/// the last layer has no residual part.
struct WaveNetLayer {
    in_layer: Conv1d,
    res_skip: Conv1d,
}

impl Flow {
    pub fn load(t: &Tensors, c: &VitsConfig) -> Result<Self, TtsError> {
        let (ch, half) = (c.hidden_channels, c.hidden_channels / 2);
        let couplings = (0..c.flow_n_flows)
            .map(|f| {
                let p = format!("flow.flows.{}", 2 * f);
                let wn = (0..c.flow_n_wn_layers)
                    .map(|l| {
                        let last = l + 1 == c.flow_n_wn_layers;
                        Ok(WaveNetLayer {
                            in_layer: t.conv(
                                &format!("{p}.enc.in_layers.{l}"),
                                ConvShape::new(ch, 2 * ch, c.flow_kernel_size),
                            )?,
                            res_skip: t.conv1x1(
                                &format!("{p}.enc.res_skip_layers.{l}"),
                                ch,
                                if last { ch } else { 2 * ch },
                            )?,
                        })
                    })
                    .collect::<Result<_, TtsError>>()?;
                Ok(ResidualCoupling {
                    half,
                    pre: t.conv1x1(&format!("{p}.pre"), half, ch)?,
                    wn,
                    post: t.conv1x1(&format!("{p}.post"), ch, half)?,
                })
            })
            .collect::<Result<_, TtsError>>()?;
        Ok(Flow { couplings })
    }

    /// z `[hidden][len]` from z_p `[hidden][len]`.
    pub fn reverse(&self, mut z: Vec<f32>, len: usize) -> Result<Vec<f32>, TtsError> {
        for coupling in self.couplings.iter().rev() {
            flip_channels(&mut z, len);
            coupling.reverse(&mut z, len)?;
        }
        Ok(z)
    }
}

impl ResidualCoupling {
    fn reverse(&self, z: &mut [f32], len: usize) -> Result<(), TtsError> {
        let (x0, x1) = z.split_at_mut(self.half * len);
        let mut h = self.pre.forward(x0, len)?;
        let hidden = h.len();
        let mut skip = vec![0f32; hidden];
        let (mut a, mut acts, mut rs) = (Vec::new(), vec![0f32; hidden], Vec::new());
        for (l, layer) in self.wn.iter().enumerate() {
            layer.in_layer.forward_into(&h, len, &mut a)?;
            gated_activation(&a, &mut acts);
            layer.res_skip.forward_into(&acts, len, &mut rs)?;
            if l + 1 < self.wn.len() {
                add_inplace(&mut h, &rs[..hidden]);
                add_inplace(&mut skip, &rs[hidden..]);
            } else {
                add_inplace(&mut skip, &rs);
            }
        }
        let m = self.post.forward(&skip, len)?;
        x1.iter_mut().zip(&m).for_each(|(x, &m)| *x -= m);
        Ok(())
    }
}

/// WaveNet's `tanh(a[:C])·sigmoid(a[C:])` over a `[2C][L]` tensor, into `out` `[C][L]`.
fn gated_activation(a: &[f32], out: &mut [f32]) {
    let (t, s) = a.split_at(a.len() / 2);
    out.par_chunks_mut(4096).zip(t.par_chunks(4096).zip(s.par_chunks(4096))).for_each(|(o, (t, s))| {
        for ((o, &t), &s) in o.iter_mut().zip(t).zip(s) {
            *o = tanh_sigmoid_gate(t, s);
        }
    });
}
