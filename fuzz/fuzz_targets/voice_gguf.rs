//! The body, and what it feeds: fuzz/src/targets/voice_gguf.rs.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| nexus_fuzz::targets::voice_gguf::run(data));
