//! HLS push ingest (`PUT /ingest/hls/{stream}/{file}`) with real ffmpeg pushers: MPEG-TS and
//! fMP4 segments come out as the ladder and play through `master.m3u8` and `manifest.mpd`; the
//! key never shows in logs or object keys; a proxy that reorders and repeats uploads never
//! stalls or crashes the stream; and the broadcast core's matrix (wrong key, takeover,
//! reconnect within the grace, stop from the API, webhooks) as HTTP pushers see it: they are
//! told by status codes, since ffmpeg's HLS muxer goes on whatever the server answers.

mod support;

use std::time::Duration;

use support::*;

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
