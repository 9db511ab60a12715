//! WebSocket ingest (`/ingest/ws`, what the Go live page uses) with a real recorder: ffmpeg
//! records WebM (VP8/VP9 + Opus, as Chromium's `MediaRecorder`) or fragmented MP4 (H.264 +
//! AAC, as Safari's) in real time and `support::ws_publisher` sends it as any client of the
//! documented protocol would. Checked: it comes out as the ladder and plays through both
//! manifests, the recording plays, the broadcast core's matrix (wrong key, takeover both ways,
//! reconnect within the grace, stop from the API, webhooks), and what a hostile or unsupported
//! recording gets. The browser itself (the Go live page in Chromium) is `tests/golive.rs`.

mod support;

use std::sync::atomic::Ordering;
use std::time::Duration;

use serde_json::Value;
use support::ws_publisher::{Recording, WsPublisher};
use support::*;

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
        let (kinds, duration) =
            probe_kinds_and_duration(&server.url(&format!("{live_root}/{manifest}")));
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

#[test]
fn a_vp9_opus_recording_plays_on_a_ladder() {
    publish_and_play(Recording::WebmVp9, "low-cpu");
}

#[test]
fn a_fragmented_mp4_recording_plays_on_passthrough() {
    publish_and_play(Recording::Mp4, "passthrough");
}

fn error_code(publisher: &WsPublisher, timeout: Duration) -> Option<String> {
    publisher
        .wait_message("error", timeout)
        .and_then(|m| m["code"].as_str().map(str::to_string))
}

/// A counter of `/metrics`, summed over the series that carry all of `labels`.
fn counter(server: &Server, name: &str, labels: &[&str]) -> f64 {
    let (_, body) = server.get("metrics");
    String::from_utf8_lossy(&body)
        .lines()
        .filter(|l| l.starts_with(&format!("{name}{{")) && labels.iter().all(|x| l.contains(x)))
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .sum()
}

#[test]
fn a_wrong_key_is_refused_at_once_and_nothing_goes_live() {
    let server = Server::start();
    let stream = server.create_stream("wrong", "passthrough");
    let started = std::time::Instant::now();
    let publisher = WsPublisher::start(&server.http, "sk_not_a_key", Recording::WebmVp8, 10);
    let code = error_code(&publisher, Duration::from_secs(5));
    assert_eq!(
        code.as_deref(),
        Some("bad_key"),
        "{:?}",
        publisher.messages()
    );
    assert!(started.elapsed() < Duration::from_secs(5));
    assert!(
        wait_for(Duration::from_secs(5), || publisher.closed().then_some(())).is_some(),
        "the server closes the socket"
    );
    assert!(publisher.messages().iter().all(|m| m["type"] != "live"));
    assert!(live_session(&server, &stream.playback_id).is_none());
    assert!(
        counter(
            &server,
            "strata_publishes_total",
            &["protocol=\"ws\"", "result=\"bad_key\""]
        ) >= 1.0
    );
    // a malformed opening message, and a recording type Strata does not read
    for (hello, expected) in [
        (r#"{"key":"#.to_string(), "bad_request"),
        (
            support::ws_publisher::hello(&stream.key, "application/x-mpegurl"),
            "unsupported",
        ),
    ] {
        let publisher = WsPublisher::start_with_hello(&server.http, &hello, Recording::WebmVp8, 10);
        assert_eq!(
            error_code(&publisher, Duration::from_secs(5)).as_deref(),
            Some(expected)
        );
    }
    assert!(!server.log().contains(&stream.key), "the key is in the log");
}

#[test]
fn a_second_publisher_takes_over_in_both_directions() {
    let server = Server::start();
    let stream = server.create_stream("takeover", "low-cpu");
    // RTMP first, then the browser takes over
    let mut rtmp = publish_sized(&server.rtmp_url(&stream.key), 60, "320x240");
    assert!(
        wait_for(Duration::from_secs(30), || {
            (segments_listed(&server, &stream.playback_id) >= 1).then_some(())
        })
        .is_some(),
        "RTMP is live:\n{}",
        server.log()
    );
    let first = live_session(&server, &stream.playback_id).expect("listed")["session_id"].clone();
    let browser = WsPublisher::start(&server.http, &stream.key, Recording::WebmVp8, 60);
    assert!(browser
        .wait_message("live", Duration::from_secs(10))
        .is_some());
    assert!(
        wait_for(Duration::from_secs(20), || rtmp.try_wait().ok().flatten()).is_some(),
        "the RTMP publisher is closed"
    );
    let taken = wait_for(Duration::from_secs(30), || {
        let session = live_session(&server, &stream.playback_id)?;
        (session["session_id"] != first && session["state"] == "live").then_some(session)
    })
    .expect("a new session is live");
    // then RTMP takes it back: the browser is told
    let mut again = publish_sized(&server.rtmp_url(&stream.key), 60, "320x240");
    assert_eq!(
        error_code(&browser, Duration::from_secs(20)).as_deref(),
        Some("ended"),
        "{:?}",
        browser.messages()
    );
    let back = wait_for(Duration::from_secs(30), || {
        let session = live_session(&server, &stream.playback_id)?;
        (session["session_id"] != taken["session_id"] && session["state"] == "live").then_some(())
    });
    assert!(back.is_some(), "RTMP is live again");
    let _ = again.kill();
    let _ = again.wait();
}

#[test]
fn a_browser_back_within_the_grace_continues_the_broadcast() {
    let server = Server::start_with_env(&[("STRATA__RTMP__RECONNECT_GRACE", "20")], |_| {});
    let stream = server.create_stream("resume", "low-cpu");
    let lost = WsPublisher::start(&server.http, &stream.key, Recording::WebmVp8, 60);
    assert!(
        wait_for(Duration::from_secs(40), || {
            (segments_listed(&server, &stream.playback_id) >= 2).then_some(())
        })
        .is_some(),
        "live:\n{}",
        server.log()
    );
    let listed = live_session(&server, &stream.playback_id).expect("listed");
    let (session, stream_id) = (listed["session_id"].clone(), listed["stream_id"].clone());
    lost.drop_connection();
    let parked = wait_for(Duration::from_secs(20), || {
        (live_session(&server, &stream.playback_id)?["state"] == "reconnecting").then_some(())
    });
    assert!(
        parked.is_some(),
        "the session waits for its publisher:\n{}",
        server.log()
    );
    let before = segments_listed(&server, &stream.playback_id);
    let back = WsPublisher::start(&server.http, &stream.key, Recording::WebmVp8, 60);
    let live = back
        .wait_message("live", Duration::from_secs(10))
        .expect("live again");
    assert_eq!(live["resumed"], true, "{live}");
    assert!(
        wait_for(Duration::from_secs(40), || {
            (segments_listed(&server, &stream.playback_id) >= before + 2).then_some(())
        })
        .is_some(),
        "the same playlist goes on:\n{}",
        server.log()
    );
    back.stop();
    let ended = wait_for(Duration::from_secs(30), || {
        media_playlist(&server, &format!("live/{}", stream.playback_id))?
            .contains("#EXT-X-ENDLIST")
            .then_some(())
    });
    assert!(ended.is_some(), "the stop ends it");
    let all = session_list(&server, "/api/v1/sessions?state=all");
    let of_stream: Vec<&Value> = all.iter().filter(|s| s["stream_id"] == stream_id).collect();
    assert_eq!(of_stream.len(), 1, "one session, continued: {of_stream:?}");
    assert_eq!(of_stream[0]["id"], session);
}

#[test]
fn a_stop_from_the_api_ends_the_browser_broadcast() {
    let server = Server::start();
    let stream = server.create_stream("stop", "low-cpu");
    let publisher = WsPublisher::start(&server.http, &stream.key, Recording::WebmVp8, 60);
    let session = wait_for(Duration::from_secs(40), || {
        let s = live_session(&server, &stream.playback_id)?;
        (segments_listed(&server, &stream.playback_id) >= 1)
            .then(|| s["session_id"].as_str().map(str::to_string))
            .flatten()
    })
    .expect("live");
    let (status, body) = api(
        &server,
        "DELETE",
        &format!("/api/v1/sessions/{session}"),
        Some(&server.admin_token),
        None,
    );
    assert!(
        (200..300).contains(&status),
        "stop answered {status} {body}"
    );
    assert_eq!(
        error_code(&publisher, Duration::from_secs(20)).as_deref(),
        Some("ended")
    );
    assert!(
        wait_for(Duration::from_secs(10), || publisher.closed().then_some(())).is_some(),
        "the socket is closed"
    );
    let ended = wait_for(Duration::from_secs(20), || {
        media_playlist(&server, &format!("live/{}", stream.playback_id))?
            .contains("#EXT-X-ENDLIST")
            .then_some(())
    });
    assert!(ended.is_some(), "the playlist ends");
}

fn webhook(allow: bool) {
    let (base, hooks) = hook_receiver();
    let url = format!("{base}/{}", if allow { "allow" } else { "deny" });
    let server = Server::start_with_env(&[("STRATA__WEBHOOKS__ON_PUBLISH", url.as_str())], |_| {});
    let stream = server.create_stream("hook", "low-cpu");
    let publisher = WsPublisher::start(&server.http, &stream.key, Recording::WebmVp8, 30);
    let (_, body) = hooks
        .recv_timeout(Duration::from_secs(20))
        .expect("on_publish is called");
    assert_eq!(body["protocol"], "ws", "the hook is told how");
    assert_eq!(body["stream"]["playback_id"], stream.playback_id.as_str());
    assert!(
        !body.to_string().contains(&stream.key),
        "the hook never sees the key"
    );
    if allow {
        assert!(publisher
            .wait_message("live", Duration::from_secs(10))
            .is_some());
    } else {
        assert_eq!(
            error_code(&publisher, Duration::from_secs(10)).as_deref(),
            Some("refused")
        );
        assert!(
            counter(
                &server,
                "strata_publishes_total",
                &["protocol=\"ws\"", "result=\"hook_refused\""]
            ) >= 1.0
        );
    }
}

#[test]
fn an_allowing_webhook_lets_the_browser_publish() {
    webhook(true);
}

#[test]
fn a_denying_webhook_refuses_the_browser() {
    webhook(false);
}

#[test]
fn unsupported_garbage_and_oversized_recordings_are_refused_and_the_server_goes_on() {
    let server = Server::start();
    let stream = server.create_stream("hostile", "low-cpu");
    // Vorbis audio: a real WebM with a codec Strata does not decode
    let vorbis = WsPublisher::start(&server.http, &stream.key, Recording::WebmVorbis, 20);
    assert_eq!(
        error_code(&vorbis, Duration::from_secs(20)).as_deref(),
        Some("unsupported"),
        "{:?}",
        vorbis.messages()
    );
    drop(vorbis);
    // bytes that are no container, and a message over the limit
    for (payload, expected) in [
        (vec![0x5au8; 200_000], "unsupported"),
        (vec![0u8; 3 << 20], "too_large"),
    ] {
        let mut socket = support::ws_publisher::connect(&server.http);
        socket
            .send(tungstenite::Message::text(support::ws_publisher::hello(
                &stream.key,
                "video/webm",
            )))
            .expect("hello");
        let _ = socket.send(tungstenite::Message::binary(payload));
        let messages = std::sync::Mutex::new(Vec::new());
        support::ws_publisher::read_until_closed(&mut socket, &messages);
        let messages = messages.into_inner().unwrap();
        assert!(
            messages
                .iter()
                .any(|m| m["type"] == "error" && m["code"] == expected),
            "{expected}: {messages:?}"
        );
    }
    // the server goes on: the next browser publishes
    let good = WsPublisher::start(&server.http, &stream.key, Recording::WebmVp8, 60);
    assert!(good.wait_message("live", Duration::from_secs(10)).is_some());
    let listed = wait_for(Duration::from_secs(40), || {
        (segments_listed(&server, &stream.playback_id) >= 1).then_some(())
    });
    assert!(
        listed.is_some(),
        "publishes after the hostile ones:\n{}",
        server.log()
    );
    good.stop();
}

/// `seconds` of VP8/Opus test signal recorded to a WebM file (not in real time).
fn webm_file(dir: &std::path::Path, name: &str, seconds: u32) -> Vec<u8> {
    let path = dir.join(name);
    let status = Recording::WebmVp8
        .ffmpeg(seconds, false, &path.display().to_string())
        .status()
        .expect("ffmpeg runs");
    assert!(status.success(), "ffmpeg wrote {name}");
    std::fs::read(&path).expect("the recording")
}

#[test]
fn a_new_recording_on_the_same_socket_continues_the_broadcast() {
    let server = Server::start();
    let stream = server.create_stream("recordings", "low-cpu");
    let dir = tempfile::tempdir().expect("temp dir");
    let first = webm_file(dir.path(), "first.webm", 5);
    let second = webm_file(dir.path(), "second.webm", 5);
    let mut socket = support::ws_publisher::connect(&server.http);
    let send = |socket: &mut tungstenite::WebSocket<std::net::TcpStream>, text: String| {
        socket.send(tungstenite::Message::text(text)).expect("send");
    };
    send(
        &mut socket,
        support::ws_publisher::hello(&stream.key, "video/webm;codecs=vp8,opus"),
    );
    for (i, recording) in [first, second].iter().enumerate() {
        if i > 0 {
            // as the page does to lower its bitrate: a new recorder, announced first
            send(
                &mut socket,
                r#"{"type":"recording","mime":"video/webm;codecs=vp8,opus"}"#.into(),
            );
        }
        for slice in recording.chunks(16 * 1024) {
            socket
                .send(tungstenite::Message::binary(slice.to_vec()))
                .expect("send a slice");
            std::thread::sleep(Duration::from_millis(30));
        }
    }
    send(&mut socket, r#"{"type":"stop"}"#.into());
    let messages = std::sync::Mutex::new(Vec::new());
    support::ws_publisher::read_until_closed(&mut socket, &messages);
    let messages = messages.into_inner().unwrap();
    assert!(
        messages.iter().any(|m| m["type"] == "ended"),
        "both recordings taken, then stopped: {messages:?}\n{}",
        server.log()
    );
    let live_root = format!("live/{}", stream.playback_id);
    let ended = wait_for(Duration::from_secs(30), || {
        media_playlist(&server, &live_root)?
            .contains("#EXT-X-ENDLIST")
            .then_some(())
    });
    assert!(ended.is_some(), "the broadcast ended");
    let (kinds, duration) =
        probe_kinds_and_duration(&server.url(&format!("{live_root}/master.m3u8")));
    assert!(
        kinds.contains(&"video".into()) && kinds.contains(&"audio".into()),
        "{kinds:?}"
    );
    // both recordings, one timeline: 10 s, less what a ladder fed faster than real time skips
    assert!(
        (8.0..=11.5).contains(&duration),
        "the broadcast lasts {duration} s for two recordings of 5 s"
    );
    assert!(server
        .log()
        .contains("a new recording continues the broadcast"));
}

#[test]
fn a_client_that_reads_nothing_cannot_hold_the_connection_slot() {
    let server = Server::start_with_env(&[("STRATA__WS__MAX_CONNECTIONS", "1")], |_| {});
    let stream = server.create_stream("deaf", "low-cpu");
    // a client that floods pings and never reads the pongs
    let mut deaf = support::ws_publisher::connect(&server.http);
    deaf.send(tungstenite::Message::text(support::ws_publisher::hello(
        &stream.key,
        "video/webm",
    )))
    .expect("hello");
    deaf.get_ref()
        .set_write_timeout(Some(Duration::from_millis(200)))
        .expect("write timeout");
    let done = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let flooding = done.clone();
    let flood = std::thread::spawn(move || {
        let deadline = std::time::Instant::now() + Duration::from_secs(30);
        while std::time::Instant::now() < deadline && !flooding.load(Ordering::Relaxed) {
            if deaf
                .send(tungstenite::Message::Ping(vec![7u8; 125].into()))
                .is_err()
            {
                std::thread::sleep(Duration::from_millis(50));
            }
        }
    });
    // the slot comes back once the server gives up on it: the next publisher gets in
    let admitted = wait_for(Duration::from_secs(25), || {
        let mut socket = support::ws_publisher::try_connect(&server.http)?;
        let hello = support::ws_publisher::hello(&stream.key, "video/webm");
        socket.send(tungstenite::Message::text(hello)).ok()?;
        let messages = std::sync::Mutex::new(Vec::new());
        wait_for(Duration::from_secs(2), || {
            if let Ok(tungstenite::Message::Text(text)) = socket.read() {
                messages.lock().unwrap().push(text.to_string());
            }
            messages
                .lock()
                .unwrap()
                .iter()
                .find(|m| m.contains("\"live\""))
                .cloned()
        })
    });
    done.store(true, Ordering::Relaxed);
    let _ = flood.join();
    assert!(admitted.is_some(), "the slot was freed:\n{}", server.log());
}

#[test]
fn a_browser_back_for_a_lost_passthrough_publisher_starts_a_transcoded_broadcast() {
    let server = Server::start_with_env(
        &[
            ("STRATA__RTMP__RECONNECT_GRACE", "20"),
            ("STRATA__RTMP__IDLE_TIMEOUT", "2"),
        ],
        |_| {},
    );
    let stream = server.create_stream("obs-then-browser", "passthrough");
    let mut obs = publish_sized(&server.rtmp_url(&stream.key), 60, "320x240");
    assert!(
        wait_for(Duration::from_secs(30), || {
            (segments_listed(&server, &stream.playback_id) >= 1).then_some(())
        })
        .is_some(),
        "RTMP is live"
    );
    let first = live_session(&server, &stream.playback_id).expect("listed")["session_id"].clone();
    // OBS freezes (a network drop): its passthrough broadcast waits for it
    let _ = std::process::Command::new("kill")
        .args(["-STOP", &obs.id().to_string()])
        .status();
    let parked = wait_for(Duration::from_secs(20), || {
        (live_session(&server, &stream.playback_id)?["state"] == "reconnecting").then_some(())
    });
    assert!(parked.is_some(), "parked");
    let _ = obs.kill();
    let _ = obs.wait();
    // the browser cannot continue a passthrough broadcast: a new, transcoded one starts
    let browser = WsPublisher::start(&server.http, &stream.key, Recording::WebmVp8, 60);
    let live = browser
        .wait_message("live", Duration::from_secs(10))
        .expect("live");
    assert_eq!(live["resumed"], false, "{live}");
    let new = wait_for(Duration::from_secs(40), || {
        let session = live_session(&server, &stream.playback_id)?;
        (session["session_id"] != first && session["state"] == "live").then_some(())
    });
    assert!(new.is_some(), "a new session is live:\n{}", server.log());
    let before = segments_listed(&server, &stream.playback_id);
    let published = wait_for(Duration::from_secs(40), || {
        (segments_listed(&server, &stream.playback_id) >= before.max(1) + 2).then_some(())
    });
    assert!(
        published.is_some(),
        "the browser's broadcast publishes:\n{}",
        server.log()
    );
    assert!(error_code(&browser, Duration::from_millis(10)).is_none());
    browser.stop();
}
