//! `strata::fuzz_harness::srt_stream_id` (its doc says what it feeds and asserts).
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| strata::fuzz_harness::srt_stream_id(data));
