//! Rotary position embeddings: normal and NeoX pair layouts, linear scaling, and per-frequency
//! factors (`rope_freqs.weight`, how llama.cpp files carry Llama 3's rope scaling).

use super::{ModelConfig, RopeStyle};

pub struct Rope {
    style: RopeStyle,
    /// Angle per position for each rotated pair, already divided by its frequency factor, in
    /// f64 (the CUDA kernels compute their angles from these).
    #[cfg_attr(not(feature = "cuda"), allow(dead_code))]
    inv_freq: Vec<f64>,
    #[cfg_attr(not(feature = "cuda"), allow(dead_code))]
    freq_scale: f64,
    /// ggml's angle step `base^(-2/n_dims)` in f32, the frequency factors and the linear scale:
    /// the CPU path computes its angles as llama.cpp's CPU backend does (see `apply`).
    theta_scale: f32,
    factors: Option<Vec<f32>>,
    freq_scale_f32: f32,
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
        Rope {
            style: cfg.rope_style,
            inv_freq,
            freq_scale: cfg.rope_freq_scale as f64,
            theta_scale: cfg.rope_base.powf(-2.0 / cfg.rope_dim as f32),
            factors: freq_factors.map(|f| f[..half].to_vec()),
            freq_scale_f32: cfg.rope_freq_scale,
        }
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
    ///
    /// The angles are ggml's (`ggml_rope_cache_init`): a running product `pos · step^i` in f32,
    /// divided by the pair's frequency factor, times the linear scale, through libm's
    /// `cosf`/`sinf`; and the rotation contracts into fused multiply-adds as GCC compiles
    /// ggml's `x0*cos - x1*sin`. Bitwise llama.cpp's, at the price of the product's drift at
    /// long contexts (a few ulp of the angle at position 8k; tests/tests/float_reference.rs).
    pub fn apply(&self, x: &mut [f32], head_dim: usize, pos: usize) {
        let half = self.inv_freq.len();
        let mut theta = pos as f32;
        let cs: Vec<(f32, f32)> = (0..half)
            .map(|i| {
                let ff = self.factors.as_ref().map_or(1.0, |f| f[i]);
                let t = self.freq_scale_f32 * (theta / ff);
                theta *= self.theta_scale;
                (t.cos(), t.sin())
            })
            .collect();
        for head in x.chunks_exact_mut(head_dim) {
            for (i, &(c, s)) in cs.iter().enumerate() {
                let (a, b) = match self.style {
                    RopeStyle::Normal => (2 * i, 2 * i + 1),
                    RopeStyle::Neox => (i, i + half),
                };
                let (x0, x1) = (head[a], head[b]);
                head[a] = x0.mul_add(c, -(x1 * s));
                head[b] = x0.mul_add(s, x1 * c);
            }
        }
    }
}
