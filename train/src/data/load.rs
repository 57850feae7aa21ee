//! The user's training text: plain text files (one document each; big files cut at blank
//! lines) and JSONL (one object a line with `text`, `prompt` + `response`, or chat
//! `messages` rendered with the teacher's chat template).

use std::path::Path;

use nexus_runtime::chat_template::{ChatTemplate, Message};
use serde::{Deserialize, Serialize};
use serde_json::Value;

use super::DataError;

/// A plain text file longer than this is cut into several documents at blank lines, so one
/// huge file does not become one endless document and an overlap report can say where.
pub const SPLIT_BYTES: usize = 64 * 1024;

/// How a source file is read, chosen by its extension.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum SourceFormat {
    Text,
    Jsonl,
}

impl SourceFormat {
    /// `.jsonl` and `.ndjson` are JSONL; anything else is plain text.
    pub fn of(path: &Path) -> Self {
        match path.extension().and_then(|e| e.to_str()).map(str::to_ascii_lowercase).as_deref() {
            Some("jsonl") | Some("ndjson") => SourceFormat::Jsonl,
            _ => SourceFormat::Text,
        }
    }
}

/// One training document.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Document {
    pub text: String,
    /// Rendered by the chat template: its control-token texts ("<|im_start|>") stand for the
    /// tokens themselves. In the user's own prose the same characters stay ordinary text.
    pub special: bool,
}

impl Document {
    pub fn plain(text: impl Into<String>) -> Self {
        Document { text: text.into(), special: false }
    }
}

/// Reads a file that must hold some non-blank UTF-8 text.
pub fn read_text(path: &Path) -> Result<String, DataError> {
    let bytes = std::fs::read(path).map_err(|source| DataError::Io { path: path.to_path_buf(), source })?;
    let text = String::from_utf8(bytes).map_err(|e| DataError::NotUtf8 { path: path.to_path_buf(), offset: e.utf8_error().valid_up_to() })?;
    if text.trim().is_empty() {
        return Err(DataError::Empty { path: path.to_path_buf() });
    }
    Ok(text)
}

/// The documents of one source file. `template` renders chat items; without it, a JSONL
/// line with `messages` is an error and `prompt` + `response` are joined by a newline.
pub fn load_documents(path: &Path, template: Option<&ChatTemplate>) -> Result<Vec<Document>, DataError> {
    let text = read_text(path)?;
    match SourceFormat::of(path) {
        SourceFormat::Text => Ok(split_text(&text).into_iter().map(Document::plain).collect()),
        SourceFormat::Jsonl => {
            let mut docs = Vec::new();
            for (i, line) in text.lines().enumerate() {
                if line.trim().is_empty() {
                    continue;
                }
                let item = parse_line(path, i + 1, line)?;
                docs.push(document_of(path, i + 1, &item, template)?);
            }
            Ok(docs)
        }
    }
}

/// One JSONL line as an object.
pub(crate) fn parse_line(path: &Path, line: usize, text: &str) -> Result<serde_json::Map<String, Value>, DataError> {
    let bad = |what: String| DataError::BadJson { path: path.to_path_buf(), line, what };
    match serde_json::from_str::<Value>(text) {
        Ok(Value::Object(map)) => Ok(map),
        Ok(other) => Err(bad(format!("expected an object, found {}", json_kind(&other)))),
        Err(e) => Err(bad(e.to_string())),
    }
}

fn json_kind(v: &Value) -> &'static str {
    match v {
        Value::Null => "null",
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Array(_) => "an array",
        Value::Object(_) => "an object",
    }
}

/// A string field, `None` when absent; present but not a non-empty string is an error.
pub(crate) fn string_field<'a>(path: &Path, line: usize, item: &'a serde_json::Map<String, Value>, key: &str) -> Result<Option<&'a str>, DataError> {
    let unusable = |what: String| DataError::NoUsableField { path: path.to_path_buf(), line, what };
    match item.get(key) {
        None => Ok(None),
        Some(Value::String(s)) if !s.trim().is_empty() => Ok(Some(s)),
        Some(Value::String(_)) => Err(unusable(format!("\"{key}\" is empty"))),
        Some(other) => Err(unusable(format!("\"{key}\" is {}, not a string", json_kind(other)))),
    }
}

/// The chat turns of a `messages` array.
pub(crate) fn messages_of(path: &Path, line: usize, value: &Value) -> Result<Vec<Message>, DataError> {
    let unusable = |what: String| DataError::NoUsableField { path: path.to_path_buf(), line, what };
    let items = value.as_array().ok_or_else(|| unusable(format!("\"messages\" is {}, not an array", json_kind(value))))?;
    if items.is_empty() {
        return Err(unusable("\"messages\" is empty".into()));
    }
    items
        .iter()
        .enumerate()
        .map(|(j, m)| {
            let field = |k: &str| m.get(k).and_then(Value::as_str);
            match (field("role"), field("content")) {
                (Some(role), Some(content)) => Ok(Message::new(role, content)),
                _ => Err(unusable(format!("messages[{j}] needs string \"role\" and \"content\""))),
            }
        })
        .collect()
}

fn render(path: &Path, line: usize, template: Option<&ChatTemplate>, messages: &[Message]) -> Result<Document, DataError> {
    let template = template.ok_or_else(|| DataError::NoTemplate { path: path.to_path_buf(), line })?;
    let text = template.render(messages, false).map_err(|source| DataError::Template { path: path.to_path_buf(), line, source })?;
    Ok(Document { text, special: true })
}

fn document_of(path: &Path, line: usize, item: &serde_json::Map<String, Value>, template: Option<&ChatTemplate>) -> Result<Document, DataError> {
    if let Some(text) = string_field(path, line, item, "text")? {
        return Ok(Document::plain(text));
    }
    if let Some(messages) = item.get("messages") {
        return render(path, line, template, &messages_of(path, line, messages)?);
    }
    let prompt = string_field(path, line, item, "prompt")?;
    let response = string_field(path, line, item, "response")?;
    match (prompt, response) {
        (Some(p), Some(r)) => match template {
            Some(_) => render(path, line, template, &[Message::new("user", p), Message::new("assistant", r)]),
            None => Ok(Document::plain(format!("{p}\n{r}"))),
        },
        (Some(_), None) => Err(DataError::NoUsableField { path: path.to_path_buf(), line, what: "\"prompt\" without \"response\"".into() }),
        _ => Err(DataError::NoUsableField {
            path: path.to_path_buf(),
            line,
            what: "no usable field: expected \"text\", \"prompt\" and \"response\", or \"messages\"".into(),
        }),
    }
}

/// Paragraphs: runs of non-blank lines.
pub(crate) fn paragraphs(text: &str) -> Vec<String> {
    let mut out = Vec::new();
    let mut cur: Vec<&str> = Vec::new();
    for line in text.lines() {
        if line.trim().is_empty() {
            if !cur.is_empty() {
                out.push(cur.join("\n"));
                cur.clear();
            }
        } else {
            cur.push(line);
        }
    }
    if !cur.is_empty() {
        out.push(cur.join("\n"));
    }
    out
}

/// The whole text when it is small; otherwise consecutive paragraphs grouped into documents
/// of at most [`SPLIT_BYTES`] (a longer paragraph stays whole).
fn split_text(text: &str) -> Vec<String> {
    if text.len() <= SPLIT_BYTES {
        return vec![text.to_string()];
    }
    let mut docs = Vec::new();
    let mut cur = String::new();
    for p in paragraphs(text) {
        if !cur.is_empty() && cur.len() + 2 + p.len() > SPLIT_BYTES {
            docs.push(std::mem::take(&mut cur));
        }
        if !cur.is_empty() {
            cur.push_str("\n\n");
        }
        cur.push_str(&p);
    }
    if !cur.is_empty() {
        docs.push(cur);
    }
    docs
}

#[cfg(test)]
mod tests {
    use super::*;

    fn file(dir: &tempfile::TempDir, name: &str, bytes: &[u8]) -> std::path::PathBuf {
        let p = dir.path().join(name);
        std::fs::write(&p, bytes).unwrap();
        p
    }

    #[test]
    fn small_text_is_one_document_and_big_text_is_cut_at_blank_lines() {
        let dir = tempfile::tempdir().unwrap();
        let small = file(&dir, "a.txt", b"One line.\n\nAnother paragraph.\n");
        assert_eq!(load_documents(&small, None).unwrap(), vec![Document::plain("One line.\n\nAnother paragraph.\n")]);

        let para = "word ".repeat(2000); // 10 kB per paragraph
        let big: String = (0..20).map(|i| format!("{i} {para}\n\n\n")).collect();
        let docs = load_documents(&file(&dir, "big.txt", big.as_bytes()), None).unwrap();
        assert!(docs.len() >= 3, "{} documents", docs.len());
        assert!(docs.iter().all(|d| d.text.len() <= SPLIT_BYTES));
        let joined = docs.iter().map(|d| d.text.as_str()).collect::<Vec<_>>().join("\n\n");
        assert_eq!(paragraphs(&joined), paragraphs(&big), "no paragraph lost or reordered");
    }

    #[test]
    fn jsonl_fields() {
        let dir = tempfile::tempdir().unwrap();
        let p = file(&dir, "d.jsonl", b"{\"text\": \"plain\"}\n\n{\"prompt\": \"Q?\", \"response\": \"A.\"}\n");
        assert_eq!(load_documents(&p, None).unwrap(), vec![Document::plain("plain"), Document::plain("Q?\nA.")]);

        let t = ChatTemplate::builtin("chatml", "", "<|im_end|>").unwrap();
        let p = file(&dir, "c.jsonl", br#"{"messages": [{"role": "user", "content": "Hi"}, {"role": "assistant", "content": "Hello!"}]}"#);
        let docs = load_documents(&p, Some(&t)).unwrap();
        assert!(docs[0].special);
        assert!(docs[0].text.contains("<|im_start|>user\nHi<|im_end|>"), "{:?}", docs[0].text);
        assert!(docs[0].text.contains("<|im_start|>assistant\nHello!<|im_end|>"), "{:?}", docs[0].text);
        let err = load_documents(&p, None).unwrap_err().to_string();
        assert!(err.contains("c.jsonl:1") && err.contains("chat template"), "{err}");
    }

    #[test]
    fn errors_name_the_file_and_where() {
        let dir = tempfile::tempdir().unwrap();
        let empty = file(&dir, "empty.txt", b"");
        assert!(matches!(load_documents(&empty, None), Err(DataError::Empty { .. })));
        let blank = file(&dir, "blank.jsonl", b"\n  \n");
        assert!(matches!(load_documents(&blank, None), Err(DataError::Empty { .. })));

        let bad = file(&dir, "latin1.txt", b"caf\xe9 au lait");
        let e = load_documents(&bad, None).unwrap_err();
        assert!(matches!(e, DataError::NotUtf8 { offset: 3, .. }), "{e:?}");
        assert!(e.to_string().contains("latin1.txt") && e.to_string().contains("offset 3"), "{e}");

        let json = file(&dir, "bad.jsonl", b"{\"text\": \"ok\"}\n{\"text\": \"unterminated}\n");
        let e = load_documents(&json, None).unwrap_err();
        assert!(matches!(e, DataError::BadJson { line: 2, .. }), "{e:?}");
        assert!(e.to_string().contains("bad.jsonl:2"), "{e}");

        let arr = file(&dir, "arr.jsonl", b"[1, 2]\n");
        assert!(load_documents(&arr, None).unwrap_err().to_string().contains("expected an object, found an array"));

        let none = file(&dir, "none.jsonl", b"{\"text\": \"ok\"}\n{\"body\": \"x\"}\n");
        let e = load_documents(&none, None).unwrap_err();
        assert!(matches!(e, DataError::NoUsableField { line: 2, .. }), "{e:?}");

        let num = file(&dir, "num.jsonl", b"{\"text\": 5}\n");
        assert!(load_documents(&num, None).unwrap_err().to_string().contains("\"text\" is a number"));
        let half = file(&dir, "half.jsonl", b"{\"prompt\": \"only a question\"}\n");
        assert!(load_documents(&half, None).unwrap_err().to_string().contains("without \"response\""));
        let msgs = file(&dir, "msgs.jsonl", b"{\"messages\": [{\"role\": \"user\"}]}\n");
        assert!(load_documents(&msgs, None).unwrap_err().to_string().contains("messages[0]"));

        let missing = dir.path().join("missing.txt");
        assert!(load_documents(&missing, None).unwrap_err().to_string().contains("missing.txt"));
    }
}
