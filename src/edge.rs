//! The live edge of every broadcast this node publishes: the publisher hands out a new
//! `LiveEdge` (its listed window and open parts) after every stored part and segment, and the
//! origin renders low-latency playlists from it and holds blocking requests until it shows
//! what they ask for, without reading the store.
//!
//! One `watch` channel per broadcast: readers always see the newest edge and never queue
//! updates; a writer that goes away (the broadcast ended) wakes every waiting reader, which
//! then answers from the store (the ended playlists are there).

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use tokio::sync::watch;

use crate::manifest::ll_hls::LiveEdge;

/// Every live edge of this node, by playback id.
#[derive(Clone, Default)]
pub struct LiveEdges {
    edges: Arc<Mutex<HashMap<String, watch::Receiver<Arc<LiveEdge>>>>>,
}

impl LiveEdges {
    /// Starts serving the edge of `playback_id` (a newer broadcast of the stream replaces an
    /// older one).
    pub fn open(&self, playback_id: &str, edge: LiveEdge) -> EdgeWriter {
        let (tx, rx) = watch::channel(Arc::new(edge));
        if let Ok(mut edges) = self.edges.lock() {
            edges.insert(playback_id.to_string(), rx);
        }
        EdgeWriter {
            edges: self.clone(),
            playback_id: playback_id.to_string(),
            tx,
        }
    }

    /// The edge of `playback_id`, if it is live on this node.
    pub fn get(&self, playback_id: &str) -> Option<watch::Receiver<Arc<LiveEdge>>> {
        self.edges.lock().ok()?.get(playback_id).cloned()
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
        self.tx.send_replace(Arc::new(edge));
    }
}

impl Drop for EdgeWriter {
    fn drop(&mut self) {
        if let Ok(mut edges) = self.edges.edges.lock() {
            // only this broadcast's own entry: a newer one may have replaced it
            let own = edges
                .get(&self.playback_id)
                .is_some_and(|rx| rx.same_channel(&self.tx.subscribe()));
            if own {
                edges.remove(&self.playback_id);
            }
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
}
