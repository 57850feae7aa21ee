//! Text to IPA phonemes, one string per sentence, the way Piper phonemizes (espeak-ng).
//!
//! Piper calls `espeak_TextToPhonemesWithTerminator` (a rhasspy fork addition) and gets each
//! clause's punctuation from it. Debian's stock espeak-ng 1.51 only has `espeak_TextToPhonemes`,
//! which returns the same clauses without their punctuation, so [`ClauseJoiner`] recovers each
//! clause's terminator from the text the call consumed (the rule was found by probing espeak-ng
//! and checked against piper-tts 1.8.0 on 3 000 random punctuation strings; see
//! `tests/fixtures/phonemes/README.md`). Then Piper's rules: drop `(lang)` switch flags, append
//! the terminator (and a space after `, : ;`), NFD-normalise, and cut sentences where espeak
//! says a sentence ended.
//!
//! The rules are plain Rust and always compiled; only the espeak-ng calls sit behind the
//! `espeak` feature (espeak-ng is GPL-3.0-or-later, so binaries that link it are GPL-bound).
//! Without the feature [`Phonemizer::new`] returns an error saying how to rebuild.

use std::sync::OnceLock;

use fancy_regex::Regex;
use unicode_normalization::UnicodeNormalization;

use super::TtsError;

/// The error of a build without espeak-ng.
pub const NO_ESPEAK: &str = "nexus was built without the `espeak` feature (espeak-ng, \
                             GPL-3.0-or-later); rebuild with --features speech";

/// An espeak-ng phonemizer for one espeak voice (e.g. `en-us`, from `vits.espeak.voice`).
///
/// espeak-ng is one global, non-thread-safe engine per process: every phonemizer shares it
/// behind a lock and selects its own voice before each text, so any number of them may live
/// on any threads.
#[derive(Debug, Clone)]
pub struct Phonemizer {
    voice: String,
}

impl Phonemizer {
    /// Initialises espeak-ng (once per process) and checks that it knows `voice`.
    pub fn new(voice: &str) -> Result<Self, TtsError> {
        #[cfg(feature = "espeak")]
        {
            super::espeak::check_voice(voice)?;
            Ok(Phonemizer { voice: voice.to_string() })
        }
        #[cfg(not(feature = "espeak"))]
        {
            let _ = voice;
            Err(TtsError::Phonemizer(NO_ESPEAK.to_string()))
        }
    }

    pub fn voice(&self) -> &str {
        &self.voice
    }

    /// The espeak-ng library's version string, e.g. "1.51".
    pub fn espeak_version() -> Result<String, TtsError> {
        #[cfg(feature = "espeak")]
        {
            super::espeak::version()
        }
        #[cfg(not(feature = "espeak"))]
        {
            Err(TtsError::Phonemizer(NO_ESPEAK.to_string()))
        }
    }

    /// One IPA string per sentence, Piper's phonemes joined (NFD, punctuation kept).
    ///
    /// Text without a letter or digit (empty, only punctuation, only emoji) is
    /// [`TtsError::NothingToSay`] before espeak sees it; Piper would have espeak read "!!!" as
    /// "exclamation" and "🙂" as "slightly smiling face". Sentences that come out with no
    /// phoneme at all (e.g. a lone "..." between sentences) are dropped, and if nothing is
    /// left the text is [`TtsError::NothingToSay`] too. NUL characters are removed (the text
    /// goes to espeak as a C string), and characters that nothing can pronounce become spaces
    /// (see [`for_espeak`]).
    pub fn phonemize(&self, text: &str) -> Result<Vec<String>, TtsError> {
        if !text.chars().any(char::is_alphanumeric) {
            return Err(TtsError::NothingToSay(format!("{text:?} has no letter or digit")));
        }
        let text = for_espeak(text);
        let sentences = self.clauses_to_sentences(&text)?;
        let sentences: Vec<String> = sentences.into_iter().filter(|s| has_phonemes(s)).collect();
        if sentences.is_empty() {
            return Err(TtsError::NothingToSay(format!("espeak-ng found nothing to say in {text:?}")));
        }
        Ok(sentences)
    }

    #[cfg(feature = "espeak")]
    fn clauses_to_sentences(&self, text: &str) -> Result<Vec<String>, TtsError> {
        let mut joiner = ClauseJoiner::default();
        super::espeak::clauses(&self.voice, text, |ipa, consumed, at_end| joiner.push(ipa, consumed, at_end))?;
        Ok(joiner.finish())
    }

    #[cfg(not(feature = "espeak"))]
    fn clauses_to_sentences(&self, _text: &str) -> Result<Vec<String>, TtsError> {
        Err(TtsError::Phonemizer(NO_ESPEAK.to_string()))
    }
}

/// Whether a sentence holds anything but spaces and the punctuation Piper keeps.
pub fn has_phonemes(sentence: &str) -> bool {
    sentence.chars().any(|c| !c.is_whitespace() && !".,:;!?".contains(c))
}

/// Piper's sentence assembly over the clauses of `espeak_TextToPhonemes`, recovering each
/// clause's terminator from the text that call consumed.
#[derive(Debug, Default)]
pub struct ClauseJoiner {
    sentences: Vec<String>,
    current: String,
    /// The first code point of the next clause, consumed by the previous call.
    lookahead: Option<char>,
}

impl ClauseJoiner {
    /// One `espeak_TextToPhonemes` result: the clause's IPA, the text the call consumed, and
    /// whether it consumed the rest of the text (the pointer came back NULL).
    pub fn push(&mut self, ipa: &str, consumed: &str, at_end: bool) {
        let (own, next_lookahead) = split_lookahead(consumed, at_end);
        let mut clause_text = String::with_capacity(own.len() + 4);
        clause_text.extend(self.lookahead);
        clause_text.push_str(own);
        self.lookahead = next_lookahead;
        let (term, ends_sentence) = terminator(&clause_text, at_end);

        let mut clause = strip_language_flags(ipa);
        clause.push_str(term);
        if matches!(term, "," | ":" | ";") {
            clause.push(' ');
        }
        self.current.extend(clause.nfd());
        if ends_sentence {
            self.sentences.push(std::mem::take(&mut self.current));
        }
    }

    /// The sentences; text after the last sentence end is a sentence too.
    pub fn finish(mut self) -> Vec<String> {
        if !self.current.is_empty() {
            self.sentences.push(self.current);
        }
        self.sentences
    }
}

/// Whitespace or Unicode punctuation (general category P*): what may follow a clause's words.
/// Whitespace as Python's `str.isspace` (Unicode White_Space plus U+001C..U+001F).
fn is_break(c: char) -> bool {
    static PUNCT: OnceLock<Option<Regex>> = OnceLock::new();
    if c.is_whitespace() || ('\u{1c}'..='\u{1f}').contains(&c) {
        return true;
    }
    if c.is_ascii() {
        return c.is_ascii_punctuation() && !"$+<=>^`|~".contains(c);
    }
    let mut buf = [0u8; 4];
    match PUNCT.get_or_init(|| Regex::new(r"^\p{P}$").ok()) {
        Some(re) => re.is_match(c.encode_utf8(&mut buf)).unwrap_or(false),
        None => false,
    }
}

/// Splits what one call consumed into the clause's own text and the look-ahead code point
/// that belongs to the next clause. espeak consumes the clause, the whitespace after it and,
/// unless it stopped right after punctuation or whitespace, one code point of the next clause
/// (which it keeps internally and phonemizes in the next call).
pub fn split_lookahead(consumed: &str, at_end: bool) -> (&str, Option<char>) {
    match consumed.chars().next_back() {
        Some(last) if !at_end && !is_break(last) => (&consumed[..consumed.len() - last.len_utf8()], Some(last)),
        _ => (consumed, None),
    }
}

/// `(terminator, ends_sentence)` of a clause's text, as `…WithTerminator` reports it in Piper:
/// the first of `. ? !` ends a sentence, `, : ;` and the dashes (as ";") don't, an ellipsis
/// ("..." or "…") gives nothing and doesn't, "。" gives nothing and does. A blank line, or a
/// clause of nothing but punctuation, ends the sentence with nothing. Without any of these the
/// clause is glued to the next one (no space), unless the text ended.
pub fn terminator(clause: &str, at_end: bool) -> (&'static str, bool) {
    let body_len = clause.trim_end_matches(is_break).len();
    let tail: Vec<char> = clause[body_len..].chars().collect();
    if body_len == 0 || has_blank_line(&tail) {
        return ("", true);
    }
    for (j, &c) in tail.iter().enumerate() {
        match c {
            '.' if tail[j..].starts_with(&['.', '.', '.']) => return ("", false),
            '.' => return (".", true),
            '?' => return ("?", true),
            '!' => return ("!", true),
            ',' => return (",", false),
            ':' => return (":", false),
            ';' => return (";", false),
            '\u{2013}' | '\u{2014}' => return (";", false),
            '\u{2026}' => return ("", false),
            '\u{3002}' => return ("", true),
            _ => {}
        }
    }
    ("", at_end)
}

/// `\n\s*\n` within a run of whitespace and punctuation.
fn has_blank_line(tail: &[char]) -> bool {
    let mut after_newline = false;
    for &c in tail {
        if c == '\n' {
            if after_newline {
                return true;
            }
            after_newline = true;
        } else if !c.is_whitespace() {
            after_newline = false;
        }
    }
    false
}

/// Removes espeak's language-switch flags such as `(fr)` (Piper's `re.sub(r"\([^)]+\)", "")`).
pub fn strip_language_flags(ipa: &str) -> String {
    let mut out = String::with_capacity(ipa.len());
    let mut rest = ipa;
    while let Some(open) = rest.find('(') {
        let after = &rest[open + 1..];
        match after.find(')') {
            Some(close) if close > 0 => {
                out.push_str(&rest[..open]);
                rest = &after[close + 1..];
            }
            _ => {
                out.push_str(&rest[..=open]);
                rest = after;
            }
        }
    }
    out.push_str(rest);
    out
}

/// The text as espeak-ng gets it: NULs and format characters (soft hyphen, bidi controls,
/// zero-width joiners, BOM, tags) removed; other controls (but tab and line breaks),
/// private-use code points, noncharacters and the Arabic presentation forms (compatibility
/// ligatures such as U+FDFD, which expand into whole phrases) replaced by a space. None of
/// these is pronounceable, and espeak-ng 1.51 reads out of bounds on some sequences of them:
/// valgrind showed invalid reads inside `espeak_TextToPhonemes` for
/// "\u{fdfd}\u{a9c1}\u{2ffb}1", and the corrupted state later gave another language's phonemes
/// or crashed the test suite.
pub fn for_espeak(text: &str) -> String {
    text.chars()
        .filter(|&c| c != '\0' && !is_format(c))
        .map(|c| if unpronounceable(c) { ' ' } else { c })
        .collect()
}

fn is_format(c: char) -> bool {
    let u = c as u32;
    matches!(u, 0x00AD | 0x061C | 0x180E | 0x200B..=0x200F | 0x202A..=0x202E | 0x2060..=0x206F | 0xFEFF)
        || matches!(u, 0xFFF9..=0xFFFB | 0x1D173..=0x1D17A | 0xE0000..=0xE007F)
}

fn unpronounceable(c: char) -> bool {
    let u = c as u32;
    (c.is_control() && !matches!(c, '\t' | '\n' | '\r'))
        || matches!(u, 0xE000..=0xF8FF | 0xF0000..=0xFFFFD | 0x100000..=0x10FFFD)
        || matches!(u, 0xFDD0..=0xFDEF)
        || (u & 0xFFFE) == 0xFFFE
        || matches!(u, 0xFB50..=0xFDFF | 0xFE70..=0xFEFE)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn joined(calls: &[(&str, &str, bool)]) -> Vec<String> {
        let mut j = ClauseJoiner::default();
        for &(ipa, consumed, at_end) in calls {
            j.push(ipa, consumed, at_end);
        }
        j.finish()
    }

    #[test]
    fn terminators_from_consumed_text() {
        // Real espeak-ng 1.51 call sequences (ipa, consumed, pointer NULL).
        let s = joined(&[("həlˈoʊ wˈɜːld", "Hello world. H", false), ("hˌaʊ", "ow?", true)]);
        assert_eq!(s, ["həlˈoʊ wˈɜːld.", "hˌaʊ?"]);
        let s = joined(&[("wˌʌnz", "ones... W", false), ("wˈaʊ", "ow!?", true)]);
        assert_eq!(s, ["wˌʌnzwˈaʊ!"]);
        // The look-ahead "4" belongs to the clause "4," even though the call returned early.
        let s = joined(&[("", "\n \n4", false), ("fˈoːɹ", ",", true)]);
        assert_eq!(s, ["", "fˈoːɹ, "]);
        let s = joined(&[("hˈaɪ", "Hi.\n\nT", false), ("ðˈɛɹ", "here", true)]);
        assert_eq!(s, ["hˈaɪ", "ðˈɛɹ"]);
    }

    #[test]
    fn terminator_rules() {
        assert_eq!(terminator("Wait – ", false), (";", false));
        assert_eq!(terminator("Hi..", true), (".", true));
        assert_eq!(terminator("Hi... ", false), ("", false));
        assert_eq!(terminator("Well\u{2026} ", false), ("", false));
        assert_eq!(terminator("你好。", false), ("", true));
        assert_eq!(terminator("!!!", true), ("", true));
        assert_eq!(terminator("He said \"no.\"", true), (".", true));
        assert_eq!(terminator("no break ", false), ("", false));
        assert_eq!(terminator("no break", true), ("", true));
    }

    #[test]
    fn language_flags_and_lookahead() {
        assert_eq!(strip_language_flags("(ru)pɾʲivʲˈet(en) ɪz"), "pɾʲivʲˈet ɪz");
        assert_eq!(strip_language_flags("a () b (c"), "a () b (c");
        assert_eq!(strip_language_flags("((en)x"), "x");
        assert_eq!(split_lookahead("Hello. Ü", false), ("Hello. ", Some('Ü')));
        assert_eq!(split_lookahead("Hello. \"", false), ("Hello. \"", None));
        assert_eq!(split_lookahead("Hello", true), ("Hello", None));
        assert!(!has_phonemes(" .,;: !?"));
        assert!(has_phonemes("ʃ."));
    }
}
