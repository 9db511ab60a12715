//! Hostile and wrong RTMP clients over real sockets while a good stream is live: the wrong key
//! is refused fast and writes nothing; each of rml_rtmp 0.8's four known crash/abuse inputs,
//! and AMF3-typed messages that read differently from byte 0 and byte 1, close only the
//! offending connection, the process stays up and the good stream's playlist
//! keeps advancing.

mod support;

use std::io::{Read, Write};
use std::net::TcpStream;
use std::time::{Duration, Instant};

use rml_rtmp::handshake::{Handshake, HandshakeProcessResult, PeerType};
use support::{last_segment_number, publish, wait_for, Server};

/// A TCP connection that has completed the RTMP handshake as a client.
fn handshaken(server: &Server) -> TcpStream {
    let mut socket = TcpStream::connect(&server.rtmp).expect("connect");
    socket
        .set_read_timeout(Some(Duration::from_secs(5)))
        .expect("timeout");
    let mut handshake = Handshake::new(PeerType::Client);
    let c0c1 = handshake.generate_outbound_p0_and_p1().expect("c0c1");
    socket.write_all(&c0c1).expect("send c0c1");
    let mut buf = [0u8; 4096];
    loop {
        let n = socket.read(&mut buf).expect("handshake read");
        assert!(n > 0, "server closed during handshake");
        match handshake.process_bytes(&buf[..n]).expect("handshake") {
            HandshakeProcessResult::InProgress { response_bytes } => {
                socket.write_all(&response_bytes).expect("send");
            }
            HandshakeProcessResult::Completed { response_bytes, .. } => {
                socket.write_all(&response_bytes).expect("send");
                return socket;
            }
        }
    }
}

/// A type-0 chunk header: csid < 64, 24-bit timestamp field, length, type, stream id.
fn type0(csid: u8, timestamp: u32, length: u32, type_id: u8) -> Vec<u8> {
    let mut v = vec![csid];
    v.extend_from_slice(&timestamp.min(0xFF_FFFF).to_be_bytes()[1..]);
    v.extend_from_slice(&length.to_be_bytes()[1..]);
    v.push(type_id);
    v.extend_from_slice(&0u32.to_le_bytes());
    v
}

fn set_chunk_size(size: u32) -> Vec<u8> {
    let mut v = type0(2, 0, 4, 1);
    v.extend_from_slice(&size.to_be_bytes());
    v
}

fn amf_string(s: &str) -> Vec<u8> {
    let mut v = vec![0x02];
    v.extend_from_slice(&(s.len() as u16).to_be_bytes());
    v.extend_from_slice(s.as_bytes());
    v
}

/// Sends `bytes` (ignoring a reset: the server may close mid-write) and reports whether the
/// server closed the connection within 3 s.
fn send_and_see_closed(mut socket: TcpStream, bytes: &[u8]) -> bool {
    let _ = socket.write_all(bytes);
    let deadline = Instant::now() + Duration::from_secs(3);
    let mut buf = [0u8; 4096];
    while Instant::now() < deadline {
        match socket.read(&mut buf) {
            Ok(0) | Err(_) => return true,
            Ok(_) => continue, // server hello / responses
        }
    }
    false
}

/// (a) `connect` of ~35 KB with ~5,000 nested AMF0 objects.
fn deeply_nested_connect() -> Vec<u8> {
    let mut body = amf_string("connect");
    body.push(0x00);
    body.extend_from_slice(&1.0f64.to_be_bytes());
    for _ in 0..5_000 {
        body.extend_from_slice(&[0x03, 0x00, 0x01, b'a']);
    }
    body.extend_from_slice(&[0x05; 14_000]);
    let mut bytes = set_chunk_size(65_536);
    bytes.extend(type0(3, 0, body.len() as u32, 20));
    bytes.extend(body);
    bytes
}

/// (b) 128 bytes of a 200-byte message on csid 3, a 10-byte message on csid 4, then the rest.
fn interleaved_messages() -> Vec<u8> {
    let first = amf_string(&"x".repeat(197)); // 200 bytes of AMF0 data
    let second = amf_string(&"y".repeat(7)); // 10 bytes
    let mut bytes = type0(3, 0, 200, 18);
    bytes.extend_from_slice(&first[..128]);
    bytes.extend(type0(4, 0, 10, 18));
    bytes.extend_from_slice(&second);
    bytes.push(0xC3); // type-3 continuation on csid 3
    bytes.extend_from_slice(&first[128..]);
    bytes
}

/// (c) a type-1 chunk whose extended timestamp is below 0xFFFFFF.
fn type1_small_extended_timestamp() -> Vec<u8> {
    let body = amf_string("ts");
    let mut bytes = type0(5, 1_000, body.len() as u32, 18);
    bytes.extend_from_slice(&body);
    bytes.push(0x45); // fmt 1, csid 5
    bytes.extend_from_slice(&[0xFF, 0xFF, 0xFF]);
    bytes.extend_from_slice(&(body.len() as u32).to_be_bytes()[1..]);
    bytes.push(18);
    bytes.extend_from_slice(&0x10u32.to_be_bytes());
    bytes.extend_from_slice(&body);
    bytes
}

/// (d) chunk size 2^31−1, then headers announcing 16 MiB messages on many chunk streams.
fn huge_chunk_size_and_lengths() -> Vec<u8> {
    let mut bytes = set_chunk_size(0x7FFF_FFFF);
    for csid in 3..60u8 {
        bytes.extend(type0(csid, 0, 0xFF_FFFF, 9));
        bytes.extend_from_slice(&[0x17, 0x01, 0, 0, 0]);
    }
    bytes
}

/// An ~81 KB AMF3-typed body with no 0x00 prefix: from byte 1 one long string, from byte 0 (as
/// rml_rtmp reads it) an object whose 3072-byte key is followed by ~19,600 nested objects. It
/// aborted the whole process with a stack overflow before the guard checked what rml_rtmp reads.
fn two_faced_amf3(type_id: u8, after_connect: bool) -> Vec<u8> {
    let levels = 19_600;
    let key_end = 3 + 0x0C00;
    let total = key_end + 4 * levels;
    let mut body = vec![0x03, 0x0C];
    body.extend_from_slice(&((total - 6) as u32).to_be_bytes());
    body.resize(key_end, b'k');
    for _ in 0..levels {
        body.extend_from_slice(&[0x03, 0x00, 0x01, b'a']);
    }
    let mut bytes = set_chunk_size(1 << 20);
    if after_connect {
        bytes.extend(connect_command());
    }
    bytes.extend(type0(3, 0, body.len() as u32, type_id));
    bytes.extend(body);
    bytes
}

/// The same (d) without the chunk size: only the 16 MiB message headers.
fn huge_message_lengths() -> Vec<u8> {
    let mut bytes = Vec::new();
    for csid in 3..60u8 {
        bytes.extend(type0(csid, 0, 0xFF_FFFF, 9));
        bytes.extend_from_slice(&[0x17; 64]);
    }
    bytes
}

#[test]
fn hostile_clients_close_only_their_own_connection() {
    let mut server = Server::start();
    let stream = server.create_stream("good", "passthrough");
    let live = format!("live/{}/source/index.m3u8", stream.playback_id);
    let mut good = publish(&server.rtmp_url(&stream.key), 40);
    let mut last = wait_for(Duration::from_secs(15), || {
        server.get_text(&live).and_then(|p| last_segment_number(&p))
    })
    .expect("the good stream is live");

    let attacks: [(&str, Vec<u8>, bool); 7] = [
        ("deep AMF0 nesting", deeply_nested_connect(), true),
        (
            "AMF3 command read two ways",
            two_faced_amf3(17, false),
            true,
        ),
        (
            "AMF3 data after connect read two ways",
            two_faced_amf3(15, true),
            true,
        ),
        ("interleaved chunk streams", interleaved_messages(), false),
        (
            "type-1 small extended timestamp",
            type1_small_extended_timestamp(),
            false,
        ),
        ("chunk size 2^31-1", huge_chunk_size_and_lengths(), true),
        ("16 MiB message headers", huge_message_lengths(), true),
    ];
    for (name, bytes, must_close) in attacks {
        let closed = send_and_see_closed(handshaken(&server), &bytes);
        if must_close {
            assert!(closed, "{name}: the server keeps a hostile connection open");
        }
        assert!(
            server.is_running(),
            "{name}: the server process died\n{}",
            server.log()
        );
        let advanced = wait_for(Duration::from_secs(6), || {
            server
                .get_text(&live)
                .and_then(|p| last_segment_number(&p))
                .filter(|n| *n > last)
        });
        last = advanced.unwrap_or_else(|| panic!("{name}: the good stream stopped advancing"));
    }

    let status = good.wait().expect("ffmpeg");
    assert!(status.success(), "the good publisher was never disturbed");
    let log = server.log();
    if std::env::var_os("STRATA_SHOW_LOG").is_some() {
        eprintln!("{log}");
    }
    assert!(log.contains("nesting deeper"), "{log}");
    assert!(log.contains("chunk size"), "{log}");
    assert!(!log.contains("panicked"), "{log}");
}

#[test]
fn a_wrong_key_is_refused_fast_and_writes_nothing() {
    let server = Server::start();
    let _stream = server.create_stream("real", "passthrough");
    let started = Instant::now();
    let mut ffmpeg = publish(&server.rtmp_url("sk_this_is_not_the_key"), 5);
    let status = ffmpeg.wait().expect("ffmpeg");
    let elapsed = started.elapsed();
    assert!(!status.success(), "the publisher must be refused");
    let mut stderr = String::new();
    if let Some(mut e) = ffmpeg.stderr.take() {
        let _ = e.read_to_string(&mut stderr);
    }
    assert!(
        stderr.contains("unknown stream key"),
        "ffmpeg said: {stderr}"
    );
    // includes ffmpeg's own start-up (lavfi + x264 init)
    assert!(
        elapsed < Duration::from_secs(1),
        "refused after {elapsed:?}"
    );
    let live = server.media_dir().join("live");
    let written = std::fs::read_dir(&live).map(|d| d.count()).unwrap_or(0);
    assert_eq!(written, 0, "nothing may be written for a refused key");
    let log = server.log();
    assert!(log.contains("publish refused: unknown stream key"), "{log}");
    assert!(
        !log.contains("sk_this_is_not_the_key"),
        "keys never appear in logs"
    );
}

/// The connections the server has not closed (a read neither ends nor fails within 20 ms).
async fn still_open(sockets: Vec<tokio::net::TcpStream>) -> Vec<tokio::net::TcpStream> {
    use tokio::io::AsyncReadExt;
    let mut open = Vec::new();
    for mut s in sockets {
        let mut byte = [0u8; 1];
        if tokio::time::timeout(Duration::from_millis(20), s.read(&mut byte))
            .await
            .is_err()
        {
            open.push(s);
        }
    }
    open
}

/// A `connect` command: each one is answered with a few hundred bytes.
fn connect_command() -> Vec<u8> {
    let mut body = amf_string("connect");
    body.push(0x00);
    body.extend_from_slice(&1.0f64.to_be_bytes());
    body.push(0x03);
    body.extend_from_slice(&3u16.to_be_bytes());
    body.extend_from_slice(b"app");
    body.extend(amf_string("live"));
    body.extend_from_slice(&[0, 0, 0x09]);
    let mut bytes = type0(3, 0, body.len() as u32, 20);
    bytes.extend(body);
    bytes
}

#[test]
fn a_peer_that_never_reads_is_closed_after_the_write_timeout() {
    let server = Server::start_with_env(
        &[
            ("STRATA__RTMP__WRITE_TIMEOUT", "2"),
            ("STRATA__RTMP__HANDSHAKE_TIMEOUT", "60"),
        ],
        |_| {},
    );
    let mut socket = handshaken(&server);
    socket
        .set_write_timeout(Some(Duration::from_secs(1)))
        .expect("timeout");
    // Ask for answers and never read them, until the server stops taking our bytes (its
    // writes are stuck, so it stops reading) or closes the connection.
    let connect = connect_command().repeat(1_000);
    let started = Instant::now();
    let mut sent = 0usize;
    while started.elapsed() < Duration::from_secs(60) {
        match socket.write(&connect) {
            Ok(n) => sent += n,
            Err(_) => break,
        }
    }
    assert!(
        sent > 100_000,
        "the server stopped reading too early ({sent} bytes)"
    );
    let closed = wait_for(Duration::from_secs(20), || {
        server
            .log()
            .contains("peer did not take our bytes within 2s")
            .then_some(())
    });
    assert!(closed.is_some(), "no write deadline:\n{}", server.log());
    // The connection is gone: once we read what was buffered, we reach its end.
    socket
        .set_read_timeout(Some(Duration::from_secs(10)))
        .expect("timeout");
    let mut buf = vec![0u8; 1 << 20];
    let end = wait_for(Duration::from_secs(20), || match socket.read(&mut buf) {
        Ok(0) | Err(_) => Some(()),
        Ok(_) => None,
    });
    assert!(end.is_some(), "the server kept the connection open");
}

#[test]
fn one_address_cannot_take_every_slot_from_a_real_publisher() {
    let server = Server::start_with_env(&[("STRATA__RTMP__HANDSHAKE_TIMEOUT", "30")], |_| {});
    let stream = server.create_stream("cam", "passthrough");
    let rtmp: std::net::SocketAddr = server.rtmp.parse().expect("rtmp address");
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime");
    // 300 connections from 127.0.0.2 that never publish, held open.
    let hostile: Vec<tokio::net::TcpStream> = runtime.block_on(async {
        let mut held = Vec::new();
        for _ in 0..300 {
            let socket = tokio::net::TcpSocket::new_v4().expect("socket");
            socket.bind("127.0.0.2:0".parse().unwrap()).expect("bind");
            if let Ok(s) = socket.connect(rtmp).await {
                held.push(s);
            }
        }
        held
    });
    assert!(hostile.len() >= 290, "connects from 127.0.0.2 failed");
    // The server closes those past its per-address share (the listener may still be
    // accepting the last ones: look again until the count settles or the deadline passes).
    let mut held = hostile;
    let deadline = Instant::now() + Duration::from_secs(15);
    loop {
        held = runtime.block_on(still_open(held));
        if held.len() <= 16 || Instant::now() > deadline {
            break;
        }
    }
    assert!(
        held.len() <= 16,
        "{} connections from one address that never published are still open",
        held.len()
    );
    // Meanwhile a real encoder on another address connects and publishes.
    let mut ffmpeg = publish(&server.rtmp_url(&stream.key), 6);
    let live = format!("live/{}/source/index.m3u8", stream.playback_id);
    let segment = wait_for(Duration::from_secs(20), || {
        server.get_text(&live).and_then(|p| last_segment_number(&p))
    });
    assert!(
        segment.is_some(),
        "the publisher did not get in:\n{}",
        server.log()
    );
    assert!(ffmpeg.wait().expect("ffmpeg").success());
    let log = server.log();
    assert!(
        log.contains("that have not started publishing (limit 16)"),
        "{log}"
    );
    // refusals are logged at most once per few seconds, not once per connection
    let refusals = log.matches("RTMP connection refused").count();
    assert!(refusals <= 5, "{refusals} refusal lines");
}
