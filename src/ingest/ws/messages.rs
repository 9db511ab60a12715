//! The text messages of the WebSocket ingest protocol (`/ingest/ws`), both ways, as typed values:
//! parsing what a client sends (hostile: bounded in size before it is parsed, and every field
//! checked) and writing what the server answers. The README's "Go live from a browser" section
//! documents the same protocol for other clients.

use serde::{Deserialize, Serialize};

/// The largest text message a client may send: a key and a MIME type fit many times over.
pub const MAX_TEXT: usize = 4096;
/// The longest MIME type taken (`MediaRecorder.mimeType`, with its codecs parameter).
const MAX_MIME: usize = 200;
/// What a malformed opening message is told, before the position of the fault. The message
/// may hold a key, so nothing of it is quoted.
pub const HELLO_EXPECTED: &str = "the first message must be {\"key\": …, \"mime\": …}";
/// As `HELLO_EXPECTED`, for the messages after it.
pub const CONTROL_EXPECTED: &str =
    "expected {\"type\": \"recording\", \"mime\": …} or {\"type\": \"stop\"}";
/// What an opening message with an empty key is told.
pub const EMPTY_KEY: &str = "the key is empty";

/// `expected` and where in the message the parser stopped.
fn at_position(expected: &str, e: &serde_json::Error) -> MessageError {
    MessageError::Malformed(format!(
        "{expected} (line {}, column {})",
        e.line(),
        e.column()
    ))
}

#[derive(Debug, thiserror::Error, PartialEq)]
pub enum MessageError {
    #[error("a text message of {0} bytes (at most {MAX_TEXT})")]
    TooLong(usize),
    #[error("not a message of this protocol: {0}")]
    Malformed(String),
    #[error("the recording's type `{0}` is not one Strata reads (WebM/Matroska or MP4)")]
    UnsupportedMime(String),
}

/// The container a recording arrives in, from the client's MIME type.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Container {
    /// WebM or Matroska (Chromium and Firefox's `MediaRecorder`).
    Matroska,
    /// MP4, fragmented (Safari's `MediaRecorder`).
    Mp4,
}

impl Container {
    /// The container of `mime` (`video/webm;codecs=vp8,opus`, `video/mp4`, …).
    pub fn from_mime(mime: &str) -> Result<Self, MessageError> {
        let unsupported = || MessageError::UnsupportedMime(printable(mime));
        if mime.len() > MAX_MIME {
            return Err(unsupported());
        }
        let essence = mime.split(';').next().unwrap_or("").trim();
        match essence.to_ascii_lowercase().as_str() {
            // video only: a broadcast's ladder starts at its first video keyframe
            "video/webm" | "video/x-matroska" => Ok(Container::Matroska),
            "video/mp4" => Ok(Container::Mp4),
            _ => Err(unsupported()),
        }
    }

    /// The name the demuxer child takes on its command line.
    pub fn name(self) -> &'static str {
        match self {
            Container::Matroska => "matroska",
            Container::Mp4 => "mp4",
        }
    }

    pub fn from_name(name: &str) -> Option<Self> {
        match name {
            "matroska" => Some(Container::Matroska),
            "mp4" => Some(Container::Mp4),
            _ => None,
        }
    }
}

/// At most 64 characters of `text`, control characters replaced: safe to log and to echo.
fn printable(text: &str) -> String {
    text.chars()
        .take(64)
        .map(|c| if c.is_control() { '?' } else { c })
        .collect()
}

/// The first message: who publishes, and what the recording is.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct HelloWire {
    key: String,
    mime: String,
}

/// A client's opening message, checked.
#[derive(PartialEq)]
pub struct Hello {
    pub key: String,
    pub container: Container,
}

impl std::fmt::Debug for Hello {
    // the key is a secret: never printed
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Hello")
            .field("container", &self.container)
            .finish_non_exhaustive()
    }
}

impl Hello {
    pub fn parse(text: &str) -> Result<Self, MessageError> {
        if text.len() > MAX_TEXT {
            return Err(MessageError::TooLong(text.len()));
        }
        // serde's message may quote the input, which holds the key: only its position
        let wire: HelloWire =
            serde_json::from_str(text).map_err(|e| at_position(HELLO_EXPECTED, &e))?;
        if wire.key.is_empty() {
            return Err(MessageError::Malformed(EMPTY_KEY.into()));
        }
        Ok(Self {
            container: Container::from_mime(&wire.mime)?,
            key: wire.key,
        })
    }
}

/// A text message after the first.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case", deny_unknown_fields)]
enum ControlWire {
    Recording { mime: String },
    Stop,
}

/// What a client may say once it is live.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Control {
    /// A new recording starts with the next binary message (a new container header).
    Recording(Container),
    /// The publisher is done: end the broadcast now, no reconnect grace.
    Stop,
}

impl Control {
    pub fn parse(text: &str) -> Result<Self, MessageError> {
        if text.len() > MAX_TEXT {
            return Err(MessageError::TooLong(text.len()));
        }
        // serde's message may quote the input, which may hold a key: only its position
        let wire: ControlWire =
            serde_json::from_str(text).map_err(|e| at_position(CONTROL_EXPECTED, &e))?;
        Ok(match wire {
            ControlWire::Recording { mime } => Control::Recording(Container::from_mime(&mime)?),
            ControlWire::Stop => Control::Stop,
        })
    }
}

/// Why the server closes a client's socket (`code` in an `error` message).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum ErrorCode {
    /// The key is unknown (or was rotated).
    BadKey,
    /// A message out of protocol.
    BadRequest,
    /// The recording cannot be read, or its codecs are not ones Strata decodes.
    Unsupported,
    /// A binary message over the limit.
    TooLarge,
    /// The webhook refused, or the stream is live on another node.
    Refused,
    /// The server cannot take the broadcast now (too many, shutting down).
    Busy,
    /// Stopped from the API, taken over by another publisher, or the broadcast stopped.
    Ended,
}

/// What the server tells a client.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum ServerMessage {
    /// The publish was accepted (`resumed`: it continues a broadcast in its reconnect grace).
    Live {
        stream: String,
        playback_id: String,
        watch_url: String,
        resumed: bool,
    },
    /// About once a second while live.
    Status {
        received_bytes: u64,
        bitrate_kbps: f64,
        video: Option<String>,
        audio: Option<String>,
    },
    /// Then the server closes the socket.
    Error { code: ErrorCode, message: String },
    /// After the client's `stop`, then the server closes the socket.
    Ended { reason: String },
}

impl ServerMessage {
    pub fn to_json(&self) -> String {
        // plain strings, numbers and options: serialization cannot fail
        serde_json::to_string(self).unwrap_or_default()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_opening_message_gives_the_key_and_the_container() {
        let hello = Hello::parse(r#"{"key":"sk_1","mime":"video/webm;codecs=vp8,opus"}"#).unwrap();
        assert_eq!(
            (hello.key.as_str(), hello.container),
            ("sk_1", Container::Matroska)
        );
        let mp4 = Hello::parse(r#"{"key":"k","mime":"video/mp4;codecs=avc1.42E01F,mp4a.40.2"}"#);
        assert_eq!(mp4.unwrap().container, Container::Mp4);
        assert!(!format!(
            "{:?}",
            Hello::parse(r#"{"key":"sk_secret","mime":"video/webm"}"#)
        )
        .contains("sk_secret"));
    }

    #[test]
    fn bad_opening_messages_are_refused_without_echoing_the_key() {
        for bad in [
            r#"{"key":"","mime":"video/webm"}"#,
            r#"{"key":"sk_secret"}"#,
            r#"{"key":"sk_secret","mime":"video/webm","extra":1}"#,
            r#"["sk_secret"]"#,
            "sk_secret",
        ] {
            let e = Hello::parse(bad).unwrap_err();
            assert!(!e.to_string().contains("sk_secret"), "{e}");
        }
        assert!(matches!(
            Hello::parse(r#"{"key":"k","mime":"application/x-mpegurl"}"#),
            Err(MessageError::UnsupportedMime(_))
        ));
        let long = format!(
            r#"{{"key":"{}","mime":"video/webm"}}"#,
            "k".repeat(MAX_TEXT)
        );
        assert!(matches!(Hello::parse(&long), Err(MessageError::TooLong(_))));
    }

    #[test]
    fn controls_parse_and_server_messages_are_tagged() {
        assert_eq!(Control::parse(r#"{"type":"stop"}"#), Ok(Control::Stop));
        assert_eq!(
            Control::parse(r#"{"type":"recording","mime":"video/webm;codecs=vp9"}"#),
            Ok(Control::Recording(Container::Matroska))
        );
        assert!(Control::parse(r#"{"type":"launch"}"#).is_err());
        let key_again = r#"{"key":"sk_secret_key","mime":"video/webm"}"#;
        assert!(!Control::parse(key_again)
            .unwrap_err()
            .to_string()
            .contains("sk_secret"));
        assert!(Container::from_mime("audio/webm;codecs=opus").is_err());
        let error = ServerMessage::Error {
            code: ErrorCode::BadKey,
            message: "no".into(),
        };
        assert_eq!(
            error.to_json(),
            r#"{"type":"error","code":"bad_key","message":"no"}"#
        );
    }
}
