//! Cutting a stream of text (the chat model's tokens) into sentences as soon as each one is
//! certainly complete, so speech can start while the rest is still being generated.
//!
//! The phonemizer splits sentences again with Piper's own rules, so this cutter only has to
//! avoid cutting too early (inside "Dr. Smith", "e.g. this", "3.14", "wait... what") and
//! never cut a word; cutting a little late costs only latency. A cut happens:
//! * after `.`, `!` or `?` (a run of them, plus closing quotes and brackets) followed by
//!   whitespace — for `.`, once the next word shows it is not a lowercase continuation and
//!   the word before is not a known abbreviation, an initial or a dotted acronym;
//! * at a blank line (a paragraph end, with or without punctuation);
//! * in a run longer than the length cap, at its last clause boundary (`, ; : – —`) or else
//!   its last space, so a sentence with no full stop still starts speaking.
//!
//! An ellipsis never cuts: Piper glues the clause it ends to the next one.

/// Default length cap in bytes: about 40 words, 12 s of speech.
pub const DEFAULT_MAX_LEN: usize = 300;

/// Words that end in a full stop without ending a sentence (compared without case).
const ABBREVIATIONS: &[&str] = &[
    "mr", "mrs", "ms", "dr", "prof", "sr", "jr", "st", "mt", "vs", "cf", "fig", "figs", "approx",
    "vol", "ch", "sec", "pp", "inc", "ltd", "co", "corp", "dept", "gen", "gov", "lt", "col", "capt", "sgt", "rev",
    "hon", "ave", "blvd", "rd", "jan", "feb", "mar", "apr", "jun", "jul", "aug", "sep", "sept", "oct", "nov",
    "dec", "est", "ca",
];

/// Closing marks that belong to the sentence before them (`"No." He left.`).
fn is_closer(c: char) -> bool {
    matches!(c, '"' | '\'' | ')' | ']' | '}' | '”' | '’' | '»')
}

/// Text in, sentences out.
#[derive(Debug, Clone)]
pub struct SentenceCutter {
    buf: String,
    /// Bytes of `buf` known to hold no cut (resumed from here on the next push).
    scanned: usize,
    max_len: usize,
}

impl Default for SentenceCutter {
    fn default() -> Self {
        SentenceCutter::new()
    }
}

impl SentenceCutter {
    pub fn new() -> SentenceCutter {
        SentenceCutter::with_max_len(DEFAULT_MAX_LEN)
    }

    /// A cutter whose length cap is `max_len` bytes (at least 16).
    pub fn with_max_len(max_len: usize) -> SentenceCutter {
        SentenceCutter { buf: String::new(), scanned: 0, max_len: max_len.max(16) }
    }

    /// Adds the next piece of text and returns the sentences it completed, trimmed and
    /// non-empty, in order.
    pub fn push(&mut self, piece: &str) -> Vec<String> {
        self.buf.push_str(piece);
        let mut out = Vec::new();
        while let Some(end) = self.next_cut() {
            let rest = self.buf[end..].trim_start().to_string();
            self.buf.truncate(end);
            let sentence = std::mem::replace(&mut self.buf, rest);
            self.scanned = 0;
            let sentence = sentence.trim();
            if !sentence.is_empty() {
                out.push(sentence.to_string());
            }
        }
        out
    }

    /// The end of the stream: whatever is left, as the last sentence.
    pub fn finish(&mut self) -> Option<String> {
        let rest = std::mem::take(&mut self.buf);
        self.scanned = 0;
        let rest = rest.trim();
        (!rest.is_empty()).then(|| rest.to_string())
    }

    /// Text held back, waiting for the end of its sentence.
    pub fn pending(&self) -> &str {
        &self.buf
    }

    /// The byte offset just past the first certain sentence end in `buf`, if any.
    fn next_cut(&mut self) -> Option<usize> {
        let buf = self.buf.as_str();
        let mut i = self.scanned;
        while let Some(c) = buf[i..].chars().next() {
            match c {
                '.' | '!' | '?' | '…' => match terminator_at(buf, i) {
                    Decision::Cut(end) => return Some(end),
                    Decision::NotEnd(next) => i = next,
                    Decision::Undecided => {
                        self.scanned = i;
                        return self.length_cut();
                    }
                },
                '\n' if blank_line_before(buf, i) => return Some(i + 1),
                _ => i += c.len_utf8(),
            }
        }
        self.scanned = buf.len();
        self.length_cut()
    }

    /// A cut for a run over the length cap: at its last clause boundary, else its last
    /// space; a single "word" four times the cap (no speech anyway) is cut where it stands.
    fn length_cut(&self) -> Option<usize> {
        let buf = self.buf.as_str();
        if buf.len() <= self.max_len {
            return None;
        }
        let head = &buf[..floor_char_boundary(buf, self.max_len)];
        let clause = head.char_indices().rev().find(|&(i, c)| {
            matches!(c, ',' | ';' | ':' | '–' | '—') && head[i + c.len_utf8()..].starts_with(char::is_whitespace)
        });
        if let Some((i, c)) = clause {
            return Some(i + c.len_utf8());
        }
        if let Some(i) = head.rfind(char::is_whitespace) {
            if !head[..i].trim().is_empty() {
                return Some(i);
            }
        }
        if buf.len() > 4 * self.max_len {
            return Some(floor_char_boundary(buf, 4 * self.max_len));
        }
        None
    }
}

enum Decision {
    /// A sentence ends just before this byte offset.
    Cut(usize),
    /// Not a sentence end; scanning resumes at this byte offset.
    NotEnd(usize),
    /// Depends on text not yet pushed.
    Undecided,
}

/// Whether the run of terminators starting at byte `start` ends a sentence.
fn terminator_at(buf: &str, start: usize) -> Decision {
    let run: String = buf[start..].chars().take_while(|c| matches!(c, '.' | '!' | '?' | '…')).collect();
    let mut end = start + run.len();
    end += buf[end..].chars().take_while(|&c| is_closer(c)).map(char::len_utf8).sum::<usize>();
    let Some(after) = buf[end..].chars().next() else {
        return Decision::Undecided;
    };
    if !after.is_whitespace() {
        // "3.14", "e.g.x", "U.S.A": punctuation inside a token.
        return Decision::NotEnd(end);
    }
    if run.contains("..") || run.contains('…') {
        return Decision::NotEnd(end);
    }
    if run.contains(['!', '?']) {
        return Decision::Cut(end);
    }
    // A lone full stop: look at the word before it and the one after.
    let gap = &buf[end..];
    let next_word = gap.trim_start();
    if next_word.is_empty() {
        // A line break after a full stop ends the sentence without waiting for the next word.
        return if gap.contains('\n') { Decision::Cut(end) } else { Decision::Undecided };
    }
    let word_before = buf[..start]
        .rsplit(|c: char| c.is_whitespace())
        .next()
        .unwrap_or("")
        .trim_start_matches(|c: char| !c.is_alphanumeric());
    let next_starts_lowercase = next_word.chars().next().is_some_and(char::is_lowercase);
    // "No. 5" abbreviates "number"; "said no. Then" does not.
    let numbered = matches!(word_before, "No" | "Nos") && next_word.starts_with(|c: char| c.is_ascii_digit());
    if next_starts_lowercase || numbered || is_abbreviation(word_before) {
        return Decision::NotEnd(end);
    }
    Decision::Cut(end)
}

/// "Dr", "e.g", "U.S", "J" (an initial): a full stop after these does not end a sentence.
fn is_abbreviation(word: &str) -> bool {
    // Dotted letters ("e.g", "U.S"), not dotted numbers ("2.718").
    if word.contains('.') {
        return word.chars().all(|c| c == '.' || c.is_alphabetic());
    }
    let mut chars = word.chars();
    if let (Some(c), None) = (chars.next(), chars.next()) {
        return c.is_uppercase();
    }
    ABBREVIATIONS.iter().any(|a| a.eq_ignore_ascii_case(word))
}

/// Whether the `\n` at byte `i` closes a blank line, with text before it to cut off.
fn blank_line_before(buf: &str, i: usize) -> bool {
    let before = &buf[..i];
    let line_start = before.trim_end_matches(|c: char| c.is_whitespace() && c != '\n');
    line_start.ends_with('\n') && !line_start.trim().is_empty()
}

fn floor_char_boundary(s: &str, mut i: usize) -> usize {
    i = i.min(s.len());
    while !s.is_char_boundary(i) {
        i -= 1;
    }
    i
}

/// Cuts a whole text at once (the same rules; the last sentence needs no final punctuation).
pub fn split_sentences(text: &str) -> Vec<String> {
    let mut cutter = SentenceCutter::new();
    let mut out = cutter.push(text);
    out.extend(cutter.finish());
    out
}
