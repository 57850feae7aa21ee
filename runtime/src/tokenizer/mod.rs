//! Text ↔ token ids for GGUF vocabularies, matching llama.cpp's llama-vocab.cpp id for id.
//!
//! Two vocabulary types are supported: SentencePiece-style (`tokenizer.ggml.model =
//! "llama"`, Llama 2, Mistral, ...) and byte-level BPE (`"gpt2"`, Llama 3, Qwen 2, SmolLM,
//! GPT-2). Encoding first splits out special-token texts ([`special`]), then tokenizes
//! each remaining fragment; decoding follows llama.cpp's token_to_piece/detokenize.

mod bpe;
mod error;
mod pretokenize;
mod special;
mod spm;
mod stream;
mod unicode;
mod unicode_data;
mod vocab;

#[cfg(test)]
mod tests;
#[cfg(test)]
mod tests_vectors;

pub use error::TokenizerError;
pub use pretokenize::PreTokenizer;
pub use stream::StreamDecoder;

use crate::gguf::GgufFile;
use special::Fragment;
use vocab::{attr, Kind, Vocab};

/// A loaded vocabulary. Cheap to share by reference; all methods take `&self`.
#[derive(Debug)]
pub struct Tokenizer {
    vocab: Vocab,
}

impl Tokenizer {
    pub fn from_gguf(file: &GgufFile) -> Result<Tokenizer, TokenizerError> {
        Ok(Tokenizer { vocab: Vocab::load(file)? })
    }

    /// llama.cpp's `llama_tokenize(text, add_special, parse_special)`: `add_special` adds
    /// BOS/EOS as the vocabulary asks (`add_bos`/`add_eos`); `parse_special` lets
    /// control-token texts such as "<|im_start|>" in `text` become their single ids
    /// (user-defined tokens are always recognized).
    pub fn encode(&self, text: &str, add_special: bool, parse_special: bool) -> Vec<u32> {
        let v = &self.vocab;
        let mut out = Vec::new();
        let frags = special::partition(v, text, parse_special);
        if add_special && v.add_bos {
            out.extend(v.special.bos);
        }
        match v.kind {
            Kind::Spm => {
                // SentencePiece adds a dummy prefix space to the start of the text and,
                // llama.cpp-style, after every special token.
                let mut prev_special = true;
                let mut buf = String::new();
                for f in frags {
                    match f {
                        Fragment::Text { start, end } => {
                            buf.clear();
                            if v.add_space_prefix && prev_special {
                                buf.push('▁');
                            }
                            for c in text[start..end].chars() {
                                buf.push(if c == ' ' { '▁' } else { c });
                            }
                            spm::tokenize(v, &buf, &mut out);
                            prev_special = false;
                        }
                        Fragment::Token(id) => {
                            out.push(id);
                            prev_special = true;
                        }
                    }
                }
            }
            Kind::Bpe(pre) => {
                for f in frags {
                    match f {
                        Fragment::Text { start, end } => bpe::tokenize(v, pre, &text[start..end], &mut out),
                        Fragment::Token(id) => out.push(id),
                    }
                }
            }
        }
        if add_special && v.add_eos {
            out.extend(v.special.eos);
        }
        out
    }

    /// The bytes of one token as llama.cpp's `token_to_piece(id, special)` gives them
    /// (no leading-space stripping). Control and unknown tokens are empty unless
    /// `special`; ids outside the vocabulary are empty.
    pub fn token_to_piece(&self, id: u32, special: bool) -> Vec<u8> {
        self.piece(id, special, false)
    }

    fn piece(&self, id: u32, special: bool, strip_space: bool) -> Vec<u8> {
        let v = &self.vocab;
        let Some(text) = v.texts.get(id as usize) else { return Vec::new() };
        let a = v.attr(id);
        let special_attr = attr::UNKNOWN | attr::CONTROL;
        if !special && a & special_attr != 0 {
            return Vec::new();
        }
        let mut bytes = if a & (special_attr | attr::USER_DEFINED) != 0 {
            text.as_bytes().to_vec()
        } else if a & attr::NORMAL != 0 {
            match v.kind {
                Kind::Spm => text.replace('▁', " ").into_bytes(),
                Kind::Bpe(_) => gpt2_decode(text),
            }
        } else if a & attr::BYTE != 0 {
            vec![byte_token_value(text)]
        } else {
            // UNUSED and undefined types render as nothing, as in llama.cpp.
            Vec::new()
        };
        if strip_space && bytes.first() == Some(&b' ') {
            bytes.remove(0);
        }
        bytes
    }

    /// llama.cpp's `detokenize`. With `skip_special`, a leading BOS / trailing EOS that
    /// the vocabulary adds itself is dropped and control tokens render as nothing;
    /// without it, control tokens render as their text. Invalid UTF-8 becomes U+FFFD.
    pub fn decode(&self, ids: &[u32], skip_special: bool) -> String {
        let v = &self.vocab;
        let mut ids = ids;
        // The SentencePiece dummy prefix is removed from the first piece, unless a
        // skipped BOS came first (llama.cpp's rule, kept for identical text).
        let mut strip_space = v.add_space_prefix;
        if skip_special && v.add_bos && ids.first().is_some_and(|&id| Some(id) == v.special.bos) {
            strip_space = false;
            ids = &ids[1..];
        }
        if skip_special && v.add_eos && ids.last().is_some_and(|&id| Some(id) == v.special.eos) {
            ids = &ids[..ids.len() - 1];
        }
        let mut bytes = Vec::new();
        for &id in ids {
            bytes.extend(self.piece(id, !skip_special, strip_space));
            strip_space = false;
        }
        if v.clean_spaces {
            clean_up_spaces(&mut bytes);
        }
        String::from_utf8_lossy(&bytes).into_owned()
    }

    pub fn n_vocab(&self) -> usize {
        self.vocab.n_tokens()
    }
    pub fn bos(&self) -> Option<u32> {
        self.vocab.special.bos
    }
    pub fn eos(&self) -> Option<u32> {
        self.vocab.special.eos
    }
    pub fn eot(&self) -> Option<u32> {
        self.vocab.special.eot
    }
    pub fn eom(&self) -> Option<u32> {
        self.vocab.special.eom
    }
    pub fn pad(&self) -> Option<u32> {
        self.vocab.special.pad
    }
    pub fn sep(&self) -> Option<u32> {
        self.vocab.special.sep
    }
    pub fn unk(&self) -> Option<u32> {
        self.vocab.special.unk
    }
    pub fn add_bos(&self) -> bool {
        self.vocab.add_bos
    }
    pub fn add_eos(&self) -> bool {
        self.vocab.add_eos
    }
    /// End of generation: EOS, EOT, EOM and the tokens llama.cpp recognizes by text
    /// ("<|im_end|>", "<|eot_id|>", "<|endoftext|>", "<end_of_turn>", FIM pad/sep, ...).
    pub fn is_eog(&self, id: u32) -> bool {
        self.vocab.eog.contains(&id)
    }
    /// True for control tokens (BOS, "<|im_start|>", ...), which decode to nothing by default.
    pub fn is_control(&self, id: u32) -> bool {
        self.vocab.attr(id) & attr::CONTROL != 0
    }
    pub fn token_text(&self, id: u32) -> Option<&str> {
        self.vocab.texts.get(id as usize).map(String::as_str)
    }
    pub fn token_id(&self, text: &str) -> Option<u32> {
        self.vocab.id(text)
    }
    /// "llama" (SentencePiece) or "gpt2" (byte-level BPE), as in `tokenizer.ggml.model`.
    pub fn model_kind(&self) -> &str {
        match self.vocab.kind {
            Kind::Spm => "llama",
            Kind::Bpe(_) => "gpt2",
        }
    }
    /// The BPE pre-tokenizer in use; `None` for SentencePiece vocabularies.
    pub fn pre_tokenizer(&self) -> Option<PreTokenizer> {
        match self.vocab.kind {
            Kind::Spm => None,
            Kind::Bpe(p) => Some(p),
        }
    }
}

/// "<0xAB>" → 0xAB. llama.cpp parses the two hex digits with strtol, so a malformed
/// byte token yields what strtol would: the leading valid hex digits, else 0.
fn byte_token_value(text: &str) -> u8 {
    let digits = text.as_bytes().get(3..5).unwrap_or(&[]);
    let mut v: u32 = 0;
    for &d in digits {
        match (d as char).to_digit(16) {
            Some(x) => v = v * 16 + x,
            None => break,
        }
    }
    v as u8
}

/// GPT-2 alphabet → bytes. A char outside the alphabet cannot come from a real
/// vocabulary; llama.cpp spells it out as "[UNK_BYTE_0x..<token text>]" and so do we, but
/// with the token text only after the first such char: llama.cpp repeats it for each, which
/// makes a hostile 100 kB token decode to gigabytes (found in the issue-9 review).
fn gpt2_decode(text: &str) -> Vec<u8> {
    let mut out = Vec::with_capacity(text.len());
    let mut text_written = false;
    for c in text.chars() {
        match unicode::char_to_byte(c) {
            Some(b) => out.push(b),
            None => {
                out.extend_from_slice(b"[UNK_BYTE_0x");
                let mut buf = [0u8; 4];
                for b in c.encode_utf8(&mut buf).bytes() {
                    out.extend_from_slice(format!("{b:02x}").as_bytes());
                }
                if !text_written {
                    out.extend_from_slice(text.as_bytes());
                    text_written = true;
                }
                out.push(b']');
            }
        }
    }
    out
}

/// HF's `clean_up_tokenization_spaces`, in llama.cpp's three passes: drop the space
/// before ?!., ; join " ' " into "'"; drop the space before 's 'm 're 've.
fn clean_up_spaces(text: &mut Vec<u8>) {
    let pass = |text: &mut Vec<u8>, f: &mut dyn FnMut(&mut Vec<u8>, usize, &mut usize) -> usize| {
        let n = text.len();
        if n == 0 {
            return;
        }
        let mut total = 1;
        let mut i = 1;
        while i < n {
            i = f(text, i, &mut total);
            i += 1;
        }
        text.truncate(total);
    };
    pass(text, &mut |t, i, total| {
        let x = t[i];
        if t[i - 1] == b' ' && matches!(x, b'?' | b'!' | b'.' | b',') {
            *total -= 1;
        }
        t[*total] = x;
        *total += 1;
        i
    });
    pass(text, &mut |t, mut i, total| {
        let x = t[i];
        let n = t.len();
        if x == b'\'' && i + 1 < n && t[i - 1] == b' ' && t[i + 1] == b' ' {
            *total -= 1;
            // llama.cpp overwrites the skipped space with NUL, which the next character
            // then sees as its predecessor.
            i += 1;
            t[i] = 0;
        }
        t[*total] = x;
        *total += 1;
        i
    });
    pass(text, &mut |t, i, total| {
        let x = t[i];
        let n = t.len();
        if t[i - 1] == b' ' && x == b'\'' && i + 1 < n {
            let x1 = t[i + 1];
            let x2 = t.get(i + 2).copied().filter(|_| i + 2 < n);
            if matches!(x1, b's' | b'm') || matches!((x1, x2), (b'r', Some(b'e')) | (b'v', Some(b'e'))) {
                *total -= 1;
            }
        }
        t[*total] = x;
        *total += 1;
        i
    });
}
