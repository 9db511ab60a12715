//! WebSocket ingest (`GET /ingest/ws`): a browser's `MediaRecorder` output, as the Go live page
//! (`web/src/pages/GoLive.svelte`) or any other client sends it. The protocol (`messages`, and
//! the README's "Go live from a browser"):
//! 1. the client's first message is text, `{"key": …, "mime": …}` (the key never travels in a
//!    URL), within `ws.hello_timeout`;
//! 2. the server admits the publisher through the broadcast core (key, claim, webhook, takeover,
//!    reconnect grace: as for every protocol) and answers `{"type": "live", …}`, or an
//!    `error` (`bad_key`, `refused`, `busy`, …) and closes;
//! 3. binary messages carry the recording's bytes in order, each at most
//!    `ws.max_message_bytes` (past it: `too_large`, close); `{"type": "recording", "mime": …}`
//!    starts a new recording on the same socket (a discontinuity: the page does it to lower its
//!    bitrate); `{"type": "stop"}` ends the broadcast at once (`ended`, close);
//! 4. the server sends `status` about once a second.
//!
//! Decisions:
//! - The container is demuxed by libavformat in a process of its own per recording (`child`,
//!   started by `demux`), never in the server; the broadcast's transcoding worker decodes
//!   VP8/VP9/H.264 and Opus, as for any other way in. Demuxing apart from the worker keeps this
//!   protocol "a demuxer and a clock": its frames go through the broadcast core (stats, the
//!   clock that continues across reconnects, takeover) like RTMP's, and a reconnect or a new
//!   recording starts a fresh demuxer without touching the ladder. A browser's recording is
//!   always transcoded (see `Protocol::needs_transcoding`).
//! - A socket that closes without `stop`, or brings no byte for `ws.idle_timeout`, is a lost
//!   publisher: the broadcast waits for a reconnect during the grace, and the page reconnects by
//!   itself with a new recording, which continues the broadcast's timeline.
//! - A takeover, a stop from the API or a revoked key closes the socket with `error`/`ended`;
//!   a server shutting down with `busy` (the page retries).
//! - Every message to the client waits at most `SEND_TIMEOUT` for room: a client that does
//!   not read what it is sent is lost, and cannot hold its connection slot.
//! - Back-pressure: while the demuxer's input is full the connection reads nothing more from
//!   the socket (which does not count against `ws.idle_timeout`), so the browser's
//!   `bufferedAmount` grows and the page lowers its bitrate. What one connection holds is
//!   bounded (see `demux`); `ws.max_connections` sockets at most.

pub mod child;
mod demux;
pub mod messages;

use std::net::{IpAddr, Ipv4Addr};
use std::sync::Arc;
use std::time::{Duration, Instant};

use actix_web::{web, HttpRequest, HttpResponse};
use actix_ws::{AggregatedMessage, AggregatedMessageStream, CloseCode, CloseReason, Session};
use bytes::Bytes;
use tokio::sync::{mpsc, OwnedSemaphorePermit, Semaphore};

use self::demux::{Demux, Ended, Output};
use self::messages::{Container, Control, ErrorCode, Hello, ServerMessage};
use crate::broadcast::{AdmitError, Broadcast, Core, Ending, Protocol};
use crate::media::{vp9_keyframe_size, CodecConfig, StreamEvent};
use crate::telemetry::LogThrottle;

/// How often the client is told its status.
const STATUS_EVERY: Duration = Duration::from_secs(1);
/// How long a finished recording's demuxer may take to hand over its last frames.
const DRAIN_TIMEOUT: Duration = Duration::from_secs(5);
/// How long a message to the client may wait for room in the socket's send queue: a client
/// that does not read what it is sent is lost after this.
const SEND_TIMEOUT: Duration = Duration::from_secs(2);

/// The limits of `[ws]`.
#[derive(Debug, Clone)]
pub struct WsLimits {
    pub max_message_bytes: usize,
    pub hello_timeout: Duration,
    pub idle_timeout: Duration,
    pub max_connections: usize,
}

/// The WebSocket ingest endpoint's state.
pub struct WsIngest {
    limits: WsLimits,
    core: Arc<Core>,
    open: Arc<Semaphore>,
    refusals: LogThrottle,
}

impl WsIngest {
    pub fn new(limits: WsLimits, core: Arc<Core>) -> Arc<Self> {
        Arc::new(Self {
            open: Arc::new(Semaphore::new(limits.max_connections)),
            limits,
            core,
            refusals: LogThrottle::new(Duration::from_secs(5)),
        })
    }
}

/// Routes `/ingest/ws`; the caller adds the `WsIngest` as app data.
pub fn configure(cfg: &mut web::ServiceConfig) {
    cfg.route("/ingest/ws", web::get().to(upgrade));
}

async fn upgrade(
    request: HttpRequest,
    body: web::Payload,
    ingest: web::Data<Arc<WsIngest>>,
) -> Result<HttpResponse, actix_web::Error> {
    let Ok(permit) = ingest.open.clone().try_acquire_owned() else {
        return Ok(HttpResponse::ServiceUnavailable()
            .content_type("text/plain; charset=utf-8")
            .body("too many WebSocket publishers on this server\n"));
    };
    let peer = request
        .peer_addr()
        .map_or(IpAddr::V4(Ipv4Addr::UNSPECIFIED), |a| a.ip());
    let (response, session, stream) = actix_ws::handle(&request, body)?;
    let max = ingest.limits.max_message_bytes;
    let stream = stream
        .max_frame_size(max)
        .aggregate_continuations()
        .max_continuation_size(max);
    let ingest = ingest.get_ref().clone();
    // the connection outlives this request's handler: it is the response body's producer
    actix_web::rt::spawn(
        Connection {
            ingest,
            session,
            stream,
            peer,
            _permit: permit,
        }
        .run(),
    );
    Ok(response)
}

/// One publisher's socket.
struct Connection {
    ingest: Arc<WsIngest>,
    session: Session,
    stream: AggregatedMessageStream,
    peer: IpAddr,
    _permit: OwnedSemaphorePermit,
}

/// How a connection ends: what the broadcast does, and what the client is told last.
struct Close {
    how: Ending,
    message: Option<ServerMessage>,
}

impl Close {
    fn error(how: Ending, code: ErrorCode, message: impl Into<String>) -> Self {
        Self {
            how,
            message: Some(ServerMessage::Error {
                code,
                message: message.into(),
            }),
        }
    }

    fn lost() -> Self {
        Self {
            how: Ending::Lost,
            message: None,
        }
    }
}

impl Connection {
    async fn run(mut self) {
        let hello = match tokio::time::timeout(self.ingest.limits.hello_timeout, self.hello()).await
        {
            Ok(Ok(hello)) => hello,
            Ok(Err(close)) => return self.close(close.message).await,
            Err(_) => {
                let message = format!(
                    "no opening message within {} s",
                    self.ingest.limits.hello_timeout.as_secs_f64()
                );
                return self
                    .close(Some(ServerMessage::Error {
                        code: ErrorCode::BadRequest,
                        message,
                    }))
                    .await;
            }
        };
        let core = self.ingest.core.clone();
        let mut broadcast = match core.admit(&hello.key, self.peer, Protocol::Ws).await {
            Ok(broadcast) => broadcast,
            Err(e) => {
                if let Some(unlogged) = self.ingest.refusals.check() {
                    tracing::warn!(peer = %self.peer, unlogged, "WebSocket publish refused: {e}");
                }
                let code = match e {
                    AdmitError::BadKey => ErrorCode::BadKey,
                    AdmitError::HookRefused(_) | AdmitError::LiveElsewhere(_) => ErrorCode::Refused,
                    AdmitError::Busy(_) | AdmitError::Database(_) => ErrorCode::Busy,
                };
                // the webhook's and the database's errors stay in the server's log
                let message = match e {
                    AdmitError::BadKey => "unknown stream key, or one that was rotated".to_string(),
                    AdmitError::HookRefused(_) => "refused by this server's publish policy".into(),
                    AdmitError::Database(_) => "the server cannot check keys now".into(),
                    AdmitError::LiveElsewhere(_) | AdmitError::Busy(_) => e.to_string(),
                };
                return self
                    .close(Some(ServerMessage::Error { code, message }))
                    .await;
            }
        };
        let span =
            tracing::info_span!("ws", playback_id = %broadcast.playback_id(), peer = %self.peer);
        tracing::info!(parent: &span, container = ?hello.container, "WebSocket publisher live");
        let close = tracing::Instrument::instrument(
            self.publish(&mut broadcast, hello.container),
            span.clone(),
        )
        .await;
        match &close.message {
            Some(ServerMessage::Error { code, message }) => {
                tracing::info!(parent: &span, ?code, "WebSocket publisher closed: {message}")
            }
            _ => tracing::info!(parent: &span, ending = ?close.how, "WebSocket publisher closed"),
        }
        core.finish(broadcast, close.how).await;
        self.close(close.message).await;
    }

    /// The opening message.
    async fn hello(&mut self) -> Result<Hello, Close> {
        loop {
            match self.stream.recv().await {
                Some(Ok(AggregatedMessage::Text(text))) => {
                    return Hello::parse(&text).map_err(|e| {
                        let code = match e {
                            messages::MessageError::UnsupportedMime(_) => ErrorCode::Unsupported,
                            _ => ErrorCode::BadRequest,
                        };
                        Close::error(Ending::Failed, code, e.to_string())
                    })
                }
                Some(Ok(AggregatedMessage::Ping(ping))) => {
                    if !self.pong(&ping).await {
                        return Err(Close::lost());
                    }
                }
                Some(Ok(AggregatedMessage::Pong(_))) => {}
                Some(Ok(AggregatedMessage::Binary(_))) => {
                    return Err(Close::error(
                        Ending::Failed,
                        ErrorCode::BadRequest,
                        "the first message must be text: {\"key\": …, \"mime\": …}",
                    ))
                }
                Some(Ok(AggregatedMessage::Close(_))) | None => return Err(Close::lost()),
                Some(Err(e)) => return Err(protocol_error(e)),
            }
        }
    }

    /// Sends `message`; false when the client is gone, or does not read what it is sent
    /// (a full send queue for `SEND_TIMEOUT`): then it counts as lost.
    async fn send(&mut self, message: &ServerMessage) -> bool {
        let sent = tokio::time::timeout(SEND_TIMEOUT, self.session.text(message.to_json())).await;
        matches!(sent, Ok(Ok(())))
    }

    /// Answers a ping, as `send`.
    async fn pong(&mut self, ping: &[u8]) -> bool {
        matches!(
            tokio::time::timeout(SEND_TIMEOUT, self.session.pong(ping)).await,
            Ok(Ok(()))
        )
    }

    /// Carries the recording into `broadcast` until the connection ends.
    async fn publish(&mut self, broadcast: &mut Broadcast, container: Container) -> Close {
        let stats = broadcast.stats.clone();
        let live = ServerMessage::Live {
            stream: stats.id.stream_name.clone(),
            playback_id: stats.id.playback_id.clone(),
            watch_url: format!("/watch/{}", stats.id.playback_id),
            resumed: stats.bytes_in() > 0,
        };
        if !self.send(&live).await {
            return Close::lost();
        }
        let limits = self.ingest.core.pipeline.worker;
        let playback_id = stats.id.playback_id.clone();
        let start = |container| {
            let playback_id = playback_id.clone();
            async move {
                Demux::start(container, limits, &playback_id).await.map_err(|e| {
                    tracing::error!(error = %e, "cannot start the recording's demuxer; ending this broadcast");
                    Close::error(Ending::Failed, ErrorCode::Busy, "the server cannot take this recording now")
                })
            }
        };
        let mut demux = match start(container).await {
            Ok(demux) => demux,
            Err(close) => return close,
        };
        let mut recording_over = false;
        let mut pending: Option<Bytes> = None;
        let mut received: u64 = 0;
        let mut rate = Rate::new(received);
        let mut tracks = Tracks::default();
        let mut last_bytes = Instant::now();
        let mut tick = tokio::time::interval(STATUS_EVERY);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let cancel = broadcast.cancel.clone();
        loop {
            let step = {
                let (input, output) = demux.parts();
                tokio::select! {
                    biased;
                    _ = cancel.cancelled() => Step::Cancelled,
                    out = output.recv(), if !recording_over => Step::Demuxed(out),
                    permit = reserve(input), if pending.is_some() => {
                        // no permit: the demuxer stopped reading, and its end follows on `output`
                        if let (Some(permit), Some(bytes)) = (permit, pending.take()) {
                            permit.send(bytes);
                            // the server held the socket unread until now: not the client's idling
                            last_bytes = Instant::now();
                        }
                        continue;
                    }
                    message = self.stream.recv(), if pending.is_none() => Step::Message(message),
                    _ = tick.tick() => Step::Tick,
                }
            };
            match step {
                Step::Cancelled => return self.cancelled(),
                Step::Demuxed(Some(Output::Event(event))) => {
                    if let Err(close) = hand_over(broadcast, &mut tracks, event).await {
                        return close;
                    }
                    // a frame came of the client's bytes: a full pipeline is not its idling
                    last_bytes = Instant::now();
                }
                Step::Demuxed(Some(Output::Ended(ended))) => {
                    if let Err(close) = recording_ended(ended) {
                        return close;
                    }
                    recording_over = true; // the client may start another
                }
                Step::Demuxed(None) => recording_over = true,
                Step::Message(Some(Ok(AggregatedMessage::Binary(bytes)))) => {
                    if recording_over {
                        return Close::error(
                            Ending::Failed,
                            ErrorCode::BadRequest,
                            "the recording had ended: send {\"type\": \"recording\", …} before a new one",
                        );
                    }
                    received += bytes.len() as u64;
                    last_bytes = Instant::now();
                    pending = Some(bytes);
                }
                Step::Message(Some(Ok(AggregatedMessage::Text(text)))) => {
                    match Control::parse(&text) {
                        Ok(Control::Stop) => {
                            if let Err(close) =
                                drain(&mut demux, broadcast, &cancel, &mut tracks, recording_over)
                                    .await
                            {
                                return close;
                            }
                            return Close {
                                how: Ending::Finished,
                                message: Some(ServerMessage::Ended {
                                    reason: "stopped by the publisher".into(),
                                }),
                            };
                        }
                        Ok(Control::Recording(next)) => {
                            if let Err(close) =
                                drain(&mut demux, broadcast, &cancel, &mut tracks, recording_over)
                                    .await
                            {
                                return close;
                            }
                            if broadcast.discontinuity().await.is_err() {
                                return Close::error(
                                    Ending::Failed,
                                    ErrorCode::Ended,
                                    "the broadcast stopped",
                                );
                            }
                            tracing::info!(container = ?next, "a new recording continues the broadcast");
                            demux = match start(next).await {
                                Ok(demux) => demux,
                                Err(close) => return close,
                            };
                            recording_over = false;
                        }
                        Err(e) => {
                            return Close::error(
                                Ending::Failed,
                                ErrorCode::BadRequest,
                                e.to_string(),
                            )
                        }
                    }
                }
                Step::Message(Some(Ok(AggregatedMessage::Ping(ping)))) => {
                    if !self.pong(&ping).await {
                        return Close::lost();
                    }
                }
                Step::Message(Some(Ok(AggregatedMessage::Pong(_)))) => {}
                Step::Message(Some(Ok(AggregatedMessage::Close(_))) | None) => {
                    tracing::info!(
                        "the publisher's socket closed without a stop: waiting for a reconnect"
                    );
                    return Close::lost();
                }
                Step::Message(Some(Err(e))) => return protocol_error(e),
                Step::Tick => {
                    if last_bytes.elapsed() > self.ingest.limits.idle_timeout {
                        tracing::info!(
                            idle_secs = self.ingest.limits.idle_timeout.as_secs_f64(),
                            "no recording bytes: the publisher is lost"
                        );
                        return Close::lost();
                    }
                    let status = ServerMessage::Status {
                        received_bytes: received,
                        bitrate_kbps: rate.kbps(received),
                        video: tracks.video.clone(),
                        audio: tracks.audio.clone(),
                    };
                    if !self.send(&status).await {
                        return Close::lost();
                    }
                }
            }
        }
    }

    /// The broadcast's token fired: a takeover, a stop from the API, a revoked key, shutdown.
    fn cancelled(&self) -> Close {
        if self.ingest.core.pipeline.shutdown.is_cancelled() {
            return Close::error(
                Ending::Failed,
                ErrorCode::Busy,
                "the server is shutting down; try again in a moment",
            );
        }
        Close::error(
            Ending::Failed,
            ErrorCode::Ended,
            "this broadcast was stopped, or another publisher took it over",
        )
    }

    /// Tells the client `message` (if any) and closes the socket with a close frame whose code
    /// says the same (RFC 6455 §7.4.1). A client that does not read gets `SEND_TIMEOUT` for each.
    async fn close(mut self, message: Option<ServerMessage>) {
        let code = match &message {
            Some(ServerMessage::Error { code, .. }) => match code {
                ErrorCode::TooLarge => CloseCode::Size,
                ErrorCode::Unsupported => CloseCode::Unsupported,
                ErrorCode::Busy => CloseCode::Again,
                ErrorCode::BadKey
                | ErrorCode::BadRequest
                | ErrorCode::Refused
                | ErrorCode::Ended => CloseCode::Policy,
            },
            _ => CloseCode::Normal,
        };
        if let Some(message) = message {
            let _ = self.send(&message).await;
        }
        let reason = CloseReason {
            code,
            description: None,
        };
        let _ = tokio::time::timeout(SEND_TIMEOUT, self.session.close(Some(reason))).await;
    }
}

/// What woke the connection's loop.
enum Step {
    Cancelled,
    Demuxed(Option<Output>),
    Message(Option<Result<AggregatedMessage, actix_ws::ProtocolError>>),
    Tick,
}

async fn reserve(input: Option<&mpsc::Sender<Bytes>>) -> Option<mpsc::Permit<'_, Bytes>> {
    input?.reserve().await.ok()
}

/// A WebSocket framing error: a connection that broke off is a lost publisher, an oversized
/// message says so, anything else is a broken client.
fn protocol_error(e: actix_ws::ProtocolError) -> Close {
    match e {
        actix_ws::ProtocolError::Io(e) => {
            tracing::info!(error = %e, "the publisher's connection broke off: waiting for a reconnect");
            Close::lost()
        }
        actix_ws::ProtocolError::Overflow => Close::error(
            Ending::Failed,
            ErrorCode::TooLarge,
            "a message over the server's limit (ws.max_message_bytes): send smaller slices",
        ),
        other => Close::error(Ending::Failed, ErrorCode::BadRequest, other.to_string()),
    }
}

/// What a demuxer's end means for the connection: a finished recording lets it go on.
fn recording_ended(ended: Ended) -> Result<(), Close> {
    match ended {
        Ended::Finished => Ok(()),
        Ended::Unsupported => Err(Close::error(
            Ending::Failed,
            ErrorCode::Unsupported,
            "the recording's codecs are not ones Strata decodes (VP8, VP9 or H.264 video; Opus \
             or AAC audio)",
        )),
        Ended::Failed(why) => {
            tracing::warn!("the browser's recording cannot be read: {why}");
            Err(Close::error(
                Ending::Failed,
                ErrorCode::Unsupported,
                "the recording cannot be read",
            ))
        }
    }
}

/// Ends the current recording: its demuxer reads what is queued, then everything it still
/// holds goes to the broadcast.
async fn drain(
    demux: &mut Demux,
    broadcast: &mut Broadcast,
    cancel: &tokio_util::sync::CancellationToken,
    tracks: &mut Tracks,
    recording_over: bool,
) -> Result<(), Close> {
    if recording_over {
        return Ok(());
    }
    demux.finish_input();
    let deadline = tokio::time::Instant::now() + DRAIN_TIMEOUT;
    loop {
        let out = tokio::select! {
            _ = cancel.cancelled() => return Ok(()),
            _ = tokio::time::sleep_until(deadline) => {
                tracing::warn!("the recording's demuxer did not finish in time; its last frames are lost");
                return Ok(());
            }
            out = demux.next() => out,
        };
        match out {
            Some(Output::Event(event)) => hand_over(broadcast, tracks, event).await?,
            Some(Output::Ended(ended)) => return recording_ended(ended),
            None => return Ok(()),
        }
    }
}

/// One demuxed event into the broadcast (waiting while its queue is full).
async fn hand_over(
    broadcast: &mut Broadcast,
    tracks: &mut Tracks,
    event: StreamEvent,
) -> Result<(), Close> {
    tracks.note(&event);
    broadcast
        .send(event)
        .await
        .map_err(|_| Close::error(Ending::Failed, ErrorCode::Ended, "the broadcast stopped"))
}

/// The recording's tracks, as the status tells the client (`VP8 640x480`, `Opus`).
#[derive(Default)]
struct Tracks {
    video: Option<String>,
    audio: Option<String>,
}

impl Tracks {
    fn note(&mut self, event: &StreamEvent) {
        let info = match event {
            StreamEvent::Track(info) => info,
            // VP9's size is in its keyframes only
            StreamEvent::Frame(frame) if frame.sync && self.video.as_deref() == Some("VP9") => {
                if let Some((w, h)) = vp9_keyframe_size(&frame.data) {
                    self.video = Some(format!("VP9 {w}x{h}"));
                }
                return;
            }
            _ => return,
        };
        let codec = &info.codec;
        match codec {
            CodecConfig::Aac(_) | CodecConfig::Opus(_) => self.audio = Some(codec.name().into()),
            video => {
                self.video = Some(match video.video_size() {
                    Some((w, h)) => format!("{} {w}x{h}", video.name()),
                    None => video.name().into(),
                })
            }
        }
    }
}

/// Bytes received per second, over the last status interval.
struct Rate {
    bytes: u64,
    at: Instant,
}

impl Rate {
    fn new(bytes: u64) -> Self {
        Self {
            bytes,
            at: Instant::now(),
        }
    }

    fn kbps(&mut self, bytes: u64) -> f64 {
        let secs = self.at.elapsed().as_secs_f64().max(0.001);
        let kbps = (bytes - self.bytes) as f64 * 8.0 / 1000.0 / secs;
        *self = Self::new(bytes);
        (kbps * 10.0).round() / 10.0
    }
}
