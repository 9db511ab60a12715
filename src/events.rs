//! Live events: what happened to broadcasts, for the API's Server-Sent Events streams and for
//! other nodes. One process-wide bus (a tokio broadcast channel of `BUS_CAPACITY` events); a
//! subscriber that falls that far behind skips the oldest events and is told how many it
//! missed — publishing never waits for a slow dashboard. With several nodes, this node's own
//! events are also queued (`RELAY_QUEUE`, full: dropped and counted in
//! `strata_cluster_events_dropped_total`) for `cluster` to send to the others, and their events
//! come back in through `deliver`.

use std::sync::Arc;
use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};
use tokio::sync::{broadcast, mpsc};
use tokio_util::sync::CancellationToken;

use crate::hub::{Hub, SessionStats};

pub const BUS_CAPACITY: usize = 1024;
/// This node's events waiting to be sent to the other nodes.
pub const RELAY_QUEUE: usize = 1024;
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
    /// `device.online`, `device.offline`, `device.streaming`, `device.status`: a device's
    /// presence (`crate::devices`).
    Device(crate::devices::DeviceEvent),
}

#[derive(Debug, Clone, Serialize, Deserialize, utoipa::ToSchema)]
pub struct Ended {
    pub session_id: String,
    pub stream_id: String,
    pub playback_id: String,
    pub duration_secs: f64,
    pub segments: u64,
}

#[derive(Debug, Clone, Serialize, Deserialize, utoipa::ToSchema)]
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
            Event::Device(device) => device.name(),
        }
    }
}

#[derive(Debug, Clone)]
pub struct EventBus {
    sender: broadcast::Sender<Event>,
    relay: Option<mpsc::Sender<Event>>,
}

impl Default for EventBus {
    fn default() -> Self {
        Self {
            sender: broadcast::channel(BUS_CAPACITY).0,
            relay: None,
        }
    }
}

impl EventBus {
    /// A bus whose own events are also queued for the other nodes (read from the receiver).
    pub fn relayed() -> (Self, mpsc::Receiver<Event>) {
        let (relay, outbox) = mpsc::channel(RELAY_QUEUE);
        let bus = Self {
            relay: Some(relay),
            ..Self::default()
        };
        (bus, outbox)
    }

    /// This node's event: to whoever listens here (nobody listening is fine) and to the other
    /// nodes.
    pub fn send(&self, event: Event) {
        if let Some(relay) = &self.relay {
            if relay.try_send(event.clone()).is_err() {
                metrics::counter!("strata_cluster_events_dropped_total").increment(1);
            }
        }
        let _ = self.sender.send(event);
    }

    /// Another node's event, for this node's listeners only.
    pub fn deliver(&self, event: Event) {
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
