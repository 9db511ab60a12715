//! RTMP ingest on tokio: a listener under the connection policy (`ingest::admission`: a global
//! cap, a per-address cap on connections not yet publishing, throttled refusal logs, backoff on
//! accept errors), one task per connection, and a guard in front of rml_rtmp (see `guard`).
//! `serve` takes an already-bound listener so tests bind port 0. RTMPS is the same listener
//! with a TLS acceptor (`tls`): the handshake runs in the connection's task, within
//! `rtmp.handshake_timeout`, and what follows is the same RTMP connection. Each listener has its
//! own connection policy.

pub mod amf;
pub mod connection;
pub mod guard;
pub mod session;
pub mod tls;

use std::sync::Arc;

use std::time::Duration;

use tokio::net::TcpListener;
use tokio_rustls::TlsAcceptor;

use super::admission::{AcceptBackoff, ConnectionPolicy};

use crate::broadcast::{Core, Protocol};
use crate::telemetry;

/// The RTMP settings the ingest uses.
#[derive(Debug, Clone)]
pub struct IngestSettings {
    pub app: String,
    pub handshake_timeout: f64,
    pub max_message_size: u32,
    pub max_connections: usize,
    /// Connections from one address that have not started publishing.
    pub max_pending_per_ip: usize,
    /// Every write to a peer must finish within this.
    pub write_timeout: Duration,
    /// A publisher silent for this long is lost.
    pub idle_timeout: Duration,
}

pub struct IngestContext {
    pub settings: IngestSettings,
    /// Admission and lifecycle, shared with every other way in.
    pub core: Arc<Core>,
}

/// Accepts connections until shutdown (over TLS when `tls` is given: RTMPS). Connections the
/// policy refuses are closed at once.
pub async fn serve(listener: TcpListener, ctx: Arc<IngestContext>, tls: Option<TlsAcceptor>) {
    let protocol = if tls.is_some() {
        Protocol::Rtmps
    } else {
        Protocol::Rtmp
    };
    let label = protocol.label();
    let policy = ConnectionPolicy::new(
        ctx.settings.max_connections,
        ctx.settings.max_pending_per_ip,
    );
    let mut backoff = AcceptBackoff::new();
    loop {
        let accepted = tokio::select! {
            a = listener.accept() => a,
            _ = ctx.core.pipeline.shutdown.cancelled() => return,
        };
        let (socket, peer) = match accepted {
            Ok(a) => {
                backoff.succeeded();
                a
            }
            Err(e) => {
                let wait = backoff.failed();
                tracing::warn!(error = %e, wait_ms = wait.as_millis() as u64, "{protocol} accept failed; waiting before the next");
                tokio::select! {
                    _ = tokio::time::sleep(wait) => continue,
                    _ = ctx.core.pipeline.shutdown.cancelled() => return,
                }
            }
        };
        let admission = match policy.admit(peer.ip()) {
            Ok(admission) => admission,
            Err(refused) => {
                telemetry::connection_refused(label, refused.reason());
                if let Some(unlogged) = policy.log_refusal() {
                    tracing::warn!(peer = %peer.ip(), unlogged, "{protocol} connection refused: {refused}");
                }
                continue;
            }
        };
        let open = telemetry::OpenConnection::new(label);
        let _ = socket.set_nodelay(true);
        let ctx = ctx.clone();
        let tls = tls.clone();
        ctx.core.tracker.clone().spawn(async move {
            let transport: Box<dyn connection::Transport> = match tls {
                None => Box::new(socket),
                Some(tls) => {
                    let limit = Duration::from_secs_f64(ctx.settings.handshake_timeout);
                    match tokio::time::timeout(limit, tls.accept(socket)).await {
                        Ok(Ok(stream)) => Box::new(stream),
                        Ok(Err(e)) => {
                            tracing::warn!(%peer, error = %e, "RTMPS connection closed: TLS handshake failed");
                            return;
                        }
                        Err(_) => {
                            tracing::warn!(%peer, "RTMPS connection closed: no TLS handshake within {limit:?}");
                            return;
                        }
                    }
                }
            };
            match connection::handle(transport, peer.ip(), protocol, ctx, admission).await {
                Ok(()) => tracing::info!(%peer, "{protocol} connection closed"),
                Err(e) => tracing::warn!(%peer, error = %e, "{protocol} connection closed"),
            }
            drop(open);
        });
    }
}
