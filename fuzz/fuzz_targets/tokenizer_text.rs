//! The body, and what it feeds: fuzz/src/targets/tokenizer_text.rs.
#![no_main]

libfuzzer_sys::fuzz_target!(init: nexus_fuzz::targets::tokenizer_text::init(), |data: &[u8]| nexus_fuzz::targets::tokenizer_text::run(data));
