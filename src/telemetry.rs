//! Prometheus metrics (the `metrics` facade, rendered by metrics-exporter-prometheus at
//! `GET /metrics`): every metric's name and help text, the histogram buckets, and the gauges
//! refreshed once a second.
//!
//! Labels: `stream` is the public playback id (never a key or a name an operator may consider
//! private); `route` is the matched route pattern, so label values stay bounded.
//!
//! Gauges describe what is live *now*: they are set with each `session.stats` round (every
//! second, see `events::send_stats`) and expire `GAUGE_IDLE` after their last update, so the transcode speed of an ended broadcast
//! disappears instead of showing its last value forever. Counters and histograms never expire.

use std::sync::atomic::{AtomicI64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use metrics::{describe_counter, describe_gauge, describe_histogram, Unit};
use metrics_exporter_prometheus::{BuildError, Matcher, PrometheusBuilder, PrometheusHandle};
use metrics_util::MetricKindMask;

use crate::hub::LiveStats;

pub const RTMP_CONNECTIONS: &str = "strata_rtmp_connections";
pub const RTMP_CONNECTIONS_TOTAL: &str = "strata_rtmp_connections_total";
pub const PUBLISHES_TOTAL: &str = "strata_publishes_total";
pub const LIVE_BROADCASTS: &str = "strata_live_broadcasts";
pub const INGEST_BYTES: &str = "strata_ingest_bytes_total";
pub const INGEST_FRAMES: &str = "strata_ingest_frames_total";
pub const TRANSCODE_SPEED: &str = "strata_transcode_speed";
pub const TRANSCODE_DROPPED: &str = "strata_transcode_dropped_frames_total";
pub const TRANSCODE_WORKER_FAILURES: &str = "strata_transcode_worker_failures_total";
pub const SEGMENTS_PUBLISHED: &str = "strata_segments_published_total";
pub const PUBLISHED_BYTES: &str = "strata_published_bytes_total";
pub const PUBLISH_LATENCY: &str = "strata_publish_latency_seconds";
pub const HTTP_REQUESTS: &str = "strata_http_requests_total";
pub const HOT_OBJECT_BYTES: &str = "strata_hot_object_bytes";
pub const RTP_DROPPED: &str = "strata_rtp_dropped_packets_total";
pub const RTP_LOST: &str = "strata_rtp_lost_packets_total";
pub const DEVICES_ONLINE: &str = "strata_devices_online";

/// A gauge not set for this long is dropped from the output.
pub const GAUGE_IDLE: Duration = Duration::from_secs(5);

/// Seconds; from a few milliseconds (local disk) to seconds (a slow bucket).
const LATENCY_BUCKETS: &[f64] = &[
    0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0,
];

/// Lets a repeated warning through at most once per interval and counts what it held back.
pub struct LogThrottle {
    interval: Duration,
    state: Mutex<(Option<Instant>, u64)>,
}

impl LogThrottle {
    pub fn new(interval: Duration) -> Self {
        Self {
            interval,
            state: Mutex::new((None, 0)),
        }
    }

    /// `Some(suppressed)` when this occurrence should be logged (with the number held back
    /// since the last one logged); `None` when it is held back.
    pub fn check(&self) -> Option<u64> {
        let mut state = self.state.lock().unwrap_or_else(|p| p.into_inner());
        let now = Instant::now();
        match state.0 {
            Some(last) if now.duration_since(last) < self.interval => {
                state.1 += 1;
                None
            }
            _ => {
                let suppressed = state.1;
                *state = (Some(now), 0);
                Some(suppressed)
            }
        }
    }
}

/// RTMP connections open right now (see `OpenConnection`).
static OPEN_CONNECTIONS: AtomicI64 = AtomicI64::new(0);

/// Installs the process-wide recorder and describes every metric.
pub fn install() -> Result<PrometheusHandle, BuildError> {
    let handle = PrometheusBuilder::new()
        .idle_timeout(MetricKindMask::GAUGE, Some(GAUGE_IDLE))
        .set_buckets_for_metric(Matcher::Full(PUBLISH_LATENCY.into()), LATENCY_BUCKETS)?
        .install_recorder()?;
    describe();
    Ok(handle)
}

fn describe() {
    describe_gauge!(RTMP_CONNECTIONS, "RTMP connections open now.");
    describe_counter!(
        RTMP_CONNECTIONS_TOTAL,
        "RTMP and RTMPS connections by protocol (rtmp, rtmps), accepted or refused because a \
         connection limit was reached."
    );
    describe_counter!(
        PUBLISHES_TOTAL,
        "Publish requests by protocol (rtmp, rtmps) and result (accepted, bad_key, \
         hook_refused, busy, error, refused)."
    );
    describe_gauge!(LIVE_BROADCASTS, "Broadcasts live now.");
    describe_counter!(
        INGEST_BYTES,
        Unit::Bytes,
        "Media bytes received per stream and protocol (rtmp, rtmps, srt)."
    );
    describe_counter!(
        INGEST_FRAMES,
        "Media frames received per stream, protocol and kind (video, audio)."
    );
    describe_gauge!(
        TRANSCODE_SPEED,
        "Media seconds each rung scales and encodes per second of work (below 1: slower than real time)."
    );
    describe_counter!(
        TRANSCODE_DROPPED,
        "Frames a rung skipped because it fell behind real time."
    );
    describe_counter!(
        TRANSCODE_WORKER_FAILURES,
        "Transcoding worker processes that failed, each ending its broadcast, by reason \
         (signal, exit, protocol, spawn)."
    );
    describe_counter!(
        SEGMENTS_PUBLISHED,
        "Segments published per stream (one per segment number, all renditions)."
    );
    describe_counter!(
        PUBLISHED_BYTES,
        Unit::Bytes,
        "Segment bytes written per stream, all renditions."
    );
    describe_histogram!(
        PUBLISH_LATENCY,
        Unit::Seconds,
        "From a segment's completion in packaging to it and the manifests listing it being stored."
    );
    describe_counter!(HTTP_REQUESTS, "HTTP requests by route pattern and status.");
    describe_gauge!(
        HOT_OBJECT_BYTES,
        "Bytes of live objects the origin holds in memory (http.hot_cache_bytes bounds it)."
    );
    describe_counter!(
        RTP_DROPPED,
        "RTP datagrams dropped before depacketizing, by reason (unknown_ssrc: no device was \
         told this SSRC; wrong_address: not from the address its device signaled from; \
         malformed; queue_full)."
    );
    describe_counter!(
        RTP_LOST,
        "RTP packets of device streams lost in transit (sequence gaps not filled in time)."
    );
    describe_gauge!(
        DEVICES_ONLINE,
        "Devices whose signaling socket is connected to this node."
    );
}

/// Counts one open RTMP connection while it lives.
pub struct OpenConnection(());

impl OpenConnection {
    /// `protocol`: `rtmp` or `rtmps`.
    pub fn new(protocol: &'static str) -> Self {
        OPEN_CONNECTIONS.fetch_add(1, Ordering::Relaxed);
        metrics::counter!(RTMP_CONNECTIONS_TOTAL, "protocol" => protocol, "result" => "accepted")
            .increment(1);
        Self(())
    }
}

impl Drop for OpenConnection {
    fn drop(&mut self) {
        OPEN_CONNECTIONS.fetch_sub(1, Ordering::Relaxed);
    }
}

/// A connection closed at once because the limit was reached.
/// A connection closed at accept by the connection policy (`reason`: which cap).
pub fn connection_refused(protocol: &'static str, reason: &'static str) {
    metrics::counter!(RTMP_CONNECTIONS_TOTAL, "protocol" => protocol, "result" => reason)
        .increment(1);
}

/// One publish request's outcome over `protocol`.
pub fn publish_result(protocol: &'static str, result: &'static str) {
    metrics::counter!(PUBLISHES_TOTAL, "protocol" => protocol, "result" => result).increment(1);
}

/// Sets the gauges from the broadcasts live now; called every `events::STATS_EVERY`.
pub fn set_gauges(live: &[Arc<LiveStats>]) {
    metrics::gauge!(RTMP_CONNECTIONS).set(OPEN_CONNECTIONS.load(Ordering::Relaxed) as f64);
    metrics::gauge!(LIVE_BROADCASTS).set(live.len() as f64);
    for broadcast in live {
        for (rendition, speed) in broadcast.speeds() {
            metrics::gauge!(
                TRANSCODE_SPEED,
                "stream" => broadcast.id.playback_id.clone(),
                "rendition" => rendition
            )
            .set(speed);
        }
    }
}

#[cfg(test)]
mod throttle_tests {
    use super::*;

    #[test]
    fn repeated_warnings_are_throttled_and_count_what_they_held_back() {
        let throttle = LogThrottle::new(Duration::from_secs(3600));
        assert_eq!(throttle.check(), Some(0));
        assert_eq!(throttle.check(), None);
        assert_eq!(throttle.check(), None);
        let zero = LogThrottle::new(Duration::ZERO);
        assert_eq!(zero.check(), Some(0));
        assert_eq!(zero.check(), Some(0));
    }
}
