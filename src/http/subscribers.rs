//! Caps on event-stream subscribers: `/api/v1/events` and `/api/public/events` share one
//! global cap (`http.max_event_subscribers`) and one cap per client address
//! (`http.max_event_subscribers_per_ip`). Each open stream holds a [`Slot`] inside its response
//! body, so the slot comes back when actix drops the body: the client went away (the server
//! does not allow half-closed connections, so a client's close is noticed at once), or the
//! server stopped.
//!
//! Over the global cap a request is answered `503`, over its address's cap `429`, both with
//! `Retry-After` and a one-line body. Refusals are logged at most once per [`WARN_EVERY`], with
//! how many were refused since the previous line, so a client hammering the endpoint cannot
//! flood the log.
//!
//! The address is the TCP peer's. `X-Forwarded-For` is not trusted (any client can send it), so
//! behind a reverse proxy every viewer counts as the proxy's address: raise the per-IP cap
//! there. IPv6 clients are counted per /64, since one host usually holds a whole /64.

use std::collections::HashMap;
use std::net::{IpAddr, Ipv6Addr};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::Duration;

use actix_web::http::header;
use actix_web::HttpResponse;

use crate::telemetry::LogThrottle;

/// What a refused client is told to wait before it tries again.
pub const RETRY_AFTER: Duration = Duration::from_secs(10);
/// At most one warning about refused subscribers per this interval.
pub const WARN_EVERY: Duration = Duration::from_secs(5);

/// Why a subscriber was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SubscribeError {
    #[error("the server has {max} event streams open, its limit (http.max_event_subscribers)")]
    ServerFull { max: usize },
    #[error(
        "this client address has {max} event streams open, its limit \
         (http.max_event_subscribers_per_ip)"
    )]
    AddressFull { max: usize },
}

impl SubscribeError {
    /// `503` (server full) or `429` (address full), with `Retry-After`; never cached.
    pub fn response(&self) -> HttpResponse {
        let mut response = match self {
            Self::ServerFull { .. } => HttpResponse::ServiceUnavailable(),
            Self::AddressFull { .. } => HttpResponse::TooManyRequests(),
        };
        response
            .insert_header((header::RETRY_AFTER, RETRY_AFTER.as_secs().to_string()))
            .insert_header((header::CACHE_CONTROL, "no-store"))
            .content_type("text/plain; charset=utf-8")
            .body(format!(
                "{self}; try again in {} s\n",
                RETRY_AFTER.as_secs()
            ))
    }
}

/// The open event streams, counted globally and per client address. Cheap to clone (shared).
#[derive(Clone)]
pub struct Subscribers {
    inner: Arc<Inner>,
}

struct Inner {
    max: usize,
    max_per_address: usize,
    counts: Mutex<Counts>,
    warnings: LogThrottle,
}

#[derive(Default)]
struct Counts {
    total: usize,
    /// Only addresses with at least one open stream: the map never outgrows `max`.
    per_address: HashMap<IpAddr, usize>,
}

/// One open event stream's place under the caps; given back when dropped.
pub struct Slot {
    inner: Arc<Inner>,
    address: IpAddr,
}

/// The counts stay consistent even if a holder of the lock panicked: every update is one step.
fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(PoisonError::into_inner)
}

/// The address a client is counted under: IPv4 as is (IPv4-mapped IPv6 too), IPv6 by its /64.
fn counted_address(peer: Option<IpAddr>) -> IpAddr {
    match peer {
        None => IpAddr::from([0, 0, 0, 0]),
        Some(IpAddr::V4(v4)) => IpAddr::V4(v4),
        Some(IpAddr::V6(v6)) => match v6.to_ipv4_mapped() {
            Some(v4) => IpAddr::V4(v4),
            None => {
                let s = v6.segments();
                IpAddr::V6(Ipv6Addr::new(s[0], s[1], s[2], s[3], 0, 0, 0, 0))
            }
        },
    }
}

impl Subscribers {
    /// Caps of `max` streams in all and `max_per_address` from one client address.
    pub fn new(max: usize, max_per_address: usize) -> Self {
        Self {
            inner: Arc::new(Inner {
                max,
                max_per_address,
                counts: Mutex::new(Counts::default()),
                warnings: LogThrottle::new(WARN_EVERY),
            }),
        }
    }

    /// A slot for a new stream from `peer` (the TCP peer's address; `None` counts as one
    /// unknown address), or why there is none (also logged, rate-limited).
    pub fn acquire(&self, peer: Option<IpAddr>) -> Result<Slot, SubscribeError> {
        let address = counted_address(peer);
        let refused = {
            let mut counts = lock(&self.inner.counts);
            let from_address = counts.per_address.get(&address).copied().unwrap_or(0);
            if counts.total >= self.inner.max {
                Some(SubscribeError::ServerFull {
                    max: self.inner.max,
                })
            } else if from_address >= self.inner.max_per_address {
                Some(SubscribeError::AddressFull {
                    max: self.inner.max_per_address,
                })
            } else {
                counts.total += 1;
                counts.per_address.insert(address, from_address + 1);
                None
            }
        };
        match refused {
            None => Ok(Slot {
                inner: self.inner.clone(),
                address,
            }),
            Some(error) => {
                self.warn(&error, address);
                Err(error)
            }
        }
    }

    /// Event streams open now.
    pub fn open(&self) -> usize {
        lock(&self.inner.counts).total
    }

    fn warn(&self, error: &SubscribeError, address: IpAddr) {
        let Some(unlogged) = self.inner.warnings.check() else {
            return;
        };
        let refused = unlogged + 1;
        tracing::warn!(
            client = %address,
            refused_since_last_warning = refused,
            "event-stream subscriber refused: {error}"
        );
    }
}

impl Drop for Slot {
    fn drop(&mut self) {
        let mut counts = lock(&self.inner.counts);
        counts.total = counts.total.saturating_sub(1);
        if let Some(n) = counts.per_address.get_mut(&self.address) {
            *n = n.saturating_sub(1);
            if *n == 0 {
                counts.per_address.remove(&self.address);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ip(s: &str) -> Option<IpAddr> {
        s.parse().ok()
    }

    #[test]
    fn an_address_over_its_cap_is_refused_while_others_still_get_in() {
        let subscribers = Subscribers::new(10, 2);
        let a1 = subscribers.acquire(ip("192.0.2.1"));
        let a2 = subscribers.acquire(ip("192.0.2.1"));
        assert!(a1.is_ok() && a2.is_ok());
        assert_eq!(
            subscribers.acquire(ip("192.0.2.1")).err(),
            Some(SubscribeError::AddressFull { max: 2 })
        );
        assert!(subscribers.acquire(ip("192.0.2.2")).is_ok());
        drop(a1);
        assert!(
            subscribers.acquire(ip("192.0.2.1")).is_ok(),
            "a dropped slot is given back to its address"
        );
    }

    #[test]
    fn the_server_cap_refuses_everyone_until_a_slot_comes_back() {
        let subscribers = Subscribers::new(3, 3);
        let slots: Vec<Slot> = ["192.0.2.1", "192.0.2.2", "192.0.2.3"]
            .into_iter()
            .filter_map(|a| subscribers.acquire(ip(a)).ok())
            .collect();
        assert_eq!(slots.len(), 3);
        assert_eq!(subscribers.open(), 3);
        assert_eq!(
            subscribers.acquire(ip("192.0.2.9")).err(),
            Some(SubscribeError::ServerFull { max: 3 })
        );
        drop(slots);
        assert_eq!(subscribers.open(), 0);
        assert!(subscribers.acquire(ip("192.0.2.9")).is_ok());
    }

    #[test]
    fn ipv6_clients_are_counted_per_64_and_mapped_ipv4_as_ipv4() {
        let subscribers = Subscribers::new(10, 1);
        let _first = subscribers.acquire(ip("2001:db8:1:2::1"));
        assert!(
            subscribers.acquire(ip("2001:db8:1:2:ffff::7")).is_err(),
            "same /64"
        );
        assert!(subscribers.acquire(ip("2001:db8:1:3::1")).is_ok());
        let _v4 = subscribers.acquire(ip("192.0.2.1"));
        assert!(subscribers.acquire(ip("::ffff:192.0.2.1")).is_err());
    }

    #[test]
    fn refusals_answer_503_or_429_with_retry_after() {
        let server = SubscribeError::ServerFull { max: 1 }.response();
        assert_eq!(server.status().as_u16(), 503);
        let address = SubscribeError::AddressFull { max: 1 }.response();
        assert_eq!(address.status().as_u16(), 429);
        for response in [server, address] {
            let retry = response.headers().get(header::RETRY_AFTER);
            assert_eq!(
                retry.and_then(|v| v.to_str().ok()),
                Some(RETRY_AFTER.as_secs().to_string().as_str())
            );
        }
    }
}
