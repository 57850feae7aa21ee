//! Incremental detokenization for streaming output.

use super::Tokenizer;

/// Turns a stream of ids into text that is always valid UTF-8: a character split across
/// tokens (an emoji spelled as four byte tokens, say) is held back until it is complete.
/// Bytes that can never become valid UTF-8 are replaced by U+FFFD right away, so one bad
/// token cannot stall the stream.
///
/// The concatenated output equals `token_to_piece(id, !skip_special)` for every id,
/// decoded lossily: unlike [`Tokenizer::decode`] it keeps the leading space of the first
/// piece and does not clean up spaces, because in generation the first id continues a
/// prompt rather than starting a text.
pub struct StreamDecoder<'a> {
    tok: &'a Tokenizer,
    skip_special: bool,
    pending: Vec<u8>,
}

impl<'a> StreamDecoder<'a> {
    pub fn new(tok: &'a Tokenizer, skip_special: bool) -> Self {
        StreamDecoder { tok, skip_special, pending: Vec::new() }
    }

    /// The text that `id` completes; empty while a character is still incomplete.
    pub fn push(&mut self, id: u32) -> String {
        self.pending.extend(self.tok.token_to_piece(id, !self.skip_special));
        let mut out = String::new();
        loop {
            match std::str::from_utf8(&self.pending) {
                Ok(s) => {
                    out.push_str(s);
                    self.pending.clear();
                    return out;
                }
                Err(e) => {
                    let valid = e.valid_up_to();
                    // Both slices are known valid UTF-8 / the invalid tail from the error.
                    out.push_str(&String::from_utf8_lossy(&self.pending[..valid]));
                    match e.error_len() {
                        // An incomplete sequence at the end: wait for more bytes.
                        None => {
                            self.pending.drain(..valid);
                            return out;
                        }
                        Some(bad) => {
                            out.push('\u{FFFD}');
                            self.pending.drain(..valid + bad);
                        }
                    }
                }
            }
        }
    }

    /// Flushes bytes still held back (an unfinished character becomes U+FFFD).
    pub fn finish(&mut self) -> String {
        let out = String::from_utf8_lossy(&self.pending).into_owned();
        self.pending.clear();
        out
    }
}
