//! Manifests: pure state → text. `Timeline` is one rendition's list of published segments (the
//! live sliding window, the DVR window, or the whole broadcast for VOD); `hls` and `dash` render
//! a `Presentation` of timelines with m3u8-rs and dash-mpd-core.
//!
//! A live broadcast has two views of the same segments: the live window (`index.m3u8`,
//! `manifest.mpd`: short, low-latency, for players that start at the edge) and, when the stream
//! has a DVR window, the DVR view (`dvr.m3u8`, `dvr.mpd`: every segment of the last
//! `dvr_window` seconds, plain HLS and DASH, for players that rewind).

pub mod dash;
pub mod hls;
pub mod ll_hls;

use chrono::{DateTime, Utc};

use crate::media::{CodecConfig, TrackId, TrackKind};
use crate::package::PartInfo;

/// One published segment of one rendition.
#[derive(Debug, Clone, PartialEq)]
pub struct SegmentEntry {
    pub number: u64,
    /// Decode time of the first sample in the rendition's timescale.
    pub start: u64,
    pub duration: u64,
    /// Wall clock of the segment's first frame (`EXT-X-PROGRAM-DATE-TIME`).
    pub wall_clock: DateTime<Utc>,
    pub bytes: u64,
    /// Samples (frames) in the segment.
    pub samples: u32,
    /// The segment before it was lost (see `publish`), so `number` skips one: HLS
    /// `EXT-X-DISCONTINUITY`, a new DASH Period.
    pub discontinuity: bool,
    /// Its parts (LL-HLS `EXT-X-PART`), when every one of them was stored; else none.
    pub parts: Vec<PartInfo>,
}

/// One rendition (a video variant or the audio track): every segment published for it, oldest
/// first, and statistics over all of them. A live manifest lists only the last `window`
/// entries (see `Presentation::listed`); the recording lists them all.
#[derive(Debug, Clone)]
pub struct Timeline {
    /// Path component and manifest id (`720p`, `source`, `audio`).
    pub name: String,
    pub kind: TrackKind,
    pub codec: CodecConfig,
    pub timescale: u32,
    segments: Vec<SegmentEntry>,
    /// Highest bit rate of any one segment.
    pub peak_bps: u64,
    longest_ticks: u64,
    total_bits: u128,
    total_ticks: u128,
    /// Parts stored of segments not listed yet (segment number, part), in order.
    parts_ahead: Vec<(u64, PartInfo)>,
    /// The newest segment whose last part was stored (it is complete in parts).
    complete_in_parts: Option<u64>,
}

impl Timeline {
    pub fn new(name: impl Into<String>, kind: TrackKind, codec: CodecConfig) -> Self {
        Self {
            name: name.into(),
            kind,
            timescale: codec.timescale(),
            codec,
            segments: Vec::new(),
            peak_bps: 0,
            longest_ticks: 0,
            total_bits: 0,
            total_ticks: 0,
            parts_ahead: Vec::new(),
            complete_in_parts: None,
        }
    }

    /// A part of segment `number`, which is not listed yet, was stored (`last`: the last).
    pub fn push_part(&mut self, number: u64, part: PartInfo, last: bool) {
        self.parts_ahead.push((number, part));
        if last {
            self.complete_in_parts = self.complete_in_parts.max(Some(number));
        }
    }

    /// The part to be stored next (segment number, part index): the next of the open segment,
    /// or the first not stored yet of the one after it once the open segment has all its parts
    /// (its last part said so, or parts of the next one were stored already).
    pub fn next_part(&self) -> (u64, u32) {
        let (open, parts) = self.open_parts();
        let complete =
            self.complete_in_parts >= Some(open) || self.parts_ahead.iter().any(|(n, _)| *n > open);
        if !complete {
            return (open, parts.len() as u32);
        }
        let next = self
            .parts_ahead
            .iter()
            .filter(|(n, _)| *n == open + 1)
            .count();
        (open + 1, next as u32)
    }

    /// The segment after the last listed one (its number) and the parts of it stored so far.
    pub fn open_parts(&self) -> (u64, Vec<PartInfo>) {
        let next = self.segments.last().map_or_else(
            || self.parts_ahead.first().map_or(0, |(n, _)| *n),
            |s| s.number + 1,
        );
        let parts = self
            .parts_ahead
            .iter()
            .filter(|(n, _)| *n == next)
            .map(|(_, p)| *p)
            .collect();
        (next, parts)
    }

    /// Lists a segment. `entry.parts` are the parts it was cut into; they stay listed only if
    /// every one of them was stored (`push_part`).
    pub fn push(&mut self, mut entry: SegmentEntry) {
        let stored: Vec<PartInfo> = self
            .parts_ahead
            .iter()
            .filter(|(n, _)| *n == entry.number)
            .map(|(_, p)| *p)
            .collect();
        if stored != entry.parts {
            entry.parts.clear();
        }
        self.parts_ahead.retain(|(n, _)| *n > entry.number);
        if entry.duration > 0 {
            let bps = (u128::from(entry.bytes) * 8 * u128::from(self.timescale))
                .div_ceil(u128::from(entry.duration));
            self.peak_bps = self.peak_bps.max(bps.min(u128::from(u64::MAX)) as u64);
            self.longest_ticks = self.longest_ticks.max(entry.duration);
            self.total_bits += u128::from(entry.bytes) * 8;
            self.total_ticks += u128::from(entry.duration);
        }
        self.segments.push(entry);
    }

    /// How many of the newest segments it takes to cover `secs` seconds: the fewest whose
    /// durations add up to at least `secs` (all of them if they do not).
    pub fn covering(&self, secs: f64) -> usize {
        let wanted = (secs.max(0.0) * f64::from(self.timescale)).round() as u64;
        let mut covered = 0u64;
        let mut count = 0;
        for segment in self.segments.iter().rev() {
            if covered >= wanted {
                break;
            }
            covered += segment.duration;
            count += 1;
        }
        count
    }

    /// The last `window` segments, or all of them.
    pub fn listed(&self, window: Option<usize>) -> &[SegmentEntry] {
        let window = window.map_or(self.segments.len(), |w| w.max(1));
        &self.segments[self.segments.len().saturating_sub(window)..]
    }

    /// Every segment published so far, oldest first.
    pub fn all(&self) -> &[SegmentEntry] {
        &self.segments
    }

    /// HLS media sequence number of the first of the last `window` segments: the first
    /// segment's number plus its position. Numbers skip a lost segment; media sequence
    /// numbers do not, so a segment keeps its media sequence number while the window slides.
    pub fn first_sequence(&self, window: Option<usize>) -> u64 {
        let before = self.segments.len() - self.listed(window).len();
        self.segments
            .first()
            .map_or(0, |s| s.number + before as u64)
    }

    /// Discontinuities before the last `window` segments (HLS `EXT-X-DISCONTINUITY-SEQUENCE`).
    pub fn discontinuities_before(&self, window: Option<usize>) -> u64 {
        let listed = self.listed(window).len();
        self.segments[..self.segments.len() - listed]
            .iter()
            .filter(|s| s.discontinuity)
            .count() as u64
    }

    /// The segment the latest `push` moved out of a window of `window` segments, if any.
    pub fn left_window(&self, window: usize) -> Option<&SegmentEntry> {
        let index = self.segments.len().checked_sub(window.max(1) + 1)?;
        self.segments.get(index)
    }

    pub fn average_bps(&self) -> u64 {
        if self.total_ticks == 0 {
            return 0;
        }
        (self.total_bits * u128::from(self.timescale))
            .div_ceil(self.total_ticks)
            .min(u128::from(u64::MAX)) as u64
    }

    pub fn longest_segment_secs(&self) -> f64 {
        self.longest_ticks as f64 / f64::from(self.timescale)
    }
}

/// Whether a presentation is the live one (a sliding window, may still grow), the DVR view of
/// a live one (a longer sliding window, counted in seconds), or a finished recording (every
/// segment).
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum PresentationKind {
    Live {
        window: usize,
    },
    /// The segments that cover the last `depth` seconds, and never fewer than `window`.
    Dvr {
        window: usize,
        depth: f64,
    },
    Vod,
}

impl PresentationKind {
    /// The file name of a rendition's media playlist in this view (`{rendition}/{name}`; the
    /// DVR view's multivariant playlist has the same name one level up).
    pub fn media_playlist(self) -> &'static str {
        match self {
            PresentationKind::Dvr { .. } => "dvr.m3u8",
            PresentationKind::Live { .. } | PresentationKind::Vod => "index.m3u8",
        }
    }
}

/// Everything the HLS and DASH writers need about one broadcast.
#[derive(Debug, Clone)]
pub struct Presentation {
    pub kind: PresentationKind,
    /// Wall clock of media time 0 (DASH `availabilityStartTime`); fixed for the broadcast.
    pub availability_start: DateTime<Utc>,
    /// HLS `EXT-X-TARGETDURATION`, whole seconds; never lowered.
    pub target_duration: u64,
    /// Configured segment duration (DASH update period, presentation delay).
    pub segment_duration: f64,
    /// Configured part duration when segments are also published as parts (a live MPD is
    /// then low-latency DASH: a segment is available, chunk by chunk, from its first part on).
    pub part_duration: Option<f64>,
    /// Video renditions, highest first (never empty).
    pub videos: Vec<Timeline>,
    pub audio: Option<Timeline>,
    /// The publisher stopped: HLS `EXT-X-ENDLIST`, DASH `type="static"`.
    pub ended: bool,
}

impl Presentation {
    pub fn timelines(&self) -> impl Iterator<Item = &Timeline> {
        self.videos.iter().chain(self.audio.as_ref())
    }

    pub fn timeline_mut(&mut self, id: TrackId) -> Option<&mut Timeline> {
        match id {
            TrackId::Video(index) => self.videos.get_mut(index),
            TrackId::Audio => self.audio.as_mut(),
        }
    }

    /// The first (highest) video rendition: its listed duration is the presentation's.
    pub fn lead(&self) -> Option<&Timeline> {
        self.videos.first()
    }

    /// Duration of what the manifests list.
    pub fn duration_secs(&self) -> f64 {
        self.lead().map_or(0.0, |t| self.listed_secs(t))
    }

    pub fn is_vod(&self) -> bool {
        self.kind == PresentationKind::Vod
    }

    /// How many of the newest segments of `timeline` the manifests list (`None`: all).
    pub fn listed_count(&self, timeline: &Timeline) -> Option<usize> {
        self.count_for(self.kind, timeline)
    }

    /// How many of the newest segments of `timeline` a view of `kind` lists (`None`: all). The
    /// DVR view is counted in seconds on the lead rendition, and every rendition lists its
    /// segments from the lead's first listed number on (a rendition may lack a number).
    pub fn count_for(&self, kind: PresentationKind, timeline: &Timeline) -> Option<usize> {
        match kind {
            PresentationKind::Live { window } => Some(window),
            PresentationKind::Dvr { window, depth } => {
                let Some(first) = self.dvr_first_number(window, depth) else {
                    return Some(window);
                };
                let all = timeline.all();
                Some(all.len() - all.partition_point(|s| s.number < first))
            }
            PresentationKind::Vod => None,
        }
    }

    /// The number of the oldest segment a DVR view of `depth` seconds (at least `window`
    /// segments) lists on the lead rendition; `None` before it has any.
    pub fn dvr_first_number(&self, window: usize, depth: f64) -> Option<u64> {
        let lead = self.lead()?;
        let count = lead.covering(depth).max(window);
        lead.listed(Some(count)).first().map(|s| s.number)
    }

    /// The segments of `timeline` this presentation's manifests list.
    pub fn listed<'a>(&self, timeline: &'a Timeline) -> &'a [SegmentEntry] {
        timeline.listed(self.listed_count(timeline))
    }

    /// `EXT-X-MEDIA-SEQUENCE` of `timeline`'s listed segments.
    pub fn media_sequence(&self, timeline: &Timeline) -> u64 {
        timeline.first_sequence(self.listed_count(timeline))
    }

    /// `EXT-X-DISCONTINUITY-SEQUENCE` of `timeline`'s listed segments.
    pub fn discontinuity_sequence(&self, timeline: &Timeline) -> u64 {
        timeline.discontinuities_before(self.listed_count(timeline))
    }

    /// Duration of the listed segments of `timeline`.
    pub fn listed_secs(&self, timeline: &Timeline) -> f64 {
        let ticks: u64 = self.listed(timeline).iter().map(|s| s.duration).sum();
        ticks as f64 / f64::from(timeline.timescale)
    }

    pub fn longest_segment_secs(&self) -> f64 {
        self.timelines()
            .map(Timeline::longest_segment_secs)
            .fold(0.0, f64::max)
    }

    /// Raises the target duration if a segment ran longer than it (rounded to the nearest
    /// second, as players check); returns true when it changed.
    pub fn fit_target_duration(&mut self) -> bool {
        let needed = self.longest_segment_secs().round() as u64;
        if needed > self.target_duration {
            self.target_duration = needed;
            true
        } else {
            false
        }
    }
}

#[cfg(test)]
mod golden_tests;
