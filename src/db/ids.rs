//! Identifiers the server generates: stream ids, public playback ids, recording ids and secret
//! stream keys. Object keys and URLs are built only from these, never from client strings.

use rand::Rng;
use sha2::{Digest, Sha256};

const ALPHABET: &[u8] = b"abcdefghijklmnopqrstuvwxyz0123456789";
/// Length of playback and recording ids (36^16 ≈ 2^82).
pub const PUBLIC_ID_LEN: usize = 16;
/// Every stream key starts with this, so a leaked key is easy to grep for.
pub const KEY_PREFIX: &str = "sk_";

fn random_string(len: usize) -> String {
    let mut rng = rand::rng();
    (0..len)
        .map(|_| char::from(ALPHABET[rng.random_range(0..ALPHABET.len())]))
        .collect()
}

pub fn new_stream_id() -> String {
    format!("str_{}", random_string(PUBLIC_ID_LEN))
}

pub fn new_playback_id() -> String {
    random_string(PUBLIC_ID_LEN)
}

pub fn new_recording_id() -> String {
    random_string(PUBLIC_ID_LEN)
}

/// A new secret stream key (`sk_` + 32 characters ≈ 165 bits).
pub fn new_stream_key() -> String {
    format!("{KEY_PREFIX}{}", random_string(32))
}

/// Whether `s` has the shape of a playback or recording id.
pub fn is_public_id(s: &str) -> bool {
    s.len() == PUBLIC_ID_LEN && s.bytes().all(|b| ALPHABET.contains(&b))
}

/// How names people choose (stream names, the RTMP application) may look.
pub const NAME_RULE: &str = "must be 1-64 characters of letters, digits, `-` and `_`";

/// Whether `s` follows `NAME_RULE`.
pub fn is_name(s: &str) -> bool {
    (1..=64).contains(&s.len())
        && s.bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
}

/// What the database stores instead of the key.
pub fn hash_key(key: &str) -> String {
    hex::encode(Sha256::digest(key.as_bytes()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn generated_ids_have_their_shape() {
        assert!(is_public_id(&new_playback_id()));
        assert!(new_stream_key().starts_with("sk_"));
        assert_ne!(new_stream_key(), new_stream_key());
        assert!(!is_public_id("../../etc/passwd"));
        assert!(!is_public_id("ABCDEFGHIJKLMNOP"));
    }
}
