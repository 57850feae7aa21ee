//! `nexus-cli speak`: text (argument or stdin) spoken by a VITS voice, to the sound card or a
//! WAV file; and the voice set-up `chat --speak` shares.

use std::io::Read;
use std::path::{Path, PathBuf};

use anyhow::{bail, Context, Result};
use clap::Args;
use nexus_runtime::tts::audio::{AudioSink, WavSink};
use nexus_runtime::tts::phonemize::Phonemizer;
use nexus_runtime::tts::speaker::{SpeakOptions, Speaker, SpeechStats};
use nexus_runtime::tts::vits::Voice;

use crate::load;

/// The voice `speak` and `chat --speak` use without `--voice`: models/fetch.sh fetches the
/// ONNX, `convert-voice` makes this from it.
pub const DEFAULT_VOICE: &str = "models/en_US-joe-medium.gguf";

/// Voice controls shared by `speak` and `chat --speak`.
#[derive(Args, Debug, Clone)]
pub struct VoiceArgs {
    /// Voice GGUF (default: models/en_US-joe-medium.gguf, made by `convert-voice`).
    #[arg(long = "voice")]
    pub voice: Option<PathBuf>,
    /// Speaking rate: 2 is twice as fast (length_scale = the voice's ÷ speed).
    #[arg(long = "speed")]
    pub speed: Option<f32>,
    /// Variation of the voice (default: the voice's own, 0.667 for joe); 0 is deterministic.
    #[arg(long = "noise-scale")]
    pub noise_scale: Option<f32>,
    /// Variation of the rhythm (default: the voice's own, 0.8 for joe); 0 is deterministic.
    #[arg(long = "noise-w")]
    pub noise_w: Option<f32>,
}

#[derive(Args)]
pub struct SpeakArgs {
    /// Text to speak (default: all of stdin).
    text: Option<String>,
    #[command(flatten)]
    voice: VoiceArgs,
    /// Write a 16-bit mono WAV here instead of playing it.
    #[arg(short = 'o', long = "out")]
    out: Option<PathBuf>,
    /// Seed of the voice's noise (sentence n uses seed + n).
    #[arg(long = "seed", default_value_t = 0)]
    seed: u64,
    /// CPU threads (default: all cores).
    #[arg(short = 't', long = "threads")]
    threads: Option<usize>,
}

pub fn speak(args: SpeakArgs) -> Result<()> {
    let text = match args.text {
        Some(t) => t,
        None => {
            let mut t = String::new();
            std::io::stdin().read_to_string(&mut t).context("reading the text from stdin")?;
            t
        }
    };
    if text.trim().is_empty() {
        bail!("nothing to speak: the text is empty (give it as an argument or on stdin)");
    }
    load::set_threads(args.threads)?;
    let mut speaker = open_speaker(&args.voice, args.out.as_deref(), args.seed)?;
    speaker.speak_text(&text)?;
    let stats = speaker.finish()?;
    report(&stats);
    if let Some(out) = &args.out {
        eprintln!("wrote {}", out.display());
    }
    Ok(())
}

/// Loads the voice and the phonemizer and opens the sink: the WAV file `out`, else the
/// default sound device.
pub fn open_speaker(args: &VoiceArgs, out: Option<&Path>, seed: u64) -> Result<Speaker> {
    let path = match &args.voice {
        Some(p) => p.clone(),
        None => default_voice()?,
    };
    let voice = Voice::load(&path).with_context(|| format!("loading the voice {}", path.display()))?;
    open_speaker_with(voice, args, out, seed)
}

/// [`open_speaker`] with a voice already loaded (a bundle's).
pub fn open_speaker_with(voice: Voice, args: &VoiceArgs, out: Option<&Path>, seed: u64) -> Result<Speaker> {
    let mut options = SpeakOptions::for_voice(&voice);
    options.seed = seed;
    if let Some(speed) = args.speed {
        if !(speed.is_finite() && speed > 0.0) {
            bail!("--speed {speed}: must be a number above 0");
        }
        options.scales.length_scale /= speed;
    }
    for (flag, value, slot) in [
        ("--noise-scale", args.noise_scale, &mut options.scales.noise_scale),
        ("--noise-w", args.noise_w, &mut options.scales.noise_w),
    ] {
        if let Some(v) = value {
            if !(v.is_finite() && v >= 0.0) {
                bail!("{flag} {v}: must be a number, 0 or above");
            }
            *slot = v;
        }
    }
    let phonemizer = Phonemizer::new(voice.espeak_voice())?;
    let sink: Box<dyn AudioSink> = match out {
        Some(out) => Box::new(WavSink::create(out, voice.sample_rate())?),
        None => sound_card(voice.sample_rate())?,
    };
    Ok(Speaker::new(voice, phonemizer, sink, options)?)
}

#[cfg(feature = "speech")]
fn sound_card(sample_rate: u32) -> Result<Box<dyn AudioSink>> {
    let player = nexus_runtime::tts::player::Player::open(sample_rate)?;
    if player.device_rate() != sample_rate {
        eprintln!("(the sound card runs at {} Hz: resampling from {sample_rate} Hz)", player.device_rate());
    }
    Ok(Box::new(player))
}

#[cfg(not(feature = "speech"))]
fn sound_card(_sample_rate: u32) -> Result<Box<dyn AudioSink>> {
    bail!("this nexus-cli was built without the `speech` feature, so it cannot play sound; rebuild with --features speech (or write a file with --out FILE.wav)")
}

/// The speed figures, on stderr so stdout stays clean.
pub fn report(stats: &SpeechStats) {
    let first = stats.first_audio.map_or("-".to_string(), |d| format!("{:.0} ms", d.as_secs_f64() * 1e3));
    eprintln!(
        "{} sentence(s), {:.2} s of audio synthesized in {:.2} s: real-time factor {:.3}, first audio after {first}",
        stats.sentences,
        stats.audio_seconds(),
        stats.synthesis.as_secs_f64(),
        stats.real_time_factor()
    );
}

/// The default voice, looked for like the default chat model: in the working directory,
/// then beside the workspace the binary was built in.
fn default_voice() -> Result<PathBuf> {
    let mut dirs = vec![PathBuf::from(".")];
    if let Ok(exe) = std::env::current_exe() {
        dirs.extend(exe.ancestors().skip(1).take(4).map(Path::to_path_buf));
    }
    if let Some(p) = dirs.iter().map(|d| d.join(DEFAULT_VOICE)).find(|p| p.is_file()) {
        return Ok(p);
    }
    let onnx = Path::new(DEFAULT_VOICE).with_extension("onnx");
    if let Some(dir) = dirs.iter().find(|d| d.join(&onnx).is_file()) {
        let (onnx, gguf) = (dir.join(&onnx), dir.join(DEFAULT_VOICE));
        bail!(
            "no voice given (--voice FILE.gguf) and {} is absent; make it from the fetched ONNX voice with:\n  nexus-cli convert-voice {} -o {}",
            gguf.display(),
            onnx.display(),
            gguf.display()
        );
    }
    bail!("no voice given (--voice FILE.gguf) and the default voice {DEFAULT_VOICE} is absent: run models/fetch.sh, then nexus-cli convert-voice models/en_US-joe-medium.onnx -o {DEFAULT_VOICE}")
}
