//! Playback on the default sound device (cpal; behind the `audio` feature).
//!
//! The synthesis thread [`Player::write`]s mono samples at the voice's rate; they are
//! resampled if the device does not run at that rate, copied to every device channel and
//! queued, and the device callback drains the queue (silence when it runs dry, so a slow
//! synthesis gives gaps, never garbage). [`AudioSink::finish`] returns only once the device
//! has played everything queued.

use std::collections::VecDeque;
use std::sync::{Arc, Condvar, Mutex};
use std::time::{Duration, Instant};

use cpal::traits::{DeviceTrait, HostTrait, StreamTrait};
use cpal::{FromSample, SampleFormat, SizedSample};
use rubato::Resampler as _;

use super::audio::AudioSink;
use super::TtsError;

/// The advice every "no sound card" error carries: the CLI's way round it.
const NO_DEVICE_HINT: &str = "write the audio to a file instead (nexus-cli: --out FILE.wav)";

/// How long [`Player`] waits for the device to take more samples before calling it stuck.
const STALL_LIMIT: Duration = Duration::from_secs(3);
/// Audio queued ahead of the device at most; past it, `write` waits (synthesis of a long
/// text runs far ahead of playback and would otherwise hold all of it in memory).
const MAX_QUEUED: Duration = Duration::from_secs(20);

/// An open output stream on the default device.
pub struct Player {
    // Dropping the stream stops playback, so it lives exactly as long as the player.
    stream: cpal::Stream,
    queue: Arc<Queue>,
    resampler: Option<StreamResampler>,
    channels: usize,
    device_rate: u32,
}

struct Queue {
    state: Mutex<QueueState>,
    changed: Condvar,
}

#[derive(Default)]
struct QueueState {
    /// Interleaved samples at the device's rate and channel count.
    samples: VecDeque<f32>,
    /// Frames the device asked for in its last callback: how much may still be in flight
    /// inside the device after the queue is empty.
    last_callback_frames: usize,
    /// A stream error reported by the device (disconnected, …), kept for the next call.
    error: Option<String>,
}

impl Player {
    /// Opens the default output device for mono audio at `sample_rate` Hz. No sound card
    /// gives `TtsError::Audio` saying so and suggesting a WAV file instead.
    pub fn open(sample_rate: u32) -> Result<Player, TtsError> {
        if sample_rate == 0 {
            return Err(TtsError::Audio("a sample rate of 0 Hz".into()));
        }
        let host = cpal::default_host();
        let device = host
            .default_output_device()
            .ok_or_else(|| TtsError::Audio(format!("no default audio output device; {NO_DEVICE_HINT}")))?;
        let default = device.default_output_config().map_err(|e| device_error(e, "opening the default output device"))?;
        // Prefer the voice's own rate (no resampling) in the device's default format and layout.
        let config = device
            .supported_output_configs()
            .ok()
            .and_then(|mut configs| {
                configs.find(|c| {
                    c.sample_format() == default.sample_format()
                        && c.channels() == default.channels()
                        && c.min_sample_rate() <= sample_rate
                        && sample_rate <= c.max_sample_rate()
                })
            })
            .map(|c| c.with_sample_rate(sample_rate))
            .unwrap_or(default);
        let channels = usize::from(config.channels());
        if channels == 0 {
            return Err(TtsError::Audio("the output device reports 0 channels".into()));
        }
        let device_rate = config.sample_rate();
        let queue = Arc::new(Queue { state: Mutex::new(QueueState::default()), changed: Condvar::new() });
        let stream = match config.sample_format() {
            SampleFormat::F32 => build_stream::<f32>(&device, config.config(), &queue),
            SampleFormat::F64 => build_stream::<f64>(&device, config.config(), &queue),
            SampleFormat::I16 => build_stream::<i16>(&device, config.config(), &queue),
            SampleFormat::I32 => build_stream::<i32>(&device, config.config(), &queue),
            SampleFormat::I8 => build_stream::<i8>(&device, config.config(), &queue),
            SampleFormat::U16 => build_stream::<u16>(&device, config.config(), &queue),
            SampleFormat::U8 => build_stream::<u8>(&device, config.config(), &queue),
            other => Err(TtsError::Audio(format!("the output device wants {other:?} samples, which this player does not write"))),
        }?;
        stream.play().map_err(|e| device_error(e, "starting playback"))?;
        let resampler = if device_rate == sample_rate { None } else { Some(StreamResampler::new(sample_rate, device_rate)?) };
        Ok(Player { stream, queue, resampler, channels, device_rate })
    }

    /// The rate the device runs at (the voice's own, or the one samples are resampled to).
    pub fn device_rate(&self) -> u32 {
        self.device_rate
    }

    pub fn channels(&self) -> usize {
        self.channels
    }

    fn enqueue(&mut self, mono: &[f32]) -> Result<(), TtsError> {
        let limit = (MAX_QUEUED.as_secs_f64() * f64::from(self.device_rate)) as usize * self.channels;
        let state = self.queue.lock()?;
        let mut state = self.wait_until(state, limit)?;
        for &s in mono {
            let s = if s.is_nan() { 0.0 } else { s.clamp(-1.0, 1.0) };
            state.samples.extend(std::iter::repeat_n(s, self.channels));
        }
        Ok(())
    }

    /// Waits until the device has taken every queued sample, then for the part of its own
    /// buffer still playing.
    fn drain(&self) -> Result<(), TtsError> {
        let state = self.queue.lock()?;
        let state = self.wait_until(state, 0)?;
        let in_flight = state.last_callback_frames;
        drop(state);
        // Two device buffers: the one being played and the one just handed over.
        std::thread::sleep(Duration::from_secs_f64(2.0 * in_flight as f64 / f64::from(self.device_rate)));
        Ok(())
    }

    /// Waits until at most `limit` samples are queued; a device error, or one that stops
    /// taking samples, ends the wait with an error.
    fn wait_until<'q>(
        &'q self,
        mut state: std::sync::MutexGuard<'q, QueueState>,
        limit: usize,
    ) -> Result<std::sync::MutexGuard<'q, QueueState>, TtsError> {
        if let Some(e) = state.error.take() {
            return Err(TtsError::Audio(format!("the output device failed: {e}")));
        }
        let mut left = state.samples.len();
        let mut since_progress = Instant::now();
        while left > limit {
            let (next, _) = self
                .queue
                .changed
                .wait_timeout(state, Duration::from_millis(50))
                .map_err(|_| TtsError::Audio("the audio queue was poisoned by a panic".into()))?;
            state = next;
            if let Some(e) = state.error.take() {
                return Err(TtsError::Audio(format!("the output device failed: {e}")));
            }
            if state.samples.len() < left {
                left = state.samples.len();
                since_progress = Instant::now();
            } else if since_progress.elapsed() > STALL_LIMIT {
                return Err(TtsError::Audio(format!(
                    "the output device stopped taking samples ({} s of audio unplayed)",
                    left / self.channels / self.device_rate as usize
                )));
            }
        }
        Ok(state)
    }
}

impl AudioSink for Player {
    fn write(&mut self, samples: &[f32]) -> Result<(), TtsError> {
        match self.resampler.as_mut() {
            Some(r) => {
                let out = r.push(samples)?;
                self.enqueue(&out)
            }
            None => self.enqueue(samples),
        }
    }

    fn finish(mut self: Box<Self>) -> Result<(), TtsError> {
        if let Some(r) = self.resampler.as_mut() {
            let tail = r.finish()?;
            self.enqueue(&tail)?;
        }
        self.drain()?;
        // Pausing before the drop keeps ALSA from replaying a stale period on some drivers.
        let _ = self.stream.pause();
        Ok(())
    }
}

impl Queue {
    fn lock(&self) -> Result<std::sync::MutexGuard<'_, QueueState>, TtsError> {
        self.state.lock().map_err(|_| TtsError::Audio("the audio queue was poisoned by a panic".into()))
    }
}

fn build_stream<T>(device: &cpal::Device, config: cpal::StreamConfig, queue: &Arc<Queue>) -> Result<cpal::Stream, TtsError>
where
    T: SizedSample + FromSample<f32>,
{
    let channels = usize::from(config.channels).max(1);
    let data_queue = queue.clone();
    let error_queue = queue.clone();
    device
        .build_output_stream::<T, _, _>(
            config,
            move |out: &mut [T], _| {
                // A poisoned lock means the writer panicked: play silence rather than panic here.
                let Ok(mut state) = data_queue.state.lock() else {
                    out.fill(T::EQUILIBRIUM);
                    return;
                };
                state.last_callback_frames = out.len() / channels;
                for slot in out.iter_mut() {
                    *slot = state.samples.pop_front().map_or(T::EQUILIBRIUM, T::from_sample);
                }
                drop(state);
                data_queue.changed.notify_all();
            },
            move |e: cpal::Error| {
                // A glitch or a re-route is not worth stopping speech for.
                if matches!(e.kind(), cpal::ErrorKind::Xrun | cpal::ErrorKind::RealtimeDenied | cpal::ErrorKind::DeviceChanged) {
                    return;
                }
                if let Ok(mut state) = error_queue.state.lock() {
                    state.error = Some(e.to_string());
                }
                error_queue.changed.notify_all();
            },
            None,
        )
        .map_err(|e| device_error(e, "opening an output stream"))
}

fn device_error(e: cpal::Error, doing: &str) -> TtsError {
    match e.kind() {
        cpal::ErrorKind::DeviceNotAvailable | cpal::ErrorKind::HostUnavailable => {
            TtsError::Audio(format!("{doing}: no audio output device is available ({e}); {NO_DEVICE_HINT}"))
        }
        _ => TtsError::Audio(format!("{doing}: {e}")),
    }
}

/// Streaming sample-rate conversion of mono audio (rubato's FFT resampler, which is exact
/// for a fixed ratio such as 22 050 → 48 000). Output is aligned with the input: the
/// resampler's delay is trimmed, and [`StreamResampler::finish`] returns the tail so that the
/// total is `round(input · to / from)` samples.
pub struct StreamResampler {
    inner: rubato::FftFixedIn<f32>,
    from: u32,
    to: u32,
    pending: Vec<f32>,
    delay_left: usize,
    samples_in: u64,
    samples_out: u64,
}

impl StreamResampler {
    /// Input is processed in blocks of this many samples (46 ms at 22 050 Hz).
    const BLOCK: usize = 1024;

    pub fn new(from: u32, to: u32) -> Result<StreamResampler, TtsError> {
        let inner = rubato::FftFixedIn::<f32>::new(from as usize, to as usize, Self::BLOCK, 2, 1)
            .map_err(|e| TtsError::Audio(format!("resampling {from} Hz to {to} Hz: {e}")))?;
        let delay_left = inner.output_delay();
        Ok(StreamResampler { inner, from, to, pending: Vec::new(), delay_left, samples_in: 0, samples_out: 0 })
    }

    /// Resamples what whole blocks `samples` completes; the rest waits for the next call.
    pub fn push(&mut self, samples: &[f32]) -> Result<Vec<f32>, TtsError> {
        self.samples_in += samples.len() as u64;
        self.pending.extend_from_slice(samples);
        let mut out = Vec::new();
        let mut used = 0;
        while self.pending.len() - used >= self.inner.input_frames_next() {
            let n = self.inner.input_frames_next();
            let block = self.inner.process(&[&self.pending[used..used + n]], None).map_err(resample_error)?;
            used += n;
            self.keep(block, &mut out);
        }
        self.pending.drain(..used);
        Ok(out)
    }

    /// Flushes the last partial block and the resampler's delay line.
    pub fn finish(&mut self) -> Result<Vec<f32>, TtsError> {
        let total = (self.samples_in * u64::from(self.to) + u64::from(self.from) / 2) / u64::from(self.from);
        let mut out = Vec::new();
        let pending = std::mem::take(&mut self.pending);
        let block = self.inner.process_partial(Some(&[pending.as_slice()]), None).map_err(resample_error)?;
        self.keep(block, &mut out);
        // Each empty call pushes one block of zeros through; the delay is under two blocks.
        for _ in 0..4 {
            if self.samples_out >= total {
                break;
            }
            let block = self.inner.process_partial(None::<&[&[f32]]>, None).map_err(resample_error)?;
            self.keep(block, &mut out);
        }
        let excess = (self.samples_out.saturating_sub(total)) as usize;
        out.truncate(out.len().saturating_sub(excess));
        self.samples_out = total;
        Ok(out)
    }

    fn keep(&mut self, block: Vec<Vec<f32>>, out: &mut Vec<f32>) {
        let Some(channel) = block.into_iter().next() else { return };
        let skip = self.delay_left.min(channel.len());
        self.delay_left -= skip;
        self.samples_out += (channel.len() - skip) as u64;
        out.extend_from_slice(&channel[skip..]);
    }
}

fn resample_error(e: rubato::ResampleError) -> TtsError {
    TtsError::Audio(format!("resampling: {e}"))
}
