//! The body, and what it feeds: fuzz/src/targets/lora_adapter.rs.
#![no_main]

libfuzzer_sys::fuzz_target!(init: nexus_fuzz::targets::lora_adapter::init(), |data: &[u8]| nexus_fuzz::targets::lora_adapter::run(data));
