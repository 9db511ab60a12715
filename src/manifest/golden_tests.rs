//! Golden-file tests for the HLS and DASH writers: fixed input → exact text in `tests/golden/`.
//! Run with `STRATA_BLESS=1` to rewrite the files after an intended change, then review the diff.

use bytes::Bytes;
use chrono::{DateTime, TimeZone, Utc};

use super::*;
use crate::media::codec_test_data::AVC_RECORD_320X240;
use crate::media::{AacConfig, AvcConfig};

fn t0() -> DateTime<Utc> {
    Utc.with_ymd_and_hms(2026, 11, 21, 12, 0, 0)
        .single()
        .unwrap()
}

fn presentation(kind: PresentationKind, ended: bool) -> Presentation {
    let video_codec =
        CodecConfig::Avc(AvcConfig::parse(Bytes::from_static(AVC_RECORD_320X240)).unwrap());
    let audio_codec =
        CodecConfig::Aac(AacConfig::parse(Bytes::from_static(&[0x11, 0x90])).unwrap());
    let mut low_codec = AvcConfig::parse(Bytes::from_static(AVC_RECORD_320X240)).unwrap();
    (low_codec.width, low_codec.height) = (160, 120);
    let mut video = Timeline::new("source", TrackKind::Video, video_codec);
    let mut low = Timeline::new("120p", TrackKind::Video, CodecConfig::Avc(low_codec));
    let mut audio = Timeline::new("audio", TrackKind::Audio, audio_codec);
    // five 2 s video segments (the third 2.4 s), numbered from 40
    let video_durations = [180_000u64, 180_000, 216_000, 180_000, 180_000];
    let mut v_start = 0;
    let mut a_start = 0;
    for (i, d) in video_durations.iter().enumerate() {
        let wall = t0() + chrono::Duration::milliseconds((v_start / 90) as i64);
        let entry = SegmentEntry {
            number: 40 + i as u64,
            start: v_start,
            duration: *d,
            wall_clock: wall,
            bytes: 250_000,
            samples: (*d / 3600) as u32,
            discontinuity: false,
            parts: Vec::new(),
        };
        low.push(SegmentEntry {
            bytes: 60_000,
            ..entry.clone()
        });
        video.push(entry);
        let a_d = if i % 2 == 0 { 96_256 } else { 95_232 };
        audio.push(SegmentEntry {
            number: 40 + i as u64,
            start: a_start,
            duration: a_d,
            wall_clock: wall,
            bytes: 32_000,
            samples: (a_d / 1024) as u32,
            discontinuity: false,
            parts: Vec::new(),
        });
        v_start += d;
        a_start += a_d;
    }
    Presentation {
        kind,
        availability_start: t0(),
        target_duration: 2,
        segment_duration: 2.0,
        part_duration: None,
        videos: vec![video, low],
        audio: Some(audio),
        ended,
    }
}

fn check_golden(name: &str, actual: &str) {
    let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/golden")
        .join(name);
    if std::env::var_os("STRATA_BLESS").is_some() {
        std::fs::write(&path, actual).unwrap();
        return;
    }
    let expected = std::fs::read_to_string(&path)
        .unwrap_or_else(|e| panic!("{}: {e} (run with STRATA_BLESS=1)", path.display()));
    assert_eq!(actual, expected, "{name} differs from its golden file");
}

#[test]
fn live_media_playlist_slides_and_keeps_target_duration() {
    let mut p = presentation(PresentationKind::Live { window: 4 }, false);
    // 2.4 s rounds to 2: the target stays (players compare rounded durations)
    assert!(!p.fit_target_duration());
    let text = hls::media_playlist(&p, &p.videos[0]);
    check_golden("live_video.m3u8", &text);
    assert_eq!(p.videos[0].left_window(4).map(|s| s.number), Some(40));
    let parsed = m3u8_rs::parse_media_playlist_res(text.as_bytes()).unwrap();
    assert_eq!(parsed.media_sequence, 41);
    assert_eq!(parsed.segments.len(), 4);
    assert!(!parsed.end_list);
    for s in &parsed.segments {
        assert!(s.duration.round() as u64 <= parsed.target_duration);
    }
}

#[test]
fn target_duration_rises_for_a_long_segment_and_never_falls() {
    let mut p = presentation(PresentationKind::Live { window: 4 }, false);
    let mut long = p.listed(&p.videos[0]).last().unwrap().clone();
    long.number += 1;
    long.start += long.duration;
    long.duration = 90_000 * 5 / 2; // 2.5 s rounds to 3
    p.videos[0].push(long.clone());
    assert!(p.fit_target_duration());
    assert_eq!(p.target_duration, 3);
    // the long segment scrolls out of the window: the target stays
    for _ in 0..4 {
        long.number += 1;
        long.start += long.duration;
        long.duration = 180_000;
        p.videos[0].push(long.clone());
    }
    assert!(!p.fit_target_duration());
    assert_eq!(p.target_duration, 3);
}

#[test]
fn ended_live_playlist_has_endlist() {
    let p = presentation(PresentationKind::Live { window: 4 }, true);
    let text = hls::media_playlist(&p, p.audio.as_ref().unwrap());
    check_golden("ended_audio.m3u8", &text);
    assert!(text.trim_end().ends_with("#EXT-X-ENDLIST"));
}

#[test]
fn master_playlist_lists_every_variant_and_the_audio_group() {
    let p = presentation(PresentationKind::Live { window: 4 }, false);
    let text = hls::master_playlist(&p);
    check_golden("master.m3u8", &text);
    let parsed = m3u8_rs::parse_master_playlist_res(text.as_bytes()).unwrap();
    assert_eq!(parsed.variants.len(), 2);
    let low = &parsed.variants[1];
    assert_eq!(low.uri, "120p/index.m3u8");
    assert_eq!(
        low.resolution.map(|r| (r.width, r.height)),
        Some((160, 120))
    );
    assert!(low.bandwidth < parsed.variants[0].bandwidth);
    let v = &parsed.variants[0];
    assert_eq!(v.codecs.as_deref(), Some("avc1.4d400d,mp4a.40.2"));
    assert_eq!(v.audio.as_deref(), Some(hls::AUDIO_GROUP));
    assert_eq!(v.frame_rate, Some(25.0));
    assert!(v.bandwidth >= v.average_bandwidth.unwrap());
    assert_eq!(
        parsed.alternatives[0].uri.as_deref(),
        Some("audio/index.m3u8")
    );
}

#[test]
fn dynamic_mpd_has_live_fields_and_compressed_timeline() {
    let p = presentation(PresentationKind::Live { window: 4 }, false);
    let text = dash::mpd(
        &p,
        "http://origin.example/time",
        t0() + chrono::Duration::seconds(10),
    );
    check_golden("live.mpd", &text);
    let mpd = dash_mpd_core::parse(&text).unwrap();
    assert_eq!(mpd.mpdtype.as_deref(), Some("dynamic"));
    assert_eq!(mpd.availabilityStartTime, Some(t0()));
    assert_eq!(
        mpd.UTCTiming[0].value.as_deref(),
        Some("http://origin.example/time")
    );
    let video = &mpd.periods[0].adaptations[0];
    assert_eq!(video.representations.len(), 2, "both renditions in one set");
    assert_eq!(video.segmentAlignment, Some(true));
    for representation in &video.representations {
        let template = representation.SegmentTemplate.as_ref().unwrap();
        assert_eq!(template.startNumber, Some(41));
        let timeline = template.SegmentTimeline.as_ref().unwrap();
        let count: i64 = timeline.segments.iter().map(|s| 1 + s.r.unwrap_or(0)).sum();
        assert_eq!(count, 4);
    }
}

#[test]
fn vod_mpd_is_static_with_duration() {
    let p = presentation(PresentationKind::Vod, true);
    let text = dash::mpd(&p, "http://origin.example/time", t0());
    check_golden("vod.mpd", &text);
    let mpd = dash_mpd_core::parse(&text).unwrap();
    assert_eq!(mpd.mpdtype.as_deref(), Some("static"));
    assert_eq!(
        mpd.mediaPresentationDuration,
        Some(std::time::Duration::from_millis(10_400))
    );
    let vod = hls::media_playlist(&p, &p.videos[0]);
    check_golden("vod_video.m3u8", &vod);
    assert!(vod.contains("#EXT-X-PLAYLIST-TYPE:VOD"));
}

/// The presentation above with segment 42 lost by the store: every timeline skips its number
/// and the next segment is marked.
fn presentation_with_a_loss(kind: PresentationKind) -> Presentation {
    let mut p = presentation(kind, false);
    for timeline in p.videos.iter_mut().chain(p.audio.as_mut()) {
        timeline.segments.remove(2);
        timeline.segments[2].discontinuity = true;
    }
    p
}

#[test]
fn a_lost_number_starts_a_new_period_and_the_media_sequence_runs_on() {
    let p = presentation_with_a_loss(PresentationKind::Live { window: 3 });
    let text = dash::mpd(&p, "http://origin.example/time", t0());
    check_golden("live_after_loss.mpd", &text);
    let mpd = dash_mpd_core::parse(&text).unwrap();
    // listed: 41 | 43 44 — two Periods; the first keeps its id and start while it slides
    let ids: Vec<_> = mpd.periods.iter().map(|p| p.id.clone().unwrap()).collect();
    assert_eq!(ids, ["0", "43"]);
    assert_eq!(mpd.periods[0].start, Some(std::time::Duration::ZERO));
    // segment 43 starts at 2 + 2 + 2.4 = 6.4 s of media time
    assert_eq!(
        mpd.periods[1].start,
        Some(std::time::Duration::from_millis(6_400))
    );
    for (period, (first, count)) in mpd.periods.iter().zip([(41, 1), (43, 2)]) {
        for set in &period.adaptations {
            for representation in &set.representations {
                let template = representation.SegmentTemplate.as_ref().unwrap();
                assert_eq!(template.startNumber, Some(first), "{text}");
                let timeline = template.SegmentTimeline.as_ref().unwrap();
                let n: i64 = timeline.segments.iter().map(|s| 1 + s.r.unwrap_or(0)).sum();
                assert_eq!(n, count, "{text}");
                // media time at Period@start is the Period's first media time, in each timescale
                if first == 43 {
                    let scale = template.timescale.unwrap();
                    assert_eq!(template.presentationTimeOffset, Some(scale * 64 / 10));
                }
            }
        }
    }
    let hls = hls::media_playlist(&p, &p.videos[0]);
    assert!(hls.contains("#EXT-X-MEDIA-SEQUENCE:41\n"), "{hls}");
    let marked = hls
        .split("#EXT-X-DISCONTINUITY\n")
        .nth(1)
        .unwrap_or_default();
    assert!(
        marked.contains("\n43.m4s") && !marked.contains("41.m4s"),
        "{hls}"
    );
}

#[test]
fn a_static_mpd_after_a_loss_plays_its_periods_back_to_back() {
    let p = presentation_with_a_loss(PresentationKind::Vod);
    let text = dash::mpd(&p, "http://origin.example/time", t0());
    let mpd = dash_mpd_core::parse(&text).unwrap();
    assert_eq!(mpd.periods.len(), 2, "{text}");
    // 40 41 | 43 44: no clock to keep, so the second Period follows the first without the
    // lost segment's gap (as HLS plays it), its media time starting where 43 does (6.4 s)
    assert_eq!(
        mpd.periods[1].start,
        Some(std::time::Duration::from_millis(4_000))
    );
    let template = mpd.periods[1].adaptations[0].representations[0]
        .SegmentTemplate
        .as_ref()
        .unwrap();
    assert_eq!(template.presentationTimeOffset, Some(576_000));
    assert_eq!(template.startNumber, Some(43));
    assert_eq!(
        mpd.mediaPresentationDuration,
        Some(std::time::Duration::from_millis(8_000))
    );
}

#[test]
fn a_number_one_rendition_lacks_ends_its_period_for_every_rendition() {
    // the audio of segment 42 never came (its segment was emitted without it)
    let mut p = presentation(PresentationKind::Live { window: 5 }, false);
    if let Some(audio) = p.audio.as_mut() {
        audio.segments.remove(2);
    }
    let text = dash::mpd(&p, "http://origin.example/time", t0());
    let mpd = dash_mpd_core::parse(&text).unwrap();
    let ids: Vec<_> = mpd.periods.iter().map(|p| p.id.clone().unwrap()).collect();
    assert_eq!(ids, ["0", "43"], "{text}");
    // every representation's $Number$ counts exactly its own segments in each Period
    let counts = |period: usize, set: usize| {
        let template = mpd.periods[period].adaptations[set].representations[0]
            .SegmentTemplate
            .as_ref()
            .unwrap();
        let timeline = template.SegmentTimeline.as_ref().unwrap();
        let n: i64 = timeline.segments.iter().map(|s| 1 + s.r.unwrap_or(0)).sum();
        (template.startNumber, n)
    };
    assert_eq!(counts(0, 0), (Some(40), 3), "video 40 41 42");
    assert_eq!(counts(0, 1), (Some(40), 2), "audio 40 41");
    assert_eq!(counts(1, 0), (Some(43), 2));
    assert_eq!(counts(1, 1), (Some(43), 2));
}

#[test]
fn a_live_mpd_with_parts_is_low_latency_dash_and_a_recording_is_not() {
    let mut p = presentation(PresentationKind::Live { window: 4 }, false);
    p.part_duration = Some(0.5);
    let live = dash::mpd(&p, "http://origin.example/time", t0());
    let parsed = dash_mpd_core::parse(&live).expect("the MPD parses");
    let template = parsed.periods[0].adaptations[0].representations[0]
        .SegmentTemplate
        .as_ref()
        .expect("a template");
    assert_eq!(template.availabilityTimeOffset, Some(1.5));
    assert_eq!(template.availabilityTimeComplete, Some(false));
    let service = &parsed.ServiceDescription[0];
    assert_eq!(service.Latency[0].target, Some(dash::LL_DASH_LATENCY_MS.1));
    assert_eq!(
        service.PlaybackRate[0].max,
        Some(dash::LL_DASH_PLAYBACK_RATE.1)
    );
    assert_eq!(
        parsed.minimumUpdatePeriod,
        Some(std::time::Duration::from_millis(500))
    );
    assert_eq!(
        parsed.suggestedPresentationDelay,
        Some(std::time::Duration::from_millis(1500))
    );
    // the segment being produced is announced after the listed ones, as long as the last
    let listed = p.listed(&p.videos[0]).to_vec();
    let last = listed.last().expect("listed segments");
    let entries: Vec<u64> = template
        .SegmentTimeline
        .as_ref()
        .expect("a timeline")
        .segments
        .iter()
        .flat_map(|s| std::iter::repeat_n(s.d, s.r.unwrap_or(0) as usize + 1))
        .collect();
    assert_eq!(entries.len(), listed.len() + 1, "{live}");
    assert_eq!(entries.last(), Some(&last.duration));
    assert_eq!(template.startNumber, Some(listed[0].number));
    let vod = Presentation {
        kind: PresentationKind::Vod,
        ..p
    };
    let text = dash::mpd(&vod, "http://origin.example/time", t0());
    assert!(!text.contains("availabilityTimeOffset") && !text.contains("ServiceDescription"));
}

#[test]
fn the_part_to_come_moves_to_the_next_segment_once_a_segment_has_all_its_parts() {
    let audio_codec =
        CodecConfig::Aac(AacConfig::parse(Bytes::from_static(&[0x11, 0x90])).unwrap());
    let mut t = Timeline::new("audio", TrackKind::Audio, audio_codec);
    let part = crate::package::PartInfo {
        duration: 22_500,
        independent: true,
    };
    assert_eq!(t.next_part(), (0, 0));
    t.push_part(0, part, false);
    assert_eq!(t.next_part(), (0, 1));
    // the segmenter knew this one ended segment 0
    t.push_part(0, part, true);
    assert_eq!(t.next_part(), (1, 0));
    // segment 0 is listed only once the other tracks have it; meanwhile 1 has a part
    t.push_part(1, part, false);
    assert_eq!(t.next_part(), (1, 1));
    t.push(SegmentEntry {
        number: 0,
        start: 0,
        duration: 45_000,
        wall_clock: t0(),
        bytes: 100,
        samples: 4,
        discontinuity: false,
        parts: vec![part; 2],
    });
    assert_eq!(t.open_parts(), (1, vec![part]));
    assert_eq!(t.next_part(), (1, 1));
    // a last part not known as such: a part of the next segment says it
    t.push_part(1, part, false);
    t.push_part(2, part, false);
    assert_eq!(t.next_part(), (2, 1));
}

#[test]
fn dvr_view_reaches_back_its_depth_on_every_rendition() {
    // 2, 2, 2.4, 2, 2 s: the newest four cover 6.5 s (8.4 s), three would not (6.4 s)
    let p = presentation(
        PresentationKind::Dvr {
            window: 2,
            depth: 6.5,
        },
        false,
    );
    assert_eq!(p.listed_count(&p.videos[0]), Some(4));
    for timeline in p.timelines() {
        let text = hls::media_playlist(&p, timeline);
        let parsed = m3u8_rs::parse_media_playlist_res(text.as_bytes()).unwrap();
        assert_eq!(parsed.media_sequence, 41, "{}", timeline.name);
        let uris: Vec<_> = parsed.segments.iter().map(|s| s.uri.as_str()).collect();
        assert_eq!(uris, ["41.m4s", "42.m4s", "43.m4s", "44.m4s"]);
        assert!(!parsed.end_list);
    }
    let master = hls::master_playlist(&p);
    let parsed = m3u8_rs::parse_master_playlist_res(master.as_bytes()).unwrap();
    let uris: Vec<_> = parsed.variants.iter().map(|v| v.uri.as_str()).collect();
    assert_eq!(uris, ["source/dvr.m3u8", "120p/dvr.m3u8"]);
    assert!(master.contains("URI=\"audio/dvr.m3u8\""));
    let mpd = dash::mpd(&p, "https://origin/time", t0());
    let parsed = dash_mpd_core::parse(&mpd).unwrap();
    assert_eq!(parsed.mpdtype.as_deref(), Some("dynamic"));
    assert_eq!(
        parsed.timeShiftBufferDepth,
        Some(std::time::Duration::from_millis(8400))
    );
    // never shorter than the live window
    let short = presentation(
        PresentationKind::Dvr {
            window: 2,
            depth: 1.0,
        },
        false,
    );
    assert_eq!(short.listed_count(&short.videos[0]), Some(2));
    // longer than the broadcast: all of it
    let long = presentation(
        PresentationKind::Dvr {
            window: 2,
            depth: 3600.0,
        },
        false,
    );
    assert_eq!(long.listed(&long.videos[0]).len(), 5);
    assert_eq!(long.media_sequence(&long.videos[0]), 40);
    // a rendition that lacks a number lists from the lead's first number on, not one more
    let mut gappy = presentation(
        PresentationKind::Dvr {
            window: 2,
            depth: 6.5,
        },
        false,
    );
    let mut audio = Timeline::new(
        "audio",
        TrackKind::Audio,
        gappy.audio.as_ref().unwrap().codec.clone(),
    );
    for entry in gappy.audio.as_ref().unwrap().all() {
        if entry.number != 42 {
            audio.push(entry.clone());
        }
    }
    gappy.audio = Some(audio);
    let audio = gappy.audio.as_ref().unwrap();
    let numbers: Vec<u64> = gappy.listed(audio).iter().map(|s| s.number).collect();
    assert_eq!(numbers, [41, 43, 44]);
}
