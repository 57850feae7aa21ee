//! Splitting input text around special-token texts before ordinary tokenization
//! (llama.cpp's tokenizer_st_partition).

use super::vocab::{attr, Vocab};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Fragment {
    /// A byte range of the input still to be tokenized.
    Text { start: usize, end: usize },
    Token(u32),
}

/// Special tokens are searched one at a time, longest text first, each splitting every
/// remaining text fragment at all of its occurrences. Longest-first means "<|im_end|>"
/// wins over a hypothetical "<|im" at the same place. USER_DEFINED tokens are split out
/// even without `parse_special`, as HF tokenizers do with added tokens.
pub(super) fn partition(vocab: &Vocab, text: &str, parse_special: bool) -> Vec<Fragment> {
    let mut frags = Vec::new();
    if text.is_empty() {
        return frags;
    }
    frags.push(Fragment::Text { start: 0, end: text.len() });
    for &id in &vocab.special_cache {
        let a = vocab.attr(id);
        if !parse_special && a & (attr::CONTROL | attr::UNKNOWN) != 0 {
            continue;
        }
        let needle = vocab.texts[id as usize].as_str();
        if needle.is_empty() {
            continue;
        }
        // Cheap pre-check: most special tokens occur nowhere in most inputs.
        if !text.contains(needle) {
            continue;
        }
        let mut next = Vec::with_capacity(frags.len() + 2);
        for f in frags {
            let Fragment::Text { mut start, end } = f else {
                next.push(f);
                continue;
            };
            while let Some(pos) = text[start..end].find(needle) {
                let m = start + pos;
                if m > start {
                    next.push(Fragment::Text { start, end: m });
                }
                next.push(Fragment::Token(id));
                start = m + needle.len();
            }
            if end > start {
                next.push(Fragment::Text { start, end });
            }
        }
        frags = next;
    }
    frags
}
