//! One RTMP connection: handshake, connect, publish (key checked before any media is
//! accepted), then FLV tags → `StreamEvent`s into the broadcast's pipeline.
//!
//! Everything from handshake to an accepted `publish` must finish within the configured
//! timeout; after that, a publisher silent for `IDLE_TIMEOUT` is considered gone. Any protocol
//! error closes this connection with one log line and nothing else.

use std::sync::Arc;
use std::time::Duration;

use rml_rtmp::handshake::{Handshake, HandshakeProcessResult, PeerType};
use rml_rtmp::sessions::{ServerSessionEvent, ServerSessionResult};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::sync::mpsc;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use super::guard::GuardLimits;
use super::session::{GuardedSession, SessionError};
use super::IngestContext;
use crate::ingest::flv::{FlvDemuxer, FlvError};
use crate::media::StreamEvent;
use crate::pipeline;

/// A publishing connection that sends nothing for this long is closed.
pub const IDLE_TIMEOUT: Duration = Duration::from_secs(15);

#[derive(Debug, thiserror::Error)]
pub enum ConnectionError {
    #[error("socket: {0}")]
    Io(#[from] std::io::Error),
    #[error("handshake: {0}")]
    Handshake(String),
    #[error(transparent)]
    Session(#[from] SessionError),
    #[error("no publish within {0:?} of connecting")]
    SetupTimeout(Duration),
    #[error("publisher silent for {0:?}")]
    Idle(Duration),
    #[error("connect to unknown application (expected `{0}`)")]
    UnknownApp(String),
    #[error("publish refused: unknown stream key")]
    BadKey,
    #[error("publish refused: {0}")]
    Refused(String),
    #[error("unsupported stream: {0}")]
    Unsupported(FlvError),
    #[error("the broadcast pipeline stopped")]
    PipelineGone,
    #[error("replaced by a newer publisher of the same stream, or server shutdown")]
    Cancelled,
}

struct Publishing {
    playback_id: String,
    events: mpsc::Sender<StreamEvent>,
    cancel: CancellationToken,
    demuxer: FlvDemuxer,
    dropped_tags: u64,
}

pub async fn handle(mut socket: TcpStream, ctx: Arc<IngestContext>) -> Result<(), ConnectionError> {
    let setup_timeout = Duration::from_secs_f64(ctx.settings.handshake_timeout);
    let setup_deadline = Instant::now() + setup_timeout;
    let mut buf = vec![0u8; 64 * 1024];

    // Handshake (fixed sizes: C0+C1 1537 bytes, C2 1536 bytes).
    let mut handshake = Handshake::new(PeerType::Server);
    let leftover = loop {
        let n = read_before(&mut socket, &mut buf, setup_deadline, setup_timeout).await?;
        if n == 0 {
            return Err(ConnectionError::Io(
                std::io::ErrorKind::UnexpectedEof.into(),
            ));
        }
        match handshake.process_bytes(&buf[..n]) {
            Ok(HandshakeProcessResult::InProgress { response_bytes }) => {
                socket.write_all(&response_bytes).await?;
            }
            Ok(HandshakeProcessResult::Completed {
                response_bytes,
                remaining_bytes,
            }) => {
                socket.write_all(&response_bytes).await?;
                break remaining_bytes;
            }
            Err(e) => return Err(ConnectionError::Handshake(format!("{e:?}"))),
        }
    };

    let (mut session, hello) =
        GuardedSession::new(GuardLimits::new(ctx.settings.max_message_size))?;
    socket.write_all(&hello).await?;
    let mut publishing: Option<Publishing> = None;
    // The setup deadline applies until the first publish is accepted, not after it ends.
    let mut published = false;
    let mut pending = leftover;
    loop {
        if !pending.is_empty() {
            let (out, results) = session.input(&pending)?;
            pending.clear();
            if !out.is_empty() {
                socket.write_all(&out).await?;
            }
            for result in results {
                let ServerSessionResult::RaisedEvent(event) = result else {
                    continue;
                };
                let reply = on_event(&ctx, &mut session, &mut publishing, event).await;
                let (bytes, outcome) = match reply {
                    Ok(bytes) => (bytes, Ok(())),
                    Err((bytes, e)) => (bytes, Err(e)),
                };
                if !bytes.is_empty() {
                    socket.write_all(&bytes).await?;
                }
                if let Err(e) = outcome {
                    end_broadcast(&mut publishing).await;
                    return Err(e);
                }
                published |= publishing.is_some();
            }
        }
        let read = match &publishing {
            None if !published => {
                read_before(&mut socket, &mut buf, setup_deadline, setup_timeout).await
            }
            None => tokio::time::timeout(IDLE_TIMEOUT, socket.read(&mut buf))
                .await
                .map_err(|_| ConnectionError::Idle(IDLE_TIMEOUT))
                .and_then(|r| r.map_err(ConnectionError::from)),
            Some(p) => {
                tokio::select! {
                    r = tokio::time::timeout(IDLE_TIMEOUT, socket.read(&mut buf)) => match r {
                        Ok(r) => r.map_err(ConnectionError::from),
                        Err(_) => Err(ConnectionError::Idle(IDLE_TIMEOUT)),
                    },
                    _ = p.cancel.cancelled() => Err(ConnectionError::Cancelled),
                }
            }
        };
        match read {
            Ok(0) => {
                end_broadcast(&mut publishing).await;
                return Ok(());
            }
            Ok(n) => pending.extend_from_slice(&buf[..n]),
            Err(e) => {
                end_broadcast(&mut publishing).await;
                return Err(e);
            }
        }
    }
}

async fn read_before(
    socket: &mut TcpStream,
    buf: &mut [u8],
    deadline: Instant,
    timeout: Duration,
) -> Result<usize, ConnectionError> {
    match tokio::time::timeout_at(deadline, socket.read(buf)).await {
        Ok(r) => Ok(r?),
        Err(_) => Err(ConnectionError::SetupTimeout(timeout)),
    }
}

async fn end_broadcast(publishing: &mut Option<Publishing>) {
    if let Some(p) = publishing.take() {
        // Fails only when the pipeline already ended; nothing more to tell it then.
        let _ = p.events.send(StreamEvent::End).await;
        if p.dropped_tags > 0 {
            tracing::warn!(playback_id = %p.playback_id, dropped = p.dropped_tags, "tags dropped during the broadcast");
        }
    }
}

type Reply = Result<Vec<u8>, (Vec<u8>, ConnectionError)>;

async fn on_event(
    ctx: &Arc<IngestContext>,
    session: &mut GuardedSession,
    publishing: &mut Option<Publishing>,
    event: ServerSessionEvent,
) -> Reply {
    let fail = |e: ConnectionError| (Vec::new(), e);
    match event {
        ServerSessionEvent::ConnectionRequested {
            request_id,
            app_name,
        } => {
            if app_name.trim_end_matches('/') == ctx.settings.app {
                session.accept(request_id).map_err(|e| fail(e.into()))
            } else {
                let bytes = session
                    .reject(
                        request_id,
                        "NetConnection.Connect.Rejected",
                        "unknown application",
                    )
                    .unwrap_or_default();
                Err((bytes, ConnectionError::UnknownApp(ctx.settings.app.clone())))
            }
        }
        ServerSessionEvent::PublishStreamRequested {
            request_id,
            stream_key,
            ..
        } => {
            if publishing.is_some() {
                let bytes = session
                    .reject(
                        request_id,
                        "NetStream.Publish.BadName",
                        "already publishing",
                    )
                    .unwrap_or_default();
                return Err((
                    bytes,
                    ConnectionError::Refused("second publish on one connection".into()),
                ));
            }
            // Some encoders append `?options` to the key field.
            let key = stream_key.split('?').next().unwrap_or_default();
            let stream = match ctx.db.stream_by_key(key).await {
                Ok(Some(stream)) => stream,
                Ok(None) => {
                    let bytes = session
                        .reject(
                            request_id,
                            "NetStream.Publish.BadName",
                            "unknown stream key",
                        )
                        .unwrap_or_default();
                    return Err((bytes, ConnectionError::BadKey));
                }
                Err(e) => {
                    let bytes = session
                        .reject(request_id, "NetStream.Publish.Failed", "server error")
                        .unwrap_or_default();
                    return Err((bytes, ConnectionError::Refused(e.to_string())));
                }
            };
            let lease = match ctx.hub.begin(&stream.id, &ctx.pipeline.shutdown).await {
                Ok(lease) => lease,
                Err(e) => {
                    let bytes = session
                        .reject(request_id, "NetStream.Publish.BadName", "stream busy")
                        .unwrap_or_default();
                    return Err((bytes, ConnectionError::Refused(e.to_string())));
                }
            };
            let cancel = lease.cancel.clone();
            let playback_id = stream.playback_id.clone();
            tracing::info!(%playback_id, "publish accepted");
            let events = pipeline::spawn(ctx.pipeline.clone(), stream, lease, &ctx.tracker);
            *publishing = Some(Publishing {
                playback_id,
                events,
                cancel,
                demuxer: FlvDemuxer::new(),
                dropped_tags: 0,
            });
            session.accept(request_id).map_err(|e| fail(e.into()))
        }
        ServerSessionEvent::VideoDataReceived {
            data, timestamp, ..
        } => forward(publishing, |d| d.video(data, timestamp.value)).await,
        ServerSessionEvent::AudioDataReceived {
            data, timestamp, ..
        } => forward(publishing, |d| d.audio(data, timestamp.value)).await,
        ServerSessionEvent::StreamMetadataChanged { metadata, .. } => {
            if let Some(p) = publishing {
                tracing::info!(
                    playback_id = %p.playback_id,
                    width = metadata.video_width,
                    height = metadata.video_height,
                    fps = metadata.video_frame_rate,
                    encoder = metadata.encoder.as_deref().unwrap_or(""),
                    "publisher metadata (advisory)"
                );
            }
            Ok(Vec::new())
        }
        ServerSessionEvent::PublishStreamFinished { .. } => {
            end_broadcast(publishing).await;
            Ok(Vec::new())
        }
        _ => Ok(Vec::new()),
    }
}

async fn forward(
    publishing: &mut Option<Publishing>,
    demux: impl FnOnce(&mut FlvDemuxer) -> Result<Option<StreamEvent>, FlvError>,
) -> Reply {
    // Media before an accepted publish is ignored (rml_rtmp only raises it for a publisher).
    let Some(p) = publishing else {
        return Ok(Vec::new());
    };
    match demux(&mut p.demuxer) {
        Ok(Some(event)) => p
            .events
            .send(event)
            .await
            .map(|_| Vec::new())
            .map_err(|_| (Vec::new(), ConnectionError::PipelineGone)),
        Ok(None) => Ok(Vec::new()),
        Err(e) if e.is_fatal() => Err((Vec::new(), ConnectionError::Unsupported(e))),
        Err(e) => {
            p.dropped_tags += 1;
            if p.dropped_tags == 1 {
                tracing::warn!(playback_id = %p.playback_id, error = %e, "dropping tag");
            }
            Ok(Vec::new())
        }
    }
}
