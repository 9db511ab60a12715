//! The origin answers a live broadcast's objects from memory on the node that publishes it:
//! the bytes are the stored bytes, validators work (`304`), ranges and `HEAD` are right, and
//! the node reports the memory it holds them in. A recording's segments are kept once read, and
//! stop being served as soon as the recording is deleted.

mod support;

use std::time::Duration;

use support::*;

fn agent() -> ureq::Agent {
    ureq::Agent::config_builder()
        .http_status_as_error(false)
        .timeout_global(Some(Duration::from_secs(10)))
        .build()
        .into()
}

/// GET `url` with `headers`: status, the named response header, the body.
fn get(url: &str, headers: &[(&str, &str)], name: &str) -> (u16, Option<String>, Vec<u8>) {
    let mut request = agent().get(url);
    for (k, v) in headers {
        request = request.header(*k, *v);
    }
    let mut response = request.call().expect("the origin answers");
    let value = response
        .headers()
        .get(name)
        .and_then(|v| v.to_str().ok())
        .map(str::to_string);
    let body = response.body_mut().read_to_vec().unwrap_or_default();
    (response.status().as_u16(), value, body)
}

#[test]
fn live_objects_come_from_memory_with_validators_ranges_and_the_stored_bytes() {
    let server = Server::start();
    let stream = server.create_stream("hot", "passthrough");
    let live = format!("live/{}", stream.playback_id);
    let mut ffmpeg = publish(&server.rtmp_url(&stream.key), 12);

    // two segments listed while the broadcast is live
    let playlist = wait_for(Duration::from_secs(30), || {
        server
            .get_text(&format!("{live}/source/index.m3u8"))
            .filter(|p| p.matches("#EXTINF").count() >= 2 && !p.contains("ENDLIST"))
    })
    .expect("a live playlist with two segments");
    let number = playlist
        .lines()
        .filter_map(|l| l.strip_suffix(".m4s"))
        .find(|stem| stem.bytes().all(|b| b.is_ascii_digit()))
        .map(str::to_string)
        .expect("a segment listed");

    // a segment: the stored bytes, a validator, 304 for it, a range, HEAD's length
    let path = format!("{live}/source/{number}.m4s");
    let stored = std::fs::read(server.media_dir().join(&path)).expect("the stored segment");
    let url = server.url(&path);
    let (status, etag, body) = get(&url, &[], "etag");
    assert_eq!(status, 200);
    assert_eq!(body, stored, "the origin's bytes are the stored bytes");
    let etag = etag.expect("an ETag");
    let (status, _, body) = get(&url, &[("If-None-Match", &etag)], "etag");
    assert_eq!(status, 304, "the validator it gave is honoured");
    assert!(body.is_empty());
    let weak = format!("W/{etag}");
    assert_eq!(get(&url, &[("If-None-Match", &weak)], "etag").0, 304);
    assert_eq!(get(&url, &[("If-None-Match", "\"other\"")], "etag").0, 200);
    let (status, range, body) = get(&url, &[("Range", "bytes=10-99")], "content-range");
    assert_eq!(status, 206);
    assert_eq!(
        range.as_deref(),
        Some(&*format!("bytes 10-99/{}", stored.len()))
    );
    assert_eq!(body, &stored[10..100]);
    let head = agent().head(&url).call().expect("HEAD");
    assert_eq!(head.status(), 200);
    assert_eq!(
        head.headers()
            .get("content-length")
            .and_then(|v| v.to_str().ok()),
        Some(&*stored.len().to_string()),
        "HEAD gives the real length"
    );
    assert_eq!(
        get(
            &url,
            &[("Range", &format!("bytes={}-", stored.len()))],
            "content-range"
        )
        .0,
        416
    );

    // the master playlist and the init segment: stored bytes and 304
    for object in [
        format!("{live}/master.m3u8"),
        format!("{live}/source/init.mp4"),
    ] {
        let (status, etag, body) = get(&server.url(&object), &[], "etag");
        assert_eq!(status, 200, "{object}");
        let stored = std::fs::read(server.media_dir().join(&object)).expect("stored");
        assert_eq!(body, stored, "{object}");
        let etag = etag.expect("an ETag");
        assert_eq!(
            get(&server.url(&object), &[("If-None-Match", &etag)], "etag").0,
            304
        );
    }

    // the low-latency playlist, rendered from memory, has a validator too: it is either still
    // current (304) or has moved on (200 with another one)
    let url = server.url(&format!("{live}/source/index.m3u8"));
    let (_, etag, _) = get(&url, &[], "etag");
    let etag = etag.expect("the live playlist has an ETag");
    let (status, again, _) = get(&url, &[("If-None-Match", &etag)], "etag");
    assert!(
        status == 304 || (status == 200 && again.as_deref() != Some(&etag)),
        "{status} {again:?} for {etag}"
    );

    // the node says how much it holds in memory
    let (_, metrics) = server.get("metrics");
    let metrics = String::from_utf8_lossy(&metrics);
    let held: f64 = metrics
        .lines()
        .find_map(|l| l.strip_prefix("strata_hot_object_bytes "))
        .and_then(|v| v.trim().parse().ok())
        .expect("strata_hot_object_bytes is reported");
    assert!(held >= stored.len() as f64, "{held} bytes held");

    assert!(ffmpeg.wait().expect("ffmpeg").success());
    // after the end, the stored (rewritten) playlist is what the origin answers
    let ended = wait_for(Duration::from_secs(20), || {
        server
            .get_text(&format!("{live}/source/index.m3u8"))
            .filter(|p| p.contains("ENDLIST"))
    })
    .expect("the ended playlist");
    let stored =
        std::fs::read_to_string(server.media_dir().join(format!("{live}/source/index.m3u8")))
            .expect("stored playlist");
    assert_eq!(ended, stored);

    // the recording's segments are kept hot once read; deleting the recording stops them at once
    let vod_dir = std::fs::read_dir(server.media_dir().join("vod"))
        .expect("the recording's directory")
        .flatten()
        .next()
        .expect("one recording");
    let recording = vod_dir.file_name().to_string_lossy().to_string();
    let vod_segment = format!("vod/{recording}/source/0.m4s");
    let stored = std::fs::read(server.media_dir().join(&vod_segment)).expect("stored segment");
    for _ in 0..2 {
        let (status, etag, body) = get(&server.url(&vod_segment), &[], "etag");
        assert_eq!(status, 200);
        assert_eq!(body, stored, "the recording's segment has the stored bytes");
        let (status, _, _) = get(
            &server.url(&vod_segment),
            &[("If-None-Match", etag.as_deref().unwrap_or(""))],
            "etag",
        );
        assert_eq!(status, 304);
    }
    // the recording is deletable once its broadcast's end is recorded
    let deleted = wait_for(Duration::from_secs(20), || {
        let (status, _) = api(
            &server,
            "DELETE",
            &format!("/api/v1/recordings/{recording}"),
            Some(&server.admin_token),
            None,
        );
        (status == 204).then_some(())
    });
    assert!(deleted.is_some(), "the recording is deleted");
    assert_eq!(
        get(&server.url(&vod_segment), &[], "etag").0,
        404,
        "a deleted recording's segment is not served from memory"
    );
}
