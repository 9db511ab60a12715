//! Clips, end to end: while ffmpeg publishes a passthrough stream (2 s GOPs and segments), a
//! clip of "the last 10 s" is ready within 5 s and plays in ffprobe through its HLS, its DASH
//! and its MP4 (video and audio, 10 s within one GOP); a clip of an absolute range of the
//! recording covers that range; `on_clip_ready` is told; unknown sources are refused; the clip
//! gets scrub previews (a thumbnails track whose cues point at regions of a sprite sheet that
//! show a picture); deleting a clip removes its objects. A precise clip of 7.3 s, cut from a
//! source whose every frame shows its number as a barcode, starts and ends on the requested
//! frames and loses none between them, through its HLS and its MP4.

mod support;

use std::time::{Duration, Instant};

use serde_json::{json, Value};
use support::*;

const GOP: f64 = 2.0;

fn clip(server: &Server, id: &str) -> Value {
    let (status, body) = api(
        server,
        "GET",
        &format!("/api/v1/clips/{id}"),
        Some(&server.admin_token),
        None,
    );
    assert_eq!(status, 200, "{body}");
    serde_json::from_str(&body).expect("json")
}

/// Creates a clip (202) and waits until it is ready: the clip, and how long that took.
fn cut(server: &Server, body: Value) -> (Value, Duration) {
    let asked = Instant::now();
    let (status, answer) = api(
        server,
        "POST",
        "/api/v1/clips",
        Some(&server.admin_token),
        Some(body),
    );
    assert_eq!(status, 202, "{answer}");
    let created: Value = serde_json::from_str(&answer).expect("json");
    assert_eq!(created["state"], "pending");
    let id = created["id"].as_str().expect("id").to_string();
    let ready = wait_for(Duration::from_secs(30), || {
        let now = clip(server, &id);
        match now["state"].as_str() {
            Some("pending") => None,
            _ => Some(now),
        }
    })
    .expect("the clip is made within 30 s");
    assert_eq!(ready["state"], "ready", "{ready}\n{}", server.log());
    (ready, asked.elapsed())
}

/// Every file under `dir` (none when it does not exist).
fn walk(dir: &std::path::Path) -> Vec<std::path::PathBuf> {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return Vec::new();
    };
    entries
        .flatten()
        .flat_map(|e| {
            let path = e.path();
            if path.is_dir() {
                walk(&path)
            } else {
                vec![path]
            }
        })
        .collect()
}

fn probe_all(what: &str, clip: &Value, around: f64, slack: f64) {
    for format in ["hls_url", "dash_url", "mp4_url"] {
        let url = clip[format].as_str().expect("url");
        let (kinds, duration) = probe_kinds_and_duration(url);
        assert!(
            kinds.contains(&"video".to_string()),
            "{what} {format}: {kinds:?}"
        );
        assert!(
            kinds.contains(&"audio".to_string()),
            "{what} {format}: {kinds:?}"
        );
        assert!(
            (duration - around).abs() <= slack,
            "{what} {format} lasts {duration:.2} s, asked {around} s"
        );
        println!("{what} {format}: {duration:.2} s");
    }
    // every frame of the MP4 decodes (fMP4 made from the segments, audio track renumbered)
    decodes_cleanly(what, clip["mp4_url"].as_str().expect("url"));
}

/// Every frame at `url` decodes without an FFmpeg error.
fn decodes_cleanly(what: &str, url: &str) {
    let decoded = std::process::Command::new("ffmpeg")
        .args(["-hide_banner", "-loglevel", "error", "-xerror", "-i", url])
        .args(["-f", "null", "-"])
        .output()
        .expect("ffmpeg");
    assert!(
        decoded.status.success() && decoded.stderr.is_empty(),
        "{what}: {url} does not decode cleanly: {}",
        String::from_utf8_lossy(&decoded.stderr)
    );
}

#[test]
fn clips_of_a_live_stream_and_its_recording_play_everywhere_and_go_when_deleted() {
    let (hooks, told) = hook_receiver();
    let hook = format!("{hooks}/allow");
    let server = Server::start_with_env(&[("STRATA__WEBHOOKS__ON_CLIP_READY", &hook)], |_| {});
    let token = server.admin_token.clone();
    let created = create_stream_with(
        &server,
        json!({"name": "highlights", "ladder": "passthrough"}),
    );
    let stream_id = created["stream"]["id"].as_str().expect("id").to_string();
    let key = created["key"].as_str().expect("key").to_string();
    let playback_id = created["stream"]["playback_id"].as_str().expect("id");

    // refused before anything is cut
    for (bad, status) in [
        (json!({"stream_id": stream_id}), 400),
        (
            json!({"stream_id": "str_nosuchstream00", "last_secs": 10}),
            404,
        ),
        (
            json!({"recording_id": "nosuchrecording0", "last_secs": 10}),
            404,
        ),
    ] {
        let (got, answer) = api(
            &server,
            "POST",
            "/api/v1/clips",
            Some(&token),
            Some(bad.clone()),
        );
        assert_eq!(got, status, "{bad}: {answer}");
    }

    let mut publisher = publish(&server.rtmp_url(&key), 40);
    let dvr = format!("live/{playback_id}/source/dvr.m3u8");
    let enough = wait_for(Duration::from_secs(60), || {
        (listed_secs(&server, &dvr)? >= 20.0).then_some(())
    });
    assert!(enough.is_some(), "20 s of the broadcast are stored");

    // the last 10 s, during the broadcast
    let (last, took) = cut(&server, json!({"stream_id": stream_id, "last_secs": 10}));
    println!("last 10 s: ready in {:.2} s", took.as_secs_f64());
    assert!(took <= Duration::from_secs(5), "ready after {took:?}");
    let duration_ms = last["duration_ms"].as_i64().expect("duration");
    assert!((duration_ms as f64 / 1000.0 - 10.0).abs() <= GOP, "{last}");
    probe_all("last 10 s", &last, 10.0, GOP);
    let (path, hook_body) = told
        .recv_timeout(Duration::from_secs(10))
        .expect("on_clip_ready is told");
    assert_eq!(path, "/allow");
    assert_eq!(hook_body["event"], "clip.ready", "{hook_body}");
    assert_eq!(hook_body["clip"]["id"], last["id"], "{hook_body}");
    assert_eq!(hook_body["clip"]["hls_url"], last["hls_url"]);

    // an absolute range of the recording (the session's id is its recording's)
    let session = live_session(&server, playback_id).expect("a live session");
    let recording_id = session["session_id"].as_str().expect("session id");
    let starts_at = last["starts_at"].as_i64().expect("starts_at");
    let rfc3339 = |ms: i64| {
        chrono::DateTime::from_timestamp_millis(ms)
            .expect("time")
            .to_rfc3339()
    };
    let (start, end) = (starts_at - 9_000, starts_at - 1_700);
    let (range, _) = cut(
        &server,
        json!({"recording_id": recording_id, "start": rfc3339(start), "end": rfc3339(end)}),
    );
    assert_eq!(range["recording_id"], recording_id);
    // cut on segment boundaries: it covers the range, and at most a GOP more at each end
    let (clip_start, clip_ms) = (
        range["starts_at"].as_i64().expect("start"),
        range["duration_ms"].as_i64().expect("duration"),
    );
    assert!(clip_start <= start && start - clip_start < 2_100, "{range}");
    assert!(
        clip_start + clip_ms >= end && clip_start + clip_ms - end < 2_100,
        "{range}"
    );
    probe_all(
        "7.3 s of the recording",
        &range,
        clip_ms as f64 / 1000.0,
        0.3,
    );

    let (status, list) = api(
        &server,
        "GET",
        &format!("/api/v1/clips?stream_id={stream_id}"),
        Some(&token),
        None,
    );
    assert_eq!(status, 200);
    let list: Value = serde_json::from_str(&list).expect("json");
    assert_eq!(list.as_array().map(Vec::len), Some(2), "{list}");

    // its scrub previews: a thumbnail every 4 s of the 10 s, on one sheet, named on its page
    let id = last["id"].as_str().expect("id");
    let cues = previews::check_previews(&server, id, duration_ms as f64 / 1000.0);
    assert_eq!(cues.len(), 3, "{cues:?}");
    let (status, public) = server.get(&format!("api/public/clips/{id}"));
    assert_eq!(status, 200);
    let public: Value = serde_json::from_slice(&public).expect("json");
    assert_eq!(
        public["thumbnails_url"],
        format!("/vod/{id}/thumbnails.vtt"),
        "{public}"
    );

    // deleting a clip: its objects go and it is not served
    let (status, _) = api(
        &server,
        "DELETE",
        &format!("/api/v1/clips/{id}"),
        Some(&token),
        None,
    );
    assert_eq!(status, 204);
    let (status, _) = api(
        &server,
        "GET",
        &format!("/api/v1/clips/{id}"),
        Some(&token),
        None,
    );
    assert_eq!(status, 404);
    for file in [
        "master.m3u8",
        "manifest.mpd",
        "clip.mp4",
        "source/init.mp4",
        "thumbnails.vtt",
        "previews/0.jpg",
    ] {
        assert_eq!(server.get(&format!("vod/{id}/{file}")).0, 404, "{file}");
    }
    // (a local store may leave empty directories behind; no file stays)
    let left: Vec<_> = walk(&server.media_dir().join("vod").join(id));
    assert!(left.is_empty(), "{left:?}");
    let _ = publisher.kill();
    let _ = publisher.wait();
}

#[test]
fn clips_and_recordings_go_after_their_retention() {
    // 0.0003 days: 26 s; the sweeper looks every second
    let server = Server::start_with_env(
        &[
            ("STRATA__RETENTION__CLIP_DAYS", "0.0003"),
            ("STRATA__RETENTION__VOD_DAYS", "0.0003"),
            ("STRATA__RETENTION__SWEEP_INTERVAL", "1"),
            ("STRATA__RTMP__RECONNECT_GRACE", "1"),
        ],
        |_| {},
    );
    let created = create_stream_with(&server, json!({"name": "brief", "ladder": "passthrough"}));
    let stream_id = created["stream"]["id"].as_str().expect("id").to_string();
    let key = created["key"].as_str().expect("key");
    let playback_id = created["stream"]["playback_id"].as_str().expect("id");
    let mut publisher = publish(&server.rtmp_url(key), 10);
    let stored = wait_for(Duration::from_secs(30), || {
        (segments_listed(&server, playback_id) >= 3).then_some(())
    });
    assert!(stored.is_some(), "the broadcast publishes");
    let (clip, _) = cut(&server, json!({"stream_id": stream_id, "last_secs": 4}));
    let clip_id = clip["id"].as_str().expect("id").to_string();
    let _ = publisher.wait();
    let recording = wait_for(Duration::from_secs(30), || {
        let list = session_list(&server, "/api/v1/recordings");
        list.first()?["id"].as_str().map(str::to_string)
    })
    .expect("the broadcast is recorded");
    assert_eq!(server.get(&format!("vod/{clip_id}/clip.mp4")).0, 200);
    assert_eq!(server.get(&format!("vod/{recording}/master.m3u8")).0, 200);
    // both go once they are older than their retention, objects and rows
    let gone = wait_for(Duration::from_secs(90), || {
        let clip_gone = server.get(&format!("vod/{clip_id}/clip.mp4")).0 == 404;
        let recording_gone = server.get(&format!("vod/{recording}/master.m3u8")).0 == 404;
        (clip_gone && recording_gone).then_some(())
    });
    assert!(
        gone.is_some(),
        "retention removed the clip and the recording"
    );
    let (status, _) = api(
        &server,
        "GET",
        &format!("/api/v1/clips/{clip_id}"),
        Some(&server.admin_token),
        None,
    );
    assert_eq!(status, 404);
    assert!(session_list(&server, "/api/v1/recordings").is_empty());
}

/// The barcode source's frame rate and picture.
const FPS: f64 = 25.0;
const BAR_W: usize = 320;
const BAR_H: usize = 180;
/// Bits of the frame number, one vertical stripe each (least significant on the left).
const BITS: usize = 16;

/// Publishes `seconds` of video whose frame N shows N as a barcode (and a tone), 2 s GOPs with
/// B-frames.
fn publish_barcode(url: &str, seconds: u32) -> std::process::Child {
    let stripe = BAR_W / BITS;
    let video = format!(
        "color=c=black:s={BAR_W}x{BAR_H}:r={FPS},format=gray,\
         geq=lum='if(bitand(N,pow(2,floor(X/{stripe}))),235,16)',format=yuv420p"
    );
    std::process::Command::new("ffmpeg")
        .args(["-hide_banner", "-loglevel", "error", "-re"])
        .args(["-f", "lavfi", "-i", &video])
        .args(["-f", "lavfi", "-i", "sine=frequency=440:sample_rate=48000"])
        .args(["-t", &seconds.to_string()])
        .args([
            "-c:v", "libx264", "-preset", "veryfast", "-bf", "2", "-g", "50",
        ])
        .args([
            "-keyint_min",
            "50",
            "-sc_threshold",
            "0",
            "-pix_fmt",
            "yuv420p",
        ])
        .args(["-c:a", "aac", "-b:a", "96k", "-f", "flv", url])
        .stdout(std::process::Stdio::null())
        .spawn()
        .expect("spawn ffmpeg")
}

/// The frame numbers ffmpeg decodes from `input`, in presentation order (every frame as it is,
/// none added or dropped to fit a frame rate).
fn barcodes(input: &str) -> Vec<u64> {
    let out = std::process::Command::new("ffmpeg")
        .args(["-hide_banner", "-loglevel", "error", "-i", input])
        .args(["-map", "0:v:0", "-fps_mode", "passthrough"])
        .args(["-vf", &format!("scale={BAR_W}:{BAR_H},format=gray")])
        .args(["-f", "rawvideo", "-"])
        .output()
        .expect("ffmpeg");
    assert!(
        out.status.success(),
        "{input}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let stripe = BAR_W / BITS;
    out.stdout
        .chunks_exact(BAR_W * BAR_H)
        .map(|picture| {
            (0..BITS)
                .map(|bit| {
                    // the middle of the stripe, on three rows
                    let x = bit * stripe + stripe / 2;
                    let lum: u32 = [BAR_H / 4, BAR_H / 2, 3 * BAR_H / 4]
                        .iter()
                        .map(|y| u32::from(picture[y * BAR_W + x]))
                        .sum();
                    u64::from(lum > 3 * 128) << bit
                })
                .sum()
        })
        .collect()
}

/// The `mediaPresentationDuration` of the MPD at `url` (`PT…S`, as Strata writes it).
fn mpd_duration_secs(url: &str) -> f64 {
    let (status, body) = get_url(url);
    assert_eq!(status, 200, "{url}");
    let mpd = dash_mpd_core::parse(&String::from_utf8_lossy(&body)).expect("the MPD parses");
    mpd.mediaPresentationDuration
        .expect("a static MPD has its duration")
        .as_secs_f64()
}

#[test]
fn a_precise_clip_starts_and_ends_on_the_requested_frames() {
    let server = Server::start();
    let created = create_stream_with(&server, json!({"name": "precise", "ladder": "passthrough"}));
    let stream_id = created["stream"]["id"].as_str().expect("id").to_string();
    let key = created["key"].as_str().expect("key");
    let playback_id = created["stream"]["playback_id"]
        .as_str()
        .expect("id")
        .to_string();
    let mut publisher = publish_barcode(&server.rtmp_url(key), 40);
    let dvr = format!("live/{playback_id}/source/dvr.m3u8");
    // a segment that starts at least 4 s in, and 10 s stored after its start
    let (number, starts_at) = wait_for(Duration::from_secs(60), || {
        let text = server.get_text(&dvr)?;
        let playlist = m3u8_rs::parse_media_playlist_res(text.as_bytes()).ok()?;
        let mut at = 0.0;
        let mut found = None;
        for (i, segment) in playlist.segments.iter().enumerate() {
            if found.is_none() && at >= 4.0 {
                found = Some((i, at));
            }
            at += f64::from(segment.duration);
        }
        let (i, from) = found?;
        if at - from < 10.0 {
            return None;
        }
        let segment = &playlist.segments[i];
        let number: u64 = segment.uri.strip_suffix(".m4s")?.parse().ok()?;
        Some((number, segment.program_date_time?))
    })
    .unwrap_or_else(|| panic!("14 s of the broadcast are stored:\n{}", server.log()));

    // the number of the segment's first frame, read from its picture
    let dir = tempfile::tempdir().expect("tempdir");
    let file = dir.path().join("segment.mp4");
    let mut bytes = server.get(&format!("live/{playback_id}/source/init.mp4")).1;
    bytes.extend(
        server
            .get(&format!("live/{playback_id}/source/{number}.m4s"))
            .1,
    );
    std::fs::write(&file, bytes).expect("write");
    let first_of_segment = barcodes(file.to_str().expect("path"))[0];

    // 7.3 s from 1.234 s into that segment: the frame nearest each end
    let start = starts_at + chrono::Duration::milliseconds(1_234);
    let end = start + chrono::Duration::milliseconds(7_300);
    let first = first_of_segment + (1.234 * FPS).round() as u64;
    let last = first_of_segment + (8.534 * FPS).round() as u64 - 1;
    let (clip, took) = cut(
        &server,
        json!({"stream_id": stream_id, "start": start.to_rfc3339(), "end": end.to_rfc3339(),
            "precise": true}),
    );
    println!("precise 7.3 s: ready in {:.2} s", took.as_secs_f64());
    assert_eq!(clip["precise"], true, "{clip}");
    let frame = 1.0 / FPS;
    let duration_secs = clip["duration_ms"].as_i64().expect("duration") as f64 / 1000.0;
    assert!((duration_secs - 7.3).abs() <= frame, "{clip}");
    for format in ["hls_url", "dash_url", "mp4_url"] {
        let url = clip[format].as_str().expect("url");
        let numbers = barcodes(url);
        assert_eq!(numbers.first(), Some(&first), "{format}: the first frame");
        assert_eq!(numbers.last(), Some(&last), "{format}: the last frame");
        let expected: Vec<u64> = (first..=last).collect();
        assert_eq!(
            numbers, expected,
            "{format}: every frame between, once, in order"
        );
    }
    for format in ["hls_url", "dash_url", "mp4_url"] {
        let url = clip[format].as_str().expect("url");
        let (kinds, duration) = probe_kinds_and_duration(url);
        assert!(kinds.contains(&"audio".to_string()), "{format}: {kinds:?}");
        // FFmpeg reads an MPD's durations in whole seconds: the MPD's own, read here
        let duration = if format == "dash_url" {
            mpd_duration_secs(url)
        } else {
            duration
        };
        // ffprobe's duration is the longer track's: audio may reach a part of a frame further
        assert!(
            (duration - 7.3).abs() <= 2.0 * frame,
            "{format} lasts {duration:.3} s"
        );
        println!("precise {format}: {duration:.3} s");
    }
    // and every frame of the file decodes cleanly (the edges' parameter sets are in its avcC)
    decodes_cleanly("precise", clip["mp4_url"].as_str().expect("url"));
    let _ = publisher.kill();
    let _ = publisher.wait();
}
