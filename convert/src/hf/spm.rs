//! SentencePiece `tokenizer.model` → the token list, scores and types llama.cpp's
//! `_create_vocab_sentencepiece` writes (Llama 2, TinyLlama, Mistral 7B).
//!
//! The file is a serialized `sentencepiece.ModelProto`, read with `crate::protobuf`: pieces
//! (field 1: piece 1, score 2, type 3), trainer_spec (field 2: model_type 3, byte_fallback 35).
//! The reference loads it with `SentencePieceProcessor`, which refuses a model without exactly one
//! `<unk>`, with an empty or repeated piece, or with byte pieces that do not match
//! `byte_fallback`; we refuse the same. We also refuse WORD and CHAR models and unknown piece
//! types: llama.cpp's `llama` tokenizer merges by score, which only reproduces unigram and BPE
//! models, and an unknown type means a file we do not understand.

use std::collections::HashMap;
use std::path::Path;

use serde_json::Value as Json;

use super::config::read_json;
use super::HfError;
use crate::protobuf::{Reader, WireError};

/// llama.cpp's `SentencePieceTokenTypes`, the values of `tokenizer.ggml.token_type`.
pub const NORMAL: i32 = 1;
pub const UNKNOWN: i32 = 2;
pub const CONTROL: i32 = 3;
pub const USER_DEFINED: i32 = 4;
pub const UNUSED: i32 = 5;
pub const BYTE: i32 = 6;

/// `TrainerSpec.ModelType`; absent means UNIGRAM (the proto's default).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ModelType {
    Unigram,
    Bpe,
}

#[derive(Debug, Clone)]
pub struct Piece {
    pub piece: String,
    pub score: f32,
    /// The proto's `SentencePiece.Type` (1..=6, the same numbers as llama.cpp's types).
    pub kind: i32,
}

#[derive(Debug, Clone)]
pub struct SpmModel {
    pub pieces: Vec<Piece>,
    // Checked while parsing; the written vocabulary does not depend on them.
    #[allow(dead_code)]
    pub model_type: ModelType,
    #[allow(dead_code)]
    pub byte_fallback: bool,
}

/// The vocabulary as llama.cpp writes it: `vocab_size` entries.
pub struct SpmVocab {
    pub tokens: Vec<String>,
    pub scores: Vec<f32>,
    pub types: Vec<i32>,
}

fn bad(path: &Path, problem: String) -> HfError {
    HfError::SentencePiece { path: path.into(), problem }
}

/// Parses and checks a `tokenizer.model`.
pub fn read_model(path: &Path) -> Result<SpmModel, HfError> {
    let bytes = std::fs::read(path).map_err(|source| HfError::Io { path: path.into(), source })?;
    parse_model(&bytes).map_err(|e| match e {
        ParseError::Wire(source) => HfError::Protobuf { path: path.into(), source },
        ParseError::Bad(problem) => bad(path, problem),
    })
}

pub(crate) enum ParseError {
    Wire(WireError),
    Bad(String),
}

impl From<WireError> for ParseError {
    fn from(e: WireError) -> Self {
        ParseError::Wire(e)
    }
}

pub(crate) fn parse_model(buf: &[u8]) -> Result<SpmModel, ParseError> {
    const M: &str = "ModelProto";
    let mut pieces = Vec::new();
    let (mut model_type, mut byte_fallback) = (1i32, false);
    let mut r = Reader::new(buf);
    while let Some((field, p)) = r.field_of(M)? {
        match field {
            1 => pieces.push(parse_piece(p.bytes(M, field)?, pieces.len())?),
            2 => (model_type, byte_fallback) = parse_trainer_spec(p.bytes(M, field)?, model_type, byte_fallback)?,
            _ => {}
        }
    }
    let model_type = match model_type {
        1 => ModelType::Unigram,
        2 => ModelType::Bpe,
        3 => return Err(ParseError::Bad("model type WORD is not supported (only unigram and BPE)".into())),
        4 => return Err(ParseError::Bad("model type CHAR is not supported (only unigram and BPE)".into())),
        other => return Err(ParseError::Bad(format!("unknown model type {other} (only unigram = 1 and BPE = 2)"))),
    };
    if pieces.is_empty() {
        return Err(ParseError::Bad("no pieces (not a SentencePiece model?)".into()));
    }
    check_pieces(&pieces, byte_fallback)?;
    Ok(SpmModel { pieces, model_type, byte_fallback })
}

fn parse_piece(buf: &[u8], id: usize) -> Result<Piece, ParseError> {
    const M: &str = "SentencePiece";
    let mut piece = Piece { piece: String::new(), score: 0.0, kind: NORMAL };
    let mut r = Reader::new(buf);
    while let Some((field, p)) = r.field_of(M)? {
        match field {
            1 => piece.piece = p.string(M, field)?.to_string(),
            2 => piece.score = p.float(M, field)?,
            3 => piece.kind = p.int32(M, field)?,
            _ => {}
        }
    }
    if !(NORMAL..=BYTE).contains(&piece.kind) {
        return Err(ParseError::Bad(format!("piece {id} ({:?}) has unknown type {} (known: 1 to 6)", piece.piece, piece.kind)));
    }
    Ok(piece)
}

/// A later `trainer_spec` merges into an earlier one, as protobuf requires.
fn parse_trainer_spec(buf: &[u8], mut model_type: i32, mut byte_fallback: bool) -> Result<(i32, bool), ParseError> {
    const M: &str = "TrainerSpec";
    let mut r = Reader::new(buf);
    while let Some((field, p)) = r.field_of(M)? {
        match field {
            3 => model_type = p.int32(M, field)?,
            35 => byte_fallback = p.varint(M, field)? != 0,
            _ => {}
        }
    }
    Ok((model_type, byte_fallback))
}

/// `<0x41>` → 0x41, as sentencepiece's `PieceToByte`.
fn byte_of(piece: &str) -> Option<u8> {
    let hex = piece.strip_prefix("<0x")?.strip_suffix('>')?;
    (hex.len() == 2).then(|| u8::from_str_radix(hex, 16).ok()).flatten()
}

/// sentencepiece's `ModelInterface::InitializePieces` checks.
fn check_pieces(pieces: &[Piece], byte_fallback: bool) -> Result<(), ParseError> {
    // Normal, user-defined and unused pieces share one name space; the reserved kinds another.
    let mut normal: HashMap<&str, usize> = HashMap::new();
    let mut reserved: HashMap<&str, usize> = HashMap::new();
    let mut unk = None;
    let mut bytes = [false; 256];
    for (id, p) in pieces.iter().enumerate() {
        if p.piece.is_empty() {
            return Err(ParseError::Bad(format!("piece {id} is empty")));
        }
        let space = if matches!(p.kind, NORMAL | USER_DEFINED | UNUSED) { &mut normal } else { &mut reserved };
        if let Some(first) = space.insert(&p.piece, id) {
            return Err(ParseError::Bad(format!("piece {:?} is defined twice (ids {first} and {id})", p.piece)));
        }
        if p.kind == UNKNOWN {
            if let Some(first) = unk {
                return Err(ParseError::Bad(format!("two unknown pieces (ids {first} and {id})")));
            }
            unk = Some(id);
        }
        if p.kind == BYTE {
            if !byte_fallback {
                return Err(ParseError::Bad(format!("byte piece {:?} (id {id}) but trainer_spec.byte_fallback is false", p.piece)));
            }
            let b = byte_of(&p.piece).ok_or_else(|| ParseError::Bad(format!("byte piece {id} is {:?}, not <0xXX>", p.piece)))?;
            bytes[b as usize] = true;
        }
    }
    if unk.is_none() {
        return Err(ParseError::Bad("no unknown piece (<unk>)".into()));
    }
    if byte_fallback {
        if let Some(missing) = bytes.iter().position(|&b| !b) {
            return Err(ParseError::Bad(format!("byte_fallback is true but byte piece <0x{missing:02X}> is missing")));
        }
    }
    Ok(())
}

/// Mirrors `_create_vocab_sentencepiece`: the model's pieces, then `added_tokens.json`, then
/// tokenizer_config.json's `added_tokens_decoder`, in `vocab_size` slots (`[PAD{id}]`,
/// score -10000, UNUSED where nothing lands). Ids past `vocab_size` are dropped as the
/// reference does (it only warns).
pub fn vocab(dir: &Path, vocab_size: usize, tc: Option<&Json>, looks_special: impl Fn(&str) -> bool) -> Result<SpmVocab, HfError> {
    let model = read_model(&dir.join("tokenizer.model"))?;
    let n = vocab_size;
    let mut v = SpmVocab {
        tokens: (0..n).map(|i| format!("[PAD{i}]")).collect(),
        scores: vec![-10000.0; n],
        types: vec![UNUSED; n],
    };
    for (id, p) in model.pieces.iter().enumerate().take(n) {
        v.tokens[id] = p.piece.clone();
        v.scores[id] = p.score;
        // The reference asks IsUnknown / IsControl / IsUnused / IsByte; a user-defined piece
        // answers none of them and is written NORMAL.
        v.types[id] = if p.kind == USER_DEFINED { NORMAL } else { p.kind };
    }
    let added_path = dir.join("added_tokens.json");
    if added_path.is_file() {
        let added = read_json(&added_path)?;
        let map = added.as_object().ok_or_else(|| HfError::BadKey {
            path: added_path.clone(),
            key: String::new(),
            problem: "expected an object of token → id".into(),
        })?;
        for (token, id) in map {
            let id = id.as_u64().ok_or_else(|| HfError::BadKey {
                path: added_path.clone(),
                key: token.clone(),
                problem: format!("id {id} is not a non-negative integer"),
            })? as usize;
            if id < n {
                v.tokens[id] = token.clone();
                v.scores[id] = -1000.0;
                v.types[id] = USER_DEFINED;
            }
        }
    }
    if let Some(decoder) = tc.and_then(|t| t.get("added_tokens_decoder")).and_then(Json::as_object) {
        let tc_path = dir.join("tokenizer_config.json");
        for (key, data) in decoder {
            let bad_key = |problem: String| HfError::BadKey { path: tc_path.clone(), key: format!("added_tokens_decoder.{key}"), problem };
            let id: usize = key.trim().parse().map_err(|_| bad_key("the id is not a non-negative integer".into()))?;
            let content = data.get("content").and_then(Json::as_str).ok_or_else(|| bad_key("no \"content\" string".into()))?;
            if id >= n {
                continue;
            }
            let special = data.get("special").is_some_and(|s| !matches!(s, Json::Null | Json::Bool(false)));
            if special || looks_special(content) {
                v.tokens[id] = content.to_string();
                v.types[id] = CONTROL;
            } else {
                // The reference pre-normalizes user-defined spaces.
                v.tokens[id] = content.replace('\u{2581}', " ");
                v.types[id] = USER_DEFINED;
            }
            v.scores[id] = -1000.0;
        }
    }
    Ok(v)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn varint(mut v: u64, out: &mut Vec<u8>) {
        while v >= 0x80 {
            out.push((v as u8) | 0x80);
            v >>= 7;
        }
        out.push(v as u8);
    }

    fn len_field(field: u32, body: &[u8], out: &mut Vec<u8>) {
        varint(u64::from(field) << 3 | 2, out);
        varint(body.len() as u64, out);
        out.extend_from_slice(body);
    }

    fn piece(text: &str, score: f32, kind: i32) -> Vec<u8> {
        let mut b = Vec::new();
        len_field(1, text.as_bytes(), &mut b);
        varint(2 << 3 | 5, &mut b);
        b.extend_from_slice(&score.to_le_bytes());
        varint(3 << 3, &mut b);
        varint(kind as i64 as u64, &mut b);
        b
    }

    fn model(pieces: &[(&str, f32, i32)], model_type: i32, byte_fallback: bool) -> Vec<u8> {
        let mut out = Vec::new();
        for (t, s, k) in pieces {
            len_field(1, &piece(t, *s, *k), &mut out);
        }
        let mut spec = Vec::new();
        varint(3 << 3, &mut spec);
        varint(model_type as u64, &mut spec);
        varint(35 << 3, &mut spec);
        varint(u64::from(byte_fallback), &mut spec);
        len_field(2, &spec, &mut out);
        out
    }

    fn problem(buf: &[u8]) -> String {
        match parse_model(buf) {
            Err(ParseError::Bad(p)) => p,
            Err(ParseError::Wire(w)) => format!("wire: {w}"),
            Ok(_) => panic!("accepted"),
        }
    }

    const BASE: [(&str, f32, i32); 4] = [("<unk>", 0.0, UNKNOWN), ("<s>", 0.0, CONTROL), ("</s>", 0.0, CONTROL), ("\u{2581}a", -1.5, NORMAL)];

    #[test]
    fn reads_pieces_scores_types_and_model_type() {
        let m = parse_model(&model(&BASE, 2, false)).ok().unwrap();
        assert_eq!(m.model_type, ModelType::Bpe);
        assert_eq!(m.pieces.len(), 4);
        assert_eq!((m.pieces[3].piece.as_str(), m.pieces[3].score, m.pieces[3].kind), ("\u{2581}a", -1.5, NORMAL));
        // No trainer_spec: unigram, the proto default; a piece without type is NORMAL.
        let mut buf = Vec::new();
        len_field(1, &piece("<unk>", 0.0, UNKNOWN), &mut buf);
        let mut bare = Vec::new();
        len_field(1, b"x", &mut bare);
        len_field(1, &bare, &mut buf);
        let m = parse_model(&buf).ok().unwrap();
        assert_eq!((m.model_type, m.pieces[1].kind, m.pieces[1].score), (ModelType::Unigram, NORMAL, 0.0));
    }

    #[test]
    fn refuses_what_sentencepiece_refuses() {
        assert!(problem(&model(&BASE, 3, false)).contains("WORD"));
        assert!(problem(&model(&BASE, 4, false)).contains("CHAR"));
        assert!(problem(&model(&BASE, 9, false)).contains("unknown model type 9"));
        assert!(problem(&model(&BASE[1..], 2, false)).contains("no unknown piece"));
        let mut two_unk = BASE.to_vec();
        two_unk.push(("<unk2>", 0.0, UNKNOWN));
        assert!(problem(&model(&two_unk, 2, false)).contains("two unknown"));
        let mut dup = BASE.to_vec();
        dup.push(("\u{2581}a", -2.0, USER_DEFINED));
        assert!(problem(&model(&dup, 2, false)).contains("defined twice"));
        let mut empty = BASE.to_vec();
        empty.push(("", 0.0, NORMAL));
        assert!(problem(&model(&empty, 2, false)).contains("empty"));
        let mut byte = BASE.to_vec();
        byte.push(("<0x41>", 0.0, BYTE));
        assert!(problem(&model(&byte, 2, false)).contains("byte_fallback is false"));
        assert!(problem(&model(&byte, 2, true)).contains("<0x00> is missing"));
        let mut odd = BASE.to_vec();
        odd.push(("<0x4>", 0.0, BYTE));
        assert!(problem(&model(&odd, 2, true)).contains("not <0xXX>"));
        let mut unknown_type = BASE.to_vec();
        unknown_type.push(("b", 0.0, 7));
        assert!(problem(&model(&unknown_type, 2, false)).contains("unknown type 7"));
        assert!(problem(&model(&[], 2, false)).contains("no pieces"));
    }

    #[test]
    fn all_256_bytes_make_a_byte_fallback_model() {
        let names: Vec<String> = (0..256).map(|b| format!("<0x{b:02X}>")).collect();
        let mut pieces = BASE.to_vec();
        pieces.extend(names.iter().map(|n| (n.as_str(), 0.0, BYTE)));
        let m = parse_model(&model(&pieces, 2, true)).ok().unwrap();
        assert!(m.byte_fallback && m.pieces.len() == 260);
    }

    #[test]
    fn truncation_is_a_wire_error() {
        let buf = model(&BASE, 2, false);
        for cut in [1, buf.len() / 2, buf.len() - 1] {
            assert!(problem(&buf[..cut]).starts_with("wire: "), "cut at {cut}");
        }
    }
}
