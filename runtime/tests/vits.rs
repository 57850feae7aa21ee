//! The native VITS forward pass against onnxruntime's intermediates for the same voice
//! (tests/fixtures/voice/golden.gguf, scales 0, 1, 0), stage by stage, plus chunked streaming
//! and bad input. Needs models/en_US-joe-medium.gguf (models/fetch.sh + convert-voice).

use std::path::{Path, PathBuf};

use nexus_runtime::gguf::{GgufFile, GgufWriter};
use nexus_runtime::tts::vits::{durations, Encoded, Noise, Scales, Voice};
use nexus_runtime::tts::TtsError;

const ZERO: Scales = Scales { noise_scale: 0.0, length_scale: 1.0, noise_w: 0.0 };

fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("..")
}

fn voice() -> Option<Voice> {
    let path = std::env::var_os("VITS_VOICE").map(PathBuf::from).unwrap_or_else(|| root().join("models/en_US-joe-medium.gguf"));
    if !path.exists() {
        println!("skipped: {} is absent (models/fetch.sh, then nexus-cli convert-voice)", path.display());
        return None;
    }
    Some(Voice::load(&path).unwrap_or_else(|e| panic!("{e}")))
}

struct Golden(GgufFile);

impl Golden {
    fn open() -> Self {
        Golden(GgufFile::open(root().join("tests/fixtures/voice/golden.gguf")).unwrap())
    }
    fn n_cases(&self) -> usize {
        self.0.get_u64("golden.n_cases").unwrap() as usize
    }
    fn f32(&self, name: &str) -> Vec<f32> {
        let info = self.0.tensor_info(name).unwrap_or_else(|| panic!("golden lacks {name}"));
        bytes_to(self.0.tensor_data(info), f32::from_le_bytes)
    }
    fn i32(&self, name: &str) -> Vec<i32> {
        let info = self.0.tensor_info(name).unwrap_or_else(|| panic!("golden lacks {name}"));
        bytes_to(self.0.tensor_data(info), i32::from_le_bytes)
    }
    fn ids(&self, case: usize) -> Vec<i64> {
        self.i32(&format!("{case}.ids")).into_iter().map(i64::from).collect()
    }
}

fn bytes_to<T>(b: &[u8], f: fn([u8; 4]) -> T) -> Vec<T> {
    b.chunks_exact(4).map(|c| f([c[0], c[1], c[2], c[3]])).collect()
}

fn max_abs_diff(a: &[f32], b: &[f32]) -> f32 {
    assert_eq!(a.len(), b.len(), "lengths differ");
    a.iter().zip(b).fold(0f32, |m, (x, y)| m.max((x - y).abs()))
}

fn check(what: &str, case: usize, got: &[f32], want: &[f32], tol: f32) -> f32 {
    let err = max_abs_diff(got, want);
    println!("case {case} {what}: max abs error {err:.3e} (tolerance {tol:.0e})");
    assert!(err <= tol, "case {case} {what}: max abs error {err:.3e} > {tol:.0e}");
    err
}

#[test]
fn every_stage_matches_onnxruntime() {
    let Some(voice) = voice() else { return };
    let g = Golden::open();
    for case in 0..g.n_cases() {
        let ids = g.ids(case);
        let name = |s: &str| format!("{case}.{s}");

        let enc = voice.encode(&ids).unwrap();
        check("enc_x", case, &enc.x, &g.f32(&name("enc_x")), 1e-4);
        check("m_p", case, &enc.m_p, &g.f32(&name("m_p")), 1e-4);
        check("logs_p", case, &enc.logs_p, &g.f32(&name("logs_p")), 1e-4);

        // The duration predictor on onnxruntime's encoder output, so errors do not compound.
        let golden_enc = Encoded {
            len: ids.len(),
            x: g.f32(&name("enc_x")),
            m_p: g.f32(&name("m_p")),
            logs_p: g.f32(&name("logs_p")),
        };
        let logw = voice.log_durations(&golden_enc, 0.0, &mut Noise::new(0)).unwrap();
        check("logw", case, &logw, &g.f32(&name("logw")), 1e-4);
        let want_d: Vec<usize> = g.i32(&name("durations")).into_iter().map(|d| d as usize).collect();
        let own_logw = voice.log_durations(&enc, 0.0, &mut Noise::new(0)).unwrap();
        assert_eq!(durations(&own_logw, 1.0), want_d, "case {case}: durations differ");

        let (z_p, frames) = voice.prior_sample(&golden_enc, &want_d, 0.0, &mut Noise::new(0));
        check("z_p", case, &z_p, &g.f32(&name("z_p")), 1e-6);

        let z = voice.flow_reverse(g.f32(&name("z_p")), frames).unwrap();
        check("z", case, &z, &g.f32(&name("z")), 3e-4);

        let audio = voice.decode(&g.f32(&name("z")), frames).unwrap();
        check("audio (decoder alone)", case, &audio, &g.f32(&name("audio")), 1e-4);

        let audio = voice.synthesize(&ids, ZERO, 0).unwrap();
        check("audio (end to end)", case, &audio, &g.f32(&name("audio")), 2e-4);
    }
}

fn chunked(voice: &Voice, ids: &[i64], scales: Scales, seed: u64, first: usize) -> (Vec<f32>, Vec<usize>) {
    let (mut all, mut sizes) = (Vec::new(), Vec::new());
    voice
        .synthesize_chunks(ids, scales, seed, first, &mut |c| {
            sizes.push(c.len());
            all.extend_from_slice(c);
            true
        })
        .unwrap();
    (all, sizes)
}

#[test]
fn streamed_chunks_equal_whole_sentence_synthesis() {
    let Some(voice) = voice() else { return };
    let g = Golden::open();
    let ids = g.ids(1);
    let noisy = voice.default_scales();
    for (scales, seed) in [(ZERO, 0), (noisy, 7)] {
        let whole = voice.synthesize(&ids, scales, seed).unwrap();
        for first in [1, 5, 16] {
            let (streamed, sizes) = chunked(&voice, &ids, scales, seed, first);
            assert!(sizes.len() >= 2, "{sizes:?}: expected several chunks");
            assert_eq!(sizes[0], first * voice.hop());
            let err = max_abs_diff(&streamed, &whole);
            println!("scales {scales:?}, first chunk {first} frames: {} chunks, max abs error {err:.3e}", sizes.len());
            assert!(err <= 1e-4, "streamed vs whole, first chunk {first}: max abs error {err:.3e} > 1e-4");
        }
    }
    // Returning false stops after that chunk.
    let mut calls = 0;
    voice
        .synthesize_chunks(&ids, ZERO, 0, 4, &mut |_| {
            calls += 1;
            false
        })
        .unwrap();
    assert_eq!(calls, 1);
}

#[test]
fn noise_is_seeded() {
    let Some(voice) = voice() else { return };
    let ids = Golden::open().ids(0);
    let s = voice.default_scales();
    let a = voice.synthesize(&ids, s, 1).unwrap();
    assert_eq!(a, voice.synthesize(&ids, s, 1).unwrap(), "same seed, same audio");
    let b = voice.synthesize(&ids, s, 2).unwrap();
    assert!(a.len() != b.len() || max_abs_diff(&a, &b) > 1e-3, "different seeds gave the same audio");
}

#[test]
fn bad_ids_and_scales_are_errors() {
    let Some(voice) = voice() else { return };
    assert!(matches!(voice.synthesize(&[], ZERO, 0), Err(TtsError::NothingToSay(_))));
    for bad in [256, -1, i64::MAX] {
        match voice.synthesize(&[1, 0, bad, 0, 2], ZERO, 0) {
            Err(TtsError::PhonemeId { id, n_vocab: 256 }) if id == bad => {}
            other => panic!("id {bad}: {:?}", other.map(|a| a.len())),
        }
    }
    let nan = Scales { length_scale: f32::NAN, ..ZERO };
    assert!(matches!(voice.synthesize(&[1, 0, 2], nan, 0), Err(TtsError::Synthesis(_))));
    let huge = Scales { length_scale: 1e6, ..ZERO };
    let err = voice.synthesize(&[1, 0, 20, 0, 2], huge, 0).unwrap_err();
    assert!(err.to_string().contains("frames"), "{err}");
    assert!(voice.synthesize_chunks(&[1, 0, 2], ZERO, 0, 0, &mut |_| true).is_err());
}

#[test]
fn files_that_are_not_vits_voices_are_refused() {
    // The golden fixture is a GGUF of another architecture; all_types.gguf has none at all.
    let golden = root().join("tests/fixtures/voice/golden.gguf");
    let err = Voice::load(&golden).err().expect("golden.gguf loaded as a voice").to_string();
    assert!(err.contains("not a VITS voice") && err.contains("golden.gguf"), "{err}");
    let other = root().join("tests/fixtures/gguf/all_types.gguf");
    let err = Voice::load(&other).err().expect("all_types.gguf loaded as a voice").to_string();
    assert!(err.contains("all_types.gguf"), "{err}");

    let dir = tempfile::tempdir().unwrap();
    let bytes = std::fs::read(&golden).unwrap();
    let cut = dir.path().join("cut.gguf");
    std::fs::write(&cut, &bytes[..bytes.len() / 2]).unwrap();
    assert!(Voice::load(&cut).is_err());
}

/// New dims for a tensor (name, dims), or `None` to leave it out.
type DimsEdit<'a> = dyn Fn(&str, &[u64]) -> Option<Vec<u64>> + 'a;

#[test]
fn truncated_or_incomplete_voices_are_errors_naming_the_problem() {
    let Some(voice) = voice() else { return };
    let dir = tempfile::tempdir().unwrap();
    let bytes = std::fs::read(voice.path()).unwrap();
    let file = GgufFile::open(voice.path()).unwrap();
    // One byte short of the end of the last tensor's data (padding may follow it).
    let data_end = file.tensors().iter().map(|t| file.data_offset + t.offset + t.n_bytes).max().unwrap();
    for len in [10, 4096, bytes.len() / 2, data_end as usize - 1] {
        let cut = dir.path().join(format!("cut{len}.gguf"));
        std::fs::write(&cut, &bytes[..len]).unwrap();
        let err = Voice::load(&cut).err().expect("truncated voice loaded").to_string();
        assert!(err.contains(&format!("cut{len}.gguf")), "{err}");
    }

    // Rewrite the voice without one tensor, and with another one's shape changed.
    let rewrite = |name: &str, edit: &DimsEdit<'_>| {
        let mut w = GgufWriter::new();
        for (k, v) in file.metadata() {
            w.set(k.clone(), v.clone());
        }
        for t in file.tensors() {
            if let Some(dims) = edit(&t.name, &t.dims) {
                w.add_tensor(t.name.clone(), &dims, t.ty, file.tensor_data(t)).unwrap();
            }
        }
        let path = dir.path().join(name);
        w.write(&path).unwrap();
        Voice::load(&path).err().expect("incomplete voice loaded").to_string()
    };
    let missing = "flow.flows.4.enc.in_layers.2.weight";
    let err = rewrite("missing.gguf", &|n, d| (n != missing).then(|| d.to_vec()));
    assert!(err.contains(missing), "{err}");
    let reshaped = "dec.ups.1.weight";
    let err = rewrite("reshaped.gguf", &|n, d| {
        Some(if n == reshaped { vec![d[0] * d[1], d[2]] } else { d.to_vec() })
    });
    assert!(err.contains(reshaped), "{err}");
}
