use std::process::Command;

use super::*;

/// `seconds` of 29.97 fps H.264 (B-frames, 2 s GOPs) and 48 kHz AAC as MPEG-TS, from ffmpeg.
fn ffmpeg_ts(seconds: u32) -> Vec<u8> {
    let out = Command::new("ffmpeg")
        .args(["-hide_banner", "-loglevel", "error"])
        .args(["-f", "lavfi", "-i", "testsrc2=size=160x90:rate=30000/1001"])
        .args(["-f", "lavfi", "-i", "sine=sample_rate=48000"])
        .args(["-t", &seconds.to_string()])
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
        .args(["-c:a", "aac", "-f", "mpegts", "-"])
        .output()
        .expect("ffmpeg runs (make test installs it)");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    out.stdout
}

fn demux_in_chunks(ts: &[u8], chunk: usize) -> (Vec<StreamEvent>, TsStats) {
    let mut demuxer = TsDemuxer::new();
    let mut events = Vec::new();
    for piece in ts.chunks(chunk) {
        events.extend(demuxer.push(piece).expect("demuxes"));
    }
    events.extend(demuxer.flush().expect("flushes"));
    (events, demuxer.stats())
}

fn frames(events: &[StreamEvent], kind: TrackKind) -> Vec<&MediaFrame> {
    events
        .iter()
        .filter_map(|e| match e {
            StreamEvent::Frame(f) if f.kind == kind => Some(f),
            _ => None,
        })
        .collect()
}

#[test]
fn any_split_of_the_stream_gives_the_same_events_on_the_source_clock() {
    let ts = ffmpeg_ts(4);
    let (whole, stats) = demux_in_chunks(&ts, ts.len());
    assert_eq!(stats.lost_packets, 0);
    for chunk in [1, 7, 1316, 4000] {
        assert_eq!(demux_in_chunks(&ts, chunk).0, whole, "chunks of {chunk}");
    }
    let tracks: Vec<&TrackInfo> = whole
        .iter()
        .filter_map(|e| match e {
            StreamEvent::Track(t) => Some(t),
            _ => None,
        })
        .collect();
    assert_eq!(
        tracks.len(),
        2,
        "one video and one audio config, repeats not announced"
    );
    let video = frames(&whole, TrackKind::Video);
    assert_eq!(video.len(), 120, "4 s at 29.97 fps");
    assert!(video[0].sync, "the first access unit is an IDR");
    assert_eq!(
        video.iter().filter(|f| f.sync).count(),
        2,
        "one IDR per 2 s GOP"
    );
    let mut dts: Vec<i64> = video.iter().map(|f| f.dts.ticks).collect();
    assert!(video.iter().all(|f| f.dts.timescale == TIMESCALE));
    assert!(
        video.iter().any(|f| f.pts.ticks > f.dts.ticks),
        "B-frames reorder"
    );
    dts.dedup();
    for pair in dts.windows(2) {
        assert_eq!(
            pair[1] - pair[0],
            3003,
            "every frame lasts exactly 3003 ticks"
        );
    }
    // CMAF samples: length-prefixed, no parameter sets or delimiters in band
    for frame in &video {
        let mut rest = &frame.data[..];
        while !rest.is_empty() {
            let len = u32::from_be_bytes([rest[0], rest[1], rest[2], rest[3]]) as usize;
            assert!(
                !matches!(rest[4] & 0x1F, 7..=9),
                "no SPS/PPS/AUD in samples"
            );
            rest = &rest[4 + len..];
        }
    }
    let audio = frames(&whole, TrackKind::Audio);
    assert!(
        audio.len() >= 180,
        "about 187 AAC frames in 4 s, got {}",
        audio.len()
    );
    for pair in audio.windows(2) {
        let step = pair[1].pts.ticks - pair[0].pts.ticks;
        assert!(
            (1919..=1921).contains(&step),
            "1024 samples at 48 kHz apart: {step}"
        );
    }
}

#[test]
fn a_lost_packet_is_counted_and_its_access_unit_dropped() {
    let ts = ffmpeg_ts(2);
    let (whole, _) = demux_in_chunks(&ts, ts.len());
    // drop one packet from the middle of the video
    let video_pid = {
        let mut demuxer = TsDemuxer::new();
        demuxer.push(&ts).expect("demuxes");
        demuxer.video_pid.expect("video found")
    };
    let packets: Vec<&[u8]> = ts.chunks(PACKET).collect();
    let victim = packets
        .iter()
        .enumerate()
        .filter(|(_, p)| ((u16::from(p[1] & 0x1F) << 8) | u16::from(p[2])) == video_pid)
        .nth(40)
        .map(|(i, _)| i)
        .expect("enough video packets");
    let damaged: Vec<u8> = packets
        .iter()
        .enumerate()
        .filter(|(i, _)| *i != victim)
        .flat_map(|(_, p)| p.iter().copied())
        .collect();
    let (events, stats) = demux_in_chunks(&damaged, 1316);
    assert_eq!(stats.lost_packets, 1);
    assert_eq!(stats.dropped_frames, 1);
    assert_eq!(
        frames(&events, TrackKind::Video).len() + 1,
        frames(&whole, TrackKind::Video).len()
    );
}

#[test]
fn garbage_before_and_between_packets_is_skipped() {
    let ts = ffmpeg_ts(1);
    let (whole, _) = demux_in_chunks(&ts, ts.len());
    let mut noisy = vec![0x12, 0x34, 0x00];
    noisy.extend_from_slice(&ts);
    let (events, stats) = demux_in_chunks(&noisy, 500);
    assert_eq!(stats.resync_bytes, 3);
    assert_eq!(events, whole);
}

#[test]
fn the_33_bit_clock_unwraps_across_its_wrap_and_small_steps_back() {
    let mut clock = Unwrap33::default();
    let top = (1u64 << 33) - 1500;
    assert_eq!(clock.unwrap(top), top as i64);
    assert_eq!(clock.unwrap(1503), (1i64 << 33) + 1503);
    assert_eq!(clock.unwrap(3), (1i64 << 33) + 3); // a B-frame's step back
}

#[test]
fn a_video_pes_past_its_limit_is_dropped_without_growing() {
    let mut demuxer = TsDemuxer::new();
    demuxer.video_pid = Some(0x100);
    let packet = |start: bool, cc: u8| {
        let mut p = vec![0xFFu8; PACKET];
        p[0] = SYNC;
        p[1] = if start { 0x41 } else { 0x01 };
        p[2] = 0x00;
        p[3] = 0x10 | (cc & 0x0F);
        if start {
            p[4..13].copy_from_slice(&[0, 0, 1, 0xE0, 0, 0, 0x80, 0x80, 5]);
            p[13..18].copy_from_slice(&[0x21, 0, 1, 0, 1]);
        }
        p
    };
    demuxer.push(&packet(true, 0)).expect("start");
    for i in 0..(MAX_VIDEO_PES / 184 + 10) {
        demuxer.push(&packet(false, (i + 1) as u8)).expect("more");
    }
    let held = demuxer.video.pes.as_ref().map_or(0, |p| p.data.len());
    assert!(held <= MAX_VIDEO_PES, "held {held}");
    demuxer.push(&packet(true, 0)).expect("next");
    assert_eq!(demuxer.stats().dropped_frames, 1);
}

#[test]
fn hevc_in_mpegts_becomes_an_hvc1_track_with_irap_sync_frames() {
    let out = Command::new("ffmpeg")
        .args(["-hide_banner", "-loglevel", "error"])
        .args(["-f", "lavfi", "-i", "testsrc2=size=320x240:rate=30"])
        .args(["-f", "lavfi", "-i", "sine=sample_rate=48000", "-t", "3"])
        .args(["-c:v", "libx265", "-preset", "ultrafast"])
        .args([
            "-x265-params",
            "log-level=none:keyint=30:min-keyint=30:scenecut=0",
        ])
        .args(["-c:a", "aac", "-f", "mpegts", "-"])
        .output()
        .expect("ffmpeg runs (make test installs it)");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let (events, stats) = demux_in_chunks(&out.stdout, 1316);
    assert_eq!(stats.lost_packets, 0);
    let configs: Vec<_> = events
        .iter()
        .filter_map(|e| match e {
            StreamEvent::Track(t) if t.kind == TrackKind::Video => Some(&t.codec),
            _ => None,
        })
        .collect();
    assert_eq!(
        configs.len(),
        1,
        "repeated parameter sets are not new tracks"
    );
    assert!(
        configs[0].codec_string().starts_with("hvc1.1.6.L"),
        "{}",
        configs[0].codec_string()
    );
    assert_eq!(configs[0].video_size(), Some((320, 240)));
    let video = frames(&events, TrackKind::Video);
    assert!((88..=90).contains(&video.len()), "{} frames", video.len());
    let syncs: Vec<i64> = video
        .iter()
        .filter(|f| f.sync)
        .map(|f| f.pts.ticks)
        .collect();
    assert_eq!(
        syncs.len(),
        3,
        "one random access point per second: {syncs:?}"
    );
    for f in &video {
        // length-prefixed NAL units, none of them a parameter set or delimiter
        let mut rest = &f.data[..];
        while let Some((len, tail)) = rest.split_first_chunk::<4>() {
            let len = u32::from_be_bytes(*len) as usize;
            let kind = (tail[0] >> 1) & 0x3F;
            assert!(!(32..=35).contains(&kind), "NAL type {kind} in a sample");
            rest = &tail[len..];
        }
        assert!(rest.is_empty());
    }
}
