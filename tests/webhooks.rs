//! Publish webhooks against a local HTTP receiver: `on_publish` allows (2xx), denies (403),
//! refuses when the hook never answers (2 s timeout) or cannot be reached; `on_unpublish` and
//! `on_recording_ready` arrive after a broadcast with the session's ids and a recording that
//! plays. No payload carries the stream key. With `webhooks.secret` set every request is
//! signed, and the README's Python verifier accepts it with the secret and refuses it with
//! another secret or another body.

mod support;

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{TcpListener, TcpStream};
use std::process::{Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use serde_json::Value;
use support::*;

/// One request the receiver got: when, the path, its headers (names lower-cased), the exact
/// body bytes and the body as JSON.
struct Hook {
    at: Instant,
    path: String,
    headers: Vec<(String, String)>,
    raw: Vec<u8>,
    body: Value,
}

impl Hook {
    fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }
}

/// A local HTTP server that answers by path: `/allow*` 204, `/deny` 403, `/hang` never.
struct Receiver {
    base: String,
    hooks: mpsc::Receiver<Hook>,
}

impl Receiver {
    fn start() -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").expect("bind receiver");
        let base = format!("http://{}", listener.local_addr().expect("addr"));
        let (tx, hooks) = mpsc::channel();
        std::thread::spawn(move || {
            for socket in listener.incoming().flatten() {
                let tx = tx.clone();
                std::thread::spawn(move || answer(socket, tx));
            }
        });
        Self { base, hooks }
    }

    fn url(&self, path: &str) -> String {
        format!("{}{path}", self.base)
    }

    fn next(&self, timeout: Duration) -> Option<Hook> {
        self.hooks.recv_timeout(timeout).ok()
    }
}

fn answer(mut socket: TcpStream, tx: mpsc::Sender<Hook>) {
    let mut reader = BufReader::new(socket.try_clone().expect("clone socket"));
    let mut request_line = String::new();
    if reader.read_line(&mut request_line).is_err() {
        return;
    }
    let path = request_line
        .split_whitespace()
        .nth(1)
        .unwrap_or_default()
        .to_string();
    let mut length = 0;
    let mut headers = Vec::new();
    loop {
        let mut line = String::new();
        if reader.read_line(&mut line).is_err() || line.trim().is_empty() {
            break;
        }
        if let Some((name, value)) = line.split_once(':') {
            if name.eq_ignore_ascii_case("content-length") {
                length = value.trim().parse().unwrap_or(0);
            }
            headers.push((name.trim().to_ascii_lowercase(), value.trim().to_string()));
        }
    }
    let mut raw = vec![0; length];
    if reader.read_exact(&mut raw).is_err() {
        return;
    }
    let body = serde_json::from_slice(&raw).unwrap_or(Value::Null);
    let _ = tx.send(Hook {
        at: Instant::now(),
        path: path.clone(),
        headers,
        raw,
        body,
    });
    let status = match path.as_str() {
        "/hang" => {
            std::thread::sleep(Duration::from_secs(30));
            return;
        }
        "/deny" => "403 Forbidden",
        _ => "204 No Content",
    };
    let _ = write!(
        socket,
        "HTTP/1.1 {status}\r\nContent-Length: 0\r\nConnection: close\r\n\r\n"
    );
}

fn hooks_env<'a>(on_publish: &'a str, notify: &'a str) -> Vec<(&'static str, &'a str)> {
    vec![
        ("STRATA__WEBHOOKS__ON_PUBLISH", on_publish),
        ("STRATA__WEBHOOKS__ON_UNPUBLISH", notify),
        ("STRATA__WEBHOOKS__ON_RECORDING_READY", notify),
    ]
}

#[test]
fn an_allowing_hook_lets_the_publish_through_and_hears_its_end_and_recording() {
    let receiver = Receiver::start();
    let (allow, notify) = (receiver.url("/allow"), receiver.url("/allow-notify"));
    let server = Server::start_with_env(&hooks_env(&allow, &notify), |_| {});
    let stream = server.create_stream("hooked", "passthrough");
    let mut publisher = publish(&server.rtmp_url(&stream.key), 4);

    let hook = receiver
        .next(Duration::from_secs(10))
        .expect("on_publish called");
    assert_eq!(hook.path, "/allow");
    assert_eq!(hook.body["event"], "publish");
    assert_eq!(hook.body["stream"]["name"], "hooked");
    assert_eq!(
        hook.body["stream"]["playback_id"].as_str(),
        Some(stream.playback_id.as_str())
    );
    assert_eq!(hook.body["client_ip"], "127.0.0.1");
    let session_id = hook.body["session_id"]
        .as_str()
        .expect("session id")
        .to_string();
    assert!(
        publisher.wait().expect("ffmpeg").success(),
        "publish refused"
    );

    let mut notified = Vec::new();
    while notified.len() < 2 {
        let hook = receiver
            .next(Duration::from_secs(10))
            .expect("on_unpublish and on_recording_ready called");
        assert_eq!(hook.path, "/allow-notify");
        notified.push(hook.body);
    }
    let events: Vec<&str> = notified
        .iter()
        .filter_map(|b| b["event"].as_str())
        .collect();
    assert_eq!(events, ["unpublish", "recording.ready"]);
    for body in &notified {
        assert_eq!(body["session_id"].as_str(), Some(session_id.as_str()));
        assert!(body["segments"].as_u64().unwrap_or(0) >= 1, "{body}");
        let duration = body["duration_secs"].as_f64().unwrap_or(0.0);
        assert!((duration - 4.0).abs() < 0.5, "{body}");
    }
    let recording = &notified[1]["recording"];
    assert_eq!(recording["id"].as_str(), Some(session_id.as_str()));
    let hls = recording["hls_url"].as_str().expect("hls url");
    let probed = ffprobe(&["-show_format", hls]);
    let duration: f64 = probed["format"]["duration"]
        .as_str()
        .and_then(|d| d.parse().ok())
        .unwrap_or(0.0);
    assert!(
        (duration - 4.0).abs() < 0.5,
        "the recording plays: {probed}"
    );
    let dash = recording["dash_url"].as_str().expect("dash url");
    assert_eq!(get_url(dash).0, 200);

    let payloads = serde_json::to_string(&notified).expect("json") + &hook.body.to_string();
    assert!(!payloads.contains(&stream.key), "a hook saw the stream key");
    assert_eq!(
        hook.header("x-strata-signature"),
        None,
        "no secret, no signature"
    );
}

/// The README's verifier (Python 3 standard library), run on what the receiver got: exit 0
/// when the signature is valid and the timestamp within 5 minutes.
const VERIFY: &str = r#"
import hashlib, hmac, sys, time

def verify(secret: bytes, timestamp: str, signature: str, body: bytes) -> bool:
    if abs(time.time() - int(timestamp)) > 300:
        return False
    signed = timestamp.encode() + b"." + body
    expected = "sha256=" + hmac.new(secret, signed, hashlib.sha256).hexdigest()
    return hmac.compare_digest(expected, signature)

secret, timestamp, signature = sys.argv[1:4]
sys.exit(0 if verify(secret.encode(), timestamp, signature, sys.stdin.buffer.read()) else 1)
"#;

/// Whether the README's verifier accepts `body` with the hook's headers and `secret`.
fn python_verifies(secret: &str, hook: &Hook, body: &[u8]) -> bool {
    let mut verifier = Command::new("python3")
        .args(["-c", VERIFY, secret])
        .arg(hook.header("x-strata-timestamp").unwrap_or("0"))
        .arg(hook.header("x-strata-signature").unwrap_or(""))
        .stdin(Stdio::piped())
        .spawn()
        .expect("python3 runs");
    verifier
        .stdin
        .take()
        .expect("stdin")
        .write_all(body)
        .expect("feed the verifier");
    verifier.wait().expect("verifier").success()
}

#[test]
fn with_a_secret_every_hook_request_is_signed_and_verifies() {
    const SECRET: &str = "whsec_integration_test_secret_42";
    let receiver = Receiver::start();
    let (allow, notify) = (receiver.url("/allow"), receiver.url("/allow-notify"));
    let mut env = hooks_env(&allow, &notify);
    env.push(("STRATA__WEBHOOKS__SECRET", SECRET));
    let server = Server::start_with_env(&env, |_| {});
    let stream = server.create_stream("signed", "passthrough");
    let mut publisher = publish(&server.rtmp_url(&stream.key), 2);
    assert!(
        publisher.wait().expect("ffmpeg").success(),
        "a signed on_publish was allowed"
    );

    let mut hooks = Vec::new();
    while hooks.len() < 3 {
        hooks.push(
            receiver
                .next(Duration::from_secs(10))
                .expect("on_publish, on_unpublish and on_recording_ready called"),
        );
    }
    let events: Vec<&str> = hooks
        .iter()
        .filter_map(|h| h.body["event"].as_str())
        .collect();
    assert_eq!(events, ["publish", "unpublish", "recording.ready"]);
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .expect("clock")
        .as_secs() as i64;
    for hook in &hooks {
        let signature = hook.header("x-strata-signature").expect("a signature");
        assert!(signature.starts_with("sha256="), "{signature}");
        let timestamp: i64 = hook
            .header("x-strata-timestamp")
            .and_then(|t| t.parse().ok())
            .expect("a timestamp");
        assert!(
            (now - timestamp).abs() <= 30,
            "timestamp {timestamp}, now {now}"
        );
        assert_eq!(hook.header("content-type"), Some("application/json"));
        assert!(
            python_verifies(SECRET, hook, &hook.raw),
            "the signature of {} does not verify",
            hook.body["event"]
        );
        assert!(
            !python_verifies("whsec_some_other_secret_0000000", hook, &hook.raw),
            "a wrong secret verified"
        );
        let mut tampered = hook.raw.clone();
        tampered.extend_from_slice(b" ");
        assert!(
            !python_verifies(SECRET, hook, &tampered),
            "a changed body verified"
        );
    }
    let log = server.log();
    assert!(!log.contains(SECRET), "the secret was logged");
    assert!(!log.contains(&stream.key), "the key was logged");
}

/// Publishes with `on_publish` set; checks the publish was refused and published nothing;
/// returns the server log and how long after the hook was called the publisher was refused.
fn refused_by(receiver: &Receiver, on_publish: &str) -> (String, Duration) {
    let server = Server::start_with_env(&hooks_env(on_publish, ""), |_| {});
    let stream = server.create_stream("hooked", "passthrough");
    let started = Instant::now();
    let mut publisher = publish(&server.rtmp_url(&stream.key), 6);
    let exited = wait_for(Duration::from_secs(15), || {
        publisher.try_wait().ok().flatten()
    })
    .expect("the refused publisher was disconnected");
    let refused_at = Instant::now();
    assert!(!exited.success(), "the publish went through");
    let called = receiver.next(Duration::ZERO).map_or(started, |h| h.at);
    assert!(
        server
            .get_text(&format!("live/{}/master.m3u8", stream.playback_id))
            .is_none(),
        "a refused publish published a playlist"
    );
    let log = server.log();
    assert!(!log.contains(&stream.key), "the key was logged");
    (log, refused_at - called)
}

#[test]
fn a_denying_hook_refuses_the_publish() {
    let receiver = Receiver::start();
    let (log, _) = refused_by(&receiver, &receiver.url("/deny"));
    assert!(
        log.contains("publish refused by the on_publish webhook")
            && log.contains("the hook answered HTTP 403"),
        "{log}"
    );
}

#[test]
fn a_hook_that_never_answers_refuses_the_publish_after_two_seconds() {
    let receiver = Receiver::start();
    let (log, waited) = refused_by(&receiver, &receiver.url("/hang"));
    assert!(log.contains("no answer from the hook within 2s"), "{log}");
    assert!(
        waited >= Duration::from_millis(1900) && waited < Duration::from_secs(4),
        "refused {waited:?} after the hook was called"
    );
}

#[test]
fn an_unreachable_hook_refuses_the_publish() {
    // a port that was just free: nothing listens on it
    let closed = TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("free port");
    let receiver = Receiver::start();
    let (log, _) = refused_by(&receiver, &format!("http://{closed}/hook"));
    assert!(log.contains("the hook could not be reached"), "{log}");
}

#[test]
fn a_stream_deleted_while_live_hears_its_end_but_no_recording() {
    let receiver = Receiver::start();
    let (allow, notify) = (receiver.url("/allow"), receiver.url("/allow-notify"));
    let server = Server::start_with_env(&hooks_env(&allow, &notify), |_| {});
    let stream = server.create_stream("doomed", "passthrough");
    let mut publisher = publish(&server.rtmp_url(&stream.key), 60);
    let hook = receiver
        .next(Duration::from_secs(10))
        .expect("on_publish called");
    let stream_id = hook.body["stream"]["id"]
        .as_str()
        .expect("stream id")
        .to_string();
    let master = format!("live/{}/master.m3u8", stream.playback_id);
    wait_for(Duration::from_secs(15), || server.get_text(&master)).expect("the broadcast is live");

    let (status, body) = api(
        &server,
        "DELETE",
        &format!("/api/v1/streams/{stream_id}"),
        Some(&server.admin_token),
        None,
    );
    assert_eq!(status, 204, "{body}");
    let hook = receiver
        .next(Duration::from_secs(10))
        .expect("on_unpublish called");
    assert_eq!(hook.body["event"], "unpublish", "{}", hook.body);
    // the recording went with the stream: no hook announces it (it would follow at once)
    if let Some(hook) = receiver.next(Duration::from_secs(3)) {
        panic!("a hook after the deleted stream's end: {}", hook.body);
    }
    let _ = publisher.kill();
    let _ = publisher.wait();
}
