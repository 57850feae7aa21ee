//! Real vocabularies (SentencePiece and each BPE pre-tokenizer) on arbitrary text: special
//! token partition, pre-tokenization, merges and byte fallback, then decoding back.

/// Loading five vocabularies takes seconds under ASan: done before the per-input timer runs.
pub fn init() {
    crate::real_vocabs();
}

pub fn run(data: &[u8]) {
    let vocabs = crate::real_vocabs();
    let Some((&sel, text)) = data.split_first() else { return };
    let tok = &vocabs[sel as usize % vocabs.len()];
    let text = String::from_utf8_lossy(text);
    let ids = tok.encode(&text, sel & 0x80 != 0, sel & 0x40 != 0);
    assert!(ids.iter().all(|&id| (id as usize) < tok.n_vocab()), "encode produced an id outside the vocabulary");
    let _ = tok.decode(&ids, sel & 0x20 != 0);
}
