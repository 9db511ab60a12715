//! A WebSocket publisher for `/ingest/ws`, as any client of the documented protocol: ffmpeg
//! records a test signal in real time (WebM with VP8/VP9 and Opus like Chromium's
//! `MediaRecorder`, or fragmented MP4 with H.264 and AAC like Safari's), and a thread sends its
//! output over a tungstenite WebSocket in slices, while collecting what the server says.

use std::io::Read;
use std::net::TcpStream;
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::Duration;

use serde_json::Value;
use tungstenite::{Message, WebSocket};

/// What the publisher records.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Recording {
    /// `video/webm;codecs=vp8,opus` (Chromium's default).
    WebmVp8,
    /// `video/webm;codecs=vp9,opus`.
    WebmVp9,
    /// `video/mp4;codecs=avc1,mp4a` (Safari), fragmented.
    Mp4,
    /// `video/webm` with Vorbis audio: a codec Strata does not decode.
    WebmVorbis,
}

impl Recording {
    pub fn mime(self) -> &'static str {
        match self {
            Recording::WebmVp8 => "video/webm;codecs=vp8,opus",
            Recording::WebmVp9 => "video/webm;codecs=vp9,opus",
            Recording::Mp4 => "video/mp4;codecs=avc1.42E01F,mp4a.40.2",
            Recording::WebmVorbis => "video/webm;codecs=vp8,vorbis",
        }
    }

    /// ffmpeg recording `seconds` of the test signal to `output` (in real time when `live`).
    pub fn ffmpeg(self, seconds: u32, live: bool, output: &str) -> Command {
        let mut ffmpeg = Command::new("ffmpeg");
        ffmpeg.args(["-hide_banner", "-loglevel", "error", "-y"]);
        if live {
            ffmpeg.arg("-re");
        }
        ffmpeg
            .args(["-f", "lavfi", "-i", "testsrc2=size=320x240:rate=25"])
            .args(["-f", "lavfi", "-i", "sine=frequency=440:sample_rate=48000"])
            .args(["-t", &seconds.to_string()])
            .args(self.encoder_args())
            .arg(output);
        ffmpeg
    }

    /// ffmpeg's arguments after the inputs.
    fn encoder_args(self) -> Vec<&'static str> {
        let vp8 = [
            "-c:v",
            "libvpx",
            "-deadline",
            "realtime",
            "-cpu-used",
            "8",
            "-b:v",
            "400k",
        ];
        let webm = ["-f", "webm", "-cluster_time_limit", "300", "-live", "1"];
        let mut args: Vec<&str> = match self {
            Recording::WebmVp8 => [&vp8[..], &["-c:a", "libopus"], &webm[..]].concat(),
            Recording::WebmVorbis => [&vp8[..], &["-c:a", "libvorbis"], &webm[..]].concat(),
            Recording::WebmVp9 => [
                &[
                    "-c:v",
                    "libvpx-vp9",
                    "-deadline",
                    "realtime",
                    "-cpu-used",
                    "8",
                    "-row-mt",
                    "1",
                    "-b:v",
                    "400k",
                    "-c:a",
                    "libopus",
                ][..],
                &webm[..],
            ]
            .concat(),
            Recording::Mp4 => vec![
                "-c:v",
                "libx264",
                "-preset",
                "ultrafast",
                "-profile:v",
                "baseline",
                "-b:v",
                "400k",
                "-c:a",
                "aac",
                "-f",
                "mp4",
                "-movflags",
                "frag_keyframe+empty_moov+default_base_moof",
                "-frag_duration",
                "300000",
            ],
        };
        // a browser's encoder puts keyframes far apart: one every 10 s here
        args.extend(["-g", "250", "-pix_fmt", "yuv420p"]);
        args
    }
}

/// A publisher connected to a server's `/ingest/ws`.
pub struct WsPublisher {
    ffmpeg: Child,
    /// Every text message the server sent, parsed.
    messages: Arc<Mutex<Vec<Value>>>,
    /// Tells the sending thread what to do next.
    command: Arc<Mutex<Command_>>,
    thread: Option<JoinHandle<()>>,
}

#[derive(Debug, Clone, Copy, PartialEq)]
enum Command_ {
    Send,
    /// Send `{"type":"stop"}`, then read until the server closes.
    Stop,
    /// Drop the TCP connection without a close frame (a lost network).
    Drop,
}

impl WsPublisher {
    /// Connects to `http` (host:port), says `key`, and records `recording` for `seconds`.
    pub fn start(http: &str, key: &str, recording: Recording, seconds: u32) -> Self {
        Self::start_with_hello(http, &hello(key, recording.mime()), recording, seconds)
    }

    /// As `start`, with `hello` as the first message.
    pub fn start_with_hello(http: &str, hello: &str, recording: Recording, seconds: u32) -> Self {
        let mut ffmpeg = recording
            .ffmpeg(seconds, true, "pipe:1")
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("ffmpeg runs");
        let mut output = ffmpeg.stdout.take().expect("ffmpeg's stdout");
        let messages = Arc::new(Mutex::new(Vec::new()));
        let command = Arc::new(Mutex::new(Command_::Send));
        let mut socket = connect(http);
        socket
            .send(Message::text(hello.to_string()))
            .expect("send the opening message");
        let (messages_in, command_in) = (messages.clone(), command.clone());
        let thread = std::thread::spawn(move || {
            let mut chunk = vec![0u8; 32 * 1024];
            loop {
                read_available(&mut socket, &messages_in);
                let command = *command_in.lock().unwrap();
                let read = match command {
                    Command_::Send => output.read(&mut chunk).ok().filter(|n| *n > 0),
                    Command_::Stop | Command_::Drop => None,
                };
                let Some(n) = read else {
                    // told to stop or drop, or the recording ended (then the server decides)
                    match *command_in.lock().unwrap() {
                        Command_::Drop => return, // dropped: no close frame
                        Command_::Stop => {
                            let _ = socket.send(Message::text(r#"{"type":"stop"}"#));
                        }
                        Command_::Send => {}
                    }
                    read_until_closed(&mut socket, &messages_in);
                    return;
                };
                if socket.send(Message::binary(chunk[..n].to_vec())).is_err() {
                    read_until_closed(&mut socket, &messages_in);
                    return;
                }
            }
        });
        Self {
            ffmpeg,
            messages,
            command,
            thread: Some(thread),
        }
    }

    /// The server's messages so far.
    pub fn messages(&self) -> Vec<Value> {
        self.messages.lock().unwrap().clone()
    }

    /// The first server message of `kind` (`live`, `error`, …), waiting up to `timeout`.
    pub fn wait_message(&self, kind: &str, timeout: Duration) -> Option<Value> {
        super::wait_for(timeout, || {
            self.messages().into_iter().find(|m| m["type"] == kind)
        })
    }

    /// Sends `stop` and waits until the server closed the socket.
    pub fn stop(mut self) -> Vec<Value> {
        *self.command.lock().unwrap() = Command_::Stop;
        // the thread may be waiting for the recorder's next bytes: they come within a slice
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
        self.join();
        self.messages()
    }

    /// Drops the connection without a close frame, as a lost network does.
    pub fn drop_connection(mut self) {
        *self.command.lock().unwrap() = Command_::Drop;
        self.join();
    }

    /// Whether the sending thread has finished (the server closed the socket, or it was told to).
    pub fn closed(&self) -> bool {
        self.thread.as_ref().is_none_or(|t| t.is_finished())
    }

    fn join(&mut self) {
        let _ = self.ffmpeg.kill();
        let _ = self.ffmpeg.wait();
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

impl Drop for WsPublisher {
    fn drop(&mut self) {
        if self.thread.is_some() {
            *self.command.lock().unwrap() = Command_::Drop;
            self.join();
        }
    }
}

pub fn hello(key: &str, mime: &str) -> String {
    serde_json::json!({ "key": key, "mime": mime }).to_string()
}

/// A WebSocket to `ws://{http}/ingest/ws` whose reads time out quickly, so one thread can
/// both send and look for the server's messages.
pub fn connect(http: &str) -> WebSocket<TcpStream> {
    try_connect(http).expect("WebSocket handshake")
}

/// `connect`, or `None` when the server refuses the handshake (e.g. `503` at its limit).
pub fn try_connect(http: &str) -> Option<WebSocket<TcpStream>> {
    let stream = TcpStream::connect(http).expect("connect to the server");
    let (socket, _) = tungstenite::client(format!("ws://{http}/ingest/ws"), stream).ok()?;
    socket
        .get_ref()
        .set_read_timeout(Some(Duration::from_millis(5)))
        .expect("read timeout");
    Some(socket)
}

/// Reads the messages that arrived, without waiting for more.
fn read_available(socket: &mut WebSocket<TcpStream>, messages: &Mutex<Vec<Value>>) {
    while let Ok(message) = socket.read() {
        if let Message::Text(text) = message {
            if let Ok(value) = serde_json::from_str(text.as_str()) {
                messages.lock().unwrap().push(value);
            }
        }
    }
}

/// Reads until the server closes (at most 30 s).
pub fn read_until_closed(socket: &mut WebSocket<TcpStream>, messages: &Mutex<Vec<Value>>) {
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    while std::time::Instant::now() < deadline {
        match socket.read() {
            Ok(Message::Text(text)) => {
                if let Ok(value) = serde_json::from_str(text.as_str()) {
                    messages.lock().unwrap().push(value);
                }
            }
            Ok(_) => {}
            Err(tungstenite::Error::Io(e))
                if matches!(
                    e.kind(),
                    std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
                ) => {}
            Err(_) => return,
        }
    }
}
