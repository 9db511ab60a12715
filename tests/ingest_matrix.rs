//! One test matrix for every way in: each behaviour a publisher or an operator notices runs
//! over RTMP, RTMPS and SRT against one real server, with real ffmpeg publishers — publish and
//! play (HLS and DASH, video and audio), a wrong key refused quickly, a takeover by a second
//! publisher, a reconnect within the grace that continues the session, a stop from the API,
//! the `on_publish` webhook allowing and denying, and the `protocol` label of the metrics.
//! (HLS push, whose pusher is an HTTP client told by status codes, has the same matrix in
//! `hls_push.rs`.)
//! The broadcast core (`src/broadcast`) is written once; this shows it behaves the same for all.

mod support;

use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::Value;
use support::*;

#[derive(Debug, Clone, Copy, PartialEq)]
enum Way {
    Rtmp,
    Rtmps,
    Srt,
}

const WAYS: [Way; 3] = [Way::Rtmp, Way::Rtmps, Way::Srt];

impl Way {
    fn label(self) -> &'static str {
        match self {
            Way::Rtmp => "rtmp",
            Way::Rtmps => "rtmps",
            Way::Srt => "srt",
        }
    }

    fn url(self, server: &Server, key: &str) -> String {
        match self {
            Way::Rtmp => server.rtmp_url(key),
            Way::Rtmps => {
                let addr = server.rtmps.as_deref().expect("RTMPS is on");
                format!("rtmps://{addr}/live/{key}")
            }
            Way::Srt => server.srt_url(key),
        }
    }

    /// ffmpeg publishing `seconds` of 320x180 video and AAC audio this way.
    fn publish(self, server: &Server, key: &str, seconds: u32) -> Child {
        let format = if self == Way::Srt { "mpegts" } else { "flv" };
        publish_as(&self.url(server, key), seconds, "320x180", format)
    }
}

/// A server with RTMP, RTMPS and SRT on loopback; a silent publisher is lost after 2 s.
fn server(extra: &[(&str, &str)]) -> (Server, tempfile::TempDir) {
    let certs = tempfile::tempdir().expect("temp dir");
    let (cert, key) = self_signed(certs.path());
    let mut env = vec![
        ("STRATA__RTMPS__LISTEN", "127.0.0.1:0"),
        ("STRATA__RTMPS__CERT", cert.as_str()),
        ("STRATA__RTMPS__KEY", key.as_str()),
        ("STRATA__RTMP__IDLE_TIMEOUT", "2"),
        ("STRATA__SRT__IDLE_TIMEOUT", "2"),
    ];
    env.extend_from_slice(extra);
    let server = Server::start_with_env(&env, |_| {});
    (server, certs)
}

/// The value of one series in the server's `/metrics` (0 when absent).
fn metric(server: &Server, series: &str) -> f64 {
    let (_, body) = server.get("metrics");
    String::from_utf8_lossy(&body)
        .lines()
        .find_map(|line| line.strip_prefix(series)?.trim().parse().ok())
        .unwrap_or(0.0)
}

/// The value of the series `name` that has all of `labels` (`key="value"`), in any order.
fn labelled(server: &Server, name: &str, labels: &[String]) -> f64 {
    let (_, body) = server.get("metrics");
    String::from_utf8_lossy(&body)
        .lines()
        .filter(|line| line.starts_with(&format!("{name}{{")))
        .find(|line| labels.iter().all(|l| line.contains(l.as_str())))
        .and_then(|line| line.rsplit(' ').next()?.parse().ok())
        .unwrap_or(0.0)
}

fn publishes(server: &Server, way: Way, result: &str) -> f64 {
    metric(
        server,
        &format!(
            "strata_publishes_total{{protocol=\"{}\",result=\"{result}\"}}",
            way.label()
        ),
    )
}

fn wait_exit(child: &mut Child, timeout: Duration) -> Option<std::process::ExitStatus> {
    wait_for(timeout, || child.try_wait().ok().flatten())
}

fn signal(child: &Child, signal: &str) {
    let status = Command::new("kill")
        .args([signal, &child.id().to_string()])
        .status()
        .expect("kill");
    assert!(status.success());
}

/// Both manifests of an ended broadcast decode with a video and an audio stream.
fn plays_with_video_and_audio(server: &Server, playback_id: &str, what: &str) {
    let live = format!("live/{playback_id}");
    let ended = wait_for(Duration::from_secs(30), || {
        media_playlist(server, &live)?
            .contains("#EXT-X-ENDLIST")
            .then_some(())
    });
    assert!(
        ended.is_some(),
        "{what}: the broadcast ended with its publisher"
    );
    for manifest in ["master.m3u8", "manifest.mpd"] {
        let probe = ffprobe(&["-show_streams", &server.url(&format!("{live}/{manifest}"))]);
        let kinds: Vec<&str> = probe["streams"]
            .as_array()
            .map(|s| s.iter().filter_map(|s| s["codec_type"].as_str()).collect())
            .unwrap_or_default();
        assert!(
            kinds.contains(&"video") && kinds.contains(&"audio"),
            "{what}: {manifest} decodes with video and audio (got {kinds:?})"
        );
    }
}

fn publish_and_play(ladder: &str) {
    let (server, _certs) = server(&[]);
    for way in WAYS {
        let stream = server.create_stream(&format!("{}-{ladder}", way.label()), ladder);
        let mut ffmpeg = way.publish(&server, &stream.key, 6);
        let status = wait_exit(&mut ffmpeg, Duration::from_secs(60)).expect("ffmpeg finishes");
        assert!(status.success(), "{way:?}: ffmpeg published to the end");
        plays_with_video_and_audio(&server, &stream.playback_id, &format!("{way:?} {ladder}"));
        assert!(
            publishes(&server, way, "accepted") >= 1.0,
            "{way:?}: counted"
        );
        // 6 s at 30 fps, counted under the protocol that carried them
        let video_frames = labelled(
            &server,
            "strata_ingest_frames_total",
            &[
                format!("stream=\"{}\"", stream.playback_id),
                format!("protocol=\"{}\"", way.label()),
                "kind=\"video\"".into(),
            ],
        );
        assert!(
            (150.0..=185.0).contains(&video_frames),
            "{way:?}: {video_frames} video frames counted"
        );
    }
}

#[test]
fn every_protocol_publishes_and_plays_on_passthrough() {
    publish_and_play("passthrough");
}

#[test]
fn every_protocol_publishes_and_plays_on_a_ladder() {
    publish_and_play("default");
}

#[test]
fn gstreamer_srtsink_publishes_and_plays() {
    let (server, _certs) = server(&[]);
    for ladder in ["passthrough", "default"] {
        let stream = server.create_stream(&format!("gst-{ladder}"), ladder);
        let url = server.srt_url(&stream.key);
        let (host_port, stream_id) = url
            .strip_prefix("srt://")
            .and_then(|u| u.split_once("?streamid="))
            .expect("srt url");
        let seconds = 6;
        let pipeline = format!(
            "mpegtsmux name=mux alignment=7 ! srtsink uri=srt://{host_port} streamid={stream_id} \
             videotestsrc is-live=true num-buffers={} ! video/x-raw,width=320,height=180,framerate=30/1 \
             ! x264enc key-int-max=60 tune=zerolatency speed-preset=ultrafast bitrate=500 ! h264parse ! mux. \
             audiotestsrc is-live=true samplesperbuffer=1024 num-buffers={} ! audio/x-raw,rate=48000,channels=2 \
             ! audioconvert ! voaacenc ! aacparse ! mux.",
            seconds * 30,
            seconds * 48_000 / 1024
        );
        let mut gst = Command::new("gst-launch-1.0")
            .arg("-q")
            .args(pipeline.split_whitespace())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("gst-launch-1.0 (make test installs GStreamer)");
        let status = wait_exit(&mut gst, Duration::from_secs(60)).expect("gst-launch finishes");
        assert!(
            status.success(),
            "GStreamer srtsink published to the end ({ladder})"
        );
        plays_with_video_and_audio(&server, &stream.playback_id, &format!("srtsink {ladder}"));
    }
}

#[test]
fn a_wrong_key_is_refused_at_once_over_every_protocol() {
    let (server, _certs) = server(&[]);
    for way in WAYS {
        let started = Instant::now();
        let mut ffmpeg = way.publish(&server, "sk_not_a_key", 10);
        let status = wait_exit(&mut ffmpeg, Duration::from_secs(10)).expect("ffmpeg gives up");
        let took = started.elapsed();
        assert!(!status.success(), "{way:?}: a wrong key does not publish");
        // ffmpeg's own start-up is part of this; the server's refusal is immediate
        assert!(
            took < Duration::from_secs(4),
            "{way:?}: refused after {took:?}"
        );
        let counted = wait_for(Duration::from_secs(5), || {
            (publishes(&server, way, "bad_key") >= 1.0).then_some(())
        });
        assert!(counted.is_some(), "{way:?}: counted as bad_key");
    }
    assert!(
        session_list(&server, "/api/v1/sessions").is_empty(),
        "nothing went live"
    );
}

#[test]
fn a_second_publisher_takes_over_over_every_protocol() {
    let (server, _certs) = server(&[]);
    for (first, second) in [
        (Way::Rtmp, Way::Srt),
        (Way::Srt, Way::Rtmps),
        (Way::Rtmps, Way::Rtmp),
    ] {
        let stream = server.create_stream(&format!("takeover-{}", first.label()), "passthrough");
        let mut old = first.publish(&server, &stream.key, 60);
        let live = wait_for(Duration::from_secs(30), || {
            (segments_listed(&server, &stream.playback_id) >= 1).then_some(())
        });
        assert!(live.is_some(), "{first:?}: live");
        let old_session =
            live_session(&server, &stream.playback_id).expect("listed")["session_id"].clone();
        let mut new = second.publish(&server, &stream.key, 60);
        let replaced = wait_exit(&mut old, Duration::from_secs(20));
        assert!(
            replaced.is_some(),
            "{second:?} took over from {first:?}: the old publisher is closed"
        );
        let taken = wait_for(Duration::from_secs(30), || {
            let session = live_session(&server, &stream.playback_id)?;
            (session["session_id"] != old_session && session["state"] == "live").then_some(())
        });
        assert!(taken.is_some(), "{second:?}: a new session is live");
        assert!(
            new.try_wait().ok().flatten().is_none(),
            "{second:?}: still publishing"
        );
        let _ = new.kill();
        let _ = new.wait();
    }
}

#[test]
fn a_publisher_back_within_the_grace_continues_over_every_protocol() {
    let (server, _certs) = server(&[("STRATA__RTMP__RECONNECT_GRACE", "20")]);
    for (first, second) in [
        (Way::Rtmp, Way::Srt),
        (Way::Srt, Way::Srt),
        (Way::Rtmps, Way::Rtmps),
    ] {
        let stream = server.create_stream(&format!("resume-{}", first.label()), "passthrough");
        let mut lost = first.publish(&server, &stream.key, 60);
        let live = wait_for(Duration::from_secs(30), || {
            (segments_listed(&server, &stream.playback_id) >= 2).then_some(())
        });
        assert!(live.is_some(), "{first:?}: live");
        let listed = live_session(&server, &stream.playback_id).expect("listed");
        let (session, stream_id) = (listed["session_id"].clone(), listed["stream_id"].clone());
        // frozen: the connection stays open and goes silent, like a network drop
        signal(&lost, "-STOP");
        let parked = wait_for(Duration::from_secs(20), || {
            (live_session(&server, &stream.playback_id)?["state"] == "reconnecting").then_some(())
        });
        assert!(
            parked.is_some(),
            "{first:?}: the session waits for its publisher"
        );
        let _ = lost.kill();
        let _ = lost.wait();
        let before = segments_listed(&server, &stream.playback_id);
        let mut back = second.publish(&server, &stream.key, 6);
        let status = wait_exit(&mut back, Duration::from_secs(60)).expect("ffmpeg finishes");
        assert!(status.success(), "{second:?}: published to the end");
        let ended = wait_for(Duration::from_secs(30), || {
            let media = media_playlist(&server, &format!("live/{}", stream.playback_id))?;
            media.contains("#EXT-X-ENDLIST").then_some(media)
        })
        .expect("the broadcast ends with the second publisher");
        assert!(
            ended.matches("#EXTINF").count() > before,
            "{first:?} then {second:?}: the same playlist goes on"
        );
        let all = session_list(&server, "/api/v1/sessions?state=all");
        let of_stream: Vec<&Value> = all.iter().filter(|s| s["stream_id"] == stream_id).collect();
        assert_eq!(
            of_stream.len(),
            1,
            "{first:?} then {second:?}: one session, continued"
        );
        assert_eq!(of_stream[0]["id"], session);
    }
}

#[test]
fn a_stop_from_the_api_ends_every_protocol() {
    let (server, _certs) = server(&[]);
    for way in WAYS {
        let stream = server.create_stream(&format!("stop-{}", way.label()), "passthrough");
        let mut ffmpeg = way.publish(&server, &stream.key, 60);
        let session = wait_for(Duration::from_secs(30), || {
            let s = live_session(&server, &stream.playback_id)?;
            (segments_listed(&server, &stream.playback_id) >= 1)
                .then(|| s["session_id"].as_str().map(str::to_string))
                .flatten()
        })
        .expect("live");
        let (status, body) = api(
            &server,
            "DELETE",
            &format!("/api/v1/sessions/{session}"),
            Some(&server.admin_token),
            None,
        );
        assert!(
            (200..300).contains(&status),
            "{way:?}: stop answered {status} {body}"
        );
        assert!(
            wait_exit(&mut ffmpeg, Duration::from_secs(20)).is_some(),
            "{way:?}: the publisher is disconnected"
        );
        let ended = wait_for(Duration::from_secs(20), || {
            media_playlist(&server, &format!("live/{}", stream.playback_id))?
                .contains("#EXT-X-ENDLIST")
                .then_some(())
        });
        assert!(ended.is_some(), "{way:?}: the playlist ends");
    }
}

fn webhook(allow: bool) {
    let (base, hooks) = hook_receiver();
    let url = format!("{base}/{}", if allow { "allow" } else { "deny" });
    let (server, _certs) = server(&[("STRATA__WEBHOOKS__ON_PUBLISH", url.as_str())]);
    for way in WAYS {
        let stream = server.create_stream(&format!("hook-{}", way.label()), "passthrough");
        let mut ffmpeg = way.publish(&server, &stream.key, 4);
        let (_, body) = hooks
            .recv_timeout(Duration::from_secs(20))
            .expect("on_publish is called");
        assert_eq!(
            body["protocol"],
            way.label(),
            "{way:?}: the hook is told how"
        );
        assert_eq!(body["stream"]["playback_id"], stream.playback_id.as_str());
        assert!(
            !body.to_string().contains(&stream.key),
            "the hook never sees the key"
        );
        let status = wait_exit(&mut ffmpeg, Duration::from_secs(30)).expect("ffmpeg finishes");
        if allow {
            assert!(status.success(), "{way:?}: allowed, published to the end");
            assert!(publishes(&server, way, "accepted") >= 1.0);
        } else {
            assert!(!status.success(), "{way:?}: denied, refused");
            assert!(
                publishes(&server, way, "hook_refused") >= 1.0,
                "{way:?}: counted"
            );
        }
    }
}

#[test]
fn an_allowing_webhook_lets_every_protocol_publish() {
    webhook(true);
}

#[test]
fn a_denying_webhook_refuses_every_protocol() {
    webhook(false);
}

#[test]
fn with_a_passphrase_only_callers_that_know_it_publish_over_srt() {
    let passphrase = "correct horse battery";
    let (server, _certs) = server(&[("STRATA__SRT__PASSPHRASE", passphrase)]);
    let stream = server.create_stream("secret", "passthrough");
    let url = server.srt_url(&stream.key);
    for (given, publishes) in [
        (None, false),
        (Some("wrong passphrase!"), false),
        (Some(passphrase), true),
    ] {
        let target = match given {
            Some(p) => format!("{url}&passphrase={p}"),
            None => url.clone(),
        };
        let mut ffmpeg = publish_as(&target, 4, "320x180", "mpegts");
        let status = wait_exit(&mut ffmpeg, Duration::from_secs(30)).expect("ffmpeg finishes");
        assert_eq!(status.success(), publishes, "passphrase {given:?}");
    }
    plays_with_video_and_audio(&server, &stream.playback_id, "encrypted SRT");
}

/// A shutdown after SRT was used exits with status 0: the process once loaded two builds of
/// libsrt (ours and FFmpeg's), whose static destructors crashed every exit.
#[test]
fn the_server_exits_cleanly_on_sigterm_after_srt_publishing() {
    let mut server = Server::start();
    let stream = server.create_stream("bye", "passthrough");
    let live = format!("live/{}", stream.playback_id);
    let mut ffmpeg = publish_as(&server.srt_url(&stream.key), 3, "320x180", "mpegts");
    let listed = wait_for(Duration::from_secs(20), || {
        server
            .get_text(&format!("{live}/source/index.m3u8"))
            .filter(|p| support::last_segment_number(p).is_some())
    });
    assert!(listed.is_some(), "SRT publishes:\n{}", server.log());
    let _ = ffmpeg.wait();
    let status = server.terminate().expect("the server exits within 30 s");
    assert!(
        status.success(),
        "exit status {status:?}:\n{}",
        server.log()
    );
}
