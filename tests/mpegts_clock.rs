//! The source's clock is kept end to end: ten minutes of a 29.97 fps MPEG-TS source (what SRT
//! carries), through the demuxer and the segmenter exactly as a passthrough broadcast goes,
//! yield fMP4 whose sample durations and decode times add up exactly — read back from the
//! `moof` boxes with mp4-atom, not from the segmenter's own numbers. Rounding through
//! milliseconds would show as 2970/3060-tick samples or a drift of the `tfdt`s.

use std::io::Cursor;
use std::process::Command;

use mp4_atom::{Any, Decode, Moof};
use strata::ingest::mpegts::TsDemuxer;
use strata::media::{RenditionEvent, TrackId};
use strata::package::{CutRule, Segmenter, SegmenterConfig, SegmenterOutput};

const SECONDS: u32 = 600;
const FRAME: u64 = 3003; // 90 kHz ticks of one frame at 30000/1001 fps

/// (tfdt, sample durations) of a track segment, whose chunks (its parts) must follow each
/// other without gap.
fn fragment(bytes: &[u8]) -> (u64, Vec<u32>) {
    let mut cur = Cursor::new(bytes);
    assert!(
        matches!(Any::decode(&mut cur), Ok(Any::Styp(_))),
        "styp first"
    );
    let mut start = None;
    let mut durations = Vec::new();
    while (cur.position() as usize) < bytes.len() {
        let moof = Moof::decode(&mut cur).expect("our moof parses");
        let traf = &moof.traf[0];
        let tfdt = traf.tfdt.as_ref().expect("tfdt").base_media_decode_time;
        let first = *start.get_or_insert(tfdt);
        let so_far: u64 = durations.iter().map(|&d| u64::from(d)).sum();
        assert_eq!(
            tfdt,
            first + so_far,
            "a part starts where the one before ended"
        );
        durations.extend(
            traf.trun[0]
                .samples
                .iter()
                .map(|s| s.duration.expect("explicit durations")),
        );
        assert!(matches!(Any::decode(&mut cur), Ok(Any::Mdat(_))), "mdat");
    }
    (start.expect("a chunk"), durations)
}

#[test]
fn ten_minutes_of_29_97_fps_add_up_exactly() {
    let ts = Command::new("ffmpeg")
        .args(["-hide_banner", "-loglevel", "error"])
        .args(["-f", "lavfi", "-i", "testsrc2=size=160x90:rate=30000/1001"])
        .args(["-f", "lavfi", "-i", "sine=sample_rate=48000"])
        .args(["-t", &SECONDS.to_string()])
        .args([
            "-c:v",
            "libx264",
            "-preset",
            "ultrafast",
            "-bf",
            "2",
            "-g",
            "60",
        ])
        .args(["-keyint_min", "60", "-sc_threshold", "0"])
        .args(["-c:a", "aac", "-b:a", "32k", "-f", "mpegts", "-"])
        .output()
        .expect("ffmpeg runs (make test installs it)");
    assert!(
        ts.status.success(),
        "{}",
        String::from_utf8_lossy(&ts.stderr)
    );
    let mut demuxer = TsDemuxer::new();
    let mut segmenter = Segmenter::new(SegmenterConfig {
        target_duration: 2.0,
        first_number: 0,
        part_duration: 0.5,
        cut: CutRule::AfterTarget,
    });
    let mut outputs = Vec::new();
    // 1316-byte payloads, as SRT delivers them
    for chunk in ts.stdout.chunks(1316) {
        for event in demuxer.push(chunk).expect("demuxes") {
            outputs.extend(
                segmenter
                    .push(RenditionEvent::from(event))
                    .expect("packages"),
            );
        }
    }
    for event in demuxer.flush().expect("flushes") {
        outputs.extend(
            segmenter
                .push(RenditionEvent::from(event))
                .expect("packages"),
        );
    }
    outputs.extend(segmenter.push(RenditionEvent::End).expect("ends"));
    assert_eq!(demuxer.stats().lost_packets, 0);

    let mut video_end: Option<u64> = None;
    let mut audio_end: Option<u64> = None;
    let (mut video_samples, mut segments) = (0u64, 0);
    let mut audio_timescale = 0;
    for output in &outputs {
        let SegmenterOutput::Segment(segment) = output else {
            continue;
        };
        segments += 1;
        for track in &segment.tracks {
            let (tfdt, durations) = fragment(&track.bytes);
            let total: u64 = durations.iter().map(|d| u64::from(*d)).sum();
            match track.id {
                TrackId::Video(_) => {
                    assert_eq!(track.timescale, 90_000);
                    for (i, d) in durations.iter().enumerate() {
                        assert_eq!(
                            u64::from(*d),
                            FRAME,
                            "segment {} sample {i}: every frame lasts 3003 ticks",
                            segment.number
                        );
                    }
                    if let Some(end) = video_end {
                        assert_eq!(tfdt, end, "segment {}: no gap, no overlap", segment.number);
                    }
                    video_end = Some(tfdt + total);
                    video_samples += durations.len() as u64;
                }
                TrackId::Audio => {
                    audio_timescale = track.timescale;
                    assert!(durations.iter().all(|d| *d == 1024), "AAC frames of 1024");
                    if let Some(end) = audio_end {
                        assert_eq!(tfdt, end, "segment {}: audio contiguous", segment.number);
                    }
                    audio_end = Some(tfdt + total);
                }
            }
        }
    }
    let frames = u64::from(SECONDS) * 30_000 / 1001;
    assert!(segments >= 290, "about 300 segments of 2 s, got {segments}");
    assert!(
        video_samples + 2 >= frames && video_samples <= frames + 2,
        "{video_samples} frames of {frames}"
    );
    let video_span = video_end.expect("video") as f64 / 90_000.0;
    assert_eq!(
        video_end.expect("video"),
        video_samples * FRAME,
        "the video's decode span is exactly its frames × 3003 ticks"
    );
    let audio_span = audio_end.expect("audio") as f64 / f64::from(audio_timescale);
    // audio runs on beside the video for the whole 10 minutes: no drift beyond one frame
    // (plus the encoder's priming, which starts it slightly before the first keyframe)
    assert!(
        (audio_span - video_span).abs() < 0.1,
        "audio {audio_span:.4} s vs video {video_span:.4} s after {SECONDS} s"
    );
}
