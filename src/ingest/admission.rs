//! Who may hold a publisher connection: the policy every ingest listener applies at accept,
//! before a byte is read.
//!
//! - A global cap on open connections (`max_connections`): past it a new connection is closed
//!   at once.
//! - A per-address cap on connections that have not started publishing
//!   (`max_pending_per_ip`): one address cannot take every slot with connections that never
//!   publish, so an encoder elsewhere (or a real publisher on the same address, once its
//!   earlier connections publish or close) still gets in. A connection stops counting against
//!   its address the moment its publish is accepted.
//! - Refusals are logged at most once per `REFUSAL_LOG_INTERVAL` per listener, with the number
//!   left unsaid, so a flood cannot flood the log.
//! - `AcceptBackoff`: after an accept error (EMFILE, ENFILE, ENOBUFS…) the listener waits before
//!   the next accept, doubling from 5 ms to 1 s, instead of spinning.

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::sync::{OwnedSemaphorePermit, Semaphore};

use crate::telemetry::LogThrottle;

/// Refusals are logged at most this often (per listener).
pub const REFUSAL_LOG_INTERVAL: Duration = Duration::from_secs(5);

#[derive(Debug, thiserror::Error, PartialEq)]
pub enum Refused {
    #[error("too many connections (limit {0})")]
    Global(usize),
    #[error("too many connections from this address that have not started publishing (limit {0})")]
    PerAddress(usize),
}

impl Refused {
    /// The `reason` label of a refusal in metrics.
    pub fn reason(&self) -> &'static str {
        match self {
            Refused::Global(_) => "global_limit",
            Refused::PerAddress(_) => "address_limit",
        }
    }
}

/// The connection caps of one listener.
pub struct ConnectionPolicy {
    max_connections: usize,
    max_pending_per_ip: usize,
    open: Arc<Semaphore>,
    pending: Mutex<HashMap<IpAddr, usize>>,
    refusals: LogThrottle,
}

impl ConnectionPolicy {
    pub fn new(max_connections: usize, max_pending_per_ip: usize) -> Arc<Self> {
        Arc::new(Self {
            max_connections,
            max_pending_per_ip,
            open: Arc::new(Semaphore::new(max_connections)),
            pending: Mutex::new(HashMap::new()),
            refusals: LogThrottle::new(REFUSAL_LOG_INTERVAL),
        })
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<IpAddr, usize>> {
        // every update is one increment or decrement: a poisoned map is still consistent
        self.pending.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Admits a new connection from `ip`, or says why not. The admission is held for the
    /// connection's life.
    pub fn admit(self: &Arc<Self>, ip: IpAddr) -> Result<Admission, Refused> {
        let Ok(permit) = self.open.clone().try_acquire_owned() else {
            return Err(Refused::Global(self.max_connections));
        };
        {
            let mut pending = self.lock();
            let count = pending.entry(ip).or_insert(0);
            if *count >= self.max_pending_per_ip {
                if *count == 0 {
                    pending.remove(&ip);
                }
                return Err(Refused::PerAddress(self.max_pending_per_ip));
            }
            *count += 1;
        }
        Ok(Admission {
            _open: permit,
            pending: Some(PendingSlot {
                policy: self.clone(),
                ip,
            }),
        })
    }

    /// Whether a refusal should be logged now; `Some(n)`: log it, saying `n` earlier ones were
    /// not.
    pub fn log_refusal(&self) -> Option<u64> {
        self.refusals.check()
    }

    /// Connections from `ip` that have not started publishing.
    pub fn pending_from(&self, ip: IpAddr) -> usize {
        self.lock().get(&ip).copied().unwrap_or(0)
    }
}

/// One admitted connection's hold on its slots.
pub struct Admission {
    _open: OwnedSemaphorePermit,
    pending: Option<PendingSlot>,
}

impl Admission {
    /// The connection's publish was accepted: it no longer counts against its address.
    pub fn publishing(&mut self) {
        self.pending = None;
    }
}

struct PendingSlot {
    policy: Arc<ConnectionPolicy>,
    ip: IpAddr,
}

impl Drop for PendingSlot {
    fn drop(&mut self) {
        let mut pending = self.policy.lock();
        if let Some(count) = pending.get_mut(&self.ip) {
            *count = count.saturating_sub(1);
            if *count == 0 {
                pending.remove(&self.ip);
            }
        }
    }
}

/// The wait after consecutive accept errors.
#[derive(Debug)]
pub struct AcceptBackoff {
    next: Duration,
}

impl AcceptBackoff {
    const FIRST: Duration = Duration::from_millis(5);
    const MAX: Duration = Duration::from_secs(1);

    pub fn new() -> Self {
        Self { next: Self::FIRST }
    }

    /// An accept failed: how long to wait before the next.
    pub fn failed(&mut self) -> Duration {
        let wait = self.next;
        self.next = (self.next * 2).min(Self::MAX);
        wait
    }

    /// An accept succeeded: the next error starts from the shortest wait again.
    pub fn succeeded(&mut self) {
        self.next = Self::FIRST;
    }
}

impl Default for AcceptBackoff {
    fn default() -> Self {
        Self::new()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ip(last: u8) -> IpAddr {
        IpAddr::from([127, 0, 0, last])
    }

    #[test]
    fn one_address_cannot_hold_more_than_its_pending_share() {
        let policy = ConnectionPolicy::new(10, 3);
        let mut held: Vec<Admission> = (0..3).map(|_| policy.admit(ip(2)).unwrap()).collect();
        assert_eq!(policy.admit(ip(2)).err(), Some(Refused::PerAddress(3)));
        // another address still gets in
        let other = policy.admit(ip(1)).unwrap();
        // a connection that starts publishing frees its address's share
        held[0].publishing();
        let fourth = policy.admit(ip(2)).unwrap();
        assert_eq!(policy.pending_from(ip(2)), 3);
        drop(held);
        assert_eq!(policy.pending_from(ip(2)), 1);
        drop((fourth, other));
        assert_eq!(policy.pending_from(ip(2)), 0);
        assert!(policy.lock().is_empty(), "no entry is left behind");
    }

    #[test]
    fn the_global_cap_counts_publishing_connections_too() {
        let policy = ConnectionPolicy::new(2, 5);
        let mut a = policy.admit(ip(1)).unwrap();
        a.publishing();
        let _b = policy.admit(ip(2)).unwrap();
        assert_eq!(policy.admit(ip(3)).err(), Some(Refused::Global(2)));
        drop(a);
        assert!(policy.admit(ip(3)).is_ok());
    }

    #[test]
    fn accept_errors_back_off_up_to_a_second() {
        let mut backoff = AcceptBackoff::new();
        let waits: Vec<u128> = (0..10).map(|_| backoff.failed().as_millis()).collect();
        assert_eq!(waits, vec![5, 10, 20, 40, 80, 160, 320, 640, 1000, 1000]);
        backoff.succeeded();
        assert_eq!(backoff.failed().as_millis(), 5);
    }
}
