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
//!   broadcast for the reconnect grace (see `broadcast::reconnect`): that is what a network
//!   drop looks like, and encoders reconnect by themselves after one.
//!
//! Admission (key, claim, webhook, reconnect, takeover) is the broadcast core's
//! (`broadcast::Core::admit`); this module only maps its refusals to RTMP's `onStatus` codes.

use std::sync::Arc;
use std::time::Duration;

use rml_rtmp::handshake::{Handshake, HandshakeProcessResult, PeerType};
use rml_rtmp::sessions::ServerSessionEvent;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::time::Instant;

use super::guard::GuardLimits;
use super::session::{handshake_step, GuardedSession, SessionError};
use super::IngestContext;
use crate::broadcast::{AdmitError, Broadcast, Ending, Protocol};
use crate::ingest::admission::Admission;
use crate::ingest::flv::{FlvDemuxer, FlvError};
use crate::media::StreamEvent;

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
    #[error("publish refused: {0}")]
    Refused(String),
    #[error(transparent)]
    Admit(#[from] AdmitError),
    #[error("unsupported stream: {0}")]
    Unsupported(FlvError),
    #[error("the broadcast pipeline stopped")]
    PipelineGone,
    #[error("replaced by a newer publisher of the same stream, or server shutdown")]
    Cancelled,
}

/// The broadcast this connection carries, with the connection's own demuxer (a reconnect
/// starts a new one; the broadcast's clock continues the timeline).
struct Publishing {
    broadcast: Broadcast,
    demuxer: FlvDemuxer,
    dropped_tags: u64,
}

impl Publishing {
    /// The connection ended `how`: the core ends the broadcast or parks it for a reconnect.
    async fn finish(self, ctx: &IngestContext, how: Ending) {
        if self.dropped_tags > 0 {
            tracing::warn!(playback_id = %self.broadcast.playback_id(), dropped = self.dropped_tags, "tags dropped on this connection");
        }
        ctx.core.finish(self.broadcast, how).await;
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

/// Serves one connection from `peer` until it closes; `protocol` is RTMP or RTMPS.
pub async fn handle(
    socket: Box<dyn Transport>,
    peer: std::net::IpAddr,
    protocol: Protocol,
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
        let how = match &result {
            Err(
                ConnectionError::Io(_)
                | ConnectionError::Idle(_)
                | ConnectionError::WriteTimeout(_),
            ) => Ending::Lost,
            Ok(()) => {
                tracing::info!(playback_id = %publishing.broadcast.playback_id(), "publisher closed the connection without unpublishing; ending the broadcast");
                Ending::Finished
            }
            Err(_) => Ending::Failed,
        };
        publishing.finish(&connection.ctx, how).await;
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
    protocol: Protocol,
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
        // 16 KiB: a 20 Mb/s publisher fills it about 150 times a second; a bigger buffer is
        // memory held by every connection for nothing
        let mut buf = vec![0u8; 16 * 1024];
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
        let cancel = self.publishing.as_ref().map(|p| p.broadcast.cancel.clone());
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
            tracing::info!(playback_id = %publishing.broadcast.playback_id(), command, "publisher unpublished; ending the broadcast");
            publishing.finish(&self.ctx, Ending::Finished).await;
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
                    self.publishing = Some(publishing);
                    self.setup = None;
                    self.admission.publishing();
                    self.accept(request_id).await
                }
                Err(refusal) => self.refuse(request_id, refusal).await,
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
                let playback_id = p.broadcast.playback_id();
                let described = format!(
                    "{:?} {:?} {:?} {:?}",
                    metadata.video_width,
                    metadata.video_height,
                    metadata.video_frame_rate,
                    metadata.encoder
                );
                if self.last_metadata.as_ref() != Some(&described) {
                    tracing::info!(
                        %playback_id,
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

    /// Admits the publish through the broadcast core; its refusals become RTMP `onStatus`
    /// codes.
    async fn start_publishing(&self, stream_key: &str) -> Result<Publishing, Refusal> {
        const BAD_NAME: &str = "NetStream.Publish.BadName";
        if self.publishing.is_some() {
            let error = ConnectionError::Refused("second publish on one connection".into());
            return Err(Refusal::new(BAD_NAME, "already publishing", error));
        }
        // Some encoders append `?options` to the key field.
        let key = stream_key.split('?').next().unwrap_or_default();
        match self.ctx.core.admit(key, self.peer, self.protocol).await {
            Ok(broadcast) => Ok(Publishing {
                broadcast,
                demuxer: FlvDemuxer::new(),
                dropped_tags: 0,
            }),
            Err(e) => {
                let (code, description) = match &e {
                    AdmitError::BadKey => (BAD_NAME, "unknown stream key"),
                    AdmitError::LiveElsewhere(_) => (BAD_NAME, "stream live on another node"),
                    AdmitError::HookRefused(_) => (
                        "NetStream.Publish.Rejected",
                        "refused by the server's publish hook",
                    ),
                    AdmitError::Busy(_) => (BAD_NAME, "stream busy"),
                    AdmitError::Database(_) => ("NetStream.Publish.Failed", "server error"),
                };
                Err(Refusal::new(code, description, e.into()))
            }
        }
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
        match demux(&mut p.demuxer, timestamp) {
            Ok(Some(event)) => p
                .broadcast
                .send(event)
                .await
                .map_err(|_| ConnectionError::PipelineGone),
            Ok(None) => Ok(()),
            Err(e) if e.is_fatal() => Err(ConnectionError::Unsupported(e)),
            Err(e) => {
                p.dropped_tags += 1;
                if p.dropped_tags == 1 {
                    tracing::warn!(playback_id = %p.broadcast.playback_id(), error = %e, "dropping tag");
                }
                Ok(())
            }
        }
    }
}
