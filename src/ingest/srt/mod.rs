//! SRT ingest: a libsrt listener (see `ffi` for why libsrt) whose callers publish MPEG-TS, the
//! stream key in the SRT stream id (`streamid`); the payload goes through the MPEG-TS demuxer
//! (`ingest::mpegts`) and into the broadcast core like any other way in.
//!
//! - **Before the handshake completes** libsrt asks `on_caller`: a stream id that names no key,
//!   another application or a player (`m=request`) is rejected there, with an SRT rejection
//!   code the caller prints. A passphrase (`srt.passphrase`) is enforced by libsrt itself:
//!   a caller without it, or with another, never connects.
//! - **After it**, the key is checked by `broadcast::Core::admit` (hash lookup, claim, webhook,
//!   takeover, reconnect). A refused publish is closed at once, so the caller stops within a
//!   second (a database lookup cannot run inside libsrt's callback thread without stalling
//!   every SRT connection on the port).
//! - **Threads**: libsrt blocks, so one thread accepts and one thread per connection receives
//!   (bounded by `srt.max_connections` through the connection policy). A receiving thread hands
//!   payloads to its connection's task through a bounded queue of `RECEIVE_QUEUE` payloads; when
//!   it is full the thread waits, libsrt's receive buffer fills, and SRT's live mode drops what
//!   is too late for that one publisher — others go on.
//! - **How a connection ends**: libsrt reports a caller's shutdown and a broken connection alike
//!   (`SRT_ECONNLOST`). A caller that stops sends its shutdown while media is still flowing, so
//!   an error within `ORDERLY_CLOSE` of the last payload ends the broadcast (`Finished`); one
//!   after silence (libsrt's peer-idle timeout, or ours: `srt.idle_timeout`) is a lost
//!   publisher and parks the broadcast for the reconnect grace (`Lost`).
//! - MPEG-TS continuity errors are counted by the demuxer and reported when the connection ends
//!   and, throttled, while it runs.

pub mod ffi;
pub mod streamid;

use std::ffi::{c_char, c_int, c_void};
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use tokio::sync::mpsc;

use super::admission::{Admission, ConnectionPolicy};
use crate::broadcast::{AdmitError, Core, Ending, Protocol};
use crate::ingest::mpegts::{TsDemuxer, TsError};
use crate::telemetry::{self, LogThrottle};

/// Payloads (≤ 1456 bytes each) queued from a connection's receiving thread to its task.
const RECEIVE_QUEUE: usize = 512;
/// A connection error this soon after the last payload is the caller's own close.
const ORDERLY_CLOSE: Duration = Duration::from_millis(1500);
/// How often a receiving thread looks whether its connection's task is still there.
const RECEIVE_POLL_MS: i32 = 250;
/// Accepted callers waiting for their task.
const ACCEPT_QUEUE: usize = 64;

/// SRT rejection codes (`srt/access_control.h`), shown by the caller.
const REJECT_BAD_REQUEST: c_int = 1400;
const REJECT_BAD_MODE: c_int = 1405;

/// The SRT settings ingest uses.
#[derive(Debug, Clone)]
pub struct SrtIngestSettings {
    /// The RTMP application name, accepted in front of the key (`live/KEY`).
    pub app: String,
    pub latency_ms: u32,
    pub passphrase: Option<String>,
    pub max_connections: usize,
    pub max_pending_per_ip: usize,
    pub idle_timeout: Duration,
}

pub struct SrtContext {
    pub settings: SrtIngestSettings,
    pub core: Arc<Core>,
}

#[derive(Debug, thiserror::Error)]
pub enum SrtConnectionError {
    #[error(transparent)]
    Srt(#[from] ffi::SrtError),
    #[error("invalid stream id: {0}")]
    StreamId(#[from] streamid::StreamIdError),
    #[error(transparent)]
    Refused(#[from] AdmitError),
    #[error("unsupported stream: {0}")]
    Unsupported(TsError),
    #[error("no media for {0:?}")]
    Idle(Duration),
    #[error("the broadcast pipeline stopped")]
    PipelineGone,
    #[error("replaced by a newer publisher of the same stream, stopped, or server shutdown")]
    Cancelled,
    #[error("cannot start a receiving thread: {0}")]
    Thread(std::io::Error),
}

/// A bound SRT listener, not yet accepting.
pub struct SrtListener {
    socket: Arc<ffi::Socket>,
    addr: SocketAddr,
}

impl SrtListener {
    pub fn bind(addr: SocketAddr, settings: &SrtIngestSettings) -> Result<Self, ffi::SrtError> {
        // The callback's state lives as long as the process: libsrt may call it from its own
        // threads until the listener is closed, and one listener is made per process.
        let state: &'static CallerCheck = Box::leak(Box::new(CallerCheck {
            app: settings.app.clone(),
            log: LogThrottle::new(Duration::from_secs(5)),
        }));
        let options = ffi::ListenOptions {
            latency_ms: i32::try_from(settings.latency_ms).unwrap_or(i32::MAX),
            passphrase: settings.passphrase.clone(),
            peer_idle_ms: 5_000,
        };
        let socket = ffi::Socket::listen(addr, &options, on_caller, state)?;
        let addr = socket.local_addr()?;
        Ok(Self {
            socket: Arc::new(socket),
            addr,
        })
    }

    pub fn local_addr(&self) -> SocketAddr {
        self.addr
    }
}

/// What the listen callback checks, before a caller's handshake completes.
struct CallerCheck {
    app: String,
    log: LogThrottle,
}

/// libsrt's listen callback: rejects a caller whose stream id cannot be a publish. Must not
/// block (it runs on libsrt's receiving thread for the whole port) and must not unwind.
extern "C" fn on_caller(
    opaque: *mut c_void,
    socket: ffi::RawSocket,
    _hs_version: c_int,
    peer: *const libc::sockaddr,
    stream_id: *const c_char,
) -> c_int {
    let decided = std::panic::catch_unwind(|| {
        // SAFETY: `opaque` is the leaked `CallerCheck` given in `bind`; libsrt keeps `peer` and
        // `stream_id` alive for the call.
        let (check, peer, id) = unsafe {
            (
                &*(opaque as *const CallerCheck),
                ffi::callback_peer(peer),
                ffi::callback_stream_id(stream_id),
            )
        };
        let refusal = match id {
            None => Some((
                REJECT_BAD_REQUEST,
                "stream id is not UTF-8 or too long".to_string(),
            )),
            Some(id) => match streamid::publish_key(&id, &check.app) {
                Ok(_) => None,
                Err(e @ streamid::StreamIdError::NotPublish(_)) => {
                    Some((REJECT_BAD_MODE, e.to_string()))
                }
                Err(e) => Some((REJECT_BAD_REQUEST, e.to_string())),
            },
        };
        match refusal {
            None => 0,
            Some((code, why)) => {
                ffi::set_reject_reason(socket, code);
                telemetry::connection_refused(Protocol::Srt.label(), "bad_stream_id");
                if let Some(unlogged) = check.log.check() {
                    let peer = peer.map(|p| p.ip().to_string()).unwrap_or_default();
                    tracing::warn!(%peer, unlogged, "SRT caller rejected: {why}");
                }
                -1
            }
        }
    });
    decided.unwrap_or(-1)
}

/// Accepts SRT callers until shutdown. Callers over the connection policy are closed at once.
pub async fn serve(listener: SrtListener, ctx: Arc<SrtContext>) {
    let (accepted_tx, mut accepted) = mpsc::channel(ACCEPT_QUEUE);
    let socket = listener.socket.clone();
    let acceptor = std::thread::Builder::new()
        .name("strata-srt-accept".into())
        .spawn(move || loop {
            match socket.accept() {
                Ok(caller) => {
                    if accepted_tx.blocking_send(caller).is_err() {
                        return;
                    }
                }
                // the listener was closed (shutdown)
                Err(_) => return,
            }
        });
    let acceptor = match acceptor {
        Ok(thread) => thread,
        Err(e) => {
            tracing::error!(error = %e, "cannot start the SRT accepting thread; SRT ingest is off");
            return;
        }
    };
    let policy = ConnectionPolicy::new(
        ctx.settings.max_connections,
        ctx.settings.max_pending_per_ip,
    );
    loop {
        let (socket, peer) = tokio::select! {
            caller = accepted.recv() => match caller {
                Some(caller) => caller,
                None => break,
            },
            _ = ctx.core.pipeline.shutdown.cancelled() => break,
        };
        let Some(peer) = peer else {
            continue; // not an IP caller: closed on drop
        };
        let admission = match policy.admit(peer.ip()) {
            Ok(admission) => admission,
            Err(refused) => {
                telemetry::connection_refused(Protocol::Srt.label(), refused.reason());
                if let Some(unlogged) = policy.log_refusal() {
                    tracing::warn!(peer = %peer.ip(), unlogged, "SRT connection refused: {refused}");
                }
                continue;
            }
        };
        let open = telemetry::OpenConnection::new(Protocol::Srt.label());
        let ctx = ctx.clone();
        ctx.core.tracker.clone().spawn(async move {
            match handle(socket, peer, &ctx, admission).await {
                Ok(()) => tracing::info!(%peer, "SRT connection closed"),
                Err(e) => tracing::warn!(%peer, error = %e, "SRT connection closed"),
            }
            drop(open);
        });
    }
    // closing the listener ends the accepting thread's `srt_accept`; it is out of libsrt
    // before this returns (the process may then clean libsrt up, `ffi::cleanup`)
    listener.socket.close();
    drop(accepted);
    let _ = tokio::task::spawn_blocking(move || acceptor.join()).await;
}

/// What a connection's receiving thread hands its task.
enum Received {
    Payload(Bytes),
    /// The connection is over (closed by the caller, or broken).
    Closed(ffi::SrtError),
}

/// Serves one accepted caller until its connection ends.
async fn handle(
    socket: ffi::Socket,
    peer: SocketAddr,
    ctx: &SrtContext,
    mut admission: Admission,
) -> Result<(), SrtConnectionError> {
    let stream_id = socket.stream_id()?;
    let key = streamid::publish_key(&stream_id, &ctx.settings.app)?;
    // a refused publish drops (closes) the socket on return: the caller stops at once
    let mut broadcast = ctx.core.admit(key, peer.ip(), Protocol::Srt).await?;
    admission.publishing();
    socket.set_recv_timeout(RECEIVE_POLL_MS)?;
    let (tx, mut rx) = mpsc::channel(RECEIVE_QUEUE);
    let receiver = std::thread::Builder::new()
        .name("strata-srt-rx".into())
        .spawn(move || receive(socket, tx));
    if let Err(e) = receiver {
        ctx.core.finish(broadcast, Ending::Failed).await;
        return Err(SrtConnectionError::Thread(e));
    }
    let mut demuxer = TsDemuxer::new();
    let idle = ctx.settings.idle_timeout;
    let mut last_payload = Instant::now();
    let cancel = broadcast.cancel.clone();
    let result = loop {
        let received = tokio::select! {
            r = tokio::time::timeout(idle, rx.recv()) => r,
            _ = cancel.cancelled() => break Err((Ending::Failed, SrtConnectionError::Cancelled)),
        };
        let payload = match received {
            Err(_) => break Err((Ending::Lost, SrtConnectionError::Idle(idle))),
            Ok(Some(Received::Closed(e))) if last_payload.elapsed() < ORDERLY_CLOSE => {
                tracing::debug!(playback_id = %broadcast.playback_id(), error = %e, "SRT connection over");
                break Ok(());
            }
            Ok(None) if last_payload.elapsed() < ORDERLY_CLOSE => break Ok(()),
            Ok(None) => break Err((Ending::Lost, SrtConnectionError::Idle(idle))),
            Ok(Some(Received::Closed(e))) => break Err((Ending::Lost, e.into())),
            Ok(Some(Received::Payload(payload))) => payload,
        };
        last_payload = Instant::now();
        match demuxer.push(&payload) {
            Ok(events) => {
                let mut gone = false;
                for event in events {
                    if broadcast.send(event).await.is_err() {
                        gone = true;
                        break;
                    }
                }
                if gone {
                    break Err((Ending::Failed, SrtConnectionError::PipelineGone));
                }
            }
            Err(e) if e.is_fatal() => {
                break Err((Ending::Failed, SrtConnectionError::Unsupported(e)))
            }
            Err(e) => {
                tracing::debug!(playback_id = %broadcast.playback_id(), error = %e, "MPEG-TS data dropped");
            }
        }
    };
    // what the demuxer still holds belongs to the broadcast, whatever comes next
    if let Ok(events) = demuxer.flush() {
        for event in events {
            if broadcast.send(event).await.is_err() {
                break;
            }
        }
    }
    let stats = demuxer.stats();
    if stats.lost_packets > 0 {
        tracing::warn!(
            playback_id = %broadcast.playback_id(),
            lost_packets = stats.lost_packets,
            "MPEG-TS packets were lost on this SRT connection (continuity counter gaps)"
        );
    }
    drop(rx); // the receiving thread stops at its next poll
    match result {
        Ok(()) => {
            tracing::info!(playback_id = %broadcast.playback_id(), "SRT publisher closed the connection; ending the broadcast");
            ctx.core.finish(broadcast, Ending::Finished).await;
            Ok(())
        }
        Err((how, error)) => {
            ctx.core.finish(broadcast, how).await;
            Err(error)
        }
    }
}

/// The receiving thread of one connection: every payload into `tx` until the connection ends
/// or the task stops listening.
fn receive(socket: ffi::Socket, tx: mpsc::Sender<Received>) {
    let mut buf = [0u8; ffi::MAX_PAYLOAD];
    loop {
        match socket.recv(&mut buf) {
            Ok(n) => {
                let payload = Bytes::copy_from_slice(&buf[..n]);
                if tx.blocking_send(Received::Payload(payload)).is_err() {
                    return;
                }
            }
            Err(e) if e.is_timeout() => {
                if tx.is_closed() {
                    return;
                }
            }
            Err(e) => {
                let _ = tx.blocking_send(Received::Closed(e));
                return;
            }
        }
    }
}
