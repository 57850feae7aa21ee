//! The body, and what it feeds: fuzz/src/targets/peft_adapter.rs.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| nexus_fuzz::targets::peft_adapter::run(data));
