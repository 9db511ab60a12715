//! Live events: what happened to broadcasts, for the API's Server-Sent Events stream (and
//! later other nodes). One process-wide bus (a tokio broadcast channel of `BUS_CAPACITY`
//! events); a subscriber that falls that far behind skips the oldest events and is told how
//! many it missed — publishing never waits for a slow dashboard.

use std::sync::Arc;
use std::time::{Duration, Instant};

use serde::Serialize;
use tokio::sync::broadcast;
use tokio_util::sync::CancellationToken;

use crate::hub::{Hub, SessionStats};

pub const BUS_CAPACITY: usize = 1024;
/// How often `session.stats` is sent for each live broadcast.
pub const STATS_EVERY: Duration = Duration::from_secs(1);

/// One event. The SSE `event:` field is `name()`; the data is the JSON of the payload.
#[derive(Debug, Clone, Serialize)]
#[serde(untagged)]
pub enum Event {
    /// `stream.live`: a publisher's broadcast started.
    Live(SessionStats),
    /// `stream.ended`: the broadcast ended and its recording is stored.
    Ended(Ended),
    /// `session.stats`: once a second per live broadcast.
    Stats(SessionStats),
    /// `segment.published`: a segment of every rendition and the manifests are written.
    Segment(SegmentPublished),
}

#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
pub struct Ended {
    pub session_id: String,
    pub stream_id: String,
    pub playback_id: String,
    pub duration_secs: f64,
    pub segments: u64,
}

#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
pub struct SegmentPublished {
    pub session_id: String,
    pub stream_id: String,
    pub playback_id: String,
    pub number: u64,
    pub duration_secs: f64,
}

impl Event {
    pub fn name(&self) -> &'static str {
        match self {
            Event::Live(_) => "stream.live",
            Event::Ended(_) => "stream.ended",
            Event::Stats(_) => "session.stats",
            Event::Segment(_) => "segment.published",
        }
    }
}

#[derive(Debug, Clone)]
pub struct EventBus {
    sender: broadcast::Sender<Event>,
}

impl Default for EventBus {
    fn default() -> Self {
        Self {
            sender: broadcast::channel(BUS_CAPACITY).0,
        }
    }
}

impl EventBus {
    /// Sends to whoever listens (nobody listening is fine).
    pub fn send(&self, event: Event) {
        let _ = self.sender.send(event);
    }

    pub fn subscribe(&self) -> broadcast::Receiver<Event> {
        self.sender.subscribe()
    }
}

/// Every `STATS_EVERY`, samples each live broadcast's rates, sends `session.stats` and sets the
/// live metrics gauges.
pub async fn send_stats(hub: Arc<Hub>, bus: EventBus, shutdown: CancellationToken) {
    let mut tick = tokio::time::interval(STATS_EVERY);
    loop {
        tokio::select! {
            _ = tick.tick() => {}
            _ = shutdown.cancelled() => return,
        }
        let now = Instant::now();
        let live = hub.live();
        for broadcast in &live {
            broadcast.sample(now);
            bus.send(Event::Stats(broadcast.snapshot()));
        }
        crate::telemetry::set_gauges(&live);
    }
}
