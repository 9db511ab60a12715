//! A pushed media playlist, as far as ingest needs it: the target duration, which file holds
//! which media sequence number, where a discontinuity or a new init segment (`EXT-X-MAP`)
//! starts, and whether the list has ended. Parsed with m3u8-rs; file names are checked here.
//!
//! A pusher names files relative to the playlist (`index7.ts`, `init.mp4`): a name is one
//! path segment of `[A-Za-z0-9._-]`, at most `MAX_NAME` characters, not starting with a dot.
//! A playlist listing anything else (an absolute URL, a path with `/`, a byte range) is
//! refused whole: Strata only takes what the pusher itself uploaded next to it.

use std::time::Duration;

/// Longest file name taken, in characters.
pub const MAX_NAME: usize = 96;
/// Most segments one pushed playlist may list.
pub const MAX_LISTED: usize = 2048;
/// Largest media sequence number taken: far beyond any real stream (2^48 two-second segments
/// is millions of years), and small enough that no arithmetic on it can overflow.
pub const MAX_SEQUENCE: u64 = 1 << 48;
/// Shortest and longest target durations taken (seconds).
const TARGET_RANGE: std::ops::RangeInclusive<u64> = 1..=30;

#[derive(Debug, thiserror::Error, PartialEq)]
pub enum PlaylistError {
    #[error("not a media playlist: {0}")]
    Parse(String),
    #[error("a listed file name is not one plain path segment: {0:?}")]
    BadName(String),
    #[error("byte ranges are not accepted in a pushed playlist")]
    ByteRange,
    #[error("EXT-X-TARGETDURATION {0} is outside 1–30 s")]
    Target(u64),
    #[error("the playlist lists {0} segments (at most {MAX_LISTED})")]
    TooMany(usize),
    #[error("EXT-X-MEDIA-SEQUENCE {0} is past {MAX_SEQUENCE}")]
    Sequence(u64),
}

/// One listed segment.
#[derive(Debug, Clone, PartialEq)]
pub struct Listed {
    pub msn: u64,
    pub name: String,
    /// `EXT-X-DISCONTINUITY` before it.
    pub discontinuity: bool,
    /// The init segment (`EXT-X-MAP`) in effect for it: fMP4 segments have one, MPEG-TS none.
    pub map: Option<String>,
}

#[derive(Debug, Clone, PartialEq)]
pub struct PushedPlaylist {
    pub target: Duration,
    pub segments: Vec<Listed>,
    /// `EXT-X-ENDLIST`: the pusher is done.
    pub ended: bool,
}

/// Whether `name` is a file name a pusher may use (see the module doc).
pub fn valid_name(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= MAX_NAME
        && !name.starts_with('.')
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'-'))
}

fn checked_name(name: &str) -> Result<String, PlaylistError> {
    if valid_name(name) {
        Ok(name.to_string())
    } else {
        Err(PlaylistError::BadName(
            name.chars().take(MAX_NAME).collect(),
        ))
    }
}

impl PushedPlaylist {
    pub fn parse(bytes: &[u8]) -> Result<Self, PlaylistError> {
        let playlist = m3u8_rs::parse_media_playlist_res(bytes)
            .map_err(|e| PlaylistError::Parse(e.to_string().chars().take(120).collect()))?;
        if !TARGET_RANGE.contains(&playlist.target_duration) {
            return Err(PlaylistError::Target(playlist.target_duration));
        }
        if playlist.segments.len() > MAX_LISTED {
            return Err(PlaylistError::TooMany(playlist.segments.len()));
        }
        if playlist.media_sequence > MAX_SEQUENCE {
            return Err(PlaylistError::Sequence(playlist.media_sequence));
        }
        let mut map = None;
        let mut segments = Vec::with_capacity(playlist.segments.len());
        for (i, segment) in playlist.segments.iter().enumerate() {
            if segment.byte_range.is_some() {
                return Err(PlaylistError::ByteRange);
            }
            if let Some(m) = &segment.map {
                if m.byte_range.is_some() {
                    return Err(PlaylistError::ByteRange);
                }
                map = Some(checked_name(&m.uri)?);
            }
            segments.push(Listed {
                msn: playlist.media_sequence + i as u64,
                name: checked_name(&segment.uri)?,
                discontinuity: segment.discontinuity,
                map: map.clone(),
            });
        }
        Ok(Self {
            target: Duration::from_secs(playlist.target_duration),
            segments,
            ended: playlist.end_list,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ffmpegs_fmp4_playlist_reads_with_its_map_and_sequence_numbers() {
        let text = "#EXTM3U\n#EXT-X-VERSION:7\n#EXT-X-TARGETDURATION:2\n#EXT-X-MEDIA-SEQUENCE:4\n\
            #EXT-X-MAP:URI=\"init.mp4\"\n#EXTINF:2.000000,\nlive4.m4s\n#EXTINF:2.000000,\nlive5.m4s\n\
            #EXT-X-DISCONTINUITY\n#EXTINF:1.000000,\nlive6.m4s\n#EXT-X-ENDLIST\n";
        let p = PushedPlaylist::parse(text.as_bytes()).unwrap();
        assert_eq!(p.target, Duration::from_secs(2));
        assert!(p.ended);
        let names: Vec<(u64, &str, bool)> = p
            .segments
            .iter()
            .map(|s| (s.msn, s.name.as_str(), s.discontinuity))
            .collect();
        assert_eq!(
            names,
            [
                (4, "live4.m4s", false),
                (5, "live5.m4s", false),
                (6, "live6.m4s", true)
            ]
        );
        assert!(p
            .segments
            .iter()
            .all(|s| s.map.as_deref() == Some("init.mp4")));
    }

    #[test]
    fn names_outside_the_pushers_folder_are_refused() {
        for bad in ["../x.ts", "http://a/b.ts", "a/b.ts", ".hidden.ts", "a b.ts"] {
            let text = format!("#EXTM3U\n#EXT-X-TARGETDURATION:2\n#EXTINF:2,\n{bad}\n");
            assert!(
                matches!(
                    PushedPlaylist::parse(text.as_bytes()),
                    Err(PlaylistError::BadName(_))
                ),
                "{bad}"
            );
        }
        assert!(valid_name("index12.ts") && valid_name("seg_00-1.m4s"));
        let far = "#EXTM3U\n#EXT-X-TARGETDURATION:2\n#EXT-X-MEDIA-SEQUENCE:18446744073709551615\n#EXTINF:2,\na.ts\n";
        assert!(matches!(
            PushedPlaylist::parse(far.as_bytes()),
            Err(PlaylistError::Sequence(_))
        ));
        let huge = "#EXTM3U\n#EXT-X-TARGETDURATION:900\n#EXTINF:2,\na.ts\n";
        assert_eq!(
            PushedPlaylist::parse(huge.as_bytes()),
            Err(PlaylistError::Target(900))
        );
    }
}
