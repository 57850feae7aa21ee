//! Phoneme strings to model input ids with a voice's `phoneme_id_map`, exactly as Piper does:
//! NFD-normalise, take each code point as one phoneme, and frame the sentence as
//! `^ _ p1 _ p2 _ … pn _ $` (BOS, PAD after BOS and after every phoneme, EOS).
//!
//! The map comes from the voice GGUF (`vits.phoneme_id_map.*`, written by `convert-voice`) or
//! straight from Piper's `.onnx.json`.

use std::collections::HashMap;

use unicode_normalization::UnicodeNormalization;

use super::TtsError;
use crate::gguf::{GgufFile, Value};

/// Sentence start, end and the separator Piper puts after every phoneme.
pub const BOS: &str = "^";
pub const EOS: &str = "$";
pub const PAD: &str = "_";

const KEY_PHONEMES: &str = "vits.phoneme_id_map.phonemes";
const KEY_COUNTS: &str = "vits.phoneme_id_map.counts";
const KEY_IDS: &str = "vits.phoneme_id_map.ids";

/// A voice's phoneme → ids table. Keys are strings (Piper's format allows several code points
/// per key, although its espeak path only ever looks up single code points).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PhonemeIdMap {
    /// Entries sorted by their first id, the order the GGUF stores them in.
    entries: Vec<(String, Vec<i64>)>,
    index: HashMap<String, usize>,
    bos: Vec<i64>,
    eos: Vec<i64>,
    pad: Vec<i64>,
}

/// The ids of one sentence and the phonemes the map lacked (skipped; Piper warns about them).
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct PhonemeIds {
    pub ids: Vec<i64>,
    pub skipped: Vec<char>,
}

impl PhonemeIdMap {
    /// Builds the map from `(phoneme, ids)` pairs, checking what Piper relies on: no empty or
    /// duplicate keys, at least one non-negative id per key, and the `^ $ _` symbols present.
    pub fn new(entries: Vec<(String, Vec<i64>)>) -> Result<Self, String> {
        let mut entries = entries;
        let mut index = HashMap::with_capacity(entries.len());
        for (phoneme, ids) in &entries {
            if phoneme.is_empty() {
                return Err("a phoneme key is the empty string".into());
            }
            if ids.is_empty() {
                return Err(format!("phoneme {phoneme:?} maps to no ids"));
            }
            if let Some(id) = ids.iter().find(|&&id| id < 0) {
                return Err(format!("phoneme {phoneme:?} has negative id {id}"));
            }
            if index.insert(phoneme.clone(), 0).is_some() {
                return Err(format!("phoneme {phoneme:?} appears twice"));
            }
        }
        entries.sort_by(|(pa, a), (pb, b)| (a[0], pa).cmp(&(b[0], pb)));
        for (i, (phoneme, _)) in entries.iter().enumerate() {
            index.insert(phoneme.clone(), i);
        }
        let symbol = |s: &str| {
            index.get(s).map(|&i| entries[i].1.clone()).ok_or_else(|| {
                format!("the map has no {s:?} (Piper's BOS \"^\", EOS \"$\" and PAD \"_\" are required)")
            })
        };
        let (bos, eos, pad) = (symbol(BOS)?, symbol(EOS)?, symbol(PAD)?);
        Ok(PhonemeIdMap { entries, index, bos, eos, pad })
    }

    /// Reads `vits.phoneme_id_map.{phonemes,counts,ids}` from a voice GGUF.
    pub fn from_gguf(gguf: &GgufFile) -> Result<Self, TtsError> {
        let bad = |what: String| TtsError::Voice { path: gguf.path().to_path_buf(), what };
        let phonemes = gguf.get_str_array(KEY_PHONEMES)?;
        let counts = gguf
            .get_array(KEY_COUNTS)?
            .iter()
            .map(|v| v.as_u64().ok_or_else(|| bad(format!("{KEY_COUNTS}: expected unsigned integers, found {}", v.type_name()))))
            .collect::<Result<Vec<u64>, _>>()?;
        let ids = integers(gguf.get_array(KEY_IDS)?).map_err(|e| bad(format!("{KEY_IDS}: {e}")))?;
        if counts.len() != phonemes.len() {
            return Err(bad(format!(
                "{KEY_COUNTS} has {} entries but {KEY_PHONEMES} has {}",
                counts.len(),
                phonemes.len()
            )));
        }
        // The ids array must be exactly the concatenation the counts describe.
        let total = counts.iter().try_fold(0u64, |acc, &c| acc.checked_add(c));
        if total != Some(ids.len() as u64) {
            return Err(bad(format!(
                "{KEY_COUNTS} add up to {}, but {KEY_IDS} has {} entries",
                total.map_or_else(|| "more than 2^64".to_string(), |t| t.to_string()),
                ids.len()
            )));
        }
        let mut rest = ids.as_slice();
        let mut entries = Vec::with_capacity(phonemes.len());
        for (phoneme, &count) in phonemes.iter().zip(&counts) {
            // In bounds: the counts add up to exactly `ids.len()`.
            let (head, tail) = rest.split_at(count as usize);
            entries.push((phoneme.to_string(), head.to_vec()));
            rest = tail;
        }
        Self::new(entries).map_err(|e| bad(format!("vits.phoneme_id_map: {e}")))
    }

    /// Reads the `phoneme_id_map` object of a Piper `.onnx.json` (the whole config, or the map
    /// object itself).
    pub fn from_json(config: &serde_json::Value) -> Result<Self, TtsError> {
        let bad = |what: String| TtsError::PhonemeMap(what);
        let map = config.get("phoneme_id_map").unwrap_or(config);
        let map = map.as_object().ok_or_else(|| bad("phoneme_id_map is not an object".into()))?;
        let mut entries = Vec::with_capacity(map.len());
        for (phoneme, ids) in map {
            let ids = ids
                .as_array()
                .ok_or_else(|| bad(format!("phoneme {phoneme:?}: expected an array of ids, found {ids}")))?;
            let ids = ids
                .iter()
                .map(|id| id.as_i64().ok_or_else(|| bad(format!("phoneme {phoneme:?}: id {id} is not an integer"))))
                .collect::<Result<Vec<i64>, _>>()?;
            entries.push((phoneme.clone(), ids));
        }
        Self::new(entries).map_err(bad)
    }

    /// `(phoneme, ids)` sorted by first id: what `convert-voice` stores in the GGUF arrays.
    pub fn entries(&self) -> &[(String, Vec<i64>)] {
        &self.entries
    }

    pub fn len(&self) -> usize {
        self.entries.len()
    }

    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    pub fn get(&self, phoneme: &str) -> Option<&[i64]> {
        self.index.get(phoneme).map(|&i| self.entries[i].1.as_slice())
    }

    /// The largest id, for checking the map against the model's embedding table.
    pub fn max_id(&self) -> i64 {
        self.entries.iter().flat_map(|(_, ids)| ids.iter().copied()).max().unwrap_or(0)
    }
}

fn integers(values: &[Value]) -> Result<Vec<i64>, String> {
    values
        .iter()
        .map(|v| v.as_i64().ok_or_else(|| format!("expected integers, found {}", v.type_name())))
        .collect()
}

/// One sentence's phonemes (an IPA string from the phonemizer) to ids, Piper's rule: NFD, one
/// code point per phoneme, `^ _ p1 _ … pn _ $`. Phonemes missing from the map are skipped and
/// returned in `skipped` so the caller can warn, as Piper does.
pub fn phoneme_ids(phonemes: &str, map: &PhonemeIdMap) -> PhonemeIds {
    let mut out = PhonemeIds::default();
    out.ids.extend_from_slice(&map.bos);
    out.ids.extend_from_slice(&map.pad);
    let mut key = [0u8; 4];
    for c in phonemes.nfd() {
        match map.get(c.encode_utf8(&mut key)) {
            Some(ids) => {
                out.ids.extend_from_slice(ids);
                out.ids.extend_from_slice(&map.pad);
            }
            None => out.skipped.push(c),
        }
    }
    out.ids.extend_from_slice(&map.eos);
    out
}
