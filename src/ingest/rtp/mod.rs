//! RTP ingest: device cameras send H.264 in RTP over UDP (RFC 3550, RFC 6184) to one UDP port
//! (`rtp.listen`), where and how their signaling session told them (`crate::devices`).
//!
//! - **Routes**: a device that is told to start gets a route: a fresh random SSRC, bound to
//!   the IP address its signaling socket came from. A datagram is taken only when its SSRC has
//!   a route and it comes from that IP; anything else is dropped and counted in
//!   `strata_rtp_dropped_packets_total{reason}` (`unknown_ssrc`, `wrong_address`,
//!   `malformed`, `queue_full`), with a throttled log line. The port is not pinned: an encoder
//!   that restarts (a bitrate change) sends from a new one, and NATs rewrite it.
//! - **One receiving task** reads the port (tokio's UDP socket, no blocking) and hands each
//!   datagram to its route's queue: `ROUTE_QUEUE` datagrams of at most `packet::MAX_DATAGRAM`
//!   bytes, so one device holds at most ~2 MiB here. When a route's queue is full (its
//!   broadcast is not keeping up) the datagram is dropped and counted: the depacketizer sees a
//!   loss and asks for a keyframe; no other device waits.
//! - **A route's session** (`carry`) runs in its device's signaling task: datagrams through
//!   the `depacketizer` (reordering, loss detection, access units) into the broadcast. After a
//!   loss the depacketizer drops frames until the next keyframe and the session asks the
//!   device for one (at most once per `KEYFRAME_REQUEST_INTERVAL`).

pub mod depacketizer;
pub mod packet;

use std::collections::HashMap;
use std::net::{IpAddr, SocketAddr};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use bytes::Bytes;
use tokio::net::UdpSocket;
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

use self::depacketizer::{H264Depacketizer, Output};
use self::packet::{RtpPacket, MAX_DATAGRAM};
use crate::broadcast::Broadcast;
use crate::telemetry::{self, LogThrottle};

/// Datagrams queued for one route.
pub const ROUTE_QUEUE: usize = 512;
/// The dynamic payload type devices are told to use for H.264.
pub const PAYLOAD_TYPE: u8 = 96;
/// RTP's video clock.
pub const CLOCK_RATE: u32 = 90_000;
/// A device is asked for a keyframe at most this often.
pub const KEYFRAME_REQUEST_INTERVAL: Duration = Duration::from_secs(1);
/// The RTP packet size devices are told to stay under (fits a 1500-byte MTU with IP and UDP).
pub const MAX_PACKET_SIZE: usize = 1400;

/// The UDP port devices send to, and the routes of the devices sending now.
pub struct RtpIngest {
    socket: UdpSocket,
    local: SocketAddr,
    routes: Mutex<HashMap<u32, RouteEntry>>,
    drops: LogThrottle,
}

struct RouteEntry {
    ip: IpAddr,
    datagrams: mpsc::Sender<Bytes>,
}

/// One device's route: its SSRC, and the datagrams that arrived for it. Dropping it removes
/// the route (later datagrams with its SSRC are `unknown_ssrc`).
pub struct RtpRoute {
    pub ssrc: u32,
    datagrams: mpsc::Receiver<Bytes>,
    ingest: Arc<RtpIngest>,
}

impl Drop for RtpRoute {
    fn drop(&mut self) {
        self.ingest.lock().remove(&self.ssrc);
    }
}

impl RtpIngest {
    pub async fn bind(addr: SocketAddr) -> std::io::Result<Arc<Self>> {
        let socket = UdpSocket::bind(addr).await?;
        let local = socket.local_addr()?;
        Ok(Arc::new(Self {
            socket,
            local,
            routes: Mutex::new(HashMap::new()),
            drops: LogThrottle::new(Duration::from_secs(5)),
        }))
    }

    pub fn local_addr(&self) -> SocketAddr {
        self.local
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<u32, RouteEntry>> {
        // every update is one insert or remove: a poisoned map is still consistent
        self.routes.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// A route for a device signaling from `ip`, under a fresh SSRC.
    pub fn open(self: &Arc<Self>, ip: IpAddr) -> RtpRoute {
        let (tx, rx) = mpsc::channel(ROUTE_QUEUE);
        let mut routes = self.lock();
        let ssrc = loop {
            let candidate: u32 = rand::random();
            if candidate != 0 && !routes.contains_key(&candidate) {
                break candidate;
            }
        };
        let ip = ip.to_canonical();
        routes.insert(ssrc, RouteEntry { ip, datagrams: tx });
        RtpRoute {
            ssrc,
            datagrams: rx,
            ingest: self.clone(),
        }
    }

    /// Reads datagrams until `shutdown`.
    pub async fn serve(self: Arc<Self>, shutdown: CancellationToken) {
        let mut buf = vec![0u8; MAX_DATAGRAM + 1];
        loop {
            let received = tokio::select! {
                r = self.socket.recv_from(&mut buf) => r,
                _ = shutdown.cancelled() => return,
            };
            match received {
                Ok((n, from)) => self.route(&buf[..n], from),
                // ICMP errors surface here on some systems; nothing to do but go on
                Err(e) => tracing::debug!(error = %e, "RTP receive error"),
            }
        }
    }

    /// Hands one datagram to its route, or drops and counts it.
    fn route(&self, datagram: &[u8], from: SocketAddr) {
        let ssrc = match datagram {
            [first, _, _, _, _, _, _, _, a, b, c, d, ..]
                if first >> 6 == 2 && datagram.len() <= MAX_DATAGRAM =>
            {
                u32::from_be_bytes([*a, *b, *c, *d])
            }
            _ => return self.dropped("malformed", from),
        };
        let routes = self.lock();
        let Some(route) = routes.get(&ssrc) else {
            drop(routes);
            return self.dropped("unknown_ssrc", from);
        };
        if route.ip != from.ip().to_canonical() {
            drop(routes);
            return self.dropped("wrong_address", from);
        }
        if route
            .datagrams
            .try_send(Bytes::copy_from_slice(datagram))
            .is_err()
        {
            drop(routes);
            metrics::counter!(telemetry::RTP_DROPPED, "reason" => "queue_full").increment(1);
        }
    }

    fn dropped(&self, reason: &'static str, from: SocketAddr) {
        metrics::counter!(telemetry::RTP_DROPPED, "reason" => reason).increment(1);
        if let Some(unlogged) = self.drops.check() {
            tracing::warn!(peer = %from, reason, unlogged, "RTP datagram dropped");
        }
    }
}

/// Why a route's session ended.
#[derive(Debug, PartialEq, Eq)]
pub enum Carried {
    /// `stop` fired (the device was told to stop, or its socket went).
    Stopped,
    /// The broadcast was cancelled: a takeover, a stop from the API, shutdown.
    Cancelled,
    /// No datagram for the idle timeout.
    Idle,
    /// The pipeline stopped taking media.
    PipelineGone,
}

/// Carries `route`'s datagrams into `broadcast` until `stop`, the broadcast's end, or `idle`
/// without a datagram. Each loss sends a keyframe request into `keyframes` (capacity 1, never
/// waited on), at most once per `KEYFRAME_REQUEST_INTERVAL`.
pub async fn carry(
    route: &mut RtpRoute,
    broadcast: &mut Broadcast,
    keyframes: &mpsc::Sender<()>,
    idle: Duration,
    stop: &CancellationToken,
) -> Carried {
    let mut depacketizer = H264Depacketizer::new(PAYLOAD_TYPE);
    let mut out = Vec::new();
    let mut last_request: Option<Instant> = None;
    let cancel = broadcast.cancel.clone();
    let lost = metrics::counter!(telemetry::RTP_LOST);
    let ended = loop {
        let datagram = tokio::select! {
            _ = stop.cancelled() => break Carried::Stopped,
            _ = cancel.cancelled() => break Carried::Cancelled,
            d = tokio::time::timeout(idle, route.datagrams.recv()) => match d {
                Ok(Some(d)) => d,
                Ok(None) => break Carried::Stopped,
                Err(_) => break Carried::Idle,
            },
        };
        let Ok(packet) = RtpPacket::parse(&datagram) else {
            metrics::counter!(telemetry::RTP_DROPPED, "reason" => "malformed").increment(1);
            continue;
        };
        depacketizer.push(&packet, &mut out);
        if let Err(gone) = deliver(
            &mut out,
            broadcast,
            keyframes,
            &mut last_request,
            &lost,
            stop,
        )
        .await
        {
            break gone;
        }
    };
    depacketizer.flush(&mut out);
    if ended != Carried::PipelineGone {
        // the last access unit; a stop already fired does not hold it up (it is dropped)
        let _ = deliver(
            &mut out,
            broadcast,
            keyframes,
            &mut last_request,
            &lost,
            stop,
        )
        .await;
    }
    let stats = depacketizer.stats();
    tracing::info!(
        playback_id = %broadcast.playback_id(),
        packets = stats.packets,
        lost = stats.lost,
        reordered = stats.reordered,
        dropped_frames = stats.dropped_frames,
        restarts = stats.restarts + stats.clock_jumps,
        "RTP session over"
    );
    ended
}

/// Hands the depacketizer's output to the broadcast.
async fn deliver(
    out: &mut Vec<Output>,
    broadcast: &mut Broadcast,
    keyframes: &mpsc::Sender<()>,
    last_request: &mut Option<Instant>,
    lost: &metrics::Counter,
    stop: &CancellationToken,
) -> Result<(), Carried> {
    let cancel = broadcast.cancel.clone();
    for output in out.drain(..) {
        match output {
            Output::Event(event) => {
                // a pipeline that takes no media must not hold a stop or a cancel up
                let sent = tokio::select! {
                    biased;
                    sent = broadcast.send(event) => sent.is_ok(),
                    _ = stop.cancelled() => return Err(Carried::Stopped),
                    _ = cancel.cancelled() => return Err(Carried::Cancelled),
                };
                if !sent {
                    return Err(Carried::PipelineGone);
                }
            }
            Output::Loss { packets } => {
                lost.increment(packets);
                if last_request.is_none_or(|at| at.elapsed() >= KEYFRAME_REQUEST_INTERVAL) {
                    *last_request = Some(Instant::now());
                    // full: a request is already waiting to be sent
                    let _ = keyframes.try_send(());
                }
            }
            Output::Discontinuity => {
                tracing::info!(
                    "the device's RTP timeline restarted (its encoder restarted): \
                     going on from its next keyframe"
                );
                if broadcast.discontinuity().await.is_err() {
                    return Err(Carried::PipelineGone);
                }
            }
        }
    }
    Ok(())
}
