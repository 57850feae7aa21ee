//! The tokenizer built from arbitrary GGUF vocabulary metadata (SentencePiece and BPE:
//! tokens, types, scores, merges, special ids, flags), then run on arbitrary text.
//!
//! Input layout (sections split at NUL bytes, so the fuzzer can grow each one):
//! `flags pre bos eos` (4 bytes), then tokens (`\n`-separated), token types (one byte per
//! token, cycled; empty = key absent), scores (one signed byte per token, cycled; empty =
//! absent), merges (`\n`-separated; BPE only), and the text to tokenize.
//!
//! The vocabulary GGUF is built in memory (`GgufWriter::to_bytes`, the bytes `write` puts in a
//! file) and parsed by `GgufFile::from_bytes` (the parser `open` runs on its map): a scratch
//! file per input cost a create, fsync and rename and held the target to ~190 inputs/s.

use nexus_runtime::gguf::{GgufFile, GgufWriter, Value, ValueType};
use nexus_runtime::tokenizer::Tokenizer;

const PRES: &[&str] = &["default", "gpt-2", "llama3", "qwen2", "smollm", "starcoder", "megrez", "no-such-pre"];

fn strings(section: &[u8]) -> Vec<Value> {
    section.split(|&b| b == b'\n').map(|t| Value::String(String::from_utf8_lossy(t).into_owned())).collect()
}

fn optional_bool(w: &mut GgufWriter, key: &str, bits: u8) {
    match bits & 3 {
        1 => w.set(key, Value::Bool(false)),
        2 => w.set(key, Value::Bool(true)),
        // A wrong type must be an error, not a panic.
        3 => w.set(key, Value::U8(1)),
        _ => {}
    }
}

pub fn run(data: &[u8]) {
    if data.len() < 4 {
        return;
    }
    let (head, rest) = data.split_at(4);
    let mut sections = rest.splitn(5, |&b| b == 0);
    let mut next = || sections.next().unwrap_or(&[]);
    let (tokens, types, scores, merges, text) = (next(), next(), next(), next(), next());

    let spm = head[0] & 1 == 0;
    let mut w = GgufWriter::new();
    w.set("tokenizer.ggml.model", Value::String(if spm { "llama" } else { "gpt2" }.into()));
    if !spm {
        w.set("tokenizer.ggml.pre", Value::String(PRES[head[1] as usize % PRES.len()].into()));
    }
    optional_bool(&mut w, "tokenizer.ggml.add_bos_token", head[0] >> 1);
    optional_bool(&mut w, "tokenizer.ggml.add_eos_token", head[0] >> 3);
    optional_bool(&mut w, "tokenizer.ggml.add_space_prefix", head[0] >> 5);
    let tokens = strings(tokens);
    let n = tokens.len();
    w.set("tokenizer.ggml.tokens", Value::Array(ValueType::String, tokens));
    if !types.is_empty() {
        let t = (0..n).map(|i| Value::I32((types[i % types.len()] % 8) as i32)).collect();
        w.set("tokenizer.ggml.token_type", Value::Array(ValueType::I32, t));
    }
    if !scores.is_empty() {
        let s = (0..n).map(|i| Value::F32(scores[i % scores.len()] as i8 as f32 / 4.0)).collect();
        w.set("tokenizer.ggml.scores", Value::Array(ValueType::F32, s));
    }
    if !spm {
        w.set("tokenizer.ggml.merges", Value::Array(ValueType::String, strings(merges)));
    }
    if head[2] != 0xFF {
        w.set("tokenizer.ggml.bos_token_id", Value::U32(head[2] as u32));
    }
    if head[3] != 0xFF {
        w.set("tokenizer.ggml.eos_token_id", Value::U32(head[3] as u32));
    }
    let bytes = w.to_bytes().expect("the writer encodes any vocabulary");
    let file = GgufFile::from_bytes("vocab.gguf", bytes).expect("what our writer wrote parses");
    let Ok(tok) = Tokenizer::from_gguf(&file) else { return };

    let text = String::from_utf8_lossy(text);
    let parse_special = head[0] & 0x80 != 0;
    let ids = tok.encode(&text, true, parse_special);
    assert!(ids.iter().all(|&id| (id as usize) < tok.n_vocab()), "encode produced an id outside the vocabulary");
    let _ = tok.decode(&ids, true);
    let _ = tok.decode(&ids, false);
    crate::check_stream(&tok, &ids, parse_special);
    for id in 0..tok.n_vocab().min(64) as u32 {
        let _ = tok.token_to_piece(id, true);
    }
}
