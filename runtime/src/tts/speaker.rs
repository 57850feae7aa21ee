//! The speaking pipeline: text (whole, or streamed piece by piece) → sentences → phonemes →
//! ids → chunked synthesis → an audio sink.
//!
//! Phonemizing is cheap (about 0.5 ms a sentence) and espeak-ng keeps global state, so it
//! runs on the caller's thread; synthesis runs on a thread of its own, fed through a
//! channel, so a caller streaming a chat answer is never held back, and the sink (a device
//! queue) plays one chunk while the next is computed.
//!
//! Loudness: Piper normalises each sentence by its peak, which a stream cannot know in
//! advance; chunks are scaled by [`RunningPeak`] instead (1 / the largest peak seen so far in
//! the sentence, never above ×2), so no chunk clips and a whole-sentence peak above 0.5 ends
//! at the same level as Piper's.

use std::collections::HashSet;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc;
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use super::audio::AudioSink;
use super::phoneme_ids::phoneme_ids;
use super::phonemize::Phonemizer;
use super::sentences::SentenceCutter;
use super::vits::pcm::RunningPeak;
use super::vits::{Scales, Voice, MAX_CHUNK_FRAMES};
use super::TtsError;

/// First chunk of a sentence, in frames (16 × 256 samples = 186 ms): small, so audio starts
/// early; the voice grows later chunks ×4.
pub const FIRST_CHUNK_FRAMES: usize = 16;

/// What the pipeline is told to do with non-fatal problems (phonemes the voice lacks).
pub type WarningFn = Arc<dyn Fn(&str) + Send + Sync>;

#[derive(Clone)]
pub struct SpeakOptions {
    pub scales: Scales,
    /// Seed of the first sentence; sentence `n` uses `seed + n`.
    pub seed: u64,
    pub first_chunk_frames: usize,
    /// Called once per phoneme the voice's map lacks (Piper warns and skips them too).
    pub on_warning: WarningFn,
}

impl SpeakOptions {
    /// The voice's own scales, seed 0, warnings to stderr.
    pub fn for_voice(voice: &Voice) -> SpeakOptions {
        SpeakOptions {
            scales: voice.default_scales(),
            seed: 0,
            first_chunk_frames: FIRST_CHUNK_FRAMES,
            on_warning: Arc::new(|w| eprintln!("warning: {w}")),
        }
    }
}

/// What was said and how fast.
#[derive(Debug, Clone, Default)]
pub struct SpeechStats {
    pub sentences: usize,
    pub samples: usize,
    pub sample_rate: u32,
    /// Time spent synthesizing (not waiting for text or for the sink).
    pub synthesis: Duration,
    /// From the first text handed to the speaker to its first samples reaching the sink.
    pub first_audio: Option<Duration>,
    /// Phonemes dropped because the voice's map lacks them, each once.
    pub skipped_phonemes: Vec<char>,
}

impl SpeechStats {
    pub fn audio_seconds(&self) -> f64 {
        if self.sample_rate == 0 {
            return 0.0;
        }
        self.samples as f64 / f64::from(self.sample_rate)
    }

    /// Synthesis time ÷ audio duration (below 1 is faster than real time).
    pub fn real_time_factor(&self) -> f64 {
        let audio = self.audio_seconds();
        if audio > 0.0 {
            self.synthesis.as_secs_f64() / audio
        } else {
            0.0
        }
    }
}

/// One sentence's phonemes on its way to the synthesis thread.
struct Job {
    phonemes: String,
    /// When the caller handed over the text it came from (for time to first audio).
    text_at: Instant,
}

pub struct Speaker {
    phonemizer: Phonemizer,
    cutter: SentenceCutter,
    jobs: Option<mpsc::Sender<Job>>,
    worker: Option<JoinHandle<Result<SpeechStats, TtsError>>>,
    /// Set when the speaker is dropped unfinished: the thread stops at the next chunk and
    /// abandons the sink (no WAV is published, the device stops).
    abandoned: Arc<AtomicBool>,
    /// When the first piece of the text now being cut arrived.
    text_at: Option<Instant>,
    queued: usize,
}

impl Speaker {
    /// Starts the synthesis thread; nothing is heard until text arrives.
    pub fn new(voice: Voice, phonemizer: Phonemizer, sink: Box<dyn AudioSink>, options: SpeakOptions) -> Result<Speaker, TtsError> {
        if options.first_chunk_frames == 0 {
            return Err(TtsError::Synthesis("chunks must be at least 1 frame long".into()));
        }
        let (jobs, inbox) = mpsc::channel();
        let abandoned = Arc::new(AtomicBool::new(false));
        let stop = abandoned.clone();
        let worker = std::thread::Builder::new()
            .name("tts-synthesis".into())
            .spawn(move || synthesis_thread(voice, sink, options, inbox, &stop))
            .map_err(|e| TtsError::Synthesis(format!("starting the synthesis thread: {e}")))?;
        Ok(Speaker {
            phonemizer,
            cutter: SentenceCutter::new(),
            jobs: Some(jobs),
            worker: Some(worker),
            abandoned,
            text_at: None,
            queued: 0,
        })
    }

    /// Speaks a whole text: the phonemizer splits its sentences with Piper's own rules.
    /// Text with nothing to say (empty, only punctuation) is an error.
    pub fn speak_text(&mut self, text: &str) -> Result<(), TtsError> {
        let text_at = Instant::now();
        if text.trim().is_empty() {
            return Err(TtsError::NothingToSay("the text is empty".into()));
        }
        let before = self.queued;
        self.queue_phonemes(text, text_at)?;
        if self.queued == before {
            return Err(TtsError::NothingToSay(format!("{:?} has no words to speak", abbreviate(text))));
        }
        Ok(())
    }

    /// Adds a piece of streamed text; each sentence it completes starts being spoken at once.
    /// Sentences with nothing to say are skipped silently (a chat answer may hold "…").
    pub fn push(&mut self, piece: &str) -> Result<(), TtsError> {
        let text_at = *self.text_at.get_or_insert_with(Instant::now);
        for sentence in self.cutter.push(piece) {
            self.queue_streamed(&sentence, text_at)?;
        }
        if self.cutter.pending().trim().is_empty() {
            self.text_at = None;
        }
        Ok(())
    }

    /// Ends the streamed text (a chat answer): its last, unpunctuated part is spoken too.
    pub fn flush(&mut self) -> Result<(), TtsError> {
        let text_at = self.text_at.take().unwrap_or_else(Instant::now);
        match self.cutter.finish() {
            Some(rest) => self.queue_streamed(&rest, text_at),
            None => Ok(()),
        }
    }

    /// Flushes, waits until everything queued has been synthesized and played (or
    /// written), and returns the statistics.
    pub fn finish(mut self) -> Result<SpeechStats, TtsError> {
        self.flush()?;
        drop(self.jobs.take());
        self.join()
    }

    /// Sentences handed to the synthesis thread so far.
    pub fn sentences_queued(&self) -> usize {
        self.queued
    }

    fn queue_streamed(&mut self, sentence: &str, text_at: Instant) -> Result<(), TtsError> {
        match self.queue_phonemes(sentence, text_at) {
            Err(TtsError::NothingToSay(_)) => Ok(()),
            other => other,
        }
    }

    fn queue_phonemes(&mut self, text: &str, text_at: Instant) -> Result<(), TtsError> {
        // The phonemizer drops sentences without phonemes and refuses texts without any.
        for phonemes in self.phonemizer.phonemize(text)? {
            self.send(Job { phonemes, text_at })?;
        }
        Ok(())
    }

    fn send(&mut self, job: Job) -> Result<(), TtsError> {
        let sent = self.jobs.as_ref().is_some_and(|jobs| jobs.send(job).is_ok());
        if sent {
            self.queued += 1;
            return Ok(());
        }
        // The synthesis thread stopped early: its error is the one to report.
        drop(self.jobs.take());
        match self.join() {
            Err(e) => Err(e),
            Ok(_) => Err(TtsError::Synthesis("the synthesis thread has already finished".into())),
        }
    }

    fn join(&mut self) -> Result<SpeechStats, TtsError> {
        let Some(worker) = self.worker.take() else {
            return Err(TtsError::Synthesis("the synthesis thread has already finished".into()));
        };
        worker.join().map_err(|_| TtsError::Synthesis("the synthesis thread panicked".into()))?
    }
}

impl Drop for Speaker {
    fn drop(&mut self) {
        // Dropped without `finish` (an error elsewhere): stop, and publish nothing.
        self.abandoned.store(true, Ordering::SeqCst);
        drop(self.jobs.take());
        if let Some(worker) = self.worker.take() {
            let _ = worker.join();
        }
    }
}

/// Receives sentences until the channel closes, synthesizes each in chunks into the sink,
/// then finishes the sink (a device plays out, a file is renamed into place) — unless the
/// speaker was abandoned, when the sink is dropped unfinished.
fn synthesis_thread(
    voice: Voice,
    sink: Box<dyn AudioSink>,
    options: SpeakOptions,
    inbox: mpsc::Receiver<Job>,
    abandoned: &AtomicBool,
) -> Result<SpeechStats, TtsError> {
    let stats = SpeechStats { sample_rate: voice.sample_rate(), ..SpeechStats::default() };
    let mut worker = Worker { voice, sink, options, stats, warned: HashSet::new(), abandoned, audio_started: None };
    for job in inbox {
        if abandoned.load(Ordering::SeqCst) {
            break;
        }
        worker.speak_sentence(&job)?;
    }
    if abandoned.load(Ordering::SeqCst) {
        return Err(TtsError::Audio("speech abandoned before it finished".into()));
    }
    worker.sink.finish()?;
    Ok(worker.stats)
}

/// The synthesis thread's state.
struct Worker<'a> {
    voice: Voice,
    sink: Box<dyn AudioSink>,
    options: SpeakOptions,
    stats: SpeechStats,
    /// Phonemes already warned about.
    warned: HashSet<char>,
    abandoned: &'a AtomicBool,
    /// When the first samples went to the sink.
    audio_started: Option<Instant>,
}

/// Audio queued ahead of playback above which a sentence starts with a large chunk: nobody is
/// waiting for its first samples, and small chunks cost halo recomputation (a five-sentence
/// `speak` at 1 thread: 1.37 s with a small first chunk per sentence, against 1.13 s whole).
const AHEAD_FOR_LARGE_CHUNKS: Duration = Duration::from_secs(1);

impl Worker<'_> {
    fn speak_sentence(&mut self, job: &Job) -> Result<(), TtsError> {
        let ids = phoneme_ids(&job.phonemes, self.voice.phoneme_map());
        for &c in &ids.skipped {
            if self.warned.insert(c) {
                (self.options.on_warning)(&format!("phoneme {c:?} (U+{:04X}) is not in the voice's map; skipped", c as u32));
                self.stats.skipped_phonemes.push(c);
            }
        }
        let seed = self.options.seed.wrapping_add(self.stats.sentences as u64);
        self.stats.sentences += 1;

        // Audio already queued and not yet played (a file sink never plays, so it is always
        // ahead once synthesis outruns real time).
        let queued = Duration::from_secs_f64(self.stats.samples as f64 / self.stats.sample_rate as f64);
        let ahead = self.audio_started.map_or(Duration::ZERO, |t0| queued.saturating_sub(t0.elapsed()));
        let audio_started = &mut self.audio_started;
        let (stats, sink, abandoned) = (&mut self.stats, self.sink.as_mut(), self.abandoned);
        let mut peak = RunningPeak::default();
        let mut sink_result = Ok(());
        let mut in_sink = Duration::ZERO;
        let started = Instant::now();
        let mut on_chunk = |chunk: &[f32]| {
            let t = Instant::now();
            stats.first_audio.get_or_insert_with(|| t - job.text_at);
            audio_started.get_or_insert(t);
            let gain = peak.gain(chunk);
            let scaled: Vec<f32> = chunk.iter().map(|&v| v * gain).collect();
            sink_result = sink.write(&scaled);
            stats.samples += chunk.len();
            in_sink += t.elapsed();
            sink_result.is_ok() && !abandoned.load(Ordering::Relaxed)
        };
        let scales = self.options.scales;
        let first_chunk = if ahead >= AHEAD_FOR_LARGE_CHUNKS {
            MAX_CHUNK_FRAMES.max(self.options.first_chunk_frames)
        } else {
            self.options.first_chunk_frames
        };
        self.voice.synthesize_chunks(&ids.ids, scales, seed, first_chunk, &mut on_chunk)?;
        self.stats.synthesis += started.elapsed().saturating_sub(in_sink);
        sink_result
    }
}

/// The start of a long text, for error messages.
fn abbreviate(text: &str) -> String {
    let t = text.trim();
    match t.char_indices().nth(60) {
        Some((i, _)) => format!("{}…", &t[..i]),
        None => t.to_string(),
    }
}
