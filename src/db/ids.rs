//! Identifiers the server generates: stream and device ids, public playback ids, recording ids,
//! secret stream keys and device tokens. Object keys and URLs are built only from these, never from client strings.

use std::sync::Arc;

use hmac::{Hmac, Mac};
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

/// A clip's id: public (its objects live under `vod/{id}/`, like a recording's).
pub fn new_clip_id() -> String {
    random_string(PUBLIC_ID_LEN)
}

/// A new secret stream key (`sk_` + 32 characters ≈ 165 bits).
pub fn new_stream_key() -> String {
    format!("{KEY_PREFIX}{}", random_string(32))
}

/// Every device token starts with this (see `KEY_PREFIX`).
pub const DEVICE_TOKEN_PREFIX: &str = "dt_";

pub fn new_device_id() -> String {
    format!("dev_{}", random_string(PUBLIC_ID_LEN))
}

/// A new secret device token (`dt_` + 32 characters ≈ 165 bits).
pub fn new_device_token() -> String {
    format!("{DEVICE_TOKEN_PREFIX}{}", random_string(32))
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

/// What the database stores instead of a stream key: HMAC-SHA256 keyed with the server secret,
/// so a copy of the database alone cannot be used to test guesses offline.
#[derive(Clone)]
pub struct KeyHasher {
    secret: Arc<[u8]>,
}

/// Marks keyed hashes; a bare 64-hex value is the unkeyed SHA-256 of earlier versions.
const KEYED_PREFIX: &str = "h1:";

impl KeyHasher {
    pub fn new(secret: &[u8]) -> Self {
        Self {
            secret: secret.into(),
        }
    }

    pub fn hash(&self, key: &str) -> String {
        // HMAC accepts a key of any length; `new_from_slice` cannot fail for it.
        let mut mac = match Hmac::<Sha256>::new_from_slice(&self.secret) {
            Ok(mac) => mac,
            Err(_) => return sha256_hex(key),
        };
        mac.update(key.as_bytes());
        format!("{KEYED_PREFIX}{}", hex::encode(mac.finalize().into_bytes()))
    }
}

impl std::fmt::Debug for KeyHasher {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("KeyHasher(..)")
    }
}

/// Unkeyed SHA-256, hex: what databases created before keyed hashes hold for stream keys
/// (accepted once, then replaced by the keyed hash), and how admin tokens are stored (long and
/// random, so no key is needed).
pub fn sha256_hex(key: &str) -> String {
    hex::encode(Sha256::digest(key.as_bytes()))
}

/// A new random secret (hex, 256 bits) for key hashing or admin tokens.
pub fn new_secret() -> String {
    let bytes: [u8; 32] = rand::rng().random();
    hex::encode(bytes)
}

/// A new admin API token (`st_` + 40 characters).
pub fn new_admin_token() -> String {
    format!("st_{}", random_string(40))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn generated_ids_have_their_shape() {
        assert!(is_public_id(&new_playback_id()));
        assert!(new_stream_key().starts_with("sk_"));
        assert!(new_device_token().starts_with("dt_"));
        assert!(new_device_id().starts_with("dev_"));
        assert_ne!(new_stream_key(), new_stream_key());
        assert!(!is_public_id("../../etc/passwd"));
        assert!(!is_public_id("ABCDEFGHIJKLMNOP"));
    }

    #[test]
    fn key_hashes_depend_on_the_server_secret() {
        let a = KeyHasher::new(b"one secret");
        let b = KeyHasher::new(b"another secret");
        assert_eq!(a.hash("sk_x"), a.hash("sk_x"));
        assert_ne!(a.hash("sk_x"), b.hash("sk_x"));
        assert_ne!(a.hash("sk_x"), sha256_hex("sk_x"));
        assert!(!a.hash("sk_x").contains("sk_x"));
    }
}
