//! The body, and what it feeds: fuzz/src/targets/detokenize.rs.
#![no_main]

libfuzzer_sys::fuzz_target!(init: nexus_fuzz::targets::detokenize::init(), |data: &[u8]| nexus_fuzz::targets::detokenize::run(data));
