//! Rotary position embeddings: normal and NeoX pair layouts, linear scaling, and per-frequency
//! factors (`rope_freqs.weight`, how llama.cpp files carry Llama 3's rope scaling).

use super::{ModelConfig, RopeStyle};

pub struct Rope {
    style: RopeStyle,
    /// Angle per position for each rotated pair, already divided by its frequency factor.
    inv_freq: Vec<f64>,
    freq_scale: f64,
}

impl Rope {
    pub fn new(cfg: &ModelConfig, freq_factors: Option<&[f32]>) -> Self {
        let half = cfg.rope_dim / 2;
        // Angles in f64 keep cos/sin within f32 rounding of transformers' reference at any
        // position; ggml's running product in f32 drifts slightly at long contexts.
        let inv_freq = (0..half)
            .map(|i| {
                let f = (cfg.rope_base as f64).powf(-2.0 * i as f64 / cfg.rope_dim as f64);
                f / freq_factors.map_or(1.0, |ff| ff[i] as f64)
            })
            .collect();
        Rope { style: cfg.rope_style, inv_freq, freq_scale: cfg.rope_freq_scale as f64 }
    }

    /// Angle per position of each rotated pair (before the linear scale).
    #[cfg(feature = "cuda")]
    pub fn inv_freq(&self) -> &[f64] {
        &self.inv_freq
    }

    #[cfg(feature = "cuda")]
    pub fn freq_scale(&self) -> f64 {
        self.freq_scale
    }

    /// Rotates every head in `x` (`n_heads × head_dim`, one token) for position `pos`.
    pub fn apply(&self, x: &mut [f32], head_dim: usize, pos: usize) {
        let p = pos as f64 * self.freq_scale;
        let half = self.inv_freq.len();
        let cs: Vec<(f32, f32)> = self
            .inv_freq
            .iter()
            .map(|&f| {
                let (s, c) = (p * f).sin_cos();
                (c as f32, s as f32)
            })
            .collect();
        for head in x.chunks_exact_mut(head_dim) {
            for (i, &(c, s)) in cs.iter().enumerate() {
                let (a, b) = match self.style {
                    RopeStyle::Normal => (2 * i, 2 * i + 1),
                    RopeStyle::Neox => (i, i + half),
                };
                let (x0, x1) = (head[a], head[b]);
                head[a] = x0 * c - x1 * s;
                head[b] = x0 * s + x1 * c;
            }
        }
    }
}
