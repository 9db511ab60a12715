//! The device signaling protocol, version 1: JSON text messages over a WebSocket
//! (`GET /ingest/device`), each an object with a `type`. The README's "Devices" section is the
//! reference for device makers; `strata device-agent` (`devices::agent`) is the reference
//! client.
//!
//! Device → server: `hello` (first, within `devices.hello_timeout`: `version`, optional
//! `token` when no `Authorization: Bearer` header carried it, optional `agent`), `pong` (answers
//! `ping`), `heartbeat`, `status` (what the device is doing, as it reports it).
//! Server → device: `welcome`, `ping` (the round-trip time is measured on it), `start` (where
//! and how to send RTP), `stop`, `keyframe` (send an IDR now), `bitrate`, `error` (then the
//! socket closes).
//!
//! Parsing is strict on what the server relies on (`type`, `version`, numbers in range) and
//! ignores unknown fields, so a newer device still talks to an older server. Messages are at
//! most `MAX_MESSAGE_BYTES`; error texts never quote the input (a token pasted in the wrong
//! field must not be echoed or logged).

use serde::{Deserialize, Serialize};

/// The protocol version this server speaks.
pub const VERSION: u32 = 1;
/// The largest message a device may send.
pub const MAX_MESSAGE_BYTES: usize = 16 * 1024;
/// What a device's first message must look like, for error texts.
pub const HELLO_EXPECTED: &str =
    "{\"type\": \"hello\", \"version\": 1, \"token\": … (or an Authorization header)}";

#[derive(Debug, thiserror::Error, PartialEq)]
pub enum MessageError {
    #[error("not a signaling message (expected a JSON object with a known `type`, line {line}, column {column})")]
    Malformed { line: usize, column: usize },
    #[error("message over {MAX_MESSAGE_BYTES} bytes")]
    TooLarge,
    #[error("the first message must be `hello`: {HELLO_EXPECTED}")]
    NotHello,
    #[error("protocol version {0} is not supported (this server speaks {VERSION})")]
    UnsupportedVersion(u32),
}

/// A message from a device.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum DeviceMessage {
    Hello {
        version: u32,
        #[serde(default)]
        token: Option<Token>,
        #[serde(default)]
        agent: Option<String>,
    },
    Pong {
        seq: u64,
    },
    Heartbeat,
    Status(DeviceReport),
}

/// A device token as a message carries it; `Debug` does not show it, so no log line can.
#[derive(Clone, PartialEq, Deserialize)]
#[serde(transparent)]
pub struct Token(String);

impl std::fmt::Debug for Token {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Token(…)")
    }
}

/// What a device says it is doing (`status`); shown in the API as it was reported.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct DeviceReport {
    /// `idle` or `streaming`, as the device sees it.
    #[serde(default)]
    pub state: Option<DeviceState>,
    /// The bit rate the device's encoder is set to.
    #[serde(default)]
    pub bitrate_kbps: Option<u32>,
    /// RTP packets sent since the device started streaming.
    #[serde(default)]
    pub packets_sent: Option<u64>,
    /// Keyframe requests the device has received on this socket.
    #[serde(default)]
    pub keyframe_requests: Option<u64>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum DeviceState {
    Idle,
    Streaming,
}

impl DeviceMessage {
    /// Parses one text message.
    pub fn parse(text: &str) -> Result<Self, MessageError> {
        if text.len() > MAX_MESSAGE_BYTES {
            return Err(MessageError::TooLarge);
        }
        serde_json::from_str(text).map_err(|e| MessageError::Malformed {
            line: e.line(),
            column: e.column(),
        })
    }

    /// Parses the opening message: a `hello` of this protocol's version. Returns the token it
    /// carries (if any) and the agent's self-description (at most 100 characters).
    pub fn parse_hello(text: &str) -> Result<(Option<String>, Option<String>), MessageError> {
        match Self::parse(text)? {
            DeviceMessage::Hello { version, .. } if version != VERSION => {
                Err(MessageError::UnsupportedVersion(version))
            }
            DeviceMessage::Hello { token, agent, .. } => Ok((
                token.map(|t| t.0),
                agent.map(|a| a.chars().filter(|c| !c.is_control()).take(100).collect()),
            )),
            _ => Err(MessageError::NotHello),
        }
    }
}

/// Where and how a device sends its media (`start`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct MediaTarget {
    /// Always `rtp/udp`.
    pub transport: String,
    pub host: String,
    pub port: u16,
    pub ssrc: u32,
    pub payload_type: u8,
    pub clock_rate: u32,
    /// Always `H264` (RFC 6184, packetization mode 1: single NAL units, STAP-A, FU-A).
    pub codec: String,
    /// The largest RTP packet (header included) the server takes.
    pub max_packet_size: usize,
}

/// A message to a device.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum ServerMessage {
    Welcome {
        version: u32,
        device_id: String,
        name: String,
        stream_id: String,
        /// How often the server pings; a device silent for three of these is offline.
        heartbeat_secs: u64,
    },
    Ping {
        seq: u64,
    },
    Start {
        media: MediaTarget,
        bitrate_kbps: u32,
    },
    Stop {
        reason: String,
    },
    Keyframe,
    Bitrate {
        kbps: u32,
    },
    Error {
        code: ErrorCode,
        message: String,
    },
}

impl ServerMessage {
    pub fn to_json(&self) -> String {
        // serializing these plain structs cannot fail
        serde_json::to_string(self).unwrap_or_else(|_| "{}".into())
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ErrorCode {
    /// Unknown, rotated or revoked token.
    BadToken,
    BadRequest,
    UnsupportedVersion,
    /// Another connection of the same device took over.
    Replaced,
    /// The device was deleted, or its token rotated or revoked, while it was connected.
    Revoked,
    /// The server is shutting down or cannot check tokens now: try again.
    Busy,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hello_carries_the_token_and_a_clean_agent_name() {
        let (token, agent) = DeviceMessage::parse_hello(
            r#"{"type":"hello","version":1,"token":"dt_x","agent":"pi\u0007cam","extra":1}"#,
        )
        .unwrap();
        assert_eq!(token.as_deref(), Some("dt_x"));
        assert_eq!(agent.as_deref(), Some("picam"));
        assert_eq!(
            DeviceMessage::parse_hello(r#"{"type":"hello","version":1}"#).unwrap(),
            (None, None)
        );
    }

    #[test]
    fn wrong_openings_are_refused_without_echoing_them() {
        assert_eq!(
            DeviceMessage::parse_hello(r#"{"type":"hello","version":2,"token":"dt_secret"}"#),
            Err(MessageError::UnsupportedVersion(2))
        );
        assert_eq!(
            DeviceMessage::parse_hello(r#"{"type":"heartbeat"}"#),
            Err(MessageError::NotHello)
        );
        let e = DeviceMessage::parse_hello(r#"{"type":"helo","token":"dt_secret"}"#).unwrap_err();
        assert!(!e.to_string().contains("dt_secret"), "{e}");
        let e = DeviceMessage::parse(&"x".repeat(MAX_MESSAGE_BYTES + 1)).unwrap_err();
        assert_eq!(e, MessageError::TooLarge);
    }

    #[test]
    fn a_token_never_shows_in_debug_output() {
        let hello = DeviceMessage::parse(r#"{"type":"hello","version":1,"token":"dt_secret"}"#);
        assert!(!format!("{hello:?}").contains("dt_secret"));
    }

    #[test]
    fn status_and_pong_parse_and_unknown_fields_are_ignored() {
        assert_eq!(
            DeviceMessage::parse(r#"{"type":"pong","seq":7}"#).unwrap(),
            DeviceMessage::Pong { seq: 7 }
        );
        let status = DeviceMessage::parse(
            r#"{"type":"status","state":"streaming","keyframe_requests":2,"temperature":51}"#,
        )
        .unwrap();
        assert_eq!(
            status,
            DeviceMessage::Status(DeviceReport {
                state: Some(DeviceState::Streaming),
                keyframe_requests: Some(2),
                ..DeviceReport::default()
            })
        );
        assert!(DeviceMessage::parse(r#"{"type":"pong","seq":-1}"#).is_err());
    }

    #[test]
    fn server_messages_have_their_documented_shape() {
        let start = ServerMessage::Start {
            media: MediaTarget {
                transport: "rtp/udp".into(),
                host: "127.0.0.1".into(),
                port: 5004,
                ssrc: 42,
                payload_type: 96,
                clock_rate: 90_000,
                codec: "H264".into(),
                max_packet_size: 1400,
            },
            bitrate_kbps: 2500,
        };
        let json: serde_json::Value = serde_json::from_str(&start.to_json()).unwrap();
        assert_eq!(json["type"], "start");
        assert_eq!(json["media"]["ssrc"], 42);
        assert_eq!(ServerMessage::Keyframe.to_json(), r#"{"type":"keyframe"}"#);
        let error = ServerMessage::Error {
            code: ErrorCode::BadToken,
            message: "m".into(),
        };
        assert_eq!(
            error.to_json(),
            r#"{"type":"error","code":"bad_token","message":"m"}"#
        );
    }
}
