//! What a node tells the others about the live edges it publishes: after every change, the
//! whole state of each rendition that changed (its listed window, open parts and the
//! broadcast's header), so that a node that hears any one message is as current as the owner
//! for that rendition, a lost message is repaired by the next one (a rendition changes every
//! part duration), and no node needs to have heard the broadcast from its start.
//!
//! The wire form is compact (short field names, wall clocks in milliseconds) because it
//! travels as a PostgreSQL NOTIFY payload (at most 8000 bytes); a rendition whose window does
//! not fit is sent without its oldest segments (`RenditionNews::drop_oldest_segment`), which a
//! player sees as a shorter live window.

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

use crate::manifest::ll_hls::{EdgeRendition, LiveEdge};
use crate::manifest::SegmentEntry;
use crate::package::PartInfo;

/// One message about a broadcast's edge.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub enum EdgeNews {
    /// The new state of one rendition.
    #[serde(rename = "u")]
    Update(RenditionNews),
    /// The broadcast stopped serving its edge (it ended; its last playlists are stored).
    #[serde(rename = "c")]
    Closed {
        #[serde(rename = "id")]
        playback_id: String,
    },
}

/// One rendition of a broadcast's edge, with what the playlist header says.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RenditionNews {
    #[serde(rename = "id")]
    pub playback_id: String,
    #[serde(rename = "td")]
    pub target_duration: u64,
    #[serde(rename = "pt")]
    pub part_target: f64,
    #[serde(rename = "e")]
    pub ended: bool,
    /// Every rendition of the broadcast, in the edge's order.
    #[serde(rename = "rs")]
    pub renditions: Vec<String>,
    #[serde(rename = "r")]
    pub rendition: WireRendition,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct WireRendition {
    #[serde(rename = "n")]
    name: String,
    #[serde(rename = "ts")]
    timescale: u32,
    #[serde(rename = "ms")]
    media_sequence: u64,
    #[serde(rename = "ds")]
    discontinuity_sequence: u64,
    #[serde(rename = "s")]
    segments: Vec<WireSegment>,
    #[serde(rename = "on")]
    open_number: u64,
    #[serde(rename = "op")]
    open_parts: Vec<(u64, bool)>,
    #[serde(rename = "np")]
    next_part: (u64, u32),
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
struct WireSegment {
    n: u64,
    /// Start (decode time).
    s: u64,
    d: u64,
    /// Wall clock, milliseconds since the epoch.
    w: i64,
    b: u64,
    /// Samples.
    k: u32,
    /// Discontinuity before it.
    x: bool,
    p: Vec<(u64, bool)>,
}

fn wire_parts(parts: &[PartInfo]) -> Vec<(u64, bool)> {
    parts.iter().map(|p| (p.duration, p.independent)).collect()
}

fn parts_of(wire: &[(u64, bool)]) -> Vec<PartInfo> {
    wire.iter()
        .map(|&(duration, independent)| PartInfo {
            duration,
            independent,
        })
        .collect()
}

impl From<&EdgeRendition> for WireRendition {
    fn from(r: &EdgeRendition) -> Self {
        Self {
            name: r.name.clone(),
            timescale: r.timescale,
            media_sequence: r.media_sequence,
            discontinuity_sequence: r.discontinuity_sequence,
            segments: r
                .segments
                .iter()
                .map(|s| WireSegment {
                    n: s.number,
                    s: s.start,
                    d: s.duration,
                    w: s.wall_clock.timestamp_millis(),
                    b: s.bytes,
                    k: s.samples,
                    x: s.discontinuity,
                    p: wire_parts(&s.parts),
                })
                .collect(),
            open_number: r.open_number,
            open_parts: wire_parts(&r.open_parts),
            next_part: r.next_part,
        }
    }
}

impl From<WireRendition> for EdgeRendition {
    fn from(r: WireRendition) -> Self {
        Self {
            name: r.name,
            timescale: r.timescale,
            media_sequence: r.media_sequence,
            discontinuity_sequence: r.discontinuity_sequence,
            segments: r
                .segments
                .into_iter()
                .map(|s| SegmentEntry {
                    number: s.n,
                    start: s.s,
                    duration: s.d,
                    wall_clock: DateTime::<Utc>::from_timestamp_millis(s.w).unwrap_or_default(),
                    bytes: s.b,
                    samples: s.k,
                    discontinuity: s.x,
                    parts: parts_of(&s.p),
                })
                .collect(),
            open_number: r.open_number,
            open_parts: parts_of(&r.open_parts),
            next_part: r.next_part,
        }
    }
}

impl RenditionNews {
    /// News of rendition `index` of `edge`.
    pub fn of(playback_id: &str, edge: &LiveEdge, index: usize) -> Option<Self> {
        Some(Self {
            playback_id: playback_id.to_string(),
            target_duration: edge.target_duration,
            part_target: edge.part_target,
            ended: edge.ended,
            renditions: edge.renditions.iter().map(|r| r.name.clone()).collect(),
            rendition: WireRendition::from(edge.renditions.get(index)?),
        })
    }

    pub fn rendition_name(&self) -> &str {
        &self.rendition.name
    }

    /// Leaves the oldest listed segment out (the window starts one later); false when there
    /// is none left to leave out.
    pub fn drop_oldest_segment(&mut self) -> bool {
        let r = &mut self.rendition;
        if r.segments.is_empty() {
            return false;
        }
        r.segments.remove(0);
        r.media_sequence += 1;
        // the first listed segment's discontinuity now lies before the window
        if r.segments.first().is_some_and(|s| s.x) {
            r.discontinuity_sequence += 1;
            if let Some(first) = r.segments.first_mut() {
                first.x = false;
            }
        }
        true
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    pub(crate) fn rendition(name: &str, segments: u64) -> EdgeRendition {
        EdgeRendition {
            name: name.into(),
            timescale: 90_000,
            media_sequence: 10,
            discontinuity_sequence: 0,
            segments: (10..10 + segments)
                .map(|n| SegmentEntry {
                    number: n,
                    start: n * 180_000,
                    duration: 180_000,
                    wall_clock: DateTime::<Utc>::from_timestamp_millis(1_700_000_000_123)
                        .unwrap_or_default(),
                    bytes: 1000,
                    samples: 60,
                    discontinuity: n == 11,
                    parts: vec![
                        PartInfo {
                            duration: 45_000,
                            independent: true
                        };
                        4
                    ],
                })
                .collect(),
            open_number: 10 + segments,
            open_parts: vec![PartInfo {
                duration: 42_000,
                independent: true,
            }],
            next_part: (10 + segments, 1),
        }
    }

    #[test]
    fn a_rendition_survives_the_wire_form() {
        let r = rendition("720p", 3);
        let back = EdgeRendition::from(WireRendition::from(&r));
        assert_eq!(back, r);
    }

    #[test]
    fn leaving_out_the_oldest_segment_keeps_the_numbering() {
        let edge = LiveEdge {
            target_duration: 2,
            part_target: 0.5,
            ended: false,
            renditions: vec![rendition("720p", 3)],
        };
        let mut news = RenditionNews::of("p", &edge, 0).expect("a rendition");
        assert!(news.drop_oldest_segment());
        let r = EdgeRendition::from(news.rendition.clone());
        assert_eq!(r.media_sequence, 11);
        assert_eq!(r.segments[0].number, 11);
        // segment 11 came after a discontinuity: that one is now before the window
        assert_eq!(r.discontinuity_sequence, 1);
        assert!(!r.segments[0].discontinuity);
        assert!(news.drop_oldest_segment() && news.drop_oldest_segment());
        assert!(!news.drop_oldest_segment());
    }
}
