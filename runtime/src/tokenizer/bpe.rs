//! Byte-level BPE (`tokenizer.ggml.model = "gpt2"`): pre-tokenize, map bytes to GPT-2's
//! printable alphabet, then apply merges lowest rank first within each word.

use std::cmp::Ordering;
use std::collections::BinaryHeap;

use super::pretokenize::PreTokenizer;
use super::unicode::byte_encode;
use super::vocab::Vocab;

struct Symbol {
    start: usize,
    len: usize,
    prev: Option<usize>,
    next: Option<usize>,
}

struct Bigram {
    left: usize,
    right: usize,
    rank: u32,
    left_len: usize,
    right_len: usize,
}

impl PartialEq for Bigram {
    fn eq(&self, other: &Self) -> bool {
        self.cmp(other) == Ordering::Equal
    }
}
impl Eq for Bigram {}
impl PartialOrd for Bigram {
    fn partial_cmp(&self, other: &Self) -> Option<Ordering> {
        Some(self.cmp(other))
    }
}
impl Ord for Bigram {
    /// Max-heap order: lowest rank first, then the leftmost pair.
    fn cmp(&self, other: &Self) -> Ordering {
        other.rank.cmp(&self.rank).then_with(|| other.left.cmp(&self.left))
    }
}

/// Appends the ids for one raw-text fragment (no special tokens inside) to `out`.
pub(super) fn tokenize(vocab: &Vocab, pre: PreTokenizer, text: &str, out: &mut Vec<u32>) {
    for word in pre.split(text) {
        let word = byte_encode(word);
        tokenize_word(vocab, &word, out);
    }
}

fn tokenize_word(vocab: &Vocab, word: &str, out: &mut Vec<u32>) {
    // Llama 3 style: a word that is itself a token is not merged (merges might build it
    // differently, and HF's ignore_merges says the vocabulary wins).
    if vocab.ignore_merges {
        if let Some(id) = vocab.id(word) {
            out.push(id);
            return;
        }
    }
    let mut symbols: Vec<Symbol> = Vec::new();
    for (i, (start, c)) in word.char_indices().enumerate() {
        let end = start + c.len_utf8();
        symbols.push(Symbol { start, len: c.len_utf8(), prev: i.checked_sub(1), next: (end < word.len()).then_some(i + 1) });
    }
    let mut queue = BinaryHeap::new();
    let add = |symbols: &[Symbol], queue: &mut BinaryHeap<Bigram>, left: Option<usize>, right: Option<usize>| {
        let (Some(left), Some(right)) = (left, right) else { return };
        let (l, r) = (&symbols[left], &symbols[right]);
        let lt = &word[l.start..l.start + l.len];
        let rt = &word[r.start..r.start + r.len];
        if let Some(rank) = vocab.merges.rank(lt, rt) {
            queue.push(Bigram { left, right, rank, left_len: l.len, right_len: r.len });
        }
    };
    for i in 1..symbols.len() {
        add(&symbols, &mut queue, Some(i - 1), Some(i));
    }
    while let Some(b) = queue.pop() {
        let (l, r) = (&symbols[b.left], &symbols[b.right]);
        // Symbols only grow to the right, so unchanged lengths mean unchanged texts.
        if l.len == 0 || r.len == 0 || l.len != b.left_len || r.len != b.right_len {
            continue;
        }
        let right_next = r.next;
        symbols[b.left].len += symbols[b.right].len;
        symbols[b.right].len = 0;
        symbols[b.left].next = right_next;
        if let Some(n) = right_next {
            symbols[n].prev = Some(b.left);
        }
        add(&symbols, &mut queue, symbols[b.left].prev, Some(b.left));
        add(&symbols, &mut queue, Some(b.left), right_next);
    }
    for s in symbols.iter().filter(|s| s.len > 0) {
        let piece = &word[s.start..s.start + s.len];
        match vocab.id(piece) {
            Some(id) => out.push(id),
            None => {
                // A piece the merges built but the vocabulary lacks. llama.cpp looks up each
                // byte of the *encoded* piece as a one-byte string, so only ASCII bytes can
                // match and the rest are dropped; we keep that for identical ids.
                for b in piece.bytes() {
                    if let Some(id) = std::str::from_utf8(&[b]).ok().and_then(|s| vocab.id(s)) {
                        out.push(id);
                    }
                }
            }
        }
    }
}
