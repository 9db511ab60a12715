//! Publishers with a valid key that send what no sane encoder does are bounded in bytes, not
//! by their timestamps: frozen video timestamps and audio without video each end their own
//! broadcast with a reason the streamer can act on, the server's memory stays within
//! baseline + 200 MiB, and another live stream keeps advancing meanwhile.

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
        let sent = if kind == 9 {
            publisher.video(&body, ms)
        } else {
            publisher.audio(&body, ms)
        };
        if sent.is_err() {
            return Some(started.elapsed());
        }
        i += 1;
    }
    None
}

#[test]
fn frozen_timestamps_end_only_that_broadcast_and_memory_stays_bounded() {
    let mut server = Server::start();
    let (mut good_ffmpeg, good) = good_stream(&server);
    let baseline = server.rss();
    let stream = server.create_stream("frozen", "passthrough");
    let tags = sample_tags(server.dir.path());
    let mut publisher = ScriptedPublisher::publish(&server.rtmp, &stream.key).expect("publish");
    for (kind, _, body) in headers(&tags) {
        let sent = if *kind == 9 {
            publisher.video(body, 0)
        } else {
            publisher.audio(body, 0)
        };
        sent.expect("headers");
    }
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
    let log = server.log();
    assert!(log.contains("video timestamps stopped advancing"), "{log}");
    let grown = server.rss().saturating_sub(baseline);
    assert!(grown < 200 * MIB, "memory grew by {} MiB", grown / MIB);
    assert!(server.is_running());
    let advanced = wait_for(Duration::from_secs(10), || {
        newest(&server, &good).filter(|n| *n > before)
    });
    assert!(advanced.is_some(), "the good stream stopped advancing");
    assert!(good_ffmpeg.wait().expect("ffmpeg").success());
}

#[test]
fn audio_without_video_ends_only_that_broadcast_and_memory_stays_bounded() {
    let server = Server::start();
    let (mut good_ffmpeg, good) = good_stream(&server);
    let baseline = server.rss();
    let stream = server.create_stream("radio", "passthrough");
    let tags = sample_tags(server.dir.path());
    let mut publisher = ScriptedPublisher::publish(&server.rtmp, &stream.key).expect("publish");
    for (kind, _, body) in headers(&tags) {
        let sent = if *kind == 9 {
            publisher.video(body, 0)
        } else {
            publisher.audio(body, 0)
        };
        sent.expect("headers");
    }
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
    let log = server.log();
    assert!(log.contains("without video"), "{log}");
    let grown = server.rss().saturating_sub(baseline);
    assert!(grown < 200 * MIB, "memory grew by {} MiB", grown / MIB);
    let advanced = wait_for(Duration::from_secs(10), || {
        newest(&server, &good).filter(|n| *n > before)
    });
    assert!(advanced.is_some(), "the good stream stopped advancing");
    assert!(good_ffmpeg.wait().expect("ffmpeg").success());
}
