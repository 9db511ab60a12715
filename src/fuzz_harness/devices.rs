//! Fuzz entry point for the device signaling protocol's text messages, both directions: what a
//! device sends the server (`DeviceMessage`) and what `strata device-agent` reads from the
//! server it was pointed at (`ServerMessage`).

use crate::devices::messages::{DeviceMessage, MessageError, ServerMessage, MAX_MESSAGE_BYTES};

/// The longest agent description `parse_hello` keeps, in characters.
const AGENT_CHARS: usize = 100;

/// One text message through `DeviceMessage::parse`, `DeviceMessage::parse_hello` and the
/// agent's `ServerMessage` parser. Nothing over `MAX_MESSAGE_BYTES` parses; an error's text
/// never holds the input (a token sent in the wrong field must not reach a log); a hello's
/// agent is short and free of control characters; a server message that parses serializes
/// back to one that parses to the same message.
pub fn device_messages(data: &[u8]) {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    match DeviceMessage::parse(text) {
        Ok(_) => assert!(text.len() <= MAX_MESSAGE_BYTES),
        Err(error) => assert_not_echoed(&error, text),
    }
    match DeviceMessage::parse_hello(text) {
        Ok((_, agent)) => {
            let agent = agent.unwrap_or_default();
            assert!(agent.chars().count() <= AGENT_CHARS);
            assert!(!agent.chars().any(char::is_control), "{agent:?}");
        }
        Err(error) => assert_not_echoed(&error, text),
    }
    if let Ok(message) = serde_json::from_str::<ServerMessage>(text) {
        let again: ServerMessage = serde_json::from_str(&message.to_json())
            .unwrap_or_else(|e| panic!("{message:?} does not parse back: {e}"));
        assert_eq!(again, message);
    }
}

/// An error's text is one of the fixed texts, numbers aside (a line, a column, a version):
/// nothing of the input can be in it. (The fuzzer feeds the texts back; a substring check
/// would take that for an echo.)
fn assert_not_echoed(error: &MessageError, text: &str) {
    let known = [
        MessageError::Malformed { line: 0, column: 0 },
        MessageError::TooLarge,
        MessageError::NotHello,
        MessageError::UnsupportedVersion(0),
    ]
    .map(|e| numbers_blanked(&e.to_string()));
    let shown = numbers_blanked(&error.to_string());
    assert!(
        known.contains(&shown),
        "an error text that is not a fixed one, for {} input bytes: {error}",
        text.len()
    );
}

/// `s` with every run of digits replaced by one `#`.
fn numbers_blanked(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        if !c.is_ascii_digit() {
            out.push(c);
        } else if !out.ends_with('#') {
            out.push('#');
        }
    }
    out
}
