//! The body, and what it feeds: fuzz/src/targets/router_reader.rs.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| nexus_fuzz::targets::router_reader::run(data));
