//! A publisher lost without unpublishing (ffmpeg killed): its session turns `reconnecting`; a
//! publish of the same stream within the grace continues the same session and recording, whose
//! segments stay numbered in order and whose media plays across the join; without a return,
//! the broadcast ends when the grace runs out.

mod support;

use std::time::{Duration, Instant};

use serde_json::Value;
use support::*;

/// The sessions `path` lists (`/api/v1/sessions`, `…?state=all`).
fn session_list(server: &Server, path: &str) -> Vec<Value> {
    let (status, body) = api(server, "GET", path, Some(&server.admin_token), None);
    assert_eq!(status, 200, "{body}");
    serde_json::from_str::<Value>(&body)
        .ok()
        .and_then(|v| v.as_array().cloned())
        .expect("a JSON list")
}

fn sessions(server: &Server) -> Vec<Value> {
    session_list(server, "/api/v1/sessions?state=all")
}

fn live_sessions(server: &Server) -> Vec<Value> {
    session_list(server, "/api/v1/sessions")
}

/// The first variant's media playlist under `root` (`live/{playback id}`, `vod/{session}`).
fn media_playlist(server: &Server, root: &str) -> Option<String> {
    let master = server.get_text(&format!("{root}/master.m3u8"))?;
    let variant = master.lines().find(|l| l.ends_with(".m3u8"))?.to_string();
    server.get_text(&format!("{root}/{variant}"))
}

/// Waits until the live playlist lists at least `n` segments.
fn wait_segments(server: &Server, playback_id: &str, n: u64) {
    let root = format!("live/{playback_id}");
    let found = wait_for(Duration::from_secs(20), || {
        let media = media_playlist(server, &root)?;
        (media.matches("#EXTINF").count() as u64 >= n).then_some(())
    });
    assert!(found.is_some(), "{n} segments never appeared");
}

/// Kills the publisher (no unpublish is sent) and waits for the session to say reconnecting.
fn lose_publisher(server: &Server, publisher: &mut std::process::Child) -> String {
    publisher.kill().expect("kill ffmpeg");
    let _ = publisher.wait();
    wait_for(Duration::from_secs(5), || {
        live_sessions(server)
            .into_iter()
            .find(|s| s["state"] == "reconnecting")
            .and_then(|s| s["session_id"].as_str().map(str::to_string))
    })
    .expect("the session turns reconnecting")
}

#[test]
fn a_publisher_back_within_the_grace_continues_its_session_and_recording() {
    let server = Server::start_with_env(&[("STRATA__RTMP__RECONNECT_GRACE", "8")], |_| {});
    let stream = server.create_stream("flaky", "passthrough");
    let mut first = publish(&server.rtmp_url(&stream.key), 30);
    wait_segments(&server, &stream.playback_id, 2);
    let session = lose_publisher(&server, &mut first);
    let stored = sessions(&server);
    assert_eq!(stored[0]["state"], "reconnecting", "{stored:?}");

    let mut second = publish(&server.rtmp_url(&stream.key), 4);
    let resumed = wait_for(Duration::from_secs(5), || {
        live_sessions(&server)
            .into_iter()
            .find(|s| s["state"] == "live")
    })
    .expect("the session is live again");
    assert_eq!(resumed["session_id"].as_str(), Some(session.as_str()));
    assert!(second.wait().expect("ffmpeg").success());

    let ended = wait_for(Duration::from_secs(10), || {
        let all = sessions(&server);
        (all.first()?["state"] == "ended").then_some(all)
    })
    .expect("the broadcast ends when the publisher unpublishes");
    assert_eq!(
        ended.len(),
        1,
        "one session across the reconnect: {ended:?}"
    );
    assert_eq!(ended[0]["id"].as_str(), Some(session.as_str()));

    // the recording spans both connections and decodes across the join
    let vod = server.url(&format!("vod/{session}/master.m3u8"));
    let probed = ffprobe(&["-show_format", &vod]);
    let duration: f64 = probed["format"]["duration"]
        .as_str()
        .and_then(|d| d.parse().ok())
        .unwrap_or(0.0);
    assert!(
        duration > 4.0 + 3.5,
        "recording of {duration} s lacks the first connection"
    );
    let media = media_playlist(&server, &format!("vod/{session}")).expect("vod playlist");
    let playlist = m3u8_rs::parse_media_playlist_res(media.as_bytes()).expect("playlist");
    let sum: f64 = playlist
        .segments
        .iter()
        .map(|s| f64::from(s.duration))
        .sum();
    assert!((sum - duration).abs() < 0.5, "{sum} vs {duration}");
    let numbers: Vec<u64> = playlist
        .segments
        .iter()
        .filter_map(|s| s.uri.rsplit('/').next()?.strip_suffix(".m4s")?.parse().ok())
        .collect();
    assert_eq!(numbers.len(), playlist.segments.len());
    assert!(
        numbers.windows(2).all(|w| w[1] == w[0] + 1),
        "segment numbers {numbers:?}"
    );
    let frames = ffprobe(&[
        "-select_streams",
        "v:0",
        "-count_frames",
        "-show_entries",
        "stream=nb_read_frames",
        &vod,
    ]);
    let decoded: f64 = frames["streams"][0]["nb_read_frames"]
        .as_str()
        .and_then(|n| n.parse().ok())
        .unwrap_or(0.0);
    assert!(
        (decoded / 30.0 - duration).abs() < 0.5,
        "{decoded} frames decoded for {duration} s"
    );
    assert!(server.log().contains("publisher reconnected"));
}

#[test]
fn a_publisher_that_does_not_return_ends_the_broadcast_after_the_grace() {
    let server = Server::start_with_env(&[("STRATA__RTMP__RECONNECT_GRACE", "2")], |_| {});
    let stream = server.create_stream("gone", "passthrough");
    let mut publisher = publish(&server.rtmp_url(&stream.key), 30);
    wait_segments(&server, &stream.playback_id, 1);
    lose_publisher(&server, &mut publisher);
    let lost = Instant::now();
    wait_for(Duration::from_secs(10), || {
        (sessions(&server).first()?["state"] == "ended").then_some(())
    })
    .expect("the broadcast ends after the grace");
    let waited = lost.elapsed();
    assert!(
        waited >= Duration::from_millis(1000) && waited < Duration::from_secs(5),
        "ended {waited:?} after the loss was seen"
    );
    let playlist =
        media_playlist(&server, &format!("live/{}", stream.playback_id)).expect("live playlist");
    assert!(playlist.contains("#EXT-X-ENDLIST"), "{playlist}");
}
