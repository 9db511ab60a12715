//! The SRT stream id of a publisher → its stream key. Pure.
//!
//! Two forms are accepted, as SRT encoders send them:
//! - the access-control syntax `#!::r=live/KEY,m=publish` (OBS, ffmpeg `?streamid=`, vMix):
//!   `r` is the resource, `m` the mode. A missing `m` is taken as `publish` (the SRT guidelines
//!   default to `request`, but an ingest server only takes publishers and many encoder UIs drop
//!   it); `request` or `bidirectional` are refused: Strata plays over HLS and DASH, not SRT.
//! - a bare string: `live/KEY` or `KEY`.
//!
//! The resource may carry the RTMP application name (`live/`) in front of the key, so the same
//! key works in both URL shapes. Other keys (`u`, `s`, `t`, custom ones) are ignored.

/// The longest stream id SRT carries.
pub const MAX_LEN: usize = 512;
const ACCESS_CONTROL_PREFIX: &str = "#!::";

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum StreamIdError {
    #[error("no stream id (put the stream key in it: ?streamid=#!::r=live/KEY,m=publish)")]
    Empty,
    #[error("stream id longer than {MAX_LEN} bytes")]
    TooLong,
    #[error("stream id `#!::` without an `r=` resource (expected #!::r=live/KEY,m=publish)")]
    NoResource,
    #[error("stream id mode `{0}`: this server only accepts publishers (m=publish); watch over HLS or DASH")]
    NotPublish(String),
    #[error("stream id names application `{0}`; this server's is `{1}`")]
    WrongApp(String, String),
}

/// The stream key a publisher's stream id carries; `app` is the RTMP application (`live`).
pub fn publish_key<'a>(stream_id: &'a str, app: &str) -> Result<&'a str, StreamIdError> {
    if stream_id.len() > MAX_LEN {
        return Err(StreamIdError::TooLong);
    }
    let resource = match stream_id.strip_prefix(ACCESS_CONTROL_PREFIX) {
        Some(pairs) => {
            let mut resource = None;
            for pair in pairs.split(',') {
                let (name, value) = pair.split_once('=').unwrap_or((pair, ""));
                match name.trim() {
                    "r" => resource = Some(value.trim()),
                    "m" if value.trim() != "publish" => {
                        return Err(StreamIdError::NotPublish(value.trim().to_string()))
                    }
                    _ => {}
                }
            }
            resource.ok_or(StreamIdError::NoResource)?
        }
        None => stream_id.trim(),
    };
    // encoders append `?options`, as they do to RTMP keys
    let resource = resource.split('?').next().unwrap_or_default();
    let key = match resource.rsplit_once('/') {
        Some((prefix, key)) => {
            let prefix = prefix.trim_matches('/');
            if prefix != app.trim_matches('/') {
                return Err(StreamIdError::WrongApp(prefix.into(), app.into()));
            }
            key
        }
        None => resource,
    };
    if key.is_empty() {
        return Err(StreamIdError::Empty);
    }
    Ok(key)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_access_control_syntax_and_a_bare_key_give_the_key() {
        let key = "sk_abc123";
        for id in [
            "#!::r=live/sk_abc123,m=publish",
            "#!::m=publish,r=live/sk_abc123",
            "#!::r=sk_abc123,m=publish,u=obs",
            "#!::r=live/sk_abc123",
            "live/sk_abc123",
            "sk_abc123",
            "/live/sk_abc123?bitrate=6000",
        ] {
            assert_eq!(publish_key(id, "live"), Ok(key), "{id}");
        }
    }

    #[test]
    fn players_other_apps_and_empty_ids_are_refused() {
        assert_eq!(
            publish_key("#!::r=live/sk_1,m=request", "live"),
            Err(StreamIdError::NotPublish("request".into()))
        );
        assert_eq!(
            publish_key("#!::m=publish", "live"),
            Err(StreamIdError::NoResource)
        );
        assert_eq!(
            publish_key("other/sk_1", "live"),
            Err(StreamIdError::WrongApp("other".into(), "live".into()))
        );
        assert_eq!(publish_key("", "live"), Err(StreamIdError::Empty));
        assert_eq!(publish_key("live/", "live"), Err(StreamIdError::Empty));
        assert_eq!(
            publish_key(&"k".repeat(MAX_LEN + 1), "live"),
            Err(StreamIdError::TooLong)
        );
    }
}
