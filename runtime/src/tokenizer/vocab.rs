//! Vocabulary metadata from GGUF: tokens, scores, types, merges, special ids and flags,
//! with llama.cpp's defaults and its text-based detection of end-of-generation tokens.

use std::collections::{BTreeSet, HashMap};
use std::path::Path;

use super::error::TokenizerError;
use super::pretokenize::{PreTokenizer, SUPPORTED_PRE};
use crate::gguf::{GgufFile, Value};

/// llama.cpp's token attributes (bit flags; a token may carry several).
pub(super) mod attr {
    pub const UNKNOWN: u16 = 1 << 0;
    pub const UNUSED: u16 = 1 << 1;
    pub const NORMAL: u16 = 1 << 2;
    pub const CONTROL: u16 = 1 << 3;
    pub const USER_DEFINED: u16 = 1 << 4;
    pub const BYTE: u16 = 1 << 5;
}

/// GGUF `tokenizer.ggml.token_type` values → attributes, as llama.cpp maps them; unknown
/// types become "undefined" (0), which detokenizes to nothing.
fn attr_from_type(t: i64) -> u16 {
    match t {
        1 => attr::NORMAL,
        2 => attr::UNKNOWN,
        3 => attr::CONTROL,
        4 => attr::USER_DEFINED,
        5 => attr::UNUSED,
        6 => attr::BYTE,
        _ => 0,
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Kind {
    Spm,
    Bpe(PreTokenizer),
}

#[derive(Debug, Default, Clone, Copy)]
pub(super) struct SpecialIds {
    pub bos: Option<u32>,
    pub eos: Option<u32>,
    pub eot: Option<u32>,
    pub eom: Option<u32>,
    pub unk: Option<u32>,
    pub sep: Option<u32>,
    pub pad: Option<u32>,
}

/// BPE merge ranks. Pieces are interned so a lookup borrows the two symbol texts instead
/// of allocating a key per candidate pair.
#[derive(Debug, Default)]
pub(super) struct Merges {
    piece_ids: HashMap<String, u32>,
    ranks: HashMap<(u32, u32), u32>,
}

impl Merges {
    pub fn rank(&self, left: &str, right: &str) -> Option<u32> {
        let l = *self.piece_ids.get(left)?;
        let r = *self.piece_ids.get(right)?;
        self.ranks.get(&(l, r)).copied()
    }

    fn intern(&mut self, s: &str) -> u32 {
        if let Some(&id) = self.piece_ids.get(s) {
            return id;
        }
        let id = self.piece_ids.len() as u32;
        self.piece_ids.insert(s.to_string(), id);
        id
    }
}

#[derive(Debug)]
pub(super) struct Vocab {
    pub kind: Kind,
    pub texts: Vec<String>,
    pub scores: Vec<f32>,
    pub attrs: Vec<u16>,
    pub ids: HashMap<String, u32>,
    pub merges: Merges,
    pub special: SpecialIds,
    pub add_bos: bool,
    pub add_eos: bool,
    pub add_space_prefix: bool,
    pub clean_spaces: bool,
    pub ignore_merges: bool,
    pub eog: BTreeSet<u32>,
    /// Tokens the special-token partition looks for, longest text first.
    pub special_cache: Vec<u32>,
}

fn bad(path: &Path, key: &str, problem: impl Into<String>) -> TokenizerError {
    TokenizerError::BadMetadata { path: path.to_path_buf(), key: key.to_string(), problem: problem.into() }
}

fn opt_bool(file: &GgufFile, key: &str) -> Result<Option<bool>, TokenizerError> {
    match file.get(key) {
        None => Ok(None),
        Some(v) => v
            .as_bool()
            .map(Some)
            .ok_or_else(|| bad(file.path(), key, format!("expected bool, found {}", v.type_name()))),
    }
}

impl Vocab {
    pub fn load(file: &GgufFile) -> Result<Vocab, TokenizerError> {
        let path = file.path();
        let model = file.get_str("tokenizer.ggml.model")?;
        let pre_name = match file.get("tokenizer.ggml.pre") {
            None => "",
            Some(_) => file.get_str("tokenizer.ggml.pre")?,
        };

        // Per-model defaults, as llama.cpp sets them before reading the keys.
        let (kind, mut special, mut add_bos, mut add_space_prefix, clean_spaces, ignore_merges) = match model {
            "llama" => {
                let s = SpecialIds { bos: Some(1), eos: Some(2), unk: Some(0), ..Default::default() };
                (Kind::Spm, s, true, true, false, false)
            }
            "gpt2" => {
                let settings = PreTokenizer::from_name(pre_name).ok_or_else(|| TokenizerError::UnsupportedPre {
                    path: path.to_path_buf(),
                    pre: pre_name.to_string(),
                    supported: SUPPORTED_PRE.to_string(),
                })?;
                let s = SpecialIds { bos: Some(11), eos: Some(11), ..Default::default() };
                (Kind::Bpe(settings.pre), s, settings.add_bos, false, settings.clean_spaces, settings.ignore_merges)
            }
            other => {
                return Err(TokenizerError::UnsupportedModel { path: path.to_path_buf(), model: other.to_string() })
            }
        };
        if let Some(v) = opt_bool(file, "tokenizer.ggml.add_space_prefix")? {
            add_space_prefix = v;
        }

        let raw_texts = file.get_str_array("tokenizer.ggml.tokens")?;
        let n = raw_texts.len();
        if n == 0 {
            return Err(bad(path, "tokenizer.ggml.tokens", "the token list is empty"));
        }
        if n > i32::MAX as usize {
            return Err(bad(path, "tokenizer.ggml.tokens", format!("{n} tokens do not fit token ids")));
        }
        let scores = match file.get("tokenizer.ggml.scores") {
            None => vec![0.0; n],
            Some(_) => file.get_f32_array("tokenizer.ggml.scores")?,
        };
        if scores.len() != n {
            return Err(bad(path, "tokenizer.ggml.scores", format!("{} scores for {n} tokens", scores.len())));
        }
        let mut attrs = match file.get("tokenizer.ggml.token_type") {
            None => vec![attr::NORMAL; n],
            Some(_) => file.get_i64_array("tokenizer.ggml.token_type")?.into_iter().map(attr_from_type).collect(),
        };
        if attrs.len() != n {
            return Err(bad(path, "tokenizer.ggml.token_type", format!("{} token types for {n} tokens", attrs.len())));
        }

        let mut texts = Vec::with_capacity(n);
        let mut ids = HashMap::with_capacity(n);
        for (i, t) in raw_texts.iter().enumerate() {
            // llama.cpp renames empty tokens so they stay addressable and never match text.
            let text = if t.is_empty() { format!("[EMPTY_{i}]") } else { t.to_string() };
            if let Some(prev) = ids.insert(text.clone(), i as u32) {
                // llama.cpp asserts on this; two ids for one text make text→id ambiguous.
                return Err(bad(path, "tokenizer.ggml.tokens", format!("token {text:?} appears twice (ids {prev} and {i})")));
            }
            texts.push(text);
        }

        let merges = if matches!(kind, Kind::Bpe(_)) { load_merges(file)? } else { Merges::default() };

        let n_u32 = n as u32;
        for (key, slot) in [
            ("tokenizer.ggml.bos_token_id", &mut special.bos),
            ("tokenizer.ggml.eos_token_id", &mut special.eos),
            ("tokenizer.ggml.eot_token_id", &mut special.eot),
            ("tokenizer.ggml.eom_token_id", &mut special.eom),
            ("tokenizer.ggml.unknown_token_id", &mut special.unk),
            ("tokenizer.ggml.seperator_token_id", &mut special.sep),
            ("tokenizer.ggml.padding_token_id", &mut special.pad),
        ] {
            // A default that the vocabulary is too small for is dropped, as in llama.cpp.
            if slot.is_some_and(|id| id >= n_u32) {
                *slot = None;
            }
            if let Some(v) = file.get(key) {
                let id = v
                    .as_u64()
                    .ok_or_else(|| bad(path, key, format!("expected an unsigned integer, found {v}")))?;
                if id >= n as u64 {
                    return Err(bad(path, key, format!("token id {id} is out of range (vocabulary has {n} tokens)")));
                }
                *slot = Some(id as u32);
            }
        }
        let mut fim = Vec::new();
        for key in ["tokenizer.ggml.fim_pad_token_id", "tokenizer.ggml.fim_rep_token_id", "tokenizer.ggml.fim_sep_token_id"] {
            // FIM ids only feed the end-of-generation set; llama.cpp ignores bad ones.
            if let Some(id) = file.get(key).and_then(Value::as_u64).filter(|&id| id < n as u64) {
                fim.push(id as u32);
            }
        }

        if let Some(v) = opt_bool(file, "tokenizer.ggml.add_bos_token")? {
            add_bos = v;
        }
        let add_eos = opt_bool(file, "tokenizer.ggml.add_eos_token")?.unwrap_or(false);
        if add_bos && special.bos.is_none() {
            return Err(bad(path, "tokenizer.ggml.add_bos_token", "is true but the vocabulary has no BOS token"));
        }
        if add_eos && special.eos.is_none() {
            return Err(bad(path, "tokenizer.ggml.add_eos_token", "is true but the vocabulary has no EOS token"));
        }

        let eog = detect_eog(&texts, &mut attrs, &mut special, fim);

        let mut special_cache: Vec<u32> = (0..n_u32)
            .filter(|&id| attrs[id as usize] & (attr::CONTROL | attr::USER_DEFINED | attr::UNKNOWN) != 0)
            .collect();
        // Stable, so equal-length tokens keep id order (llama.cpp's std::sort leaves it unspecified).
        special_cache.sort_by_key(|&id| std::cmp::Reverse(texts[id as usize].len()));

        Ok(Vocab {
            kind,
            texts,
            scores,
            attrs,
            ids,
            merges,
            special,
            add_bos,
            add_eos,
            add_space_prefix,
            clean_spaces,
            ignore_merges,
            eog,
            special_cache,
        })
    }

    pub fn n_tokens(&self) -> usize {
        self.texts.len()
    }

    pub fn attr(&self, id: u32) -> u16 {
        self.attrs.get(id as usize).copied().unwrap_or(0)
    }

    pub fn id(&self, text: &str) -> Option<u32> {
        self.ids.get(text).copied()
    }
}

fn load_merges(file: &GgufFile) -> Result<Merges, TokenizerError> {
    const KEY: &str = "tokenizer.ggml.merges";
    let list = file.get_str_array(KEY)?;
    let mut merges = Merges::default();
    merges.ranks.reserve(list.len());
    for (rank, m) in list.iter().enumerate() {
        // Split at the first space after the first byte: a merge may start with a space.
        let split = m.as_bytes().get(1..).and_then(|rest| rest.iter().position(|&b| b == b' ')).map(|i| i + 1);
        let Some(at) = split else {
            return Err(bad(file.path(), KEY, format!("merge #{rank} {m:?} has no space separating its two parts")));
        };
        let (l, r) = (merges.intern(&m[..at]), merges.intern(&m[at + 1..]));
        // The first occurrence of a pair keeps its rank, as with llama.cpp's emplace.
        merges.ranks.entry((l, r)).or_insert(rank as u32);
    }
    Ok(merges)
}

const EOT_TEXTS: &[&str] = &[
    "<|eot_id|>", "<|im_end|>", "<|end|>", "<end_of_turn>", "<|endoftext|>", "<|end_of_text|>", "<EOT>", "_<EOT>",
    "[EOT]", "<｜end▁of▁sentence｜>", "<end_of_utterance>",
];
const FIM_TEXTS: &[&str] = &[
    "<|fim_pad|>", "<fim-pad>", "<fim_pad>", "<PAD>", "[PAD]", "<|fim_repo|>", "<|repo_name|>", "<fim-repo>", "<REPO>",
    "<reponame>", "<|file_sep|>",
];
const FIM_MARKER_TEXTS: &[&str] = &[
    "<|fim_prefix|>", "<fim-prefix>", "<fim_prefix>", "<｜fim▁begin｜>", "<PRE>", "▁<PRE>", "<|code_prefix|>",
    "<|prefix|>", "<|fim_suffix|>", "<fim-suffix>", "<fim_suffix>", "<｜fim▁hole｜>", "<SUF>", "▁<SUF>",
    "<|code_suffix|>", "<|suffix|>", "<|fim_middle|>", "<fim-middle>", "<fim_middle>", "<｜fim▁end｜>", "<MID>",
    "▁<MID>", "<|code_middle|>", "<|middle|>",
];
const EOG_TEXTS: &[&str] = &[
    "<|eot_id|>", "<|im_end|>", "<|end|>", "<|return|>", "<|call|>", "<|flush|>", "<|calls|>", "<end_of_turn>",
    "<|endoftext|>", "</s>", "<|eom_id|>", "<EOT>", "_<EOT>", "[EOT]", "[EOS]", "<|end_of_text|>", "<end_of_utterance>",
    "<eos>", "<turn|>", "<|tool_response>", "<｜end▁of▁sentence｜>", "[e~[",
];

/// llama.cpp's end-of-generation set: ids named in metadata plus tokens recognized by
/// their text (converters do not record EOT/EOM for most models). Recognized tokens are
/// forced to CONTROL so they never detokenize as text unless asked.
fn detect_eog(texts: &[String], attrs: &mut [u16], special: &mut SpecialIds, mut fim: Vec<u32>) -> BTreeSet<u32> {
    let find = |t: &[&str]| texts.iter().position(|x| t.contains(&x.as_str())).map(|i| i as u32);
    fn make_control(id: u32, attrs: &mut [u16]) {
        attrs[id as usize] |= attr::CONTROL;
    }
    if special.eot.is_none() {
        special.eot = find(EOT_TEXTS);
        if let Some(id) = special.eot {
            make_control(id, attrs);
        }
    }
    if special.eom.is_none() {
        special.eom = find(&["<|eom_id|>"]);
        if let Some(id) = special.eom {
            make_control(id, attrs);
        }
    }
    // FIM pad/repo/file-separator tokens end generation in llama.cpp when found by text;
    // all FIM markers become CONTROL, which decides whether parse_special matches them.
    for (i, t) in texts.iter().enumerate() {
        if FIM_TEXTS.contains(&t.as_str()) {
            make_control(i as u32, attrs);
            fim.push(i as u32);
        } else if FIM_MARKER_TEXTS.contains(&t.as_str()) {
            make_control(i as u32, attrs);
        }
    }
    for (i, t) in texts.iter().enumerate() {
        if attrs[i] & attr::CONTROL != 0 && t.contains("unused") {
            attrs[i] |= attr::UNUSED;
        }
    }
    let mut eog: BTreeSet<u32> = fim.into_iter().collect();
    for (i, t) in texts.iter().enumerate() {
        if EOG_TEXTS.contains(&t.as_str()) {
            eog.insert(i as u32);
            make_control(i as u32, attrs);
        }
        // gpt-oss: always render these channel markers.
        if matches!(t.as_str(), "<|channel|>" | "<|message|>" | "<|start|>" | "<|constrain|>") {
            attrs[i] = attr::USER_DEFINED;
        }
    }
    eog.extend([special.eos, special.eot, special.eom].into_iter().flatten());
    let with_text = |eog: &BTreeSet<u32>, t: &str| eog.iter().copied().find(|&id| texts[id as usize] == t);
    // Harmony / solar-open: "<|end|>" separates messages there and must not stop generation.
    let has = |eog: &BTreeSet<u32>, t: &str| with_text(eog, t).is_some();
    if let Some(end) = with_text(&eog, "<|end|>") {
        let call = has(&eog, "<|call|>") || has(&eog, "<|calls|>");
        if call && (has(&eog, "<|return|>") || has(&eog, "<|flush|>")) {
            eog.remove(&end);
            attrs[end as usize] = attr::USER_DEFINED;
        }
    }
    // Gemma 4 and PLaMo use "</s>" as an ordinary token.
    if let Some(s) = with_text(&eog, "</s>") {
        if has(&eog, "<|tool_response>") || has(&eog, "<|plamo:eos|>") {
            eog.remove(&s);
            attrs[s as usize] = attr::NORMAL;
        }
    }
    eog
}
