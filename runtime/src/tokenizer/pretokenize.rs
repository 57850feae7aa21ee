//! BPE pre-tokenizers: split text into words before merges, as llama.cpp's
//! `unicode_regex_split` does for each `tokenizer.ggml.pre`.
//!
//! llama.cpp does not run the tokenizer.json regexes through a regex engine for the common
//! cases; it uses hand-written splitters (which deviate from the regexes in a few corners)
//! and, for the simple remaining patterns, std::regex over text whose non-ASCII codepoints
//! are collapsed to one byte per category. We port both, so word boundaries agree with
//! llama.cpp id for id instead of with some regex engine's Unicode tables.

use super::unicode::{Flags, PUNCTUATION};

/// Which split rules a `tokenizer.ggml.pre` value selects.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PreTokenizer {
    /// `default` (and a missing `pre`): punctuation runs, GPT-2 words, digit runs, digit triples.
    Default,
    /// `gpt-2` and aliases.
    Gpt2,
    /// `llama3`/`llama-bpe` and aliases: digits in groups of up to three.
    Llama3,
    /// `qwen2` and aliases: like Llama 3, but one digit per word.
    Qwen2,
    /// `smollm` and the StarCoder family: every digit alone, then GPT-2 words.
    Smollm,
}

/// The `pre` names we accept, for error messages.
pub(super) const SUPPORTED_PRE: &str = "default, gpt-2, phi-2, llama3, llama-v3, llama-bpe, falcon3, \
     pixtral, qwen2, deepseek-r1-qwen, megrez, smollm, starcoder, refact, codeshell";

impl PreTokenizer {
    /// The pre-tokenizer llama.cpp picks for a `tokenizer.ggml.pre` value, and whether that
    /// choice also sets `ignore_merges`, `clean_spaces` and a default `add_bos`.
    pub(super) fn from_name(pre: &str) -> Option<PreSettings> {
        let s = |pre, ignore_merges, clean_spaces, add_bos| PreSettings { pre, ignore_merges, clean_spaces, add_bos };
        Some(match pre {
            "" | "default" => s(PreTokenizer::Default, false, true, false),
            "gpt-2" | "phi-2" | "jina-es" | "jina-de" | "gigachat" | "jina-v2-es" | "jina-v2-de" | "mellum"
            | "a.x-4.0" | "exaone4" | "mpt" | "olmo" | "jais" | "trillion" => s(PreTokenizer::Gpt2, false, true, false),
            "llama3" | "llama-v3" | "llama-bpe" | "falcon3" | "falcon-h1" | "pixtral" | "midm-2.0" | "lfm2" => {
                s(PreTokenizer::Llama3, true, true, true)
            }
            "qwen2" | "deepseek-r1-qwen" | "kormo" => s(PreTokenizer::Qwen2, false, false, false),
            "megrez" | "stablelm2" => s(PreTokenizer::Qwen2, false, true, false),
            "smollm" | "command-r" => s(PreTokenizer::Smollm, false, false, false),
            "starcoder" | "refact" | "codeshell" | "exaone" => s(PreTokenizer::Smollm, false, true, false),
            _ => return None,
        })
    }

    /// Splits `text` into words (slices of `text`), in order, covering it exactly.
    pub fn split(self, text: &str) -> Vec<&str> {
        let chars: Vec<char> = text.chars().collect();
        let mut offsets = vec![chars.len()];
        if chars.is_empty() {
            return Vec::new();
        }
        let steps: &[Step] = match self {
            PreTokenizer::Default => &[Step::PunctRun, Step::Gpt2, Step::NumberRun, Step::Digits3],
            PreTokenizer::Gpt2 => &[Step::Gpt2],
            PreTokenizer::Llama3 => &[Step::Llama3 { max_digits: 3 }],
            PreTokenizer::Qwen2 => &[Step::Llama3 { max_digits: 1 }],
            PreTokenizer::Smollm => &[Step::NumberEach, Step::Gpt2],
        };
        for step in steps {
            offsets = step.apply(&chars, &offsets);
        }
        let mut words = Vec::with_capacity(offsets.len());
        let mut byte = 0;
        let mut cpt = 0;
        for len in offsets {
            let start = byte;
            for c in &chars[cpt..cpt + len] {
                byte += c.len_utf8();
            }
            cpt += len;
            words.push(&text[start..byte]);
        }
        words
    }
}

#[derive(Debug, Clone, Copy)]
pub(super) struct PreSettings {
    pub pre: PreTokenizer,
    pub ignore_merges: bool,
    pub clean_spaces: bool,
    pub add_bos: bool,
}

#[derive(Clone, Copy)]
enum Step {
    /// `[\p{P}\$\+<=>\^~\|]+` through llama.cpp's collapsed-category std::regex.
    PunctRun,
    /// `\p{N}` (collapsed).
    NumberEach,
    /// `\p{N}+` (collapsed).
    NumberRun,
    /// `[0-9][0-9][0-9]`.
    Digits3,
    /// llama.cpp's hand-written GPT-2 splitter.
    Gpt2,
    /// llama.cpp's hand-written Llama 3 / Qwen 2 splitter; they differ only in `\p{N}{1,3}`
    /// vs `\p{N}`.
    Llama3 { max_digits: usize },
}

impl Step {
    fn apply(self, chars: &[char], offsets: &[usize]) -> Vec<usize> {
        let mut out = Vec::with_capacity(offsets.len());
        let mut start = 0;
        for &len in offsets {
            let frag = &chars[start..start + len];
            start += len;
            match self {
                Step::PunctRun => split_matches(frag, &mut out, |f, i| run(f, i, is_collapsed_punct)),
                Step::NumberEach => split_matches(frag, &mut out, |f, i| usize::from(is_collapsed_number(f[i]))),
                Step::NumberRun => split_matches(frag, &mut out, |f, i| run(f, i, is_collapsed_number)),
                Step::Digits3 => split_matches(frag, &mut out, |f, i| {
                    if f.len() - i >= 3 && f[i..i + 3].iter().all(|c| c.is_ascii_digit()) {
                        3
                    } else {
                        0
                    }
                }),
                Step::Gpt2 => split_gpt2(frag, &mut out),
                Step::Llama3 { max_digits } => split_llama3(frag, max_digits, &mut out),
            }
        }
        out
    }
}

fn run(frag: &[char], i: usize, pred: fn(char) -> bool) -> usize {
    frag[i..].iter().take_while(|&&c| pred(c)).count()
}

/// What llama.cpp's collapsed text turns non-ASCII into: whitespace first, then category.
fn collapsed_category(c: char) -> Option<u8> {
    let f = Flags::of(c);
    if f.whitespace {
        None
    } else {
        Some(f.category)
    }
}

fn is_collapsed_number(c: char) -> bool {
    if c.is_ascii() {
        c.is_ascii_digit()
    } else {
        collapsed_category(c) == Some(super::unicode::NUMBER)
    }
}

fn is_collapsed_punct(c: char) -> bool {
    if c.is_ascii() {
        // llama.cpp's ASCII stand-ins for \p{P} (note: no '`'), plus the explicit $+<=>^~|.
        matches!(c, '!'..='#' | '%'..='*' | ','..='/' | ':' | ';' | '?' | '@' | '['..=']' | '_' | '{' | '}')
            || matches!(c, '$' | '+' | '<' | '=' | '>' | '^' | '~' | '|')
    } else {
        collapsed_category(c) == Some(PUNCTUATION)
    }
}

/// Like iterating std::regex matches: gaps between matches and matches each become words.
/// `match_len(frag, i)` is the length of a match starting at `i`, 0 for none (no pattern
/// here matches the empty string).
fn split_matches(frag: &[char], out: &mut Vec<usize>, match_len: impl Fn(&[char], usize) -> usize) {
    let mut gap_start = 0;
    let mut i = 0;
    while i < frag.len() {
        let n = match_len(frag, i);
        if n == 0 {
            i += 1;
            continue;
        }
        if i > gap_start {
            out.push(i - gap_start);
        }
        out.push(n);
        i += n;
        gap_start = i;
    }
    if frag.len() > gap_start {
        out.push(frag.len() - gap_start);
    }
}

/// Access to a fragment with llama.cpp's out-of-range conventions: `None` for the codepoint
/// and empty flags past either end.
struct Frag<'a> {
    chars: &'a [char],
    flags: Vec<Flags>,
}

impl<'a> Frag<'a> {
    fn new(chars: &'a [char]) -> Self {
        Frag { chars, flags: chars.iter().map(|&c| Flags::of(c)).collect() }
    }
    fn cpt(&self, i: usize) -> Option<char> {
        self.chars.get(i).copied()
    }
    fn flags(&self, i: usize) -> Flags {
        self.flags.get(i).copied().unwrap_or_default()
    }
    /// Length of `'s|'t|'re|'ve|'m|'ll|'d` at `pos` (case-insensitively if asked), or 0.
    fn contraction(&self, pos: usize, fold: bool) -> usize {
        let lower = |c: Option<char>| c.map(|c| if fold { c.to_ascii_lowercase() } else { c });
        if self.cpt(pos) != Some('\'') || pos + 1 >= self.chars.len() {
            return 0;
        }
        let next = lower(self.cpt(pos + 1));
        if matches!(next, Some('s' | 't' | 'm' | 'd')) {
            return 2;
        }
        if pos + 2 < self.chars.len() {
            let next2 = lower(self.cpt(pos + 2));
            if matches!((next, next2), (Some('r'), Some('e')) | (Some('v'), Some('e')) | (Some('l'), Some('l'))) {
                return 3;
            }
        }
        0
    }
    fn whitespace_run(&self, pos: usize) -> usize {
        (pos..).take_while(|&i| self.flags(i).whitespace).count()
    }
}

/// `'s|'t|'re|'ve|'m|'ll|'d| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S)`, as llama.cpp's
/// unicode_regex_split_custom_gpt2 implements it.
fn split_gpt2(chars: &[char], out: &mut Vec<usize>) {
    let f = Frag::new(chars);
    let end = chars.len();
    let mut prev = 0;
    let mut emit = |to: usize, out: &mut Vec<usize>| {
        if to > prev {
            out.push(to - prev);
        }
        prev = to;
    };
    let mut pos = 0;
    while pos < end {
        let cpt = f.cpt(pos);
        let n = f.contraction(pos, false);
        if n > 0 {
            pos += n;
            emit(pos, out);
            continue;
        }
        let space = cpt == Some(' ');
        let mut fl = if space { f.flags(pos + 1) } else { f.flags(pos) };
        // ' ?\p{L}+', ' ?\p{N}+', ' ?[^\s\p{L}\p{N}]+', tried in that order.
        let classes: [fn(Flags) -> bool; 3] = [
            |x| x.is_letter(),
            |x| x.is_number(),
            |x| !(x.whitespace || x.is_letter() || x.is_number()) && x.is_any(),
        ];
        if let Some(class) = classes.iter().find(|class| class(fl)) {
            pos += usize::from(space);
            while class(fl) {
                pos += 1;
                fl = f.flags(pos);
            }
            emit(pos, out);
            continue;
        }
        let ws = f.whitespace_run(pos);
        if ws > 1 && f.cpt(pos + ws).is_some() {
            // \s+(?!\S): leave the last space to prefix the next word.
            pos += ws - 1;
            emit(pos, out);
            continue;
        }
        if ws > 0 {
            pos += ws;
            emit(pos, out);
            continue;
        }
        pos += 1;
        emit(pos, out);
    }
}

/// `(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,N}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+`,
/// as llama.cpp's unicode_regex_split_custom_llama3 (N = 3) and _qwen2 (N = 1) implement it.
fn split_llama3(chars: &[char], max_digits: usize, out: &mut Vec<usize>) {
    let f = Frag::new(chars);
    let end = chars.len();
    let mut prev = 0;
    let mut emit = |to: usize, out: &mut Vec<usize>| {
        if to > prev {
            out.push(to - prev);
        }
        prev = to;
    };
    let is_crlf = |c: Option<char>| matches!(c, Some('\r' | '\n'));
    let mut pos = 0;
    while pos < end {
        let cpt = f.cpt(pos);
        let flags = f.flags(pos);
        let n = f.contraction(pos, true);
        if n > 0 {
            pos += n;
            emit(pos, out);
            continue;
        }
        // [^\r\n\p{L}\p{N}]?\p{L}+
        if !(is_crlf(cpt) || flags.is_number()) && (flags.is_letter() || f.flags(pos + 1).is_letter()) {
            pos += 1;
            while f.flags(pos).is_letter() {
                pos += 1;
            }
            emit(pos, out);
            continue;
        }
        // \p{N}{1,max_digits}
        if flags.is_number() {
            let mut ini = pos;
            while f.flags(pos).is_number() {
                pos += 1;
                if pos - ini >= max_digits {
                    emit(pos, out);
                    ini = pos;
                }
            }
            emit(pos, out);
            continue;
        }
        // ' ?[^\s\p{L}\p{N}]+[\r\n]*'; llama.cpp tests the first char's flags (not the one
        // after the space) for "is a real codepoint", which we keep.
        let mut fl = if cpt == Some(' ') { f.flags(pos + 1) } else { flags };
        let other = |x: Flags| !(x.whitespace || x.is_letter() || x.is_number());
        if other(fl) && flags.is_any() {
            pos += usize::from(cpt == Some(' '));
            while other(fl) && fl.is_any() {
                pos += 1;
                fl = f.flags(pos);
            }
            while is_crlf(f.cpt(pos)) {
                pos += 1;
            }
            emit(pos, out);
            continue;
        }
        let mut ws = 0;
        let mut last_crlf_end = 0;
        while f.flags(pos + ws).whitespace {
            if is_crlf(f.cpt(pos + ws)) {
                last_crlf_end = pos + ws + 1;
            }
            ws += 1;
        }
        // \s*[\r\n]+
        if last_crlf_end > 0 {
            pos = last_crlf_end;
            emit(pos, out);
            continue;
        }
        if ws > 1 && f.cpt(pos + ws).is_some() {
            pos += ws - 1;
            emit(pos, out);
            continue;
        }
        if ws > 0 {
            pos += ws;
            emit(pos, out);
            continue;
        }
        pos += 1;
        emit(pos, out);
    }
}
