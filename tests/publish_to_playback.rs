//! The foundation's promise, end to end: ffmpeg publishes 12 s over RTMP; players get HLS and
//! DASH over HTTP that ffprobe decodes, that add up to 12 s, whose every segment starts with a
//! keyframe and whose every URI answers; after the publisher stops the presentation is final.

mod support;

use std::time::Duration;

use support::{ffprobe, last_segment_number, publish, wait_for, Server};

/// Every URI a media playlist names (EXT-X-MAP and segments), relative to `base`.
fn playlist_uris(base: &str, text: &str) -> Vec<String> {
    let playlist =
        m3u8_rs::parse_media_playlist_res(text.as_bytes()).expect("media playlist parses");
    let mut uris = Vec::new();
    for seg in &playlist.segments {
        if let Some(map) = &seg.map {
            uris.push(format!("{base}/{}", map.uri));
        }
        uris.push(format!("{base}/{}", seg.uri));
    }
    uris
}

fn stream_types(probe: &serde_json::Value) -> Vec<String> {
    probe["streams"]
        .as_array()
        .map(|s| {
            s.iter()
                .filter_map(|st| st["codec_type"].as_str().map(str::to_string))
                .collect()
        })
        .unwrap_or_default()
}

#[test]
fn rtmp_publish_plays_as_hls_and_dash() {
    let server = Server::start();
    let stream = server.create_stream("e2e", "passthrough");
    let live = format!("live/{}", stream.playback_id);
    let mut ffmpeg = publish(&server.rtmp_url(&stream.key), 12);

    // While live: a dynamic MPD and a playlist without ENDLIST.
    let playlist = wait_for(Duration::from_secs(15), || {
        server
            .get_text(&format!("{live}/source/index.m3u8"))
            .filter(|p| last_segment_number(p).is_some())
    })
    .expect("a live playlist appears within 15 s");
    assert!(!playlist.contains("#EXT-X-ENDLIST"));
    let mpd_live = server
        .get_text(&format!("{live}/manifest.mpd"))
        .expect("live MPD");
    let mpd = dash_mpd_core::parse(&mpd_live).expect("live MPD parses");
    assert_eq!(mpd.mpdtype.as_deref(), Some("dynamic"));
    assert!(mpd.availabilityStartTime.is_some());
    let utc = &mpd.UTCTiming[0];
    let time_url = utc.value.clone().expect("UTCTiming value");
    let (status, body) = support::get_url(&time_url);
    assert_eq!(status, 200, "UTCTiming endpoint {time_url}");
    assert!(chrono::DateTime::parse_from_rfc3339(&String::from_utf8_lossy(&body)).is_ok());

    let status = ffmpeg.wait().expect("ffmpeg runs");
    assert!(
        status.success(),
        "the publisher was accepted and streamed to the end"
    );

    // After the publisher stops: ENDLIST and a static MPD.
    let video = wait_for(Duration::from_secs(10), || {
        server
            .get_text(&format!("{live}/source/index.m3u8"))
            .filter(|p| p.contains("#EXT-X-ENDLIST"))
    })
    .expect("the playlist ends with EXT-X-ENDLIST after the publisher stops");
    // The MPD is written after the playlists (manifests last), so it may lag them briefly.
    let mpd = wait_for(Duration::from_secs(5), || {
        let text = server.get_text(&format!("{live}/manifest.mpd"))?;
        let mpd = dash_mpd_core::parse(&text).expect("final MPD parses");
        (mpd.mpdtype.as_deref() == Some("static")).then_some(mpd)
    })
    .expect("the MPD becomes static after the publisher stops");

    // Durations add up: within one segment of the 12 s published.
    let parsed = m3u8_rs::parse_media_playlist_res(video.as_bytes()).expect("parses");
    let total: f32 = parsed.segments.iter().map(|s| s.duration).sum();
    assert!(
        (10.0..=14.0).contains(&total),
        "video playlist lasts {total} s"
    );
    let audio = server
        .get_text(&format!("{live}/audio/index.m3u8"))
        .expect("audio playlist");
    let audio_total: f32 = m3u8_rs::parse_media_playlist_res(audio.as_bytes())
        .expect("audio playlist parses")
        .segments
        .iter()
        .map(|s| s.duration)
        .sum();
    assert!(
        (total - audio_total).abs() < 0.5,
        "audio {audio_total} s vs video {total} s"
    );
    for seg in &parsed.segments {
        assert!(seg.duration.round() as u64 <= parsed.target_duration);
    }

    // ffprobe decodes both manifests, with video and audio.
    for manifest in ["master.m3u8", "manifest.mpd"] {
        let probe = ffprobe(&["-show_streams", &server.url(&format!("{live}/{manifest}"))]);
        let types = stream_types(&probe);
        assert!(types.iter().any(|t| t == "video"), "{manifest}: {types:?}");
        assert!(types.iter().any(|t| t == "audio"), "{manifest}: {types:?}");
    }
    let counted = ffprobe(&[
        "-count_frames",
        "-select_streams",
        "v:0",
        "-show_entries",
        "stream=nb_read_frames,width,height",
        &server.url(&format!("{live}/master.m3u8")),
    ]);
    let frames: u64 = counted["streams"][0]["nb_read_frames"]
        .as_str()
        .and_then(|s| s.parse().ok())
        .unwrap_or(0);
    assert!(frames >= 330, "decoded {frames} of ~360 video frames");
    assert_eq!(counted["streams"][0]["width"], 640);

    // The multivariant playlist parses and names both renditions.
    let master = server
        .get_text(&format!("{live}/master.m3u8"))
        .expect("master");
    let master = m3u8_rs::parse_master_playlist_res(master.as_bytes()).expect("master parses");
    let variant = &master.variants[0];
    assert!(variant
        .codecs
        .as_deref()
        .unwrap_or("")
        .contains("mp4a.40.2"));
    assert!(variant.bandwidth > 0);

    // Every URI named by a manifest answers 200.
    let mut uris = vec![
        format!("{live}/{}", variant.uri),
        format!(
            "{live}/{}",
            master.alternatives[0].uri.clone().expect("audio URI")
        ),
    ];
    uris.extend(playlist_uris(&format!("{live}/source"), &video));
    uris.extend(playlist_uris(&format!("{live}/audio"), &audio));
    for set in &mpd.periods[0].adaptations {
        for rep in &set.representations {
            let template = rep.SegmentTemplate.as_ref().expect("template");
            let start = template.startNumber.unwrap_or(1);
            let count: i64 = template
                .SegmentTimeline
                .as_ref()
                .map(|t| t.segments.iter().map(|s| 1 + s.r.unwrap_or(0)).sum())
                .unwrap_or(0);
            let id = rep.id.clone().unwrap_or_default();
            let init = template.initialization.clone().unwrap_or_default();
            uris.push(format!(
                "{live}/{}",
                init.replace("$RepresentationID$", &id)
            ));
            for n in start..start + count as u64 {
                let media = template.media.clone().unwrap_or_default();
                uris.push(format!(
                    "{live}/{}",
                    media
                        .replace("$RepresentationID$", &id)
                        .replace("$Number$", &n.to_string())
                ));
            }
        }
    }
    for uri in &uris {
        assert_eq!(server.get(uri).0, 200, "{uri}");
    }

    // Every video segment starts with a keyframe (checked by ffprobe on init + segment).
    let (_, init) = server.get(&format!("{live}/source/init.mp4"));
    for seg in &parsed.segments {
        let (status, media) = server.get(&format!("{live}/source/{}", seg.uri));
        assert_eq!(status, 200);
        let file = server.dir.path().join("probe.mp4");
        std::fs::write(&file, [init.clone(), media].concat()).expect("write probe file");
        let frames = ffprobe(&[
            "-select_streams",
            "v:0",
            "-show_frames",
            "-read_intervals",
            "%+#1",
            "-show_entries",
            "frame=key_frame,pict_type",
            file.to_str().unwrap_or_default(),
        ]);
        let first = &frames["frames"][0];
        assert_eq!(
            first["key_frame"], 1,
            "segment {} starts with {first}",
            seg.uri
        );
        assert_eq!(first["pict_type"], "I", "segment {}", seg.uri);
    }

    // The finished broadcast stays as a VOD.
    let vod_root = server.media_dir().join("vod");
    let recording = std::fs::read_dir(&vod_root)
        .expect("vod directory")
        .filter_map(Result::ok)
        .next()
        .expect("one recording");
    let vod_master = recording.path().join("master.m3u8");
    let probe = ffprobe(&["-show_format", vod_master.to_str().unwrap_or_default()]);
    let vod_secs: f64 = probe["format"]["duration"]
        .as_str()
        .and_then(|d| d.parse().ok())
        .unwrap_or(0.0);
    assert!((10.0..=14.0).contains(&vod_secs), "VOD lasts {vod_secs} s");
}

#[test]
fn origin_serves_ranges_etags_cors_and_refuses_odd_paths() {
    let server = Server::start();
    let stream = server.create_stream("origin", "passthrough");
    let live = format!("live/{}", stream.playback_id);
    let mut ffmpeg = publish(&server.rtmp_url(&stream.key), 4);
    assert!(ffmpeg.wait().expect("ffmpeg").success());
    let ok = wait_for(Duration::from_secs(10), || {
        server
            .get_text(&format!("{live}/source/index.m3u8"))
            .filter(|p| p.contains("ENDLIST"))
    });
    assert!(ok.is_some());
    let seg = last_segment_number(&ok.unwrap_or_default()).expect("a segment");
    let url = server.url(&format!("{live}/source/{seg}.m4s"));
    let agent: ureq::Agent = ureq::Agent::config_builder()
        .http_status_as_error(false)
        .build()
        .into();

    let full = agent
        .get(&url)
        .header("Origin", "https://player.example")
        .call()
        .expect("GET");
    assert_eq!(full.status(), 200);
    let h = |name: &str| {
        full.headers()
            .get(name)
            .and_then(|v| v.to_str().ok())
            .unwrap_or_default()
            .to_string()
    };
    assert_eq!(h("content-type"), "video/iso.segment");
    assert!(h("cache-control").contains("immutable"));
    assert_eq!(h("access-control-allow-origin"), "*");
    let etag = h("etag");
    assert!(!etag.is_empty());

    let mut part = agent
        .get(&url)
        .header("Range", "bytes=0-7")
        .call()
        .expect("range");
    assert_eq!(part.status(), 206);
    assert_eq!(part.body_mut().read_to_vec().expect("body").len(), 8);
    let beyond = agent
        .get(&url)
        .header("Range", "bytes=99999999-")
        .call()
        .expect("range");
    assert_eq!(
        beyond.status(),
        416,
        "a range past the end is unsatisfiable"
    );
    let not_modified = agent
        .get(&url)
        .header("If-None-Match", &etag)
        .call()
        .expect("etag");
    assert_eq!(not_modified.status(), 304);
    let head = agent.head(&url).call().expect("HEAD");
    assert_eq!(head.status(), 200);
    let full_len = agent
        .get(&url)
        .call()
        .expect("GET")
        .body_mut()
        .read_to_vec()
        .expect("body")
        .len();
    let hh = |name: &str| {
        head.headers()
            .get(name)
            .and_then(|v| v.to_str().ok())
            .unwrap_or_default()
            .to_string()
    };
    assert_eq!(
        hh("content-length"),
        full_len.to_string(),
        "HEAD tells the real length"
    );
    for name in [
        "content-type",
        "cache-control",
        "etag",
        "accept-ranges",
        "last-modified",
    ] {
        assert_eq!(hh(name), h(name), "HEAD and GET agree on {name}");
    }

    // Ranges: exact Content-Range on 206; 416 naming the size when no byte is selected.
    let size = full_len;
    let range = |spec: &str| {
        let mut r = agent
            .get(&url)
            .header("Range", spec)
            .call()
            .expect("range request");
        let header = |name: &str| {
            r.headers()
                .get(name)
                .and_then(|v| v.to_str().ok())
                .map(str::to_string)
        };
        let (content_range, length) = (header("content-range"), header("content-length"));
        let body = r.body_mut().read_to_vec().expect("body");
        (r.status().as_u16(), content_range, length, body.len())
    };
    let last = size - 1;
    let past_end = format!("bytes={size}-");
    for (spec, expected) in [
        ("bytes=-0", (416, Some(format!("bytes */{size}")), 0)),
        (past_end.as_str(), (416, Some(format!("bytes */{size}")), 0)),
        (
            "bytes=-4",
            (206, Some(format!("bytes {}-{last}/{size}", size - 4)), 4),
        ),
        (
            "bytes=-99999999",
            (206, Some(format!("bytes 0-{last}/{size}")), size),
        ),
        (
            "bytes=2-99999999",
            (206, Some(format!("bytes 2-{last}/{size}")), size - 2),
        ),
        ("bytes=5-2", (200, None, size)),
    ] {
        let (status, content_range, length, body) = range(spec);
        assert_eq!(
            (status, content_range, body),
            expected,
            "Range: {spec} (object of {size} bytes)"
        );
        if status != 416 {
            assert_eq!(length, Some(body.to_string()), "{spec}: Content-Length");
        }
    }

    let playlist = agent
        .get(&server.url(&format!("{live}/master.m3u8")))
        .call()
        .expect("master");
    let cache = playlist
        .headers()
        .get("cache-control")
        .and_then(|v| v.to_str().ok())
        .unwrap_or("");
    assert!(cache.contains("max-age=1"), "{cache}");

    for bad in [
        format!("live/{}/../../strata.db", stream.playback_id),
        "live/..%2f..%2fstrata.db".to_string(),
        "live/NOTANID/master.m3u8".to_string(),
        format!("{live}/source/1.m4s.tmp"),
        format!("{live}/source/999999.m4s"),
    ] {
        let (status, _) = server.get(&bad);
        assert!(status == 404 || status == 400, "{bad} → {status}");
    }
    assert_eq!(server.get("healthz").0, 200);
}
