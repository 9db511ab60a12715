//! A publisher lost without unpublishing (ffmpeg frozen, as a network drop looks to the
//! server: the connection stays open and goes silent until `rtmp.idle_timeout`): its session
//! turns `reconnecting`; a publish of the same stream within the grace continues the same
//! session and recording, whose segments stay numbered in order and whose media plays across
//! the join; without a return, the broadcast ends when the grace runs out. A publisher that
//! closes its connection without unpublishing (GStreamer's `rtmp2sink` at end of stream) ends
//! its broadcast at once, with every frame it sent published.

mod support;

use std::time::{Duration, Instant};

use serde_json::Value;
use support::*;

fn sessions(server: &Server) -> Vec<Value> {
    session_list(server, "/api/v1/sessions?state=all")
}

fn live_sessions(server: &Server) -> Vec<Value> {
    session_list(server, "/api/v1/sessions")
}

/// The seconds a media playlist lists (0 when it does not parse).
fn listed_seconds(playlist: &str) -> f64 {
    m3u8_rs::parse_media_playlist_res(playlist.as_bytes())
        .map(|p| p.segments.iter().map(|s| f64::from(s.duration)).sum())
        .unwrap_or(0.0)
}

/// Waits until the live playlist lists at least `n` segments.
fn wait_segments(server: &Server, playback_id: &str, n: u64) {
    let root = format!("live/{playback_id}");
    let found = wait_for(Duration::from_secs(20), || {
        let media = media_playlist(server, &root)?;
        (media.matches("#EXTINF").count() as u64 >= n).then_some(())
    });
    assert!(found.is_some(), "{n} segments never appeared");
}

/// Freezes the publisher (SIGSTOP: its connection stays open and goes silent, like a network
/// drop), waits for the session to say reconnecting, then kills it (SIGKILL).
fn lose_publisher(server: &Server, publisher: &mut std::process::Child) -> String {
    let stopped = std::process::Command::new("kill")
        .args(["-STOP", &publisher.id().to_string()])
        .status()
        .expect("kill -STOP");
    assert!(stopped.success());
    let session = wait_for(Duration::from_secs(15), || {
        live_sessions(server)
            .into_iter()
            .find(|s| s["state"] == "reconnecting")
            .and_then(|s| s["session_id"].as_str().map(str::to_string))
    })
    .expect("the session turns reconnecting");
    publisher.kill().expect("kill ffmpeg");
    let _ = publisher.wait();
    session
}

/// A silent publisher is lost after 2 s.
const IDLE: (&str, &str) = ("STRATA__RTMP__IDLE_TIMEOUT", "2");

#[test]
fn a_publisher_back_within_the_grace_continues_its_session_and_recording() {
    let server = Server::start_with_env(&[("STRATA__RTMP__RECONNECT_GRACE", "8"), IDLE], |_| {});
    let stream = server.create_stream("flaky", "passthrough");
    let mut first = publish(&server.rtmp_url(&stream.key), 30);
    wait_segments(&server, &stream.playback_id, 2);
    let session = lose_publisher(&server, &mut first);
    let stored = sessions(&server);
    assert_eq!(stored[0]["state"], "reconnecting", "{stored:?}");

    let mut second = publish(&server.rtmp_url(&stream.key), 4);
    let resumed = wait_for(Duration::from_secs(5), || {
        live_sessions(&server)
            .into_iter()
            .find(|s| s["state"] == "live")
    })
    .expect("the session is live again");
    assert_eq!(resumed["session_id"].as_str(), Some(session.as_str()));
    assert!(second.wait().expect("ffmpeg").success());

    let ended = wait_for(Duration::from_secs(10), || {
        let all = sessions(&server);
        (all.first()?["state"] == "ended").then_some(all)
    })
    .expect("the broadcast ends when the publisher unpublishes");
    assert_eq!(
        ended.len(),
        1,
        "one session across the reconnect: {ended:?}"
    );
    assert_eq!(ended[0]["id"].as_str(), Some(session.as_str()));

    // the recording spans both connections and decodes across the join
    let vod = server.url(&format!("vod/{session}/master.m3u8"));
    let probed = ffprobe(&["-show_format", &vod]);
    let duration: f64 = probed["format"]["duration"]
        .as_str()
        .and_then(|d| d.parse().ok())
        .unwrap_or(0.0);
    assert!(
        duration > 4.0 + 3.5,
        "recording of {duration} s lacks the first connection"
    );
    let media = media_playlist(&server, &format!("vod/{session}")).expect("vod playlist");
    let playlist = m3u8_rs::parse_media_playlist_res(media.as_bytes()).expect("playlist");
    let sum: f64 = playlist
        .segments
        .iter()
        .map(|s| f64::from(s.duration))
        .sum();
    assert!((sum - duration).abs() < 0.5, "{sum} vs {duration}");
    let numbers: Vec<u64> = playlist
        .segments
        .iter()
        .filter_map(|s| s.uri.rsplit('/').next()?.strip_suffix(".m4s")?.parse().ok())
        .collect();
    assert_eq!(numbers.len(), playlist.segments.len());
    assert!(
        numbers.windows(2).all(|w| w[1] == w[0] + 1),
        "segment numbers {numbers:?}"
    );
    let frames = ffprobe(&[
        "-select_streams",
        "v:0",
        "-count_frames",
        "-show_entries",
        "stream=nb_read_frames",
        &vod,
    ]);
    let decoded: f64 = frames["streams"][0]["nb_read_frames"]
        .as_str()
        .and_then(|n| n.parse().ok())
        .unwrap_or(0.0);
    assert!(
        (decoded / 30.0 - duration).abs() < 0.5,
        "{decoded} frames decoded for {duration} s"
    );
    assert!(server.log().contains("publisher reconnected"));
}

#[test]
fn a_publisher_that_does_not_return_ends_the_broadcast_after_the_grace() {
    let server = Server::start_with_env(&[("STRATA__RTMP__RECONNECT_GRACE", "2"), IDLE], |_| {});
    let stream = server.create_stream("gone", "passthrough");
    let mut publisher = publish(&server.rtmp_url(&stream.key), 30);
    wait_segments(&server, &stream.playback_id, 1);
    lose_publisher(&server, &mut publisher);
    let lost = Instant::now();
    wait_for(Duration::from_secs(10), || {
        (sessions(&server).first()?["state"] == "ended").then_some(())
    })
    .expect("the broadcast ends after the grace");
    let waited = lost.elapsed();
    assert!(
        waited >= Duration::from_millis(1000) && waited < Duration::from_secs(5),
        "ended {waited:?} after the loss was seen"
    );
    let playlist =
        media_playlist(&server, &format!("live/{}", stream.playback_id)).expect("live playlist");
    assert!(playlist.contains("#EXT-X-ENDLIST"), "{playlist}");
}

/// GStreamer's `rtmp2sink` publishing `seconds` of 320x240 test video and AAC audio; at the end
/// of the stream it closes the connection without FCUnpublish or deleteStream.
fn gstreamer_publish(url: &str, seconds: u32) -> std::process::Child {
    let video = format!(
        "videotestsrc is-live=true num-buffers={} ! video/x-raw,width=320,height=240,framerate=30/1 \
         ! x264enc key-int-max=60 tune=zerolatency speed-preset=ultrafast bitrate=500 ! h264parse ! mux.",
        seconds * 30
    );
    let audio = format!(
        "audiotestsrc is-live=true samplesperbuffer=1024 num-buffers={} ! audio/x-raw,rate=44100,channels=2 \
         ! audioconvert ! voaacenc ! aacparse ! mux.",
        seconds * 44_100 / 1024
    );
    let pipeline =
        format!("flvmux name=mux streamable=true ! rtmp2sink location={url} {video} {audio}");
    std::process::Command::new("gst-launch-1.0")
        .arg("-q")
        .args(pipeline.split_whitespace())
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("gst-launch-1.0 (make test installs GStreamer)")
}

/// Decode times of every packet of `url`'s first stream, in seconds.
fn decode_times(url: &str) -> Vec<f64> {
    let probed = ffprobe(&[
        "-show_entries",
        "packet=dts_time",
        "-select_streams",
        "0",
        url,
    ]);
    probed["packets"]
        .as_array()
        .map(|packets| {
            packets
                .iter()
                .filter_map(|p| p["dts_time"].as_str()?.parse().ok())
                .collect()
        })
        .unwrap_or_default()
}

/// Every rendition playlist `master` names (relative to `root`), video and audio.
fn renditions(server: &Server, root: &str) -> Vec<String> {
    let master = server
        .get_text(&format!("{root}/master.m3u8"))
        .expect("master playlist");
    let mut uris: Vec<String> = master
        .lines()
        .filter(|l| l.ends_with(".m3u8") && !l.starts_with('#'))
        .map(str::to_string)
        .collect();
    uris.extend(master.lines().filter_map(|l| {
        let start = l.find("URI=\"")? + 5;
        let end = l[start..].find('"')?;
        Some(l[start..start + end].to_string())
    }));
    uris.into_iter().map(|u| format!("{root}/{u}")).collect()
}

#[test]
fn a_publisher_that_closes_without_unpublishing_ends_at_once_and_the_next_starts_cleanly() {
    let server = Server::start();
    let stream = server.create_stream("gst", "low-cpu");
    let live = format!("live/{}", stream.playback_id);
    let mut gst = gstreamer_publish(&server.rtmp_url(&stream.key), 6);
    let status = gst.wait().expect("gst-launch");
    let stopped = Instant::now();
    assert!(status.success(), "GStreamer failed:\n{}", server.log());
    // Every frame GStreamer sent is published as soon as it has gone: the broadcast ends.
    let ended = wait_for(Duration::from_secs(10), || {
        let media = media_playlist(&server, &live)?;
        media.contains("#EXT-X-ENDLIST").then_some(media)
    })
    .expect("the broadcast ends when GStreamer closes");
    let waited = stopped.elapsed();
    // the database learns of the end right after the manifests
    let first_session = wait_for(Duration::from_secs(5), || {
        let first = sessions(&server).first()?.clone();
        (first["state"] == "ended").then(|| first["id"].as_str().map(str::to_string))?
    })
    .expect("the session is ended");
    let published = listed_seconds(&ended);
    assert!(
        published > 5.0,
        "only {published} s of GStreamer's 6 s were published"
    );
    assert!(
        waited < Duration::from_secs(3),
        "the last frames were published {waited:?} after the publisher left"
    );
    eprintln!("published {published:.2} s; ENDLIST {waited:?} after GStreamer exited");

    // ffmpeg publishes 3 s later: a new broadcast, whose numbers follow the first's.
    while stopped.elapsed() < Duration::from_secs(3) {
        std::thread::sleep(Duration::from_millis(100));
    }
    let last_of_first = last_segment_number(&ended).expect("segments");
    let mut ffmpeg = publish(&server.rtmp_url(&stream.key), 4);
    assert!(ffmpeg.wait().expect("ffmpeg").success());
    let all = wait_for(Duration::from_secs(15), || {
        let all = sessions(&server);
        (all.len() == 2 && all.iter().all(|s| s["state"] == "ended")).then_some(all)
    })
    .expect("two sessions, both ended");
    let second_session = all
        .iter()
        .filter_map(|s| s["id"].as_str())
        .find(|id| *id != first_session)
        .expect("the second session")
        .to_string();
    let second = media_playlist(&server, &live).expect("live playlist");
    let first_of_second = m3u8_rs::parse_media_playlist_res(second.as_bytes())
        .expect("playlist")
        .media_sequence;
    assert!(
        first_of_second > last_of_first,
        "segment numbers reused: {first_of_second} after {last_of_first}"
    );

    // Every rendition of both recordings decodes with strictly increasing timestamps.
    for session in [&first_session, &second_session] {
        for rendition in renditions(&server, &format!("vod/{session}")) {
            let times = decode_times(&server.url(&rendition));
            assert!(times.len() > 50, "{rendition}: {} packets", times.len());
            let backwards: Vec<_> = times.windows(2).filter(|w| w[1] <= w[0]).collect();
            assert!(backwards.is_empty(), "{rendition}: {backwards:?}");
        }
    }
    let log = server.log();
    // GStreamer repeats @setDataFrame; it is logged again only when what it says changes
    let metadata: Vec<&str> = log
        .lines()
        .filter(|l| l.contains("publisher metadata (advisory)") || l.contains("unpublished"))
        .collect();
    // the same metadata is never logged twice in a row
    let said: Vec<&str> = metadata
        .iter()
        .filter_map(|l| l.split_once(" INFO ").map(|(_, said)| said))
        .collect();
    assert!(said.windows(2).all(|w| w[0] != w[1]), "{metadata:#?}");
    assert!(said.len() <= 6, "{metadata:#?}");
}

#[test]
fn an_orderly_close_without_unpublishing_publishes_every_frame_at_once() {
    let server = Server::start();
    let stream = server.create_stream("fin", "passthrough");
    let flv = server.dir.path().join("sample.flv");
    make_flv(&flv, 5, "320x240", 48_000);
    let data = std::fs::read(&flv).expect("flv");
    let mut publisher = support::rtmp_client::ScriptedPublisher::publish(&server.rtmp, &stream.key)
        .expect("publish");
    // every tag at once (no pacing), then the socket closes: a FIN, no unpublish
    send_flv(&mut publisher, &data);
    drop(publisher);
    let closed = Instant::now();
    let live = format!("live/{}", stream.playback_id);
    let ended = wait_for(Duration::from_secs(10), || {
        let media = media_playlist(&server, &live)?;
        media.contains("#EXT-X-ENDLIST").then_some(media)
    })
    .expect("the broadcast ends when the publisher closes");
    let waited = closed.elapsed();
    assert!(
        waited < Duration::from_secs(2),
        "ended {waited:?} after the close"
    );
    let published = listed_seconds(&ended);
    assert!(
        (published - 5.0).abs() < 0.1,
        "{published} s of 5 s published"
    );
    wait_for(Duration::from_secs(5), || {
        (sessions(&server).first()?["state"] == "ended").then_some(())
    })
    .expect("the session is ended");
    assert!(server
        .log()
        .contains("publisher closed the connection without unpublishing"));
}

/// Sends every tag of `data` (an FLV file) at once, unpaced.
fn send_flv(publisher: &mut support::rtmp_client::ScriptedPublisher, data: &[u8]) {
    for (kind, ms, body) in flv_tags(data) {
        publisher.tag(kind, body, ms).expect("tag");
    }
}

#[test]
fn a_lost_publisher_s_frames_are_published_at_once_and_a_resume_continues_the_timeline() {
    lost_then_resumed("passthrough");
}

#[test]
fn a_transcoded_broadcast_flushes_its_encoders_when_the_publisher_is_lost() {
    lost_then_resumed("default");
}

/// A publisher of a stream on `ladder` sends 5 s and goes silent (a network drop), then comes
/// back with 5 s more: what it sent before the loss is listed at once, in every rendition, and
/// the recording is one contiguous timeline.
fn lost_then_resumed(ladder: &str) {
    let server = Server::start_with_env(&[("STRATA__RTMP__RECONNECT_GRACE", "30"), IDLE], |_| {});
    let stream = server.create_stream("lossy", ladder);
    let flv = server.dir.path().join("part.flv");
    make_flv(&flv, 5, "320x240", 48_000);
    let data = std::fs::read(&flv).expect("flv");
    let live = format!("live/{}", stream.playback_id);

    // 5 s sent at once, then silence with the connection open: a network drop
    let mut first = support::rtmp_client::ScriptedPublisher::publish(&server.rtmp, &stream.key)
        .expect("publish");
    send_flv(&mut first, &data);
    let session = wait_for(Duration::from_secs(15), || {
        live_sessions(&server)
            .into_iter()
            .find(|s| s["state"] == "reconnecting")
            .and_then(|s| s["session_id"].as_str().map(str::to_string))
    })
    .expect("the session turns reconnecting");
    let parked = Instant::now();
    // everything sent before the loss is listed in every rendition, without waiting for the
    // grace (audio in whole AAC frames: up to 21 ms short)
    let published = wait_for(Duration::from_secs(10), || {
        let sum = listed_seconds(&media_playlist(&server, &live)?);
        let all = renditions(&server, &live).iter().all(|rendition| {
            server
                .get_text(rendition)
                .is_some_and(|playlist| listed_seconds(&playlist) > 4.9)
        });
        (sum > 4.9 && all).then_some(sum)
    })
    .expect("the lost publisher's last frames are published during the grace");
    eprintln!(
        "{published:.2} s listed {:?} after the loss was seen",
        parked.elapsed()
    );
    assert!(
        parked.elapsed() < Duration::from_secs(2),
        "{:?}",
        parked.elapsed()
    );

    // the publisher comes back with 5 more seconds, then closes
    let mut second = support::rtmp_client::ScriptedPublisher::publish(&server.rtmp, &stream.key)
        .expect("resume");
    send_flv(&mut second, &data);
    drop(second);
    drop(first);
    wait_for(Duration::from_secs(15), || {
        (sessions(&server).first()?["state"] == "ended").then_some(())
    })
    .expect("the broadcast ends");
    let all = sessions(&server);
    assert_eq!(all.len(), 1, "one session across the loss: {all:?}");
    assert_eq!(all[0]["id"].as_str(), Some(session.as_str()));

    // the recording holds both parts, contiguous, decoding in order in every rendition
    let vod = format!("vod/{session}");
    let sum = listed_seconds(&media_playlist(&server, &vod).expect("vod playlist"));
    assert!(
        (sum - 10.0).abs() < 0.3,
        "the recording lasts {sum} s of 10 s"
    );
    for rendition in renditions(&server, &vod) {
        let times = decode_times(&server.url(&rendition));
        assert!(times.len() > 100, "{rendition}: {} packets", times.len());
        let backwards: Vec<_> = times.windows(2).filter(|w| w[1] <= w[0]).collect();
        assert!(backwards.is_empty(), "{rendition}: {backwards:?}");
        let gaps: Vec<_> = times.windows(2).filter(|w| w[1] - w[0] > 0.15).collect();
        assert!(gaps.is_empty(), "{rendition}: gaps {gaps:?}");
    }
}
