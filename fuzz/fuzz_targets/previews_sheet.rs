//! `strata::fuzz_harness::previews_sheet` (its doc says what it feeds and asserts).
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| strata::fuzz_harness::previews_sheet(data));
