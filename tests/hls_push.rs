//! HLS push ingest (`PUT /ingest/hls/{stream}/{file}`) with real ffmpeg pushers: MPEG-TS and
//! fMP4 segments come out as the ladder and play through `master.m3u8` and `manifest.mpd`; the
//! key never shows in logs or object keys; a proxy that reorders and repeats uploads never
//! stalls or crashes the stream; and the broadcast core's matrix (wrong key, takeover,
//! reconnect within the grace, stop from the API, webhooks) as HTTP pushers see it: they are
//! told by status codes, since ffmpeg's HLS muxer goes on whatever the server answers.

mod support;

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{TcpListener, TcpStream};
use std::process::Child;
use std::sync::{mpsc, Arc, Mutex};
use std::time::{Duration, Instant};

use serde_json::Value;
use support::*;

/// `method` of `body` at `path` with `key` as the bearer (none: no Authorization), declaring
/// `declared` bytes (the body's length unless given); the status (0: no answer).
fn put_raw(
    server: &Server,
    method: &str,
    path: &str,
    key: Option<&str>,
    body: &[u8],
    declared: Option<usize>,
) -> u16 {
    let Ok(mut socket) = TcpStream::connect(&server.http) else {
        return 0;
    };
    let _ = socket.set_read_timeout(Some(Duration::from_secs(15)));
    let auth = key
        .map(|k| format!("Authorization: Bearer {k}\r\n"))
        .unwrap_or_default();
    let head = format!(
        "{method} {path} HTTP/1.1\r\nHost: test\r\n{auth}Content-Length: {}\r\nConnection: close\r\n\r\n",
        declared.unwrap_or(body.len())
    );
    if socket.write_all(head.as_bytes()).is_err() {
        return 0;
    }
    let _ = socket.write_all(body);
    let mut status_line = String::new();
    let _ = BufReader::new(socket).read_line(&mut status_line);
    status_line
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or(0)
}

fn put(server: &Server, path: &str, key: &str, body: &[u8]) -> u16 {
    put_raw(server, "PUT", path, Some(key), body, None)
}

/// A one-segment playlist naming `segment`.
fn playlist_for(segment: &str) -> Vec<u8> {
    format!(
        "#EXTM3U\n#EXT-X-TARGETDURATION:2\n#EXT-X-MEDIA-SEQUENCE:100000\n#EXTINF:2.0,\n{segment}\n"
    )
    .into_bytes()
}

fn publishes(server: &Server, result: &str) -> f64 {
    let (_, body) = server.get("metrics");
    let series = format!("strata_publishes_total{{protocol=\"hls_push\",result=\"{result}\"}}");
    String::from_utf8_lossy(&body)
        .lines()
        .find_map(|l| l.strip_prefix(series.as_str())?.trim().parse().ok())
        .unwrap_or(0.0)
}

/// The first variant's media playlist of a broadcast.
fn media_playlist(server: &Server, playback_id: &str) -> Option<String> {
    let master = server.get_text(&format!("live/{playback_id}/master.m3u8"))?;
    let variant = master.lines().find(|l| l.ends_with(".m3u8"))?.to_string();
    server.get_text(&format!("live/{playback_id}/{variant}"))
}

fn wait_ended(server: &Server, playback_id: &str) -> Option<String> {
    wait_for(Duration::from_secs(40), || {
        media_playlist(server, playback_id).filter(|p| p.contains("#EXT-X-ENDLIST"))
    })
}

/// The stream id of a live broadcast, once listed.
fn live_stream_id(server: &Server, playback_id: &str) -> Option<String> {
    wait_for(Duration::from_secs(30), || {
        live_session(server, playback_id)?["stream_id"]
            .as_str()
            .map(str::to_string)
    })
}

/// The recording of the last session of `stream_id`, once stored: its master playlist URL.
fn recording_master(server: &Server, stream_id: &str) -> Option<String> {
    wait_for(Duration::from_secs(30), || {
        let session = session_list(server, "/api/v1/sessions?state=all")
            .into_iter()
            .rfind(|s| s["stream_id"] == stream_id && s["state"] == "ended")?;
        let path = format!("vod/{}/master.m3u8", session["id"].as_str()?);
        (server.get(&path).0 == 200).then(|| server.url(&path))
    })
}

fn stop(child: &mut Child) {
    let _ = child.kill();
    let _ = child.wait();
}

fn push_url(server: &Server, stream: &str) -> String {
    server.url(&format!("/ingest/hls/{stream}/index.m3u8"))
}

/// Seconds of media a manifest plays, per ffprobe.
fn duration(url: &str) -> f64 {
    let probe = ffprobe(&["-show_format", url]);
    probe["format"]["duration"]
        .as_str()
        .and_then(|d| d.parse().ok())
        .unwrap_or(0.0)
}

fn files_under(dir: &std::path::Path) -> Vec<String> {
    let mut out = Vec::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        for entry in std::fs::read_dir(&d).into_iter().flatten().flatten() {
            let path = entry.path();
            out.push(path.display().to_string());
            if path.is_dir() {
                stack.push(path);
            }
        }
    }
    out
}

#[test]
fn ffmpeg_pushes_mpegts_and_fmp4_that_come_out_as_the_ladder() {
    let server = Server::start();
    for (name, fmp4) in [("push-ts", false), ("push-fmp4", true)] {
        let stream = server.create_stream(name, "default");
        let mut ffmpeg = push_hls(&push_url(&server, name), &stream.key, 10, fmp4);
        let status = ffmpeg.wait().expect("ffmpeg runs");
        assert!(status.success(), "{name}: ffmpeg pushed to the end");
        let live = format!("live/{}", stream.playback_id);
        let ended = wait_for(Duration::from_secs(60), || {
            let master = server.get_text(&format!("{live}/master.m3u8"))?;
            let variants: Vec<&str> = master.lines().filter(|l| l.ends_with(".m3u8")).collect();
            // the default ladder's rungs up to the source's 180p: its 360p rung
            (variants.iter().any(|v| v.starts_with("360p/"))
                && variants.iter().all(|v| {
                    server
                        .get_text(&format!("{live}/{v}"))
                        .is_some_and(|p| p.contains("#EXT-X-ENDLIST"))
                }))
            .then_some(variants.len())
        });
        assert!(ended.is_some(), "{name}: every rung ends\n{}", server.log());
        for manifest in ["master.m3u8", "manifest.mpd"] {
            let url = server.url(&format!("{live}/{manifest}"));
            let probe = ffprobe(&["-show_streams", &url]);
            let kinds: Vec<&str> = probe["streams"]
                .as_array()
                .map(|s| s.iter().filter_map(|s| s["codec_type"].as_str()).collect())
                .unwrap_or_default();
            assert!(
                kinds.contains(&"video") && kinds.contains(&"audio"),
                "{name}: {manifest} has video and audio ({kinds:?})"
            );
            let seconds = duration(&url);
            assert!(
                (8.0..=11.0).contains(&seconds),
                "{name}: {manifest} plays {seconds} s of the 10 s pushed"
            );
        }
        let log = server.log();
        assert!(!log.contains(&stream.key), "{name}: the key is not logged");
        assert!(
            files_under(&server.media_dir())
                .iter()
                .all(|f| !f.contains(&stream.key)),
            "{name}: no object key holds the key"
        );
    }
}

/// One upload as ffmpeg made it.
struct Request {
    method: String,
    path: String,
    auth: String,
    body: Vec<u8>,
}

/// Reads one HTTP/1.1 request (Content-Length or chunked body).
fn read_request(socket: &TcpStream) -> Option<Request> {
    let mut reader = BufReader::new(socket);
    let mut line = String::new();
    reader.read_line(&mut line).ok()?;
    let mut parts = line.split_whitespace();
    let (method, path) = (parts.next()?.to_string(), parts.next()?.to_string());
    let (mut auth, mut length, mut chunked) = (String::new(), 0usize, false);
    loop {
        let mut header = String::new();
        if reader.read_line(&mut header).ok()? == 0 || header.trim().is_empty() {
            break;
        }
        let (name, value) = header.split_once(':')?;
        let value = value.trim().to_string();
        match name.to_ascii_lowercase().as_str() {
            "authorization" => auth = value,
            "content-length" => length = value.parse().ok()?,
            "transfer-encoding" => chunked = value.eq_ignore_ascii_case("chunked"),
            _ => {}
        }
    }
    let mut body = Vec::new();
    if chunked {
        loop {
            let mut size = String::new();
            reader.read_line(&mut size).ok()?;
            let n = usize::from_str_radix(size.trim(), 16).ok()?;
            let mut chunk = vec![0; n + 2];
            reader.read_exact(&mut chunk).ok()?;
            if n == 0 {
                break;
            }
            body.extend_from_slice(&chunk[..n]);
        }
    } else {
        body.resize(length, 0);
        reader.read_exact(&mut body).ok()?;
    }
    Some(Request {
        method,
        path,
        auth,
        body,
    })
}

/// What the shuffling proxy did, for the test's assertions.
#[derive(Default, Debug)]
struct Shuffled {
    held: usize,
    repeated: usize,
    dropped: Vec<String>,
    statuses: Vec<(String, u16)>,
}

/// An HTTP proxy in front of `upstream` that makes a pusher's uploads come wrong: every third
/// segment from the fourth on is held back and sent after the next one (so the playlist that
/// lists it comes before it, and the next segment overtakes it), every fourth is sent twice,
/// the `drop`th never, and every playlist twice. Answers the pusher 201 at once.
fn shuffling_proxy(upstream: String, drop: usize) -> (String, Arc<Mutex<Shuffled>>) {
    let listener = TcpListener::bind("127.0.0.1:0").expect("bind");
    let addr = listener.local_addr().expect("addr");
    let report = Arc::new(Mutex::new(Shuffled::default()));
    let (tx, rx) = mpsc::channel::<Request>();
    std::thread::spawn(move || {
        for socket in listener.incoming().flatten() {
            if let Some(request) = read_request(&socket) {
                let mut socket = socket;
                let _ = socket.write_all(
                    b"HTTP/1.1 201 Created\r\nContent-Length: 0\r\nConnection: close\r\n\r\n",
                );
                if tx.send(request).is_err() {
                    return;
                }
            }
        }
    });
    let forwarded = report.clone();
    std::thread::spawn(move || {
        let send = |r: &Request, report: &Mutex<Shuffled>| {
            let status = forward(&upstream, r);
            report
                .lock()
                .unwrap()
                .statuses
                .push((r.path.clone(), status));
        };
        let mut segments = 0usize;
        let mut held: Option<Request> = None;
        for request in rx {
            let is_playlist = request.path.ends_with(".m3u8");
            if request.method != "PUT" && request.method != "POST" {
                send(&request, &forwarded);
                continue;
            }
            if is_playlist {
                send(&request, &forwarded);
                send(&request, &forwarded);
                // the last segment, if held, comes after the playlist that ends the list
                if request.body.windows(14).any(|w| w == b"#EXT-X-ENDLIST") {
                    if let Some(h) = held.take() {
                        send(&h, &forwarded);
                    }
                }
                continue;
            }
            if request.path.ends_with("init.mp4") {
                send(&request, &forwarded);
                continue;
            }
            segments += 1;
            if segments == drop {
                forwarded.lock().unwrap().dropped.push(request.path.clone());
                continue;
            }
            if let Some(h) = held.take() {
                send(&request, &forwarded);
                send(&h, &forwarded);
                continue;
            }
            if segments % 3 == 1 && segments > 1 {
                forwarded.lock().unwrap().held += 1;
                held = Some(request);
                continue;
            }
            send(&request, &forwarded);
            if segments % 4 == 2 {
                forwarded.lock().unwrap().repeated += 1;
                send(&request, &forwarded);
            }
        }
        if let Some(h) = held.take() {
            send(&h, &forwarded);
        }
    });
    (format!("http://{addr}"), report)
}

/// Sends `request` upstream (Content-Length, one connection); its status.
fn forward(upstream: &str, request: &Request) -> u16 {
    let Ok(mut socket) = TcpStream::connect(upstream) else {
        return 0;
    };
    let _ = socket.set_read_timeout(Some(Duration::from_secs(15)));
    let head = format!(
        "{} {} HTTP/1.1\r\nHost: strata\r\nAuthorization: {}\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
        request.method,
        request.path,
        request.auth,
        request.body.len()
    );
    let _ = socket.write_all(head.as_bytes());
    let _ = socket.write_all(&request.body);
    let mut line = String::new();
    let _ = BufReader::new(socket).read_line(&mut line);
    line.split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or(0)
}

#[test]
fn reordered_repeated_and_missing_uploads_never_stall_or_crash_the_stream() {
    let mut server = Server::start();
    for (name, fmp4) in [("shuffled-ts", false), ("shuffled-fmp4", true)] {
        let stream = server.create_stream(name, "passthrough");
        let (proxy, report) = shuffling_proxy(server.http.clone(), 6);
        let url = format!("{proxy}/ingest/hls/{name}/index.m3u8");
        let mut ffmpeg = push_hls(&url, &stream.key, 20, fmp4);
        // while it pushes, the stream is live and its playlist grows
        let growing = wait_for(Duration::from_secs(30), || {
            (segments_listed(&server, &stream.playback_id) >= 3).then_some(())
        });
        assert!(
            growing.is_some(),
            "{name}: live through the proxy\n{}",
            server.log()
        );
        let stream_id = live_stream_id(&server, &stream.playback_id).expect("listed");
        assert!(ffmpeg.wait().expect("ffmpeg").success(), "{name}: pushed");
        let ended = wait_ended(&server, &stream.playback_id);
        assert!(
            ended.is_some(),
            "{name}: ends on EXT-X-ENDLIST\n{}",
            server.log()
        );
        assert!(server.is_running(), "{name}: the server is still up");
        let report = report.lock().unwrap();
        assert!(
            report.held >= 2 && report.repeated >= 1,
            "{name}: {report:?}"
        );
        assert_eq!(report.dropped.len(), 1, "{name}: {report:?}");
        assert!(
            report.statuses.iter().all(|(_, s)| (200..300).contains(s)),
            "{name}: every forwarded upload accepted: {report:?}"
        );
        // the missing segment is a discontinuity, the others all play: 20 s pushed, 2 s lost
        let recording = recording_master(&server, &stream_id).expect("recorded");
        let seconds = duration(&recording);
        assert!(
            (16.5..=19.0).contains(&seconds),
            "{name}: {seconds} s play of 20 s pushed with one 2 s segment lost\n{:?}\n{}",
            ended,
            server.log()
        );
        let live = format!("live/{}", stream.playback_id);
        let probe = ffprobe(&[
            "-show_streams",
            &server.url(&format!("{live}/manifest.mpd")),
        ]);
        assert!(probe["streams"].as_array().is_some_and(|s| s.len() == 2));
        let log = server.log();
        assert!(
            log.contains("discontinuity before this segment"),
            "{name}: {log}"
        );
        assert!(
            log.contains("skipped=1"),
            "{name}: the skip is counted: {log}"
        );
    }
    server.terminate();
}

#[test]
fn a_wrong_key_is_answered_401_before_the_body_and_nothing_goes_live() {
    let server = Server::start();
    let stream = server.create_stream("locked", "passthrough");
    let other = server.create_stream("other", "passthrough");
    let path = "/ingest/hls/locked/index0.ts";
    // a declared 100 MB body that never comes: the answer cannot have waited for it
    let started = Instant::now();
    let status = put_raw(
        &server,
        "PUT",
        path,
        Some("sk_wrong"),
        b"",
        Some(100_000_000),
    );
    assert_eq!(status, 401, "a wrong key");
    assert!(
        started.elapsed() < Duration::from_secs(5),
        "answered at once"
    );
    assert_eq!(
        put_raw(&server, "PUT", path, None, b"x", None),
        401,
        "no key"
    );
    assert_eq!(
        put(&server, path, &other.key, b"x"),
        401,
        "another stream's key"
    );
    assert_eq!(
        put_raw(&server, "DELETE", path, Some("sk_wrong"), b"", None),
        401,
        "DELETE needs the key too"
    );
    // ffmpeg with a wrong key pushes on (its HLS muxer ignores answers); nothing goes live
    let mut ffmpeg = push_hls(&push_url(&server, "locked"), "sk_wrong_key_0123", 4, false);
    let _ = ffmpeg.wait();
    assert!(publishes(&server, "bad_key") >= 4.0);
    assert!(
        session_list(&server, "/api/v1/sessions").is_empty(),
        "nothing went live"
    );
    assert!(server
        .get_text(&format!("live/{}/master.m3u8", stream.playback_id))
        .is_none());
    let log = server.log();
    assert!(!log.contains("sk_wrong_key_0123") && !log.contains(&stream.key));
    let stored = files_under(&server.media_dir());
    assert!(
        stored.iter().all(|f| !f.contains(&stream.playback_id)),
        "nothing was stored: {stored:?}"
    );
    // the right key, on a path that is not a plain file name, is refused as a bad request
    assert_eq!(
        put(&server, "/ingest/hls/locked/..%2Fx.ts", &stream.key, b"x"),
        400
    );
}

#[test]
fn uploads_are_bounded_in_size_and_rate() {
    let server = Server::start_with_env(
        &[
            ("STRATA__HLS_PUSH__MAX_SEGMENT_BYTES", "65536"),
            ("STRATA__HLS_PUSH__MAX_PLAYLIST_BYTES", "1024"),
            ("STRATA__HLS_PUSH__MAX_WAITING_BYTES", "65536"),
            ("STRATA__HLS_PUSH__REQUESTS_PER_SECOND", "5"),
        ],
        |_| {},
    );
    let stream = server.create_stream("bounded", "passthrough");
    let base = "/ingest/hls/bounded";
    let big = vec![0x47; 70_000];
    assert_eq!(
        put(&server, &format!("{base}/a.ts"), &stream.key, &big),
        413
    );
    // declared too large: refused without reading it
    let declared = put_raw(
        &server,
        "PUT",
        &format!("{base}/b.ts"),
        Some(&stream.key),
        b"",
        Some(1 << 30),
    );
    assert_eq!(declared, 413);
    assert_eq!(
        put(
            &server,
            &format!("{base}/index.m3u8"),
            &stream.key,
            &[b'#'; 2000]
        ),
        413,
        "a playlist over its own limit"
    );
    assert_eq!(
        put(
            &server,
            &format!("{base}/index.m3u8"),
            &stream.key,
            b"not a playlist"
        ),
        400
    );
    let statuses: Vec<u16> = (0..30)
        .map(|_| {
            put(
                &server,
                &format!("{base}/index.m3u8"),
                &stream.key,
                &playlist_for("s.ts"),
            )
        })
        .collect();
    assert!(statuses.contains(&201), "{statuses:?}");
    assert!(
        statuses.contains(&429),
        "a burst past 2 × 5 requests: {statuses:?}"
    );
    assert!(server.log().contains("publish accepted"));
}

/// Waits until `playback_id` has a live session other than `old` and returns its id.
fn new_live_session(server: &Server, playback_id: &str, old: &Value) -> Option<Value> {
    wait_for(Duration::from_secs(30), || {
        let session = live_session(server, playback_id)?;
        (session["session_id"] != *old && session["state"] == "live")
            .then(|| session["session_id"].clone())
    })
}

fn wait_live(server: &Server, playback_id: &str, segments: usize) -> Value {
    wait_for(Duration::from_secs(40), || {
        (segments_listed(server, playback_id) >= segments).then_some(())
    })
    .unwrap_or_else(|| panic!("{playback_id} live\n{}", server.log()));
    live_session(server, playback_id).expect("listed")["session_id"].clone()
}

#[test]
fn a_push_and_an_rtmp_publisher_take_over_from_each_other() {
    let server = Server::start();
    // RTMP takes over from a push; the pusher is then answered 409
    let stream = server.create_stream("takeover-push", "passthrough");
    let mut pusher = push_hls(&push_url(&server, "takeover-push"), &stream.key, 60, false);
    let pushed = wait_live(&server, &stream.playback_id, 1);
    let mut rtmp = publish(&server.rtmp_url(&stream.key), 60);
    assert!(
        new_live_session(&server, &stream.playback_id, &pushed).is_some(),
        "RTMP took over\n{}",
        server.log()
    );
    let path = "/ingest/hls/takeover-push/index.m3u8";
    let refused = wait_for(Duration::from_secs(10), || {
        (put(&server, path, &stream.key, &playlist_for("x.ts")) == 409).then_some(())
    });
    assert!(refused.is_some(), "the replaced pusher is refused");
    assert!(rtmp.try_wait().ok().flatten().is_none(), "RTMP goes on");
    stop(&mut rtmp);
    stop(&mut pusher);
    // a push takes over from RTMP, whose publisher is disconnected
    let stream = server.create_stream("takeover-rtmp", "passthrough");
    let mut rtmp = publish(&server.rtmp_url(&stream.key), 60);
    let published = wait_live(&server, &stream.playback_id, 1);
    let mut pusher = push_hls(&push_url(&server, "takeover-rtmp"), &stream.key, 60, false);
    assert!(new_live_session(&server, &stream.playback_id, &published).is_some());
    let closed = wait_for(Duration::from_secs(20), || rtmp.try_wait().ok().flatten());
    assert!(closed.is_some(), "the RTMP publisher is closed");
    stop(&mut pusher);
}

#[test]
fn a_pusher_back_within_the_grace_continues_the_session() {
    let server = Server::start_with_env(&[("STRATA__RTMP__RECONNECT_GRACE", "30")], |_| {});
    let stream = server.create_stream("resumed", "passthrough");
    let url = push_url(&server, "resumed");
    let mut first = push_hls(&url, &stream.key, 60, false);
    let session = wait_live(&server, &stream.playback_id, 2);
    let stream_id = live_stream_id(&server, &stream.playback_id).expect("listed");
    stop(&mut first);
    // no playlist for twice the target duration: the publisher is lost, the session waits
    let parked = wait_for(Duration::from_secs(20), || {
        (live_session(&server, &stream.playback_id)?["state"] == "reconnecting").then_some(())
    });
    assert!(
        parked.is_some(),
        "the session waits for its pusher\n{}",
        server.log()
    );
    let before = segments_listed(&server, &stream.playback_id);
    // a restarted ffmpeg: its media sequence and file names start over
    let mut second = push_hls(&url, &stream.key, 6, true);
    assert!(second.wait().expect("ffmpeg").success());
    let ended = wait_ended(&server, &stream.playback_id).expect("ends with the second push");
    assert!(
        ended.matches("#EXTINF").count() > before,
        "the same playlist goes on"
    );
    let of_stream: Vec<Value> = session_list(&server, "/api/v1/sessions?state=all")
        .into_iter()
        .filter(|s| s["stream_id"] == stream_id.as_str())
        .collect();
    assert_eq!(of_stream.len(), 1, "one session, continued: {of_stream:?}");
    assert_eq!(of_stream[0]["id"], session);
}

#[test]
fn a_stop_from_the_api_ends_a_push_and_keeps_it_ended() {
    let server = Server::start();
    let stream = server.create_stream("stopped", "passthrough");
    let mut pusher = push_hls(&push_url(&server, "stopped"), &stream.key, 60, false);
    let session = wait_live(&server, &stream.playback_id, 1);
    let (status, body) = api(
        &server,
        "DELETE",
        &format!("/api/v1/sessions/{}", session.as_str().expect("id")),
        Some(&server.admin_token),
        None,
    );
    assert!(
        (200..300).contains(&status),
        "stop answered {status} {body}"
    );
    assert!(
        wait_ended(&server, &stream.playback_id).is_some(),
        "the playlist ends"
    );
    let path = "/ingest/hls/stopped/index.m3u8";
    assert_eq!(put(&server, path, &stream.key, &playlist_for("x.ts")), 409);
    // the pusher goes on pushing; the broadcast stays ended
    std::thread::sleep(Duration::from_secs(3));
    assert!(
        live_session(&server, &stream.playback_id).is_none(),
        "not live again"
    );
    stop(&mut pusher);
}

#[test]
fn the_on_publish_webhook_allows_and_denies_a_push() {
    for allow in [true, false] {
        let (base, hooks) = hook_receiver();
        let url = format!("{base}/{}", if allow { "allow" } else { "deny" });
        let server =
            Server::start_with_env(&[("STRATA__WEBHOOKS__ON_PUBLISH", url.as_str())], |_| {});
        let stream = server.create_stream("hooked", "passthrough");
        let path = "/ingest/hls/hooked/index.m3u8";
        let status = put(&server, path, &stream.key, &playlist_for("x.ts"));
        let (_, body) = hooks
            .recv_timeout(Duration::from_secs(20))
            .expect("on_publish is called");
        assert_eq!(body["protocol"], "hls_push");
        assert_eq!(body["stream"]["playback_id"], stream.playback_id.as_str());
        assert!(
            !body.to_string().contains(&stream.key),
            "the hook never sees the key"
        );
        if allow {
            assert_eq!(status, 201);
            assert!(publishes(&server, "accepted") >= 1.0);
        } else {
            assert_eq!(status, 403, "denied");
            assert!(publishes(&server, "hook_refused") >= 1.0);
            assert!(session_list(&server, "/api/v1/sessions").is_empty());
        }
    }
}
