//! GGUF v2/v3 files: a zero-copy reader over a memory map and an atomic writer.
//!
//! The reader never trusts a count or an offset from the file: every length is checked
//! against the bytes that remain before anything is allocated, so a hostile header cannot
//! make us allocate for 2^60 tensors or read past the end of the map.

mod error;
mod reader;
mod value;
mod writer;

pub use error::{GgufError, GgufErrorKind};
pub use reader::{GgufFile, GgufHeader, TensorInfo, MAX_METADATA_VALUES};
pub use value::{Value, ValueType};
pub use writer::{GgufWriter, StreamedTensor};

/// "GGUF" read as a little-endian u32.
pub const GGUF_MAGIC: u32 = 0x4655_4747;
/// Alignment of the tensor data section when `general.alignment` is absent.
pub const DEFAULT_ALIGNMENT: u64 = 32;
