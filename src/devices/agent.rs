//! `strata device-agent`: the reference device. It speaks the signaling protocol (`messages`)
//! to a Strata server and, when told to start, runs ffmpeg to send H.264 in RTP to where the
//! server said (`-f rtp`, the announced SSRC and payload type, packets under the announced
//! size). Small enough to run on a Raspberry Pi next to its camera.
//!
//! - **Sources**: `--test-pattern` (ffmpeg's `testsrc2`, video only), or `--source` (a V4L2
//!   camera such as `/dev/video0`, a file, looped, or any URL ffmpeg reads).
//! - **Encoding**: x264 `veryfast`/`zerolatency`, no B-frames (RTP carries presentation times
//!   only), a keyframe every second. Decision: a keyframe request is answered by the next
//!   scheduled keyframe, at most a second away; restarting the encoder for an IDR would cost
//!   more than that. Requests are counted and reported in `status`.
//! - **Bit rate**: a `bitrate` command restarts ffmpeg at the new rate (the server sees a new
//!   RTP sequence and continues the broadcast).
//! - **Resilience**: a dropped socket is reconnected with backoff (1 s doubling to 10 s), and
//!   ffmpeg is stopped while disconnected (the server parks the broadcast for its reconnect
//!   grace and starts the device again when it is back). A refused token ends the agent
//!   (exit 2): retrying cannot help. An ffmpeg that exits while it should stream is restarted.
//! - The token is sent in an `Authorization` header; it is never logged or put on a command
//!   line the agent runs (it may come from `STRATA_DEVICE_TOKEN` rather than the agent's own
//!   argv, which other users of the machine can read).
//!
//! Blocking I/O on threads of its own (tungstenite): the agent is a small client with one
//! socket and one child, and needs no runtime.

use std::net::TcpStream;
use std::process::{Child, Command, ExitCode, Stdio};
use std::time::{Duration, Instant};

use tungstenite::client::IntoClientRequest;
use tungstenite::protocol::WebSocketConfig;
use tungstenite::stream::MaybeTlsStream;
use tungstenite::{Message, WebSocket};

use super::messages::{DeviceReport, DeviceState, ErrorCode, MediaTarget, ServerMessage, VERSION};

/// How often the agent reports its status.
const STATUS_EVERY: Duration = Duration::from_secs(2);
/// How long one read of the socket waits, so status and ffmpeg are looked after meanwhile.
const READ_POLL: Duration = Duration::from_millis(200);
/// The largest message or frame taken from the server (its messages are a few hundred bytes).
const MAX_SERVER_MESSAGE: usize = 64 << 10;
/// The shortest time between two starts of ffmpeg that keeps exiting.
const FFMPEG_RESTART_PAUSE: Duration = Duration::from_secs(2);
const BACKOFF_FIRST: Duration = Duration::from_secs(1);
const BACKOFF_MAX: Duration = Duration::from_secs(10);

/// What the agent sends.
#[derive(Debug, Clone)]
pub enum Source {
    TestPattern,
    /// A V4L2 device, a file or a URL, as ffmpeg's input.
    Input(String),
}

/// The agent's options (from the command line). Not `Debug`: it holds the token.
#[derive(Clone)]
pub struct AgentOptions {
    /// The server's base URL, `http://host:port` (or `ws://…`).
    pub server: String,
    pub token: String,
    pub source: Source,
    /// `WIDTHxHEIGHT` of the test pattern (and the scale of `--source`).
    pub size: String,
    pub fps: u32,
    pub ffmpeg: String,
}

#[derive(Debug, thiserror::Error)]
enum AgentError {
    #[error("cannot connect: {0}")]
    Connect(String),
    #[error("the server refused this device: {0}")]
    Refused(String),
    #[error("connection lost: {0}")]
    Lost(String),
}

/// Runs the agent until it is refused (exit 2) or killed.
pub fn main(options: AgentOptions) -> ExitCode {
    let url = match signaling_url(&options.server) {
        Ok(url) => url,
        Err(e) => {
            eprintln!("strata device-agent: {e}");
            return ExitCode::from(2);
        }
    };
    let mut backoff = BACKOFF_FIRST;
    loop {
        let connected_at = Instant::now();
        match session(&url, &options) {
            Err(AgentError::Refused(why)) => {
                tracing::error!("{why}");
                return ExitCode::from(2);
            }
            Err(e) => tracing::warn!("{e}; reconnecting in {} s", backoff.as_secs()),
            Ok(()) => {}
        }
        if connected_at.elapsed() > BACKOFF_MAX {
            backoff = BACKOFF_FIRST;
        }
        std::thread::sleep(backoff);
        backoff = (backoff * 2).min(BACKOFF_MAX);
    }
}

/// `http://host:port[/]` → `ws://host:port/ingest/device`.
fn signaling_url(server: &str) -> Result<String, String> {
    let server = server.trim_end_matches('/');
    let rest = server
        .strip_prefix("http://")
        .or_else(|| server.strip_prefix("ws://"))
        .ok_or_else(|| {
            format!("--server `{server}`: write http://HOST:PORT (TLS, https://, is not supported by this agent yet)")
        })?;
    Ok(format!("ws://{rest}/ingest/device"))
}

/// What the agent is doing on one connection.
struct Sender {
    target: Option<MediaTarget>,
    bitrate_kbps: u32,
    child: Option<Child>,
    /// When ffmpeg was last started (or failed to start).
    started: Option<Instant>,
    keyframe_requests: u64,
}

impl Sender {
    fn streaming(&self) -> bool {
        self.target.is_some()
    }

    fn restart(&mut self, options: &AgentOptions) {
        self.kill();
        let Some(target) = &self.target else {
            return;
        };
        let mut command = ffmpeg_command(options, target, self.bitrate_kbps);
        die_with_parent(&mut command);
        self.started = Some(Instant::now());
        match command.spawn() {
            Ok(child) => {
                tracing::info!(host = %target.host, port = target.port, kbps = self.bitrate_kbps, "sending RTP");
                self.child = Some(child);
            }
            Err(e) => tracing::error!(error = %e, ffmpeg = %options.ffmpeg, "cannot start ffmpeg"),
        }
    }

    /// Restarts ffmpeg if it exited (or could not start) while it should stream, at most once
    /// every `FFMPEG_RESTART_PAUSE`.
    fn look_after(&mut self, options: &AgentOptions) {
        if let Some(child) = &mut self.child {
            if let Ok(Some(status)) = child.try_wait() {
                tracing::warn!(%status, "ffmpeg exited; starting it again");
                self.child = None;
            }
        }
        let paused = self
            .started
            .is_some_and(|at| at.elapsed() < FFMPEG_RESTART_PAUSE);
        if self.child.is_none() && self.streaming() && !paused {
            self.restart(options);
        }
    }

    fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    fn report(&self) -> DeviceReport {
        DeviceReport {
            state: Some(if self.streaming() {
                DeviceState::Streaming
            } else {
                DeviceState::Idle
            }),
            bitrate_kbps: self.streaming().then_some(self.bitrate_kbps),
            packets_sent: None,
            keyframe_requests: Some(self.keyframe_requests),
        }
    }
}

impl Drop for Sender {
    fn drop(&mut self) {
        self.kill();
    }
}

/// One signaling connection, until it ends.
fn session(url: &str, options: &AgentOptions) -> Result<(), AgentError> {
    let mut request = url
        .into_client_request()
        .map_err(|e| AgentError::Connect(e.to_string()))?;
    let bearer = format!("Bearer {}", options.token).parse().map_err(|_| {
        AgentError::Refused("the token has characters a header cannot carry".into())
    })?;
    request.headers_mut().insert("authorization", bearer);
    // the server's messages are small; a larger one is refused before it is buffered
    let limits = WebSocketConfig::default()
        .max_message_size(Some(MAX_SERVER_MESSAGE))
        .max_frame_size(Some(MAX_SERVER_MESSAGE));
    let (mut socket, _) = tungstenite::client::connect_with_config(request, Some(limits), 3)
        .map_err(|e| AgentError::Connect(e.to_string()))?;
    if let MaybeTlsStream::Plain(stream) = socket.get_mut() {
        stream
            .set_read_timeout(Some(READ_POLL))
            .map_err(|e| AgentError::Connect(e.to_string()))?;
    }
    let hello = serde_json::json!({
        "type": "hello",
        "version": VERSION,
        "agent": concat!("strata-device-agent/", env!("CARGO_PKG_VERSION")),
    });
    send(&mut socket, &hello.to_string())?;
    let mut sender = Sender {
        target: None,
        bitrate_kbps: 0,
        child: None,
        started: None,
        keyframe_requests: 0,
    };
    let mut last_status = Instant::now();
    loop {
        match socket.read() {
            Ok(Message::Text(text)) => {
                let message: ServerMessage = match serde_json::from_str(text.as_str()) {
                    Ok(m) => m,
                    Err(e) => {
                        tracing::warn!(error = %e, "a message from the server this agent does not know; ignored");
                        continue;
                    }
                };
                if handle(message, &mut socket, &mut sender, options)? {
                    // something changed: tell the server at once
                    send(&mut socket, &status(&sender))?;
                    last_status = Instant::now();
                }
            }
            Ok(Message::Close(_)) => {
                return Err(AgentError::Lost("the server closed the socket".into()))
            }
            Ok(_) => {}
            Err(tungstenite::Error::Io(e))
                if matches!(
                    e.kind(),
                    std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
                ) => {}
            Err(e) => return Err(AgentError::Lost(e.to_string())),
        }
        sender.look_after(options);
        if last_status.elapsed() >= STATUS_EVERY {
            send(&mut socket, &status(&sender))?;
            last_status = Instant::now();
        }
    }
}

fn status(sender: &Sender) -> String {
    let mut value = serde_json::to_value(sender.report()).unwrap_or_default();
    if let Some(object) = value.as_object_mut() {
        object.insert("type".into(), "status".into());
    }
    value.to_string()
}

/// Acts on one server message; whether the status changed.
fn handle(
    message: ServerMessage,
    socket: &mut WebSocket<MaybeTlsStream<TcpStream>>,
    sender: &mut Sender,
    options: &AgentOptions,
) -> Result<bool, AgentError> {
    match message {
        ServerMessage::Welcome {
            device_id, name, ..
        } => {
            tracing::info!(%device_id, %name, "connected; waiting for start");
            Ok(true)
        }
        ServerMessage::Ping { seq } => {
            send(
                socket,
                &serde_json::json!({"type": "pong", "seq": seq}).to_string(),
            )?;
            Ok(false)
        }
        ServerMessage::Start {
            media,
            bitrate_kbps,
        } => {
            tracing::info!(ssrc = media.ssrc, "start");
            sender.target = Some(media);
            sender.bitrate_kbps = bitrate_kbps;
            sender.restart(options);
            Ok(true)
        }
        ServerMessage::Stop { reason } => {
            tracing::info!("stop: {reason}");
            sender.target = None;
            sender.kill();
            Ok(true)
        }
        ServerMessage::Keyframe => {
            sender.keyframe_requests += 1;
            tracing::info!(
                requests = sender.keyframe_requests,
                "keyframe requested (the next one is at most a second away)"
            );
            Ok(true)
        }
        ServerMessage::Bitrate { kbps } => {
            tracing::info!(kbps, "bit rate changed");
            sender.bitrate_kbps = kbps;
            if sender.streaming() {
                sender.restart(options);
            }
            Ok(true)
        }
        ServerMessage::Error { code, message } => match code {
            ErrorCode::BadToken | ErrorCode::Revoked | ErrorCode::UnsupportedVersion => {
                Err(AgentError::Refused(message))
            }
            _ => Err(AgentError::Lost(message)),
        },
    }
}

fn send(socket: &mut WebSocket<MaybeTlsStream<TcpStream>>, text: &str) -> Result<(), AgentError> {
    socket
        .send(Message::text(text))
        .map_err(|e| AgentError::Lost(e.to_string()))
}

/// The ffmpeg that sends `options.source` to `target` at `kbps`.
fn ffmpeg_command(options: &AgentOptions, target: &MediaTarget, kbps: u32) -> Command {
    let mut command = Command::new(&options.ffmpeg);
    command.args(["-hide_banner", "-loglevel", "error", "-nostdin"]);
    match &options.source {
        Source::TestPattern => {
            let pattern = format!("testsrc2=size={}:rate={}", options.size, options.fps);
            command.args(["-re", "-f", "lavfi", "-i", &pattern]);
        }
        Source::Input(input) if input.starts_with("/dev/video") => {
            command.args(["-f", "v4l2", "-i", input]);
        }
        Source::Input(input) if std::path::Path::new(input).is_file() => {
            command.args(["-re", "-stream_loop", "-1", "-i", input]);
        }
        Source::Input(input) => {
            command.args(["-i", input]);
        }
    }
    let (rate, buffer) = (format!("{kbps}k"), format!("{}k", kbps * 2));
    let gop = options.fps.max(1).to_string();
    // the RTP muxer's `ssrc` option is a signed 32-bit integer: the same 32 bits
    let ssrc = (target.ssrc as i32).to_string();
    let url = format!(
        "rtp://{}:{}?pkt_size={}",
        bracket_v6(&target.host),
        target.port,
        target.max_packet_size.min(1400)
    );
    command
        .args([
            "-an",
            "-c:v",
            "libx264",
            "-preset",
            "veryfast",
            "-tune",
            "zerolatency",
        ])
        .args([
            "-pix_fmt",
            "yuv420p",
            "-bf",
            "0",
            "-g",
            &gop,
            "-keyint_min",
            &gop,
        ])
        .args([
            "-sc_threshold",
            "0",
            "-b:v",
            &rate,
            "-maxrate",
            &rate,
            "-bufsize",
            &buffer,
        ]);
    if let Source::Input(_) = options.source {
        command.args(["-r", &options.fps.to_string(), "-s", &options.size]);
    }
    command
        .args([
            "-f",
            "rtp",
            "-payload_type",
            &target.payload_type.to_string(),
        ])
        .args(["-ssrc", &ssrc, &url])
        .stdin(Stdio::null())
        // ffmpeg prints the stream's SDP on stdout; nobody reads it
        .stdout(Stdio::null())
        .stderr(Stdio::inherit());
    command
}

/// ffmpeg is killed when the agent dies, however it dies: an orphan would go on sending.
fn die_with_parent(command: &mut Command) {
    #[cfg(target_os = "linux")]
    {
        use std::os::unix::process::CommandExt;
        // SAFETY: `prctl` is async-signal-safe and touches no memory of the parent.
        unsafe {
            command.pre_exec(|| {
                libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL);
                Ok(())
            });
        }
    }
    #[cfg(not(target_os = "linux"))]
    let _ = command;
}

fn bracket_v6(host: &str) -> String {
    if host.contains(':') {
        format!("[{host}]")
    } else {
        host.to_string()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_server_url_becomes_the_signaling_url() {
        assert_eq!(
            signaling_url("http://pi.local:8080/").unwrap(),
            "ws://pi.local:8080/ingest/device"
        );
        assert!(signaling_url("https://x").is_err());
    }

    #[test]
    fn ffmpeg_sends_to_the_announced_target_and_never_sees_the_token() {
        let options = AgentOptions {
            server: "http://127.0.0.1:8080".into(),
            token: "dt_secret".into(),
            source: Source::TestPattern,
            size: "640x360".into(),
            fps: 30,
            ffmpeg: "ffmpeg".into(),
        };
        let target = MediaTarget {
            transport: "rtp/udp".into(),
            host: "127.0.0.1".into(),
            port: 5004,
            ssrc: 0xF000_0001,
            payload_type: 96,
            clock_rate: 90_000,
            codec: "H264".into(),
            max_packet_size: 1400,
        };
        let command = ffmpeg_command(&options, &target, 1000);
        let args: Vec<String> = command
            .get_args()
            .map(|a| a.to_string_lossy().into_owned())
            .collect();
        let joined = args.join(" ");
        assert!(
            joined.contains("-ssrc -268435455 rtp://127.0.0.1:5004?pkt_size=1400"),
            "{joined}"
        );
        assert!(joined.contains("-payload_type 96"), "{joined}");
        assert!(joined.contains("-bf 0"), "{joined}");
        assert!(!joined.contains("dt_secret"));
    }
}
