//! HEVC, AV1 and VP9 in, end to end: clips encoded by the real ffmpeg CLI, published as OBS 30+
//! sends them over Enhanced RTMP (`hvc1`/`av01`/`vp09` tags, paced at real time) and, for HEVC,
//! over SRT by ffmpeg itself; read back over HTTP and checked with ffprobe (decoding every
//! frame), m3u8-rs, dash-mpd and mp4-atom.
//!
//! The tests share the machine's cores with the encoders, so they run one at a time.

mod support;

use std::sync::Mutex;
use std::time::Duration;

use mp4_atom::{Any, Decode, Moof};
use support::enhanced_rtmp::{self, Codec};
use support::*;

static ONE_AT_A_TIME: Mutex<()> = Mutex::new(());

/// (uri, CODECS, width, height) of every variant.
fn variants(server: &Server, live: &str) -> Vec<(String, String, u64, u64)> {
    let text = server
        .get_text(&format!("{live}/master.m3u8"))
        .expect("master playlist");
    let master = m3u8_rs::parse_master_playlist_res(text.as_bytes()).expect("valid master");
    master
        .variants
        .iter()
        .map(|v| {
            let r = v.resolution.expect("RESOLUTION");
            (
                v.uri.trim_end_matches("/index.m3u8").to_string(),
                v.codecs.clone().unwrap_or_default(),
                r.width,
                r.height,
            )
        })
        .collect()
}

/// Per segment of a rendition: (duration, first sample is a sync sample, decode time of the
/// first sample in 90 kHz ticks).
fn segments(server: &Server, live: &str, name: &str) -> Vec<(f64, bool, u64)> {
    let text = server
        .get_text(&format!("{live}/{name}/index.m3u8"))
        .expect("media playlist");
    let playlist = m3u8_rs::parse_media_playlist_res(text.as_bytes()).expect("valid playlist");
    playlist
        .segments
        .iter()
        .map(|seg| {
            let (status, bytes) = server.get(&format!("{live}/{name}/{}", seg.uri));
            assert_eq!(status, 200, "{name}/{}", seg.uri);
            let mut cursor = std::io::Cursor::new(&bytes[..]);
            assert!(matches!(
                Any::decode(&mut cursor).expect("styp"),
                Any::Styp(_)
            ));
            let moof = Moof::decode(&mut cursor).expect("moof");
            let start = moof.traf[0]
                .tfdt
                .as_ref()
                .map_or(0, |t| t.base_media_decode_time);
            let first = moof.traf[0].trun[0]
                .samples
                .iter()
                .next()
                .expect("a sample");
            let sync = first.flags.is_some_and(|f| f & 0x0001_0000 == 0);
            (f64::from(seg.duration), sync, start)
        })
        .collect()
}

/// (frames decoded, codec name, codec tag) of a rendition; every frame has `width`x`height`.
fn decode_all(url: &str, width: u64, height: u64) -> (usize, String, String) {
    let probe = ffprobe(&[
        "-select_streams",
        "v:0",
        "-show_entries",
        "frame=width,height:stream=codec_name,codec_tag_string",
        url,
    ]);
    let frames = probe["frames"].as_array().cloned().unwrap_or_default();
    for f in &frames {
        assert_eq!(
            (f["width"].as_u64(), f["height"].as_u64()),
            (Some(width), Some(height)),
            "{url}: a frame has another size"
        );
    }
    let stream = &probe["streams"][0];
    (
        frames.len(),
        stream["codec_name"].as_str().unwrap_or("").to_string(),
        stream["codec_tag_string"]
            .as_str()
            .unwrap_or("")
            .to_string(),
    )
}

/// A 6 s 640x360 HEVC broadcast on the passthrough ladder: `hvc1` with its codec string in the
/// master playlist, segments starting with sync samples whose durations add up, every frame
/// decodable as HEVC from the `hvc1` sample entry. Returns the CODECS of the variant.
fn check_hevc_passthrough(server: &Server, live: &str) -> String {
    let v = wait_for(Duration::from_secs(30), || {
        let v = variants(server, live);
        (!v.is_empty()).then_some(v)
    })
    .expect("a master playlist");
    let (name, codecs, width, height) = v[0].clone();
    assert!(codecs.starts_with("hvc1.1.6.L"), "CODECS {codecs}");
    assert!(codecs.contains("mp4a.40.2"), "CODECS {codecs}");
    assert_eq!((width, height), (640, 360));
    wait_for_end(server, live, &[&name, "audio"]);
    let segs = segments(server, live, &name);
    assert!(segs.len() >= 3, "{segs:?}");
    assert!(
        segs.iter().all(|s| s.1),
        "every segment starts with a sync sample: {segs:?}"
    );
    let total: f64 = segs.iter().map(|s| s.0).sum();
    assert!((total - 6.0).abs() < 0.1, "durations add up to {total} s");
    let url = server.url(&format!("{live}/{name}/index.m3u8"));
    let (frames, codec, tag) = decode_all(&url, 640, 360);
    assert_eq!((codec.as_str(), tag.as_str()), ("hevc", "hvc1"));
    assert!(
        (175..=180).contains(&frames),
        "{frames} frames of 180 decoded"
    );
    // and through both manifests, with the audio
    for manifest in ["master.m3u8", "manifest.mpd"] {
        let probe = ffprobe(&["-show_streams", &server.url(&format!("{live}/{manifest}"))]);
        let codecs: Vec<&str> = probe["streams"]
            .as_array()
            .map(|s| s.iter().filter_map(|s| s["codec_name"].as_str()).collect())
            .unwrap_or_default();
        assert!(
            codecs.contains(&"hevc") && codecs.contains(&"aac"),
            "{manifest}: {codecs:?}"
        );
    }
    codecs
}

#[test]
fn hevc_passes_through_as_hvc1_with_its_codec_string_in_hls_and_dash() {
    let _one = ONE_AT_A_TIME.lock().unwrap_or_else(|e| e.into_inner());
    let server = Server::start();
    let stream = server.create_stream("hevc", "passthrough");
    let live = format!("live/{}", stream.playback_id);
    let tags = enhanced_rtmp::tags(server.dir.path(), Codec::Hevc, 6, "640x360");
    enhanced_rtmp::publish(&server.rtmp, &stream.key, &tags, true).expect("publish");
    let codecs = check_hevc_passthrough(&server, &live);

    let mpd_text = server
        .get_text(&format!("{live}/manifest.mpd"))
        .expect("MPD");
    let mpd = dash_mpd_core::parse(&mpd_text).expect("valid MPD");
    let video = mpd.periods[0]
        .adaptations
        .iter()
        .flat_map(|a| &a.representations)
        .find(|r| r.width.is_some())
        .expect("a video representation");
    assert_eq!(
        video.codecs.as_deref(),
        Some(codecs.split(',').next().unwrap())
    );
    assert_eq!((video.width, video.height), (Some(640), Some(360)));
}

#[test]
fn hevc_av1_and_vp9_sources_are_transcoded_into_the_aligned_h264_ladder() {
    let _one = ONE_AT_A_TIME.lock().unwrap_or_else(|e| e.into_inner());
    let server = Server::start();
    for codec in [Codec::Hevc, Codec::Av1, Codec::Vp9] {
        let stream = server.create_stream(&format!("{codec:?}").to_lowercase(), "default");
        let live = format!("live/{}", stream.playback_id);
        let tags = enhanced_rtmp::tags(server.dir.path(), codec, 6, "854x480");
        // as fast as it is taken
        enhanced_rtmp::publish(&server.rtmp, &stream.key, &tags, false).expect("publish");
        wait_for_end(&server, &live, &["480p", "360p", "audio"]);
        let v = variants(&server, &live);
        let declared: Vec<_> = v.iter().map(|(n, _, w, h)| (n.as_str(), *w, *h)).collect();
        assert_eq!(
            declared,
            [("480p", 854, 480), ("360p", 640, 360)],
            "{codec:?}"
        );
        let mut timelines = Vec::new();
        for (name, codecs, width, height) in &v {
            assert!(
                codecs.starts_with("avc1."),
                "{codec:?} {name}: CODECS {codecs}"
            );
            let url = server.url(&format!("{live}/{name}/index.m3u8"));
            let (frames, decoded_as, _) = decode_all(&url, *width, *height);
            assert_eq!(decoded_as, "h264", "{codec:?} {name}");
            // a machine too busy for the ladder skips frames on purpose, and counts them
            let skipped = skipped_frames(&server, &stream.playback_id, name);
            assert!(
                (170..=180).contains(&(frames + skipped)),
                "{codec:?} {name}: {frames} frames of 180 ({skipped} skipped)"
            );
            let segs = segments(&server, &live, name);
            assert!(segs.iter().all(|s| s.1), "{codec:?} {name}: {segs:?}");
            let total: f64 = segs.iter().map(|s| s.0).sum();
            assert!(
                (total - 6.0).abs() < 0.15,
                "{codec:?} {name}: durations add up to {total} s"
            );
            timelines.push(segs);
        }
        // aligned: the same segments, starting within a frame of each other, in both rungs
        assert_eq!(timelines[0].len(), timelines[1].len(), "{codec:?}");
        for (a, b) in timelines[0].iter().zip(&timelines[1]) {
            assert!(a.2.abs_diff(b.2) <= 3_000, "{codec:?}: {a:?} / {b:?}");
        }
    }
}

#[test]
fn av1_and_vp9_on_the_passthrough_ladder_are_refused_with_the_reason() {
    let _one = ONE_AT_A_TIME.lock().unwrap_or_else(|e| e.into_inner());
    let server = Server::start();
    for (codec, name) in [(Codec::Av1, "AV1"), (Codec::Vp9, "VP9")] {
        let stream = server.create_stream(name, "passthrough");
        let tags = enhanced_rtmp::tags(server.dir.path(), codec, 4, "320x240");
        // the server closes the connection: publishing fails before the clip is through
        let published = enhanced_rtmp::publish(&server.rtmp, &stream.key, &tags, true);
        assert!(
            published.is_err(),
            "{name}: the publisher was not disconnected"
        );
        let said = format!("{name} video cannot be passed through");
        let logged = wait_for(Duration::from_secs(10), || {
            server.log().contains(&said).then_some(())
        });
        assert!(
            logged.is_some(),
            "{name}: no log line saying why:\n{}",
            server.log()
        );
        let (status, _) = server.get(&format!("live/{}/master.m3u8", stream.playback_id));
        assert_eq!(status, 404, "{name}: nothing is published");
    }
}

#[test]
fn hevc_over_srt_passes_through_as_hvc1() {
    let _one = ONE_AT_A_TIME.lock().unwrap_or_else(|e| e.into_inner());
    let server = Server::start();
    let stream = server.create_stream("hevc-srt", "passthrough");
    let live = format!("live/{}", stream.playback_id);
    let status = std::process::Command::new("ffmpeg")
        .args(["-hide_banner", "-loglevel", "error", "-re"])
        .args(["-f", "lavfi", "-i", "testsrc2=size=640x360:rate=30"])
        .args([
            "-f",
            "lavfi",
            "-i",
            "sine=frequency=440:sample_rate=48000",
            "-t",
            "6",
        ])
        .args([
            "-c:v",
            "libx265",
            "-preset",
            "ultrafast",
            "-pix_fmt",
            "yuv420p",
        ])
        .args([
            "-x265-params",
            "log-level=none:keyint=60:min-keyint=60:scenecut=0",
        ])
        .args(["-c:a", "aac", "-ac", "2", "-f", "mpegts"])
        .arg(format!("{}&linger=10", server.srt_url(&stream.key)))
        .status()
        .expect("ffmpeg");
    assert!(status.success(), "ffmpeg published to the end");
    check_hevc_passthrough(&server, &live);
}
