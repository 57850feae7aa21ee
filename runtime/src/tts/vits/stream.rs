//! Streaming inside a sentence: after the encoder and duration predictor have run on the whole
//! sentence, the flow and the decoder run on overlapping windows of frames, and each window's
//! exact middle is emitted as soon as it is computed.
//!
//! Halos (measured on this voice, notes §2.3): 12 frames of context on each side make a decoder
//! window's middle equal to the whole-sentence decode (7e-7); the flow's 4 couplings × 4
//! WaveNet layers × kernel 5 see 32 frames each way, so a 32-frame halo brings it within 4e-5.

use super::ops::columns;
use super::{in_pool, Latent, Scales, Voice};
use crate::tts::TtsError;

pub const FLOW_HALO: usize = 32;
pub const DECODER_HALO: usize = 12;
/// Chunks grow ×4 from the caller's first size up to this: a small first chunk gives early
/// audio, large later ones keep the halos' recomputation small (24 of 536 decoded frames at
/// 512). ×4 is safe for playback: at RTF ≤ 0.1 a chunk is computed in under half the time the
/// previous (a quarter as long) takes to play. Doubling up to 256 cost a five-sentence
/// `speak` 1.57 s against 1.13 s for the same sentences synthesized whole (1 thread).
pub const MAX_CHUNK_FRAMES: usize = 512;
const CHUNK_GROWTH: usize = 4;

/// Pull-based chunked synthesis of one sentence; each [`ChunkStream::next_chunk`] returns the
/// next consecutive piece of the waveform (`hop` samples per frame).
pub struct ChunkStream<'v> {
    voice: &'v Voice,
    frames: usize,
    z_p: Vec<f32>,
    /// Flow output, valid for frames `[0, flow_done)`.
    z: Vec<f32>,
    flow_done: usize,
    next_frame: usize,
    chunk: usize,
    max_chunk: usize,
}

impl<'v> ChunkStream<'v> {
    /// Runs encoder, duration predictor and prior sample; `first_chunk_frames` ≥ 1 sets the
    /// first chunk's length, later chunks grow ×4 up to `MAX_CHUNK_FRAMES` (or the first size
    /// if that is larger).
    pub fn new(
        voice: &'v Voice,
        ids: &[i64],
        scales: Scales,
        seed: u64,
        first_chunk_frames: usize,
    ) -> Result<Self, TtsError> {
        if first_chunk_frames == 0 {
            return Err(TtsError::Synthesis("chunks must be at least 1 frame long".into()));
        }
        let Latent { frames, z_p } = in_pool(|| voice.latent(ids, scales, seed))?;
        Ok(ChunkStream {
            voice,
            frames,
            z: vec![0f32; z_p.len()],
            z_p,
            flow_done: 0,
            next_frame: 0,
            chunk: first_chunk_frames,
            max_chunk: first_chunk_frames.max(MAX_CHUNK_FRAMES),
        })
    }

    /// Frames in the whole sentence.
    pub fn frames(&self) -> usize {
        self.frames
    }

    /// The next chunk of samples, or `None` once the sentence is complete.
    pub fn next_chunk(&mut self) -> Result<Option<Vec<f32>>, TtsError> {
        if self.next_frame >= self.frames {
            return Ok(None);
        }
        in_pool(|| self.compute_chunk()).map(Some)
    }

    fn compute_chunk(&mut self) -> Result<Vec<f32>, TtsError> {
        let (t, hop) = (self.frames, self.voice.hop());
        let a = self.next_frame;
        let b = (a + self.chunk).min(t);
        let need = (b + DECODER_HALO).min(t);
        self.run_flow_to(need)?;

        let lo = a.saturating_sub(DECODER_HALO);
        let window = columns(&self.z, t, lo, need);
        let audio = self.voice.decode(&window, need - lo)?;
        self.next_frame = b;
        self.chunk = (self.chunk * CHUNK_GROWTH).min(self.max_chunk);
        Ok(audio[(a - lo) * hop..(b - lo) * hop].to_vec())
    }

    /// Extends the flow output to frames `[0, need)`, one haloed window for the new frames.
    fn run_flow_to(&mut self, need: usize) -> Result<(), TtsError> {
        if need <= self.flow_done {
            return Ok(());
        }
        let (t, f0) = (self.frames, self.flow_done);
        let lo = f0.saturating_sub(FLOW_HALO);
        let hi = (need + FLOW_HALO).min(t);
        let z = self.voice.flow_reverse(columns(&self.z_p, t, lo, hi), hi - lo)?;
        let w = hi - lo;
        for (dst, src) in self.z.chunks_exact_mut(t).zip(z.chunks_exact(w)) {
            dst[f0..need].copy_from_slice(&src[f0 - lo..need - lo]);
        }
        self.flow_done = need;
        Ok(())
    }
}

impl Voice {
    /// Chunked synthesis of one sentence: calls `on_chunk` with consecutive pieces of the
    /// waveform (raw model output) as soon as each is computed; `on_chunk` returning false
    /// stops. `chunk_frames` (≥ 1) is the first chunk's length in frames; later chunks grow ×4
    /// up to [`MAX_CHUNK_FRAMES`]. Concatenated, the chunks equal [`Voice::synthesize`] within
    /// 1e-4 (bit-identical with the current kernels: the halos cover the receptive fields).
    pub fn synthesize_chunks(
        &self,
        ids: &[i64],
        scales: Scales,
        seed: u64,
        chunk_frames: usize,
        on_chunk: &mut dyn FnMut(&[f32]) -> bool,
    ) -> Result<(), TtsError> {
        let mut stream = ChunkStream::new(self, ids, scales, seed, chunk_frames)?;
        while let Some(chunk) = stream.next_chunk()? {
            if !on_chunk(&chunk) {
                break;
            }
        }
        Ok(())
    }
}
