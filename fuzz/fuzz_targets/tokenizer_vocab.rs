//! The body, and what it feeds: fuzz/src/targets/tokenizer_vocab.rs.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| nexus_fuzz::targets::tokenizer_vocab::run(data));
