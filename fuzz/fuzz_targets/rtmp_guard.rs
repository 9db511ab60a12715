//! Arbitrary bytes after the handshake: the chunk guard must return messages or an error,
//! never panic, and AMF checking must terminate.
#![no_main]

use libfuzzer_sys::fuzz_target;
use strata::ingest::rtmp::guard::{ChunkGuard, GuardLimits};

fuzz_target!(|data: &[u8]| {
    let mut guard = ChunkGuard::new(GuardLimits::new(1 << 20));
    for piece in data.chunks(97) {
        if guard.push(piece).is_err() {
            break;
        }
    }
});
