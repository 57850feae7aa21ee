//! The body, and what it feeds: fuzz/src/targets/chat_template.rs.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| nexus_fuzz::targets::chat_template::run(data));
