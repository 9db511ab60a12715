//! `GET /metrics` against a real server and a real ffmpeg publisher: the text is valid
//! Prometheus exposition (parsed by the official Python client's parser); its
//! counters move while a transcoded stream is live; the live gauges (connections, broadcasts,
//! transcode speed) fall back or disappear after the broadcast ends; refused publishes are
//! counted by reason.

mod support;

use std::collections::HashMap;
use std::io::Write;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use support::*;

/// The official Python client's parser (Debian's python3-prometheus-client), which rejects
/// anything that is not valid exposition text; prints each sample as a JSON line.
const PARSER: &str = r#"
import json, sys
from prometheus_client.parser import text_string_to_metric_families
for family in text_string_to_metric_families(sys.stdin.read()):
    if family.type == "summary":
        sys.exit(family.name + " is a summary, not a histogram")
    for s in family.samples:
        print(json.dumps([s.name, s.labels, s.value]))
"#;

/// One scrape: when it was asked for, and every sample by `name{sorted label=value pairs}`.
struct Metrics {
    at: Instant,
    values: HashMap<String, f64>,
}

impl Metrics {
    fn scrape(server: &Server) -> Self {
        let at = Instant::now();
        let (status, body) = server.get("metrics");
        assert_eq!(status, 200);
        let mut parser = Command::new("/usr/bin/python3")
            .args(["-c", PARSER])
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("python3 runs (`make test` installs python3-prometheus-client)");
        parser
            .stdin
            .take()
            .expect("stdin")
            .write_all(&body)
            .expect("feed the parser");
        let out = parser.wait_with_output().expect("parser output");
        assert!(
            out.status.success(),
            "/metrics is not valid Prometheus text: {}\n{}",
            String::from_utf8_lossy(&out.stderr),
            String::from_utf8_lossy(&body)
        );
        let mut values = HashMap::new();
        for line in String::from_utf8_lossy(&out.stdout).lines() {
            let (name, labels, value): (String, HashMap<String, String>, f64) =
                serde_json::from_str(line).expect("parser line");
            let mut labels: Vec<String> = labels.iter().map(|(k, v)| format!("{k}={v}")).collect();
            labels.sort();
            values.insert(format!("{name}{{{}}}", labels.join(",")), value);
        }
        Self { at, values }
    }

    fn get(&self, key: &str) -> Option<f64> {
        self.values.get(key).copied()
    }

    fn value(&self, key: &str) -> f64 {
        self.get(key)
            .unwrap_or_else(|| panic!("no {key} among {:#?}", self.keys()))
    }

    fn keys(&self) -> Vec<&String> {
        let mut keys: Vec<&String> = self.values.keys().collect();
        keys.sort();
        keys
    }

    fn any(&self, prefix: &str) -> bool {
        self.values.keys().any(|k| k.starts_with(prefix))
    }
}

#[test]
fn counters_move_while_live_and_live_gauges_end_with_the_broadcast() {
    let server = Server::start();
    let stream = server.create_stream("metered", "low-cpu");
    let id = &stream.playback_id;
    let mut refused = publish(&server.rtmp_url("sk_not_a_key_of_this_server_at_all"), 2);
    assert!(!refused.wait().expect("ffmpeg").success());

    let mut publisher = publish(&server.rtmp_url(&stream.key), 12);
    let live = wait_for(Duration::from_secs(15), || {
        let m = Metrics::scrape(&server);
        (m.get(&format!("strata_segments_published_total{{stream={id}}}")) >= Some(1.0))
            .then_some(m)
    })
    .expect("a segment is published within 15 s");
    assert_eq!(server.get(&format!("live/{id}/master.m3u8")).0, 200);
    // Each rung reports its speed every 5 s of its work (the first report 5 s after it
    // started) and the gauges are refreshed every second, so the speed series appears about
    // 6 s into the broadcast: wait for it (and for at least 3 s of counting) rather than
    // guessing a fixed sleep.
    let speed_series = format!("strata_transcode_speed{{rendition=360p,stream={id}}}");
    let later = wait_for(Duration::from_secs(15), || {
        let m = Metrics::scrape(&server);
        (m.at - live.at >= Duration::from_secs(3) && m.get(&speed_series).is_some()).then_some(m)
    })
    .unwrap_or_else(|| panic!("no {speed_series} within 15 s of the first segment"));
    let between = (later.at - live.at).as_secs_f64();
    eprintln!("the speed series was there {between:.1} s after the first segment");

    for counter in [
        format!("strata_ingest_bytes_total{{protocol=rtmp,stream={id}}}"),
        format!("strata_ingest_frames_total{{kind=video,protocol=rtmp,stream={id}}}"),
        format!("strata_ingest_frames_total{{kind=audio,protocol=rtmp,stream={id}}}"),
        format!("strata_segments_published_total{{stream={id}}}"),
        format!("strata_published_bytes_total{{stream={id}}}"),
        format!("strata_publish_latency_seconds_count{{stream={id}}}"),
    ] {
        assert!(
            later.value(&counter) > live.value(&counter),
            "{counter} did not move while live: {} then {}",
            live.value(&counter),
            later.value(&counter)
        );
    }
    // the publisher sends 30 fps
    let frames = format!("strata_ingest_frames_total{{kind=video,protocol=rtmp,stream={id}}}");
    let moved = later.value(&frames) - live.value(&frames);
    assert!(
        (20.0..=43.0).contains(&(moved / between)),
        "{moved} video frames in {between:.1} s"
    );
    assert_eq!(later.value("strata_rtmp_connections{}"), 1.0);
    assert_eq!(later.value("strata_live_broadcasts{}"), 1.0);
    let speed = later.value(&speed_series);
    assert!(speed > 0.5, "transcode speed {speed}");
    assert_eq!(
        later.value("strata_publishes_total{protocol=rtmp,result=accepted}"),
        1.0,
        "{:#?}",
        later.keys()
    );
    assert_eq!(
        later.value("strata_publishes_total{protocol=rtmp,result=bad_key}"),
        1.0
    );
    assert!(later.value("strata_http_requests_total{route=/metrics,status=200}") >= 2.0);
    assert!(later.value("strata_http_requests_total{route=/{root}/{tail},status=200}") >= 1.0);

    assert!(publisher.wait().expect("ffmpeg").success());
    let ended = wait_for(Duration::from_secs(15), || {
        let m = Metrics::scrape(&server);
        (!m.any("strata_transcode_speed") && m.get("strata_live_broadcasts{}") == Some(0.0))
            .then_some(m)
    })
    .expect("the speed gauge is gone and no broadcast is live after the end");
    assert_eq!(ended.value("strata_rtmp_connections{}"), 0.0);
    // counters stay
    assert!(
        ended.value(&format!("strata_segments_published_total{{stream={id}}}"))
            >= later.value(&format!("strata_segments_published_total{{stream={id}}}"))
    );
    assert!(!server.log().contains(&stream.key));
}
