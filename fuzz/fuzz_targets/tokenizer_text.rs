//! Real vocabularies (SentencePiece and each BPE pre-tokenizer) on arbitrary text: special
//! token partition, pre-tokenization, merges and byte fallback, then decoding back.
#![no_main]

use libfuzzer_sys::fuzz_target;

// Loading five vocabularies takes seconds under ASan: do it before the per-input timer runs.
fuzz_target!(init: { nexus_fuzz::real_vocabs(); }, |data: &[u8]| {
    let vocabs = nexus_fuzz::real_vocabs();
    let Some((&sel, text)) = data.split_first() else { return };
    let tok = &vocabs[sel as usize % vocabs.len()];
    let text = String::from_utf8_lossy(text);
    let ids = tok.encode(&text, sel & 0x80 != 0, sel & 0x40 != 0);
    assert!(ids.iter().all(|&id| (id as usize) < tok.n_vocab()), "encode produced an id outside the vocabulary");
    let _ = tok.decode(&ids, sel & 0x20 != 0);
});
