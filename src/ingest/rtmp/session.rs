//! rml_rtmp's `ServerSession` behind our guard. Received bytes go through `ChunkGuard`; each
//! complete, validated message is re-serialized as one type-0 chunk (chunk size 16 MiB,
//! announced to rml_rtmp once at start) and only then handed to rml_rtmp. Every call into
//! rml_rtmp also runs under `catch_unwind`: a panic we did not foresee closes this connection
//! with an error instead of unwinding through the server.

use std::panic::{catch_unwind, AssertUnwindSafe};

use rml_rtmp::chunk_io::ChunkSerializer;
use rml_rtmp::messages::MessagePayload;
use rml_rtmp::sessions::{
    ServerSession, ServerSessionConfig, ServerSessionError, ServerSessionEvent, ServerSessionResult,
};
use rml_rtmp::time::RtmpTimestamp;

use super::guard::{ChunkGuard, GuardError, GuardLimits};

/// The chunk size rml_rtmp is told about: every forwarded message fits in one chunk.
const FORWARD_CHUNK_SIZE: u32 = 0x00FF_FFFF;

#[derive(Debug, thiserror::Error)]
pub enum SessionError {
    #[error(transparent)]
    Guard(#[from] GuardError),
    #[error("RTMP session: {0}")]
    Rml(String),
    #[error("RTMP session library panicked on this input: {0}")]
    Panicked(String),
}

impl From<ServerSessionError> for SessionError {
    fn from(e: ServerSessionError) -> Self {
        SessionError::Rml(e.to_string())
    }
}

fn guarded<T>(f: impl FnOnce() -> Result<T, ServerSessionError>) -> Result<T, SessionError> {
    match catch_unwind(AssertUnwindSafe(f)) {
        Ok(result) => Ok(result?),
        Err(panic) => {
            let what = panic
                .downcast_ref::<&str>()
                .map(|s| s.to_string())
                .or_else(|| panic.downcast_ref::<String>().cloned())
                .unwrap_or_else(|| "unknown panic".into());
            Err(SessionError::Panicked(what))
        }
    }
}

pub struct GuardedSession {
    guard: ChunkGuard,
    forward: ChunkSerializer,
    session: ServerSession,
}

impl GuardedSession {
    /// A new session and the bytes to send the peer first.
    pub fn new(limits: GuardLimits) -> Result<(Self, Vec<u8>), SessionError> {
        let (mut session, results) = guarded(|| ServerSession::new(ServerSessionConfig::new()))?;
        let mut forward = ChunkSerializer::new();
        let announce = forward
            .set_max_chunk_size(FORWARD_CHUNK_SIZE, RtmpTimestamp::new(0))
            .map_err(|e| SessionError::Rml(e.to_string()))?;
        guarded(|| session.handle_input(&announce.bytes))?;
        let mut hello = Vec::new();
        split_results(results, &mut hello);
        let this = Self {
            guard: ChunkGuard::new(limits),
            forward,
            session,
        };
        Ok((this, hello))
    }

    /// Feeds received bytes. Returns bytes to send and the session's events.
    pub fn input(
        &mut self,
        bytes: &[u8],
    ) -> Result<(Vec<u8>, Vec<ServerSessionEvent>), SessionError> {
        let mut out = Vec::new();
        let mut events = Vec::new();
        for message in self.guard.push(bytes)? {
            let payload = MessagePayload {
                timestamp: RtmpTimestamp::new(message.timestamp),
                type_id: message.type_id,
                message_stream_id: message.stream_id,
                data: message.payload,
            };
            let packet = self
                .forward
                .serialize(&payload, true, false)
                .map_err(|e| SessionError::Rml(e.to_string()))?;
            let results = guarded(|| self.session.handle_input(&packet.bytes))?;
            events.extend(split_results(results, &mut out));
        }
        Ok((out, events))
    }

    /// Accepts a connect/publish request; returns bytes to send.
    pub fn accept(&mut self, request_id: u32) -> Result<Vec<u8>, SessionError> {
        let results = guarded(|| self.session.accept_request(request_id))?;
        let mut out = Vec::new();
        split_results(results, &mut out);
        Ok(out)
    }

    /// Rejects a request with an `onStatus` error `code`; returns bytes to send.
    pub fn reject(
        &mut self,
        request_id: u32,
        code: &str,
        description: &str,
    ) -> Result<Vec<u8>, SessionError> {
        let results = guarded(|| self.session.reject_request(request_id, code, description))?;
        let mut out = Vec::new();
        split_results(results, &mut out);
        Ok(out)
    }
}

/// Appends outbound packets to `out`; returns the events. Messages rml_rtmp cannot handle
/// (`releaseStream`, `FCPublish`, `_checkbw`, aggregate messages) are dropped here.
fn split_results(results: Vec<ServerSessionResult>, out: &mut Vec<u8>) -> Vec<ServerSessionEvent> {
    let mut events = Vec::new();
    for result in results {
        match result {
            ServerSessionResult::OutboundResponse(packet) => out.extend_from_slice(&packet.bytes),
            ServerSessionResult::RaisedEvent(event) => events.push(event),
            ServerSessionResult::UnhandleableMessageReceived(_) => {}
        }
    }
    events
}
