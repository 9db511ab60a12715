//! Replays every committed fuzz input (`fuzz/corpus/<target>/*` and
//! `fuzz/regressions/<target>/*`) through the same `strata::fuzz_harness` function the
//! cargo-fuzz target calls, on the stable toolchain, in seconds. A corpus directory that is
//! missing or empty fails the test, so it cannot pass on nothing.
//!
//! `write_seeds` (ignored; run it with `-- --ignored write_seeds`) regenerates the hand-made
//! seeds: a real ffmpeg publish captured by a small rml_rtmp server, the AMF3-typed commands of
//! issue 13, and a few valid paths, ranges and codec configurations.

use std::io::{Read, Write};
use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use rml_rtmp::chunk_io::ChunkSerializer;
use rml_rtmp::handshake::{Handshake, HandshakeProcessResult, PeerType};
use rml_rtmp::messages::{MessagePayload, RtmpMessage};
use rml_rtmp::rml_amf0::Amf0Value;
use rml_rtmp::sessions::{
    ServerSession, ServerSessionConfig, ServerSessionEvent, ServerSessionResult,
};
use rml_rtmp::time::RtmpTimestamp;
use strata::fuzz_harness::TARGETS;

fn fuzz_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("fuzz")
}

/// The files directly in `dir`, sorted; none when it does not exist.
fn files(dir: &Path) -> Vec<PathBuf> {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return Vec::new();
    };
    let mut files: Vec<PathBuf> = entries
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.is_file())
        .collect();
    files.sort();
    files
}

#[test]
fn every_committed_fuzz_input_replays_without_a_finding() {
    let mut failures = Vec::new();
    let mut counts = Vec::new();
    for (name, target) in TARGETS {
        let corpus = files(&fuzz_dir().join("corpus").join(name));
        assert!(
            !corpus.is_empty(),
            "fuzz/corpus/{name}/ is missing or empty: run `make fuzz` and commit the corpus"
        );
        let regressions = files(&fuzz_dir().join("regressions").join(name));
        counts.push(format!("{name}: {} + {}", corpus.len(), regressions.len()));
        for file in corpus.iter().chain(&regressions) {
            let data = std::fs::read(file).expect("committed fuzz input readable");
            if std::panic::catch_unwind(|| target(&data)).is_err() {
                failures.push(file.display().to_string());
            }
        }
    }
    println!("replayed (corpus + regressions): {}", counts.join(", "));
    assert!(failures.is_empty(), "findings: {failures:#?}");
}

/// Every directory under `fuzz/corpus` and `fuzz/regressions` belongs to a target, and every
/// harness function is a cargo-fuzz target, so a renamed target cannot leave its inputs unread.
#[test]
fn corpus_directories_and_fuzz_targets_match_the_harness() {
    let names: Vec<&str> = TARGETS.iter().map(|(n, _)| *n).collect();
    for kind in ["corpus", "regressions"] {
        let Ok(entries) = std::fs::read_dir(fuzz_dir().join(kind)) else {
            continue;
        };
        for entry in entries.flatten() {
            let dir = entry.file_name().to_string_lossy().into_owned();
            assert!(
                names.contains(&dir.as_str()),
                "fuzz/{kind}/{dir} has no target"
            );
        }
    }
    let manifest = std::fs::read_to_string(fuzz_dir().join("Cargo.toml")).expect("fuzz/Cargo.toml");
    for name in names {
        assert!(
            manifest.contains(&format!("name = \"{name}\"")),
            "fuzz/Cargo.toml has no target {name}"
        );
        let source = fuzz_dir().join("fuzz_targets").join(format!("{name}.rs"));
        let source = std::fs::read_to_string(&source).expect("fuzz target source");
        assert!(source.contains(&format!("strata::fuzz_harness::{name}(data)")));
    }
}

// ---- seed generation (ignored) ----

fn write(kind: &str, target: &str, file: &str, bytes: &[u8]) {
    let dir = fuzz_dir().join(kind).join(target);
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::write(dir.join(file), bytes).unwrap();
}

fn chunks(serializer: &mut ChunkSerializer, type_id: u8, stream_id: u32, data: Vec<u8>) -> Vec<u8> {
    let payload = MessagePayload {
        timestamp: RtmpTimestamp::new(0),
        type_id,
        message_stream_id: stream_id,
        data: data.into(),
    };
    serializer.serialize(&payload, false, false).unwrap().bytes
}

fn command(serializer: &mut ChunkSerializer, name: &str, id: f64, object: Amf0Value) -> Vec<u8> {
    let message = RtmpMessage::Amf0Command {
        command_name: name.into(),
        transaction_id: id,
        command_object: object,
        additional_arguments: vec![],
    };
    let payload = MessagePayload::from_rtmp_message(message, RtmpTimestamp::new(0), 0).unwrap();
    serializer.serialize(&payload, false, false).unwrap().bytes
}

fn connect(serializer: &mut ChunkSerializer) -> Vec<u8> {
    let object = Amf0Value::Object(
        [
            ("app".to_string(), Amf0Value::Utf8String("live".into())),
            (
                "type".to_string(),
                Amf0Value::Utf8String("nonprivate".into()),
            ),
            (
                "tcUrl".to_string(),
                Amf0Value::Utf8String("rtmp://127.0.0.1/live".into()),
            ),
        ]
        .into(),
    );
    command(serializer, "connect", 1.0, object)
}

/// Issue 13's remote crash: from byte 1 (our guard's reading) one AMF0 long string; from byte 0
/// (rml_rtmp's, the first byte not being 0) an object whose key runs into the string, then
/// `levels` nested objects. `levels` ≈ 20,400 is the ~81 KB message of the issue.
fn amf3_bomb(levels: usize) -> Vec<u8> {
    let mut content = vec![b'a'; 3069];
    content.push(0x03);
    for _ in 0..levels {
        content.extend_from_slice(&[0x00, 0x01, b'a', 0x03]);
    }
    // the long string's length bytes are read as the end of the key: keep them ASCII
    while (content.len() >> 16) & 0xFF >= 0x80
        || (content.len() >> 8) & 0xFF >= 0x80
        || content.len() & 0xFF >= 0x80
    {
        content.push(b'a');
    }
    let mut body = vec![0x03, 0x0C];
    body.extend_from_slice(&(content.len() as u32).to_be_bytes());
    body.extend_from_slice(&content);
    body
}

/// A real ffmpeg publish (testsrc + sine, H.264 + AAC, 1 s) as the server receives it after
/// the handshake, captured by rml_rtmp's server session accepting everything.
fn ffmpeg_publish() -> Vec<u8> {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    let mut ffmpeg = Command::new("ffmpeg")
        .args(["-hide_banner", "-loglevel", "error", "-f", "lavfi", "-i"])
        .arg("testsrc=size=128x96:rate=10")
        .args([
            "-f",
            "lavfi",
            "-i",
            "sine=frequency=440:sample_rate=48000",
            "-t",
            "1",
        ])
        .args([
            "-c:v",
            "libx264",
            "-preset",
            "ultrafast",
            "-g",
            "5",
            "-bf",
            "2",
        ])
        .args(["-c:a", "aac", "-b:a", "32k", "-f", "flv"])
        .arg(format!("rtmp://127.0.0.1:{port}/live/sk_seed"))
        .stdin(Stdio::null())
        .spawn()
        .expect("ffmpeg");
    let (mut socket, _) = listener.accept().unwrap();
    socket
        .set_read_timeout(Some(Duration::from_secs(20)))
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(30);
    let mut handshake = Handshake::new(PeerType::Server);
    let mut buf = vec![0; 65536];
    let mut captured = Vec::new();
    loop {
        let n = socket.read(&mut buf).unwrap();
        assert!(n > 0, "ffmpeg closed during the handshake");
        match handshake.process_bytes(&buf[..n]).unwrap() {
            HandshakeProcessResult::InProgress { response_bytes } => {
                socket.write_all(&response_bytes).unwrap()
            }
            HandshakeProcessResult::Completed {
                response_bytes,
                remaining_bytes,
            } => {
                socket.write_all(&response_bytes).unwrap();
                captured.extend_from_slice(&remaining_bytes);
                break;
            }
        }
    }
    let (mut session, results) = ServerSession::new(ServerSessionConfig::new()).unwrap();
    let mut pending = results;
    let mut offset = 0;
    while Instant::now() < deadline {
        let mut next = Vec::new();
        for result in pending.drain(..) {
            match result {
                ServerSessionResult::OutboundResponse(p) => socket.write_all(&p.bytes).unwrap(),
                ServerSessionResult::RaisedEvent(
                    ServerSessionEvent::ConnectionRequested { request_id, .. }
                    | ServerSessionEvent::PublishStreamRequested { request_id, .. },
                ) => next.extend(session.accept_request(request_id).unwrap()),
                _ => {}
            }
        }
        if !next.is_empty() {
            pending = next;
            continue;
        }
        if offset < captured.len() {
            pending = session.handle_input(&captured[offset..]).unwrap();
            offset = captured.len();
            continue;
        }
        match socket.read(&mut buf) {
            Ok(0) | Err(_) => break,
            Ok(n) => captured.extend_from_slice(&buf[..n]),
        }
    }
    assert!(ffmpeg.wait().unwrap().success(), "ffmpeg failed");
    captured
}

#[test]
#[ignore = "regenerates the committed seeds; needs ffmpeg"]
fn write_seeds() {
    // RTMP: split seed byte 0 (one piece), then the chunk stream.
    let publish = ffmpeg_publish();
    assert!(
        publish.len() > 1_000,
        "captured only {} bytes",
        publish.len()
    );
    for target in ["rtmp_session", "rtmp_guard"] {
        write(
            "corpus",
            target,
            "ffmpeg_publish",
            &[&[0][..], &publish].concat(),
        );
    }
    let mut s = ChunkSerializer::new();
    let connect_bytes = connect(&mut s);
    // Flash-style AMF3-typed command and data messages: a 0 byte, then AMF0.
    let mut flash_command = vec![0x00];
    flash_command.extend(
        rml_rtmp::rml_amf0::serialize(&vec![
            Amf0Value::Utf8String("createStream".into()),
            Amf0Value::Number(2.0),
            Amf0Value::Null,
        ])
        .unwrap(),
    );
    let mut flash_data = vec![0x00];
    flash_data.extend(
        rml_rtmp::rml_amf0::serialize(&vec![
            Amf0Value::Utf8String("@setDataFrame".into()),
            Amf0Value::Utf8String("onMetaData".into()),
            Amf0Value::Object([("width".to_string(), Amf0Value::Number(320.0))].into()),
        ])
        .unwrap(),
    );
    for (file, type_id, body) in [
        ("connect_amf3_command", 17, flash_command),
        ("connect_amf3_data", 15, flash_data),
    ] {
        let bytes = [&[0][..], &connect_bytes, &chunks(&mut s, type_id, 0, body)].concat();
        write("corpus", "rtmp_session", file, &bytes);
        write("corpus", "rtmp_guard", file, &bytes);
    }
    // The crash of issue 13, as reported (~81 KB, ~20,400 levels), for both message types.
    for (file, type_id) in [("amf3_command_nesting", 17), ("amf3_data_nesting", 15)] {
        let mut s = ChunkSerializer::new();
        let connect_bytes = connect(&mut s);
        let bomb = chunks(&mut s, type_id, 0, amf3_bomb(20_400));
        write(
            "regressions",
            "rtmp_session",
            file,
            &[&[0][..], &connect_bytes, &bomb].concat(),
        );
    }

    let id = "abcdefghij012345";
    for (i, path) in [
        format!("\x00{id}/master.m3u8"),
        format!("\x00{id}/manifest.mpd"),
        format!("\x00{id}/poster.jpg"),
        format!("\x00{id}/source/index.m3u8"),
        format!("\x00{id}/source/init.mp4"),
        format!("\x01{id}/720p/12.m4s"),
        format!("\x00{id}/audio/12.3.m4s"),
        "\x00../../etc/passwd".to_string(),
    ]
    .iter()
    .enumerate()
    {
        write(
            "corpus",
            "origin_path",
            &format!("seed{i}"),
            path.as_bytes(),
        );
    }
    for (i, range) in [
        "bytes=0-99",
        "bytes=100-",
        "bytes=-20",
        "bytes=-0",
        "bytes=5-1",
        "bytes=0-1,4-5",
        " bytes= 7 - 9 ",
    ]
    .iter()
    .enumerate()
    {
        let bytes = [&1000u64.to_le_bytes()[..], range.as_bytes()].concat();
        write("corpus", "origin_range", &format!("seed{i}"), &bytes);
    }
    // a previews process's output: a sheet of three 160x90 thumbnails, then odd ones
    let sheet = |fields: [u32; 4], jpeg: &[u8]| {
        let mut out: Vec<u8> = fields.iter().flat_map(|v| v.to_be_bytes()).collect();
        out.extend_from_slice(jpeg);
        out
    };
    let jpeg = [0xFF, 0xD8, 0xFF, 0xE0, 0x00, 0x10, 0xFF, 0xD9];
    for (name, bytes) in [
        ("sheet", sheet([160, 90, 3, 3], &jpeg)),
        ("portrait", sheet([160, 284, 100, 100], &jpeg)),
        ("too_wide", sheet([4000, 90, 1, 1], &jpeg)),
        ("too_many", sheet([160, 90, 1, 1000], &jpeg)),
        ("not_jpeg", sheet([160, 90, 1, 1], b"GIF89a")),
        ("truncated", sheet([160, 90, 1, 1], &[])[..10].to_vec()),
    ] {
        write("corpus", "previews_sheet", name, &bytes);
    }
    let record: &[u8] = &[
        0x01, 0x4d, 0x40, 0x0d, 0xff, 0xe1, 0x00, 0x18, 0x67, 0x4d, 0x40, 0x0d, 0xec, 0xa0, 0xa0,
        0xfd, 0x80, 0x88, 0x00, 0x00, 0x03, 0x00, 0x08, 0x00, 0x00, 0x03, 0x01, 0xe0, 0x78, 0xa1,
        0x4c, 0xb0, 0x01, 0x00, 0x04, 0x68, 0xce, 0x0f, 0xc8,
    ];
    let sps = &record[8..32];
    let pps = &record[35..];
    let annex_b = [&[0, 0, 0, 1][..], sps, &[0, 0, 1], pps].concat();
    write("corpus", "codec_config", "avcc_320x240", record);
    write("corpus", "codec_config", "annex_b_sps_pps", &annex_b);
    write(
        "corpus",
        "codec_config",
        "asc_aac_lc_48k",
        &[0x11, 0x90, 0x56, 0xe5, 0x00],
    );
    write(
        "corpus",
        "codec_config",
        "asc_he_aac",
        &[0x2b, 0x92, 0x08, 0x00],
    );
}

/// Seeds of `worker_wire` (run with `-- --ignored write_worker_wire_seeds`): what a worker of
/// the `default` ladder with the source sends, as whole streams and as single messages.
#[test]
#[ignore]
fn write_worker_wire_seeds() {
    use bytes::Bytes;
    use strata::media::{
        AacConfig, AvcConfig, CodecConfig, MediaFrame, RenditionEvent, Timestamp, TrackId,
        TrackInfo, TrackKind,
    };
    use strata::transcode::worker::wire::{encode_from_worker, FromWorker};

    let record: &[u8] = &[
        0x01, 0x4d, 0x40, 0x0d, 0xff, 0xe1, 0x00, 0x18, 0x67, 0x4d, 0x40, 0x0d, 0xec, 0xa0, 0xa0,
        0xfd, 0x80, 0x88, 0x00, 0x00, 0x03, 0x00, 0x08, 0x00, 0x00, 0x03, 0x01, 0xe0, 0x78, 0xa1,
        0x4c, 0xb0, 0x01, 0x00, 0x04, 0x68, 0xce, 0x0f, 0xc8,
    ];
    let avc = AvcConfig::parse(Bytes::from_static(record)).expect("record");
    let aac = AacConfig::parse(Bytes::from_static(&[0x11, 0x90])).expect("asc");
    let frame = |kind, ms: i64, sync, data: &'static [u8]| MediaFrame {
        kind,
        dts: Timestamp::from_millis(ms),
        pts: Timestamp::new(ms * 90 + 3003, 90_000),
        sync,
        segment_start: sync && kind == TrackKind::Video,
        data: Bytes::from_static(data),
    };
    let messages = [
        FromWorker::Event(RenditionEvent::Track {
            id: TrackId::Video(0),
            name: "source".into(),
            info: TrackInfo {
                kind: TrackKind::Video,
                codec: CodecConfig::Avc(avc.clone()),
            },
        }),
        FromWorker::Event(RenditionEvent::Track {
            id: TrackId::Video(1),
            name: "720p".into(),
            info: TrackInfo {
                kind: TrackKind::Video,
                codec: CodecConfig::Avc(avc),
            },
        }),
        FromWorker::Event(RenditionEvent::Track {
            id: TrackId::Audio,
            name: "audio".into(),
            info: TrackInfo {
                kind: TrackKind::Audio,
                codec: CodecConfig::Aac(aac),
            },
        }),
        FromWorker::Event(RenditionEvent::Frame {
            id: TrackId::Video(1),
            frame: frame(TrackKind::Video, 0, true, &[0, 0, 0, 2, 0x65, 0x88]),
        }),
        FromWorker::Event(RenditionEvent::Frame {
            id: TrackId::Audio,
            frame: frame(TrackKind::Audio, 21, true, &[0x21, 0x10, 0x04]),
        }),
        FromWorker::Event(RenditionEvent::Poster(Bytes::from_static(
            b"\xff\xd8\xff\xe0\x00\x10JFIF\x00",
        ))),
        FromWorker::Speed {
            rendition: "720p".into(),
            speed: 1.7,
        },
        FromWorker::Dropped {
            rendition: "480p".into(),
            frames: 3,
        },
        FromWorker::Event(RenditionEvent::Pause),
        FromWorker::Event(RenditionEvent::End),
    ];
    let mut stream = Vec::new();
    for (i, message) in messages.iter().enumerate() {
        let bytes = encode_from_worker(message).expect("encodes");
        write("corpus", "worker_wire", &format!("message{i}"), &bytes);
        stream.extend(bytes);
    }
    write("corpus", "worker_wire", "stream", &stream);
}

/// Seeds for `clip_edge` (and `tests/golden/clip_edge_three_frames.bin`): what a clip-edge
/// process writes for three 320×240 frames (x264 Main,
/// parameter sets numbered 1, no B-frames, made by ffmpeg here), and that output cut short,
/// without its last frame and with its frames out of order.
#[test]
#[ignore = "regenerates the committed seeds; needs ffmpeg"]
fn write_clip_edge_seeds() {
    use bytes::Bytes;
    use strata::media::{
        CodecConfig, MediaFrame, RenditionEvent, Timestamp, TrackId, TrackInfo, TrackKind,
    };
    use strata::transcode::avc;
    use strata::transcode::worker::wire::{encode_from_worker, FromWorker};

    let out = Command::new("ffmpeg")
        .args(["-hide_banner", "-loglevel", "error", "-f", "lavfi", "-i"])
        .args(["testsrc2=size=320x240:rate=25", "-frames:v", "3"])
        .args([
            "-c:v",
            "libx264",
            "-profile:v",
            "main",
            "-preset",
            "veryfast",
        ])
        .args(["-x264-params", "bframes=0:sps-id=1", "-f", "h264", "-"])
        .output()
        .expect("ffmpeg");
    assert!(out.status.success());
    let units = avc::annex_b_units(&out.stdout);
    let sets: Vec<u8> = units
        .iter()
        .filter(|u| matches!(u[0] & 0x1f, 7 | 8))
        .flat_map(|u| [&[0, 0, 0, 1][..], u].concat())
        .collect();
    let config = avc::config_from_annex_b(&sets).expect("x264's parameter sets");
    let pictures: Vec<&[u8]> = units
        .iter()
        .copied()
        .filter(|u| matches!(u[0] & 0x1f, 1 | 5))
        .collect();
    assert_eq!(pictures.len(), 3, "one slice per picture");
    let frame = |i: usize| {
        let unit = pictures[i];
        let mut data = (unit.len() as u32).to_be_bytes().to_vec();
        data.extend_from_slice(unit);
        FromWorker::Event(RenditionEvent::Frame {
            id: TrackId::Video(0),
            frame: MediaFrame {
                kind: TrackKind::Video,
                dts: Timestamp::new(i as i64 * 3600, 90_000),
                pts: Timestamp::new(i as i64 * 3600, 90_000),
                sync: i == 0,
                segment_start: false,
                data: Bytes::from(data),
            },
        })
    };
    let track = FromWorker::Event(RenditionEvent::Track {
        id: TrackId::Video(0),
        name: "edge".into(),
        info: TrackInfo {
            kind: TrackKind::Video,
            codec: CodecConfig::Avc(config),
        },
    });
    let encode = |messages: &[FromWorker]| -> Vec<u8> {
        messages
            .iter()
            .flat_map(|m| encode_from_worker(m).expect("encodes"))
            .collect()
    };
    let whole = encode(&[track.clone(), frame(0), frame(1), frame(2)]);
    strata::fuzz_harness::clip_edge(&whole);
    // kept by name for `clips::precise`'s unit test (the corpus is minimized under hashes)
    let golden =
        Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/golden/clip_edge_three_frames.bin");
    std::fs::write(golden, &whole).unwrap();
    write("corpus", "clip_edge", "three_frames", &whole);
    write(
        "corpus",
        "clip_edge",
        "cut_short",
        &whole[..whole.len() - 7],
    );
    write(
        "corpus",
        "clip_edge",
        "one_missing",
        &encode(&[track.clone(), frame(0), frame(1)]),
    );
    write(
        "corpus",
        "clip_edge",
        "out_of_order",
        &encode(&[track, frame(1), frame(0), frame(2)]),
    );
}
