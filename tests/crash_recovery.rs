//! A recording survives a crash: a broadcast is cut by `kill -9` of the server; after a restart
//! on the same data, the interrupted recording plays in ffprobe (with the media stored before
//! the crash, up to the last checkpoint), is listed by the API as a finished recording, and its
//! `on_recording_ready` webhook arrives.

mod support;

use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpListener;
use std::sync::mpsc;
use std::time::Duration;

use support::*;

/// A local HTTP receiver that answers 204 and hands over each request's path and body.
fn hook_receiver() -> (String, mpsc::Receiver<(String, String)>) {
    let listener = TcpListener::bind("127.0.0.1:0").expect("bind");
    let base = format!("http://{}", listener.local_addr().expect("addr"));
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        for mut socket in listener.incoming().flatten() {
            let mut reader = BufReader::new(socket.try_clone().expect("clone"));
            let mut line = String::new();
            let _ = reader.read_line(&mut line);
            let path = line
                .split_whitespace()
                .nth(1)
                .unwrap_or_default()
                .to_string();
            let mut length = 0usize;
            loop {
                let mut header = String::new();
                if reader.read_line(&mut header).unwrap_or(0) == 0 || header.trim().is_empty() {
                    break;
                }
                if let Some(v) = header.to_ascii_lowercase().strip_prefix("content-length:") {
                    length = v.trim().parse().unwrap_or(0);
                }
            }
            let mut body = vec![0u8; length];
            let _ = reader.read_exact(&mut body);
            let _ = socket.write_all(b"HTTP/1.1 204 No Content\r\nContent-Length: 0\r\n\r\n");
            let _ = tx.send((path, String::from_utf8_lossy(&body).into_owned()));
        }
    });
    (base, rx)
}

#[test]
fn a_recording_cut_by_a_crash_is_finished_listed_and_announced_at_restart() {
    let (hooks, received) = hook_receiver();
    let ready = format!("{hooks}/ready");
    let mut server = Server::start_with_env(
        &[("STRATA__WEBHOOKS__ON_RECORDING_READY", ready.as_str())],
        |_| {},
    );
    let stream = server.create_stream("crashy", "passthrough");
    let mut ffmpeg = publish(&server.rtmp_url(&stream.key), 30);
    let live = format!("live/{}/source/index.m3u8", stream.playback_id);
    wait_for(Duration::from_secs(30), || {
        let playlist = server.get_text(&live)?;
        (playlist.matches("#EXTINF").count() >= 5).then_some(())
    })
    .expect("five segments published");
    server.kill();
    let _ = ffmpeg.kill();
    let _ = ffmpeg.wait();
    server.restart();

    let (status, body) = api(
        &server,
        "GET",
        "/api/v1/recordings",
        Some(&server.admin_token),
        None,
    );
    assert_eq!(status, 200, "{body}");
    let recordings: serde_json::Value = serde_json::from_str(&body).expect("json");
    let recording = recordings
        .as_array()
        .and_then(|r| r.first())
        .unwrap_or_else(|| panic!("no recording listed: {body}"))
        .clone();
    let id = recording["id"].as_str().expect("id").to_string();
    let listed_ms = recording["duration_ms"].as_i64().unwrap_or(0);
    assert!(listed_ms >= 5_000, "listed as {listed_ms} ms: {recording}");

    let vod = server.url(&format!("vod/{id}/master.m3u8"));
    let probed = ffprobe(&["-show_format", "-show_streams", &vod]);
    let duration: f64 = probed["format"]["duration"]
        .as_str()
        .and_then(|d| d.parse().ok())
        .unwrap_or(0.0);
    assert!(duration >= 5.0, "the recording plays {duration} s");
    let kinds: Vec<&str> = probed["streams"]
        .as_array()
        .map(|s| s.iter().filter_map(|s| s["codec_type"].as_str()).collect())
        .unwrap_or_default();
    assert!(
        kinds.contains(&"video") && kinds.contains(&"audio"),
        "{kinds:?}"
    );

    let (path, payload) = received
        .recv_timeout(Duration::from_secs(20))
        .expect("on_recording_ready after the restart");
    assert_eq!(path, "/ready");
    assert!(payload.contains(&id), "{payload}");
    assert!(payload.contains("recording.ready"), "{payload}");
    assert!(server.log().contains("finished from its last checkpoint"));
}
