//! Loading a voice GGUF (`nexus-cli speak --voice FILE`) from arbitrary bytes: the VITS
//! hyper-parameters, the phoneme id map, and every tensor's name, type and shape checked
//! against them. A voice that loads must also phonemize-free synthesize a few ids without
//! panicking (errors are fine: a stranger's voice may ask for absurd lengths).
//!
//! The bytes are parsed in memory (`GgufFile::from_bytes`, then `Voice::from_file`, which is
//! `Voice::load` after its `GgufFile::open`): the scratch file's write, open and map were a third
//! of each input's time, and opening a path is `gguf_reader`'s to fuzz.

use nexus_runtime::gguf::GgufFile;
use nexus_runtime::tts::vits::{Scales, Voice};

pub fn run(data: &[u8]) {
    let Ok(file) = GgufFile::from_bytes("voice.gguf", data.to_vec()) else { return };
    let Ok(voice) = Voice::from_file(&file) else { return };
    let scales = Scales { noise_scale: 0.0, length_scale: 1.0, noise_w: 0.0 };
    let _ = voice.synthesize(&[1, 0, 2], scales, 0);
}
