//! Low latency, end to end: while ffmpeg publishes in real time, every segment's CMAF chunks
//! are stored as parts (`{n}.{p}.m4s`) and served by the origin before the segment is listed,
//! even with `storage.public_base_url` set (segments then leave from the bucket); a segment is
//! exactly its parts back to back; no video part outlasts `segment.part_duration`, and a part
//! is marked independent exactly when its bytes start with a sync sample.

mod support;

use std::io::Cursor;
use std::time::Duration;

use mp4_atom::{Any, Decode, Moof};
use support::*;

const PART_TICKS: u64 = 45_000; // 0.5 s at 90 kHz

/// (first sample is a sync sample, sample durations) of a part's chunk(s).
fn chunk_facts(bytes: &[u8]) -> (bool, Vec<u64>) {
    let mut cur = Cursor::new(bytes);
    let mut durations = Vec::new();
    let mut first_sync = None;
    while (cur.position() as usize) < bytes.len() {
        match Any::decode(&mut cur).expect("a box") {
            Any::Styp(_) | Any::Mdat(_) => {}
            Any::Moof(moof) => facts_of(&moof, &mut first_sync, &mut durations),
            other => panic!("unexpected box in a part: {other:?}"),
        }
    }
    (first_sync.expect("a sample"), durations)
}

fn facts_of(moof: &Moof, first_sync: &mut Option<bool>, durations: &mut Vec<u64>) {
    for sample in moof.traf[0].trun[0].samples.iter() {
        // sample_is_non_sync_sample clear
        first_sync.get_or_insert(sample.flags.is_some_and(|f| f & 0x0001_0000 == 0));
        durations.push(u64::from(sample.duration.expect("explicit durations")));
    }
}

fn listed(server: &Server, live: &str, rendition: &str) -> Vec<u64> {
    let Some(text) = server.get_text(&format!("{live}/{rendition}/index.m3u8")) else {
        return Vec::new();
    };
    let playlist = m3u8_rs::parse_media_playlist_res(text.as_bytes()).expect("valid playlist");
    playlist
        .segments
        .iter()
        .filter_map(|s| s.uri.strip_suffix(".m4s")?.parse().ok())
        .collect()
}

#[test]
fn parts_are_served_before_their_segment_is_listed_and_make_it_up() {
    let server = Server::start_with_env(
        &[("STRATA__STORAGE__PUBLIC_BASE_URL", "http://bucket.invalid")],
        |_| {},
    );
    let stream = server.create_stream("ll", "passthrough");
    let live = format!("live/{}", stream.playback_id);
    let mut ffmpeg = publish(&server.rtmp_url(&stream.key), 9);

    // a part of the segment being produced answers while the playlist does not list it yet
    let early = wait_for(Duration::from_secs(30), || {
        let before = listed(&server, &live, "source");
        let next = before.last().map_or(0, |n| n + 1);
        let (status, headers, body) = get_url_with_headers(
            &server.url(&format!("{live}/source/{next}.0.m4s")),
            &["content-type", "cache-control"],
        );
        let after = listed(&server, &live, "source");
        (status == 200 && !after.contains(&next)).then_some((next, headers, body))
    });
    let (number, headers, body) = early.unwrap_or_else(|| {
        panic!("no part came before its segment:\n{}", server.log());
    });
    assert_eq!(headers[0].as_deref(), Some("video/iso.segment"));
    assert!(headers[1]
        .as_deref()
        .is_some_and(|c| c.contains("immutable")));
    assert!(
        chunk_facts(&body).0,
        "part {number}.0 starts with a keyframe"
    );

    assert!(ffmpeg.wait().expect("ffmpeg").success(), "ffmpeg failed");
    wait_for_end(&server, &live, &["source", "audio"]);

    for rendition in ["source", "audio"] {
        let numbers = listed(&server, &live, rendition);
        assert!(numbers.len() >= 3, "{rendition}: {numbers:?}");
        let last = numbers.last().copied();
        for n in numbers {
            // segments leave from the bucket (302); its bytes are the stored object
            let (status, _) = server.get(&format!("{live}/{rendition}/{n}.m4s"));
            assert_ne!(status, 200, "segments are redirected to the public base");
            let path = server
                .media_dir()
                .join(format!("{live}/{rendition}/{n}.m4s"));
            let segment = std::fs::read(&path).expect("the stored segment");
            let mut joined = Vec::new();
            let mut index = 0;
            loop {
                let (status, part) = server.get(&format!("{live}/{rendition}/{n}.{index}.m4s"));
                if status == 404 {
                    break;
                }
                assert_eq!(status, 200, "{rendition} part {n}.{index}");
                let (sync, durations) = chunk_facts(&part);
                if rendition == "source" {
                    let ticks: u64 = durations.iter().sum();
                    assert!(ticks <= PART_TICKS, "part {n}.{index} lasts {ticks} ticks");
                    // 2 s GOPs without scene cuts: only a segment's first part has a keyframe
                    assert_eq!(sync, index == 0, "part {n}.{index}");
                } else {
                    assert!(sync);
                }
                joined.extend_from_slice(&part);
                index += 1;
            }
            // 2 s in parts of at most 0.5 s; the broadcast's last segment may be short
            let least = if Some(n) == last { 1 } else { 4 };
            assert!(index >= least, "{rendition} segment {n} has {index} parts");
            assert!(
                joined == segment,
                "{rendition} segment {n} is not its {index} parts back to back"
            );
        }
    }
}
