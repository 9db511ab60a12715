//! The hub: which streams are live, and who may write them.
//!
//! One broadcast per stream at a time. A second publisher on the same stream takes over (the
//! usual case is OBS reconnecting while the old TCP connection is half-dead): the old
//! broadcast is cancelled, and the new one waits — at most `TAKEOVER_WAIT` — until the old
//! one has written its final manifests, so two writers never race on one stream's objects. A
//! takeover that times out leaves the hub as it was (the old broadcast, still finishing, stays
//! the one listed and stoppable), never a listed broadcast that is not running.

pub mod live;

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::sync::OwnedMutexGuard;
use tokio_util::sync::CancellationToken;

pub const TAKEOVER_WAIT: Duration = Duration::from_secs(10);

#[derive(Debug, thiserror::Error)]
pub enum HubError {
    #[error("the previous broadcast of this stream did not finish within {0:?}")]
    TakeoverTimeout(Duration),
}

pub use live::{LiveStats, SessionIdentity, SessionStats};

#[derive(Default)]
struct Slot {
    writer: Arc<tokio::sync::Mutex<()>>,
    current: Option<Current>,
}

#[derive(Clone)]
struct Current {
    cancel: CancellationToken,
    stats: Arc<LiveStats>,
}

pub struct Hub {
    slots: Mutex<HashMap<String, Slot>>,
    takeover_wait: Duration,
}

impl Default for Hub {
    fn default() -> Self {
        Self {
            slots: Mutex::default(),
            takeover_wait: TAKEOVER_WAIT,
        }
    }
}

/// The right to publish one stream. Cancelled when another publisher takes over or the server
/// shuts down; the stream is free again when the lease is dropped.
pub struct Lease {
    hub: Arc<Hub>,
    stream_id: String,
    pub cancel: CancellationToken,
    pub stats: Arc<LiveStats>,
    _writer: OwnedMutexGuard<()>,
}

impl Hub {
    pub fn new() -> Arc<Self> {
        Arc::new(Self::default())
    }

    /// A hub whose takeovers wait `wait` for the previous broadcast.
    pub fn with_takeover_wait(wait: Duration) -> Arc<Self> {
        Arc::new(Self {
            takeover_wait: wait,
            ..Self::default()
        })
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<String, Slot>> {
        // A poisoned map is still consistent (every update is a single insert/replace).
        self.slots.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Claims the stream of `stats`, cancelling a broadcast already live on it and waiting for
    /// it to end.
    pub async fn begin(
        self: &Arc<Self>,
        stats: Arc<LiveStats>,
        parent: &CancellationToken,
    ) -> Result<Lease, HubError> {
        let cancel = parent.child_token();
        let stream_id = stats.id.stream_id.clone();
        let (writer, previous) = {
            let mut slots = self.lock();
            let slot = slots.entry(stream_id.clone()).or_default();
            let current = Current {
                cancel: cancel.clone(),
                stats: stats.clone(),
            };
            let previous = slot.current.replace(current);
            if let Some(previous) = &previous {
                previous.cancel.cancel();
            }
            (slot.writer.clone(), previous)
        };
        let Ok(guard) = tokio::time::timeout(self.takeover_wait, writer.lock_owned()).await else {
            // The old broadcast still holds the stream: it stays the one listed.
            let mut slots = self.lock();
            if let Some(slot) = slots.get_mut(&stream_id) {
                if slot
                    .current
                    .as_ref()
                    .is_some_and(|c| Arc::ptr_eq(&c.stats, &stats))
                {
                    slot.current = previous;
                }
            }
            return Err(HubError::TakeoverTimeout(self.takeover_wait));
        };
        Ok(Lease {
            hub: self.clone(),
            stream_id,
            cancel,
            stats,
            _writer: guard,
        })
    }

    /// Every live broadcast's statistics.
    pub fn live(&self) -> Vec<Arc<LiveStats>> {
        self.lock()
            .values()
            .filter_map(|s| s.current.as_ref().map(|c| c.stats.clone()))
            .collect()
    }

    /// Stops the broadcast of session `session_id` (its publisher is disconnected); false if no
    /// such broadcast is live.
    pub fn stop(&self, session_id: &str) -> bool {
        let slots = self.lock();
        let current = slots
            .values()
            .filter_map(|s| s.current.as_ref())
            .find(|c| c.stats.id.session_id == session_id);
        if let Some(current) = current {
            current.cancel.cancel();
        }
        current.is_some()
    }
}

impl Drop for Lease {
    fn drop(&mut self) {
        let mut slots = self.hub.lock();
        if let Some(slot) = slots.get_mut(&self.stream_id) {
            if slot
                .current
                .as_ref()
                .is_some_and(|c| Arc::ptr_eq(&c.stats, &self.stats))
            {
                slot.current = None;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn stats(session: &str) -> Arc<LiveStats> {
        let stream = crate::db::Stream {
            id: "s".into(),
            name: "s".into(),
            playback_id: "p".into(),
            ladder: "default".into(),
            record: true,
            dvr_window: 0,
            next_segment: 0,
            created_at: 0,
            updated_at: 0,
        };
        Arc::new(LiveStats::new(session.into(), &stream))
    }

    #[tokio::test]
    async fn a_second_publisher_takes_over_after_the_first_finishes() {
        let hub = Hub::new();
        let root = CancellationToken::new();
        let first = hub.begin(stats("one"), &root).await.unwrap();
        assert_eq!(hub.live().len(), 1);
        let hub2 = hub.clone();
        let root2 = root.clone();
        let second = tokio::spawn(async move {
            hub2.begin(stats("two"), &root2)
                .await
                .map(|l| l.stats.id.session_id.clone())
        });
        first.cancel.cancelled().await; // the old broadcast is told to stop …
        tokio::time::sleep(Duration::from_millis(20)).await;
        assert!(!second.is_finished(), "… and the new one waits for it");
        drop(first);
        assert!(second.await.unwrap().is_ok());
    }

    #[tokio::test]
    async fn a_takeover_that_times_out_leaves_no_phantom_broadcast() {
        let hub = Hub::with_takeover_wait(Duration::from_millis(50));
        let root = CancellationToken::new();
        let stuck = hub.begin(stats("one"), &root).await.unwrap();
        let refused = hub.begin(stats("two"), &root).await;
        assert!(matches!(refused, Err(HubError::TakeoverTimeout(_))));
        let live: Vec<String> = hub.live().iter().map(|s| s.id.session_id.clone()).collect();
        assert_eq!(
            live,
            vec!["one".to_string()],
            "the running broadcast stays listed"
        );
        assert!(hub.stop("one"));
        assert!(!hub.stop("two"), "the refused one is not listed");
        drop(stuck);
        assert!(hub.live().is_empty());
        assert!(hub.begin(stats("three"), &root).await.is_ok());
    }

    #[tokio::test]
    async fn stopping_a_session_cancels_only_its_broadcast() {
        let hub = Hub::new();
        let root = CancellationToken::new();
        let lease = hub.begin(stats("one"), &root).await.unwrap();
        assert!(!hub.stop("other"));
        assert!(!lease.cancel.is_cancelled());
        assert!(hub.stop("one"));
        assert!(lease.cancel.is_cancelled());
        assert_eq!(hub.live()[0].id.session_id, "one");
        drop(lease);
        assert!(hub.live().is_empty());
    }
}
