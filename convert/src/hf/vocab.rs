//! tokenizer.json / tokenizer.model + tokenizer_config.json → `tokenizer.*` keys, as llama.cpp's
//! `_set_vocab_gpt2` / `_set_vocab_sentencepiece` + gguf-py's `SpecialVocab` write them.
//!
//! Supported: SentencePiece `tokenizer.model` (unigram or BPE; `spm`), which the reference
//! prefers whenever the file exists, and byte-level BPE tokenizer.json (`model.type` "BPE"
//! without `byte_fallback`). A byte-fallback tokenizer.json without tokenizer.model is refused:
//! the reference reads it through transformers' `LlamaTokenizer` (`_set_vocab_llama_hf`).
//! `tokenizer.ggml.pre` of a byte-level BPE is chosen by the reference from a hash of a fixed
//! text's tokenization, which needs HF tokenizers; we choose it from the pre-tokenizer config:
//! - plain `ByteLevel` with its own regex → "gpt-2";
//! - `Split` with the Llama 3 regex (`\p{N}{1,3}`) + `ByteLevel` → "llama-bpe";
//! - `Split` with the Qwen2 regex (single `\p{N}`) + `ByteLevel` → "qwen2";
//! - `Digits(individual)` + `ByteLevel` with a 49152-token vocabulary → "smollm".
//!
//! Anything else is refused rather than guessed. Checked against the reference: "gpt-2" and
//! "qwen2" (tests/fixtures/hf_convert/), "smollm" (SmolLM2-135M, scripts/convert/smollm2_roundtrip.sh).

use std::path::Path;

use nexus_runtime::gguf::{Value, ValueType};
use serde_json::Value as Json;

use super::config::{read_json, Arch, HfConfig};
use super::spm::{self, CONTROL, NORMAL, UNUSED, USER_DEFINED};
use super::HfError;

const LLAMA3_REGEX: &str = "(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\\r\\n\\p{L}\\p{N}]?\\p{L}+|\\p{N}{1,3}| ?[^\\s\\p{L}\\p{N}]+[\\r\\n]*|\\s*[\\r\\n]+|\\s+(?!\\S)|\\s+";
const QWEN2_REGEX: &str = "(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\\r\\n\\p{L}\\p{N}]?\\p{L}+|\\p{N}| ?[^\\s\\p{L}\\p{N}]+[\\r\\n]*|\\s*[\\r\\n]+|\\s+(?!\\S)|\\s+";
const SPECIAL_TYPES: [&str; 7] = ["bos", "eos", "unk", "sep", "pad", "cls", "mask"];

struct AddedToken {
    id: usize,
    content: String,
    special: bool,
}

/// Added tokens that the reference marks CONTROL even when they are not flagged special.
fn looks_special(t: &str) -> bool {
    t.starts_with("<|") && t.ends_with("|>")
        || t.starts_with("<\u{ff5c}") && t.ends_with("\u{ff5c}>")
        || t.starts_with("<unused") && t.ends_with('>')
        || ["<pad>", "<mask>", "<2mass>", "[@BOS@]"].contains(&t)
}

fn added_tokens(tok: &Json) -> Vec<AddedToken> {
    tok.get("added_tokens")
        .and_then(Json::as_array)
        .map(|a| {
            a.iter()
                .filter_map(|t| {
                    Some(AddedToken {
                        id: t.get("id")?.as_u64()? as usize,
                        content: t.get("content")?.as_str()?.to_string(),
                        special: t.get("special").and_then(Json::as_bool).unwrap_or(false),
                    })
                })
                .collect()
        })
        .unwrap_or_default()
}

/// The `tokenizer.*` keys (and llama's `add_space_prefix`), in the reference order.
pub fn tokenizer_kv(dir: &Path, cfg: &HfConfig) -> Result<Vec<(String, Value)>, HfError> {
    let tc_path = dir.join("tokenizer_config.json");
    let mut tc = if tc_path.is_file() { Some(read_json(&tc_path)?) } else { None };
    let mut kv = Vec::new();
    if cfg.arch == Arch::Llama {
        if let Some(b) = tc.as_ref().and_then(|t| t.get("add_prefix_space")).and_then(Json::as_bool) {
            kv.push(("tokenizer.ggml.add_space_prefix".into(), Value::Bool(b)));
        }
    }
    if dir.join("tokenizer.model").is_file() {
        sentencepiece_kv(dir, cfg, tc.as_mut(), &tc_path, &mut kv)?;
    } else {
        byte_level_bpe_kv(dir, cfg, tc.as_mut(), &tc_path, &mut kv)?;
    }
    Ok(kv)
}

/// `_set_vocab_sentencepiece`; tokenizer.json, when present beside tokenizer.model, is read only
/// by `SpecialVocab` (post-processor flags, added-token ids, normalizer flags).
fn sentencepiece_kv(dir: &Path, cfg: &HfConfig, tc: Option<&mut Json>, tc_path: &Path, kv: &mut Vec<(String, Value)>) -> Result<(), HfError> {
    let v = spm::vocab(dir, cfg.vocab_size, tc.as_deref(), looks_special)?;
    let n = v.tokens.len();
    kv.push(("tokenizer.ggml.model".into(), Value::String("llama".into())));
    kv.push(("tokenizer.ggml.pre".into(), Value::String("default".into())));
    kv.push(("tokenizer.ggml.tokens".into(), Value::Array(ValueType::String, v.tokens.into_iter().map(Value::String).collect())));
    kv.push(("tokenizer.ggml.scores".into(), Value::Array(ValueType::F32, v.scores.into_iter().map(Value::F32).collect())));
    kv.push(("tokenizer.ggml.token_type".into(), Value::Array(ValueType::I32, v.types.into_iter().map(Value::I32).collect())));
    let tok_path = dir.join("tokenizer.json");
    let tok = if tok_path.is_file() { Some(read_json(&tok_path)?) } else { None };
    let added = tok.as_ref().map(added_tokens).unwrap_or_default();
    let tc_copy = tc.as_deref().cloned();
    special_kv(tok.as_ref(), tc, &added, cfg, Some(n), tc_path, kv)?;
    // LlamaModel.set_vocab: CodeLlama's 32016-token vocabulary gets a second SpecialVocab for
    // prefix/suffix/middle/eot; gguf-py has a writer only for eot, defaulting to id 32010.
    if cfg.arch == Arch::Llama && cfg.vocab_size == 32016 {
        let from_tc = tc_copy
            .as_ref()
            .and_then(|t| token_content(t.get("eot_token")))
            .and_then(|c| added.iter().find(|a| a.content == c).map(|a| a.id as u64));
        let eot = from_tc.or_else(|| cfg.json.get("eot_token_id").and_then(Json::as_u64)).unwrap_or(32010);
        kv.push(("tokenizer.ggml.eot_token_id".into(), Value::U32(eot as u32)));
    }
    Ok(())
}

fn byte_level_bpe_kv(dir: &Path, cfg: &HfConfig, tc: Option<&mut Json>, tc_path: &Path, kv: &mut Vec<(String, Value)>) -> Result<(), HfError> {
    let tok_path = dir.join("tokenizer.json");
    let unsupported = |path: &Path, problem: String| HfError::UnsupportedTokenizer { path: path.into(), problem };
    let tok = read_json(&tok_path)?;
    let model = tok.get("model").ok_or_else(|| HfError::MissingKey { path: tok_path.clone(), key: "model".into() })?;
    let model_type = model.get("type").and_then(Json::as_str).unwrap_or("");
    if model_type != "BPE" || model.get("byte_fallback").and_then(Json::as_bool) == Some(true) {
        let what = if model_type == "BPE" {
            "byte-fallback BPE (SentencePiece-style) without tokenizer.model".to_string()
        } else {
            format!("model type {model_type:?}")
        };
        return Err(unsupported(&tok_path, format!("{what}; only byte-level BPE tokenizer.json or a SentencePiece tokenizer.model is supported")));
    }
    // Qwen2's tokenizer.json carries an NFC normalizer; the reference writes nothing for it (a
    // byte-level BPE GGUF has no normalizer key), so NFC is accepted and any other refused.
    match tok.get("normalizer") {
        None | Some(Json::Null) => {}
        Some(n) if n.get("type").and_then(Json::as_str) == Some("NFC") => {}
        Some(n) => return Err(unsupported(&tok_path, format!("normalizer {n} is not supported (only NFC)"))),
    }
    let vocab = model.get("vocab").and_then(Json::as_object).ok_or_else(|| HfError::MissingKey { path: tok_path.clone(), key: "model.vocab".into() })?;
    let added = added_tokens(&tok);
    let n = cfg.vocab_size;
    let mut tokens: Vec<Option<String>> = vec![None; n];
    let mut types = vec![UNUSED; n];
    let bad_id = |id: usize, t: &str| HfError::BadKey {
        path: tok_path.clone(),
        key: "model.vocab".into(),
        problem: format!("token {t:?} has id {id}, not below config vocab_size {n}"),
    };
    for (t, id) in vocab {
        let id = id.as_u64().map(|i| i as usize).unwrap_or(usize::MAX);
        *tokens.get_mut(id).ok_or_else(|| bad_id(id, t))? = Some(t.clone());
        types[id] = NORMAL;
    }
    for a in &added {
        let slot = tokens.get_mut(a.id).ok_or_else(|| bad_id(a.id, &a.content))?;
        if a.special || looks_special(&a.content) {
            *slot = Some(a.content.clone());
            types[a.id] = CONTROL;
        } else {
            *slot = Some(a.content.replace('\u{2581}', " "));
            types[a.id] = USER_DEFINED;
        }
    }
    let tokens: Vec<Value> = tokens
        .into_iter()
        .enumerate()
        .map(|(i, t)| Value::String(t.unwrap_or_else(|| format!("[PAD{i}]"))))
        .collect();
    kv.push(("tokenizer.ggml.model".into(), Value::String("gpt2".into())));
    kv.push(("tokenizer.ggml.pre".into(), Value::String(pre_tokenizer(&tok, &tok_path, n)?.into())));
    kv.push(("tokenizer.ggml.tokens".into(), Value::Array(ValueType::String, tokens)));
    kv.push(("tokenizer.ggml.token_type".into(), Value::Array(ValueType::I32, types.into_iter().map(Value::I32).collect())));
    let merges = merges(model, &tok_path)?;
    if !merges.is_empty() {
        kv.push(("tokenizer.ggml.merges".into(), Value::Array(ValueType::String, merges)));
    }
    special_kv(Some(&tok), tc, &added, cfg, None, tc_path, kv)
}

fn pre_tokenizer(tok: &Json, path: &Path, n_vocab: usize) -> Result<&'static str, HfError> {
    let pre = tok.get("pre_tokenizer").cloned().unwrap_or(Json::Null);
    let parts: Vec<&Json> = match pre.get("type").and_then(Json::as_str) {
        Some("Sequence") => pre.get("pretokenizers").and_then(Json::as_array).map(|a| a.iter().collect()).unwrap_or_default(),
        Some(_) => vec![&pre],
        None => vec![],
    };
    let ty = |p: &Json| p.get("type").and_then(Json::as_str).unwrap_or("").to_string();
    let kinds: Vec<String> = parts.iter().map(|p| ty(p)).collect();
    let byte_level_regex = |p: &Json| p.get("use_regex").and_then(Json::as_bool).unwrap_or(true);
    let split_regex = |p: &Json| p.get("pattern").and_then(|x| x.get("Regex")).and_then(Json::as_str).map(str::to_string);
    let found = match kinds.iter().map(String::as_str).collect::<Vec<_>>().as_slice() {
        ["ByteLevel"] if byte_level_regex(parts[0]) => Some("gpt-2"),
        ["Split", "ByteLevel"] if !byte_level_regex(parts[1]) => match split_regex(parts[0]).as_deref() {
            Some(LLAMA3_REGEX) => Some("llama-bpe"),
            Some(QWEN2_REGEX) => Some("qwen2"),
            _ => None,
        },
        ["Digits", "ByteLevel"]
            if parts[0].get("individual_digits").and_then(Json::as_bool) == Some(true) && n_vocab == 49152 =>
        {
            Some("smollm")
        }
        _ => None,
    };
    found.ok_or_else(|| HfError::UnsupportedTokenizer {
        path: path.into(),
        problem: format!("pre-tokenizer {pre} is not one we can name (gpt-2, llama-bpe, qwen2, smollm)"),
    })
}

fn merges(model: &Json, path: &Path) -> Result<Vec<Value>, HfError> {
    let Some(list) = model.get("merges").and_then(Json::as_array) else { return Ok(vec![]) };
    list.iter()
        .map(|m| match m {
            Json::String(s) => Ok(Value::String(s.clone())),
            Json::Array(pair) if pair.len() == 2 && pair.iter().all(Json::is_string) => {
                // The reference writes spaces inside a part as U+0120 so the pair stays splittable.
                let part = |j: &Json| j.as_str().unwrap_or("").replace(' ', "\u{0120}");
                Ok(Value::String(format!("{} {}", part(&pair[0]), part(&pair[1]))))
            }
            other => Err(HfError::BadKey { path: path.into(), key: "model.merges".into(), problem: format!("bad merge {other}") }),
        })
        .collect()
}

fn token_content(v: Option<&Json>) -> Option<String> {
    match v? {
        Json::String(s) => Some(s.clone()),
        Json::Object(o) => o.get("content")?.as_str().map(str::to_string),
        _ => None,
    }
}

/// Mirrors gguf-py `SpecialVocab`: post-processor add-flags, then tokenizer_config, then
/// config.json ids; first value wins, keys keep insertion order. `n_vocab` (SentencePiece
/// only, as in the reference) drops ids at or past it.
fn special_kv(
    tok: Option<&Json>,
    tc: Option<&mut Json>,
    added: &[AddedToken],
    cfg: &HfConfig,
    n_vocab: Option<usize>,
    tc_path: &Path,
    kv: &mut Vec<(String, Value)>,
) -> Result<(), HfError> {
    let mut ids: Vec<(String, u32)> = Vec::new();
    let mut add: Vec<(String, bool)> = Vec::new();
    let set_id = |ids: &mut Vec<(String, u32)>, typ: &str, id: Option<u64>| {
        if let Some(id) = id.filter(|&id| n_vocab.is_none_or(|n| id < n as u64)) {
            if !ids.iter().any(|(t, _)| t == typ) {
                ids.push((typ.to_string(), id as u32));
            }
        }
    };
    // An empty tokenizer_config.json counts as none in the reference (`if not tokenizer_config`).
    let tc = tc.filter(|t| t.as_object().is_none_or(|o| !o.is_empty()));
    let has_tc = tc.is_some();
    let set_add = |add: &mut Vec<(String, bool)>, typ: &str, v: bool, force: bool| match add.iter_mut().find(|(t, _)| t == typ) {
        Some(slot) if force => slot.1 = v,
        Some(_) => {}
        None => add.push((typ.to_string(), v)),
    };
    let tcv = tc.as_deref().cloned().unwrap_or(Json::Null);
    let (bos, eos) = (token_content(tcv.get("bos_token")), token_content(tcv.get("eos_token")));
    if let Some(pp) = tok.and_then(|t| t.get("post_processor")).filter(|p| !p.is_null()) {
        let procs: Vec<&Json> = match pp.get("processors").and_then(Json::as_array) {
            Some(a) => a.iter().collect(),
            None => vec![pp],
        };
        for p in procs {
            match p.get("type").and_then(Json::as_str) {
                Some("ByteLevel") => {
                    set_add(&mut add, "bos", false, false);
                    set_add(&mut add, "eos", false, false);
                }
                Some("TemplateProcessing") => {
                    let single = p.get("single").and_then(Json::as_array).cloned().unwrap_or_default();
                    let pair = p.get("pair").and_then(Json::as_array).cloned().unwrap_or_default();
                    let special = |j: Option<&Json>| j.and_then(|x| x.get("SpecialToken")).and_then(|x| x.get("id")).and_then(Json::as_str).map(str::to_string);
                    let (first, last) = if single.len() > 1 { (special(single.first()), special(single.last())) } else { (None, None) };
                    // Without tokenizer_config.json the template's own first and last tokens
                    // are taken as bos and eos.
                    if let Some(f) = &first {
                        set_add(&mut add, "bos", !has_tc || Some(f) == bos.as_ref(), true);
                    }
                    if let Some(l) = &last {
                        if has_tc && Some(l) != eos.as_ref() {
                            return Err(HfError::UnsupportedTokenizer { path: tc_path.into(), problem: format!("trailing special token {l:?} is not eos") });
                        }
                        set_add(&mut add, "eos", true, true);
                    }
                    if !pair.is_empty() {
                        let start = usize::from(first.is_some() && special(pair.first()) == first);
                        let stop = pair.len() - usize::from(last.is_some() && special(pair.last()) == last);
                        let mid = pair.get(start..stop).unwrap_or(&[]);
                        let seq = |j: Option<&Json>| j.and_then(|x| x.get("Sequence")).and_then(|x| x.get("id")).and_then(Json::as_str).map(str::to_string);
                        if mid.len() > 2 && seq(mid.first()).as_deref() == Some("A") && seq(mid.last()).as_deref() == Some("B") {
                            let inner = &mid[1..mid.len() - 1];
                            let sep = token_content(tcv.get("sep_token"));
                            let is_sep = |j: Option<&Json>| special(j).is_some_and(|s| Some(&s) == sep.as_ref() || Some(&s) == eos.as_ref());
                            let add_sep = (is_sep(inner.first()) && last.is_none()) || (inner.len() == 2 && is_sep(inner.get(1)));
                            set_add(&mut add, "sep", add_sep, true);
                        }
                    }
                }
                Some(other) => {
                    return Err(HfError::UnsupportedTokenizer { path: tc_path.into(), problem: format!("post-processor {other:?}") })
                }
                None => {}
            }
        }
    }
    let mut chat_template = None;
    if let Some(tc) = tc {
        match tc.get("chat_template") {
            Some(Json::String(s)) => chat_template = Some(s.clone()),
            // The separate files are only a default for an absent key; `null` means none.
            Some(Json::Null) => {}
            None => chat_template = template_file(tc_path)?,
            Some(_) => {
                return Err(HfError::BadKey { path: tc_path.into(), key: "chat_template".into(), problem: "only a single string template is supported".into() })
            }
        }
        for typ in SPECIAL_TYPES {
            if let Some(b) = tc.get(format!("add_{typ}_token")).and_then(Json::as_bool) {
                set_add(&mut add, typ, b, false);
            }
            if let Some(content) = token_content(tc.get(format!("{typ}_token"))) {
                set_id(&mut ids, typ, added.iter().find(|a| a.content == content).map(|a| a.id as u64));
            }
        }
    }
    for typ in SPECIAL_TYPES {
        let key = format!("{typ}_token_id");
        let v = cfg.json.get(&key);
        if v.and_then(Json::as_i64).is_some_and(|id| id < 0) {
            return Err(HfError::BadKey { path: cfg.path.clone(), key, problem: "a negative token id".into() });
        }
        set_id(&mut ids, typ, v.and_then(Json::as_u64));
    }
    let names = [("bos", "bos"), ("eos", "eos"), ("unk", "unknown"), ("sep", "seperator"), ("pad", "padding"), ("cls", "cls"), ("mask", "mask")];
    for (typ, id) in ids {
        let name = names.iter().find(|(t, _)| *t == typ).map_or(typ.as_str(), |(_, n)| n);
        kv.push((format!("tokenizer.ggml.{name}_token_id"), Value::U32(id)));
    }
    let is_llama = cfg.arch == Arch::Llama;
    for (typ, b) in add {
        // llama.cpp's LlamaModel forces add_bos off for 49152-token vocabularies (Granite/SmolLM).
        let b = if typ == "bos" && is_llama && cfg.vocab_size == 49152 { false } else { b };
        kv.push((format!("tokenizer.ggml.add_{typ}_token"), Value::Bool(b)));
    }
    if let Some(t) = chat_template {
        kv.push(("tokenizer.chat_template".into(), Value::String(t)));
    }
    let (mut lowercase, mut strip_accents) = (None, None);
    if let Some(n) = tok.and_then(|t| t.get("normalizer")) {
        normalizer_flags(n, &mut lowercase, &mut strip_accents);
    }
    if let Some(b) = lowercase {
        kv.push(("tokenizer.ggml.normalizer.lowercase".into(), Value::Bool(b)));
    }
    if let Some(b) = strip_accents {
        kv.push(("tokenizer.ggml.normalizer.strip_accents".into(), Value::Bool(b)));
    }
    if is_llama && cfg.vocab_size == 49152 && !kv.iter().any(|(k, _)| k == "tokenizer.ggml.add_bos_token") {
        kv.push(("tokenizer.ggml.add_bos_token".into(), Value::Bool(false)));
    }
    Ok(())
}

/// `chat_template.jinja`, else `chat_template.json`'s "chat_template", beside tokenizer_config.
fn template_file(tc_path: &Path) -> Result<Option<String>, HfError> {
    let jinja = tc_path.with_file_name("chat_template.jinja");
    if jinja.is_file() {
        if tc_path.with_file_name("additional_chat_templates").is_dir() {
            return Err(HfError::UnsupportedTokenizer {
                path: jinja,
                problem: "additional_chat_templates/ (named templates) is not supported".into(),
            });
        }
        return std::fs::read_to_string(&jinja).map(Some).map_err(|source| HfError::Io { path: jinja, source });
    }
    let json_path = tc_path.with_file_name("chat_template.json");
    if json_path.is_file() {
        return match read_json(&json_path)?.get("chat_template") {
            Some(Json::String(s)) => Ok(Some(s.clone())),
            None | Some(Json::Null) => Ok(None),
            Some(_) => Err(HfError::BadKey { path: json_path, key: "chat_template".into(), problem: "only a single string template is supported".into() }),
        };
    }
    Ok(None)
}

/// gguf-py `SpecialVocab._parse_normalizer`.
fn normalizer_flags(n: &Json, lowercase: &mut Option<bool>, strip_accents: &mut Option<bool>) {
    match n.get("type").and_then(Json::as_str) {
        Some("Lowercase") => *lowercase = Some(true),
        Some("StripAccents") => *strip_accents = Some(true),
        Some("BertNormalizer") => {
            if let Some(b) = n.get("lowercase").and_then(Json::as_bool) {
                *lowercase = Some(b);
            }
            if let Some(b) = n.get("strip_accents").and_then(Json::as_bool) {
                *strip_accents = Some(b);
            }
        }
        Some("Sequence") => {
            for m in n.get("normalizers").and_then(Json::as_array).into_iter().flatten() {
                normalizer_flags(m, lowercase, strip_accents);
            }
        }
        _ => {}
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn pre(p: Json, n_vocab: usize) -> Result<&'static str, HfError> {
        pre_tokenizer(&json!({ "pre_tokenizer": p }), Path::new("tokenizer.json"), n_vocab)
    }

    fn byte_level(use_regex: bool) -> Json {
        json!({"type": "ByteLevel", "add_prefix_space": false, "trim_offsets": true, "use_regex": use_regex})
    }

    fn split(regex: &str) -> Json {
        json!({"type": "Split", "pattern": {"Regex": regex}, "behavior": "Isolated", "invert": false})
    }

    fn seq(parts: &[Json]) -> Json {
        json!({"type": "Sequence", "pretokenizers": parts})
    }

    fn refused(r: Result<&'static str, HfError>) -> bool {
        matches!(r, Err(HfError::UnsupportedTokenizer { ref problem, .. }) if problem.contains("not one we can name"))
    }

    #[test]
    fn gpt2_is_plain_byte_level_with_its_regex() {
        assert_eq!(pre(byte_level(true), 50257).unwrap(), "gpt-2");
        // use_regex defaults to true in HF tokenizers.
        assert_eq!(pre(json!({"type": "ByteLevel"}), 50257).unwrap(), "gpt-2");
        assert_eq!(pre(seq(&[byte_level(true)]), 50257).unwrap(), "gpt-2");
        assert!(refused(pre(byte_level(false), 50257)));
    }

    #[test]
    fn llama_bpe_is_split_on_the_llama3_regex() {
        assert_eq!(pre(seq(&[split(LLAMA3_REGEX), byte_level(false)]), 128256).unwrap(), "llama-bpe");
        // The ByteLevel step must not split again.
        assert!(refused(pre(seq(&[split(LLAMA3_REGEX), byte_level(true)]), 128256)));
    }

    #[test]
    fn qwen2_is_split_on_single_digits() {
        assert_eq!(pre(seq(&[split(QWEN2_REGEX), byte_level(false)]), 151936).unwrap(), "qwen2");
        assert!(refused(pre(seq(&[split(QWEN2_REGEX), byte_level(true)]), 151936)));
        assert!(refused(pre(seq(&[byte_level(false), split(QWEN2_REGEX)]), 151936)));
    }

    #[test]
    fn smollm_is_individual_digits_with_a_49152_vocabulary() {
        let digits = |individual: bool| json!({"type": "Digits", "individual_digits": individual});
        assert_eq!(pre(seq(&[digits(true), byte_level(true)]), 49152).unwrap(), "smollm");
        assert!(refused(pre(seq(&[digits(true), byte_level(true)]), 49153)));
        assert!(refused(pre(seq(&[digits(false), byte_level(true)]), 49152)));
    }

    #[test]
    fn anything_else_is_refused() {
        let other_regex = LLAMA3_REGEX.replace("{1,3}", "{1,2}");
        assert!(refused(pre(seq(&[split(&other_regex), byte_level(false)]), 128256)));
        assert!(refused(pre(Json::Null, 50257)));
        assert!(refused(pre(json!({"type": "Metaspace", "replacement": "\u{2581}"}), 32000)));
        assert!(refused(pre(seq(&[]), 50257)));
        assert!(refused(pre(seq(&[json!({"type": "Whitespace"}), byte_level(false)]), 50257)));
        let e = pre(json!({"type": "Whitespace"}), 50257).unwrap_err().to_string();
        assert!(e.contains("tokenizer.json") && e.contains("Whitespace"), "{e}");
    }
}
