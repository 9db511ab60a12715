//! RTMP targets: the chunk guard alone, and guard → rml_rtmp (`GuardedSession`) as one process
//! sees them. Input layout for both: byte 0 chooses the split points (see `Pieces`), the rest
//! is what a client sends after the handshake.

use rml_rtmp::sessions::ServerSessionEvent;

use super::Pieces;
use crate::ingest::flv::FlvDemuxer;
use crate::ingest::rtmp::guard::{message_type, ChunkGuard, GuardLimits};
use crate::ingest::rtmp::session::{GuardedSession, SessionError};

/// The default `rtmp.max_message_size` (the guard checks it on the header, so any value is
/// reachable).
const MAX_MESSAGE: u32 = 8 << 20;

/// Stack of the thread `rtmp_session` runs on: an eighth of a tokio worker's 2 MiB, so that a
/// nesting the guard failed to bound overflows with inputs of a few KB rather than ~80 KB.
/// Bounded input needs far less (the guard allows 16 levels of AMF0).
const SESSION_STACK: usize = 256 * 1024;

/// Arbitrary chunk streams into `ChunkGuard`. Asserts that the split points do not change the
/// outcome (the same messages, or the same error, as when the bytes arrive at once) and that
/// every message respects the limits.
pub fn rtmp_guard(data: &[u8]) {
    let Some((&split, stream)) = data.split_first() else {
        return;
    };
    let limits = GuardLimits::new(MAX_MESSAGE);
    let whole = ChunkGuard::new(limits.clone()).push(stream);
    let mut guard = ChunkGuard::new(limits.clone());
    let mut messages = Vec::new();
    let mut error = None;
    for piece in Pieces::new(stream, split) {
        match guard.push(piece) {
            Ok(m) => messages.extend(m),
            Err(e) => {
                error = Some(e);
                break;
            }
        }
    }
    match (whole, error) {
        (Ok(all), None) => assert!(all == messages, "split points changed the messages"),
        (Err(a), Some(b)) => assert_eq!(a, b, "split points changed the error"),
        (whole, pieces) => panic!("split points changed the outcome: {whole:?} vs {pieces:?}"),
    }
    for m in &messages {
        assert!(m.payload.len() <= MAX_MESSAGE as usize);
        if matches!(
            m.type_id,
            message_type::AMF0_COMMAND
                | message_type::AMF0_DATA
                | message_type::AMF3_COMMAND
                | message_type::AMF3_DATA
        ) {
            assert!(m.payload.len() <= limits.max_command_size);
        }
    }
}

/// Arbitrary chunk streams through guard → rml_rtmp in one process, accepting every connect
/// and publish (as a valid key would) and handing audio/video to the FLV demuxer. Must never
/// abort: not on a stack overflow, and not on a panic (in production `GuardedSession` catches a
/// panic in rml_rtmp and closes the connection; here it is a finding, and in the replay test
/// the caught panic is turned back into one).
pub fn rtmp_session(data: &[u8]) {
    let data = data.to_vec();
    let run = std::thread::Builder::new()
        .name("rtmp_session".into())
        .stack_size(SESSION_STACK)
        .spawn(move || session(&data));
    match run {
        Ok(thread) => {
            if let Err(panic) = thread.join() {
                std::panic::resume_unwind(panic);
            }
        }
        Err(e) => panic!("cannot start the session thread: {e}"),
    }
}

fn session(data: &[u8]) {
    let Some((&split, stream)) = data.split_first() else {
        return;
    };
    let (mut session, _hello) = match GuardedSession::new(GuardLimits::new(MAX_MESSAGE)) {
        Ok(s) => s,
        Err(e) => panic!("a new session failed: {e}"),
    };
    let mut demuxer = FlvDemuxer::new();
    for piece in Pieces::new(stream, split) {
        let events = match session.input(piece) {
            Ok(input) => input.events,
            Err(e) => return fail_on_panic(e),
        };
        for event in events {
            let reply = match event {
                ServerSessionEvent::ConnectionRequested { request_id, .. }
                | ServerSessionEvent::PublishStreamRequested { request_id, .. } => {
                    session.accept(request_id)
                }
                ServerSessionEvent::PlayStreamRequested { request_id, .. } => {
                    session.reject(request_id, "NetStream.Play.Failed", "publish only")
                }
                ServerSessionEvent::AudioDataReceived {
                    data, timestamp, ..
                } => {
                    let _ = demuxer.audio(data, timestamp.value);
                    continue;
                }
                ServerSessionEvent::VideoDataReceived {
                    data, timestamp, ..
                } => {
                    let _ = demuxer.video(data, timestamp.value);
                    continue;
                }
                _ => continue,
            };
            if let Err(e) = reply {
                return fail_on_panic(e);
            }
        }
    }
}

/// Errors close the connection (fine); a panic rml_rtmp raised is a finding.
fn fail_on_panic(error: SessionError) {
    if let SessionError::Panicked(what) = error {
        panic!("rml_rtmp panicked: {what}");
    }
}
