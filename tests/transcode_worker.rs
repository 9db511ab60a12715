//! Transcoding in a worker process per broadcast: a worker that dies (SIGKILL, SIGABRT) or
//! cannot run under its memory limit ends its own broadcast with a log line and a metric, while
//! the server and every other broadcast go on. The real ffmpeg CLI publishes over RTMP; the
//! workers are found among the server's child processes in /proc.
//!
//! The tests share the machine's cores with the publishers, so they run one at a time, on a
//! one-rung 90p ladder.

mod support;

use std::process::Child;
use std::sync::Mutex;
use std::time::Duration;

use support::*;

static ONE_AT_A_TIME: Mutex<()> = Mutex::new(());

const TINY_LADDER: &str =
    "[[rungs]]\nname = \"low\"\nheight = 90\nbitrate = \"200k\"\npreset = \"ultrafast\"\n";

fn tiny_ladder_server(env: &[(&str, &str)]) -> Server {
    Server::start_with_env(env, |dir| {
        std::fs::create_dir_all(dir.join("ladders")).expect("ladders dir");
        std::fs::write(dir.join("ladders/tiny.toml"), TINY_LADDER).expect("write ladder");
    })
}

/// The server's `strata worker` children: (pid, the playback id on their command line).
fn workers(server: &Server) -> Vec<(i32, String)> {
    let mut found = Vec::new();
    let Ok(entries) = std::fs::read_dir("/proc") else {
        return found;
    };
    for entry in entries.flatten() {
        let Ok(pid) = entry.file_name().to_string_lossy().parse::<i32>() else {
            continue;
        };
        let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
        // `pid (comm) state ppid …`; comm may hold spaces, so read after the last ')'
        let ppid = stat
            .rsplit_once(')')
            .and_then(|(_, rest)| rest.split_whitespace().nth(1))
            .and_then(|p| p.parse::<u32>().ok());
        if ppid != Some(server.pid()) {
            continue;
        }
        let cmdline = std::fs::read(format!("/proc/{pid}/cmdline")).unwrap_or_default();
        let args: Vec<String> = cmdline
            .split(|b| *b == 0)
            .map(|a| String::from_utf8_lossy(a).into_owned())
            .collect();
        if let Some(i) = args.iter().position(|a| a == "worker") {
            found.push((pid, args.get(i + 1).cloned().unwrap_or_default()));
        }
    }
    found
}

/// The sum of a counter's series whose labels contain `labels` (`""`: every series).
fn counter(server: &Server, name: &str, labels: &str) -> f64 {
    let (_, body) = server.get("metrics");
    String::from_utf8_lossy(&body)
        .lines()
        .filter(|l| l.starts_with(&format!("{name}{{")) && l.contains(labels))
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .sum()
}

/// The newest segment number in a rendition's live playlist.
fn newest_segment(server: &Server, playback_id: &str, rendition: &str) -> Option<u64> {
    let playlist = server.get_text(&format!("live/{playback_id}/{rendition}/index.m3u8"))?;
    last_segment_number(&playlist)
}

/// Waits until `rendition` of `playback_id` lists a segment newer than any before the call
/// and one more after that: the broadcast is still publishing.
fn keeps_publishing(server: &Server, playback_id: &str, rendition: &str) {
    let now = newest_segment(server, playback_id, rendition).unwrap_or(0);
    let newer = wait_for(Duration::from_secs(30), || {
        newest_segment(server, playback_id, rendition).filter(|n| *n >= now + 2)
    });
    assert!(
        newer.is_some(),
        "{playback_id}/{rendition} stopped publishing at segment {now}:\n{}",
        server.log()
    );
}

/// The directory's state of a stream: `live`, `reconnecting` or `offline`.
fn state(server: &Server, playback_id: &str) -> String {
    let text = server
        .get_text(&format!("api/public/streams/{playback_id}"))
        .unwrap_or_default();
    serde_json::from_str::<serde_json::Value>(&text)
        .ok()
        .and_then(|v| v["state"].as_str().map(str::to_string))
        .unwrap_or_default()
}

fn stop(mut publisher: Child) {
    let _ = publisher.kill();
    let _ = publisher.wait();
}

/// Two ladder broadcasts live; `signal` kills the first one's worker.
fn a_killed_worker_ends_only_its_broadcast(signal: i32, name: &str) {
    let _one = ONE_AT_A_TIME.lock().unwrap_or_else(|e| e.into_inner());
    let server = tiny_ladder_server(&[]);
    let doomed = server.create_stream("doomed", "tiny");
    let other = server.create_stream("other", "tiny");
    let mut doomed_publisher = publish_sized(&server.rtmp_url(&doomed.key), 120, "320x180");
    let other_publisher = publish_sized(&server.rtmp_url(&other.key), 120, "320x180");
    for stream in [&doomed, &other] {
        let publishing = wait_for(Duration::from_secs(40), || {
            newest_segment(&server, &stream.playback_id, "low").filter(|n| *n >= 1)
        });
        assert!(publishing.is_some(), "no segments:\n{}", server.log());
    }
    let found = workers(&server);
    assert_eq!(found.len(), 2, "one worker per broadcast: {found:?}");
    let (pid, _) = found
        .iter()
        .find(|(_, id)| *id == doomed.playback_id)
        .cloned()
        .expect("the doomed broadcast's worker");
    // SAFETY: signals a process this test found as the server's worker child.
    assert_eq!(unsafe { libc::kill(pid, signal) }, 0);

    // the killed worker's broadcast ends: its playlist is finished, the directory says offline
    let ended = wait_for(Duration::from_secs(30), || {
        server
            .get_text(&format!("live/{}/low/index.m3u8", doomed.playback_id))
            .filter(|t| t.contains("#EXT-X-ENDLIST"))
            .filter(|_| state(&server, &doomed.playback_id) == "offline")
    });
    assert!(
        ended.is_some(),
        "the broadcast did not end:\n{}",
        server.log()
    );
    // and its publisher is disconnected long before its 120 s are sent
    let gone = wait_for(Duration::from_secs(30), || {
        doomed_publisher.try_wait().ok().flatten()
    });
    assert!(
        gone.is_some(),
        "the publisher of the ended broadcast is still connected"
    );
    // the other broadcast goes on, with its worker
    keeps_publishing(&server, &other.playback_id, "low");
    assert_eq!(state(&server, &other.playback_id), "live");
    let left = workers(&server);
    assert_eq!(left.len(), 1, "{left:?}");
    assert_eq!(left[0].1, other.playback_id);

    assert_eq!(
        counter(
            &server,
            "strata_transcode_worker_failures_total",
            "reason=\"signal\""
        ),
        1.0
    );
    assert_eq!(
        counter(&server, "strata_transcode_worker_failures_total", ""),
        1.0
    );
    let log = server.log();
    let expected = format!(
        "the transcoding worker of this broadcast was killed by {name}; ending this broadcast, \
         other broadcasts are unaffected"
    );
    assert!(
        log.lines()
            .any(|l| l.contains(&expected) && l.contains(&doomed.playback_id)),
        "no line naming {} says `{expected}`:\n{log}",
        doomed.playback_id
    );
    stop(other_publisher);
    // a normal end counts nothing and leaves no worker behind
    let reaped = wait_for(Duration::from_secs(30), || {
        workers(&server).is_empty().then_some(())
    });
    assert!(reaped.is_some(), "workers left: {:?}", workers(&server));
    assert_eq!(
        counter(&server, "strata_transcode_worker_failures_total", ""),
        1.0
    );
}

#[test]
fn a_worker_killed_by_sigkill_ends_only_its_broadcast() {
    a_killed_worker_ends_only_its_broadcast(libc::SIGKILL, "SIGKILL");
}

#[test]
fn a_worker_that_aborts_ends_only_its_broadcast() {
    a_killed_worker_ends_only_its_broadcast(libc::SIGABRT, "SIGABRT");
}

#[test]
fn a_worker_over_its_memory_limit_fails_cleanly_and_passthrough_goes_on() {
    let _one = ONE_AT_A_TIME.lock().unwrap_or_else(|e| e.into_inner());
    let mut server = tiny_ladder_server(&[("STRATA__TRANSCODE__WORKER_MEMORY_MB", "40")]);
    let plain = server.create_stream("plain", "passthrough");
    let ladder = server.create_stream("ladder", "tiny");
    let plain_publisher = publish_sized(&server.rtmp_url(&plain.key), 120, "320x180");
    let publishing = wait_for(Duration::from_secs(40), || {
        newest_segment(&server, &plain.playback_id, "source").filter(|n| *n >= 1)
    });
    assert!(publishing.is_some(), "no segments:\n{}", server.log());
    let mut ladder_publisher = publish_sized(&server.rtmp_url(&ladder.key), 120, "320x180");

    let failed = wait_for(Duration::from_secs(30), || {
        (counter(&server, "strata_transcode_worker_failures_total", "") >= 1.0).then_some(())
    });
    assert!(
        failed.is_some(),
        "no worker failure counted:\n{}",
        server.log()
    );
    let log = server.log();
    assert!(
        log.lines().any(|l| l.contains(&ladder.playback_id)
            && l.contains("transcoding worker of this broadcast")
            && l.contains("other broadcasts are unaffected")),
        "no line for {} says what happened:\n{log}",
        ladder.playback_id
    );
    // the ladder's publisher is let go; the server and the passthrough broadcast go on
    let gone = wait_for(Duration::from_secs(30), || {
        ladder_publisher.try_wait().ok().flatten()
    });
    assert!(
        gone.is_some(),
        "the failed broadcast's publisher is still connected"
    );
    assert_ne!(state(&server, &ladder.playback_id), "live");
    assert!(server.is_running());
    keeps_publishing(&server, &plain.playback_id, "source");
    assert!(workers(&server).is_empty(), "{:?}", workers(&server));
    stop(plain_publisher);
}

#[test]
fn with_thread_isolation_the_ladder_runs_in_the_server_without_a_worker() {
    let _one = ONE_AT_A_TIME.lock().unwrap_or_else(|e| e.into_inner());
    let server = tiny_ladder_server(&[("STRATA__TRANSCODE__ISOLATION", "thread")]);
    let stream = server.create_stream("threads", "tiny");
    let publisher = publish_sized(&server.rtmp_url(&stream.key), 120, "320x180");
    keeps_publishing(&server, &stream.playback_id, "low");
    assert!(workers(&server).is_empty(), "{:?}", workers(&server));
    stop(publisher);
}
