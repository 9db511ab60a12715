//! Reconnection grace. Encoders (OBS among them) reconnect by themselves after a network drop;
//! viewers should see a short stall, not an ended stream and a new one. So when a publishing
//! connection is lost without the publisher unpublishing (a socket error, an idle or write
//! timeout; an orderly close ends the broadcast, see `connection`), its broadcast is parked here
//! for `grace`. What it sent is published at once (a pause: a ladder first flushes its decoder
//! and encoders, then every open segment is cut there), its session turns `reconnecting`, and
//! the next accepted publish
//! of the same stream within the grace continues it — same session, recording and segment
//! numbering, with timestamps continuing (`ResumableClock`) and the segmenter placing the
//! first keyframe where the paused segment ended. Otherwise, when the grace runs out (or the
//! broadcast is stopped or the server shuts down), the broadcast ends as if the publisher had
//! left.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use super::connection::Publishing;
use crate::db::Db;

/// The first timestamp after a reconnect follows the last one before it by this much: more
/// than any composition offset, so no frame of the new connection is presented before one of
/// the old.
pub const RESUME_STEP_MS: u32 = 100;

/// Broadcasts waiting for their publisher, by stream id.
pub struct Reconnects {
    grace: Duration,
    db: Db,
    parked: Mutex<HashMap<String, (u64, Publishing)>>,
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

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<String, (u64, Publishing)>> {
        // every update is a single insert or remove, so a poisoned map is still consistent
        self.parked.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Holds the broadcast of a lost publisher for the grace, or ends it now if there is none
    /// or it was already cancelled.
    pub(super) async fn park(self: &Arc<Self>, publishing: Publishing) {
        if self.grace.is_zero() || publishing.cancel.is_cancelled() {
            publishing.end().await;
            return;
        }
        // viewers and the recording get every frame up to the loss now, not after the grace
        publishing.pause().await;
        let stats = publishing.stats.clone();
        let cancel = publishing.cancel.clone();
        let stream_id = stats.id.stream_id.clone();
        tracing::warn!(playback_id = %stats.id.playback_id, grace_s = self.grace.as_secs_f64(), "publisher lost without unpublishing; holding the broadcast for a reconnect");
        // The state is stored, then shown live, then the broadcast becomes resumable: whoever
        // sees the live state finds it stored, and a resume always comes after both.
        self.store_state(&stats.id.session_id, "reconnecting").await;
        stats.set_reconnecting(true);
        let ticket = self.next_ticket.fetch_add(1, Ordering::Relaxed);
        let previous = self.lock().insert(stream_id.clone(), (ticket, publishing));
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
            if let Some((_, publishing)) = expired {
                tracing::info!(playback_id = %publishing.stats.id.playback_id, "no reconnect within the grace; ending the broadcast");
                publishing.end().await;
            }
        });
    }

    /// The session id a publish of `stream_id` would continue, if its broadcast is parked.
    pub fn parked_session(&self, stream_id: &str) -> Option<String> {
        self.lock()
            .get(stream_id)
            .map(|(_, p)| p.stats.id.session_id.clone())
    }

    /// Takes the parked broadcast of `stream_id` for a new connection, if any.
    pub(super) async fn resume(&self, stream_id: &str) -> Option<Publishing> {
        let parked = self.lock().remove(stream_id);
        let (_, mut publishing) = parked?;
        if publishing.cancel.is_cancelled() {
            publishing.end().await;
            return None;
        }
        publishing.clock.resume();
        tracing::info!(playback_id = %publishing.stats.id.playback_id, "publisher reconnected; the broadcast continues");
        self.store_state(&publishing.stats.id.session_id, "live")
            .await;
        publishing.stats.set_reconnecting(false);
        Some(publishing)
    }

    async fn store_state(&self, session_id: &str, state: &str) {
        if let Err(e) = self.db.set_session_state(session_id, state).await {
            tracing::warn!(error = %e, state, "could not store the session state");
        }
    }
}

/// RTMP timestamps of one broadcast across its connections: each connection's clock starts
/// anew, so after a reconnect its timestamps are shifted to continue `RESUME_STEP_MS` after the
/// last one seen. Wrapping u32 arithmetic, like RTMP's clock.
#[derive(Debug, Default)]
pub struct ResumableClock {
    offset: u32,
    last: Option<u32>,
    rebase_next: bool,
}

impl ResumableClock {
    /// The broadcast's timestamp for a tag stamped `raw` by the current connection.
    pub fn map(&mut self, raw: u32) -> u32 {
        if self.rebase_next {
            self.rebase_next = false;
            let continue_at = self.last.map_or(raw, |l| l.wrapping_add(RESUME_STEP_MS));
            self.offset = continue_at.wrapping_sub(raw);
        }
        let mapped = raw.wrapping_add(self.offset);
        // later in RTMP's wrapping order (tracks interleave slightly out of order)
        if self
            .last
            .is_none_or(|l| (mapped.wrapping_sub(l) as i32) > 0)
        {
            self.last = Some(mapped);
        }
        mapped
    }

    /// A new connection continues the broadcast: rebase at its first tag.
    pub fn resume(&mut self) {
        self.rebase_next = true;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_resumed_connection_continues_after_the_last_timestamp() {
        let mut clock = ResumableClock::default();
        assert_eq!(clock.map(1_000), 1_000);
        assert_eq!(clock.map(5_000), 5_000);
        assert_eq!(clock.map(4_990), 4_990); // audio slightly behind video
        clock.resume();
        assert_eq!(clock.map(0), 5_000 + RESUME_STEP_MS);
        assert_eq!(clock.map(33), 5_133);
        clock.resume();
        // the new connection's clock near the u32 end: still continues
        assert_eq!(clock.map(u32::MAX - 10), 5_233);
        assert_eq!(clock.map(20), 5_264);
    }

    #[test]
    fn a_clock_that_was_never_resumed_passes_timestamps_through() {
        let mut clock = ResumableClock::default();
        assert_eq!(clock.map(u32::MAX), u32::MAX);
        assert_eq!(clock.map(5), 5); // RTMP's wrap, left to the demuxer's unwrapping
    }
}
