//! Low latency, end to end: while ffmpeg publishes in real time, every segment's CMAF chunks
//! are stored as parts (`{n}.{p}.m4s`) and served by the origin before the segment is listed,
//! even with `storage.public_base_url` set (segments then leave from the bucket); a segment is
//! exactly its parts back to back; no video part outlasts `segment.part_duration`, and a part
//! is marked independent exactly when its bytes start with a sync sample. The LL-HLS playlists
//! are read back with an independent parser and checked against the rules, blocking reloads
//! return with the part they asked for, delta updates are the full playlist less its oldest
//! segments, and a DASH segment being produced arrives chunk by chunk before it is complete.
//! A second node of a cluster answers blocking requests from what the owner relays, as
//! quickly as the owner.

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

/// What the `m3u8` Python library (an LL-HLS-aware parser independent of ours) reads in a
/// media playlist (`tests/support/ll_hls.py`).
fn parse_ll(text: &str) -> serde_json::Value {
    use std::io::Write;
    use std::process::{Command, Stdio};
    let mut child = Command::new("/usr/bin/python3")
        .arg(concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/tests/support/ll_hls.py"
        ))
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("python3 runs (`make test` installs python3-m3u8)");
    if let Some(mut stdin) = child.stdin.take() {
        stdin.write_all(text.as_bytes()).expect("write playlist");
    }
    let out = child.wait_with_output().expect("parser");
    assert!(
        out.status.success(),
        "the m3u8 library refused:\n{text}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).expect("json")
}

fn items(v: &serde_json::Value) -> &[serde_json::Value] {
    v.as_array().map_or(&[], Vec::as_slice)
}

/// (segment number, part index) of a part URI `{n}.{p}.m4s`.
fn part_name(uri: &str) -> (u64, u32) {
    let stem = uri.strip_suffix(".m4s").expect("a part URI");
    let (n, p) = stem.split_once('.').expect("n.p");
    (n.parse().expect("n"), p.parse().expect("p"))
}

/// (LAST-MSN, LAST-PART) of a parsed playlist: its newest part, else its newest segment.
fn last_of(v: &serde_json::Value) -> (u64, i64) {
    let msn = v["media_sequence"].as_u64().unwrap_or(0);
    let segments = items(&v["segments"]);
    let open = items(&v["open_parts"]);
    if !open.is_empty() {
        return (msn + segments.len() as u64, open.len() as i64 - 1);
    }
    let parts = segments.last().map_or(0, |s| items(&s["parts"]).len());
    (msn + segments.len() as u64 - 1, parts as i64 - 1)
}

#[test]
fn ll_hls_playlists_follow_the_rules_and_a_blocking_reload_returns_with_its_part() {
    // a 24 s window: longer than CAN-SKIP-UNTIL (12 s), so delta updates skip segments
    let server = Server::start_with_env(&[("STRATA__SEGMENT__WINDOW", "12")], |_| {});
    let stream = server.create_stream("llhls", "passthrough");
    let live = format!("live/{}", stream.playback_id);
    let video = format!("{live}/source/index.m3u8");
    let mut ffmpeg = publish(&server.rtmp_url(&stream.key), 36);
    let (text, v) = wait_for(Duration::from_secs(30), || {
        let text = server.get_text(&video)?;
        let v = parse_ll(&text);
        (items(&v["segments"]).len() >= 3).then_some((text, v))
    })
    .unwrap_or_else(|| panic!("no LL-HLS playlist with 3 segments:\n{}", server.log()));

    // the rules, as an independent parser reads them
    assert_eq!(v["can_block_reload"], "YES", "{text}");
    let part_target = v["part_target"].as_f64().expect("PART-TARGET");
    assert_eq!(part_target, 0.5);
    assert!(v["part_hold_back"].as_f64().expect("PART-HOLD-BACK") >= 3.0 * part_target);
    assert!(v["can_skip_until"].as_f64().expect("CAN-SKIP-UNTIL") >= 6.0 * 2.0);
    let listed_parts = items(&v["segments"])
        .iter()
        .flat_map(|s| items(&s["parts"]))
        .chain(items(&v["open_parts"]));
    let mut checked = 0;
    for part in listed_parts {
        let uri = part["uri"].as_str().expect("part URI");
        assert!(part["duration"].as_f64().expect("duration") <= part_target + 1e-6);
        let (status, bytes) = server.get(&format!("{live}/source/{uri}"));
        assert_eq!(status, 200, "{uri} is listed");
        let (sync, _) = chunk_facts(&bytes);
        assert_eq!(
            part["independent"].as_bool(),
            Some(sync),
            "INDEPENDENT of {uri}"
        );
        checked += 1;
    }
    assert!(checked >= 8, "{checked} parts listed:\n{text}");
    // a listed segment with parts is exactly those parts
    let with_parts = items(&v["segments"])
        .iter()
        .find(|s| !items(&s["parts"]).is_empty())
        .expect("a segment with its parts");
    let mut joined = Vec::new();
    for part in items(&with_parts["parts"]) {
        let uri = part["uri"].as_str().unwrap_or_default();
        joined.extend(server.get(&format!("{live}/source/{uri}")).1);
    }
    let uri = with_parts["uri"].as_str().unwrap_or_default();
    assert!(
        joined == server.get(&format!("{live}/source/{uri}")).1,
        "{uri} = its parts"
    );
    // the report of the audio rendition is not ahead of the audio playlist read after it
    let report = items(&v["rendition_reports"])
        .iter()
        .find(|r| r["uri"] == "../audio/index.m3u8")
        .unwrap_or_else(|| panic!("no audio rendition report:\n{text}"))
        .clone();
    let audio = parse_ll(
        &server
            .get_text(&format!("{live}/audio/index.m3u8"))
            .expect("audio playlist"),
    );
    let reported = (
        report["last_msn"].as_u64().unwrap_or(0),
        report["last_part"].as_i64().unwrap_or(-1),
    );
    assert!(
        reported <= last_of(&audio),
        "{reported:?} vs {:?}",
        last_of(&audio)
    );
    assert!(reported.0 + 1 >= last_of(&audio).0, "the report is current");

    // blocking reload: the request for the hinted part returns as soon as it is stored
    let mut gaps = Vec::new();
    for _ in 0..5 {
        let text = server.get_text(&video).expect("playlist");
        let v = parse_ll(&text);
        let hint = v["preload_hint"]["uri"]
            .as_str()
            .expect("a preload hint")
            .to_string();
        assert_eq!(v["preload_hint"]["type"], "PART");
        let (number, part) = part_name(&hint);
        let msn = v["media_sequence"].as_u64().unwrap_or(0) + items(&v["segments"]).len() as u64;
        let part_url = server.url(&format!("{live}/source/{hint}"));
        let fetch = std::thread::spawn(move || {
            let (status, _) = get_url(&part_url);
            (status, std::time::Instant::now())
        });
        let (status, body) = server.get(&format!("{video}?_HLS_msn={msn}&_HLS_part={part}"));
        let answered = std::time::Instant::now();
        let (part_status, part_at) = fetch.join().expect("part fetch");
        if number != msn || part_status != 200 {
            // the hinted part was the one after a segment's last: that segment ended first
            continue;
        }
        assert_eq!(status, 200);
        let blocked = String::from_utf8_lossy(&body).into_owned();
        assert!(
            blocked.contains(&format!("URI=\"{hint}\"")),
            "{hint} in\n{blocked}"
        );
        gaps.push(answered.max(part_at) - answered.min(part_at));
    }
    gaps.sort();
    assert!(gaps.len() >= 3, "{gaps:?}");
    assert!(
        gaps[gaps.len() / 2] <= Duration::from_millis(50),
        "playlist and part answered {gaps:?} apart"
    );
    // what a blocking request may not ask
    let (last_msn, _) = last_of(&parse_ll(&server.get_text(&video).expect("playlist")));
    let (status, _) = server.get(&format!("{video}?_HLS_msn={}", last_msn + 3));
    assert_eq!(status, 400, "three segments ahead");
    assert_eq!(server.get(&format!("{video}?_HLS_part=1")).0, 400);
    // a delta update is the full playlist with its segments older than CAN-SKIP-UNTIL left
    // out: both asked for the same next part, so both show the same update
    let (full, delta) = wait_for(Duration::from_secs(40), || {
        let v = parse_ll(&server.get_text(&video)?);
        if items(&v["segments"]).len() < 9 {
            return None;
        }
        let (number, part) = part_name(v["preload_hint"]["uri"].as_str()?);
        let msn = v["media_sequence"].as_u64()? + items(&v["segments"]).len() as u64;
        if number != msn {
            return None;
        }
        let blocking = format!("{video}?_HLS_msn={msn}&_HLS_part={part}");
        let full = get_on_thread(server.url(&blocking));
        let delta = get_on_thread(server.url(&format!("{blocking}&_HLS_skip=YES")));
        let (full, delta) = (full.join().ok()?, delta.join().ok()?);
        let (full, delta) = (
            parse_ll(&String::from_utf8_lossy(&full.1)),
            parse_ll(&String::from_utf8_lossy(&delta.1)),
        );
        let same_moment = full["preload_hint"] == delta["preload_hint"]
            && full["rendition_reports"] == delta["rendition_reports"];
        same_moment.then_some((full, delta))
    })
    .expect("a full playlist and a delta update of one moment");
    let skipped = delta["skipped_segments"].as_u64().unwrap_or(0) as usize;
    let all = items(&full["segments"]);
    assert!(skipped >= 2, "a 24 s window, 12 s kept: skipped {skipped}");
    assert_eq!(all.len() - skipped, items(&delta["segments"]).len());
    assert_eq!(
        &all[skipped..],
        items(&delta["segments"]),
        "the delta lists what the full playlist lists after the skipped segments"
    );
    let kept: f64 = all[skipped..]
        .iter()
        .map(|s| s["duration"].as_f64().unwrap_or(0.0))
        .sum();
    assert!(kept >= 12.0 - 2.1, "{kept} s kept");
    for key in [
        "media_sequence",
        "open_parts",
        "preload_hint",
        "rendition_reports",
    ] {
        assert_eq!(full[key], delta[key], "{key}");
    }

    // LL-DASH: a segment is available from its first part on, and while it is produced it
    // arrives chunk by chunk
    let mpd = server
        .get_text(&format!("{live}/manifest.mpd"))
        .expect("MPD");
    assert!(mpd.contains("availabilityTimeOffset=\"1.5\""), "{mpd}");
    assert!(mpd.contains("availabilityTimeComplete=\"false\""), "{mpd}");
    assert!(
        mpd.contains("<ServiceDescription") && mpd.contains("<Latency"),
        "{mpd}"
    );
    // early in a segment, so that it is surely not complete when its first chunk arrives
    let producing = wait_for(Duration::from_secs(10), || {
        let v = parse_ll(&server.get_text(&video)?);
        let (number, part) = part_name(v["preload_hint"]["uri"].as_str()?);
        (part <= 1).then_some(number)
    })
    .expect("a segment that just started");
    let growing_url = server.url(&format!("{live}/source/{producing}.m4s"));
    let agent: ureq::Agent = ureq::Agent::config_builder()
        .http_status_as_error(false)
        .timeout_global(Some(Duration::from_secs(20)))
        .build()
        .into();
    let mut response = agent
        .get(&growing_url)
        .call()
        .expect("GET the growing segment");
    assert_eq!(
        response.status().as_u16(),
        200,
        "segment {producing} while produced"
    );
    let mut reader = response.body_mut().as_reader();
    let mut first = [0u8; 8];
    std::io::Read::read_exact(&mut reader, &mut first).expect("a first chunk");
    assert_eq!(&first[4..], b"styp");
    let listed_then = listed(&server, &live, "source");
    assert!(
        !listed_then.contains(&producing),
        "the first chunk of {producing} came before the segment was complete ({listed_then:?})"
    );
    let mut rest = Vec::new();
    std::io::Read::read_to_end(&mut reader, &mut rest).expect("the whole segment");
    let streamed = [&first[..], &rest].concat();
    let stored = wait_for(Duration::from_secs(10), || {
        listed(&server, &live, "source")
            .contains(&producing)
            .then(|| server.get(&format!("{live}/source/{producing}.m4s")).1)
    })
    .expect("the segment is listed");
    assert!(streamed == stored, "the streamed segment is the stored one");

    assert!(ffmpeg.wait().expect("ffmpeg").success(), "ffmpeg failed");
    wait_for_end(&server, &live, &["source", "audio"]);
    let ended = parse_ll(&server.get_text(&video).expect("ended playlist"));
    assert_eq!(ended["ended"], true);
}

/// The composition offsets of every sample of a track segment (all its chunks).
fn composition_offsets(bytes: &[u8]) -> Vec<i64> {
    let mut cur = Cursor::new(bytes);
    let mut offsets = Vec::new();
    while (cur.position() as usize) < bytes.len() {
        if let Any::Moof(moof) = Any::decode(&mut cur).expect("a box") {
            offsets.extend(
                moof.traf[0].trun[0]
                    .samples
                    .iter()
                    .map(|s| s.cts.unwrap_or(0)),
            );
        }
    }
    offsets
}

#[test]
fn the_low_latency_ladder_encodes_without_b_frames_and_every_rung_has_parts() {
    let server = Server::start();
    let stream = server.create_stream("lowdelay", "low-latency");
    let live = format!("live/{}", stream.playback_id);
    let mut ffmpeg = publish_sized(&server.rtmp_url(&stream.key), 8, "1280x720");
    // while live, every rung's low-latency playlist lists parts, and they answer
    for rung in ["720p", "360p"] {
        let v = wait_for(Duration::from_secs(40), || {
            let v = parse_ll(&server.get_text(&format!("{live}/{rung}/index.m3u8"))?);
            let parts = items(&v["segments"])
                .iter()
                .flat_map(|s| items(&s["parts"]))
                .chain(items(&v["open_parts"]))
                .count();
            (parts >= 4).then_some(v)
        })
        .unwrap_or_else(|| panic!("{rung} lists no parts:\n{}", server.log()));
        let part = items(&v["open_parts"])
            .iter()
            .chain(
                items(&v["segments"])
                    .iter()
                    .flat_map(|s| items(&s["parts"])),
            )
            .next()
            .and_then(|p| p["uri"].as_str())
            .expect("a part")
            .to_string();
        assert_eq!(
            server.get(&format!("{live}/{rung}/{part}")).0,
            200,
            "{rung}/{part}"
        );
    }
    assert!(ffmpeg.wait().expect("ffmpeg").success(), "ffmpeg failed");
    wait_for_end(&server, &live, &["720p", "360p", "audio"]);
    for rung in ["720p", "360p"] {
        let numbers = listed(&server, &live, rung);
        assert!(numbers.len() >= 3, "{rung}: {numbers:?}");
        for n in numbers {
            let (status, bytes) = server.get(&format!("{live}/{rung}/{n}.m4s"));
            assert_eq!(status, 200);
            let offsets = composition_offsets(&bytes);
            assert!(!offsets.is_empty());
            // without B-frames every frame is presented in decode order, at its decode time
            assert!(
                offsets.iter().all(|&o| o == 0),
                "{rung}/{n}.m4s has reordered frames: {offsets:?}"
            );
        }
    }
}

/// A GET that waits for its answer on a thread: (status, body, when it was answered).
fn get_on_thread(url: String) -> std::thread::JoinHandle<(u16, Vec<u8>, std::time::Instant)> {
    std::thread::spawn(move || {
        let (status, body) = get_url(&url);
        (status, body, std::time::Instant::now())
    })
}

#[test]
fn a_second_node_answers_blocking_requests_as_quickly_as_the_owner() {
    let nodes = TwoNodes::start();
    let (owner, other) = (&nodes.owner, &nodes.other);
    let stream = owner.create_stream("two-nodes", "passthrough");
    let live = format!("live/{}", stream.playback_id);
    let video = format!("{live}/source/index.m3u8");
    let mut ffmpeg = publish(&owner.rtmp_url(&stream.key), 16);

    // the other node serves the low-latency playlist from what the owner relays
    let v = wait_for(Duration::from_secs(30), || {
        let v = parse_ll(&other.get_text(&video)?);
        (items(&v["segments"]).len() >= 3 && v["part_target"].as_f64().is_some()).then_some(v)
    })
    .unwrap_or_else(|| panic!("no LL-HLS playlist on the other node:\n{}", other.log()));
    assert_eq!(v["can_block_reload"], "YES");
    let owners = parse_ll(&owner.get_text(&video).expect("owner's playlist"));
    let (theirs, ours) = (last_of(&owners), last_of(&v));
    assert!(
        ours.0 + 1 >= theirs.0,
        "the other node is current: {ours:?} vs the owner's {theirs:?}"
    );

    // the next part, asked of both nodes at once: both answer within 50 ms of each other
    let mut gaps = Vec::new();
    for _ in 0..6 {
        let v = parse_ll(&owner.get_text(&video).expect("playlist"));
        let hint = v["preload_hint"]["uri"]
            .as_str()
            .expect("a preload hint")
            .to_string();
        let (number, part) = part_name(&hint);
        let msn = v["media_sequence"].as_u64().unwrap_or(0) + items(&v["segments"]).len() as u64;
        if number != msn {
            continue;
        }
        let query = format!("{video}?_HLS_msn={msn}&_HLS_part={part}");
        let on_owner = get_on_thread(owner.url(&query));
        let on_other = get_on_thread(other.url(&query));
        let part_on_other = get_on_thread(other.url(&format!("{live}/source/{hint}")));
        let (owner_status, _, owner_at) = on_owner.join().expect("owner");
        let (other_status, body, other_at) = on_other.join().expect("other");
        let (part_status, part_bytes, _) = part_on_other.join().expect("part");
        assert_eq!((owner_status, other_status), (200, 200));
        let blocked = String::from_utf8_lossy(&body).into_owned();
        assert!(
            blocked.contains(&format!("URI=\"{hint}\"")),
            "{hint} in\n{blocked}"
        );
        assert_eq!(part_status, 200, "the hinted part from the other node");
        assert!(
            part_bytes == owner.get(&format!("{live}/source/{hint}")).1,
            "{hint} is the same on both nodes"
        );
        gaps.push(other_at.max(owner_at) - other_at.min(owner_at));
    }
    gaps.sort();
    assert!(gaps.len() >= 3, "{gaps:?}");
    assert!(
        gaps[gaps.len() / 2] <= Duration::from_millis(50),
        "the nodes answered {gaps:?} apart"
    );

    // a DASH segment being produced streams from the other node too, and is the stored one
    let producing = wait_for(Duration::from_secs(10), || {
        let v = parse_ll(&other.get_text(&video)?);
        let (number, part) = part_name(v["preload_hint"]["uri"].as_str()?);
        (part <= 1).then_some(number)
    })
    .expect("a segment that just started");
    let (status, streamed) = other.get(&format!("{live}/source/{producing}.m4s"));
    assert_eq!(status, 200);
    let stored = wait_for(Duration::from_secs(10), || {
        listed(owner, &live, "source")
            .contains(&producing)
            .then(|| owner.get(&format!("{live}/source/{producing}.m4s")).1)
    })
    .expect("the segment is listed");
    assert!(streamed == stored, "the streamed segment is the stored one");

    // once the broadcast ends, the other node answers from the store
    assert!(ffmpeg.wait().expect("ffmpeg").success(), "ffmpeg failed");
    let ended = wait_for(Duration::from_secs(20), || {
        let v = parse_ll(&other.get_text(&video)?);
        (v["ended"] == true).then_some(v)
    });
    assert!(ended.is_some(), "the other node serves the ended playlist");
}
