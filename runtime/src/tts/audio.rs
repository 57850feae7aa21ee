//! Where synthesized samples go: a 16-bit mono WAV file (always available), or, behind the
//! `audio` feature, the default sound device through cpal (`tts::player`).
//!
//! Sinks take mono f32 samples at the voice's rate, already scaled so that ±1 is full scale
//! (the speaker applies Piper's normalisation); anything beyond ±1 is clipped here, as Piper
//! clips before its ×32767.

use std::fs::File;
use std::io::BufWriter;
use std::path::{Path, PathBuf};

use super::vits::pcm;
use super::TtsError;

/// A destination for a stream of mono samples.
pub trait AudioSink: Send {
    /// Queues (or writes) the next samples; may return before they are heard.
    fn write(&mut self, samples: &[f32]) -> Result<(), TtsError>;
    /// Ends the stream: a file is completed and renamed into place, a device plays out
    /// everything queued before this returns.
    fn finish(self: Box<Self>) -> Result<(), TtsError>;
}

/// Writes a 16-bit PCM mono WAV. The samples go to a temporary file beside the final one,
/// which is renamed into place by [`AudioSink::finish`]; dropping the writer unfinished (an
/// error elsewhere, a cancelled run) removes the temporary file, so no partial WAV is ever
/// left under the final name.
pub struct WavSink {
    path: PathBuf,
    tmp: PathBuf,
    writer: Option<hound::WavWriter<BufWriter<File>>>,
}

impl WavSink {
    pub fn create(path: &Path, sample_rate: u32) -> Result<WavSink, TtsError> {
        if sample_rate == 0 {
            return Err(audio_err(path, "a sample rate of 0 Hz"));
        }
        let dir = match path.parent() {
            Some(p) if !p.as_os_str().is_empty() => p,
            _ => Path::new("."),
        };
        let Some(file_name) = path.file_name() else {
            return Err(audio_err(path, "not a file name"));
        };
        let tmp = dir.join(format!(".{}.tmp{}", file_name.to_string_lossy(), std::process::id()));
        let spec = hound::WavSpec { channels: 1, sample_rate, bits_per_sample: 16, sample_format: hound::SampleFormat::Int };
        let file = File::create(&tmp).map_err(|e| audio_err(path, &format!("creating {}: {e}", tmp.display())))?;
        let writer = match hound::WavWriter::new(BufWriter::new(file), spec) {
            Ok(w) => w,
            Err(e) => {
                let _ = std::fs::remove_file(&tmp);
                return Err(audio_err(path, &e.to_string()));
            }
        };
        Ok(WavSink { path: path.to_path_buf(), tmp, writer: Some(writer) })
    }

    fn complete(&mut self) -> Result<(), TtsError> {
        let Some(writer) = self.writer.take() else {
            return Err(audio_err(&self.path, "already finished"));
        };
        // `finalize` writes the final header but does not fsync; do that by hand so the rename
        // publishes a complete file.
        writer.finalize().map_err(|e| audio_err(&self.path, &e.to_string()))?;
        File::open(&self.tmp)
            .and_then(|f| f.sync_all())
            .map_err(|e| audio_err(&self.path, &format!("syncing {}: {e}", self.tmp.display())))?;
        std::fs::rename(&self.tmp, &self.path).map_err(|e| audio_err(&self.path, &format!("renaming {} into place: {e}", self.tmp.display())))
    }
}

impl AudioSink for WavSink {
    fn write(&mut self, samples: &[f32]) -> Result<(), TtsError> {
        let Some(writer) = self.writer.as_mut() else {
            return Err(audio_err(&self.path, "written after finish"));
        };
        // A RIFF chunk holds at most 4 GiB; hound reports that as an error rather than wrapping.
        for s in pcm::to_i16(samples, 1.0) {
            writer.write_sample(s).map_err(|e| audio_err(&self.path, &e.to_string()))?;
        }
        Ok(())
    }

    fn finish(mut self: Box<Self>) -> Result<(), TtsError> {
        self.complete()
    }
}

impl Drop for WavSink {
    fn drop(&mut self) {
        if self.writer.take().is_some() {
            let _ = std::fs::remove_file(&self.tmp);
        }
    }
}

/// Collects the samples in memory (tests, benchmarks, and callers that post-process).
#[derive(Default)]
pub struct MemorySink {
    pub samples: std::sync::Arc<std::sync::Mutex<Vec<f32>>>,
}

impl AudioSink for MemorySink {
    fn write(&mut self, samples: &[f32]) -> Result<(), TtsError> {
        let mut all = self.samples.lock().map_err(|_| TtsError::Audio("memory sink poisoned".into()))?;
        all.extend_from_slice(samples);
        Ok(())
    }

    fn finish(self: Box<Self>) -> Result<(), TtsError> {
        Ok(())
    }
}

fn audio_err(path: &Path, what: &str) -> TtsError {
    TtsError::Audio(format!("{}: {what}", path.display()))
}
