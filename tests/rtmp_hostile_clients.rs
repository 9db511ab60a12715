//! Hostile and wrong RTMP clients over real sockets while a good stream is live: the wrong key
//! is refused fast and writes nothing; each of rml_rtmp 0.8's four known crash/abuse inputs
//! closes only the offending connection, the process stays up and the good stream's playlist
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
    let mut good = publish(&server.rtmp_url(&stream.key), 20);
    let mut last = wait_for(Duration::from_secs(15), || {
        server.get_text(&live).and_then(|p| last_segment_number(&p))
    })
    .expect("the good stream is live");

    let attacks: [(&str, Vec<u8>, bool); 5] = [
        ("deep AMF0 nesting", deeply_nested_connect(), true),
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
