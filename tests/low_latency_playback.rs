//! Low-latency playback in real players: two nodes on one PostgreSQL and one media directory;
//! ffmpeg publishes a passthrough stream and then one on the `low-latency` transcoding ladder,
//! both to the first node. Headless Chromium
//! (`web/tests/e2e/low_latency.mjs`) opens our watch page three times at once: hls.js, dash.js
//! and Shaka Player, each in low-latency mode, on the passthrough stream through the other
//! node (which knows the live edge only from what the owner relays), then on the ladder
//! through the node that transcodes it. Each plays 60 s of media with no stall (a second or
//! more without progress, measured alike for the three players) and no fatal player error,
//! close to the live edge.
//!
//! The ladder's source is 480p, so the ladder makes its 360p rung (decode, scale, x264
//! zerolatency) and drops the 720p one: two cores carry three players, a publisher and that
//! in real time even beside other work, where a 720p rung fell behind and its parts came late.
//! `low_latency.rs` checks both rungs of the ladder.

mod support;

use std::process::Command;

use support::*;

/// Media seconds each player plays.
const PLAY_SECONDS: u32 = 60;
/// Distance to live (the median over the second half of the play) a low-latency player must
/// keep; plain HLS and DASH with 2 s segments sit 6 s and more behind.
const MAX_LATENCY_SECS: f64 = 4.0;

fn median(mut values: Vec<f64>) -> Option<f64> {
    values.sort_by(f64::total_cmp);
    values.get(values.len() / 2).copied()
}

/// What is wrong with one play: too short, a stall, a player error, too far behind live.
fn judge(r: &serde_json::Value) -> Vec<String> {
    let mut problems = Vec::new();
    let label = r["label"].as_str().unwrap_or("?");
    let played = r["played"].as_f64().unwrap_or(0.0);
    if played < f64::from(PLAY_SECONDS) {
        problems.push(format!("{label}: played only {played:.1} s"));
    }
    if r["stalls"].as_array().is_some_and(|s| !s.is_empty()) {
        problems.push(format!("{label}: stalled {}", r["stalls"]));
    }
    // A stall is measured the same way for the three players (a second or more without
    // progress, `stalls`); hls.js also reports shorter ones (from 250 ms) as a non-fatal
    // `bufferStalledError`, which dash.js and Shaka do not: non-fatal errors are shown, fatal
    // ones fail the play.
    let errors = r["errors"]
        .as_array()
        .map(Vec::as_slice)
        .unwrap_or_default();
    let (fatal, recovered): (Vec<_>, Vec<_>) = errors
        .iter()
        .partition(|e| e["fatal"].as_bool() != Some(false));
    if !fatal.is_empty() {
        problems.push(format!("{label}: fatal player errors {fatal:?}"));
    }
    if !recovered.is_empty() {
        println!("{label}: non-fatal player errors {recovered:?}");
    }
    let latencies: Vec<f64> = r["latencies"]
        .as_array()
        .map(|l| l.iter().filter_map(serde_json::Value::as_f64).collect())
        .unwrap_or_default();
    let second_half = latencies[latencies.len() / 2..].to_vec();
    match median(second_half) {
        Some(l) if l <= MAX_LATENCY_SECS => println!("{label}: {l:.2} s behind live"),
        other => problems.push(format!("{label}: behind live {other:?} s")),
    }
    problems
}

#[test]
fn hls_js_dash_js_and_shaka_play_low_latency_streams_from_both_nodes_without_stalling() {
    assert!(
        web_root().join("index.html").is_file(),
        "web/dist is not built: `make test` builds it (make web)"
    );
    let nodes = TwoNodes::start();
    let (owner, other) = (&nodes.owner, &nodes.other);
    let shots = std::path::PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join("ll-playback");
    let mut problems = Vec::new();
    // one configuration at a time: three players at once are what two cores carry beside a
    // ladder and a publisher
    for (label, ladder, size, watched_on) in [
        ("passthrough-other-node", "passthrough", "640x360", other),
        ("ladder-owner", "low-latency", "854x480", owner),
    ] {
        let stream = owner.create_stream(label, ladder);
        // encoded beforehand, so that the publisher costs nothing while the players play
        let source = nodes.shared.path().join(format!("{label}.flv"));
        encode_flv(&source, PLAY_SECONDS + 50, size);
        let mut publisher = publish_file(&owner.rtmp_url(&stream.key), &source);
        let plays: Vec<serde_json::Value> = ["hls", "dash", "shaka"]
            .iter()
            .map(|engine| {
                serde_json::json!({
                    "label": format!("{label}-{engine}"),
                    "url": watched_on.url(&format!("/watch/{}?engine={engine}", stream.playback_id)),
                })
            })
            .collect();
        let output = Command::new("node")
            .arg("tests/e2e/low_latency.mjs")
            .current_dir(concat!(env!("CARGO_MANIFEST_DIR"), "/web"))
            .env("STRATA_PLAYS", serde_json::Value::from(plays).to_string())
            .env("STRATA_PLAY_SECONDS", PLAY_SECONDS.to_string())
            .env("STRATA_SCREENSHOTS", &shots)
            .output()
            .expect("node runs (make test installs it)");
        let _ = publisher.kill();
        let _ = publisher.wait();
        let stdout = String::from_utf8_lossy(&output.stdout);
        let stderr = String::from_utf8_lossy(&output.stderr);
        // progress lines in full; each result without its per-second samples
        for line in stdout.lines() {
            match line.strip_prefix("RESULT ") {
                Some(result) => println!("RESULT {}", summarize(result)),
                None => println!("{line}"),
            }
        }
        println!("{stderr}\nscreenshots: {}", shots.display());
        let context = || {
            format!(
                "{stderr}\nowner log (end):\n{}\nother node log (end):\n{}",
                tail(&owner.log()),
                tail(&other.log())
            )
        };
        assert!(
            output.status.success(),
            "the browser run failed:\n{}",
            context()
        );
        let results: Vec<serde_json::Value> = stdout
            .lines()
            .filter_map(|l| l.strip_prefix("RESULT "))
            .filter_map(|l| serde_json::from_str(l).ok())
            .collect();
        assert_eq!(results.len(), 3, "{}", context());
        problems.extend(results.iter().flat_map(judge));
    }
    assert!(
        problems.is_empty(),
        "{problems:#?}\nowner log (end):\n{}",
        tail(&owner.log())
    );
}

/// One player's result with its latency samples reduced to their count, so that a failure's
/// message (and not thousands of numbers) is what a truncated CI log keeps.
fn summarize(result: &str) -> String {
    match serde_json::from_str::<serde_json::Value>(result) {
        Ok(mut value) => {
            let samples = value["latencies"].as_array().map_or(0, Vec::len);
            value["latencies"] = serde_json::json!(format!("{samples} samples"));
            value.to_string()
        }
        Err(_) => result.to_owned(),
    }
}

/// The last lines of a server log: where a late or failing part shows up.
fn tail(log: &str) -> String {
    let lines: Vec<&str> = log.lines().collect();
    lines[lines.len().saturating_sub(80)..].join("\n")
}
