//! Low-latency HLS media playlists (RFC 8216bis §4.4.3.7–§4.4.5.2 and Apple's LL-HLS rules),
//! written by hand because m3u8-rs has no LL-HLS tags: `EXT-X-SERVER-CONTROL`
//! (`CAN-BLOCK-RELOAD`, `PART-HOLD-BACK` = `PART_HOLD_BACK_PARTS` part targets, `CAN-SKIP-UNTIL`
//! = 6 target durations), `EXT-X-PART-INF`, `EXT-X-PART` for the last `PARTS_LISTED_SEGMENTS` segments
//! and the segment being produced, `EXT-X-PRELOAD-HINT` for the next part,
//! `EXT-X-RENDITION-REPORT` for every other rendition, and delta updates (`EXT-X-SKIP`).
//!
//! The text is rendered from a `LiveEdge`: a small snapshot of a live broadcast's listed window
//! and open parts that the publisher hands out after every stored part and segment, and that
//! the origin answers (blocking) playlist requests from without reading the store. Players
//! without low-latency support ignore the tags and play the segments.

/// `PART-HOLD-BACK` in part targets: one more than the three Apple recommends. A player of
/// LL-HLS gets a part whole, once it is complete, so at three parts its buffer runs down to
/// about one part before the next arrives; the fourth absorbs a late part (a busy node, the
/// cluster relay) instead of stalling. LL-DASH players get the segment being produced chunk by
/// chunk and keep their own, closer target (`dash::LL_DASH_LATENCY_MS`).
pub const PART_HOLD_BACK_PARTS: f64 = 4.0;

use std::fmt::Write;

use chrono::{DateTime, SecondsFormat, Utc};

use super::{Presentation, SegmentEntry, Timeline};
use crate::package::PartInfo;

/// Segments at the end of the playlist whose parts are listed (3 target durations at least,
/// with segments of one target duration).
pub const PARTS_LISTED_SEGMENTS: usize = 3;
/// How far ahead of the playlist a blocking request may ask (RFC 8216bis §6.2.5.2: the last
/// Media Sequence Number plus two).
pub const MSN_ADVANCE_LIMIT: u64 = 2;

/// One rendition's part of a `LiveEdge`.
#[derive(Debug, Clone, PartialEq)]
pub struct EdgeRendition {
    pub name: String,
    pub timescale: u32,
    pub media_sequence: u64,
    pub discontinuity_sequence: u64,
    /// The listed window, oldest first.
    pub segments: Vec<SegmentEntry>,
    /// The number of the segment being produced, and its parts stored so far.
    pub open_number: u64,
    pub open_parts: Vec<PartInfo>,
    /// The part to be stored next (`EXT-X-PRELOAD-HINT`): segment number and part index.
    pub next_part: (u64, u32),
}

/// What a live broadcast's low-latency playlists say now.
#[derive(Debug, Clone, PartialEq)]
pub struct LiveEdge {
    pub target_duration: u64,
    /// Seconds (`PART-TARGET`).
    pub part_target: f64,
    pub ended: bool,
    /// Video renditions first, then audio.
    pub renditions: Vec<EdgeRendition>,
}

impl LiveEdge {
    /// The edge of a live presentation (its listed window and open parts).
    pub fn of(p: &Presentation, part_target: f64) -> Self {
        let renditions = p.timelines().map(|t| rendition(p, t)).collect::<Vec<_>>();
        Self {
            target_duration: p.target_duration,
            part_target,
            ended: p.ended,
            renditions,
        }
    }

    pub fn rendition(&self, name: &str) -> Option<&EdgeRendition> {
        self.renditions.iter().find(|r| r.name == name)
    }
}

fn rendition(p: &Presentation, timeline: &Timeline) -> EdgeRendition {
    let (open_number, open_parts) = timeline.open_parts();
    EdgeRendition {
        name: timeline.name.clone(),
        timescale: timeline.timescale,
        media_sequence: p.media_sequence(timeline),
        discontinuity_sequence: p.discontinuity_sequence(timeline),
        segments: p.listed(timeline).to_vec(),
        open_number,
        open_parts,
        next_part: timeline.next_part(),
    }
}

/// Where a blocking request stands against the playlist.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Readiness {
    /// The playlist holds what was asked for.
    Ready,
    /// Not yet: wait for the next update.
    Wait,
    /// Too far ahead of the playlist (400).
    TooFar,
}

impl EdgeRendition {
    /// Media sequence number of the segment being produced.
    pub fn open_msn(&self) -> u64 {
        self.media_sequence + self.segments.len() as u64
    }

    /// `LAST-MSN` and `LAST-PART` of this rendition: its newest part, or its newest segment.
    pub fn last(&self) -> (u64, Option<u32>) {
        if let Some(last) = self.open_parts.len().checked_sub(1) {
            return (self.open_msn(), Some(last as u32));
        }
        let parts = self.segments.last().map_or(0, |s| s.parts.len());
        (
            self.open_msn().saturating_sub(1),
            parts.checked_sub(1).map(|p| p as u32),
        )
    }

    /// Whether the playlist holds segment `msn` (with `part`: that part of it) or later.
    pub fn readiness(&self, msn: u64, part: Option<u32>) -> Readiness {
        let (last_msn, _) = self.last();
        if msn > last_msn + MSN_ADVANCE_LIMIT {
            return Readiness::TooFar;
        }
        let open = self.open_msn();
        let ready = msn < open
            || (msn == open && part.is_some_and(|p| (p as usize) < self.open_parts.len()));
        if ready {
            Readiness::Ready
        } else {
            Readiness::Wait
        }
    }

    /// Whether part `index` of segment `number` is stored and listed.
    pub fn has_part(&self, number: u64, index: u32) -> bool {
        if number == self.open_number {
            return (index as usize) < self.open_parts.len();
        }
        self.segments
            .iter()
            .any(|s| s.number == number && (index as usize) < s.parts.len())
    }
}

fn secs(ticks: u64, timescale: u32) -> f64 {
    ticks as f64 / f64::from(timescale.max(1))
}

fn date(at: DateTime<Utc>) -> String {
    at.to_rfc3339_opts(SecondsFormat::Millis, true)
}

fn part_line(out: &mut String, number: u64, index: usize, part: &PartInfo, timescale: u32) {
    let _ = write!(
        out,
        "#EXT-X-PART:DURATION={:.5},URI=\"{number}.{index}.m4s\"",
        secs(part.duration, timescale)
    );
    if part.independent {
        out.push_str(",INDEPENDENT=YES");
    }
    out.push('\n');
}

/// The low-latency media playlist of `edge.renditions[index]`; with `skip`, a delta update
/// that replaces the segments older than `CAN-SKIP-UNTIL` with `EXT-X-SKIP`.
pub fn media_playlist(edge: &LiveEdge, index: usize, skip: bool) -> String {
    let Some(r) = edge.renditions.get(index) else {
        return String::new();
    };
    let td = edge.target_duration.max(1);
    let skip_until = 6.0 * td as f64;
    let mut out = String::with_capacity(2048);
    let _ = write!(
        out,
        "#EXTM3U\n#EXT-X-VERSION:9\n#EXT-X-TARGETDURATION:{td}\n\
         #EXT-X-SERVER-CONTROL:CAN-BLOCK-RELOAD=YES,CAN-SKIP-UNTIL={skip_until:.1},\
         PART-HOLD-BACK={:.3}\n#EXT-X-PART-INF:PART-TARGET={:.3}\n\
         #EXT-X-MEDIA-SEQUENCE:{}\n",
        PART_HOLD_BACK_PARTS * edge.part_target,
        edge.part_target,
        r.media_sequence
    );
    if r.discontinuity_sequence > 0 {
        let _ = writeln!(
            out,
            "#EXT-X-DISCONTINUITY-SEQUENCE:{}",
            r.discontinuity_sequence
        );
    }
    out.push_str("#EXT-X-INDEPENDENT-SEGMENTS\n#EXT-X-MAP:URI=\"init.mp4\"\n");
    // a delta update leaves out the segments that end more than CAN-SKIP-UNTIL before the
    // playlist's end
    let total: f64 = r
        .segments
        .iter()
        .map(|s| secs(s.duration, r.timescale))
        .sum();
    let mut skipped = 0;
    if skip {
        let mut end = 0.0;
        for s in &r.segments {
            end += secs(s.duration, r.timescale);
            if total - end > skip_until && !s.discontinuity {
                skipped += 1;
            } else {
                break;
            }
        }
        if skipped > 0 {
            let _ = writeln!(out, "#EXT-X-SKIP:SKIPPED-SEGMENTS={skipped}");
        }
    }
    let parts_from = r.segments.len().saturating_sub(PARTS_LISTED_SEGMENTS);
    for (i, s) in r.segments.iter().enumerate().skip(skipped) {
        if s.discontinuity {
            out.push_str("#EXT-X-DISCONTINUITY\n");
        }
        let _ = writeln!(out, "#EXT-X-PROGRAM-DATE-TIME:{}", date(s.wall_clock));
        if i >= parts_from {
            for (p, part) in s.parts.iter().enumerate() {
                part_line(&mut out, s.number, p, part, r.timescale);
            }
        }
        let _ = write!(
            out,
            "#EXTINF:{:.5},\n{}.m4s\n",
            secs(s.duration, r.timescale),
            s.number
        );
    }
    for (p, part) in r.open_parts.iter().enumerate() {
        part_line(&mut out, r.open_number, p, part, r.timescale);
    }
    if edge.ended {
        out.push_str("#EXT-X-ENDLIST\n");
        return out;
    }
    let (number, part) = r.next_part;
    let _ = writeln!(
        out,
        "#EXT-X-PRELOAD-HINT:TYPE=PART,URI=\"{number}.{part}.m4s\""
    );
    for other in edge.renditions.iter().filter(|o| o.name != r.name) {
        let (msn, part) = other.last();
        let _ = write!(
            out,
            "#EXT-X-RENDITION-REPORT:URI=\"../{}/index.m3u8\",LAST-MSN={msn}",
            other.name
        );
        if let Some(part) = part {
            let _ = write!(out, ",LAST-PART={part}");
        }
        out.push('\n');
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn part(ms: u64, independent: bool) -> PartInfo {
        PartInfo {
            duration: ms * 90,
            independent,
        }
    }

    fn entry(number: u64) -> SegmentEntry {
        SegmentEntry {
            number,
            start: number * 180_000,
            duration: 180_000,
            wall_clock: DateTime::from_timestamp(1_700_000_000 + number as i64 * 2, 0)
                .unwrap_or_default(),
            bytes: 1000,
            samples: 60,
            discontinuity: false,
            parts: vec![
                part(500, true),
                part(500, false),
                part(500, false),
                part(500, false),
            ],
        }
    }

    fn edge(listed: u64, open: usize) -> LiveEdge {
        let video = EdgeRendition {
            name: "source".into(),
            timescale: 90_000,
            media_sequence: 10,
            discontinuity_sequence: 0,
            segments: (10..10 + listed).map(entry).collect(),
            open_number: 10 + listed,
            open_parts: (0..open).map(|p| part(500, p == 0)).collect(),
            next_part: (10 + listed, open as u32),
        };
        let audio = EdgeRendition {
            name: "audio".into(),
            open_parts: Vec::new(),
            ..video.clone()
        };
        LiveEdge {
            target_duration: 2,
            part_target: 0.5,
            ended: false,
            renditions: vec![video, audio],
        }
    }

    #[test]
    fn the_playlist_lists_recent_parts_the_open_parts_a_hint_and_reports() {
        let text = media_playlist(&edge(6, 2), 0, false);
        assert!(text.contains(
            "#EXT-X-SERVER-CONTROL:CAN-BLOCK-RELOAD=YES,CAN-SKIP-UNTIL=12.0,PART-HOLD-BACK=2.000\n"
        ));
        assert!(text.contains("#EXT-X-PART-INF:PART-TARGET=0.500\n"));
        // parts of the last three segments only
        assert!(!text.contains("\"12.0.m4s\""));
        assert!(text.contains("#EXT-X-PART:DURATION=0.50000,URI=\"13.0.m4s\",INDEPENDENT=YES\n"));
        assert!(text
            .contains("#EXT-X-PART:DURATION=0.50000,URI=\"15.3.m4s\"\n#EXTINF:2.00000,\n15.m4s\n"));
        assert!(text.ends_with(
            "#EXT-X-PART:DURATION=0.50000,URI=\"16.1.m4s\"\n\
             #EXT-X-PRELOAD-HINT:TYPE=PART,URI=\"16.2.m4s\"\n\
             #EXT-X-RENDITION-REPORT:URI=\"../audio/index.m3u8\",LAST-MSN=15,LAST-PART=3\n"
        ));
    }

    #[test]
    fn blocking_requests_wait_for_the_part_and_refuse_what_is_too_far_ahead() {
        let e = edge(6, 2);
        let video = &e.renditions[0];
        assert_eq!(video.last(), (16, Some(1)));
        assert_eq!(video.readiness(15, None), Readiness::Ready);
        assert_eq!(video.readiness(16, Some(1)), Readiness::Ready);
        assert_eq!(video.readiness(16, Some(2)), Readiness::Wait);
        assert_eq!(video.readiness(16, None), Readiness::Wait);
        assert_eq!(video.readiness(18, None), Readiness::Wait);
        assert_eq!(video.readiness(19, None), Readiness::TooFar);
        assert!(video.has_part(16, 1) && !video.has_part(16, 2));
        assert!(video.has_part(12, 3) && !video.has_part(12, 4));
    }

    #[test]
    fn a_delta_update_skips_what_is_older_than_can_skip_until() {
        let e = edge(10, 1);
        let full = media_playlist(&e, 0, false);
        let delta = media_playlist(&e, 0, true);
        // 20 s listed; what ends more than 12 s before the end goes: the first three segments
        assert!(delta.contains("#EXT-X-SKIP:SKIPPED-SEGMENTS=3\n"));
        assert!(!delta.contains("\n12.m4s\n") && delta.contains("\n13.m4s\n"));
        let tail = |t: &str| t[t.find("#EXT-X-PROGRAM-DATE-TIME:").unwrap_or(0)..].to_string();
        assert!(tail(&full).ends_with(&tail(&delta)));
    }

    #[test]
    fn an_ended_playlist_has_no_hint_and_ends() {
        let mut e = edge(3, 0);
        e.ended = true;
        let text = media_playlist(&e, 1, false);
        assert!(text.ends_with("12.m4s\n#EXT-X-ENDLIST\n"));
        assert!(!text.contains("PRELOAD-HINT"));
    }
}
