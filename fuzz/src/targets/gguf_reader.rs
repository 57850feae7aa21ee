//! The GGUF reader on arbitrary files: header, metadata of every value type (nested arrays
//! included), tensor infos, offsets and alignment. Any panic, hang or allocation the file's
//! length cannot justify is a finding; errors are the expected outcome for most inputs.

use nexus_runtime::gguf::GgufFile;

pub fn run(data: &[u8]) {
    let path = crate::write_scratch("reader.gguf", data);
    let Ok(f) = GgufFile::open(&path) else { return };
    // Everything a caller may touch after a successful open must be safe too.
    for (key, value) in f.metadata() {
        let _ = format!("{key} = {value} ({})", value.type_name());
        let _ = (value.as_u64(), value.as_i64(), value.as_f64(), value.as_bool(), value.as_str());
        let _ = (f.get_str_array(key), f.get_f32_array(key), f.get_i64_array(key));
    }
    for t in f.tensors() {
        let bytes = f.tensor_data(t);
        assert_eq!(bytes.len() as u64, t.n_bytes);
        assert!(f.data_offset + t.offset + t.n_bytes <= f.file_len());
        let _ = f.tensor_checked(&t.name, &t.dims);
    }
    // The same file also reaches the model config and the tokenizer in `nexus-cli run`.
    let _ = nexus_runtime::model::ModelConfig::from_gguf(&f);
    let _ = nexus_runtime::tokenizer::Tokenizer::from_gguf(&f);
}
