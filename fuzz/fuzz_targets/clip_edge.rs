//! `strata::fuzz_harness::clip_edge` (its doc says what it feeds and asserts).
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| strata::fuzz_harness::clip_edge(data));
