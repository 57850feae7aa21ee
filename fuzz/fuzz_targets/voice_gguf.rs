//! Loading a voice GGUF (`nexus-cli speak --voice FILE`) from arbitrary bytes: the VITS
//! hyper-parameters, the phoneme id map, and every tensor's name, type and shape checked
//! against them. A voice that loads must also phonemize-free synthesize a few ids without
//! panicking (errors are fine: a stranger's voice may ask for absurd lengths).
#![no_main]

use libfuzzer_sys::fuzz_target;
use nexus_runtime::tts::vits::{Scales, Voice};

fuzz_target!(|data: &[u8]| {
    let path = nexus_fuzz::write_scratch("voice.gguf", data);
    let Ok(voice) = Voice::load(&path) else { return };
    let scales = Scales { noise_scale: 0.0, length_scale: 1.0, noise_w: 0.0 };
    let _ = voice.synthesize(&[1, 0, 2], scales, 0);
});
