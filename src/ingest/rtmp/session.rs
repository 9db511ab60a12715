//! rml_rtmp's `ServerSession` behind our guard. Received bytes go through `ChunkGuard`; each
//! complete, validated message is re-serialized as one type-0 chunk (chunk size 16 MiB,
//! announced to rml_rtmp once at start) and only then handed to rml_rtmp. Every call into
//! rml_rtmp also runs under `catch_unwind`: a panic we did not foresee closes this connection
//! with an error instead of unwinding through the server. The handshake runs under the same
//! guard (`handshake_step`).

use std::panic::{catch_unwind, AssertUnwindSafe};

use rml_rtmp::chunk_io::ChunkSerializer;
use rml_rtmp::handshake::{Handshake, HandshakeProcessResult};
use rml_rtmp::messages::MessagePayload;
use rml_rtmp::sessions::{
    ServerSession, ServerSessionConfig, ServerSessionError, ServerSessionEvent, ServerSessionResult,
};
use rml_rtmp::time::RtmpTimestamp;

use super::guard::{message_type, ChunkGuard, GuardError, GuardLimits};

/// The chunk size rml_rtmp is told about: every forwarded message fits in one chunk.
const FORWARD_CHUNK_SIZE: u32 = 0x00FF_FFFF;

#[derive(Debug, thiserror::Error)]
pub enum SessionError {
    #[error(transparent)]
    Guard(#[from] GuardError),
    #[error("RTMP session: {0}")]
    Rml(String),
    #[error("RTMP handshake: {0}")]
    Handshake(String),
    #[error("more than {0} createStream commands on one connection")]
    TooManyStreams(u32),
    #[error("RTMP session library panicked on this input: {0}")]
    Panicked(String),
}

impl From<ServerSessionError> for SessionError {
    fn from(e: ServerSessionError) -> Self {
        SessionError::Rml(e.to_string())
    }
}

fn guarded<T, E: Into<SessionError>>(f: impl FnOnce() -> Result<T, E>) -> Result<T, SessionError> {
    match catch_unwind(AssertUnwindSafe(f)) {
        Ok(result) => result.map_err(Into::into),
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

/// One step of rml_rtmp's server handshake, under the panic guard.
pub fn handshake_step(
    handshake: &mut Handshake,
    bytes: &[u8],
) -> Result<HandshakeProcessResult, SessionError> {
    guarded(|| {
        handshake
            .process_bytes(bytes)
            .map_err(|e| SessionError::Handshake(format!("{e:?}")))
    })
}

/// Every way a publisher says it is done. rml_rtmp raises `PublishStreamFinished` only for a
/// `deleteStream` or `closeStream` that names the stream in its arguments; ffmpeg and OBS send
/// `FCUnpublish` first, and `closeStream` usually names the stream only in the message header.
const UNPUBLISH_COMMANDS: [&str; 3] = ["FCUnpublish", "closeStream", "deleteStream"];

/// `createStream`s one connection may send: rml_rtmp keeps a record per stream for the
/// connection's life (a publisher needs one).
const MAX_CREATE_STREAM: u32 = 16;

/// The name of an AMF0 command (its first value, a string); empty if it has none.
fn command_name(payload: &[u8]) -> &str {
    let name = match payload {
        [0x02, hi, lo, rest @ ..] => rest
            .get(..usize::from(u16::from_be_bytes([*hi, *lo])))
            .unwrap_or_default(),
        _ => &[],
    };
    std::str::from_utf8(name).unwrap_or_default()
}

/// What one batch of received bytes produced.
pub struct Input {
    /// Bytes to send the peer.
    pub out: Vec<u8>,
    pub events: Vec<ServerSessionEvent>,
    /// The unpublish command the peer sent, if any (see `UNPUBLISH_COMMANDS`).
    pub unpublished: Option<&'static str>,
}

pub struct GuardedSession {
    guard: ChunkGuard,
    forward: ChunkSerializer,
    session: ServerSession,
    streams_created: u32,
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
            streams_created: 0,
        };
        Ok((this, hello))
    }

    /// Feeds received bytes. Returns bytes to send and the session's events.
    pub fn input(&mut self, bytes: &[u8]) -> Result<Input, SessionError> {
        let mut out = Vec::new();
        let mut events = Vec::new();
        let mut unpublished = None;
        for message in self.guard.push(bytes)? {
            if message.type_id == message_type::AMF0_COMMAND {
                let name = command_name(&message.payload);
                if let Some(command) = UNPUBLISH_COMMANDS.iter().find(|c| **c == name) {
                    unpublished = unpublished.or(Some(*command));
                }
                if name == "createStream" {
                    self.streams_created += 1;
                    if self.streams_created > MAX_CREATE_STREAM {
                        return Err(SessionError::TooManyStreams(MAX_CREATE_STREAM));
                    }
                }
            }
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
        Ok(Input {
            out,
            events,
            unpublished,
        })
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn command_names_are_read_without_trusting_lengths() {
        let mut fc = vec![0x02, 0x00, 0x0B];
        fc.extend_from_slice(b"FCUnpublish");
        fc.extend_from_slice(&[0x00; 9]);
        assert_eq!(command_name(&fc), "FCUnpublish");
        assert!(UNPUBLISH_COMMANDS.contains(&command_name(&fc)));
        assert_eq!(command_name(&[0x02, 0xFF, 0xFF, b'a']), "");
        assert_eq!(command_name(&[0x02, 0x00, 0x01, 0xFF]), "");
        assert_eq!(command_name(&[0x00, 0x01]), "");
        assert_eq!(command_name(&[]), "");
    }
}
