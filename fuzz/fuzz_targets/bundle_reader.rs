//! The body, and what it feeds: fuzz/src/targets/bundle_reader.rs.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| nexus_fuzz::targets::bundle_reader::run(data));
