//! DASH MPD with dash-mpd-core: a dynamic MPD while the broadcast is live (SegmentTemplate +
//! SegmentTimeline, `$Number$` addressing of the same CMAF files HLS lists), made static with a
//! `mediaPresentationDuration` when it ends or for the VOD copy.
//!
//! `availabilityStartTime` is the wall clock of media time 0 and never changes within a
//! broadcast (dash.js loops when it moves). Players get the server clock from `UTCTiming`.
//!
//! Low-latency DASH, when segments are also published as parts: every SegmentTemplate says
//! `availabilityTimeOffset` = segment − part duration and `availabilityTimeComplete="false"`
//! (a segment may be fetched from its first part on; the origin sends it chunk by chunk as
//! its parts are stored), and a `ServiceDescription` gives the latency target
//! (`LL_DASH_LATENCY_MS`) and the playback-rate bounds a player may use to keep it. A
//! player can only fetch a segment its MPD lists, so a live low-latency MPD also announces the
//! segment being produced (the one after the last listed: it started when that one ended),
//! with the last segment's duration as its estimate; the next MPD lists it as it came out.
//! Players reload it every part duration (`minimumUpdatePeriod`) to learn of the next one
//! in time, and `suggestedPresentationDelay` is the latency target.

use std::time::Duration;

use chrono::{DateTime, Utc};
use dash_mpd_core::{
    AdaptationSet, AudioChannelConfiguration, Latency, Period, PlaybackRate, Representation,
    SegmentTemplate, SegmentTimeline, ServiceDescription, UTCTiming, MPD, S,
};

use super::{hls::measured_frame_rate, Presentation, SegmentEntry, Timeline};
use crate::media::{CodecConfig, TrackKind};

const LIVE_PROFILE: &str = "urn:mpeg:dash:profile:isoff-live:2011";
const UTC_TIMING_SCHEME: &str = "urn:mpeg:dash:utc:http-iso:2014";
const CHANNEL_CONFIG_SCHEME: &str = "urn:mpeg:dash:23003:3:audio_channel_configuration:2011";
/// Low-latency DASH latency target and bounds (ms): three parts behind the live edge and no
/// closer, at most three segments. (LL-HLS holds back one part more: its players get parts
/// whole, these get the segment being produced chunk by chunk.)
pub const LL_DASH_LATENCY_MS: (f64, f64, f64) = (1500.0, 1500.0, 6000.0);
/// How much faster or slower than real time a player may play to keep the latency target.
pub const LL_DASH_PLAYBACK_RATE: (f64, f64) = (0.96, 1.04);

/// Renders the MPD. `utc_timing_url` is the absolute URL of the origin's time endpoint;
/// `now` becomes `publishTime`.
pub fn mpd(p: &Presentation, utc_timing_url: &str, now: DateTime<Utc>) -> String {
    let dynamic = !p.is_vod() && !p.ended;
    let segment = secs(p.segment_duration);
    let window = secs(p.duration_secs());
    let periods = period_spans(p, dynamic);
    let mut mpd = MPD {
        xmlns: Some("urn:mpeg:dash:schema:mpd:2011".into()),
        profiles: Some(LIVE_PROFILE.into()),
        mpdtype: Some(if dynamic { "dynamic" } else { "static" }.into()),
        minBufferTime: Some(segment),
        maxSegmentDuration: Some(secs(p.longest_segment_secs())),
        periods: periods
            .iter()
            .map(|span| period(p, span, dynamic))
            .collect(),
        ..Default::default()
    };
    if dynamic {
        mpd.availabilityStartTime = Some(p.availability_start);
        mpd.publishTime = Some(now);
        mpd.minimumUpdatePeriod = Some(p.part_duration.map_or(segment, secs));
        mpd.timeShiftBufferDepth = Some(window);
        mpd.suggestedPresentationDelay = Some(if p.part_duration.is_some() {
            secs(LL_DASH_LATENCY_MS.1 / 1000.0)
        } else {
            secs(3.0 * p.segment_duration)
        });
        mpd.UTCTiming = vec![UTCTiming {
            schemeIdUri: UTC_TIMING_SCHEME.into(),
            value: Some(utc_timing_url.into()),
            ..Default::default()
        }];
        if p.part_duration.is_some() {
            let (min, target, max) = LL_DASH_LATENCY_MS;
            let (slowest, fastest) = LL_DASH_PLAYBACK_RATE;
            mpd.ServiceDescription = vec![ServiceDescription {
                id: Some("0".into()),
                Latency: vec![Latency {
                    min: Some(min),
                    max: Some(max),
                    target: Some(target),
                    referenceId: Some("0".into()),
                }],
                PlaybackRate: vec![PlaybackRate {
                    min: Some(slowest),
                    max: Some(fastest),
                }],
                ..Default::default()
            }];
        }
    } else {
        // Periods follow each other without a gap (see `period_spans`)
        mpd.mediaPresentationDuration = Some(window);
    }
    format!("<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n{mpd}\n")
}

/// One Period: the listed segments whose numbers run on without a gap. `$Number$` addressing
/// counts segments from `startNumber`, so it cannot skip a number: after a segment the store
/// lost (`publish` never reuses its number), or one a rendition lacks, a new Period starts.
struct PeriodSpan {
    id: String,
    /// Numbers in `first..end` belong to this Period.
    first: u64,
    end: u64,
    /// Period@start.
    start: Duration,
    /// Media time of Period@start in seconds, or `None` for "the first listed segment of each
    /// representation" (the first Period of a static MPD).
    media_start: Option<f64>,
}

/// Numbers that follow a gap in `segments`.
fn after_gaps(segments: &[SegmentEntry]) -> impl Iterator<Item = u64> + '_ {
    segments
        .windows(2)
        .filter(|w| w[1].number != w[0].number + 1)
        .map(|w| w[1].number)
}

/// The Periods of the listed segments. A dynamic MPD keeps the wall clock: each Period starts
/// at its first segment's media time (a lost segment leaves a gap), and keeps its id and start
/// while the window slides over it. A static MPD (an ended broadcast, a recording) has no clock
/// to keep: its Periods follow each other without a gap, as HLS plays it.
fn period_spans(p: &Presentation, dynamic: bool) -> Vec<PeriodSpan> {
    let empty = || PeriodSpan {
        id: "0".into(),
        first: 0,
        end: u64::MAX,
        start: Duration::ZERO,
        media_start: None,
    };
    let Some(lead) = p.lead() else {
        return Vec::new();
    };
    let listed = p.listed(lead);
    let (Some(first_listed), Some(broadcast_first)) = (listed.first(), lead.all().first()) else {
        // nothing published yet: one empty Period, as a player expects
        return vec![empty()];
    };
    let scale = f64::from(lead.timescale);
    let mut run_starts: Vec<u64> = p
        .timelines()
        .flat_map(|t| after_gaps(t.all()))
        .chain([broadcast_first.number])
        .collect();
    run_starts.sort_unstable();
    run_starts.dedup();
    let mut spans: Vec<PeriodSpan> = Vec::new();
    let mut static_start = Duration::ZERO;
    for (k, &first) in run_starts.iter().enumerate() {
        let end = run_starts.get(k + 1).copied().unwrap_or(u64::MAX);
        let in_run = |s: &&SegmentEntry| s.number >= first && s.number < end;
        if end <= first_listed.number {
            continue;
        }
        // a run the lead has no listed segment of has no times: left out
        let Some(lead_first) = listed.iter().find(in_run) else {
            continue;
        };
        let id = if first == broadcast_first.number {
            "0".to_string()
        } else {
            first.to_string()
        };
        let (start, media_start) = if dynamic {
            // media time is presentation time; the run's true start, not its first listed
            let run_first = lead.all().iter().find(in_run).unwrap_or(lead_first);
            let start = secs(run_first.start as f64 / scale);
            (start, Some(start.as_secs_f64()))
        } else if spans.is_empty() {
            (Duration::ZERO, None)
        } else {
            (static_start, Some(lead_first.start as f64 / scale))
        };
        let listed_ticks: u64 = listed.iter().filter(in_run).map(|s| s.duration).sum();
        static_start = start + secs(listed_ticks as f64 / scale);
        spans.push(PeriodSpan {
            id,
            first,
            end,
            start,
            media_start,
        });
    }
    if spans.is_empty() {
        spans.push(empty());
    }
    spans
}

fn period(p: &Presentation, span: &PeriodSpan, dynamic: bool) -> Period {
    let mut adaptations = vec![adaptation_set(0, &p.videos, p, span, dynamic)];
    if let Some(audio) = &p.audio {
        adaptations.push(adaptation_set(
            1,
            std::slice::from_ref(audio),
            p,
            span,
            dynamic,
        ));
    }
    Period {
        id: Some(span.id.clone()),
        start: Some(span.start),
        adaptations,
        ..Default::default()
    }
}

/// The listed segments of `timeline` inside `span`.
fn in_span<'a>(p: &Presentation, timeline: &'a Timeline, span: &PeriodSpan) -> &'a [SegmentEntry] {
    let listed = p.listed(timeline);
    let from = listed.partition_point(|s| s.number < span.first);
    let to = listed.partition_point(|s| s.number < span.end);
    &listed[from..to.max(from)]
}

fn secs(v: f64) -> Duration {
    Duration::from_millis((v.max(0.0) * 1000.0).round() as u64)
}

/// One AdaptationSet of `timelines` (all video renditions, or the audio rendition). Each
/// Representation carries its own SegmentTemplate, so its timeline is exact even where the
/// last segment of a finished broadcast differs by a frame between renditions.
fn adaptation_set(
    id: usize,
    timelines: &[Timeline],
    p: &Presentation,
    span: &PeriodSpan,
    dynamic: bool,
) -> AdaptationSet {
    let mut set = AdaptationSet {
        id: Some(id.to_string()),
        segmentAlignment: Some(true),
        startWithSAP: Some(1),
        ..Default::default()
    };
    match timelines.first().map(|t| t.kind) {
        Some(TrackKind::Video) => {
            set.contentType = Some("video".into());
            set.mimeType = Some("video/mp4".into());
        }
        Some(TrackKind::Audio) => {
            set.contentType = Some("audio".into());
            set.mimeType = Some("audio/mp4".into());
            set.lang = Some("und".into());
        }
        None => {}
    }
    set.representations = timelines
        .iter()
        .map(|t| representation(in_span(p, t, span), t, span, dynamic, p))
        .collect();
    set
}

fn representation(
    listed: &[SegmentEntry],
    timeline: &Timeline,
    span: &PeriodSpan,
    dynamic: bool,
    p: &Presentation,
) -> Representation {
    let first = listed.first();
    // low-latency DASH: a segment is available from its first part on
    let availability_offset = p
        .part_duration
        .filter(|_| dynamic)
        .map(|part| (p.segment_duration - part).max(0.0));
    // … and the one being produced is announced (in the Period that runs on)
    let announced = listed
        .last()
        .filter(|_| availability_offset.is_some() && span.end == u64::MAX)
        .map(|last| SegmentEntry {
            number: last.number + 1,
            start: last.start + last.duration,
            parts: Vec::new(),
            ..last.clone()
        });
    let timeline_entries: Vec<SegmentEntry> = listed.iter().cloned().chain(announced).collect();
    let offset = match span.media_start {
        // 0 in the first Period of a dynamic MPD: media time is presentation time
        Some(media) if media > 0.0 => Some((media * f64::from(timeline.timescale)).round() as u64),
        Some(_) => None,
        // a static MPD of a window that started after media time 0 begins its presentation
        // at the first listed segment
        None => (!dynamic).then(|| first.map_or(0, |s| s.start)),
    };
    let template = SegmentTemplate {
        timescale: Some(u64::from(timeline.timescale)),
        initialization: Some("$RepresentationID$/init.mp4".into()),
        media: Some("$RepresentationID$/$Number$.m4s".into()),
        startNumber: Some(first.map_or(span.first, |s| s.number)),
        presentationTimeOffset: offset,
        availabilityTimeOffset: availability_offset,
        availabilityTimeComplete: availability_offset.map(|_| false),
        SegmentTimeline: Some(segment_timeline(&timeline_entries)),
        ..Default::default()
    };
    let mut representation = Representation {
        id: Some(timeline.name.clone()),
        bandwidth: Some(timeline.peak_bps.max(1)),
        codecs: Some(timeline.codec.codec_string()),
        SegmentTemplate: Some(template),
        ..Default::default()
    };
    match &timeline.codec {
        CodecConfig::Aac(aac) => {
            representation.audioSamplingRate = Some(aac.sample_rate.to_string());
            representation.AudioChannelConfiguration = vec![AudioChannelConfiguration {
                schemeIdUri: CHANNEL_CONFIG_SCHEME.into(),
                value: Some(aac.channels.to_string()),
                ..Default::default()
            }];
        }
        video => {
            let (width, height) = video.video_size().unwrap_or((0, 0));
            representation.width = Some(u64::from(width));
            representation.height = Some(u64::from(height));
            representation.frameRate =
                measured_frame_rate(listed, timeline.timescale).map(frame_rate_string);
        }
    }
    representation
}

/// `S@t` on the first entry and after any gap; runs of equal, contiguous durations use `@r`.
fn segment_timeline(listed: &[SegmentEntry]) -> SegmentTimeline {
    let mut entries: Vec<S> = Vec::new();
    let mut expected_start = None;
    for seg in listed {
        let contiguous = expected_start == Some(seg.start);
        match entries.last_mut() {
            Some(last) if contiguous && last.d == seg.duration => {
                last.r = Some(last.r.unwrap_or(0) + 1);
            }
            _ => entries.push(S {
                t: (!contiguous).then_some(seg.start),
                d: seg.duration,
                ..Default::default()
            }),
        }
        expected_start = Some(seg.start + seg.duration);
    }
    SegmentTimeline { segments: entries }
}

/// DASH frame rates are integers or ratios; keep three decimals as a ratio over 1000.
fn frame_rate_string(fps: f64) -> String {
    let milli = (fps * 1000.0).round() as u64;
    if milli.is_multiple_of(1000) {
        (milli / 1000).to_string()
    } else {
        format!("{milli}/1000")
    }
}
