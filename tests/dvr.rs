//! DVR, end to end: a stream with a DVR window gets, beside its short live window, a DVR view
//! (`dvr.m3u8`, each rendition's `dvr.m3u8`, `dvr.mpd`) that reaches back that window over
//! the same segments; the origin serves every segment it names even after the segment left
//! the live window, and deletes what left the DVR view after the grace. Read back with
//! m3u8-rs and dash-mpd-core while live, with ffprobe once it ended. Its scrub previews (a
//! thumbnails track and sprite sheets) cover the window and show pictures. The window here is 12 s
//! (six 2 s segments) so the test takes seconds, not minutes; the arithmetic is the same for
//! two hours.

mod support;

use std::time::Duration;

use serde_json::{json, Value};
use support::previews::{check_sheets, thumbnails};
use support::*;

const DVR_WINDOW: f64 = 12.0;
const SEGMENT: f64 = 2.0;
const SLACK: f64 = 0.25;
/// What the DVR view may list: its window, and less than one segment more.
const REACH: std::ops::Range<f64> = DVR_WINDOW - SLACK..DVR_WINDOW + SEGMENT + SLACK;

/// How many child processes of `pid` have `name` among their arguments.
fn children_named(pid: u32, name: &str) -> usize {
    let Ok(entries) = std::fs::read_dir("/proc") else {
        return 0;
    };
    entries
        .flatten()
        .filter(|entry| {
            let dir = entry.path();
            let stat = std::fs::read_to_string(dir.join("stat")).unwrap_or_default();
            // the parent pid is the second field after the command name in parentheses
            let parent = stat
                .rsplit_once(')')
                .and_then(|(_, rest)| rest.split_whitespace().nth(1))
                .and_then(|p| p.parse::<u32>().ok());
            let cmdline = std::fs::read(dir.join("cmdline")).unwrap_or_default();
            parent == Some(pid) && cmdline.split(|b| *b == 0).any(|arg| arg == name.as_bytes())
        })
        .count()
}

fn numbers(playlist: &m3u8_rs::MediaPlaylist) -> Vec<u64> {
    playlist
        .segments
        .iter()
        .filter_map(|s| s.uri.strip_suffix(".m4s")?.parse().ok())
        .collect()
}

fn media_playlist(server: &Server, path: &str) -> Option<m3u8_rs::MediaPlaylist> {
    let text = server.get_text(path)?;
    m3u8_rs::parse_media_playlist_res(text.as_bytes()).ok()
}

fn playlist_secs(playlist: &m3u8_rs::MediaPlaylist) -> f64 {
    playlist
        .segments
        .iter()
        .map(|s| f64::from(s.duration))
        .sum()
}

#[test]
fn the_dvr_view_reaches_back_its_window_and_keeps_what_it_names() {
    let server = Server::start_with_env(
        &[
            ("STRATA__SEGMENT__WINDOW", "3"),
            ("STRATA__RETENTION__GRACE", "2"),
        ],
        |_| {},
    );
    let token = server.admin_token.clone();
    // the window is bounded and set through the API
    let (status, body) = api(
        &server,
        "POST",
        "/api/v1/streams",
        Some(&token),
        Some(json!({"name": "too-long", "ladder": "passthrough", "dvr_window": 21_601})),
    );
    assert_eq!(status, 400, "{body}");
    let created = create_stream_with(
        &server,
        json!({"name": "rewind", "ladder": "passthrough", "dvr_window": 12}),
    );
    assert_eq!(created["stream"]["dvr_window"], 12);
    let key = created["key"].as_str().expect("key").to_string();
    let playback_id = created["stream"]["playback_id"]
        .as_str()
        .expect("playback id")
        .to_string();
    let live = format!("live/{playback_id}");
    let entry = server
        .get_text(&format!("api/public/streams/{playback_id}"))
        .expect("directory entry");
    let entry: Value = serde_json::from_str(&entry).expect("json");
    assert_eq!(entry["dvr_window"], 12, "{entry}");

    let mut publisher = publish(&server.rtmp_url(&key), 44);
    // the DVR view fills up to its window, then slides (numbers start at 0)
    let dvr = wait_for(Duration::from_secs(60), || {
        let playlist = media_playlist(&server, &format!("{live}/source/dvr.m3u8"))?;
        (*numbers(&playlist).first()? > 2).then_some(playlist)
    })
    .expect("the DVR view slides once the broadcast is longer than its window");
    let secs = playlist_secs(&dvr);
    assert!(
        REACH.contains(&secs),
        "the DVR view lists {secs:.2} s for a {DVR_WINDOW} s window"
    );
    let dvr_numbers = numbers(&dvr);
    assert!(!dvr.end_list);

    // the live window is short and starts later; every DVR segment is served
    let index =
        media_playlist(&server, &format!("{live}/source/index.m3u8")).expect("live playlist");
    let live_numbers = numbers(&index);
    assert!(live_numbers.len() <= 3, "live window {live_numbers:?}");
    assert!(
        dvr_numbers[0] < live_numbers[0],
        "DVR {dvr_numbers:?} reaches before live {live_numbers:?}"
    );
    for n in &dvr_numbers {
        for rendition in ["source", "audio"] {
            let (status, bytes) = server.get(&format!("{live}/{rendition}/{n}.m4s"));
            assert_eq!(status, 200, "{rendition}/{n}.m4s of the DVR view");
            assert!(!bytes.is_empty());
        }
    }
    // what left the DVR view goes after the grace
    let released = dvr_numbers[0] - 2;
    let gone = wait_for(Duration::from_secs(20), || {
        (server.get(&format!("{live}/source/{released}.m4s")).0 == 404).then_some(())
    });
    assert!(
        gone.is_some(),
        "segment {released} left the DVR view but is still served"
    );

    // the multivariant playlist and the MPD of the DVR view
    let master = server
        .get_text(&format!("{live}/dvr.m3u8"))
        .expect("DVR multivariant playlist");
    let master = m3u8_rs::parse_master_playlist_res(master.as_bytes()).expect("parses");
    let uris: Vec<_> = master.variants.iter().map(|v| v.uri.as_str()).collect();
    assert_eq!(uris, ["source/dvr.m3u8"]);
    let mpd = server
        .get_text(&format!("{live}/dvr.mpd"))
        .expect("DVR MPD");
    let mpd = dash_mpd_core::parse(&mpd).expect("MPD parses");
    assert_eq!(mpd.mpdtype.as_deref(), Some("dynamic"));
    let depth = mpd
        .timeShiftBufferDepth
        .expect("timeShiftBufferDepth")
        .as_secs_f64();
    assert!(
        REACH.contains(&depth),
        "timeShiftBufferDepth {depth:.2} s for a {DVR_WINDOW} s window"
    );
    let live_mpd = server
        .get_text(&format!("{live}/manifest.mpd"))
        .expect("live MPD");
    let live_mpd = dash_mpd_core::parse(&live_mpd).expect("MPD parses");
    let live_depth = live_mpd.timeShiftBufferDepth.expect("depth").as_secs_f64();
    assert!(
        live_depth < depth - SEGMENT,
        "live MPD {live_depth} s, DVR {depth} s"
    );

    // once the broadcast ended, the DVR view is a complete, playable last window
    let status = publisher.wait().expect("ffmpeg");
    assert!(status.success(), "ffmpeg publish failed");
    let ended = wait_for(Duration::from_secs(30), || {
        media_playlist(&server, &format!("{live}/source/dvr.m3u8")).filter(|p| p.end_list)
    })
    .expect("the DVR view gets ENDLIST when the broadcast ends");

    // its scrub previews: a thumbnail every 4 s of the window, timed from the broadcast's
    // start (the last one ends with the broadcast's 44 s), on sheets that show pictures; the
    // first sheet (its thumbnails 0–20 s) left the window and goes after the grace
    let cues = wait_for(Duration::from_secs(30), || {
        thumbnails(&server, &live).filter(|c| c.last().is_some_and(|c| c.end > 40.0))
    })
    .unwrap_or_else(|| panic!("the DVR view's previews reach its end:\n{}", server.log()));
    let (first, last) = (cues[0].start, cues[cues.len() - 1].end);
    println!("DVR previews: {} cues, {first:.2}–{last:.2} s", cues.len());
    assert!(
        children_named(server.pid(), "previews-zygote") == 1,
        "the sheets were made by the node's one previews zygote"
    );
    assert!((40.0..=48.0).contains(&last), "{cues:?}");
    assert!(
        last - first <= DVR_WINDOW + 4.0 + SLACK,
        "the previews reach back beyond the window: {cues:?}"
    );
    for pair in cues.windows(2) {
        assert!(
            (3.9..=4.1).contains(&(pair[1].start - pair[0].start)),
            "{cues:?}"
        );
    }
    check_sheets(&server, &live, &cues);
    let gone = wait_for(Duration::from_secs(20), || {
        (server.get(&format!("{live}/previews/0.jpg")).0 == 404).then_some(())
    });
    assert!(
        gone.is_some(),
        "the first sheet left the window but is served"
    );
    assert!(cues.iter().all(|c| c.sheet != "previews/0.jpg"), "{cues:?}");
    let ended_secs = playlist_secs(&ended);
    for (what, url) in [
        ("HLS", server.url(&format!("{live}/dvr.m3u8"))),
        ("DASH", server.url(&format!("{live}/dvr.mpd"))),
    ] {
        let (kinds, duration) = probe_kinds_and_duration(&url);
        assert!(kinds.contains(&"video".to_string()), "{what}: {kinds:?}");
        assert!(kinds.contains(&"audio".to_string()), "{what}: {kinds:?}");
        assert!(
            REACH.contains(&duration),
            "{what} DVR view plays {duration:.2} s (lists {ended_secs:.2} s)"
        );
    }
}

#[test]
fn a_stream_without_dvr_has_no_dvr_view() {
    let server = Server::start();
    let created = create_stream_with(
        &server,
        json!({"name": "edge-only", "ladder": "passthrough", "dvr_window": 0}),
    );
    let key = created["key"].as_str().expect("key").to_string();
    let live = format!(
        "live/{}",
        created["stream"]["playback_id"].as_str().expect("id")
    );
    let mut publisher = publish(&server.rtmp_url(&key), 8);
    let listed = wait_for(Duration::from_secs(30), || {
        media_playlist(&server, &format!("{live}/source/index.m3u8"))
            .filter(|p| !p.segments.is_empty())
    });
    assert!(listed.is_some(), "the live window is published");
    for name in ["dvr.m3u8", "dvr.mpd", "source/dvr.m3u8"] {
        assert_eq!(server.get(&format!("{live}/{name}")).0, 404, "{name}");
    }
    let _ = publisher.kill();
    let _ = publisher.wait();
}
