//! The devices' signaling socket (`GET /ingest/device`, WebSocket; protocol in `messages`).
//!
//! One task per connection:
//! 1. the token comes in an `Authorization: Bearer` header or the `hello` (first message,
//!    within `devices.hello_timeout`); an unknown, rotated or revoked token gets
//!    `error: bad_token` and the socket closes (1008);
//! 2. the device is registered (a second connection with the same token replaces the first),
//!    told `welcome`, and is `online`;
//! 3. the server pings every `devices.ping_interval` and measures the round-trip time; a device
//!    that sends nothing for `devices.offline_after` is lost, like one whose socket closed;
//! 4. `start` (from the API, or by itself when the device comes back while it was meant to be
//!    streaming) admits a broadcast through the core with the device's token
//!    (`Protocol::Rtp`), opens an RTP route (fresh SSRC, the socket's IP address) and tells
//!    the device where to send; the RTP session (`ingest::rtp::carry`) runs in a task of its
//!    own, and its keyframe requests come back here to be sent;
//! 5. `stop` ends the broadcast; a lost socket parks it for the reconnect grace (the device's
//!    return continues it); a stop from the API's sessions, a takeover or no RTP for
//!    `devices.rtp_idle_timeout` ends it and the device is told `stop`.

use std::net::{IpAddr, Ipv4Addr};
use std::sync::Arc;
use std::time::{Duration, Instant};

use actix_web::{web, HttpRequest, HttpResponse};
use actix_ws::{AggregatedMessage, AggregatedMessageStream, CloseCode, CloseReason, Session};
use tokio::sync::{mpsc, OwnedSemaphorePermit, Semaphore};
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

use super::messages::{
    DeviceMessage, ErrorCode, MediaTarget, MessageError, ServerMessage, MAX_MESSAGE_BYTES, VERSION,
};
use super::{Command, DeviceChange, Devices, Presence, Registration, PRESENCE_WRITE_EVERY};
use crate::broadcast::{AdmitError, Broadcast, Core, Credential, Ending, Protocol};
use crate::db::devices::Device;
use crate::db::now_ms;
use crate::ingest::rtp::{self, Carried, RtpIngest};
use crate::telemetry::{self, LogThrottle};

/// How long a message to the device may wait for room in the socket's send queue.
const SEND_TIMEOUT: Duration = Duration::from_secs(2);
/// Sockets that have not yet authenticated (at most `devices.hello_timeout` each), apart from
/// the `devices.max_connections` of devices, so a flood of them cannot lock devices out.
pub const PENDING_CONNECTIONS: usize = 64;
/// What a device whose token stopped opening it is told.
const REVOKED: &str = "this device was deleted, or its token rotated or revoked";

/// The settings of `[devices]`.
#[derive(Debug, Clone)]
pub struct SignalingSettings {
    pub hello_timeout: Duration,
    pub ping_interval: Duration,
    pub offline_after: Duration,
    pub rtp_idle_timeout: Duration,
    /// The bit rate devices are told to start at.
    pub bitrate_kbps: u32,
    pub max_connections: usize,
    /// The host devices send RTP to; empty: the host they reached the signaling socket at.
    pub rtp_host: String,
    /// The port devices send RTP to; 0: the RTP listener's.
    pub rtp_port: u16,
}

/// The signaling endpoint's state.
pub struct Signaling {
    settings: SignalingSettings,
    devices: Arc<Devices>,
    core: Arc<Core>,
    rtp: Arc<RtpIngest>,
    /// Authenticated devices (`devices.max_connections`).
    open: Arc<Semaphore>,
    /// Sockets yet to authenticate (`PENDING_CONNECTIONS`).
    pending: Arc<Semaphore>,
    refusals: LogThrottle,
}

impl Signaling {
    pub fn new(
        settings: SignalingSettings,
        devices: Arc<Devices>,
        core: Arc<Core>,
        rtp: Arc<RtpIngest>,
    ) -> Arc<Self> {
        Arc::new(Self {
            open: Arc::new(Semaphore::new(settings.max_connections)),
            pending: Arc::new(Semaphore::new(PENDING_CONNECTIONS)),
            settings,
            devices,
            core,
            rtp,
            refusals: LogThrottle::new(Duration::from_secs(5)),
        })
    }
}

/// Routes `/ingest/device`; the caller adds the `Signaling` as app data.
pub fn configure(cfg: &mut web::ServiceConfig) {
    cfg.route("/ingest/device", web::get().to(upgrade));
}

async fn upgrade(
    request: HttpRequest,
    body: web::Payload,
    signaling: web::Data<Arc<Signaling>>,
) -> Result<HttpResponse, actix_web::Error> {
    let Ok(permit) = signaling.pending.clone().try_acquire_owned() else {
        return Ok(HttpResponse::ServiceUnavailable()
            .content_type("text/plain; charset=utf-8")
            .body("too many devices connecting to this server at once; try again\n"));
    };
    // canonical, as the RTP listener compares it (`::ffff:a.b.c.d` is `a.b.c.d`)
    let peer = request
        .peer_addr()
        .map_or(IpAddr::V4(Ipv4Addr::UNSPECIFIED), |a| a.ip().to_canonical());
    let header_token = request
        .headers()
        .get("authorization")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "))
        .map(|t| t.trim().to_string());
    let rtp_host = match signaling.settings.rtp_host.as_str() {
        "" => host_without_port(request.connection_info().host()),
        configured => configured.to_string(),
    };
    let (response, session, stream) = actix_ws::handle(&request, body)?;
    let stream = stream
        .max_frame_size(MAX_MESSAGE_BYTES)
        .aggregate_continuations()
        .max_continuation_size(MAX_MESSAGE_BYTES);
    let signaling = signaling.get_ref().clone();
    actix_web::rt::spawn(async move {
        let connection = Connection {
            signaling,
            session,
            stream,
            peer,
            rtp_host,
            pending: Some(permit),
        };
        connection.run(header_token).await;
    });
    Ok(response)
}

/// `host:port`, `[v6]:port` or a bare host → the host.
fn host_without_port(host: &str) -> String {
    if let Some(rest) = host.strip_prefix('[') {
        return rest.split(']').next().unwrap_or(rest).to_string();
    }
    match host.rsplit_once(':') {
        Some((name, port)) if port.bytes().all(|b| b.is_ascii_digit()) => name.to_string(),
        _ => host.to_string(),
    }
}

struct Connection {
    signaling: Arc<Signaling>,
    session: Session,
    stream: AggregatedMessageStream,
    peer: IpAddr,
    rtp_host: String,
    /// Held until the device has authenticated.
    pending: Option<OwnedSemaphorePermit>,
}

/// The device's RTP session, while it streams.
struct Streaming {
    stop: CancellationToken,
    task: JoinHandle<(Broadcast, Carried)>,
}

/// Why the loop ended.
enum Closing {
    /// The socket closed or broke, or the device went silent.
    Lost,
    /// Tell the device this error, then close.
    Error(ErrorCode, String),
}

impl Connection {
    async fn run(mut self, header_token: Option<String>) {
        let hello_timeout = self.signaling.settings.hello_timeout;
        let (token, agent) = match tokio::time::timeout(hello_timeout, self.hello()).await {
            Ok(Ok((hello_token, agent))) => match header_token.or(hello_token) {
                Some(token) => (token, agent),
                None => {
                    return self
                        .close_with(
                            ErrorCode::BadToken,
                            "no device token: send it in `hello` or an Authorization header",
                        )
                        .await
                }
            },
            Ok(Err(Some((code, message)))) => return self.close_with(code, &message).await,
            Ok(Err(None)) => return,
            Err(_) => {
                let message = format!("no hello within {} s", hello_timeout.as_secs_f64());
                return self.close_with(ErrorCode::BadRequest, &message).await;
            }
        };
        let device = match self.signaling.devices.db.device_by_token(&token).await {
            Ok(Some(device)) => device,
            Ok(None) => {
                telemetry::connection_refused("device", "bad_token");
                if let Some(unlogged) = self.signaling.refusals.check() {
                    tracing::warn!(peer = %self.peer, unlogged, "device refused: unknown, rotated or revoked token");
                }
                return self
                    .close_with(
                        ErrorCode::BadToken,
                        "unknown device token, or one that was rotated or revoked",
                    )
                    .await;
            }
            Err(e) => {
                tracing::warn!(error = %e, "cannot check a device token");
                return self
                    .close_with(ErrorCode::Busy, "the server cannot check tokens now")
                    .await;
            }
        };
        // authenticated: from the budget of sockets yet to authenticate to that of devices
        let Ok(_connected) = self.signaling.open.clone().try_acquire_owned() else {
            return self
                .close_with(
                    ErrorCode::Busy,
                    "too many devices connected to this server; try again later",
                )
                .await;
        };
        self.pending = None;
        let span = tracing::info_span!("device", device = %device.id, peer = %self.peer);
        let devices = self.signaling.devices.clone();
        let registration = devices.connect(&device.id, agent);
        let connection = registration.connection;
        tracing::info!(parent: &span, "device online");
        let closing = tracing::Instrument::instrument(
            self.serve(&device, &token, registration),
            span.clone(),
        )
        .await;
        if devices.disconnect_registered(&device.id, connection) {
            devices.went_offline(&device.id).await;
        }
        match closing {
            Closing::Lost => tracing::info!(parent: &span, "device offline"),
            Closing::Error(code, message) => {
                tracing::info!(parent: &span, ?code, "device offline: {message}");
                self.close_with(code, &message).await;
            }
        }
    }

    /// The opening `hello`: its token and agent, or what to tell the device (`None`: it left).
    async fn hello(
        &mut self,
    ) -> Result<(Option<String>, Option<String>), Option<(ErrorCode, String)>> {
        loop {
            match self.stream.recv().await {
                Some(Ok(AggregatedMessage::Text(text))) => {
                    return DeviceMessage::parse_hello(&text).map_err(|e| {
                        let code = match e {
                            MessageError::UnsupportedVersion(_) => ErrorCode::UnsupportedVersion,
                            _ => ErrorCode::BadRequest,
                        };
                        Some((code, e.to_string()))
                    })
                }
                Some(Ok(AggregatedMessage::Ping(ping))) => {
                    if !self.pong(&ping).await {
                        return Err(None);
                    }
                }
                Some(Ok(AggregatedMessage::Pong(_))) => {}
                Some(Ok(AggregatedMessage::Binary(_))) => {
                    return Err(Some((
                        ErrorCode::BadRequest,
                        MessageError::NotHello.to_string(),
                    )))
                }
                Some(Ok(AggregatedMessage::Close(_))) | None | Some(Err(_)) => return Err(None),
            }
        }
    }

    /// The connected device's life: commands, pings, its messages, its RTP session.
    async fn serve(&mut self, device: &Device, token: &str, registration: Registration) -> Closing {
        let Registration {
            connection,
            mut commands,
            mut closed,
        } = registration;
        let settings = self.signaling.settings.clone();
        let devices = self.signaling.devices.clone();
        let welcome = ServerMessage::Welcome {
            version: VERSION,
            device_id: device.id.clone(),
            name: device.name.clone(),
            stream_id: device.stream_id.clone(),
            heartbeat_secs: settings.ping_interval.as_secs().max(1),
        };
        if !self.send(&welcome).await {
            return Closing::Lost;
        }
        if !devices
            .set_presence(&device.id, Presence::Online, DeviceChange::Online)
            .await
        {
            return Closing::Error(ErrorCode::Revoked, "this device was deleted".into());
        }
        let (keyframe_tx, mut keyframe_rx) = mpsc::channel(1);
        let mut streaming: Option<Streaming> = None;
        if devices.wants_streaming(&device.id) {
            tracing::info!("the device was streaming before it dropped: starting it again");
            if let Err(why) = self
                .start(device, token, &keyframe_tx, &mut streaming)
                .await
            {
                tracing::warn!("cannot start the returning device: {why}");
            }
        }
        let mut ping = tokio::time::interval(settings.ping_interval);
        ping.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let mut seq: u64 = 0;
        let mut ping_sent: Option<(u64, Instant)> = None;
        let mut last_message = Instant::now();
        let mut last_written = Instant::now();
        let shutdown = self.signaling.core.pipeline.shutdown.clone();
        let closing = loop {
            let session_over = async {
                match &mut streaming {
                    Some(s) => (&mut s.task).await,
                    None => std::future::pending().await,
                }
            };
            tokio::select! {
                _ = shutdown.cancelled() => {
                    break Closing::Error(ErrorCode::Busy, "the server is shutting down; reconnect in a moment".into());
                }
                ended = session_over => {
                    let Some(s) = streaming.take() else { continue };
                    drop(s.stop);
                    let reason = match ended {
                        Ok((broadcast, carried)) => {
                            let (how, reason) = match carried {
                                Carried::Idle => (Ending::Lost, format!("no RTP for {} s", settings.rtp_idle_timeout.as_secs_f64())),
                                Carried::Cancelled => (Ending::Failed, "the broadcast was stopped".to_string()),
                                Carried::PipelineGone | Carried::Stopped => (Ending::Failed, "the broadcast ended".to_string()),
                            };
                            tracing::info!("RTP session over: {reason}");
                            self.signaling.core.finish(broadcast, how).await;
                            reason
                        }
                        Err(e) => {
                            tracing::error!(error = %e, "the RTP session task failed");
                            "the broadcast failed".to_string()
                        }
                    };
                    devices.set_wants_streaming(&device.id, false);
                    if !self.send(&ServerMessage::Stop { reason }).await {
                        break Closing::Lost;
                    }
                    devices.set_presence(&device.id, Presence::Online, DeviceChange::Online).await;
                }
                command = commands.recv() => match command {
                    Some(Command::Start(reply)) => {
                        devices.set_wants_streaming(&device.id, true);
                        let started = self.start(device, token, &keyframe_tx, &mut streaming).await;
                        if started.is_err() {
                            devices.set_wants_streaming(&device.id, false);
                        }
                        let _ = reply.send(started);
                    }
                    Some(Command::Stop(reply)) => {
                        self.end_streaming(&mut streaming, Ending::Finished).await;
                        let told = self.send(&ServerMessage::Stop { reason: "stopped from the API".into() }).await;
                        devices.set_presence(&device.id, Presence::Online, DeviceChange::Online).await;
                        let _ = reply.send(());
                        if !told {
                            break Closing::Lost;
                        }
                    }
                    Some(Command::Bitrate(kbps)) => {
                        if !self.send(&ServerMessage::Bitrate { kbps }).await {
                            break Closing::Lost;
                        }
                    }
                    None => break Closing::Lost,
                },
                changed = closed.changed() => {
                    let code = match changed {
                        Ok(()) => *closed.borrow_and_update(),
                        Err(_) => None,
                    };
                    match code {
                        Some(ErrorCode::Replaced) => break Closing::Error(ErrorCode::Replaced, "another connection of this device took over".into()),
                        Some(code) => break Closing::Error(code, REVOKED.into()),
                        None => {}
                    }
                }
                Some(()) = keyframe_rx.recv() => {
                    tracing::debug!("asking the device for a keyframe");
                    if !self.send(&ServerMessage::Keyframe).await {
                        break Closing::Lost;
                    }
                }
                message = self.stream.recv() => {
                    let message = match message {
                        Some(Ok(message)) => message,
                        Some(Err(e)) => {
                            tracing::info!(error = %e, "the device's socket broke");
                            break Closing::Lost;
                        }
                        None => break Closing::Lost,
                    };
                    last_message = Instant::now();
                    match message {
                        AggregatedMessage::Text(text) => match DeviceMessage::parse(&text) {
                            Ok(DeviceMessage::Pong { seq }) => {
                                if let Some((sent_seq, at)) = ping_sent {
                                    if sent_seq == seq {
                                        ping_sent = None;
                                        let rtt = (at.elapsed().as_secs_f64() * 10_000.0).round() / 10.0;
                                        devices.update_info(&device.id, connection, |info| info.rtt_ms = Some(rtt));
                                        devices.announce(&device.id, DeviceChange::Status).await;
                                    }
                                }
                            }
                            Ok(DeviceMessage::Heartbeat) => {}
                            Ok(DeviceMessage::Status(report)) => {
                                devices.update_info(&device.id, connection, |info| info.report = Some(report));
                            }
                            Ok(DeviceMessage::Hello { .. }) => {
                                break Closing::Error(ErrorCode::BadRequest, "`hello` is sent once, first".into());
                            }
                            Err(e) => break Closing::Error(ErrorCode::BadRequest, e.to_string()),
                        },
                        AggregatedMessage::Ping(ping) => {
                            if !self.pong(&ping).await {
                                break Closing::Lost;
                            }
                        }
                        AggregatedMessage::Pong(_) => {}
                        AggregatedMessage::Binary(_) => {
                            break Closing::Error(ErrorCode::BadRequest, "signaling messages are text (JSON)".into());
                        }
                        AggregatedMessage::Close(_) => break Closing::Lost,
                    }
                }
                _ = ping.tick() => {
                    if last_message.elapsed() > settings.offline_after {
                        tracing::info!(silent_secs = settings.offline_after.as_secs_f64(), "the device stopped answering");
                        break Closing::Lost;
                    }
                    if last_written.elapsed() >= PRESENCE_WRITE_EVERY {
                        last_written = Instant::now();
                        let state = if streaming.is_some() { Presence::Streaming } else { Presence::Online };
                        if !still_valid(&devices, device, token, state).await {
                            break Closing::Error(ErrorCode::Revoked, REVOKED.into());
                        }
                    }
                    seq += 1;
                    ping_sent = Some((seq, Instant::now()));
                    if !self.send(&ServerMessage::Ping { seq }).await {
                        break Closing::Lost;
                    }
                }
            }
        };
        // a lost device's broadcast waits for it during the reconnect grace, and so does one
        // whose device reconnected on another socket (which continues it); any other closing
        // ends it
        let how = match closing {
            Closing::Lost | Closing::Error(ErrorCode::Replaced, _) => Ending::Lost,
            Closing::Error(..) => Ending::Failed,
        };
        self.end_streaming(&mut streaming, how).await;
        closing
    }

    /// Admits the device's broadcast, opens its RTP route and tells it to start.
    async fn start(
        &mut self,
        device: &Device,
        token: &str,
        keyframes: &mpsc::Sender<()>,
        streaming: &mut Option<Streaming>,
    ) -> Result<(), String> {
        if streaming.is_some() {
            return Ok(());
        }
        let signaling = self.signaling.clone();
        let core = &signaling.core;
        let mut broadcast = core
            .admit_with(Credential::DeviceToken(token), self.peer, Protocol::Rtp)
            .await
            .map_err(|e| match e {
                AdmitError::BadKey => "the device's token was rotated or revoked".to_string(),
                AdmitError::HookRefused(_) => "refused by this server's publish policy".into(),
                AdmitError::Database(_) => "the server cannot check tokens now".into(),
                AdmitError::LiveElsewhere(_) | AdmitError::Busy(_) => e.to_string(),
            })?;
        let mut route = signaling.rtp.open(self.peer);
        let start = ServerMessage::Start {
            media: MediaTarget {
                transport: "rtp/udp".into(),
                host: self.rtp_host.clone(),
                port: match signaling.settings.rtp_port {
                    0 => signaling.rtp.local_addr().port(),
                    port => port,
                },
                ssrc: route.ssrc,
                payload_type: rtp::PAYLOAD_TYPE,
                clock_rate: rtp::CLOCK_RATE,
                codec: "H264".into(),
                max_packet_size: rtp::MAX_PACKET_SIZE,
            },
            bitrate_kbps: signaling.settings.bitrate_kbps,
        };
        if !self.send(&start).await {
            core.finish(broadcast, Ending::Lost).await;
            return Err("the device did not take the start message".into());
        }
        tracing::info!(playback_id = %broadcast.playback_id(), "device streaming");
        let stop = CancellationToken::new();
        let (task_stop, keyframes, idle) = (
            stop.clone(),
            keyframes.clone(),
            signaling.settings.rtp_idle_timeout,
        );
        let task = core.tracker.spawn(async move {
            let carried =
                rtp::carry(&mut route, &mut broadcast, &keyframes, idle, &task_stop).await;
            (broadcast, carried)
        });
        *streaming = Some(Streaming { stop, task });
        signaling
            .devices
            .set_presence(&device.id, Presence::Streaming, DeviceChange::Streaming)
            .await;
        Ok(())
    }

    /// Ends the RTP session, if any, and its broadcast `how`.
    async fn end_streaming(&mut self, streaming: &mut Option<Streaming>, how: Ending) {
        let Some(s) = streaming.take() else {
            return;
        };
        s.stop.cancel();
        match s.task.await {
            Ok((broadcast, _)) => self.signaling.core.finish(broadcast, how).await,
            Err(e) => tracing::error!(error = %e, "the RTP session task failed"),
        }
    }

    /// Sends `message`; false when the device is gone or does not read (`SEND_TIMEOUT`).
    async fn send(&mut self, message: &ServerMessage) -> bool {
        let sent = tokio::time::timeout(SEND_TIMEOUT, self.session.text(message.to_json())).await;
        matches!(sent, Ok(Ok(())))
    }

    async fn pong(&mut self, ping: &[u8]) -> bool {
        matches!(
            tokio::time::timeout(SEND_TIMEOUT, self.session.pong(ping)).await,
            Ok(Ok(()))
        )
    }

    /// Tells the device `code`/`message` and closes the socket.
    async fn close_with(mut self, code: ErrorCode, message: &str) {
        let error = ServerMessage::Error {
            code,
            message: message.to_string(),
        };
        let _ = self.send(&error).await;
        let close = match code {
            ErrorCode::Busy => CloseCode::Again,
            _ => CloseCode::Policy,
        };
        let reason = CloseReason {
            code: close,
            description: None,
        };
        let _ = tokio::time::timeout(SEND_TIMEOUT, self.session.close(Some(reason))).await;
    }
}

/// Whether the device's token still opens it (not deleted, rotated or revoked, through any
/// node or the CLI); records its presence and `last_seen` on the way. A database that does
/// not answer keeps the device (it was valid when it connected).
async fn still_valid(devices: &Devices, device: &Device, token: &str, state: Presence) -> bool {
    let now = now_ms();
    match devices
        .db
        .set_device_presence(&device.id, state.as_str(), &devices.node_id, now)
        .await
    {
        Ok(false) => return false,
        Ok(true) => {}
        Err(e) => tracing::warn!(error = %e, "cannot record a device's presence"),
    }
    match devices.db.device_by_token(token).await {
        Ok(found) => found.is_some_and(|found| found.id == device.id),
        Err(e) => {
            tracing::warn!(error = %e, "cannot re-check a device's token");
            true
        }
    }
}

#[cfg(test)]
mod tests {
    use super::host_without_port;

    #[test]
    fn the_rtp_host_is_the_host_the_device_reached() {
        assert_eq!(host_without_port("cam.example.net:8080"), "cam.example.net");
        assert_eq!(host_without_port("192.168.1.5"), "192.168.1.5");
        assert_eq!(host_without_port("[::1]:8080"), "::1");
    }
}
