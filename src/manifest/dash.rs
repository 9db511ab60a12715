//! DASH MPD with dash-mpd-core: a dynamic MPD while the broadcast is live (SegmentTemplate +
//! SegmentTimeline, `$Number$` addressing of the same CMAF files HLS lists), made static with a
//! `mediaPresentationDuration` when it ends or for the VOD copy.
//!
//! `availabilityStartTime` is the wall clock of media time 0 and never changes within a
//! broadcast (dash.js loops when it moves). Players get the server clock from `UTCTiming`.

use std::time::Duration;

use chrono::{DateTime, Utc};
use dash_mpd_core::{
    AdaptationSet, AudioChannelConfiguration, Period, Representation, SegmentTemplate,
    SegmentTimeline, UTCTiming, MPD, S,
};

use super::{hls::measured_frame_rate, Presentation, SegmentEntry, Timeline};
use crate::media::{CodecConfig, TrackKind};

const LIVE_PROFILE: &str = "urn:mpeg:dash:profile:isoff-live:2011";
const UTC_TIMING_SCHEME: &str = "urn:mpeg:dash:utc:http-iso:2014";
const CHANNEL_CONFIG_SCHEME: &str = "urn:mpeg:dash:23003:3:audio_channel_configuration:2011";

/// Renders the MPD. `utc_timing_url` is the absolute URL of the origin's time endpoint;
/// `now` becomes `publishTime`.
pub fn mpd(p: &Presentation, utc_timing_url: &str, now: DateTime<Utc>) -> String {
    let dynamic = !p.is_vod() && !p.ended;
    let segment = secs(p.segment_duration);
    let window = secs(p.duration_secs());
    let mut adaptations = vec![adaptation_set(0, &p.videos, p, dynamic)];
    if let Some(audio) = &p.audio {
        adaptations.push(adaptation_set(1, std::slice::from_ref(audio), p, dynamic));
    }
    let mut mpd = MPD {
        xmlns: Some("urn:mpeg:dash:schema:mpd:2011".into()),
        profiles: Some(LIVE_PROFILE.into()),
        mpdtype: Some(if dynamic { "dynamic" } else { "static" }.into()),
        minBufferTime: Some(segment),
        maxSegmentDuration: Some(secs(p.longest_segment_secs())),
        periods: vec![Period {
            id: Some("0".into()),
            start: Some(Duration::ZERO),
            adaptations,
            ..Default::default()
        }],
        ..Default::default()
    };
    if dynamic {
        mpd.availabilityStartTime = Some(p.availability_start);
        mpd.publishTime = Some(now);
        mpd.minimumUpdatePeriod = Some(segment);
        mpd.timeShiftBufferDepth = Some(window);
        mpd.suggestedPresentationDelay = Some(secs(3.0 * p.segment_duration));
        mpd.UTCTiming = vec![UTCTiming {
            schemeIdUri: UTC_TIMING_SCHEME.into(),
            value: Some(utc_timing_url.into()),
            ..Default::default()
        }];
    } else {
        mpd.mediaPresentationDuration = Some(window);
    }
    format!("<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n{mpd}\n")
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
        .map(|t| representation(p.listed(t), t, dynamic))
        .collect();
    set
}

fn representation(listed: &[SegmentEntry], timeline: &Timeline, dynamic: bool) -> Representation {
    let first = listed.first();
    let template = SegmentTemplate {
        timescale: Some(u64::from(timeline.timescale)),
        initialization: Some("$RepresentationID$/init.mp4".into()),
        media: Some("$RepresentationID$/$Number$.m4s".into()),
        startNumber: Some(first.map_or(0, |s| s.number)),
        // A static MPD of a window that started after media time 0 begins its presentation at
        // the first listed segment.
        presentationTimeOffset: (!dynamic).then(|| first.map_or(0, |s| s.start)),
        SegmentTimeline: Some(segment_timeline(listed)),
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
        CodecConfig::Avc(avc) => {
            representation.width = Some(u64::from(avc.width));
            representation.height = Some(u64::from(avc.height));
            representation.frameRate =
                measured_frame_rate(listed, timeline.timescale).map(frame_rate_string);
        }
        CodecConfig::Aac(aac) => {
            representation.audioSamplingRate = Some(aac.sample_rate.to_string());
            representation.AudioChannelConfiguration = vec![AudioChannelConfiguration {
                schemeIdUri: CHANNEL_CONFIG_SCHEME.into(),
                value: Some(aac.channels.to_string()),
                ..Default::default()
            }];
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
