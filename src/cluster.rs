//! Several nodes sharing one PostgreSQL and one bucket.
//!
//! A broadcast belongs to the node its publisher reached: that node transcodes, packages and
//! writes the stream's objects; every node serves them from the bucket. Nodes tell each other
//! what happens over PostgreSQL `LISTEN/NOTIFY` on the channel `CHANNEL`: every event of this
//! node's bus (`stream.live`, `session.stats` once a second, `segment.published`,
//! `stream.ended`) and requests to stop a session another node owns. A node keeps what it
//! hears about other nodes' broadcasts (`RemoteSessions`), so its directory, API and events
//! show them, and it refuses a publisher for a stream that is live elsewhere. A broadcast not
//! heard of for `REMOTE_TTL` (its node died) is forgotten. The owner also relays every change
//! of its broadcasts' live edges (`edge::EdgeNews`, one rendition per message), so every node
//! answers low-latency playlist requests from memory as quickly as the owner.
//!
//! NOTIFY is best effort: what is sent while a listener reconnects is lost, and the next
//! `session.stats` (one second later) restores the picture. Payloads are small JSON envelopes
//! (well under PostgreSQL's 8000-byte limit; an edge whose window does not fit travels
//! without its oldest segments). With SQLite there is one node and no peers.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};
use sqlx::postgres::{PgListener, PgPool, PgPoolOptions};
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

use crate::edge::{EdgeNews, LiveEdges};
use crate::events::{Ended, Event, EventBus, SegmentPublished};
use crate::hub::{Hub, SessionStats};

/// The PostgreSQL notification channel every node listens on.
pub const CHANNEL: &str = "strata_events";
/// Another node's broadcast is forgotten when nothing was heard of it for this long.
pub const REMOTE_TTL: Duration = Duration::from_secs(10);
/// Stop requests waiting to be sent (full: the request fails and the API says so).
const CONTROL_QUEUE: usize = 64;
const RECONNECT_BACKOFF: Duration = Duration::from_secs(1);
/// What a NOTIFY payload may hold (PostgreSQL's limit is 8000 bytes).
const MAX_PAYLOAD: usize = 7900;

#[derive(Debug, thiserror::Error)]
pub enum ClusterError {
    #[error("cluster messaging over PostgreSQL: {0}")]
    Sql(#[from] sqlx::Error),
}

/// What one node tells the others.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(tag = "kind", content = "data")]
enum Message {
    #[serde(rename = "stream.live")]
    Live(SessionStats),
    #[serde(rename = "session.stats")]
    Stats(SessionStats),
    #[serde(rename = "segment.published")]
    Segment(SegmentPublished),
    #[serde(rename = "stream.ended")]
    Ended(Ended),
    /// Ask the owner of a session to end it.
    #[serde(rename = "session.stop")]
    Stop { session_id: String },
    /// A change of a broadcast's live edge.
    #[serde(rename = "edge")]
    Edge(EdgeNews),
    /// A device's presence.
    #[serde(rename = "device")]
    Device(crate::devices::DeviceEvent),
}

#[derive(Debug, Clone, Serialize, Deserialize)]
struct Envelope {
    node: String,
    #[serde(flatten)]
    message: Message,
}

impl Message {
    fn of(event: Event) -> Self {
        match event {
            Event::Live(s) => Message::Live(s),
            Event::Stats(s) => Message::Stats(s),
            Event::Segment(s) => Message::Segment(s),
            Event::Ended(e) => Message::Ended(e),
            Event::Device(d) => Message::Device(d),
        }
    }
}

struct RemoteSession {
    node: String,
    stats: SessionStats,
    seen: Instant,
}

/// This node, and what it has heard of the others' broadcasts.
pub struct Cluster {
    node_id: String,
    remote: Mutex<HashMap<String, RemoteSession>>,
    control: Option<mpsc::Sender<Envelope>>,
}

impl Cluster {
    /// A node without peers (SQLite).
    pub fn single(node_id: String) -> Arc<Self> {
        Arc::new(Self {
            node_id,
            remote: Mutex::default(),
            control: None,
        })
    }

    pub fn node_id(&self) -> &str {
        &self.node_id
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<String, RemoteSession>> {
        // Every update is a single insert/remove: a poisoned map is still consistent.
        self.remote.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Every live broadcast: this node's (in `hub`) and the other nodes'.
    pub fn live_sessions(&self, hub: &Hub) -> Vec<SessionStats> {
        let mut live: Vec<SessionStats> = hub.live().iter().map(|b| b.snapshot()).collect();
        live.extend(self.remote_live());
        live
    }

    /// Other nodes' live broadcasts.
    pub fn remote_live(&self) -> Vec<SessionStats> {
        let now = Instant::now();
        let mut remote = self.lock();
        remote.retain(|_, r| now.duration_since(r.seen) < REMOTE_TTL);
        remote.values().map(|r| r.stats.clone()).collect()
    }

    /// The node where `stream_id` is live, if another one.
    pub fn live_elsewhere(&self, stream_id: &str) -> Option<String> {
        let now = Instant::now();
        self.lock()
            .values()
            .find(|r| r.stats.id.stream_id == stream_id && now.duration_since(r.seen) < REMOTE_TTL)
            .map(|r| r.node.clone())
    }

    /// Asks the node that owns `session_id` to end it; false when no other node has it (or the
    /// request cannot be queued).
    pub fn request_stop(&self, session_id: &str) -> bool {
        let known = self
            .remote_live()
            .iter()
            .any(|s| s.id.session_id == session_id);
        let Some(control) = &self.control else {
            return false;
        };
        known
            && control
                .try_send(Envelope {
                    node: self.node_id.clone(),
                    message: Message::Stop {
                        session_id: session_id.to_string(),
                    },
                })
                .is_ok()
    }

    /// Takes in what node `node` said; returns the event for this node's listeners, if any.
    fn observe(&self, node: String, message: Message, local: &Local) -> Option<Event> {
        let mut remote = self.lock();
        match message {
            Message::Live(stats) | Message::Stats(stats) => {
                let live = !remote.contains_key(&stats.id.session_id);
                let event = if live {
                    Event::Live(stats.clone())
                } else {
                    Event::Stats(stats.clone())
                };
                remote.insert(
                    stats.id.session_id.clone(),
                    RemoteSession {
                        node,
                        stats,
                        seen: Instant::now(),
                    },
                );
                Some(event)
            }
            Message::Segment(segment) => {
                if let Some(r) = remote.get_mut(&segment.session_id) {
                    r.seen = Instant::now();
                    r.stats.segments_published += 1;
                }
                Some(Event::Segment(segment))
            }
            Message::Ended(ended) => {
                remote.remove(&ended.session_id);
                Some(Event::Ended(ended))
            }
            Message::Device(device) => Some(Event::Device(device)),
            Message::Stop { session_id } => {
                drop(remote);
                if local.hub.stop(&session_id) {
                    tracing::info!(from = %node, "session stopped at another node's request");
                }
                None
            }
            Message::Edge(news) => {
                drop(remote);
                local.edges.hear(news);
                None
            }
        }
    }
}

/// What of this node the other nodes' messages act on.
struct Local {
    hub: Arc<Hub>,
    edges: LiveEdges,
}

/// What this node tells the others.
struct Outbox {
    events: mpsc::Receiver<Event>,
    edges: mpsc::Receiver<EdgeNews>,
}

/// `envelope` as a NOTIFY payload; edge news too large for one loses its oldest segments.
fn payload(mut envelope: Envelope) -> Option<String> {
    loop {
        let text = match serde_json::to_string(&envelope) {
            Ok(text) => text,
            Err(e) => {
                tracing::warn!(error = %e, "cluster message not encodable; skipped");
                return None;
            }
        };
        if text.len() <= MAX_PAYLOAD {
            return Some(text);
        }
        let Message::Edge(EdgeNews::Update(news)) = &mut envelope.message else {
            tracing::warn!(bytes = text.len(), "cluster message too large; skipped");
            return None;
        };
        if !news.drop_oldest_segment() {
            tracing::warn!(bytes = text.len(), "edge news too large; skipped");
            return None;
        }
    }
}

/// Joins the other nodes on the PostgreSQL at `url`: sends this node's events (from
/// `outbox`), edge news (from `edge_news`) and stop requests, and listens for theirs (into
/// `bus`, `hub` and `edges`) until `shutdown`.
pub async fn join(
    node_id: String,
    url: &str,
    bus: EventBus,
    outbox: mpsc::Receiver<Event>,
    (edges, edge_news): (LiveEdges, mpsc::Receiver<EdgeNews>),
    hub: Arc<Hub>,
    shutdown: CancellationToken,
) -> Result<Arc<Cluster>, ClusterError> {
    let pool = PgPoolOptions::new().max_connections(2).connect(url).await?;
    let mut listener = PgListener::connect(url).await?;
    listener.listen(CHANNEL).await?;
    let (control, requests) = mpsc::channel(CONTROL_QUEUE);
    let cluster = Arc::new(Cluster {
        node_id,
        remote: Mutex::default(),
        control: Some(control),
    });
    let outbox = Outbox {
        events: outbox,
        edges: edge_news,
    };
    tokio::spawn(send(
        pool,
        cluster.node_id.clone(),
        outbox,
        requests,
        shutdown.clone(),
    ));
    let local = Local { hub, edges };
    tokio::spawn(listen(listener, cluster.clone(), bus, local, shutdown));
    Ok(cluster)
}

async fn send(
    pool: PgPool,
    node: String,
    mut outbox: Outbox,
    mut requests: mpsc::Receiver<Envelope>,
    shutdown: CancellationToken,
) {
    loop {
        let envelope = tokio::select! {
            Some(event) = outbox.events.recv() => Envelope { node: node.clone(), message: Message::of(event) },
            Some(news) = outbox.edges.recv() => Envelope { node: node.clone(), message: Message::Edge(news) },
            Some(request) = requests.recv() => request,
            _ = shutdown.cancelled() => return,
            else => return,
        };
        let Some(payload) = payload(envelope) else {
            continue;
        };
        if let Err(e) = sqlx::query("SELECT pg_notify($1, $2)")
            .bind(CHANNEL)
            .bind(payload)
            .execute(&pool)
            .await
        {
            metrics::counter!("strata_cluster_events_dropped_total").increment(1);
            tracing::warn!(error = %e, "could not tell the other nodes; message dropped");
        }
    }
}

async fn listen(
    mut listener: PgListener,
    cluster: Arc<Cluster>,
    bus: EventBus,
    local: Local,
    shutdown: CancellationToken,
) {
    loop {
        let received = tokio::select! {
            r = listener.recv() => r,
            _ = shutdown.cancelled() => return,
        };
        let notification = match received {
            Ok(n) => n,
            Err(e) => {
                // PgListener reconnects on the next recv; notifications meanwhile are lost.
                tracing::warn!(error = %e, "cluster listener lost its connection; reconnecting");
                tokio::time::sleep(RECONNECT_BACKOFF).await;
                continue;
            }
        };
        let envelope: Envelope = match serde_json::from_str(notification.payload()) {
            Ok(e) => e,
            Err(e) => {
                tracing::warn!(error = %e, "unreadable cluster message ignored");
                continue;
            }
        };
        if envelope.node == cluster.node_id {
            continue;
        }
        if let Some(event) = cluster.observe(envelope.node, envelope.message, &local) {
            bus.deliver(event);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::db::sessions::SourceInfo;
    use crate::hub::SessionIdentity;

    fn stats(session: &str, stream: &str) -> SessionStats {
        SessionStats {
            id: SessionIdentity {
                session_id: session.into(),
                stream_id: stream.into(),
                stream_name: "show".into(),
                playback_id: "pppppppppppppppp".into(),
                ladder: "default".into(),
                started_at: 1,
                dvr_window: 0,
            },
            state: crate::hub::live::LiveState::Live,
            uptime_secs: 1.0,
            input_bitrate: 1,
            input_fps: 30.0,
            source: SourceInfo::default(),
            transcode_speed: None,
            segments_published: 2,
            segments_lost: 0,
            bytes_in: 10,
            poster: false,
        }
    }

    #[test]
    fn envelopes_round_trip_through_json() {
        let envelope = Envelope {
            node: "node-a".into(),
            message: Message::Stats(stats("s1", "str_1")),
        };
        let text = serde_json::to_string(&envelope).unwrap();
        assert!(text.contains(r#""kind":"session.stats""#), "{text}");
        let back: Envelope = serde_json::from_str(&text).unwrap();
        match back.message {
            Message::Stats(s) => assert_eq!(s, stats("s1", "str_1")),
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn another_nodes_broadcast_is_known_until_it_ends() {
        let cluster = Cluster::single("node-b".into());
        let hub = Local {
            hub: Hub::new(),
            edges: LiveEdges::default(),
        };
        let first = cluster.observe("node-a".into(), Message::Stats(stats("s1", "str_1")), &hub);
        // the first word of a broadcast is a `stream.live` here, whatever the owner sent
        assert!(matches!(first, Some(Event::Live(_))));
        let again = cluster.observe("node-a".into(), Message::Stats(stats("s1", "str_1")), &hub);
        assert!(matches!(again, Some(Event::Stats(_))));
        assert_eq!(cluster.live_elsewhere("str_1").as_deref(), Some("node-a"));
        assert_eq!(cluster.remote_live().len(), 1);
        let ended = Ended {
            session_id: "s1".into(),
            stream_id: "str_1".into(),
            playback_id: "pppppppppppppppp".into(),
            duration_secs: 4.0,
            segments: 2,
        };
        cluster.observe("node-a".into(), Message::Ended(ended), &hub);
        assert!(cluster.live_elsewhere("str_1").is_none());
        assert!(cluster.remote_live().is_empty());
    }

    #[test]
    fn edge_news_too_large_for_a_notify_travels_without_its_oldest_segments() {
        let mut rendition = crate::edge::news::tests::rendition("720p", 120);
        rendition.segments[0].discontinuity = true;
        let edge = crate::manifest::ll_hls::LiveEdge {
            target_duration: 2,
            part_target: 0.5,
            ended: false,
            renditions: vec![rendition],
        };
        let news = crate::edge::RenditionNews::of("p", &edge, 0).expect("news");
        let envelope = Envelope {
            node: "node-a".into(),
            message: Message::Edge(EdgeNews::Update(news)),
        };
        let text = payload(envelope).expect("fits after trimming");
        assert!(text.len() <= MAX_PAYLOAD, "{}", text.len());
        let back: Envelope = serde_json::from_str(&text).expect("json");
        let Message::Edge(EdgeNews::Update(news)) = back.message else {
            panic!("{text}")
        };
        let r = crate::manifest::ll_hls::EdgeRendition::from(news.rendition);
        let last = r.segments.last().expect("segments").number;
        assert_eq!(last, 129, "the newest segments are kept");
        assert_eq!(r.media_sequence, r.segments[0].number);
        assert!(r.segments.len() > 10, "{}", r.segments.len());
    }
}
