//! Detokenization of arbitrary id streams (ids past the vocabulary included) with
//! `Tokenizer::decode` and the streaming `StreamDecoder`, whose output must equal the lossy
//! one-shot decoding of the same pieces.

/// Loading five vocabularies takes seconds under ASan: done before the per-input timer runs.
pub fn init() {
    crate::real_vocabs();
}

pub fn run(data: &[u8]) {
    let vocabs = crate::real_vocabs();
    let Some((&sel, rest)) = data.split_first() else { return };
    let tok = &vocabs[sel as usize % vocabs.len()];
    let n = tok.n_vocab() as u32;
    // Mostly in-range ids (taken modulo a little more than the vocabulary), so that byte
    // tokens and multi-byte characters split across tokens come up often.
    let ids: Vec<u32> = rest
        .chunks(4)
        .map(|c| {
            let mut b = [0u8; 4];
            b[..c.len()].copy_from_slice(c);
            let raw = u32::from_le_bytes(b);
            if sel & 0x40 != 0 { raw } else { raw % (n + 16) }
        })
        .collect();
    let skip_special = sel & 0x20 != 0;
    let _ = tok.decode(&ids, skip_special);
    crate::check_stream(tok, &ids, skip_special);
}
