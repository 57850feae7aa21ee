//! Speech output: WAV files (header, length, atomic write), the sentence cutter on streamed
//! text, and with `--features audio` the no-device error and the resampler; with `espeak`
//! and the voice (models/en_US-joe-medium.gguf) the whole speaking pipeline.

use nexus_runtime::tts::audio::{AudioSink, WavSink};
use nexus_runtime::tts::sentences::{split_sentences, SentenceCutter};
use nexus_runtime::tts::TtsError;

#[cfg(feature = "espeak")]
fn root() -> std::path::PathBuf {
    std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("..")
}

fn sine(n: usize, rate: f64, freq: f64, amplitude: f32) -> Vec<f32> {
    (0..n).map(|i| amplitude * (std::f64::consts::TAU * freq * i as f64 / rate).sin() as f32).collect()
}

#[test]
fn wav_is_written_and_reads_back_as_16_bit_mono_22050() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("out.wav");
    let samples = sine(5000, 22050.0, 440.0, 0.9);
    let mut sink: Box<dyn AudioSink> = Box::new(WavSink::create(&path, 22050).unwrap());
    // Written in uneven pieces, as chunks arrive.
    sink.write(&samples[..17]).unwrap();
    sink.write(&samples[17..4000]).unwrap();
    sink.write(&[]).unwrap();
    sink.write(&samples[4000..]).unwrap();
    sink.write(&[1.7, -3.0]).unwrap(); // beyond full scale: clipped
    sink.finish().unwrap();

    let bytes = std::fs::read(&path).unwrap();
    assert_eq!(&bytes[0..4], b"RIFF");
    assert_eq!(&bytes[8..12], b"WAVE");
    assert_eq!(bytes.len(), 44 + 2 * 5002, "canonical 44-byte header + 2 bytes a sample");
    let mut reader = hound::WavReader::open(&path).unwrap();
    let spec = reader.spec();
    assert_eq!((spec.channels, spec.sample_rate, spec.bits_per_sample), (1, 22050, 16));
    assert_eq!(spec.sample_format, hound::SampleFormat::Int);
    assert_eq!(reader.duration(), 5002);
    let read: Vec<i16> = reader.samples::<i16>().map(Result::unwrap).collect();
    for (i, (&r, &s)) in read.iter().zip(&samples).enumerate() {
        assert_eq!(r, (s * 32767.0) as i16, "sample {i}");
    }
    assert_eq!(&read[5000..], [32767, -32767]);
    // Only the final file is left: the temporary one was renamed.
    let names: Vec<_> = std::fs::read_dir(dir.path()).unwrap().map(|e| e.unwrap().file_name()).collect();
    assert_eq!(names, ["out.wav"]);
}

#[test]
fn an_unfinished_wav_leaves_no_file_behind() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("partial.wav");
    {
        let mut sink = WavSink::create(&path, 22050).unwrap();
        sink.write(&sine(1000, 22050.0, 200.0, 0.5)).unwrap();
        // Dropped without `finish`, as when synthesis fails half way.
    }
    assert!(!path.exists());
    assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 0, "the temporary file was not removed");

    // An existing file under the final name survives a failed attempt untouched.
    std::fs::write(&path, b"old").unwrap();
    drop(WavSink::create(&path, 22050).unwrap());
    assert_eq!(std::fs::read(&path).unwrap(), b"old");
}

#[test]
fn wav_errors_name_the_file() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("no such folder").join("x.wav");
    match WavSink::create(&path, 22050) {
        Err(TtsError::Audio(msg)) => assert!(msg.contains("no such folder"), "{msg}"),
        Err(e) => panic!("wrong error: {e}"),
        Ok(_) => panic!("created a WAV in a missing folder"),
    }
    match WavSink::create(&dir.path().join("x.wav"), 0) {
        Err(TtsError::Audio(msg)) => assert!(msg.contains("0 Hz"), "{msg}"),
        _ => panic!("a 0 Hz WAV was accepted"),
    }
}

/// Feeds `text` in pieces of 1, 2, 3, … bytes (at char boundaries), like a token stream.
fn cut_streamed(text: &str, piece_len: usize) -> Vec<String> {
    let mut cutter = SentenceCutter::new();
    let mut out = Vec::new();
    let mut rest = text;
    while !rest.is_empty() {
        let mut n = piece_len.min(rest.len());
        while !rest.is_char_boundary(n) {
            n += 1;
        }
        out.extend(cutter.push(&rest[..n]));
        rest = &rest[n..];
    }
    out.extend(cutter.finish());
    out
}

fn check_cut(text: &str, expected: &[&str]) {
    assert_eq!(split_sentences(text), expected, "whole text {text:?}");
    for piece_len in [1, 2, 3, 5, 8] {
        assert_eq!(cut_streamed(text, piece_len), expected, "{text:?} in {piece_len}-byte pieces");
    }
}

#[test]
fn sentences_end_at_stops_followed_by_space() {
    check_cut("Hello world. How are you today? I'm fine, thanks!", &["Hello world.", "How are you today?", "I'm fine, thanks!"]);
    check_cut("Really?! Yes. Wow!? OK", &["Really?!", "Yes.", "Wow!?", "OK"]);
    check_cut("He said \"no.\" Then he left.", &["He said \"no.\"", "Then he left."]);
    check_cut("(It works.) Next one.", &["(It works.)", "Next one."]);
    check_cut("  \n  ", &[]);
    check_cut("", &[]);
}

#[test]
fn abbreviations_initials_and_numbers_do_not_cut() {
    check_cut("Dr. Smith met Mr. Jones at St. Paul's. They talked.", &["Dr. Smith met Mr. Jones at St. Paul's.", "They talked."]);
    check_cut("Use tools, e.g. a hammer, i.e. something heavy. Done.", &["Use tools, e.g. a hammer, i.e. something heavy.", "Done."]);
    check_cut("Pi is 3.14 and e is 2.718. Both are irrational.", &["Pi is 3.14 and e is 2.718.", "Both are irrational."]);
    check_cut("J. R. R. Tolkien wrote it. It is long.", &["J. R. R. Tolkien wrote it.", "It is long."]);
    check_cut("See No. 5 in the U.S. Army list. Or not.", &["See No. 5 in the U.S. Army list.", "Or not."]);
    check_cut("I said no. Then I left.", &["I said no.", "Then I left."]);
    check_cut("It costs $3. That is cheap.", &["It costs $3.", "That is cheap."]);
    check_cut("version 1.2.3 is out. upgrade now.", &["version 1.2.3 is out. upgrade now."]);
}

#[test]
fn ellipses_blank_lines_and_missing_final_punctuation() {
    check_cut("Wait... What happened? Well… nothing.", &["Wait... What happened?", "Well… nothing."]);
    check_cut("A title\n\nThe text starts here. More", &["A title", "The text starts here.", "More"]);
    check_cut("one line\nstill the same sentence", &["one line\nstill the same sentence"]);
    check_cut("Line one.\nLine two.", &["Line one.", "Line two."]);
    check_cut("no punctuation at all", &["no punctuation at all"]);
}

#[test]
fn a_finished_sentence_comes_out_before_the_stream_ends() {
    let mut cutter = SentenceCutter::new();
    assert!(cutter.push("Hello").is_empty());
    assert!(cutter.push(" world.").is_empty(), "a stop alone is not yet certain");
    assert!(cutter.push(" ").is_empty(), "could still be an abbreviation");
    assert_eq!(cutter.push("Next"), ["Hello world."]);
    assert_eq!(cutter.push(" one! "), ["Next one!"], "! and ? need no look-ahead");
    assert!(cutter.push("Dr.").is_empty());
    assert!(cutter.push(" Who").is_empty());
    assert_eq!(cutter.pending(), "Dr. Who");
    assert_eq!(cutter.finish().as_deref(), Some("Dr. Who"));
    assert_eq!(cutter.finish(), None);
}

#[test]
fn long_runs_are_cut_at_a_clause_boundary_never_inside_a_word() {
    let clause = "and then the story went on for a while";
    let text = vec![clause; 20].join(", ");
    for piece_len in [1, 4, 7] {
        let sentences = cut_streamed(&text, piece_len);
        assert!(sentences.len() > 1, "a {}-byte run was never cut", text.len());
        for s in &sentences {
            assert!(s.len() <= nexus_runtime::tts::sentences::DEFAULT_MAX_LEN, "{} bytes: {s:?}", s.len());
            assert!(s.starts_with("and ") && s.ends_with(['e', ',']), "cut inside a word or clause: {s:?}");
        }
        assert_eq!(sentences.join(" "), text, "text lost or changed");
    }
    // No clause boundary: cut at a space.
    let words = vec!["word"; 200].join(" ");
    let sentences = cut_streamed(&words, 3);
    assert!(sentences.len() > 1);
    assert!(sentences.iter().all(|s| s.split(' ').all(|w| w == "word")), "{sentences:?}");
    // A single unbroken "word" many times the cap is cut anyway rather than held forever.
    let blob = "x".repeat(5000);
    let sentences = cut_streamed(&blob, 100);
    assert!(sentences.len() > 1);
    assert_eq!(sentences.concat(), blob);
}

#[test]
fn multibyte_text_is_cut_at_character_boundaries() {
    check_cut("Ça va? Très bien… merci. Ünïcödé “quotes.” Fin", &["Ça va?", "Très bien… merci.", "Ünïcödé “quotes.”", "Fin"]);
    let long = "é".repeat(1000);
    assert_eq!(cut_streamed(&long, 7).concat(), long);
}

#[cfg(feature = "audio")]
mod device {
    use nexus_runtime::tts::player::{Player, StreamResampler};
    use nexus_runtime::tts::TtsError;

    #[test]
    fn no_sound_card_gives_a_clear_error_suggesting_a_wav_file() {
        use cpal::traits::{DeviceTrait, HostTrait};
        let device = cpal::default_host().default_output_device();
        if let Some(Ok(config)) = device.as_ref().map(|d| d.default_output_config()) {
            println!("skipped: this machine has an audio output device ({config:?})");
            return;
        }
        match Player::open(22050) {
            Err(TtsError::Audio(msg)) => {
                assert!(msg.contains("no audio output device"), "{msg}");
                assert!(msg.contains("--out FILE.wav"), "{msg}");
            }
            Err(e) => panic!("wrong error kind: {e}"),
            Ok(_) => panic!("opened a device that cpal says is not there"),
        }
    }

    #[test]
    fn resampling_22050_to_48000_keeps_length_and_phase() {
        let (from, to) = (22050u32, 48000u32);
        let input = super::sine(22050 + 777, f64::from(from), 440.0, 0.8);
        let mut r = StreamResampler::new(from, to).unwrap();
        let mut out = Vec::new();
        for piece in input.chunks(333) {
            out.extend(r.push(piece).unwrap());
        }
        out.extend(r.finish().unwrap());
        let expected_len = ((input.len() as u64 * 48000 + 11025) / 22050) as usize;
        assert_eq!(out.len(), expected_len);
        // Away from the ends (where the filter sees the signal start and stop), the output is
        // the same sine sampled at 48 kHz: the resampler's delay has been trimmed.
        let reference = super::sine(out.len(), f64::from(to), 440.0, 0.8);
        let max_err = out[2000..out.len() - 2000].iter().zip(&reference[2000..]).map(|(a, b)| (a - b).abs()).fold(0f32, f32::max);
        println!("22050 → 48000 Hz, 440 Hz sine: max abs error {max_err:.2e}");
        assert!(max_err < 1e-4, "max abs error {max_err}");
        assert!(StreamResampler::new(22050, 0).is_err());
    }
}

#[cfg(feature = "espeak")]
mod pipeline {
    use std::sync::{Arc, Mutex};

    use nexus_runtime::tts::audio::MemorySink;
    use nexus_runtime::tts::phonemize::Phonemizer;
    use nexus_runtime::tts::speaker::{SpeakOptions, Speaker};
    use nexus_runtime::tts::vits::{Scales, Voice};
    use nexus_runtime::tts::TtsError;

    const ZERO: Scales = Scales { noise_scale: 0.0, length_scale: 1.0, noise_w: 0.0 };

    fn voice() -> Option<Voice> {
        let path = super::root().join("models/en_US-joe-medium.gguf");
        if !path.exists() {
            println!("skipped: {} is absent (models/fetch.sh, then nexus-cli convert-voice)", path.display());
            return None;
        }
        Some(Voice::load(&path).unwrap_or_else(|e| panic!("{e}")))
    }

    fn speaker(voice: Voice) -> (Speaker, Arc<Mutex<Vec<f32>>>) {
        let phonemizer = Phonemizer::new(voice.espeak_voice()).unwrap();
        let sink = MemorySink::default();
        let samples = sink.samples.clone();
        let options = SpeakOptions { scales: ZERO, ..SpeakOptions::for_voice(&voice) };
        (Speaker::new(voice, phonemizer, Box::new(sink), options).unwrap(), samples)
    }

    const TEXT: &str = "Hello world. This is a test of the voice, streamed sentence by sentence!";

    #[test]
    fn speaking_a_text_gives_speech_of_the_expected_length() {
        let Some(voice) = voice() else { return };
        let (mut speaker, samples) = speaker(voice);
        speaker.speak_text("The quick brown fox jumped over the lazy dog near the river bank.").unwrap();
        let stats = speaker.finish().unwrap();
        let samples = samples.lock().unwrap();
        assert_eq!(stats.samples, samples.len());
        // notes §1.4: 3.54 s with the default scales; within 20 %.
        let seconds = stats.audio_seconds();
        println!("fox sentence: {seconds:.2} s, RTF {:.3}, first audio {:?}", stats.real_time_factor(), stats.first_audio);
        assert!((2.8..4.3).contains(&seconds), "{seconds} s");
        let peak = samples.iter().fold(0f32, |m, &v| m.max(v.abs()));
        let rms = (samples.iter().map(|v| v * v).sum::<f32>() / samples.len() as f32).sqrt();
        assert!(peak > 0.5 && peak <= 1.0, "peak {peak}");
        assert!(rms > 0.02, "rms {rms}: silence?");
        assert!(stats.first_audio.is_some());
    }

    #[test]
    fn streamed_text_sounds_the_same_as_the_whole_text() {
        let Some(voice) = voice() else { return };
        let whole = {
            let (mut speaker, samples) = speaker(voice);
            speaker.speak_text(TEXT).unwrap();
            assert_eq!(speaker.finish().unwrap().sentences, 2);
            let s = samples.lock().unwrap().clone();
            s
        };
        let (mut speaker, samples) = speaker(self::voice().unwrap());
        for piece in TEXT.as_bytes().chunks(3) {
            speaker.push(std::str::from_utf8(piece).unwrap()).unwrap();
        }
        assert_eq!(speaker.finish().unwrap().sentences, 2);
        let streamed = samples.lock().unwrap();
        assert_eq!(streamed.len(), whole.len());
        let max_err = streamed.iter().zip(&whole).map(|(a, b)| (a - b).abs()).fold(0f32, f32::max);
        assert!(max_err < 1e-5, "max abs error {max_err}");
    }

    #[test]
    fn a_speaker_dropped_unfinished_publishes_no_wav() {
        let Some(voice) = voice() else { return };
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("never.wav");
        let sink = nexus_runtime::tts::audio::WavSink::create(&path, voice.sample_rate()).unwrap();
        let phonemizer = Phonemizer::new(voice.espeak_voice()).unwrap();
        let options = SpeakOptions::for_voice(&voice);
        let mut speaker = Speaker::new(voice, phonemizer, Box::new(sink), options).unwrap();
        speaker.speak_text(TEXT).unwrap();
        drop(speaker); // an error elsewhere, before `finish`
        assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 0, "a WAV (or its temporary file) was left");
    }

    #[test]
    fn nothing_to_say_is_an_error_for_a_text_and_skipped_in_a_stream() {
        let Some(voice) = voice() else { return };
        let (mut speaker, _) = speaker(voice);
        assert!(matches!(speaker.speak_text(""), Err(TtsError::NothingToSay(_))));
        assert!(matches!(speaker.speak_text("  \n "), Err(TtsError::NothingToSay(_))));
        match speaker.speak_text("?!... ,;") {
            Err(TtsError::NothingToSay(_)) | Err(TtsError::Phonemizer(_)) => {}
            other => panic!("punctuation only: {other:?}"),
        }
        speaker.push("... ").unwrap();
        speaker.push("!!! ").unwrap();
        let stats = speaker.finish().unwrap();
        assert_eq!((stats.sentences, stats.samples), (0, 0));
    }
}
