use std::fmt;
use std::path::PathBuf;

/// A GGUF file that could not be read or written, with the file it concerns.
#[derive(Debug)]
pub struct GgufError {
    pub path: PathBuf,
    pub kind: GgufErrorKind,
}

#[derive(Debug, thiserror::Error)]
pub enum GgufErrorKind {
    #[error("cannot open: {0}")]
    Io(#[from] std::io::Error),
    #[error("not a GGUF file (magic {0:#010x}, expected 0x46554747 \"GGUF\")")]
    BadMagic(u32),
    #[error("unsupported GGUF version {0} (supported: 2, 3)")]
    BadVersion(u32),
    #[error("file is truncated: {what} at byte {offset} needs {needed} bytes, {available} remain")]
    Truncated { what: String, offset: u64, needed: u64, available: u64 },
    #[error("{what} claims {count} entries, more than the {available} bytes left could hold")]
    CountTooLarge { what: String, count: u64, available: u64 },
    #[error("metadata key {key:?}: unknown value type {ty}")]
    BadValueType { key: String, ty: u32 },
    #[error("metadata key {key:?}: the metadata holds more than {max} values in all")]
    TooManyValues { key: String, max: u64 },
    #[error("metadata key {key:?}: arrays nested deeper than {max}")]
    TooDeep { key: String, max: usize },
    #[error("duplicate metadata key {0:?}")]
    DuplicateKey(String),
    #[error("duplicate tensor name {0:?}")]
    DuplicateTensor(String),
    #[error("tensor {name:?}: unknown tensor type id {ty}")]
    UnknownTensorType { name: String, ty: u32 },
    #[error("tensor {name:?}: {reason}")]
    BadTensor { name: String, reason: String },
    #[error("tensor {name:?}: data [{start}, {end}) lies past the end of the file ({file_len} bytes)")]
    TensorPastEnd { name: String, start: u64, end: u64, file_len: u64 },
    #[error("general.alignment = {0} is not a non-zero power of two")]
    BadAlignment(u64),
    #[error("missing required metadata key {0:?}")]
    MissingKey(String),
    #[error("metadata key {key:?} has type {found}, expected {expected}")]
    WrongType { key: String, expected: &'static str, found: String },
    #[error("missing tensor {0:?}")]
    MissingTensor(String),
    #[error("tensor {name:?} has shape {found:?}, expected {expected:?}")]
    ShapeMismatch { name: String, expected: Vec<u64>, found: Vec<u64> },
    #[error("{0}")]
    Invalid(String),
}

impl GgufError {
    pub fn new(path: impl Into<PathBuf>, kind: GgufErrorKind) -> Self {
        GgufError { path: path.into(), kind }
    }
}

impl fmt::Display for GgufError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", self.path.display(), self.kind)
    }
}

impl std::error::Error for GgufError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        Some(&self.kind)
    }
}
