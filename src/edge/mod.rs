//! The live edge of every broadcast this node serves: the publisher hands out a new
//! `LiveEdge` (its listed window and open parts) after every stored part and segment, and the
//! origin renders low-latency playlists from it and holds blocking requests until it shows
//! what they ask for, without reading the store.
//!
//! One `watch` channel per broadcast: readers always see the newest edge and never queue
//! updates; a writer that goes away (the broadcast ended) wakes every waiting reader, which
//! then answers from the store (the ended playlists are there).
//!
//! With several nodes, every change of a local edge is also relayed to the others (`news`,
//! over the cluster's PostgreSQL NOTIFY), and what they relay is kept here as remote edges:
//! a node that does not own a broadcast answers its blocking requests from memory as the owner
//! does. A remote edge not heard of for `REMOTE_EDGE_TTL` (its node died) is forgotten.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use tokio::sync::{mpsc, watch};

use crate::manifest::ll_hls::{EdgeRendition, LiveEdge};

pub mod news;

pub use news::{EdgeNews, RenditionNews};

/// Edge news waiting to be relayed to the other nodes. Full: the news is dropped (and
/// counted); the rendition's next change, one part later, carries its whole state again.
pub const RELAY_QUEUE: usize = 256;
/// A remote edge is no longer served when nothing was heard of it for this long.
pub const REMOTE_EDGE_TTL: Duration = Duration::from_secs(10);

/// Every live edge this node serves, by playback id: its own broadcasts', and (in a cluster)
/// the other nodes'.
#[derive(Clone, Default)]
pub struct LiveEdges {
    inner: Arc<Mutex<Edges>>,
    relay: Option<mpsc::Sender<EdgeNews>>,
}

#[derive(Default)]
struct Edges {
    local: HashMap<String, watch::Receiver<Arc<LiveEdge>>>,
    remote: HashMap<String, RemoteEdge>,
}

/// What this node heard of another node's broadcast.
struct RemoteEdge {
    renditions: Vec<String>,
    /// By `renditions`' order; the edge is served once every one was heard of.
    heard: Vec<Option<EdgeRendition>>,
    tx: Option<watch::Sender<Arc<LiveEdge>>>,
    last_heard: Instant,
}

impl RemoteEdge {
    fn new(renditions: Vec<String>) -> Self {
        Self {
            heard: vec![None; renditions.len()],
            renditions,
            tx: None,
            last_heard: Instant::now(),
        }
    }

    fn fresh(&self) -> bool {
        self.last_heard.elapsed() < REMOTE_EDGE_TTL
    }
}

impl LiveEdges {
    /// Edges whose every change is also sent to the returned receiver (for the other nodes).
    pub fn relayed() -> (Self, mpsc::Receiver<EdgeNews>) {
        let (tx, rx) = mpsc::channel(RELAY_QUEUE);
        (
            Self {
                inner: Arc::default(),
                relay: Some(tx),
            },
            rx,
        )
    }

    fn lock(&self) -> MutexGuard<'_, Edges> {
        // every update is a single insert, remove or replace: a poisoned map is consistent
        self.inner.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Starts serving the edge of `playback_id` (a newer broadcast of the stream replaces an
    /// older one).
    pub fn open(&self, playback_id: &str, edge: LiveEdge) -> EdgeWriter {
        let (tx, rx) = watch::channel(Arc::new(LiveEdge {
            renditions: Vec::new(),
            ..edge.clone()
        }));
        self.lock().local.insert(playback_id.to_string(), rx);
        let writer = EdgeWriter {
            edges: self.clone(),
            playback_id: playback_id.to_string(),
            tx,
        };
        writer.publish(edge);
        writer
    }

    /// The edge of `playback_id`, if it is live on this node or heard of from its owner.
    pub fn get(&self, playback_id: &str) -> Option<watch::Receiver<Arc<LiveEdge>>> {
        let mut edges = self.lock();
        if let Some(local) = edges.local.get(playback_id) {
            return Some(local.clone());
        }
        let remote = edges.remote.get(playback_id)?;
        if !remote.fresh() {
            edges.remote.remove(playback_id);
            return None;
        }
        remote.tx.as_ref().map(watch::Sender::subscribe)
    }

    /// Takes in what the owner of a broadcast said of its edge.
    pub fn hear(&self, news: EdgeNews) {
        let mut edges = self.lock();
        edges.remote.retain(|_, r| r.fresh());
        let news = match news {
            EdgeNews::Closed { playback_id } => {
                // dropping the sender wakes the waiting readers: the store answers them
                edges.remote.remove(&playback_id);
                return;
            }
            EdgeNews::Update(news) => news,
        };
        let remote = edges
            .remote
            .entry(news.playback_id.clone())
            .or_insert_with(|| RemoteEdge::new(news.renditions.clone()));
        if remote.renditions != news.renditions {
            // a new broadcast of the stream, with another ladder
            *remote = RemoteEdge::new(news.renditions.clone());
        }
        remote.last_heard = Instant::now();
        let Some(slot) = remote
            .renditions
            .iter()
            .position(|name| name == news.rendition_name())
        else {
            return;
        };
        remote.heard[slot] = Some(EdgeRendition::from(news.rendition));
        let renditions: Option<Vec<EdgeRendition>> = remote.heard.iter().cloned().collect();
        let Some(renditions) = renditions else {
            return;
        };
        let edge = Arc::new(LiveEdge {
            target_duration: news.target_duration,
            part_target: news.part_target,
            ended: news.ended,
            renditions,
        });
        match &remote.tx {
            Some(tx) => {
                tx.send_replace(edge);
            }
            None => remote.tx = Some(watch::channel(edge).0),
        }
    }

    fn relay(&self, news: EdgeNews) {
        if let Some(relay) = &self.relay {
            if relay.try_send(news).is_err() {
                metrics::counter!("strata_cluster_edge_news_dropped_total").increment(1);
            }
        }
    }
}

/// A broadcast's side of its edge; dropping it stops serving it.
pub struct EdgeWriter {
    edges: LiveEdges,
    playback_id: String,
    tx: watch::Sender<Arc<LiveEdge>>,
}

impl EdgeWriter {
    pub fn publish(&self, edge: LiveEdge) {
        let edge = Arc::new(edge);
        let before = self.tx.send_replace(edge.clone());
        if self.edges.relay.is_none() {
            return;
        }
        let header_changed = before.target_duration != edge.target_duration
            || before.part_target != edge.part_target
            || before.ended != edge.ended
            || before.renditions.len() != edge.renditions.len();
        for (index, rendition) in edge.renditions.iter().enumerate() {
            if !header_changed && before.renditions.get(index) == Some(rendition) {
                continue;
            }
            if let Some(news) = RenditionNews::of(&self.playback_id, &edge, index) {
                self.edges.relay(EdgeNews::Update(news));
            }
        }
    }
}

impl Drop for EdgeWriter {
    fn drop(&mut self) {
        let mut edges = self.edges.lock();
        // only this broadcast's own entry: a newer one may have replaced it
        let own = edges
            .local
            .get(&self.playback_id)
            .is_some_and(|rx| rx.same_channel(&self.tx.subscribe()));
        if own {
            edges.local.remove(&self.playback_id);
            drop(edges);
            self.edges.relay(EdgeNews::Closed {
                playback_id: self.playback_id.clone(),
            });
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn edge(target_duration: u64) -> LiveEdge {
        LiveEdge {
            target_duration,
            part_target: 0.5,
            ended: false,
            renditions: Vec::new(),
        }
    }

    #[tokio::test]
    async fn readers_see_the_newest_edge_and_wake_when_the_broadcast_goes() {
        let edges = LiveEdges::default();
        let writer = edges.open("p", edge(2));
        let mut rx = edges.get("p").expect("served");
        writer.publish(edge(3));
        rx.changed().await.expect("an update");
        assert_eq!(rx.borrow().target_duration, 3);
        drop(writer);
        assert!(
            rx.changed().await.is_err(),
            "the end wakes a waiting reader"
        );
        assert!(edges.get("p").is_none());
    }

    #[test]
    fn an_older_broadcast_ending_leaves_the_newer_edge() {
        let edges = LiveEdges::default();
        let old = edges.open("p", edge(2));
        let _new = edges.open("p", edge(4));
        drop(old);
        assert_eq!(
            edges
                .get("p")
                .expect("the new one")
                .borrow()
                .target_duration,
            4
        );
    }

    #[tokio::test]
    async fn another_node_serves_what_the_owner_relays_until_it_closes() {
        let (owner, mut relayed) = LiveEdges::relayed();
        let other = LiveEdges::default();
        let mut live = LiveEdge {
            target_duration: 2,
            part_target: 0.5,
            ended: false,
            renditions: vec![
                news::tests::rendition("720p", 3),
                news::tests::rendition("audio", 3),
            ],
        };
        let writer = owner.open("p", live.clone());
        // one news per rendition at first
        for _ in 0..2 {
            other.hear(relayed.try_recv().expect("news"));
        }
        let mut rx = other.get("p").expect("served by the other node");
        assert_eq!(*rx.borrow_and_update().as_ref(), live);
        // a new part of one rendition: only that rendition travels
        let part = live.renditions[0].open_parts[0];
        live.renditions[0].open_parts.push(part);
        writer.publish(live.clone());
        let news = relayed.try_recv().expect("news of 720p");
        assert!(relayed.try_recv().is_err(), "audio did not change");
        other.hear(news);
        rx.changed().await.expect("an update");
        assert_eq!(*rx.borrow().as_ref(), live);
        drop(writer);
        other.hear(relayed.try_recv().expect("closed"));
        assert!(rx.changed().await.is_err(), "readers wake at the end");
        assert!(other.get("p").is_none());
    }

    #[test]
    fn a_remote_edge_is_served_only_once_every_rendition_was_heard() {
        let (owner, mut relayed) = LiveEdges::relayed();
        let other = LiveEdges::default();
        let edge = LiveEdge {
            target_duration: 2,
            part_target: 0.5,
            ended: false,
            renditions: vec![
                news::tests::rendition("720p", 2),
                news::tests::rendition("audio", 2),
            ],
        };
        let _writer = owner.open("p", edge);
        other.hear(relayed.try_recv().expect("news"));
        assert!(other.get("p").is_none(), "audio not heard of yet");
        other.hear(relayed.try_recv().expect("news"));
        assert!(other.get("p").is_some());
    }
}
