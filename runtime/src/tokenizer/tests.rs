//! Behaviour tests: special tokens, BOS/EOS, detokenization, streaming, bad metadata.

use std::path::{Path, PathBuf};

use super::unicode::byte_to_char;
use super::{clean_up_spaces, StreamDecoder, Tokenizer, TokenizerError};
use crate::gguf::{GgufFile, GgufWriter, Value, ValueType};

fn spm() -> Tokenizer {
    let p = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../tests/fixtures/tokenizer/ggml-vocab-llama-spm.gguf");
    Tokenizer::from_gguf(&GgufFile::open(p).expect("open")).expect("load")
}

fn strs(v: &[&str]) -> Value {
    Value::Array(ValueType::String, v.iter().map(|s| Value::String(s.to_string())).collect())
}

/// A byte-level BPE vocabulary: the 256 byte chars, "ab", "Ġab", a control token
/// "<|end|>" and a user-defined "<|user|>".
fn bpe_meta(pre: &str) -> Vec<(&'static str, Value)> {
    let mut tokens: Vec<String> = (0..=255u8).map(|b| byte_to_char(b).to_string()).collect();
    tokens.extend(["ab", "Ġab", "<|end|>", "<|user|>"].map(String::from));
    let mut types = vec![Value::I32(1); 258];
    types.extend([Value::I32(3), Value::I32(4)]);
    vec![
        ("tokenizer.ggml.model", Value::String("gpt2".into())),
        ("tokenizer.ggml.pre", Value::String(pre.into())),
        ("tokenizer.ggml.tokens", Value::Array(ValueType::String, tokens.into_iter().map(Value::String).collect())),
        ("tokenizer.ggml.token_type", Value::Array(ValueType::I32, types)),
        ("tokenizer.ggml.merges", strs(&["a b", "Ġ ab"])),
        ("tokenizer.ggml.bos_token_id", Value::U32(258)),
        ("tokenizer.ggml.eos_token_id", Value::U32(258)),
    ]
}

fn write(dir: &Path, meta: &[(&str, Value)]) -> PathBuf {
    let mut w = GgufWriter::new();
    for (k, v) in meta {
        w.set(*k, v.clone());
    }
    let p = dir.join("vocab.gguf");
    w.write(&p).expect("write gguf");
    p
}

fn load(meta: &[(&str, Value)]) -> Result<Tokenizer, TokenizerError> {
    let dir = tempfile::tempdir().expect("tempdir");
    let p = write(dir.path(), meta);
    Tokenizer::from_gguf(&GgufFile::open(&p).expect("open"))
}

fn with(mut meta: Vec<(&'static str, Value)>, key: &'static str, v: Option<Value>) -> Vec<(&'static str, Value)> {
    meta.retain(|(k, _)| *k != key);
    if let Some(v) = v {
        meta.push((key, v));
    }
    meta
}

#[test]
fn spm_bos_and_prefix_space() {
    let t = spm();
    assert_eq!(t.model_kind(), "llama");
    assert_eq!((t.bos(), t.eos(), t.add_bos(), t.add_eos()), (Some(1), Some(2), true, false));
    let plain = t.encode("Hello world", false, false);
    assert_eq!(plain, [15043, 3186]);
    assert_eq!(t.encode("Hello world", true, false), [1, 15043, 3186]);
    assert_eq!(t.encode("", true, false), [1]);
    assert!(t.encode("", false, false).is_empty());
    assert_eq!(t.decode(&[15043, 3186], true), "Hello world");
    // llama.cpp keeps the prefix space when it drops a leading BOS; so do we.
    assert_eq!(t.decode(&[1, 15043, 3186], true), " Hello world");
    // Without skipping, BOS renders as text and the word keeps its space.
    assert_eq!(t.decode(&[1, 15043, 3186], false), "<s> Hello world");
    assert_eq!(t.token_to_piece(15043, false), b" Hello");
}

#[test]
fn spm_special_parsing_on_and_off() {
    let t = spm();
    // parse_special: "<s>" becomes BOS, and the text after it gets SentencePiece's prefix space.
    assert_eq!(t.encode("<s>Hello", false, true), [1, 15043]);
    let literal = t.encode("<s>Hello", false, false);
    assert!(!literal.contains(&1), "{literal:?}");
    assert_eq!(t.decode(&literal, false), "<s>Hello");
    assert_eq!(t.token_to_piece(2, false), b"");
    assert_eq!(t.token_to_piece(2, true), b"</s>");
    assert!(t.is_eog(2) && !t.is_eog(1) && !t.is_eog(15043));
}

#[test]
fn spm_byte_fallback_and_stream_decoder() {
    let t = spm();
    let text = "Hi 😀 ok";
    let ids = t.encode(text, false, false);
    // The emoji has no token of its own in Llama 2: four byte tokens <0xF0><0x9F><0x98><0x80>.
    let bytes: Vec<u32> = ids.iter().copied().filter(|&id| (3..259).contains(&id)).collect();
    assert_eq!(bytes, [0xF0 + 3, 0x9F + 3, 0x98 + 3, 0x80 + 3]);
    assert_eq!(t.decode(&ids, true), text);

    let mut s = StreamDecoder::new(&t, true);
    let mut out = String::new();
    for &id in &ids {
        let piece = s.push(id);
        if (3..259).contains(&id) && id != 0x80 + 3 {
            assert_eq!(piece, "", "an incomplete character must be held back");
        }
        out.push_str(&piece);
    }
    out.push_str(&s.finish());
    assert_eq!(out, format!(" {text}"));
}

#[test]
fn stream_decoder_flushes_invalid_and_unfinished_bytes() {
    let t = spm();
    let mut s = StreamDecoder::new(&t, false);
    // 0xF0 starts a 4-byte sequence; 'A' (0x41) cannot continue it.
    assert_eq!(s.push(0xF0 + 3), "");
    assert_eq!(s.push(0x41 + 3), "\u{FFFD}A");
    assert_eq!(s.push(0xE2 + 3), "");
    assert_eq!(s.finish(), "\u{FFFD}");
    assert_eq!(s.finish(), "");
    // Control tokens render in a stream only when not skipping specials.
    assert_eq!(s.push(1), "<s>");
    assert_eq!(StreamDecoder::new(&t, true).push(1), "");
}

#[test]
fn arbitrary_ids_and_text_do_not_panic() {
    let t = spm();
    assert_eq!(t.token_to_piece(u32::MAX, true), b"");
    assert_eq!(t.token_text(32000), None);
    assert!(!t.is_eog(u32::MAX));
    let _ = t.decode(&[u32::MAX, 0, 1, 2, 3, 31999, 40000], false);
    let _ = t.decode(&[u32::MAX, 0, 1, 2, 3, 31999, 40000], true);
    let mut seed = 0x1234_5678_u64;
    for _ in 0..200 {
        let s: String = (0..seed % 40)
            .map(|_| {
                seed = seed.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
                char::from_u32((seed >> 33) as u32 % 0x11_0000).unwrap_or(' ')
            })
            .collect();
        let ids = t.encode(&s, true, true);
        assert!(ids.iter().all(|&id| (id as usize) < t.n_vocab()));
        // Byte fallback makes SentencePiece lossless on any text (plus the prefix space).
        assert_eq!(t.decode(&t.encode(&s, false, false), false), if s.is_empty() { String::new() } else { s.clone() });
    }
}

#[test]
fn bpe_merges_specials_and_round_trip() {
    let t = load(&bpe_meta("qwen2")).expect("load");
    assert_eq!(t.model_kind(), "gpt2");
    let ab = t.token_id("ab").unwrap();
    let gab = t.token_id("Ġab").unwrap();
    let (end, user) = (t.token_id("<|end|>").unwrap(), t.token_id("<|user|>").unwrap());
    assert_eq!(t.encode("ab ab", false, false), [ab, gab]);
    // User-defined tokens are always split out; control tokens only with parse_special.
    assert_eq!(t.encode("x<|user|>", false, false), [t.token_id("x").unwrap(), user]);
    assert_eq!(t.encode("<|end|>", false, true), [end]);
    assert_eq!(t.encode("<|end|>", false, false).len(), 7);
    assert!(t.is_eog(end));
    assert_eq!(t.encode("ab", true, false), [ab], "qwen2 does not add BOS by default");
    for s in ["", " ", "a\tb\n\n c", "héllo wörld", "日本😀", "  x  ", "\u{0}\u{7f}\u{85}"] {
        assert_eq!(t.decode(&t.encode(s, false, false), false), s);
    }
}

#[test]
fn bpe_add_bos_from_pre_and_metadata() {
    let t = load(&bpe_meta("llama-bpe")).expect("load");
    assert!(t.add_bos(), "llama3 pre-tokenizer implies add_bos");
    assert_eq!(t.encode("ab", true, false), [258, t.token_id("ab").unwrap()]);
    let meta = with(bpe_meta("llama-bpe"), "tokenizer.ggml.add_bos_token", Some(Value::Bool(false)));
    assert!(!load(&meta).unwrap().add_bos());
    let meta = with(bpe_meta("gpt-2"), "tokenizer.ggml.add_eos_token", Some(Value::Bool(true)));
    let t = load(&meta).unwrap();
    assert_eq!(t.encode("ab", true, false), [t.token_id("ab").unwrap(), 258]);
}

fn err(meta: &[(&str, Value)]) -> String {
    match load(meta) {
        Ok(_) => panic!("loaded bad metadata"),
        Err(e) => {
            let s = e.to_string();
            assert!(s.contains("vocab.gguf"), "error does not name the file: {s}");
            s
        }
    }
}

#[test]
fn bad_metadata_is_an_error_naming_file_and_key() {
    let base = bpe_meta("gpt-2");
    let e = err(&with(base.clone(), "tokenizer.ggml.tokens", None));
    assert!(e.contains("tokenizer.ggml.tokens"), "{e}");
    let e = err(&with(base.clone(), "tokenizer.ggml.tokens", Some(Value::U32(3))));
    assert!(e.contains("tokenizer.ggml.tokens"), "{e}");
    let e = err(&with(base.clone(), "tokenizer.ggml.token_type", Some(Value::Array(ValueType::I32, vec![Value::I32(1)]))));
    assert!(e.contains("tokenizer.ggml.token_type"), "{e}");
    let e = err(&with(base.clone(), "tokenizer.ggml.scores", Some(Value::Array(ValueType::F32, vec![Value::F32(0.0)]))));
    assert!(e.contains("tokenizer.ggml.scores"), "{e}");
    let e = err(&with(base.clone(), "tokenizer.ggml.merges", Some(strs(&["a b", "nospace"]))));
    assert!(e.contains("tokenizer.ggml.merges") && e.contains("nospace"), "{e}");
    let e = err(&with(base.clone(), "tokenizer.ggml.merges", None));
    assert!(e.contains("tokenizer.ggml.merges"), "{e}");
    let e = err(&with(base.clone(), "tokenizer.ggml.bos_token_id", Some(Value::U32(100_000))));
    assert!(e.contains("tokenizer.ggml.bos_token_id") && e.contains("100000"), "{e}");
    let e = err(&with(base.clone(), "tokenizer.ggml.eos_token_id", Some(Value::I32(-1))));
    assert!(e.contains("tokenizer.ggml.eos_token_id"), "{e}");
    let e = err(&with(base.clone(), "tokenizer.ggml.pre", Some(Value::String("tekken".into()))));
    assert!(e.contains("tekken") && e.contains("llama-bpe"), "{e}");
    let e = err(&with(base.clone(), "tokenizer.ggml.model", Some(Value::String("bert".into()))));
    assert!(e.contains("bert"), "{e}");
    let e = err(&with(base.clone(), "tokenizer.ggml.model", None));
    assert!(e.contains("tokenizer.ggml.model"), "{e}");
    let untyped = with(base.clone(), "tokenizer.ggml.token_type", None);
    let e = err(&with(untyped.clone(), "tokenizer.ggml.tokens", Some(strs(&["a", "b", "a"]))));
    assert!(e.contains("twice"), "{e}");
    let e = err(&with(untyped, "tokenizer.ggml.tokens", Some(strs(&[]))));
    assert!(e.contains("empty"), "{e}");
    // GPT-2's default BOS (id 11) does not exist in a 3-token vocabulary.
    let small = with(with(base.clone(), "tokenizer.ggml.token_type", None), "tokenizer.ggml.bos_token_id", None);
    let small = with(small, "tokenizer.ggml.tokens", Some(strs(&["a", "b", "ab"])));
    let small = with(small, "tokenizer.ggml.eos_token_id", None);
    let e = err(&with(small.clone(), "tokenizer.ggml.add_bos_token", Some(Value::Bool(true))));
    assert!(e.contains("add_bos_token"), "{e}");
    let t = load(&small).expect("a vocabulary without BOS/EOS is fine when nothing asks for them");
    assert_eq!((t.bos(), t.eos()), (None, None));
    assert_eq!(t.encode("ab", true, true), [2]);
}

#[test]
fn clean_up_spaces_matches_llama_cpp() {
    let mut b = b"a , b . c ' d 's e 're f 'll".to_vec();
    clean_up_spaces(&mut b);
    assert_eq!(String::from_utf8(b).unwrap(), "a, b. c'd's e're f 'll");
}
