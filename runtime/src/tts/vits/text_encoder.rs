//! The text encoder (`enc_p`): phoneme embedding → transformer with windowed relative-position
//! attention → projection to the prior's mean and log-scale.

use nexus_kernels::ops::dot_f32;
use rayon::prelude::*;

use super::config::VitsConfig;
use super::ops::{add_inplace, map_inplace};
use super::weights::{Conv1d, ConvShape, LayerNorm, Tensors};
use crate::tts::TtsError;

/// What the encoder hands on, all channels-first over the `len` phoneme ids.
pub struct Encoded {
    pub len: usize,
    /// Hidden output `[hidden][len]`: the duration predictor's input.
    pub x: Vec<f32>,
    /// Prior mean `[hidden][len]`.
    pub m_p: Vec<f32>,
    /// Prior log standard deviation `[hidden][len]`.
    pub logs_p: Vec<f32>,
}

pub struct TextEncoder {
    hidden: usize,
    /// `[n_vocab][hidden]`.
    emb: Vec<f32>,
    layers: Vec<EncoderLayer>,
    proj: Conv1d,
}

struct EncoderLayer {
    attn: RelativeAttention,
    norm_1: LayerNorm,
    ffn_1: Conv1d,
    ffn_2: Conv1d,
    norm_2: LayerNorm,
}

/// Multi-head self-attention whose scores and outputs get a learned term for each relative
/// offset within ±window (VITS `attentions.MultiHeadAttention`, heads share the tables).
struct RelativeAttention {
    n_heads: usize,
    window: usize,
    conv_q: Conv1d,
    conv_k: Conv1d,
    conv_v: Conv1d,
    conv_o: Conv1d,
    /// `[2·window + 1][head_dim]`, offset `j − i + window`.
    emb_rel_k: Vec<f32>,
    emb_rel_v: Vec<f32>,
}

impl TextEncoder {
    pub fn load(t: &Tensors, c: &VitsConfig) -> Result<Self, TtsError> {
        let (h, f) = (c.hidden_channels, c.filter_channels);
        let head_dim = h / c.n_heads;
        let rel = 2 * c.window_size + 1;
        let layers = (0..c.n_layers)
            .map(|i| {
                let a = format!("enc_p.encoder.attn_layers.{i}");
                Ok(EncoderLayer {
                    attn: RelativeAttention {
                        n_heads: c.n_heads,
                        window: c.window_size,
                        conv_q: t.conv1x1(&format!("{a}.conv_q"), h, h)?,
                        conv_k: t.conv1x1(&format!("{a}.conv_k"), h, h)?,
                        conv_v: t.conv1x1(&format!("{a}.conv_v"), h, h)?,
                        conv_o: t.conv1x1(&format!("{a}.conv_o"), h, h)?,
                        emb_rel_k: t.get(&format!("{a}.emb_rel_k"), &[1, rel, head_dim])?,
                        emb_rel_v: t.get(&format!("{a}.emb_rel_v"), &[1, rel, head_dim])?,
                    },
                    norm_1: t.layer_norm(&format!("enc_p.encoder.norm_layers_1.{i}"), h, c.layer_norm_eps)?,
                    ffn_1: t.conv(&format!("enc_p.encoder.ffn_layers.{i}.conv_1"), ConvShape::new(h, f, 3))?,
                    ffn_2: t.conv(&format!("enc_p.encoder.ffn_layers.{i}.conv_2"), ConvShape::new(f, h, 3))?,
                    norm_2: t.layer_norm(&format!("enc_p.encoder.norm_layers_2.{i}"), h, c.layer_norm_eps)?,
                })
            })
            .collect::<Result<_, TtsError>>()?;
        Ok(TextEncoder {
            hidden: h,
            emb: t.get("enc_p.emb.weight", &[c.n_vocab, h])?,
            layers,
            proj: t.conv1x1("enc_p.proj", h, 2 * h)?,
        })
    }

    /// Ids must already be checked against the vocabulary.
    pub fn forward(&self, ids: &[usize]) -> Result<Encoded, TtsError> {
        let (h, n) = (self.hidden, ids.len());
        let scale = (h as f32).sqrt();
        let mut x = vec![0f32; h * n];
        for (i, &id) in ids.iter().enumerate() {
            for (ch, &e) in self.emb[id * h..(id + 1) * h].iter().enumerate() {
                x[ch * n + i] = e * scale;
            }
        }
        for layer in &self.layers {
            let y = layer.attn.forward(&x, n)?;
            add_inplace(&mut x, &y);
            layer.norm_1.forward(&mut x, n);
            let mut y = layer.ffn_1.forward(&x, n)?;
            map_inplace(&mut y, |v| v.max(0.0));
            let y = layer.ffn_2.forward(&y, n)?;
            add_inplace(&mut x, &y);
            layer.norm_2.forward(&mut x, n);
        }
        let mut stats = self.proj.forward(&x, n)?;
        let logs_p = stats.split_off(h * n);
        Ok(Encoded { len: n, x, m_p: stats, logs_p })
    }
}

impl RelativeAttention {
    fn forward(&self, x: &[f32], n: usize) -> Result<Vec<f32>, TtsError> {
        let hd = self.conv_q.c_out() / self.n_heads;
        let q = self.conv_q.forward(x, n)?;
        let k = self.conv_k.forward(x, n)?;
        let v = self.conv_v.forward(x, n)?;
        // Position-major copies per head, so that every dot product runs over contiguous memory.
        let inv_sqrt = 1.0 / (hd as f32).sqrt();
        let q = heads_by_position(&q, n, hd, inv_sqrt);
        let k = heads_by_position(&k, n, hd, 1.0);
        let v = heads_by_position(&v, n, hd, 1.0);

        // out[(head, i)][d], filled one query row per task.
        let mut out = vec![0f32; self.n_heads * n * hd];
        out.par_chunks_exact_mut(hd).enumerate().for_each(|(row, o)| {
            let (head, i) = (row / n, row % n);
            let base = head * n * hd;
            let qi = &q[base + i * hd..base + (i + 1) * hd];
            let mut p: Vec<f32> = (0..n).map(|j| dot_f32(qi, &k[base + j * hd..base + (j + 1) * hd])).collect();
            let (lo, hi) = (i.saturating_sub(self.window), (i + self.window + 1).min(n));
            for (j, pj) in p.iter_mut().enumerate().take(hi).skip(lo) {
                let r = j + self.window - i;
                *pj += dot_f32(qi, &self.emb_rel_k[r * hd..(r + 1) * hd]);
            }
            nexus_kernels::ops::softmax_inplace(&mut p);
            for (j, &pj) in p.iter().enumerate() {
                axpy(o, pj, &v[base + j * hd..base + (j + 1) * hd]);
            }
            for (j, &pj) in p.iter().enumerate().take(hi).skip(lo) {
                let r = j + self.window - i;
                axpy(o, pj, &self.emb_rel_v[r * hd..(r + 1) * hd]);
            }
        });

        // Back to channels-first: channel head·hd + d, position i.
        let mut merged = vec![0f32; self.n_heads * hd * n];
        for (row, o) in out.chunks_exact(hd).enumerate() {
            let (head, i) = (row / n, row % n);
            for (d, &val) in o.iter().enumerate() {
                merged[(head * hd + d) * n + i] = val;
            }
        }
        self.conv_o.forward(&merged, n)
    }
}

/// `[heads·hd][n]` channels-first → `[heads][n][hd]`, times `scale`.
fn heads_by_position(x: &[f32], n: usize, hd: usize, scale: f32) -> Vec<f32> {
    let n_heads = x.len() / (n * hd);
    let mut out = vec![0f32; x.len()];
    for head in 0..n_heads {
        for d in 0..hd {
            let row = &x[(head * hd + d) * n..(head * hd + d + 1) * n];
            for (i, &val) in row.iter().enumerate() {
                out[(head * n + i) * hd + d] = val * scale;
            }
        }
    }
    out
}

fn axpy(y: &mut [f32], a: f32, x: &[f32]) {
    y.iter_mut().zip(x).for_each(|(y, &x)| *y += a * x);
}
