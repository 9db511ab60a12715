//! Live statistics of one broadcast, shared by the threads and tasks that touch it: ingest counts
//! bytes and frames and records the source, packaging counts segments, the transcoder reports
//! its speed. Readers (the API, the events stream) take a `SessionStats` snapshot; `sample`
//! (called once a second) turns the counters into rates. The same updates move the stream's
//! Prometheus counters (see `telemetry`), whose handles are looked up once per broadcast.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use metrics::{Counter, Histogram};

use crate::db::sessions::SourceInfo;
use crate::db::Stream;
use crate::media::{CodecConfig, TrackInfo};
use crate::telemetry;

/// Which broadcast this is: fixed when the publish is accepted.
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize, utoipa::ToSchema)]
pub struct SessionIdentity {
    pub session_id: String,
    pub stream_id: String,
    pub stream_name: String,
    pub playback_id: String,
    pub ladder: String,
    /// Unix milliseconds.
    pub started_at: i64,
    /// Seconds of the broadcast viewers may rewind (its DVR view); 0: none.
    #[serde(default)]
    pub dvr_window: u32,
}

/// What the API and the events stream show about a live broadcast (also what other nodes are
/// told about it, see `cluster`).
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize, utoipa::ToSchema)]
pub struct SessionStats {
    #[serde(flatten)]
    pub id: SessionIdentity,
    /// `live`, or `reconnecting` while the broadcast waits for its lost publisher.
    pub state: LiveState,
    pub uptime_secs: f64,
    /// Input bits per second over the last second.
    pub input_bitrate: u64,
    /// Input video frames per second over the last second.
    pub input_fps: f64,
    #[serde(flatten)]
    pub source: SourceInfo,
    /// The slowest rung's speed (media seconds encoded per second of work); absent in
    /// passthrough or before the first report.
    pub transcode_speed: Option<f64>,
    pub segments_published: u64,
    /// Segments given up because the store failed for longer than the backlog holds.
    pub segments_lost: u64,
    pub bytes_in: u64,
    /// A poster of the live picture is stored (`live/{playback_id}/poster.jpg`).
    pub poster: bool,
}

/// Whether a live broadcast has its publisher.
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize, utoipa::ToSchema,
)]
#[serde(rename_all = "lowercase")]
pub enum LiveState {
    Live,
    /// The publisher was lost and the broadcast waits for it to come back.
    Reconnecting,
}

impl LiveState {
    pub fn as_str(self) -> &'static str {
        match self {
            LiveState::Live => "live",
            LiveState::Reconnecting => "reconnecting",
        }
    }
}

#[derive(Debug)]
struct Rates {
    at: Instant,
    bytes: u64,
    frames: u64,
    bitrate: u64,
    fps: f64,
}

#[derive(Debug)]
pub struct LiveStats {
    pub id: SessionIdentity,
    started: Instant,
    bytes_in: AtomicU64,
    video_frames_in: AtomicU64,
    segments: AtomicU64,
    segments_lost: AtomicU64,
    reconnecting: AtomicBool,
    poster: AtomicBool,
    source: Mutex<SourceInfo>,
    speeds: Mutex<BTreeMap<String, f64>>,
    rates: Mutex<Rates>,
    metrics: StreamMetrics,
}

/// The stream's Prometheus series this broadcast moves.
#[derive(Debug)]
/// (The ingest series carry the protocol too: the `broadcast` handle moves them.)
struct StreamMetrics {
    segments: Counter,
    bytes_published: Counter,
    publish_latency: Histogram,
}

impl StreamMetrics {
    fn new(playback_id: &str) -> Self {
        let stream = playback_id.to_string();
        Self {
            segments: metrics::counter!(telemetry::SEGMENTS_PUBLISHED, "stream" => stream.clone()),
            bytes_published: metrics::counter!(telemetry::PUBLISHED_BYTES, "stream" => stream.clone()),
            publish_latency: metrics::histogram!(telemetry::PUBLISH_LATENCY, "stream" => stream),
        }
    }
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    // every update is a plain overwrite, so a poisoned value is still consistent
    m.lock().unwrap_or_else(|p| p.into_inner())
}

impl LiveStats {
    pub fn new(session_id: String, stream: &Stream) -> Self {
        let now = Instant::now();
        Self {
            id: SessionIdentity {
                session_id,
                stream_id: stream.id.clone(),
                stream_name: stream.name.clone(),
                playback_id: stream.playback_id.clone(),
                ladder: stream.ladder.clone(),
                started_at: chrono::Utc::now().timestamp_millis(),
                dvr_window: stream.dvr_window,
            },
            started: now,
            bytes_in: AtomicU64::new(0),
            video_frames_in: AtomicU64::new(0),
            segments: AtomicU64::new(0),
            segments_lost: AtomicU64::new(0),
            reconnecting: AtomicBool::new(false),
            poster: AtomicBool::new(false),
            source: Mutex::new(SourceInfo::default()),
            speeds: Mutex::new(BTreeMap::new()),
            rates: Mutex::new(Rates {
                at: now,
                bytes: 0,
                frames: 0,
                bitrate: 0,
                fps: 0.0,
            }),
            metrics: StreamMetrics::new(&stream.playback_id),
        }
    }

    pub fn add_input(&self, bytes: usize, video_frame: bool) {
        self.bytes_in.fetch_add(bytes as u64, Ordering::Relaxed);
        if video_frame {
            self.video_frames_in.fetch_add(1, Ordering::Relaxed);
        }
    }

    pub fn set_track(&self, info: &TrackInfo) {
        let mut source = lock(&self.source);
        match &info.codec {
            audio @ (CodecConfig::Aac(_) | CodecConfig::Opus(_)) => {
                source.audio_codec = Some(audio.codec_string())
            }
            video => {
                source.video_codec = Some(video.codec_string());
                let size = video.video_size();
                source.width = size.map(|(w, _)| w);
                source.height = size.map(|(_, h)| h);
                source.fps = video.frame_rate();
            }
        }
    }

    pub fn source(&self) -> SourceInfo {
        lock(&self.source).clone()
    }

    /// A segment of `bytes` (all renditions) was stored `latency` after packaging completed it.
    pub fn segment_published(&self, bytes: u64, latency: Duration) {
        self.segments.fetch_add(1, Ordering::Relaxed);
        self.metrics.segments.increment(1);
        self.metrics.bytes_published.increment(bytes);
        self.metrics.publish_latency.record(latency.as_secs_f64());
    }

    /// The publisher has given up `lost` segments in all.
    pub fn set_segments_lost(&self, lost: u64) {
        self.segments_lost.store(lost, Ordering::Relaxed);
    }

    /// The publisher was lost and the broadcast waits for it (true), or it is back (false).
    pub fn set_reconnecting(&self, reconnecting: bool) {
        self.reconnecting.store(reconnecting, Ordering::Relaxed);
    }

    pub fn set_speed(&self, rendition: &str, speed: f64) {
        lock(&self.speeds).insert(rendition.to_string(), speed);
    }

    /// Each rung's last reported speed.
    pub fn speeds(&self) -> Vec<(String, f64)> {
        lock(&self.speeds)
            .iter()
            .map(|(name, speed)| (name.clone(), *speed))
            .collect()
    }

    pub fn bytes_in(&self) -> u64 {
        self.bytes_in.load(Ordering::Relaxed)
    }

    /// Turns the counters into per-second rates since the previous call.
    pub fn sample(&self, now: Instant) {
        let bytes = self.bytes_in.load(Ordering::Relaxed);
        let frames = self.video_frames_in.load(Ordering::Relaxed);
        let mut rates = lock(&self.rates);
        let secs = now.saturating_duration_since(rates.at).as_secs_f64();
        if secs < 0.2 {
            return;
        }
        rates.bitrate = ((bytes - rates.bytes) as f64 * 8.0 / secs) as u64;
        rates.fps = ((frames - rates.frames) as f64 / secs * 100.0).round() / 100.0;
        (rates.at, rates.bytes, rates.frames) = (now, bytes, frames);
    }

    pub fn snapshot(&self) -> SessionStats {
        let (bitrate, fps) = {
            let rates = lock(&self.rates);
            (rates.bitrate, rates.fps)
        };
        SessionStats {
            id: self.id.clone(),
            state: if self.reconnecting.load(Ordering::Relaxed) {
                LiveState::Reconnecting
            } else {
                LiveState::Live
            },
            uptime_secs: (self.started.elapsed().as_secs_f64() * 10.0).round() / 10.0,
            input_bitrate: bitrate,
            input_fps: fps,
            source: self.source(),
            transcode_speed: lock(&self.speeds).values().copied().reduce(f64::min),
            segments_published: self.segments.load(Ordering::Relaxed),
            segments_lost: self.segments_lost.load(Ordering::Relaxed),
            bytes_in: self.bytes_in(),
            poster: self.poster.load(Ordering::Relaxed),
        }
    }

    /// The broadcast's poster is stored (and will be replaced as the picture changes).
    pub fn poster_published(&self) {
        self.poster.store(true, Ordering::Relaxed);
    }
}
