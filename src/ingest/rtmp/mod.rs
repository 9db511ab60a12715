//! RTMP ingest on tokio: a listener with a connection limit, one task per connection, and a
//! guard in front of rml_rtmp (see `guard`). `serve` takes an already-bound listener so tests
//! bind port 0.

pub mod amf;
pub mod connection;
pub mod guard;
pub mod reconnect;
pub mod session;

use std::sync::Arc;

use tokio::net::TcpListener;
use tokio::sync::Semaphore;
use tokio_util::task::TaskTracker;

use crate::db::Db;
use crate::hub::Hub;
use crate::pipeline::PipelineContext;
use crate::telemetry;

/// The RTMP settings the ingest uses.
#[derive(Debug, Clone)]
pub struct IngestSettings {
    pub app: String,
    pub handshake_timeout: f64,
    pub max_message_size: u32,
    pub max_connections: usize,
}

pub struct IngestContext {
    pub settings: IngestSettings,
    pub db: Db,
    pub hub: Arc<Hub>,
    pub pipeline: PipelineContext,
    pub tracker: TaskTracker,
    pub reconnects: Arc<reconnect::Reconnects>,
    /// Which streams are live on other nodes (a publisher for one of those is refused).
    pub cluster: Arc<crate::cluster::Cluster>,
}

/// Accepts connections until shutdown. Connections beyond the limit are closed at once.
pub async fn serve(listener: TcpListener, ctx: Arc<IngestContext>) {
    let permits = Arc::new(Semaphore::new(ctx.settings.max_connections));
    loop {
        let accepted = tokio::select! {
            a = listener.accept() => a,
            _ = ctx.pipeline.shutdown.cancelled() => return,
        };
        let (socket, peer) = match accepted {
            Ok(a) => a,
            Err(e) => {
                tracing::warn!(error = %e, "RTMP accept failed");
                continue;
            }
        };
        let Ok(permit) = permits.clone().try_acquire_owned() else {
            telemetry::connection_over_limit();
            tracing::warn!(%peer, limit = ctx.settings.max_connections, "RTMP connection refused: too many connections");
            continue;
        };
        let open = telemetry::OpenConnection::new();
        let _ = socket.set_nodelay(true);
        let ctx = ctx.clone();
        ctx.tracker.clone().spawn(async move {
            match connection::handle(socket, ctx).await {
                Ok(()) => tracing::info!(%peer, "RTMP connection closed"),
                Err(e) => tracing::warn!(%peer, error = %e, "RTMP connection closed"),
            }
            drop((permit, open));
        });
    }
}
