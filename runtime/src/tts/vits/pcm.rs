//! From raw model output to 16-bit samples, as Piper does it per sentence (peak normalisation,
//! clip, ×32767 truncated), and the running-peak gain used when a sentence is streamed in
//! chunks and its peak is not known in advance.

/// Below this peak Piper outputs silence instead of amplifying numerical noise.
const SILENT_PEAK: f32 = 1e-8;
/// Starting peak of a streamed sentence. The joe voice's raw sentence peaks are 0.4–0.7
/// (notes §1.4), so a quiet first chunk is amplified at most ×2 rather than to full scale.
pub const STREAM_PEAK_FLOOR: f32 = 0.5;

/// Piper's post-processing of one whole sentence.
pub fn peak_normalized_i16(audio: &[f32]) -> Vec<i16> {
    let peak = audio.iter().fold(0f32, |m, &v| m.max(v.abs()));
    if peak < SILENT_PEAK {
        return vec![0; audio.len()];
    }
    to_i16(audio, 1.0 / peak)
}

/// `clip(audio·gain, −1, 1)·32767`, truncated toward zero like numpy's `astype(int16)`.
pub fn to_i16(audio: &[f32], gain: f32) -> Vec<i16> {
    audio.iter().map(|&v| ((v * gain).clamp(-1.0, 1.0) * 32767.0) as i16).collect()
}

/// Gain for streamed chunks: `1 / max(STREAM_PEAK_FLOOR, peak of everything seen so far)`.
/// The gain only falls during a sentence, so no chunk clips; start a new one per sentence.
#[derive(Debug, Clone)]
pub struct RunningPeak {
    peak: f32,
}

impl Default for RunningPeak {
    fn default() -> Self {
        RunningPeak { peak: STREAM_PEAK_FLOOR }
    }
}

impl RunningPeak {
    /// Takes the chunk into the running peak and returns the gain to apply to it.
    pub fn gain(&mut self, chunk: &[f32]) -> f32 {
        self.peak = chunk.iter().fold(self.peak, |m, &v| m.max(v.abs()));
        1.0 / self.peak
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn peak_normalisation_reaches_full_scale_and_silence_stays_silent() {
        assert_eq!(peak_normalized_i16(&[0.25, -0.5, 0.1]), [16383, -32767, 6553]);
        assert_eq!(peak_normalized_i16(&[1e-9, -1e-9]), [0, 0]);
    }

    #[test]
    fn running_peak_only_lowers_the_gain() {
        let mut p = RunningPeak::default();
        assert_eq!(p.gain(&[0.1]), 2.0);
        assert_eq!(p.gain(&[0.8]), 1.25);
        assert_eq!(p.gain(&[0.2]), 1.25);
    }
}
