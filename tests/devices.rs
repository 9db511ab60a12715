//! Devices end to end: `strata device-agent --test-pattern` (ffmpeg `-f rtp`, video only) is a
//! camera. It goes online (admin events stream, API with the round-trip time), is started and
//! stopped from the API, and its broadcast plays in ffprobe through HLS and DASH (video only,
//! every segment starting with a keyframe, the duration it streamed). Wrong, rotated and
//! revoked tokens are refused; RTP from an unannounced SSRC or address is dropped and counted.
//! Killed, the device is offline within 10 s and its broadcast ends after the reconnect grace.
//! Through a UDP relay that drops 5 % of the packets and reorders some, the broadcast goes on:
//! every segment decodes without an error, the device is asked for keyframes, and hls.js in
//! Chromium plays it for 30 s without a fatal error.

mod support;

use std::net::{SocketAddr, UdpSocket};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::sync::mpsc::Receiver;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use serde_json::{json, Value};
use support::*;

/// A running `strata device-agent`, killed when dropped.
struct Agent(Child);

impl Drop for Agent {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn agent(server: &Server, token: &str) -> Agent {
    let log = std::fs::File::create(server.dir.path().join("agent.log")).expect("agent log");
    let child = Command::new(env!("CARGO_BIN_EXE_strata"))
        .args([
            "device-agent",
            "--server",
            &format!("http://{}", server.http),
        ])
        .args(["--test-pattern", "--size", "640x360", "--fps", "30"])
        .env("STRATA_DEVICE_TOKEN", token)
        .env("RUST_LOG", "info")
        .env("NO_COLOR", "1")
        .stdout(Stdio::null())
        .stderr(log)
        .spawn()
        .expect("spawn the device agent");
    Agent(child)
}

fn agent_log(server: &Server) -> String {
    std::fs::read_to_string(server.dir.path().join("agent.log")).unwrap_or_default()
}

/// `POST /api/v1/devices/{id}/{what}` (`start`, `stop`) as the admin.
fn command(server: &Server, id: &str, what: &str) -> (u16, Value) {
    admin(
        server,
        "POST",
        &format!("/api/v1/devices/{id}/{what}"),
        None,
    )
}

fn admin(server: &Server, method: &str, path: &str, body: Option<Value>) -> (u16, Value) {
    let (status, text) = api(server, method, path, Some(&server.admin_token), body);
    (status, serde_json::from_str(&text).unwrap_or(Value::Null))
}

/// A stream named `name` on `ladder`: (id, playback id).
fn stream(server: &Server, name: &str, ladder: &str) -> (String, String) {
    let (status, created) = admin(
        server,
        "POST",
        "/api/v1/streams",
        Some(json!({"name": name, "ladder": ladder})),
    );
    assert_eq!(status, 201, "{created}");
    let stream = &created["stream"];
    (
        stream["id"].as_str().unwrap().to_string(),
        stream["playback_id"].as_str().unwrap().to_string(),
    )
}

/// A device of `stream_id`: (id, token).
fn device(server: &Server, name: &str, stream_id: &str) -> (String, String) {
    let (status, created) = admin(
        server,
        "POST",
        "/api/v1/devices",
        Some(json!({"name": name, "stream_id": stream_id})),
    );
    assert_eq!(status, 201, "{created}");
    assert_eq!(created["device"]["state"], "offline");
    (
        created["device"]["id"].as_str().unwrap().to_string(),
        created["token"].as_str().unwrap().to_string(),
    )
}

/// The next event `name` about device `id` within `timeout`.
fn device_event(
    events: &Receiver<(i64, String, Value)>,
    name: &str,
    id: &str,
    timeout: Duration,
) -> Option<Value> {
    let deadline = Instant::now() + timeout;
    while let Some(left) = deadline.checked_duration_since(Instant::now()) {
        let (_, event, data) = events.recv_timeout(left).ok()?;
        if event == name && data["id"] == id {
            return Some(data);
        }
    }
    None
}

fn metric(server: &Server, series: &str) -> f64 {
    let text = server.get_text("/metrics").unwrap_or_default();
    text.lines()
        .find_map(|l| l.strip_prefix(series)?.trim().parse().ok())
        .unwrap_or(0.0)
}

/// The segment numbers `rendition`'s playlist lists.
fn segment_numbers(server: &Server, playback_id: &str, rendition: &str) -> Vec<u64> {
    let playlist = server
        .get_text(&format!("/live/{playback_id}/{rendition}/index.m3u8"))
        .unwrap_or_default();
    playlist
        .lines()
        .filter_map(|l| l.strip_suffix(".m4s")?.parse().ok())
        .collect()
}

/// Each listed segment of `rendition`, with its init segment, as a file ffmpeg can read.
fn segment_files(server: &Server, playback_id: &str, rendition: &str, dir: &Path) -> Vec<String> {
    let (status, init) = server.get(&format!("/live/{playback_id}/{rendition}/init.mp4"));
    assert_eq!(status, 200);
    segment_numbers(server, playback_id, rendition)
        .into_iter()
        .map(|n| {
            let (status, body) = server.get(&format!("/live/{playback_id}/{rendition}/{n}.m4s"));
            assert_eq!(status, 200, "segment {n}");
            let path = dir.join(format!("{n}.mp4"));
            std::fs::write(&path, [init.as_slice(), body.as_slice()].concat()).expect("write");
            path.display().to_string()
        })
        .collect()
}

/// Asserts that every segment of `rendition` starts with a keyframe and decodes without an
/// error; returns how many there were.
fn check_segments(server: &Server, playback_id: &str, rendition: &str) -> usize {
    let dir = tempfile::tempdir().expect("temp dir");
    let files = segment_files(server, playback_id, rendition, dir.path());
    for file in &files {
        let first = ffprobe(&[
            "-select_streams",
            "v",
            "-show_frames",
            "-read_intervals",
            "%+#1",
            "-show_entries",
            "frame=key_frame",
            file,
        ]);
        assert_eq!(
            first["frames"][0]["key_frame"], 1,
            "{file} does not start with a keyframe"
        );
        let decode = Command::new("ffmpeg")
            .args(["-v", "error", "-i", file, "-f", "null", "-"])
            .output()
            .expect("ffmpeg");
        let errors = String::from_utf8_lossy(&decode.stderr);
        assert!(
            decode.status.success() && errors.trim().is_empty(),
            "{file} does not decode cleanly:\n{errors}"
        );
    }
    files.len()
}

#[test]
fn a_device_goes_online_is_started_and_stopped_from_the_api_and_plays_in_hls_and_dash() {
    let server = Server::start();
    let events = admin_events(&server);
    let (stream_id, playback_id) = stream(&server, "camera", "passthrough");
    let (id, token) = device(&server, "pi-1", &stream_id);
    let _agent = agent(&server, &token);

    let online = device_event(&events, "device.online", &id, Duration::from_secs(30))
        .unwrap_or_else(|| panic!("no device.online\n{}", agent_log(&server)));
    assert_eq!(online["stream_id"], stream_id.as_str());
    let status = (0..10)
        .find_map(|_| {
            device_event(&events, "device.status", &id, Duration::from_secs(10))
                .filter(|d| d["rtt_ms"].is_number())
        })
        .expect("a device.status with the round-trip time");
    assert_eq!(status["state"], "online");
    let (_, listed) = admin(&server, "GET", "/api/v1/devices", None);
    assert_eq!(listed[0]["state"], "online", "{listed}");
    assert!(listed[0]["last_seen"].as_i64().unwrap_or(0) > 0, "{listed}");

    let (status, started) = command(&server, &id, "start");
    assert_eq!(status, 202, "{started}");
    let started_at = Instant::now();
    device_event(&events, "device.streaming", &id, Duration::from_secs(10))
        .expect("device.streaming");
    let listed = wait_for(Duration::from_secs(60), || {
        (segments_listed(&server, &playback_id) >= 4).then_some(())
    });
    assert!(
        listed.is_some(),
        "the device's broadcast did not publish:\n{}\n{}",
        server.log(),
        agent_log(&server)
    );
    let (status, _) = command(&server, &id, "stop");
    assert_eq!(status, 202);
    let streamed = started_at.elapsed().as_secs_f64();
    wait_for_end(&server, &format!("live/{playback_id}"), &["source"]);
    device_event(&events, "device.online", &id, Duration::from_secs(10))
        .expect("online again after stop");

    let (kinds, hls) =
        probe_kinds_and_duration(&server.url(&format!("/live/{playback_id}/master.m3u8")));
    assert_eq!(kinds, ["video"], "video only through HLS");
    let (kinds, dash) =
        probe_kinds_and_duration(&server.url(&format!("/live/{playback_id}/manifest.mpd")));
    assert_eq!(kinds, ["video"], "video only through DASH");
    println!("streamed {streamed:.1} s; HLS {hls:.2} s, DASH {dash:.2} s");
    assert!(
        (hls - dash).abs() < 0.5,
        "HLS {hls} s and DASH {dash} s differ"
    );
    // what was streamed, less the agent's start (ffmpeg up, its first keyframe sent)
    assert!(
        hls >= streamed - 5.0 && hls <= streamed + 0.5,
        "HLS lasts {hls} s for {streamed:.1} s of streaming"
    );
    let segments = check_segments(&server, &playback_id, "source");
    assert!(segments >= 3);
    assert!(
        metric(
            &server,
            "strata_publishes_total{protocol=\"rtp\",result=\"accepted\"}"
        ) >= 1.0
    );
    assert!(!server.log().contains(&token), "the token is in the log");
    assert!(
        !agent_log(&server).contains(&token),
        "the token is in the agent's log"
    );
}

/// A signaling client speaking the protocol by hand.
struct Signaling(tungstenite::WebSocket<tungstenite::stream::MaybeTlsStream<std::net::TcpStream>>);

impl Signaling {
    fn connect(server: &Server, token: &str) -> Self {
        Self::try_connect(server, token).expect("connect and send the hello")
    }

    fn try_connect(server: &Server, token: &str) -> Result<Self, tungstenite::Error> {
        let (mut socket, _) = tungstenite::connect(format!("ws://{}/ingest/device", server.http))?;
        if let tungstenite::stream::MaybeTlsStream::Plain(s) = socket.get_mut() {
            s.set_read_timeout(Some(Duration::from_secs(15)))?;
        }
        let hello = json!({"type": "hello", "version": 1, "token": token});
        socket.send(tungstenite::Message::text(hello.to_string()))?;
        Ok(Self(socket))
    }

    /// The next message of `kind`, answering pings; `None` when the socket closed.
    fn next(&mut self, kind: &str) -> Option<Value> {
        loop {
            match self.0.read().ok()? {
                tungstenite::Message::Text(text) => {
                    let message: Value = serde_json::from_str(text.as_str()).ok()?;
                    if message["type"] == "ping" {
                        let pong = json!({"type": "pong", "seq": message["seq"]});
                        let _ = self.0.send(tungstenite::Message::text(pong.to_string()));
                    }
                    if message["type"] == kind {
                        return Some(message);
                    }
                }
                tungstenite::Message::Close(frame) => {
                    let code = frame.map(|f| u16::from(f.code)).unwrap_or(0);
                    return (kind == "close").then(|| json!({"code": code}));
                }
                _ => {}
            }
        }
    }
}

#[test]
fn wrong_rotated_and_revoked_tokens_are_refused_and_foreign_rtp_is_dropped_and_counted() {
    let server = Server::start();
    let mut wrong = Signaling::connect(&server, "dt_notatoken");
    let error = wrong.next("error").expect("an error for a wrong token");
    assert_eq!(error["code"], "bad_token");
    assert_eq!(wrong.next("close").expect("closed")["code"], 1008);

    let (stream_id, _) = stream(&server, "camera", "passthrough");
    let (id, first) = device(&server, "pi-1", &stream_id);
    // the stream key is not a device token
    let (_, rotated) = admin(
        &server,
        "POST",
        &format!("/api/v1/devices/{id}/token"),
        None,
    );
    let second = rotated["token"].as_str().expect("a new token").to_string();
    let mut old = Signaling::connect(&server, &first);
    assert_eq!(old.next("error").expect("refused")["code"], "bad_token");
    let mut device = Signaling::connect(&server, &second);
    let welcome = device.next("welcome").expect("welcome with the new token");
    assert_eq!(welcome["device_id"], id.as_str());

    // start it, and send RTP that is not its own
    let start_request = {
        let server_url = server.url(&format!("/api/v1/devices/{id}/start"));
        let token = server.admin_token.clone();
        std::thread::spawn(move || {
            ureq::post(&server_url)
                .header("Authorization", format!("Bearer {token}"))
                .send_empty()
                .map(|r| r.status().as_u16())
                .unwrap_or(0)
        })
    };
    let start = device.next("start").expect("start");
    assert_eq!(start_request.join().unwrap(), 202);
    let media = &start["media"];
    assert_eq!(media["transport"], "rtp/udp");
    assert_eq!(media["payload_type"], 96);
    assert_eq!(media["clock_rate"], 90_000);
    let ssrc = media["ssrc"].as_u64().expect("ssrc") as u32;
    let port = media["port"].as_u64().expect("port") as u16;
    let to: SocketAddr = format!("127.0.0.1:{port}").parse().unwrap();
    let rtp = |ssrc: u32, seq: u16| {
        let mut p = vec![0x80, 96];
        p.extend_from_slice(&seq.to_be_bytes());
        p.extend_from_slice(&(u32::from(seq) * 3000).to_be_bytes());
        p.extend_from_slice(&ssrc.to_be_bytes());
        p.extend_from_slice(&[0x65, 0x88, 0x84, 0x00]); // an IDR slice's first bytes
        p
    };
    let here = UdpSocket::bind("127.0.0.1:0").unwrap();
    let elsewhere = UdpSocket::bind("127.0.0.2:0").expect("bind 127.0.0.2 (Linux loopback)");
    for seq in 0..20 {
        here.send_to(&rtp(ssrc ^ 1, seq), to).unwrap();
        elsewhere.send_to(&rtp(ssrc, seq), to).unwrap();
    }
    let counted = wait_for(Duration::from_secs(10), || {
        let unknown = metric(
            &server,
            "strata_rtp_dropped_packets_total{reason=\"unknown_ssrc\"}",
        );
        let address = metric(
            &server,
            "strata_rtp_dropped_packets_total{reason=\"wrong_address\"}",
        );
        (unknown >= 20.0 && address >= 20.0).then_some(())
    });
    assert!(
        counted.is_some(),
        "{}",
        server.get_text("/metrics").unwrap_or_default()
    );

    // revoking from another process (the CLI changes only the database) closes the socket
    // within the connection's re-check period (5 s) and a ping (2 s); `next` waits 15 s
    let revoked = std::process::Command::new(env!("CARGO_BIN_EXE_strata"))
        .current_dir(server.dir.path())
        .env("STRATA__DATA_DIR", server.dir.path().join("data"))
        .args(["device", "revoke-token", "pi-1"])
        .output()
        .expect("run strata device revoke-token");
    assert!(revoked.status.success(), "{revoked:?}");
    assert_eq!(device.next("error").expect("told")["code"], "revoked");
    let mut again = Signaling::connect(&server, &second);
    assert_eq!(again.next("error").expect("refused")["code"], "bad_token");

    // revoking through the API disconnects the device at once
    let (_, rotated) = admin(
        &server,
        "POST",
        &format!("/api/v1/devices/{id}/token"),
        None,
    );
    let third = rotated["token"].as_str().expect("a new token").to_string();
    let mut device = Signaling::connect(&server, &third);
    device
        .next("welcome")
        .expect("welcome with the third token");
    let (status, _) = admin(
        &server,
        "DELETE",
        &format!("/api/v1/devices/{id}/token"),
        None,
    );
    assert_eq!(status, 204);
    let asked = Instant::now();
    assert_eq!(device.next("error").expect("told")["code"], "revoked");
    assert!(
        asked.elapsed() < Duration::from_secs(3),
        "{:?}",
        asked.elapsed()
    );
    let mut again = Signaling::connect(&server, &third);
    assert_eq!(again.next("error").expect("refused")["code"], "bad_token");
    let log = server.log();
    for token in [&first, &second, &third] {
        assert!(!log.contains(token.as_str()), "a token is in the log");
    }
}

/// A device of a passthrough stream, online and started from the API.
struct Started {
    server: Server,
    events: Receiver<(i64, String, Value)>,
    playback_id: String,
    id: String,
    token: String,
    agent: Agent,
}

/// Starts a server with `reconnect_grace` seconds of grace, a device and its agent, and
/// starts the device.
fn started(reconnect_grace: &str) -> Started {
    let server = Server::start_with_env(
        &[("STRATA__RTMP__RECONNECT_GRACE", reconnect_grace)],
        |_| {},
    );
    let events = admin_events(&server);
    let (stream_id, playback_id) = stream(&server, "camera", "passthrough");
    let (id, token) = device(&server, "pi-1", &stream_id);
    let agent = agent(&server, &token);
    device_event(&events, "device.online", &id, Duration::from_secs(30)).expect("online");
    let (status, _) = command(&server, &id, "start");
    assert_eq!(status, 202);
    Started {
        server,
        events,
        playback_id,
        id,
        token,
        agent,
    }
}

#[test]
fn a_killed_device_is_offline_within_10_s_and_its_broadcast_ends_after_the_grace() {
    let Started {
        server,
        events,
        playback_id,
        id,
        mut agent,
        ..
    } = started("4");
    let publishing = wait_for(Duration::from_secs(60), || {
        (segments_listed(&server, &playback_id) >= 2).then_some(())
    });
    assert!(publishing.is_some(), "{}", server.log());

    agent.0.kill().expect("kill the agent");
    let killed = Instant::now();
    device_event(&events, "device.offline", &id, Duration::from_secs(10))
        .expect("offline within 10 s");
    println!(
        "offline {:.2} s after the kill",
        killed.elapsed().as_secs_f64()
    );
    let (_, shown) = admin(&server, "GET", &format!("/api/v1/devices/{id}"), None);
    assert_eq!(shown["state"], "offline");
    // the broadcast waits for the device during the grace, then ends
    wait_for_end(&server, &format!("live/{playback_id}"), &["source"]);
    let ended_after = killed.elapsed().as_secs_f64();
    println!("the broadcast ended {ended_after:.2} s after the kill");
    assert!(
        ended_after >= 3.5,
        "ended before the grace: {ended_after} s"
    );
    let (kinds, duration) =
        probe_kinds_and_duration(&server.url(&format!("/live/{playback_id}/master.m3u8")));
    assert_eq!(kinds, ["video"]);
    assert!(duration >= 3.0, "{duration}");
}

/// The relay's target (the server's RTP port, once known).
type RelayTarget = Arc<Mutex<Option<SocketAddr>>>;
/// Datagrams the relay received, and how many of them it dropped.
type RelayCounts = Arc<Mutex<(u64, u64)>>;

/// Relays UDP datagrams to the server's RTP port (set once known), dropping 5 % of them and
/// holding back one in 25 until after the next (a reorder). Deterministic: the same packets
/// are lost in every run.
fn lossy_relay() -> (u16, RelayTarget, RelayCounts) {
    let socket = UdpSocket::bind("127.0.0.1:0").expect("relay socket");
    let port = socket.local_addr().unwrap().port();
    let target: RelayTarget = Arc::default();
    let counts: RelayCounts = Arc::default();
    let (to, counted) = (target.clone(), counts.clone());
    std::thread::spawn(move || {
        let mut buf = [0u8; 4096];
        let mut state: u32 = 0x1234_5678;
        let mut held: Option<Vec<u8>> = None;
        loop {
            let Ok(n) = socket.recv(&mut buf) else { return };
            let Some(target) = *to.lock().unwrap() else {
                continue;
            };
            // xorshift: a fixed sequence of decisions
            state ^= state << 13;
            state ^= state >> 17;
            state ^= state << 5;
            let roll = state % 100;
            let mut counts = counted.lock().unwrap();
            counts.0 += 1;
            if roll < 5 {
                counts.1 += 1;
                continue;
            }
            if roll < 9 && held.is_none() {
                held = Some(buf[..n].to_vec());
                continue;
            }
            let _ = socket.send_to(&buf[..n], target);
            if let Some(late) = held.take() {
                let _ = socket.send_to(&late, target);
            }
        }
    });
    (port, target, counts)
}

#[test]
fn through_a_lossy_reordering_relay_the_broadcast_goes_on_and_plays_in_hls_js() {
    let (relay_port, relay_target, relay_counts) = lossy_relay();
    let relay = relay_port.to_string();
    let server = Server::start_with_env(&[("STRATA__DEVICES__RTP_PORT", relay.as_str())], |_| {});
    let rtp: SocketAddr = server.rtp.as_deref().expect("rtp port").parse().unwrap();
    *relay_target.lock().unwrap() = Some(rtp);
    let events = admin_events(&server);
    let (stream_id, playback_id) = stream(&server, "camera", "passthrough");
    let (id, token) = device(&server, "pi-1", &stream_id);
    let _agent = agent(&server, &token);
    device_event(&events, "device.online", &id, Duration::from_secs(30)).expect("online");
    let (status, _) = command(&server, &id, "start");
    assert_eq!(status, 202);
    let publishing = wait_for(Duration::from_secs(60), || {
        (segments_listed(&server, &playback_id) >= 2).then_some(())
    });
    assert!(
        publishing.is_some(),
        "{}\n{}",
        server.log(),
        agent_log(&server)
    );

    let shots = std::path::PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join("devices-lossy");
    let plays = json!([{
        "label": "device-hls.js",
        "url": server.url(&format!("/watch/{playback_id}?engine=hls")),
    }]);
    let output = Command::new("node")
        .arg("tests/e2e/low_latency.mjs")
        .current_dir(concat!(env!("CARGO_MANIFEST_DIR"), "/web"))
        .env("STRATA_PLAYS", plays.to_string())
        .env("STRATA_PLAY_SECONDS", "30")
        .env("STRATA_SCREENSHOTS", &shots)
        .output()
        .expect("node runs (make test installs it)");
    let stdout = String::from_utf8_lossy(&output.stdout);
    let stderr = String::from_utf8_lossy(&output.stderr);
    println!("{stdout}\n{stderr}\nscreenshots: {}", shots.display());
    assert!(
        output.status.success(),
        "the browser run failed:\n{stdout}\n{stderr}"
    );
    let result: Value = stdout
        .lines()
        .find_map(|l| serde_json::from_str(l.strip_prefix("RESULT ")?).ok())
        .expect("a RESULT line");
    assert!(result["played"].as_f64().unwrap_or(0.0) >= 30.0, "{result}");
    let fatal: Vec<&Value> = result["errors"]
        .as_array()
        .map(|e| e.iter().filter(|e| e["fatal"] == true).collect())
        .unwrap_or_default();
    assert!(fatal.is_empty(), "hls.js had fatal errors: {fatal:?}");

    let (_, shown) = admin(&server, "GET", &format!("/api/v1/devices/{id}"), None);
    let requests = shown["report"]["keyframe_requests"].as_u64().unwrap_or(0);
    let (sent, dropped) = *relay_counts.lock().unwrap();
    println!("relay: {dropped} of {sent} datagrams dropped; the device was asked for {requests} keyframes");
    assert!(
        dropped > 0 && dropped * 100 / sent.max(1) >= 3,
        "the relay lost too little"
    );
    assert!(
        requests >= 1,
        "no keyframe request reached the device: {shown}"
    );
    assert!(agent_log(&server).contains("keyframe requested"));
    assert!(metric(&server, "strata_rtp_lost_packets_total") >= 1.0);

    let (status, _) = command(&server, &id, "stop");
    assert_eq!(status, 202);
    wait_for_end(&server, &format!("live/{playback_id}"), &["source"]);
    let segments = check_segments(&server, &playback_id, "source");
    println!("{segments} segments, each starting with a keyframe and decoding cleanly");
    assert!(segments >= 5, "{segments} segments listed");
}

/// The device's view from the API.
fn shown(server: &Server, id: &str) -> Value {
    admin(server, "GET", &format!("/api/v1/devices/{id}"), None).1
}

#[test]
fn a_device_back_within_the_grace_continues_its_session_and_a_bitrate_change_continues_it_too() {
    let Started {
        server,
        events,
        playback_id,
        id,
        token,
        agent: mut first,
    } = started("30");
    let grew = |from: usize| {
        wait_for(Duration::from_secs(60), || {
            let n = segment_numbers(&server, &playback_id, "source");
            (n.last().copied().unwrap_or(0) as usize >= from).then_some(())
        })
    };
    assert!(grew(2).is_some(), "{}", server.log());
    let session = live_session(&server, &playback_id).expect("a live session");

    // a new bit rate: the agent restarts its encoder, the broadcast goes on
    let (status, _) = admin(
        &server,
        "POST",
        &format!("/api/v1/devices/{id}/bitrate"),
        Some(json!({"kbps": 800})),
    );
    assert_eq!(status, 202);
    let reported = wait_for(Duration::from_secs(15), || {
        (shown(&server, &id)["report"]["bitrate_kbps"] == 800).then_some(())
    });
    assert!(reported.is_some(), "{}", agent_log(&server));
    let last = segment_numbers(&server, &playback_id, "source");
    assert!(
        grew(*last.last().unwrap() as usize + 2).is_some(),
        "{}",
        server.log()
    );

    // the device drops and comes back: it is told to start again and continues the session
    let _ = first.0.kill();
    let _ = first.0.wait();
    device_event(&events, "device.offline", &id, Duration::from_secs(10)).expect("offline");
    let last = segment_numbers(&server, &playback_id, "source");
    let _second = agent(&server, &token);
    device_event(&events, "device.streaming", &id, Duration::from_secs(30))
        .expect("streaming again by itself");
    assert!(
        grew(*last.last().unwrap() as usize + 2).is_some(),
        "{}",
        server.log()
    );
    let resumed = live_session(&server, &playback_id).expect("still live");
    assert_eq!(
        resumed["session_id"], session["session_id"],
        "the same session continues"
    );

    let (status, _) = command(&server, &id, "stop");
    assert_eq!(status, 202);
    wait_for_end(&server, &format!("live/{playback_id}"), &["source"]);
    let segments = check_segments(&server, &playback_id, "source");
    println!("{segments} segments across the bit rate change and the reconnect");
}

#[test]
fn webhooks_takeovers_and_session_stops_treat_a_device_like_any_publisher() {
    let (base, hooks) = hook_receiver();
    let allow = format!("{base}/allow");
    let server =
        Server::start_with_env(&[("STRATA__WEBHOOKS__ON_PUBLISH", allow.as_str())], |_| {});
    let events = admin_events(&server);
    let (stream_id, playback_id) = stream(&server, "camera", "passthrough");
    let (id, token) = device(&server, "pi-1", &stream_id);
    let _agent = agent(&server, &token);
    device_event(&events, "device.online", &id, Duration::from_secs(30)).expect("online");

    // the webhook is asked, with protocol `rtp` and no token
    let (status, _) = command(&server, &id, "start");
    assert_eq!(status, 202);
    let (_, hook) = hooks
        .recv_timeout(Duration::from_secs(20))
        .expect("on_publish");
    assert_eq!(hook["protocol"], "rtp");
    assert!(!hook.to_string().contains(&token));
    assert!(wait_for(Duration::from_secs(60), || (segments_listed(
        &server,
        &playback_id
    ) >= 1)
        .then_some(()))
    .is_some());

    // a stop from the sessions API ends the broadcast and the device is told to stop
    let session = live_session(&server, &playback_id).expect("live");
    let sid = session["session_id"].as_str().unwrap().to_string();
    let (status, _) = admin(&server, "DELETE", &format!("/api/v1/sessions/{sid}"), None);
    assert_eq!(status, 204);
    device_event(&events, "device.online", &id, Duration::from_secs(15)).expect("back online");
    wait_for_end(&server, &format!("live/{playback_id}"), &["source"]);
    let told = wait_for(Duration::from_secs(10), || {
        agent_log(&server)
            .contains("stop: the broadcast was stopped")
            .then_some(())
    });
    assert!(told.is_some(), "{}", agent_log(&server));

    // an RTMP publisher of the same stream takes over from the device
    let (status, _) = command(&server, &id, "start");
    assert_eq!(status, 202);
    device_event(&events, "device.streaming", &id, Duration::from_secs(15)).expect("streaming");
    let (_, key) = admin(
        &server,
        "POST",
        &format!("/api/v1/streams/{stream_id}/key"),
        None,
    );
    let mut rtmp = publish(&server.rtmp_url(key["key"].as_str().unwrap()), 6);
    device_event(&events, "device.online", &id, Duration::from_secs(30))
        .expect("the device stops when RTMP takes over");
    let status = rtmp.wait().expect("ffmpeg");
    assert!(status.success(), "the RTMP publisher published to the end");
    assert!(
        metric(
            &server,
            "strata_publishes_total{protocol=\"rtp\",result=\"accepted\"}"
        ) >= 2.0
    );

    // a denying webhook refuses the start, with a reason
    drop(server);
    let deny = format!("{base}/deny");
    let server = Server::start_with_env(&[("STRATA__WEBHOOKS__ON_PUBLISH", deny.as_str())], |_| {});
    let events = admin_events(&server);
    let (stream_id, _) = stream(&server, "camera", "passthrough");
    let (id, token) = device(&server, "pi-1", &stream_id);
    let _agent = agent(&server, &token);
    device_event(&events, "device.online", &id, Duration::from_secs(30)).expect("online");
    let (status, refused) = command(&server, &id, "start");
    assert_eq!(status, 409, "{refused}");
    assert!(
        refused["error"]
            .as_str()
            .unwrap_or_default()
            .contains("policy"),
        "{refused}"
    );
    assert_eq!(shown(&server, &id)["state"], "online");
}

#[test]
fn sockets_that_never_authenticate_cannot_lock_connected_devices_out() {
    let server = Server::start_with_env(&[("STRATA__DEVICES__HELLO_TIMEOUT", "6")], |_| {});
    let (stream_id, _) = stream(&server, "camera", "passthrough");
    let (_, token) = device(&server, "pi-1", &stream_id);
    let mut connected = Signaling::connect(&server, &token);
    connected.next("welcome").expect("welcome");

    // a flood of sockets that say nothing fills the budget of unauthenticated ones (64)
    let url = format!("ws://{}/ingest/device", server.http);
    let silent: Vec<_> = (0..64)
        .map(|_| tungstenite::connect(url.as_str()).expect("a silent socket"))
        .collect();
    match tungstenite::connect(url.as_str()) {
        Err(tungstenite::Error::Http(response)) => assert_eq!(response.status(), 503),
        other => panic!("the 65th unauthenticated socket was not refused: {other:?}"),
    }
    // the connected device is untouched: it is still pinged
    connected.next("ping").expect("still pinged");
    // the silent ones are closed after the hello timeout; a device connects again
    let admitted = wait_for(Duration::from_secs(20), || {
        Signaling::try_connect(&server, &token)
            .ok()?
            .next("welcome")
    });
    assert!(admitted.is_some(), "no device connects after the flood");
    drop(silent);
}
