//! One RTMP connection: handshake, connect, publish (key checked before any media is
//! accepted), then FLV tags → `StreamEvent`s into the broadcast's pipeline.
//!
//! Everything from handshake to an accepted `publish` must finish within the configured
//! timeout; after that, a publisher silent for `idle_timeout` is considered gone. Every write
//! must finish within `write_timeout`, so a peer that never reads cannot hold its task. Any
//! protocol error closes this connection with one log line and nothing else.
//!
//! How a broadcast ends with its connection:
//! - Any unpublish command (`FCUnpublish`, `deleteStream`, `closeStream`) ends it at once.
//! - An orderly close (TCP FIN) without unpublishing also ends it at once: a publisher process
//!   that exits or crashes closes that way (and so, reportedly, does GStreamer's `rtmp2sink` in
//!   some versions; 1.22.0 sends `FCUnpublish` first). Holding such a broadcast for a reconnect
//!   would only delay its end and let an unrelated later publish join it.
//! - A lost connection (socket error, `idle_timeout` of silence, write timeout) parks the
//!   broadcast for the reconnect grace (see `reconnect`): that is what a network drop looks
//!   like, and encoders reconnect by themselves after one.

use std::sync::Arc;
use std::time::Duration;

use rml_rtmp::handshake::{Handshake, HandshakeProcessResult, PeerType};
use rml_rtmp::sessions::ServerSessionEvent;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use super::guard::GuardLimits;
use super::reconnect::ResumableClock;
use super::session::{handshake_step, GuardedSession, SessionError};
use super::IngestContext;
use crate::db::ids;
use crate::db::DbError;
use crate::hub::HubError;
use crate::hub::LiveStats;
use crate::ingest::admission::Admission;
use crate::ingest::flv::{FlvDemuxer, FlvError};
use crate::media::{queue, StreamEvent, TrackKind};
use crate::pipeline;
use crate::telemetry;
use crate::webhooks::{PublishRequest, WebhookError};

#[derive(Debug, thiserror::Error)]
pub enum ConnectionError {
    #[error("socket: {0}")]
    Io(#[from] std::io::Error),
    #[error(transparent)]
    Session(#[from] SessionError),
    #[error("no publish within {0:?} of connecting")]
    SetupTimeout(Duration),
    #[error("publisher silent for {0:?}")]
    Idle(Duration),
    #[error("peer did not take our bytes within {0:?}")]
    WriteTimeout(Duration),
    #[error("connect to unknown application (expected `{0}`)")]
    UnknownApp(String),
    #[error("publish refused: unknown stream key")]
    BadKey,
    #[error("publish refused: {0}")]
    Refused(String),
    #[error("publish refused by the on_publish webhook: {0}")]
    HookRefused(#[from] WebhookError),
    #[error("publish refused: {0}")]
    Busy(#[from] HubError),
    #[error("publish refused: {0}")]
    Database(#[from] DbError),
    #[error("unsupported stream: {0}")]
    Unsupported(FlvError),
    #[error("the broadcast pipeline stopped")]
    PipelineGone,
    #[error("replaced by a newer publisher of the same stream, or server shutdown")]
    Cancelled,
}

impl ConnectionError {
    /// The `result` label of a refused publish in `strata_publishes_total`.
    fn publish_result(&self) -> &'static str {
        match self {
            ConnectionError::BadKey => "bad_key",
            ConnectionError::HookRefused(_) => "hook_refused",
            ConnectionError::Busy(_) => "busy",
            ConnectionError::Database(_) => "error",
            _ => "refused",
        }
    }
}

/// A publish the server accepted: where its media goes. Outlives its connection while the
/// broadcast waits for a reconnect (see `reconnect`).
pub(super) struct Publishing {
    /// Identifies the broadcast (its playback id labels log lines) and counts its input.
    pub(super) stats: Arc<LiveStats>,
    events: queue::Sender,
    pub(super) cancel: CancellationToken,
    demuxer: FlvDemuxer,
    pub(super) clock: ResumableClock,
    dropped_tags: u64,
}

impl Publishing {
    /// The publisher was lost: the pipeline publishes what it holds now (the broadcast may
    /// continue when the publisher comes back).
    pub(super) async fn pause(&self) {
        // Fails only when the pipeline already ended; the grace then ends nothing.
        let _ = self.events.send(StreamEvent::Pause).await;
    }

    /// Ends the broadcast: its pipeline finishes the manifests and the recording.
    pub(super) async fn end(self) {
        // Fails only when the pipeline already ended; nothing more to tell it then.
        let _ = self.events.send(StreamEvent::End).await;
        if self.dropped_tags > 0 {
            tracing::warn!(playback_id = %self.stats.id.playback_id, dropped = self.dropped_tags, "tags dropped during the broadcast");
        }
    }
}

/// Why a request is refused: the `onStatus` the client sees and the error that closes the
/// connection.
struct Refusal {
    code: &'static str,
    description: &'static str,
    error: ConnectionError,
}

impl Refusal {
    fn new(code: &'static str, description: &'static str, error: ConnectionError) -> Self {
        Self {
            code,
            description,
            error,
        }
    }
}

/// What a connection runs over: a TCP socket (RTMP) or a TLS stream on one (RTMPS).
pub trait Transport: AsyncRead + AsyncWrite + Unpin + Send + Sync {}

impl<T: AsyncRead + AsyncWrite + Unpin + Send + Sync> Transport for T {}

/// Serves one connection from `peer` until it closes; `protocol` (`rtmp`, `rtmps`) labels its
/// metrics.
pub async fn handle(
    socket: Box<dyn Transport>,
    peer: std::net::IpAddr,
    protocol: &'static str,
    ctx: Arc<IngestContext>,
    admission: Admission,
) -> Result<(), ConnectionError> {
    let setup_timeout = Duration::from_secs_f64(ctx.settings.handshake_timeout);
    let setup_deadline = Instant::now() + setup_timeout;
    let write_timeout = ctx.settings.write_timeout;
    let (socket, leftover) =
        handshake(socket, setup_deadline, setup_timeout, write_timeout).await?;
    let (session, hello) = GuardedSession::new(GuardLimits::new(ctx.settings.max_message_size))?;
    let mut connection = Connection {
        ctx,
        peer,
        protocol,
        socket,
        session,
        admission,
        publishing: None,
        setup: Some((setup_deadline, setup_timeout)),
        last_metadata: None,
    };
    connection.send(&hello).await?;
    let result = connection.run(&leftover).await;
    // A broadcast the connection carried ends with it, unless the publisher was lost without
    // unpublishing: then it waits for a reconnect (see the module doc).
    if let Some(publishing) = connection.publishing.take() {
        match &result {
            Err(
                ConnectionError::Io(_)
                | ConnectionError::Idle(_)
                | ConnectionError::WriteTimeout(_),
            ) => connection.ctx.reconnects.park(publishing).await,
            Ok(()) => {
                tracing::info!(playback_id = %publishing.stats.id.playback_id, "publisher closed the connection without unpublishing; ending the broadcast");
                publishing.end().await
            }
            Err(_) => publishing.end().await,
        }
    }
    result
}

/// Writes all of `bytes` within `timeout`.
async fn write_within(
    socket: &mut Box<dyn Transport>,
    bytes: &[u8],
    timeout: Duration,
) -> Result<(), ConnectionError> {
    tokio::time::timeout(timeout, socket.write_all(bytes))
        .await
        .map_err(|_| ConnectionError::WriteTimeout(timeout))?
        .map_err(ConnectionError::from)
}

/// The RTMP handshake (fixed sizes: C0+C1 1537 bytes, C2 1536 bytes). Returns the bytes that
/// followed it.
async fn handshake(
    mut socket: Box<dyn Transport>,
    deadline: Instant,
    timeout: Duration,
    write_timeout: Duration,
) -> Result<(Box<dyn Transport>, Vec<u8>), ConnectionError> {
    let mut handshake = Handshake::new(PeerType::Server);
    let mut buf = [0u8; 4096];
    loop {
        let n = tokio::time::timeout_at(deadline, socket.read(&mut buf))
            .await
            .map_err(|_| ConnectionError::SetupTimeout(timeout))??;
        if n == 0 {
            return Err(std::io::Error::from(std::io::ErrorKind::UnexpectedEof).into());
        }
        match handshake_step(&mut handshake, &buf[..n])? {
            HandshakeProcessResult::InProgress { response_bytes } => {
                write_within(&mut socket, &response_bytes, write_timeout).await?;
            }
            HandshakeProcessResult::Completed {
                response_bytes,
                remaining_bytes,
            } => {
                write_within(&mut socket, &response_bytes, write_timeout).await?;
                return Ok((socket, remaining_bytes));
            }
        }
    }
}

struct Connection {
    ctx: Arc<IngestContext>,
    peer: std::net::IpAddr,
    /// `rtmp` or `rtmps`, for metrics.
    protocol: &'static str,
    socket: Box<dyn Transport>,
    session: GuardedSession,
    /// This connection's place under the connection policy.
    admission: Admission,
    publishing: Option<Publishing>,
    /// Until a publish is accepted, every read must finish before this deadline.
    setup: Option<(Instant, Duration)>,
    /// The last metadata logged (the fields the log line shows): encoders repeat
    /// `@setDataFrame`, which is logged only when what it says changes.
    last_metadata: Option<String>,
}

impl Connection {
    async fn run(&mut self, leftover: &[u8]) -> Result<(), ConnectionError> {
        self.feed(leftover).await?;
        let mut buf = vec![0u8; 64 * 1024];
        loop {
            let n = self.read(&mut buf).await?;
            if n == 0 {
                return Ok(());
            }
            self.feed(&buf[..n]).await?;
        }
    }

    /// One read, bounded by the setup deadline before publishing and by `idle_timeout` after;
    /// a publisher that is taken over or shut down stops waiting at once.
    async fn read(&mut self, buf: &mut [u8]) -> Result<usize, ConnectionError> {
        let cancel = self.publishing.as_ref().map(|p| p.cancel.clone());
        let read = async {
            match self.setup {
                Some((deadline, timeout)) => {
                    tokio::time::timeout_at(deadline, self.socket.read(buf))
                        .await
                        .map_err(|_| ConnectionError::SetupTimeout(timeout))?
                }
                None => {
                    let idle = self.ctx.settings.idle_timeout;
                    tokio::time::timeout(idle, self.socket.read(buf))
                        .await
                        .map_err(|_| ConnectionError::Idle(idle))?
                }
            }
            .map_err(ConnectionError::from)
        };
        match cancel {
            Some(cancel) => tokio::select! {
                r = read => r,
                _ = cancel.cancelled() => Err(ConnectionError::Cancelled),
            },
            None => read.await,
        }
    }

    /// Runs received bytes through the session; answers it and acts on its events.
    async fn feed(&mut self, bytes: &[u8]) -> Result<(), ConnectionError> {
        if bytes.is_empty() {
            return Ok(());
        }
        let input = self.session.input(bytes)?;
        self.send(&input.out).await?;
        for event in input.events {
            self.on_event(event).await?;
        }
        if let Some(command) = input.unpublished {
            self.unpublish(command).await;
        }
        Ok(())
    }

    async fn send(&mut self, bytes: &[u8]) -> Result<(), ConnectionError> {
        if !bytes.is_empty() {
            write_within(&mut self.socket, bytes, self.ctx.settings.write_timeout).await?;
        }
        Ok(())
    }

    /// The publisher is done (it sent `command`): its broadcast ends now.
    async fn unpublish(&mut self, command: &str) {
        if let Some(publishing) = self.publishing.take() {
            tracing::info!(playback_id = %publishing.stats.id.playback_id, command, "publisher unpublished; ending the broadcast");
            publishing.end().await;
        }
    }

    /// Refuses request `request_id` with an `onStatus` error, then fails with the refusal.
    async fn refuse(&mut self, request_id: u32, refusal: Refusal) -> Result<(), ConnectionError> {
        // If even the refusal cannot be encoded, the connection still closes below.
        let reply = self
            .session
            .reject(request_id, refusal.code, refusal.description)
            .unwrap_or_default();
        self.send(&reply).await?;
        Err(refusal.error)
    }

    async fn accept(&mut self, request_id: u32) -> Result<(), ConnectionError> {
        let reply = self.session.accept(request_id)?;
        self.send(&reply).await
    }

    async fn on_event(&mut self, event: ServerSessionEvent) -> Result<(), ConnectionError> {
        match event {
            ServerSessionEvent::ConnectionRequested {
                request_id,
                app_name,
            } => {
                if app_name.trim_end_matches('/') == self.ctx.settings.app {
                    self.accept(request_id).await
                } else {
                    let error = ConnectionError::UnknownApp(self.ctx.settings.app.clone());
                    let refusal = Refusal::new(
                        "NetConnection.Connect.Rejected",
                        "unknown application",
                        error,
                    );
                    self.refuse(request_id, refusal).await
                }
            }
            ServerSessionEvent::PublishStreamRequested {
                request_id,
                stream_key,
                ..
            } => match self.start_publishing(&stream_key).await {
                Ok(publishing) => {
                    telemetry::publish_result(self.protocol, "accepted");
                    self.publishing = Some(publishing);
                    self.setup = None;
                    self.admission.publishing();
                    self.accept(request_id).await
                }
                Err(refusal) => {
                    telemetry::publish_result(self.protocol, refusal.error.publish_result());
                    self.refuse(request_id, refusal).await
                }
            },
            ServerSessionEvent::VideoDataReceived {
                data, timestamp, ..
            } => self.forward(timestamp.value, |d, t| d.video(data, t)).await,
            ServerSessionEvent::AudioDataReceived {
                data, timestamp, ..
            } => self.forward(timestamp.value, |d, t| d.audio(data, t)).await,
            ServerSessionEvent::StreamMetadataChanged { metadata, .. } => {
                let Some(p) = &self.publishing else {
                    return Ok(());
                };
                let described = format!(
                    "{:?} {:?} {:?} {:?}",
                    metadata.video_width,
                    metadata.video_height,
                    metadata.video_frame_rate,
                    metadata.encoder
                );
                if self.last_metadata.as_ref() != Some(&described) {
                    tracing::info!(
                        playback_id = %p.stats.id.playback_id,
                        width = metadata.video_width,
                        height = metadata.video_height,
                        fps = metadata.video_frame_rate,
                        encoder = metadata.encoder.as_deref().unwrap_or(""),
                        "publisher metadata (advisory)"
                    );
                    self.last_metadata = Some(described);
                }
                Ok(())
            }
            // `input.unpublished` names the command that raised this; the broadcast ends there,
            // after the media of the same batch was forwarded.
            ServerSessionEvent::PublishStreamFinished { .. } => Ok(()),
            _ => Ok(()),
        }
    }

    /// Checks the key (by hash), claims the stream and starts its broadcast pipeline.
    async fn start_publishing(&self, stream_key: &str) -> Result<Publishing, Refusal> {
        const BAD_NAME: &str = "NetStream.Publish.BadName";
        if self.publishing.is_some() {
            let error = ConnectionError::Refused("second publish on one connection".into());
            return Err(Refusal::new(BAD_NAME, "already publishing", error));
        }
        // Some encoders append `?options` to the key field.
        let key = stream_key.split('?').next().unwrap_or_default();
        let stream = match self.ctx.db.stream_by_key(key).await {
            Ok(Some(stream)) => stream,
            Ok(None) => {
                return Err(Refusal::new(
                    BAD_NAME,
                    "unknown stream key",
                    ConnectionError::BadKey,
                ))
            }
            Err(e) => {
                return Err(Refusal::new(
                    "NetStream.Publish.Failed",
                    "server error",
                    e.into(),
                ));
            }
        };
        if let Some(node) = self.ctx.cluster.live_elsewhere(&stream.id) {
            let error = ConnectionError::Refused(format!(
                "the stream is live on node `{node}` (publish there, or stop that broadcast first)"
            ));
            return Err(Refusal::new(BAD_NAME, "stream live on another node", error));
        }
        let reconnects = &self.ctx.reconnects;
        let session_id = reconnects
            .parked_session(&stream.id)
            .unwrap_or_else(ids::new_recording_id);
        let hook = PublishRequest::new(&session_id, &stream, self.peer);
        if let Err(e) = self.ctx.pipeline.webhooks.authorize_publish(&hook).await {
            return Err(Refusal::new(
                "NetStream.Publish.Rejected",
                "refused by the server's publish hook",
                e.into(),
            ));
        }
        // One node owns a stream at a time: the claim is taken before anything starts.
        match self
            .ctx
            .db
            .claim_stream(&stream.id, &self.ctx.pipeline.node_id, &session_id)
            .await
        {
            Ok(true) => {}
            Ok(false) => {
                let node = self.ctx.db.claim_holder(&stream.id).await.ok().flatten();
                let error = ConnectionError::Refused(format!(
                    "the stream is live on node `{}` (publish there, or stop that broadcast first)",
                    node.as_deref().unwrap_or("another node")
                ));
                return Err(Refusal::new(BAD_NAME, "stream live on another node", error));
            }
            Err(e) => {
                return Err(Refusal::new(
                    "NetStream.Publish.Failed",
                    "server error",
                    e.into(),
                ))
            }
        }
        if let Some(publishing) = reconnects.resume(&stream.id).await {
            return Ok(publishing);
        }
        let stats = Arc::new(LiveStats::new(session_id, &stream));
        let lease = self
            .ctx
            .hub
            .begin(stats.clone(), &self.ctx.pipeline.shutdown)
            .await
            .map_err(|e| Refusal::new(BAD_NAME, "stream busy", e.into()))?;
        // The key may have been rotated or revoked while this publish waited (webhook,
        // takeover). The API stops what the hub lists after its change; checked again now that
        // this broadcast is listed, one of the two always sees the other.
        let still_valid = matches!(
            self.ctx.db.stream_by_key(key).await,
            Ok(Some(current)) if current.id == stream.id
        );
        if !still_valid {
            drop(lease);
            if let Err(e) = self
                .ctx
                .db
                .release_claim(&stream.id, &stats.id.session_id)
                .await
            {
                tracing::warn!(error = %e, "could not release the stream claim; it expires by itself");
            }
            return Err(Refusal::new(
                BAD_NAME,
                "unknown stream key",
                ConnectionError::BadKey,
            ));
        }
        let cancel = lease.cancel.clone();
        tracing::info!(playback_id = %stream.playback_id, "publish accepted");
        let events = pipeline::spawn(self.ctx.pipeline.clone(), stream, lease, &self.ctx.tracker);
        Ok(Publishing {
            stats,
            events,
            cancel,
            demuxer: FlvDemuxer::new(),
            clock: ResumableClock::default(),
            dropped_tags: 0,
        })
    }

    /// One FLV tag stamped `timestamp` into the broadcast. Media before an accepted publish is
    /// ignored.
    async fn forward(
        &mut self,
        timestamp: u32,
        demux: impl FnOnce(&mut FlvDemuxer, u32) -> Result<Option<StreamEvent>, FlvError>,
    ) -> Result<(), ConnectionError> {
        let Some(p) = &mut self.publishing else {
            return Ok(());
        };
        let timestamp = p.clock.map(timestamp);
        match demux(&mut p.demuxer, timestamp) {
            Ok(Some(event)) => {
                match &event {
                    StreamEvent::Track(info) => p.stats.set_track(info),
                    StreamEvent::Frame(frame) => p
                        .stats
                        .add_input(frame.data.len(), frame.kind == TrackKind::Video),
                    StreamEvent::Pause | StreamEvent::End => {}
                }
                p.events
                    .send(event)
                    .await
                    .map_err(|_| ConnectionError::PipelineGone)
            }
            Ok(None) => Ok(()),
            Err(e) if e.is_fatal() => Err(ConnectionError::Unsupported(e)),
            Err(e) => {
                p.dropped_tags += 1;
                if p.dropped_tags == 1 {
                    tracing::warn!(playback_id = %p.stats.id.playback_id, error = %e, "dropping tag");
                }
                Ok(())
            }
        }
    }
}
