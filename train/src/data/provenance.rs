//! Where every training token came from: each source file's sha256, format, documents and
//! tokens, the teacher-generation settings, and the held-out files it was checked against,
//! written as `provenance.json` in the run directory.

use std::io::Read;
use std::path::{Path, PathBuf};

use nexus_runtime::chat_template::ChatTemplate;
use nexus_runtime::tokenizer::Tokenizer;
use rayon::prelude::*;
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use super::dataset::tokenize_document;
use super::held_out::{load_held_out_files, HeldOutIndex};
use super::{load_documents, write_atomic, DataError, GenerationRecord, SourceFormat};

pub const PROVENANCE_FILE: &str = "provenance.json";

/// Lowercase hex sha256 of a file's bytes.
pub fn sha256_file(path: &Path) -> Result<String, DataError> {
    let io = |source| DataError::Io { path: path.to_path_buf(), source };
    let mut f = std::fs::File::open(path).map_err(io)?;
    let mut hasher = Sha256::new();
    let mut buf = vec![0u8; 1 << 16];
    loop {
        let n = f.read(&mut buf).map_err(io)?;
        if n == 0 {
            break;
        }
        hasher.update(&buf[..n]);
    }
    Ok(hasher.finalize().iter().map(|b| format!("{b:02x}")).collect())
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SourceRecord {
    pub path: PathBuf,
    pub sha256: String,
    pub format: SourceFormat,
    pub documents: usize,
    pub tokens: usize,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct HeldOutRecord {
    pub path: PathBuf,
    pub sha256: String,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Provenance {
    pub sources: Vec<SourceRecord>,
    /// Settings of the teacher generation whose output is among `sources`, if any.
    pub generation: Option<GenerationRecord>,
    /// The held-out files no training document overlaps ([`super::held_out::WINDOW`]-byte windows).
    pub held_out: Vec<HeldOutRecord>,
    pub held_out_window_bytes: usize,
    pub total_tokens: usize,
}

impl Provenance {
    /// Writes `dir/provenance.json` atomically and returns its path.
    pub fn write(&self, dir: &Path) -> Result<PathBuf, DataError> {
        let path = dir.join(PROVENANCE_FILE);
        let json = serde_json::to_vec_pretty(self).map_err(|e| DataError::BadConfig { path: path.clone(), what: e.to_string() })?;
        write_atomic(&path, &json).map_err(|source| DataError::Io { path: path.clone(), source })?;
        Ok(path)
    }

    pub fn load(path: &Path) -> Result<Self, DataError> {
        let bytes = std::fs::read(path).map_err(|source| DataError::Io { path: path.to_path_buf(), source })?;
        serde_json::from_slice(&bytes).map_err(|e| DataError::BadJson { path: path.to_path_buf(), line: e.line(), what: e.to_string() })
    }
}

/// The training token stream of several sources, with what provenance needs to know.
#[derive(Debug, Clone)]
pub struct Corpus {
    pub tokens: Vec<u32>,
    pub sources: Vec<SourceRecord>,
    pub held_out: Vec<HeldOutRecord>,
}

impl Corpus {
    pub fn provenance(&self, generation: Option<GenerationRecord>) -> Provenance {
        Provenance {
            sources: self.sources.clone(),
            generation,
            held_out: self.held_out.clone(),
            held_out_window_bytes: super::held_out::WINDOW,
            total_tokens: self.tokens.len(),
        }
    }
}

/// Loads every source (text or JSONL; chat items rendered with `template`), refuses any
/// document that contains held-out text, and tokenizes the rest into one stream in the
/// order given.
pub fn build_corpus(sources: &[PathBuf], tok: &Tokenizer, template: Option<&ChatTemplate>, held_out: &[PathBuf]) -> Result<Corpus, DataError> {
    if sources.is_empty() {
        return Err(DataError::BadDataset { what: "no training sources given".into() });
    }
    let index = HeldOutIndex::new(&load_held_out_files(held_out)?);
    let held_out = held_out.iter().map(|p| Ok(HeldOutRecord { path: p.clone(), sha256: sha256_file(p)? })).collect::<Result<_, DataError>>()?;
    let mut tokens = Vec::new();
    let mut records = Vec::with_capacity(sources.len());
    for path in sources {
        let docs = load_documents(path, template)?;
        let name = path.display().to_string();
        let named: Vec<(String, String)> = docs.iter().map(|d| (name.clone(), d.text.clone())).collect();
        index.check(&named)?;
        let per_doc: Vec<Vec<u32>> = docs.par_iter().map(|d| tokenize_document(tok, d)).collect();
        let n: usize = per_doc.iter().map(Vec::len).sum();
        per_doc.into_iter().for_each(|d| tokens.extend(d));
        records.push(SourceRecord { path: path.clone(), sha256: sha256_file(path)?, format: SourceFormat::of(path), documents: docs.len(), tokens: n });
    }
    Ok(Corpus { tokens, sources: records, held_out })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sha256_of_a_known_text() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("abc.txt");
        std::fs::write(&p, b"abc").unwrap();
        assert_eq!(sha256_file(&p).unwrap(), "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad");
    }

    #[test]
    fn provenance_round_trips_through_its_file() {
        let dir = tempfile::tempdir().unwrap();
        let p = Provenance {
            sources: vec![SourceRecord { path: "a.txt".into(), sha256: "00".into(), format: SourceFormat::Text, documents: 2, tokens: 10 }],
            generation: None,
            held_out: vec![HeldOutRecord { path: "h.txt".into(), sha256: "11".into() }],
            held_out_window_bytes: 64,
            total_tokens: 10,
        };
        let path = p.write(dir.path()).unwrap();
        assert_eq!(path, dir.path().join(PROVENANCE_FILE));
        assert_eq!(Provenance::load(&path).unwrap(), p);
    }
}
