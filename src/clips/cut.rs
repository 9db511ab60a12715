//! Which stored segments a clip is made of: read from the source's stored playlists (the live
//! broadcast's DVR view or live window, or a recording's manifests), chosen on the lead
//! rendition by the wall clock each segment starts at (`EXT-X-PROGRAM-DATE-TIME`, written for
//! every segment), and the same numbers taken from every rendition.

use chrono::{DateTime, Utc};

use super::{ClipError, ClipRange};

/// One rendition of the source: its name (path component) and media playlist file name.
#[derive(Debug, Clone, PartialEq)]
pub struct SourceRendition {
    pub name: String,
    pub playlist: String,
}

/// A multivariant playlist.
pub fn parse_master(bytes: &[u8]) -> Result<m3u8_rs::MasterPlaylist, ClipError> {
    m3u8_rs::parse_master_playlist_res(bytes)
        .map_err(|_| ClipError::Source("its multivariant playlist does not parse".into()))
}

/// The renditions a multivariant playlist names (video variants first, then audio), with the
/// playlist file each uses (`index.m3u8`, or `dvr.m3u8` in a DVR view).
pub fn renditions(master: &m3u8_rs::MasterPlaylist) -> Result<Vec<SourceRendition>, ClipError> {
    let uris = master
        .variants
        .iter()
        .map(|v| v.uri.as_str())
        .chain(master.alternatives.iter().filter_map(|a| a.uri.as_deref()));
    let mut out: Vec<SourceRendition> = Vec::new();
    for uri in uris {
        // object paths are built from these: only the shapes Strata writes
        let Some((name, playlist)) = uri
            .split_once('/')
            .filter(|(n, p)| is_rendition(n) && matches!(*p, "index.m3u8" | "dvr.m3u8"))
        else {
            return Err(ClipError::Source(format!(
                "an unexpected rendition URI {uri:?}"
            )));
        };
        if !out.iter().any(|r| r.name == name) {
            out.push(SourceRendition {
                name: name.to_string(),
                playlist: playlist.to_string(),
            });
        }
    }
    if out.is_empty() {
        return Err(ClipError::Source(
            "its multivariant playlist names no rendition".into(),
        ));
    }
    Ok(out)
}

fn is_rendition(s: &str) -> bool {
    (1..=32).contains(&s.len())
        && s.bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_' || b == b'-')
}

/// One segment a media playlist lists.
#[derive(Debug, Clone, PartialEq)]
pub struct Listed {
    pub number: u64,
    pub starts_at: DateTime<Utc>,
    pub duration_secs: f64,
    pub discontinuity: bool,
}

/// The segments a media playlist lists, with their wall clocks.
pub fn listed(playlist: &[u8]) -> Result<Vec<Listed>, ClipError> {
    let playlist = m3u8_rs::parse_media_playlist_res(playlist)
        .map_err(|_| ClipError::Source("a media playlist does not parse".into()))?;
    playlist
        .segments
        .iter()
        .map(|s| {
            let number = s
                .uri
                .strip_suffix(".m4s")
                .and_then(|n| n.parse().ok())
                .ok_or_else(|| ClipError::Source(format!("an unexpected segment {:?}", s.uri)))?;
            let starts_at = s
                .program_date_time
                .ok_or_else(|| ClipError::Source("a segment without its wall clock".into()))?
                .with_timezone(&Utc);
            Ok(Listed {
                number,
                starts_at,
                duration_secs: f64::from(s.duration),
                discontinuity: s.discontinuity,
            })
        })
        .collect()
}

/// The wall clocks `range` runs between: `Last` counts back from the end of the newest segment
/// of `lead`.
pub fn bounds(
    lead: &[Listed],
    range: &ClipRange,
) -> Result<(DateTime<Utc>, DateTime<Utc>), ClipError> {
    let Some(newest) = lead.last() else {
        return Err(ClipError::Range("nothing is stored yet".into()));
    };
    Ok(match range {
        ClipRange::Last(secs) => {
            let to = newest.starts_at + chrono::Duration::milliseconds(ms(newest.duration_secs));
            (to - chrono::Duration::milliseconds(ms(*secs)), to)
        }
        ClipRange::Between(from, to) => (*from, *to),
    })
}

/// The segments of `lead` that cover `range`: every one that overlaps it (so a clip starts on
/// the keyframe at or before the range's start, and ends with the segment its end falls in).
/// `Last` counts back from the end of the newest segment. A range that reaches past what is
/// stored gets what is stored of it; one that misses it entirely is refused.
pub fn covering(lead: &[Listed], range: &ClipRange) -> Result<Vec<Listed>, ClipError> {
    // a few milliseconds of rounding in the playlists' durations do not add a segment
    covering_with(lead, range, chrono::Duration::milliseconds(20))
}

/// `covering`, with a segment that overlaps the range by `slack` or less left out (a precise
/// clip takes every segment that overlaps it at all: one frame of it may be in the range).
pub fn covering_with(
    lead: &[Listed],
    range: &ClipRange,
    slack: chrono::Duration,
) -> Result<Vec<Listed>, ClipError> {
    let (from, to) = bounds(lead, range)?;
    let end_of = |s: &Listed| s.starts_at + chrono::Duration::milliseconds(ms(s.duration_secs));
    let chosen: Vec<Listed> = lead
        .iter()
        .filter(|s| end_of(s) > from + slack && s.starts_at < to - slack)
        .cloned()
        .collect();
    if chosen.is_empty() {
        return Err(ClipError::Range(format!(
            "the range {} – {} is not in what is stored ({} – {})",
            from.to_rfc3339(),
            to.to_rfc3339(),
            lead[0].starts_at.to_rfc3339(),
            lead.last().map_or(to, end_of).to_rfc3339()
        )));
    }
    Ok(chosen)
}

fn ms(secs: f64) -> i64 {
    (secs * 1000.0).round() as i64
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::TimeZone;

    fn t(secs: f64) -> DateTime<Utc> {
        Utc.with_ymd_and_hms(2026, 12, 7, 12, 0, 0)
            .single()
            .unwrap()
            + chrono::Duration::milliseconds(ms(secs))
    }

    fn segments() -> Vec<Listed> {
        (0..10)
            .map(|i| Listed {
                number: 100 + i,
                starts_at: t(2.0 * i as f64),
                duration_secs: 2.0,
                discontinuity: false,
            })
            .collect()
    }

    #[test]
    fn the_last_seconds_are_the_newest_segments_that_cover_them() {
        let chosen = covering(&segments(), &ClipRange::Last(10.0)).unwrap();
        let numbers: Vec<u64> = chosen.iter().map(|s| s.number).collect();
        assert_eq!(numbers, [105, 106, 107, 108, 109]);
        // 9 s still needs five segments; 8 s four
        assert_eq!(
            covering(&segments(), &ClipRange::Last(9.0)).unwrap().len(),
            5
        );
        assert_eq!(
            covering(&segments(), &ClipRange::Last(8.0)).unwrap().len(),
            4
        );
    }

    #[test]
    fn an_absolute_range_takes_every_segment_it_overlaps() {
        let chosen = covering(&segments(), &ClipRange::Between(t(3.1), t(10.4))).unwrap();
        let numbers: Vec<u64> = chosen.iter().map(|s| s.number).collect();
        assert_eq!(numbers, [101, 102, 103, 104, 105]);
    }

    #[test]
    fn a_range_outside_what_is_stored_is_refused_and_one_partly_in_it_cut_to_it() {
        let before = ClipRange::Between(t(-30.0), t(-20.0));
        assert!(matches!(
            covering(&segments(), &before),
            Err(ClipError::Range(_))
        ));
        let after = ClipRange::Between(t(30.0), t(40.0));
        assert!(matches!(
            covering(&segments(), &after),
            Err(ClipError::Range(_))
        ));
        // partly stored: what is stored of it
        let reaching_back = ClipRange::Between(t(-5.0), t(3.0));
        let numbers: Vec<u64> = covering(&segments(), &reaching_back)
            .unwrap()
            .iter()
            .map(|s| s.number)
            .collect();
        assert_eq!(numbers, [100, 101]);
        assert!(matches!(
            covering(&[], &ClipRange::Last(5.0)),
            Err(ClipError::Range(_))
        ));
    }

    #[test]
    fn renditions_come_from_the_multivariant_playlist() {
        let master = b"#EXTM3U\n#EXT-X-VERSION:7\n\
            #EXT-X-MEDIA:TYPE=AUDIO,GROUP-ID=\"audio\",NAME=\"audio\",DEFAULT=YES,AUTOSELECT=YES,URI=\"audio/dvr.m3u8\"\n\
            #EXT-X-STREAM-INF:BANDWIDTH=1000,AUDIO=\"audio\"\n720p/dvr.m3u8\n\
            #EXT-X-STREAM-INF:BANDWIDTH=500,AUDIO=\"audio\"\n360p/dvr.m3u8\n";
        let names: Vec<String> = renditions(&parse_master(master).unwrap())
            .unwrap()
            .into_iter()
            .map(|r| r.name)
            .collect();
        assert_eq!(names, ["720p", "360p", "audio"]);
        for bad in ["../index.m3u8", "720p/../../x.m3u8", "720p/other.m3u8"] {
            let master = format!("#EXTM3U\n#EXT-X-STREAM-INF:BANDWIDTH=1\n{bad}\n");
            let master = parse_master(master.as_bytes()).unwrap();
            assert!(renditions(&master).is_err(), "{bad}");
        }
    }
}
