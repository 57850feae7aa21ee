//! The body, and what it feeds: fuzz/src/targets/onnx_voice.rs.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| nexus_fuzz::targets::onnx_voice::run(data));
