//! Reconnection grace. Encoders (OBS among them) reconnect by themselves after a network drop;
//! viewers should see a short stall, not an ended stream and a new one. So when a publishing
//! connection is lost without the publisher unpublishing (a socket error, an idle or write
//! timeout; an orderly close ends the broadcast), its broadcast is parked here
//! for `grace`. What it sent is published at once (a pause: a ladder first flushes its decoder
//! and encoders, then every open segment is cut there), its session turns `reconnecting`, and
//! the next accepted publish
//! of the same stream within the grace, over any protocol, continues it — same session,
//! recording and segment numbering, with timestamps continuing (`ResumableClock`) and the
//! segmenter placing the
//! first keyframe where the paused segment ended. Otherwise, when the grace runs out (or the
//! broadcast is stopped or the server shuts down), the broadcast ends as if the publisher had
//! left.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use super::{Broadcast, Protocol};
use crate::db::Db;

/// Broadcasts waiting for their publisher, by stream id.
pub struct Reconnects {
    grace: Duration,
    db: Db,
    parked: Mutex<HashMap<String, (u64, Broadcast)>>,
    next_ticket: AtomicU64,
}

impl Reconnects {
    /// `grace` zero: a lost publisher ends its broadcast at once.
    pub fn new(grace: Duration, db: Db) -> Self {
        Self {
            grace,
            db,
            parked: Mutex::new(HashMap::new()),
            next_ticket: AtomicU64::new(0),
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<String, (u64, Broadcast)>> {
        // every update is a single insert or remove, so a poisoned map is still consistent
        self.parked.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Holds the broadcast of a lost publisher for the grace, or ends it now if there is none
    /// or it was already cancelled.
    pub(super) async fn park(self: &Arc<Self>, broadcast: Broadcast) {
        if self.grace.is_zero() || broadcast.cancel.is_cancelled() {
            broadcast.end().await;
            return;
        }
        // viewers and the recording get every frame up to the loss now, not after the grace
        broadcast.pause().await;
        let stats = broadcast.stats.clone();
        let cancel = broadcast.cancel.clone();
        let stream_id = stats.id.stream_id.clone();
        tracing::warn!(playback_id = %stats.id.playback_id, grace_s = self.grace.as_secs_f64(), "publisher lost without unpublishing; holding the broadcast for a reconnect");
        // The state is stored, then shown live, then the broadcast becomes resumable: whoever
        // sees the live state finds it stored, and a resume always comes after both.
        self.store_state(&stats.id.session_id, "reconnecting").await;
        stats.set_reconnecting(true);
        let ticket = self.next_ticket.fetch_add(1, Ordering::Relaxed);
        let previous = self.lock().insert(stream_id.clone(), (ticket, broadcast));
        if let Some((_, previous)) = previous {
            // cannot happen (one lease per stream), but never leak a broadcast
            previous.end().await;
        }
        let reconnects = self.clone();
        tokio::spawn(async move {
            tokio::select! {
                _ = tokio::time::sleep(reconnects.grace) => {}
                _ = cancel.cancelled() => {}
            }
            let expired = {
                let mut parked = reconnects.lock();
                match parked.get(&stream_id) {
                    Some((t, _)) if *t == ticket => parked.remove(&stream_id),
                    _ => None,
                }
            };
            if let Some((_, broadcast)) = expired {
                tracing::info!(playback_id = %broadcast.stats.id.playback_id, "no reconnect within the grace; ending the broadcast");
                broadcast.end().await;
            }
        });
    }

    /// The session id a publish of `stream_id` would continue, if its broadcast is parked.
    pub fn parked_session(&self, stream_id: &str) -> Option<String> {
        self.lock()
            .get(stream_id)
            .map(|(_, p)| p.stats.id.session_id.clone())
    }

    /// Ends the parked broadcast of `stream_id` if its pipeline does not transcode.
    pub(super) async fn end_untranscoded(&self, stream_id: &str) {
        let parked = {
            let mut parked = self.lock();
            match parked.get(stream_id) {
                Some((_, broadcast)) if !broadcast.transcodes => parked.remove(stream_id),
                _ => None,
            }
        };
        if let Some((_, broadcast)) = parked {
            tracing::info!(playback_id = %broadcast.stats.id.playback_id, "the returning publisher must be transcoded and the parked broadcast passes through; ending it");
            broadcast.end().await;
        }
    }

    /// Takes the parked broadcast of `stream_id` for a new connection, if any.
    pub(super) async fn resume(&self, stream_id: &str, protocol: Protocol) -> Option<Broadcast> {
        let parked = self.lock().remove(stream_id);
        let (_, mut broadcast) = parked?;
        if broadcast.cancel.is_cancelled() {
            broadcast.end().await;
            return None;
        }
        broadcast.clock.resume();
        broadcast.set_protocol(protocol);
        tracing::info!(playback_id = %broadcast.stats.id.playback_id, %protocol, "publisher reconnected; the broadcast continues");
        self.store_state(&broadcast.stats.id.session_id, "live")
            .await;
        broadcast.stats.set_reconnecting(false);
        Some(broadcast)
    }

    async fn store_state(&self, session_id: &str, state: &str) {
        if let Err(e) = self.db.set_session_state(session_id, state).await {
            tracing::warn!(error = %e, state, "could not store the session state");
        }
    }
}
