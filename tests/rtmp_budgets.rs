//! Publishers with a valid key that send what no sane encoder does are bounded in bytes, not
//! by their timestamps: frozen video timestamps and audio without video each end their own
//! broadcast with a reason the streamer can act on, the server's memory stays within
//! baseline + 200 MiB, and another live stream keeps advancing meanwhile. An SPS inside the
//! frames that asks for more pixels than the decoder accepts is refused without the decoder
//! allocating the pictures (peak memory grows by less than 100 MiB; 155 MiB without the limit).

mod support;

use std::time::{Duration, Instant};

use support::rtmp_client::ScriptedPublisher;
use support::*;

const MIB: u64 = 1 << 20;

/// The tags of a freshly encoded 320x240 FLV: (type, ms, body).
fn sample_tags(dir: &std::path::Path) -> Vec<(u8, u32, Vec<u8>)> {
    let path = dir.join("sample.flv");
    make_flv(&path, 2, "320x240", 48_000);
    let data = std::fs::read(&path).expect("read flv");
    flv_tags(&data)
        .into_iter()
        .map(|(kind, ms, body)| (kind, ms, body.to_vec()))
        .collect()
}

/// Sequence headers first (AVC type 0, AAC type 0), then the rest.
fn headers(tags: &[(u8, u32, Vec<u8>)]) -> Vec<&(u8, u32, Vec<u8>)> {
    tags.iter()
        .filter(|(kind, _, body)| {
            (*kind == 9 && body.get(1) == Some(&0)) || (*kind == 8 && body.get(1) == Some(&0))
        })
        .collect()
}

/// The good stream's newest segment number.
fn newest(server: &Server, playlist: &str) -> Option<u64> {
    server
        .get_text(playlist)
        .and_then(|p| last_segment_number(&p))
}

/// Starts a good passthrough stream and waits for its first segment; returns its playlist.
fn good_stream(server: &Server) -> (std::process::Child, String) {
    let good = server.create_stream("good", "passthrough");
    let ffmpeg = publish(&server.rtmp_url(&good.key), 40);
    let playlist = format!("live/{}/source/index.m3u8", good.playback_id);
    wait_for(Duration::from_secs(20), || newest(server, &playlist)).expect("good stream live");
    (ffmpeg, playlist)
}

/// Sends `tags` until the server closes the connection or `limit` passes; returns how long the
/// server took to close it.
fn send_until_closed(
    publisher: &mut ScriptedPublisher,
    limit: Duration,
    mut next: impl FnMut(u64) -> (u8, u32, Vec<u8>),
) -> Option<Duration> {
    let started = Instant::now();
    let mut i = 0u64;
    while started.elapsed() < limit {
        let (kind, ms, body) = next(i);
        if publisher.tag(kind, &body, ms).is_err() {
            return Some(started.elapsed());
        }
        i += 1;
    }
    None
}

/// A scripted publisher on `key` that has sent the sequence headers of `tags`.
fn publish_headers(server: &Server, key: &str, tags: &[(u8, u32, Vec<u8>)]) -> ScriptedPublisher {
    let mut publisher = ScriptedPublisher::publish(&server.rtmp, key).expect("publish");
    for (kind, _, body) in headers(tags) {
        publisher.tag(*kind, body, 0).expect("headers");
    }
    publisher
}

/// The hostile broadcast ended saying `reason`; the server's memory stayed within
/// `baseline` + 200 MiB; the good stream (its ffmpeg, playlist and segment number before the
/// attack) kept advancing and its publisher finished undisturbed.
fn only_that_broadcast_ended(
    server: &mut Server,
    reason: &str,
    baseline: u64,
    (mut good_ffmpeg, good, before): (std::process::Child, &str, u64),
) {
    let log = server.log();
    assert!(log.contains(reason), "{log}");
    let grown = server.rss().saturating_sub(baseline);
    assert!(grown < 200 * MIB, "memory grew by {} MiB", grown / MIB);
    assert!(server.is_running());
    let advanced = wait_for(Duration::from_secs(10), || {
        newest(server, good).filter(|n| *n > before)
    });
    assert!(advanced.is_some(), "the good stream stopped advancing");
    assert!(good_ffmpeg.wait().expect("ffmpeg").success());
}

#[test]
fn frozen_timestamps_end_only_that_broadcast_and_memory_stays_bounded() {
    let mut server = Server::start();
    let (good_ffmpeg, good) = good_stream(&server);
    let baseline = server.rss();
    let stream = server.create_stream("frozen", "passthrough");
    let tags = sample_tags(server.dir.path());
    let mut publisher = publish_headers(&server, &stream.key, &tags);
    let frames: Vec<&Vec<u8>> = tags
        .iter()
        .filter(|(kind, _, body)| *kind == 9 && body.get(1) == Some(&1))
        .map(|(_, _, body)| body)
        .collect();
    let before = newest(&server, &good).expect("good segments");
    // 30 s of frames (900 at 30 fps), every one stamped 1000 ms, sent as fast as possible
    let closed = send_until_closed(&mut publisher, Duration::from_secs(30), |i| {
        let body = frames[(i as usize) % frames.len()].clone();
        (9, 1_000, body)
    });
    assert!(
        closed.is_some(),
        "the server took 30 s of frozen timestamps:\n{}",
        server.log()
    );
    only_that_broadcast_ended(
        &mut server,
        "video timestamps stopped advancing",
        baseline,
        (good_ffmpeg, &good, before),
    );
}

#[test]
fn audio_without_video_ends_only_that_broadcast_and_memory_stays_bounded() {
    let mut server = Server::start();
    let (good_ffmpeg, good) = good_stream(&server);
    let baseline = server.rss();
    let stream = server.create_stream("radio", "passthrough");
    let tags = sample_tags(server.dir.path());
    let mut publisher = publish_headers(&server, &stream.key, &tags);
    // one keyframe starts the broadcast; then only audio, 10 minutes of it, as fast as it goes
    let keyframe = tags
        .iter()
        .find(|(kind, _, body)| {
            *kind == 9 && body.first() == Some(&0x17) && body.get(1) == Some(&1)
        })
        .expect("a keyframe");
    publisher.video(&keyframe.2, 0).expect("keyframe");
    let audio: Vec<&Vec<u8>> = tags
        .iter()
        .filter(|(kind, _, body)| *kind == 8 && body.get(1) == Some(&1))
        .map(|(_, _, body)| body)
        .collect();
    let before = newest(&server, &good).expect("good segments");
    let closed = send_until_closed(&mut publisher, Duration::from_secs(30), |i| {
        let ms = (i * 1024 * 1000 / 48_000) as u32;
        (
            8,
            ms.min(600_000),
            audio[(i as usize) % audio.len()].clone(),
        )
    });
    assert!(
        closed.is_some(),
        "the server took audio without video:\n{}",
        server.log()
    );
    only_that_broadcast_ended(
        &mut server,
        "without video",
        baseline,
        (good_ffmpeg, &good, before),
    );
}

/// `seconds` of `size` H.264 with its SPS and PPS repeated inside every keyframe, as FLV tags.
fn encoded_tags(
    dir: &std::path::Path,
    name: &str,
    size: &str,
    frames: u32,
) -> Vec<(u8, u32, Vec<u8>)> {
    let path = dir.join(name);
    let status = std::process::Command::new("ffmpeg")
        .args([
            "-y",
            "-hide_banner",
            "-loglevel",
            "error",
            "-f",
            "lavfi",
            "-i",
        ])
        .arg(format!("testsrc2=size={size}:rate=30"))
        .args([
            "-frames:v",
            &frames.to_string(),
            "-c:v",
            "libx264",
            "-preset",
            "ultrafast",
        ])
        .args([
            "-g",
            "1",
            "-x264-params",
            "repeat-headers=1",
            "-pix_fmt",
            "yuv420p",
            "-an",
        ])
        .args(["-f", "flv"])
        .arg(&path)
        .status()
        .expect("ffmpeg");
    assert!(status.success(), "ffmpeg could not encode {size}");
    let data = std::fs::read(&path).expect("flv");
    flv_tags(&data)
        .into_iter()
        .map(|(kind, ms, body)| (kind, ms, body.to_vec()))
        .collect()
}

#[test]
fn an_in_stream_sps_above_the_size_limit_is_refused_without_a_large_allocation() {
    let server = Server::start();
    let stream = server.create_stream("sneaky", "low-cpu");
    let small = encoded_tags(server.dir.path(), "small.flv", "320x240", 180);
    // 7680x4320: 3.6 times the 4096x2304 the decoder accepts
    let huge = encoded_tags(server.dir.path(), "huge.flv", "7680x4320", 8);
    let mut publisher = ScriptedPublisher::publish(&server.rtmp, &stream.key).expect("publish");
    let live = format!("live/{}/master.m3u8", stream.playback_id);
    // a legal start: the sequence header announces 320x240
    for (_, ms, body) in small.iter().filter(|t| t.0 == 9) {
        publisher.video(body, *ms).expect("small frames");
    }
    wait_for(Duration::from_secs(20), || server.get_text(&live)).expect("the ladder runs");
    let baseline = server.peak_rss();
    // then 8K pictures whose SPS arrives only inside the frames (no new sequence header)
    let start = small.iter().map(|t| t.1).max().unwrap_or(0) + 33;
    for (_, ms, body) in huge.iter().filter(|t| t.0 == 9 && t.2.get(1) == Some(&1)) {
        if publisher.video(body, start + ms).is_err() {
            break; // the server may close the broadcast
        }
    }
    // the decoder either refuses the pictures or the broadcast ends; memory stays put
    let settled = wait_for(Duration::from_secs(20), || {
        let log = server.log();
        (log.contains("invalid") || log.contains("ending broadcast") || log.contains("dropping"))
            .then_some(log)
    });
    let grown = server.peak_rss().saturating_sub(baseline);
    eprintln!("peak memory grew by {} MiB after the 8K SPS", grown / MIB);
    assert!(
        grown < 100 * MIB,
        "peak memory grew by {} MiB after the 8K SPS",
        grown / MIB
    );
    assert!(
        settled.is_some(),
        "no sign of the refusal:\n{}",
        server.log()
    );
}
