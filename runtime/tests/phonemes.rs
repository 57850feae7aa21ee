//! Phonemes and phoneme ids against tests/fixtures/phonemes/sentences.json
//! (scripts/voice/phonemes.py: piper-tts 1.8.0's phonemizer and the Debian espeak-ng 1.51 loop).
//!
//! The id tests need no feature. The phonemizer tests need `--features espeak` (the system
//! libespeak-ng): our output must equal the Debian loop's byte for byte on every text, and
//! piper-tts's except on the texts where the espeak-ng versions differ (listed exactly below).

use std::path::{Path, PathBuf};

use nexus_runtime::gguf::{GgufFile, GgufWriter, Value, ValueType};
use nexus_runtime::tts::phoneme_ids::{phoneme_ids, PhonemeIdMap};
use nexus_runtime::tts::TtsError;
use serde_json::Value as Json;

fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("..")
}

fn fixture() -> Json {
    let path = root().join("tests/fixtures/phonemes/sentences.json");
    let text = std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    serde_json::from_str(&text).unwrap()
}

fn cases(fixture: &Json) -> &[Json] {
    fixture["cases"].as_array().unwrap()
}

fn strings(v: &Json) -> Vec<String> {
    v.as_array().unwrap().iter().map(|s| s.as_str().unwrap().to_string()).collect()
}

fn fixture_map(fixture: &Json) -> PhonemeIdMap {
    PhonemeIdMap::from_json(fixture).unwrap()
}

#[test]
fn ids_equal_piper_phonemes_to_ids() {
    let fixture = fixture();
    let map = fixture_map(&fixture);
    assert_eq!(map.len(), 151);
    let mut sentences = 0;
    for case in cases(&fixture) {
        for (phonemes_key, ids_key) in [("piper", "piper_ids"), ("debian", "debian_ids")] {
            let expected = case[ids_key].as_array().unwrap();
            let phonemes = strings(&case[phonemes_key]);
            assert_eq!(phonemes.len(), expected.len());
            for (sentence, ids) in phonemes.iter().zip(expected) {
                let ids: Vec<i64> = ids.as_array().unwrap().iter().map(|x| x.as_i64().unwrap()).collect();
                let got = phoneme_ids(sentence, &map);
                assert_eq!(got.ids, ids, "{phonemes_key} sentence {sentence:?} of {:?}", case["text"]);
                assert!(got.skipped.is_empty(), "{sentence:?}: skipped {:?}", got.skipped);
                // Single-id phonemes: n code points give 2n + 3 ids.
                assert_eq!(got.ids.len(), 2 * sentence.chars().count() + 3);
                sentences += 1;
            }
        }
    }
    assert!(sentences > 100, "only {sentences} sentences in the fixture");
}

#[test]
fn ids_decompose_skip_and_expand() {
    let fixture = fixture();
    let map = fixture_map(&fixture);
    let id = |p: &str| map.get(p).unwrap()[0];
    // Precomposed ç is NFD-split into c + U+0327, each its own phoneme.
    let got = phoneme_ids("\u{e7}", &map);
    assert_eq!(got.ids, [1, 0, id("c"), 0, id("\u{327}"), 0, 2]);
    // Phonemes the map lacks are skipped and reported, in order.
    let got = phoneme_ids("a☃bQ", &map);
    assert_eq!(got.ids, [1, 0, id("a"), 0, id("b"), 0, 2]);
    assert_eq!(got.skipped, ['☃', 'Q']);
    assert_eq!(phoneme_ids("", &map).ids, [1, 0, 2]);
    // A key may map to several ids; PAD follows all of them.
    let multi: Json = serde_json::json!({"^": [1], "_": [0], "$": [2], "a": [5, 6], "b": [7]});
    let multi = PhonemeIdMap::from_json(&multi).unwrap();
    assert_eq!(phoneme_ids("ab", &multi).ids, [1, 0, 5, 6, 0, 7, 0, 2]);
    assert_eq!(multi.entries()[0].0, "_");
    assert_eq!(multi.max_id(), 7);
}

#[test]
fn map_from_voice_json_matches_fixture() {
    let path = root().join("models/en_US-joe-medium.onnx.json");
    if !path.exists() {
        println!("skipped: {} is absent (models/fetch.sh)", path.display());
        return;
    }
    let config: Json = serde_json::from_str(&std::fs::read_to_string(&path).unwrap()).unwrap();
    assert_eq!(PhonemeIdMap::from_json(&config).unwrap(), fixture_map(&fixture()));
}

fn write_map(dir: &Path, name: &str, phonemes: &[&str], counts: &[u32], ids: &[u32]) -> GgufFile {
    let mut w = GgufWriter::new();
    w.set("general.architecture", Value::String("vits".into()));
    let strings = phonemes.iter().map(|p| Value::String(p.to_string())).collect();
    w.set("vits.phoneme_id_map.phonemes", Value::Array(ValueType::String, strings));
    let u32s = |xs: &[u32]| Value::Array(ValueType::U32, xs.iter().map(|&x| Value::U32(x)).collect());
    w.set("vits.phoneme_id_map.counts", u32s(counts));
    w.set("vits.phoneme_id_map.ids", u32s(ids));
    let path = dir.join(name);
    w.write(&path).unwrap();
    GgufFile::open(&path).unwrap()
}

#[test]
fn map_from_gguf_round_trips_and_rejects_bad_arrays() {
    let dir = tempfile::tempdir().unwrap();
    let map = fixture_map(&fixture());
    let phonemes: Vec<&str> = map.entries().iter().map(|(p, _)| p.as_str()).collect();
    let counts: Vec<u32> = map.entries().iter().map(|(_, ids)| ids.len() as u32).collect();
    let ids: Vec<u32> = map.entries().iter().flat_map(|(_, ids)| ids.iter().map(|&i| i as u32)).collect();
    let gguf = write_map(dir.path(), "ok.gguf", &phonemes, &counts, &ids);
    assert_eq!(PhonemeIdMap::from_gguf(&gguf).unwrap(), map);

    let voice_error = |gguf: &GgufFile, needle: &str| match PhonemeIdMap::from_gguf(gguf) {
        Err(TtsError::Voice { path, what }) => {
            assert_eq!(path, gguf.path());
            assert!(what.contains(needle), "{what:?} lacks {needle:?}");
        }
        other => panic!("expected a voice error containing {needle:?}, got {other:?}"),
    };
    let g = write_map(dir.path(), "counts.gguf", &["^", "_", "$"], &[1, 1], &[1, 0]);
    voice_error(&g, "counts has 2 entries");
    let g = write_map(dir.path(), "sum.gguf", &["^", "_", "$"], &[1, 1, 2], &[1, 0, 2]);
    voice_error(&g, "add up to 4");
    let g = write_map(dir.path(), "dup.gguf", &["^", "_", "$", "a", "a"], &[1; 5], &[1, 0, 2, 3, 4]);
    voice_error(&g, "appears twice");
    let g = write_map(dir.path(), "nobos.gguf", &["_", "$", "a"], &[1; 3], &[0, 2, 3]);
    voice_error(&g, "\"^\"");
    let g = write_map(dir.path(), "zero.gguf", &["^", "_", "$", "a"], &[1, 1, 1, 0], &[1, 0, 2]);
    voice_error(&g, "maps to no ids");

    // A GGUF without the map at all names the missing key.
    let mut w = GgufWriter::new();
    w.set("general.architecture", Value::String("vits".into()));
    let path = dir.path().join("none.gguf");
    w.write(&path).unwrap();
    let err = PhonemeIdMap::from_gguf(&GgufFile::open(&path).unwrap()).unwrap_err();
    assert!(err.to_string().contains("vits.phoneme_id_map.phonemes"), "{err}");
}

#[test]
fn map_from_json_rejects_bad_maps() {
    let bad = |v: Json, needle: &str| match PhonemeIdMap::from_json(&v) {
        Err(TtsError::PhonemeMap(what)) => assert!(what.contains(needle), "{what:?} lacks {needle:?}"),
        other => panic!("expected a map error containing {needle:?}, got {other:?}"),
    };
    bad(serde_json::json!({"_": [0], "$": [2]}), "\"^\"");
    bad(serde_json::json!({"^": [1], "_": [0], "$": [2], "a": []}), "maps to no ids");
    bad(serde_json::json!({"^": [1], "_": [0], "$": [2], "a": [-3]}), "negative id");
    bad(serde_json::json!({"^": [1], "_": [0], "$": [2], "a": ["x"]}), "not an integer");
    bad(serde_json::json!({"^": 1, "_": [0], "$": [2]}), "expected an array");
    bad(serde_json::json!({"phoneme_id_map": [1, 2]}), "not an object");
}

#[cfg(not(feature = "espeak"))]
#[test]
fn phonemizer_without_espeak_says_how_to_rebuild() {
    use nexus_runtime::tts::phonemize::Phonemizer;
    match Phonemizer::new("en-us") {
        Err(TtsError::Phonemizer(msg)) => {
            assert!(msg.contains("without the `espeak` feature") && msg.contains("--features speech"), "{msg}");
        }
        other => panic!("expected a phonemizer error, got {other:?}"),
    }
}

#[cfg(feature = "espeak")]
mod espeak {
    use super::*;
    use nexus_runtime::tts::phonemize::{for_espeak, has_phonemes, Phonemizer};

    /// Texts where piper-tts 1.8.0 (its bundled espeak-ng "1.52.0.1") and Debian's espeak-ng
    /// 1.51 phonemize differently; see tests/fixtures/phonemes/README.md for why each differs.
    const VERSION_DIFFERENCES: &[&str] = &[
        "Dr. Smith met Mr. Jones at 10:30 a.m. on Jan. 5th, 2024.",
        "Use e.g. a comma, i.e. a pause; or a colon: like this.",
        "ones... Wow!?",
        "The price is $4.99, or about 4 euros.",
        "Call 555-1234 or 1-800-FLOWERS now!",
        "In 1984, 3.14159 was pi and 1/2 was a half.",
        "The FBI and NASA are US agencies.",
        "It's the end of the world as we know it.",
        "Four score and seven years ago.",
        "Numbers: one, two, three; four, five.",
        "Namaste is \u{928}\u{92e}\u{938}\u{94d}\u{924}\u{947} in Hindi and hello is \u{c548}\u{b155}\u{d558}\u{c138}\u{c694} in Korean.",
        "I have one.",
        "...\n\nHello,\n\nthere \u{2014} 4, 5 \u{2013} 6",
        "this sentence has no punctuation at all and it just keeps going on and on with more and more \
         words so that espeak has to cut it somewhere on its own because a clause cannot grow forever \
         and we want to see where it breaks and whether the pieces are glued back together",
    ];

    fn en_us() -> Phonemizer {
        Phonemizer::new("en-us").unwrap()
    }

    fn text(case: &Json) -> &str {
        case["text"].as_str().unwrap()
    }

    /// What our phonemizer makes of a reference's sentences: no text without a letter or digit,
    /// no sentence without a phoneme (the fixture's `nexus` field is this for the Debian loop).
    fn as_ours(text: &str, sentences: Vec<String>) -> Option<Vec<String>> {
        let kept: Vec<String> = sentences.into_iter().filter(|s| has_phonemes(s)).collect();
        (text.chars().any(char::is_alphanumeric) && !kept.is_empty()).then_some(kept)
    }

    fn ours(p: &Phonemizer, text: &str) -> Option<Vec<String>> {
        match p.phonemize(text) {
            Ok(sentences) => Some(sentences),
            Err(TtsError::NothingToSay(_)) => None,
            Err(e) => panic!("{text:?}: {e}"),
        }
    }

    #[test]
    fn equals_debian_loop_byte_for_byte() {
        let fixture = fixture();
        let version = Phonemizer::espeak_version().unwrap();
        assert_eq!(
            version, fixture["debian_espeak_ng"],
            "the fixture was made with this espeak-ng version; regenerate it with scripts/voice/phonemes.py"
        );
        let p = en_us();
        for case in cases(&fixture) {
            let expected = case["nexus"].as_array().map(|_| strings(&case["nexus"]));
            assert_eq!(expected, as_ours(text(case), strings(&case["debian"])), "fixture's nexus field");
            assert_eq!(ours(&p, text(case)), expected, "text {:?}", text(case));
        }
    }

    #[test]
    fn equals_piper_except_version_differences() {
        let fixture = fixture();
        let p = en_us();
        let differ: Vec<&str> = cases(&fixture)
            .iter()
            .filter(|case| ours(&p, text(case)) != as_ours(text(case), strings(&case["piper"])))
            .map(text)
            .collect();
        assert_eq!(differ, VERSION_DIFFERENCES);
        let listed: Vec<String> = strings(&fixture["piper_debian_differ"]);
        assert_eq!(listed, VERSION_DIFFERENCES);
    }

    #[test]
    fn nothing_to_say() {
        let p = en_us();
        for text in ["", "   \n\t", "!!!", "...", "?!", "\u{1F642}\u{1F642}", "\u{e000}", "\u{301}", "\0", "«—»"] {
            match p.phonemize(text) {
                Err(TtsError::NothingToSay(msg)) => assert!(!msg.is_empty()),
                other => panic!("{text:?}: expected NothingToSay, got {other:?}"),
            }
        }
    }

    #[test]
    fn strange_characters_do_not_crash() {
        let p = en_us();
        // Format characters vanish, unpronounceable ones become spaces.
        assert_eq!(for_espeak("co\u{ad}op\u{200d}erate\u{e000}x\u{fdfd}y\u{7}z"), "cooperate x y z");
        // NULs are removed before the text becomes a C string.
        assert_eq!(p.phonemize("Hello\0 world.").unwrap(), p.phonemize("Hello world.").unwrap());
        let long = "word, ".repeat(3000);
        let texts = [
            "a\u{e000}b",
            "\u{ffff}x\u{10ffff}",
            "bell\u{7} and escape\u{1b}[0m",
            "\u{202e}reversed\u{202c} text",
            "zero\u{200d}width\u{feff}joiner",
            "\u{1d518}\u{1d52b}\u{1d526}\u{1d520}\u{1d52c}\u{1d521}\u{1d522}",
            "e\u{301}\u{301}\u{301}\u{301}\u{301}\u{301}\u{301}\u{301}",
            "\u{fdfd}\u{a9c1}\u{2ffb}1",
            "\r\n\r\nline\r\n\u{2028}sep\u{2029}para\u{85}x\u{1c}y",
            long.as_str(),
        ];
        for text in texts {
            match p.phonemize(text) {
                Ok(sentences) => assert!(sentences.iter().all(|s| has_phonemes(s)), "{text:?}: {sentences:?}"),
                Err(TtsError::NothingToSay(_)) => {}
                Err(e) => panic!("{text:?}: {e}"),
            }
        }
    }

    #[test]
    fn unknown_voice_is_a_clear_error() {
        for voice in ["xx-no-such-voice", "en\0us"] {
            match Phonemizer::new(voice) {
                Err(TtsError::Phonemizer(msg)) => assert!(msg.contains("voice"), "{msg}"),
                other => panic!("{voice:?}: expected a phonemizer error, got {other:?}"),
            }
        }
        // A failed voice leaves the engine usable.
        assert_eq!(en_us().phonemize("Hello world.").unwrap(), ["həlˈoʊ wˈɜːld."]);
    }

    #[test]
    fn threads_and_voices_share_the_engine() {
        let fixture = fixture();
        let gb = Phonemizer::new("en").unwrap(); // British English (espeak-ng 1.51 finds "en-gb" under "en")
        let us = en_us();
        let expected: Vec<_> = cases(&fixture).iter().map(|c| (text(c).to_string(), ours(&us, text(c)))).collect();
        std::thread::scope(|s| {
            for t in 0..4 {
                let (gb, us, expected) = (&gb, &us, &expected);
                s.spawn(move || {
                    for (i, (text, want)) in expected.iter().enumerate() {
                        if (i + t) % 3 == 0 {
                            let _ = gb.phonemize(text);
                        }
                        assert_eq!(&ours(us, text), want, "thread {t}, text {text:?}");
                    }
                });
            }
        });
        assert_ne!(gb.phonemize("tomato").unwrap(), us.phonemize("tomato").unwrap());
    }
}
