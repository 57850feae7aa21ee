//! Held-out hygiene: evaluation text must never be trained on. Every window of
//! [`WINDOW`] bytes of the held-out texts (normalized: lowercase, whitespace runs as one
//! space) is hashed; a training document containing any of them is refused, naming both
//! files. A rolling hash makes the scan linear in the training text, and every hash hit is
//! confirmed byte for byte, so a reported overlap is never a hash collision.

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use rayon::prelude::*;

use super::load::{messages_of, parse_line, read_text, string_field, SourceFormat};
use super::DataError;

/// Normalized bytes per window: about a dozen words, long enough that sharing one is not a
/// coincidence of common phrasing, short enough to catch a reworded paragraph's
/// unchanged sentences. Held-out texts shorter than this are not checked.
pub const WINDOW: usize = 64;

const BASE: u64 = 0x100_0000_01b3;

/// Lowercase, every whitespace run one space, no leading or trailing space.
pub fn normalize(text: &str) -> Vec<u8> {
    let mut out = String::with_capacity(text.len());
    let mut space = false;
    for c in text.chars() {
        if c.is_whitespace() {
            space = !out.is_empty();
            continue;
        }
        if space {
            out.push(' ');
            space = false;
        }
        out.extend(c.to_lowercase());
    }
    out.into_bytes()
}

/// Calls `f(offset, hash)` for every window of `bytes`; stops early when `f` returns true.
fn for_each_window(bytes: &[u8], mut f: impl FnMut(usize, u64) -> bool) -> bool {
    if bytes.len() < WINDOW {
        return false;
    }
    let top = (1..WINDOW).fold(1u64, |p, _| p.wrapping_mul(BASE));
    let mut h = bytes[..WINDOW].iter().fold(0u64, |h, &b| h.wrapping_mul(BASE).wrapping_add(u64::from(b) + 1));
    if f(0, h) {
        return true;
    }
    for i in WINDOW..bytes.len() {
        h = h.wrapping_sub((u64::from(bytes[i - WINDOW]) + 1).wrapping_mul(top));
        h = h.wrapping_mul(BASE).wrapping_add(u64::from(bytes[i]) + 1);
        if f(i + 1 - WINDOW, h) {
            return true;
        }
    }
    false
}

/// A held-out window found in a training text.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Overlap {
    pub held_out: PathBuf,
    /// The shared window, normalized.
    pub excerpt: String,
}

/// The windows of a set of held-out texts, ready to scan training documents.
pub struct HeldOutIndex {
    texts: Vec<(usize, Vec<u8>)>,
    paths: Vec<PathBuf>,
    windows: HashMap<u64, Vec<(u32, u32)>>,
}

impl HeldOutIndex {
    /// `held_out`: (file, text) pairs; a file may appear with many texts.
    pub fn new(held_out: &[(PathBuf, String)]) -> Self {
        let mut paths: Vec<PathBuf> = Vec::new();
        let mut texts = Vec::with_capacity(held_out.len());
        let mut windows: HashMap<u64, Vec<(u32, u32)>> = HashMap::new();
        for (path, text) in held_out {
            let p = paths.iter().position(|q| q == path).unwrap_or_else(|| {
                paths.push(path.clone());
                paths.len() - 1
            });
            let norm = normalize(text);
            let t = texts.len() as u32;
            for_each_window(&norm, |off, h| {
                windows.entry(h).or_default().push((t, off as u32));
                false
            });
            texts.push((p, norm));
        }
        HeldOutIndex { texts, paths, windows }
    }

    /// Held-out windows indexed (0 when every held-out text is shorter than [`WINDOW`]).
    pub fn n_windows(&self) -> usize {
        self.windows.values().map(Vec::len).sum()
    }

    /// The first held-out window that `text` contains, if any.
    pub fn find(&self, text: &str) -> Option<Overlap> {
        if self.windows.is_empty() {
            return None;
        }
        let norm = normalize(text);
        let mut found = None;
        for_each_window(&norm, |off, h| {
            let Some(cands) = self.windows.get(&h) else { return false };
            let window = &norm[off..off + WINDOW];
            found = cands.iter().find(|&&(t, o)| &self.texts[t as usize].1[o as usize..o as usize + WINDOW] == window).map(|&(t, _)| Overlap {
                held_out: self.paths[self.texts[t as usize].0].clone(),
                excerpt: String::from_utf8_lossy(window).into_owned(),
            });
            found.is_some()
        });
        found
    }

    /// Refuses the first training document (in order) that contains held-out text.
    pub fn check(&self, train_docs: &[(String, String)]) -> Result<(), DataError> {
        let hit = train_docs.par_iter().find_map_first(|(source, text)| self.find(text).map(|o| (source, o)));
        match hit {
            Some((source, o)) => Err(DataError::HeldOutOverlap { held_out: o.held_out, source_name: source.clone(), excerpt: o.excerpt }),
            None => Ok(()),
        }
    }
}

/// `train_docs`: (source name, document text); `held_out`: (held-out file, text).
pub fn check_held_out(train_docs: &[(String, String)], held_out: &[(PathBuf, String)]) -> Result<(), DataError> {
    HeldOutIndex::new(held_out).check(train_docs)
}

/// The texts of a held-out file as hygiene compares them: a plain text file whole; for
/// JSONL every string a line carries (`text`, `prompt`, `response`, each message's
/// `content`) separately, so no window spans two fields and no template markup is needed.
pub fn load_held_out(path: &Path) -> Result<Vec<(PathBuf, String)>, DataError> {
    let text = read_text(path)?;
    let own = |s: &str| (path.to_path_buf(), s.to_string());
    if SourceFormat::of(path) == SourceFormat::Text {
        return Ok(vec![own(&text)]);
    }
    let mut out = Vec::new();
    for (i, line) in text.lines().enumerate() {
        if line.trim().is_empty() {
            continue;
        }
        let item = parse_line(path, i + 1, line)?;
        let before = out.len();
        for key in ["text", "prompt", "response"] {
            out.extend(string_field(path, i + 1, &item, key)?.map(own));
        }
        if let Some(m) = item.get("messages") {
            out.extend(messages_of(path, i + 1, m)?.iter().map(|m| own(&m.content)));
        }
        if out.len() == before {
            let what = "no text: expected \"text\", \"prompt\"/\"response\" or \"messages\"".to_string();
            return Err(DataError::NoUsableField { path: path.to_path_buf(), line: i + 1, what });
        }
    }
    Ok(out)
}

/// Every held-out text of the given files.
pub fn load_held_out_files(paths: &[PathBuf]) -> Result<Vec<(PathBuf, String)>, DataError> {
    let mut out = Vec::new();
    for p in paths {
        out.extend(load_held_out(p)?);
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    const HELD: &str = "The lighthouse keeper counted forty-one gulls on the breakwater before the fog rolled in from the east.";

    #[test]
    fn normalization_ignores_case_and_spacing() {
        assert_eq!(normalize("  Hello,\n\n  WORLD\t!  "), b"hello, world !");
    }

    #[test]
    fn finds_a_held_out_sentence_inside_training_text() {
        let held = vec![(PathBuf::from("heldout/general.txt"), HELD.to_string())];
        let reworded = format!("Some preface.\n{}\nAnd more after it.", HELD.to_uppercase().replace(' ', "  \n"));
        let train = vec![("a.txt".to_string(), "Nothing in common here at all, just other words.".repeat(5)), ("b.jsonl".to_string(), reworded)];
        let e = check_held_out(&train, &held).unwrap_err();
        match &e {
            DataError::HeldOutOverlap { held_out, source_name, excerpt } => {
                assert_eq!(held_out, &PathBuf::from("heldout/general.txt"));
                assert_eq!(source_name, "b.jsonl");
                assert_eq!(excerpt.len(), WINDOW);
                assert!(normalize(HELD).windows(WINDOW).any(|w| w == excerpt.as_bytes()));
            }
            other => panic!("{other:?}"),
        }
        assert!(e.to_string().contains("heldout/general.txt") && e.to_string().contains("b.jsonl"), "{e}");
    }

    #[test]
    fn unrelated_or_short_shared_text_passes() {
        let held = vec![(PathBuf::from("h.txt"), HELD.to_string())];
        // Shares a 40-byte phrase, below the window.
        let train = vec![("t.txt".to_string(), "He counted forty-one gulls on the breakwater and went home.".to_string())];
        check_held_out(&train, &held).unwrap();
        let index = HeldOutIndex::new(&held);
        assert_eq!(index.n_windows(), normalize(HELD).len() - WINDOW + 1);
        assert!(index.find(&HELD[1..]).is_some());
        assert!(HeldOutIndex::new(&[(PathBuf::from("s.txt"), "short".into())]).find(HELD).is_none());
    }

    #[test]
    fn jsonl_held_out_yields_each_field() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("chat.jsonl");
        std::fs::write(&p, "{\"messages\": [{\"role\": \"user\", \"content\": \"u1\"}, {\"role\": \"assistant\", \"content\": \"a1\"}]}\n{\"text\": \"t\"}\n").unwrap();
        let texts: Vec<String> = load_held_out(&p).unwrap().into_iter().map(|(_, t)| t).collect();
        assert_eq!(texts, vec!["u1", "a1", "t"]);
        std::fs::write(&p, "{\"other\": 1}\n").unwrap();
        assert!(matches!(load_held_out(&p), Err(DataError::NoUsableField { line: 1, .. })));
    }
}
