//! The body, and what it feeds: fuzz/src/targets/gguf_reader.rs.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| nexus_fuzz::targets::gguf_reader::run(data));
