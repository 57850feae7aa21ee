//! SentencePiece-style tokenization (`tokenizer.ggml.model = "llama"`): greedy merging of
//! the adjacent pair whose concatenation is the highest-scoring token, then byte fallback.

use std::cmp::Ordering;
use std::collections::BinaryHeap;

use super::vocab::Vocab;

struct Symbol {
    /// Byte range of the symbol's text in the input; `len == 0` once merged away.
    start: usize,
    len: usize,
    prev: Option<usize>,
    next: Option<usize>,
}

struct Bigram {
    left: usize,
    right: usize,
    score: f32,
    size: usize,
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
    /// Max-heap order: higher score first, then the leftmost pair (llama.cpp's comparator).
    fn cmp(&self, other: &Self) -> Ordering {
        self.score.total_cmp(&other.score).then_with(|| other.left.cmp(&self.left))
    }
}

/// Appends the ids for `text` (spaces already escaped as "▁") to `out`.
pub(super) fn tokenize(vocab: &Vocab, text: &str, out: &mut Vec<u32>) {
    let mut symbols: Vec<Symbol> = Vec::new();
    for (i, (start, c)) in text.char_indices().enumerate() {
        let end = start + c.len_utf8();
        symbols.push(Symbol {
            start,
            len: c.len_utf8(),
            prev: i.checked_sub(1),
            next: (end < text.len()).then_some(i + 1),
        });
    }
    if symbols.is_empty() {
        return;
    }
    let mut queue = BinaryHeap::new();
    let try_add = |symbols: &[Symbol], queue: &mut BinaryHeap<Bigram>, left: Option<usize>, right: Option<usize>| {
        let (Some(left), Some(right)) = (left, right) else { return };
        let (l, r) = (&symbols[left], &symbols[right]);
        let piece = &text[l.start..r.start + r.len];
        if let Some(id) = vocab.id(piece) {
            queue.push(Bigram { left, right, score: vocab.scores[id as usize], size: piece.len() });
        }
    };
    for i in 1..symbols.len() {
        try_add(&symbols, &mut queue, Some(i - 1), Some(i));
    }
    while let Some(b) = queue.pop() {
        let (l, r) = (&symbols[b.left], &symbols[b.right]);
        // Stale: one side was merged into something else since this pair was queued.
        if l.len == 0 || r.len == 0 || l.len + r.len != b.size {
            continue;
        }
        let right_next = r.next;
        symbols[b.left].len += symbols[b.right].len;
        symbols[b.right].len = 0;
        symbols[b.left].next = right_next;
        if let Some(n) = right_next {
            symbols[n].prev = Some(b.left);
        }
        try_add(&symbols, &mut queue, symbols[b.left].prev, Some(b.left));
        try_add(&symbols, &mut queue, Some(b.left), right_next);
    }
    let mut cur = Some(0);
    while let Some(i) = cur {
        let s = &symbols[i];
        let piece = &text[s.start..s.start + s.len];
        // A merged symbol is always a token (pairs are only queued when they are), so
        // llama.cpp's re-segmentation through its merge history never finds anything the
        // byte fallback below would not; single characters missing from the vocabulary
        // are the only pieces that fall back.
        match vocab.id(piece) {
            Some(id) => out.push(id),
            None => {
                for b in piece.bytes() {
                    if let Some(id) = byte_token(vocab, b) {
                        out.push(id);
                    }
                }
            }
        }
        cur = s.next;
    }
}

/// The `<0xXX>` token for a byte, else a one-byte token, else UNK. (llama.cpp throws when
/// both are missing; a vocabulary without byte tokens should degrade, not abort.)
pub(super) fn byte_token(vocab: &Vocab, b: u8) -> Option<u32> {
    let hex = format!("<0x{b:02X}>");
    vocab
        .id(&hex)
        .or_else(|| std::str::from_utf8(&[b]).ok().and_then(|s| vocab.id(s)))
        .or(vocab.special.unk)
}
