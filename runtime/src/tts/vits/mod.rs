//! A Piper VITS voice, natively: phoneme ids → text encoder → stochastic duration predictor →
//! length regulator and prior sample → reverse flow → HiFi-GAN decoder → waveform.
//!
//! Activations are channels-first `[C][L]` f32 throughout, as in the PyTorch model, so every
//! stage can be checked against onnxruntime's intermediates (tests/vits.rs).

mod config;
mod decoder;
mod duration;
mod flow;
mod ops;
pub mod pcm;
mod spline;
mod stream;
mod text_encoder;
mod weights;

use std::path::{Path, PathBuf};

use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;

pub use config::VitsConfig;
pub use duration::durations;
pub use stream::{ChunkStream, DECODER_HALO, FLOW_HALO, MAX_CHUNK_FRAMES};
pub use text_encoder::Encoded;

use crate::gguf::GgufFile;
use crate::tts::phoneme_ids::PhonemeIdMap;
use crate::tts::TtsError;
use decoder::Decoder;
use duration::DurationPredictor;
use flow::Flow;
use text_encoder::TextEncoder;
use weights::Tensors;

/// Longest sentence accepted, in phoneme ids (Piper sentences are 50–300).
pub const MAX_IDS: usize = 4096;
/// Longest sentence synthesized, in frames (8192 frames of 256 samples ≈ 95 s at 22 050 Hz):
/// bounds the decoder's buffers when durations or `length_scale` are extreme.
pub const MAX_FRAMES: usize = 8192;

/// Synthesis controls, as in Piper's `.onnx.json` `inference` section.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Scales {
    /// Standard deviation of the prior sample (variation of the voice); 0 is deterministic.
    pub noise_scale: f32,
    /// Multiplies every duration: > 1 speaks slower.
    pub length_scale: f32,
    /// Standard deviation of the duration predictor's noise (rhythm variation).
    pub noise_w: f32,
}

impl Scales {
    fn check(&self) -> Result<(), TtsError> {
        let ok = self.noise_scale.is_finite()
            && self.noise_w.is_finite()
            && self.noise_scale >= 0.0
            && self.noise_w >= 0.0
            && self.length_scale.is_finite()
            && self.length_scale > 0.0;
        if ok {
            Ok(())
        } else {
            Err(TtsError::Synthesis(format!(
                "scales {self:?}: noise scales must be finite and ≥ 0, length_scale finite and > 0"
            )))
        }
    }
}

/// Seeded Gaussian noise for the duration predictor and the prior sample, drawn in that order.
pub struct Noise(ChaCha8Rng);

impl Noise {
    pub fn new(seed: u64) -> Self {
        Noise(ChaCha8Rng::seed_from_u64(seed))
    }

    /// `n` values of `scale·N(0, 1)` (Box–Muller); all zeros without drawing when `scale` is 0.
    pub fn gaussian(&mut self, n: usize, scale: f32) -> Vec<f32> {
        if scale == 0.0 {
            return vec![0.0; n];
        }
        let mut out = Vec::with_capacity(n + 1);
        while out.len() < n {
            let u1 = 1.0 - self.0.gen::<f64>(); // (0, 1]: ln stays finite
            let u2 = self.0.gen::<f64>();
            let r = (-2.0 * u1.ln()).sqrt();
            let a = std::f64::consts::TAU * u2;
            out.push((r * a.cos()) as f32 * scale);
            out.push((r * a.sin()) as f32 * scale);
        }
        out.truncate(n);
        out
    }
}

/// The sentence after encoder, durations and prior sample: what the flow and decoder consume.
pub struct Latent {
    pub frames: usize,
    /// `[hidden][frames]`.
    pub z_p: Vec<f32>,
}

pub struct Voice {
    path: PathBuf,
    name: String,
    espeak_voice: String,
    config: VitsConfig,
    phoneme_map: PhonemeIdMap,
    encoder: TextEncoder,
    duration: DurationPredictor,
    flow: Flow,
    decoder: Decoder,
}

impl Voice {
    /// Opens a voice GGUF (`general.architecture = "vits"`), checking every tensor's name,
    /// type and shape against the hyper-parameters.
    pub fn load(path: impl AsRef<Path>) -> Result<Voice, TtsError> {
        Self::from_file(&GgufFile::open(path.as_ref())?)
    }

    /// [`Voice::load`] on an open file (e.g. the voice of a bundle, rebuilt in memory).
    pub fn from_file(file: &GgufFile) -> Result<Voice, TtsError> {
        let config = VitsConfig::from_gguf(file)?;
        let phoneme_map = PhonemeIdMap::from_gguf(file)?;
        if phoneme_map.max_id() >= config.n_vocab as i64 {
            return Err(TtsError::Voice {
                path: file.path().to_path_buf(),
                what: format!(
                    "the phoneme map uses id {}, beyond vits.n_vocab = {}",
                    phoneme_map.max_id(),
                    config.n_vocab
                ),
            });
        }
        let t = Tensors { file };
        Ok(Voice {
            phoneme_map,
            path: file.path().to_path_buf(),
            name: file.opt("general.name", GgufFile::get_str)?.unwrap_or("").to_string(),
            espeak_voice: file.get_str("vits.espeak.voice")?.to_string(),
            encoder: TextEncoder::load(&t, &config)?,
            duration: DurationPredictor::load(&t, &config)?,
            flow: Flow::load(&t, &config)?,
            decoder: Decoder::load(&t, &config)?,
            config,
        })
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    pub fn name(&self) -> &str {
        &self.name
    }

    pub fn config(&self) -> &VitsConfig {
        &self.config
    }

    /// Phoneme → ids map of the voice (`vits.phoneme_id_map.*`).
    pub fn phoneme_map(&self) -> &PhonemeIdMap {
        &self.phoneme_map
    }

    pub fn sample_rate(&self) -> u32 {
        self.config.sample_rate
    }

    /// The espeak-ng voice the phonemizer must use (e.g. "en-us").
    pub fn espeak_voice(&self) -> &str {
        &self.espeak_voice
    }

    /// Samples per latent frame (256).
    pub fn hop(&self) -> usize {
        self.decoder.hop()
    }

    pub fn default_scales(&self) -> Scales {
        Scales {
            noise_scale: self.config.noise_scale,
            length_scale: self.config.length_scale,
            noise_w: self.config.noise_w,
        }
    }

    /// The whole sentence's waveform: raw model output in [−1, 1], before Piper's peak
    /// normalisation ([`pcm`]).
    pub fn synthesize(&self, ids: &[i64], scales: Scales, seed: u64) -> Result<Vec<f32>, TtsError> {
        in_pool(|| {
            let latent = self.latent(ids, scales, seed)?;
            let z = self.flow_reverse(latent.z_p, latent.frames)?;
            self.decode(&z, latent.frames)
        })
    }

    /// Encoder, duration predictor, length regulator and prior sample for one sentence.
    pub fn latent(&self, ids: &[i64], scales: Scales, seed: u64) -> Result<Latent, TtsError> {
        scales.check()?;
        let mut noise = Noise::new(seed);
        let enc = self.encode(ids)?;
        let logw = self.log_durations(&enc, scales.noise_w, &mut noise)?;
        let durations = self.frame_durations(&logw, scales.length_scale)?;
        let (z_p, frames) = self.prior_sample(&enc, &durations, scales.noise_scale, &mut noise);
        Ok(Latent { frames, z_p })
    }

    /// Text encoder over checked ids.
    pub fn encode(&self, ids: &[i64]) -> Result<Encoded, TtsError> {
        if ids.is_empty() {
            return Err(TtsError::NothingToSay("no phoneme ids".into()));
        }
        if ids.len() > MAX_IDS {
            return Err(TtsError::Synthesis(format!(
                "{} phoneme ids in one sentence, more than the {MAX_IDS} accepted; split the text",
                ids.len()
            )));
        }
        let n_vocab = self.config.n_vocab;
        let ids = ids
            .iter()
            .map(|&id| match usize::try_from(id) {
                Ok(u) if u < n_vocab => Ok(u),
                _ => Err(TtsError::PhonemeId { id, n_vocab }),
            })
            .collect::<Result<Vec<usize>, _>>()?;
        self.encoder.forward(&ids)
    }

    /// Log-durations `[N]` (the duration predictor in reverse, noise `noise_w·N(0,1)`).
    pub fn log_durations(&self, enc: &Encoded, noise_w: f32, noise: &mut Noise) -> Result<Vec<f32>, TtsError> {
        let z = noise.gaussian(2 * enc.len, noise_w);
        self.duration.forward(&enc.x, enc.len, z)
    }

    /// Frames per id, with the sentence's total checked against [`MAX_FRAMES`].
    pub fn frame_durations(&self, logw: &[f32], length_scale: f32) -> Result<Vec<usize>, TtsError> {
        let d = durations(logw, length_scale);
        let total = d.iter().try_fold(0usize, |a, &b| a.checked_add(b)).unwrap_or(usize::MAX);
        if total > MAX_FRAMES {
            return Err(TtsError::Synthesis(format!(
                "the sentence would last {total} frames, more than the {MAX_FRAMES} accepted \
                 (about {} s); split the text or lower length_scale",
                MAX_FRAMES * self.hop() / self.config.sample_rate as usize
            )));
        }
        Ok(d)
    }

    /// Length regulator and prior sample: column i of m_p / logs_p repeated `durations[i]`
    /// times, `z_p = m_p + ε·exp(logs_p)·noise_scale`. At least one frame, as the graph clips.
    pub fn prior_sample(
        &self,
        enc: &Encoded,
        durations: &[usize],
        noise_scale: f32,
        noise: &mut Noise,
    ) -> (Vec<f32>, usize) {
        let frames = durations.iter().sum::<usize>().max(1);
        let src: Vec<usize> = durations.iter().enumerate().flat_map(|(i, &d)| std::iter::repeat_n(i, d)).collect();
        let (h, n) = (self.config.hidden_channels, enc.len);
        let eps = noise.gaussian(h * frames, noise_scale);
        let mut z_p = vec![0f32; h * frames];
        for ch in 0..h {
            let (m, s) = (&enc.m_p[ch * n..(ch + 1) * n], &enc.logs_p[ch * n..(ch + 1) * n]);
            let row = &mut z_p[ch * frames..(ch + 1) * frames];
            for (t, &i) in src.iter().enumerate() {
                row[t] = m[i] + eps[ch * frames + t] * s[i].exp() * noise_scale;
            }
        }
        (z_p, frames)
    }

    /// The flow in reverse: z `[hidden][frames]` from z_p.
    pub fn flow_reverse(&self, z_p: Vec<f32>, frames: usize) -> Result<Vec<f32>, TtsError> {
        self.flow.reverse(z_p, frames)
    }

    /// The decoder: `hop·frames` samples from z `[hidden][frames]`.
    pub fn decode(&self, z: &[f32], frames: usize) -> Result<Vec<f32>, TtsError> {
        self.decoder.forward(z, frames)
    }
}

/// Runs `f` on a rayon worker: the forward pass forks hundreds of small parallel loops, and
/// from a thread outside the pool each fork is a cross-thread wake-up.
fn in_pool<T: Send>(f: impl FnOnce() -> T + Send) -> T {
    if rayon::current_thread_index().is_some() {
        f()
    } else {
        rayon::scope(|_| f())
    }
}
