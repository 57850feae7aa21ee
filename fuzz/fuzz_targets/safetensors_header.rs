//! The body, and what it feeds: fuzz/src/targets/safetensors_header.rs.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| nexus_fuzz::targets::safetensors_header::run(data));
