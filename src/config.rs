//! Settings: built-in defaults → optional `strata.toml` (or `--config PATH`) → environment
//! `STRATA__SECTION__KEY` → `validate()`. Every key is optional; the defaults run one node with
//! SQLite and local disk under `data_dir`.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use serde::Deserialize;

use crate::db::ids::{self, KeyHasher};
use crate::publish::store;
use crate::transcode::Ladders;

#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("configuration: {0}")]
    Load(#[from] config::ConfigError),
    #[error("configuration key `{key}`: {message}")]
    Invalid { key: &'static str, message: String },
}

fn invalid(key: &'static str, message: impl Into<String>) -> ConfigError {
    ConfigError::Invalid {
        key,
        message: message.into(),
    }
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Settings {
    pub data_dir: PathBuf,
    pub rtmp: RtmpSettings,
    pub rtmps: RtmpsSettings,
    pub srt: SrtSettings,
    pub hls_push: HlsPushSettings,
    pub ws: WsSettings,
    pub devices: DeviceSettings,
    pub http: HttpSettings,
    pub storage: StorageSettings,
    pub database: DatabaseSettings,
    pub segment: SegmentSettings,
    pub limits: LimitSettings,
    pub retention: RetentionSettings,
    pub node: NodeSettings,
    pub transcode: TranscodeSettings,
    pub auth: AuthSettings,
    pub webhooks: WebhookSettings,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RtmpSettings {
    pub listen: SocketAddr,
    /// The RTMP application name publishers use (`rtmp://host/APP`).
    pub app: String,
    /// Seconds from TCP accept to an accepted `publish`.
    pub handshake_timeout: f64,
    /// Largest RTMP message accepted, bytes (a 4K keyframe is a few MB).
    pub max_message_size: u32,
    /// Open RTMP connections, publishing or not.
    pub max_connections: usize,
    /// Connections from one address that have not started publishing (handshaking,
    /// connecting, or idle): one address cannot hold every slot.
    pub max_pending_per_ip: usize,
    /// Seconds every write to a peer may take: a peer that never reads is closed after it.
    pub write_timeout: f64,
    /// Seconds of silence after which a publisher is considered lost (see `reconnect_grace`).
    pub idle_timeout: f64,
    /// Seconds a broadcast waits for a publisher lost without unpublishing to reconnect and
    /// continue it (0: end at once).
    pub reconnect_grace: f64,
}

/// RTMPS: RTMP over TLS on its own port, with the same limits and admission as RTMP. Off
/// unless both `cert` and `key` are set.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RtmpsSettings {
    pub listen: SocketAddr,
    /// PEM certificate chain (leaf first). Empty: RTMPS is off.
    pub cert: PathBuf,
    /// PEM private key of the certificate. Empty: RTMPS is off.
    pub key: PathBuf,
}

impl RtmpsSettings {
    /// The certificate and key paths, when RTMPS is on.
    pub fn identity(&self) -> Option<(&Path, &Path)> {
        let set = |p: &PathBuf| !p.as_os_str().is_empty();
        (set(&self.cert) && set(&self.key)).then_some((self.cert.as_path(), self.key.as_path()))
    }
}

/// SRT ingest (MPEG-TS over SRT, libsrt), on by default.
#[derive(Clone, Deserialize)]
pub struct SrtSettings {
    pub enabled: bool,
    /// UDP address the SRT listener binds.
    pub listen: SocketAddr,
    /// Callers must use this passphrase (AES, 10–79 characters); empty: no encryption.
    pub passphrase: String,
    /// Receiver latency (SRT's TSBPD buffer), in milliseconds.
    pub latency_ms: u32,
    pub max_connections: usize,
    /// Connections from one address that have not started publishing.
    pub max_pending_per_ip: usize,
    /// A publisher whose connection carries no media for this long is lost (seconds).
    pub idle_timeout: f64,
}

/// HLS push ingest (`PUT /ingest/hls/{stream}/{file}`, see `ingest::hls_push`), on by default.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct HlsPushSettings {
    pub enabled: bool,
    /// Largest segment or init segment upload, bytes.
    pub max_segment_bytes: usize,
    /// Largest playlist upload, bytes.
    pub max_playlist_bytes: usize,
    /// Uploads of one stream waiting to be fed (out of order, early), bytes.
    pub max_waiting_bytes: usize,
    /// Requests one stream may make per second (bursts of twice that); past it 429.
    pub requests_per_second: u32,
}

impl HlsPushSettings {
    pub fn limits(&self) -> crate::ingest::hls_push::HlsPushSettings {
        crate::ingest::hls_push::HlsPushSettings {
            max_segment_bytes: self.max_segment_bytes,
            max_playlist_bytes: self.max_playlist_bytes,
            max_waiting_bytes: self.max_waiting_bytes,
            requests_per_second: self.requests_per_second,
        }
    }
}

/// WebSocket ingest (`/ingest/ws`: the Go live page, see `ingest::ws`), on by default.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct WsSettings {
    pub enabled: bool,
    /// Largest binary message (one slice of the recording), bytes.
    pub max_message_bytes: usize,
    /// Seconds a connection has to send its first message (the key).
    pub hello_timeout: f64,
    /// Seconds without a byte of the recording before the publisher counts as lost.
    pub idle_timeout: f64,
    /// Open WebSocket publishers, all streams together.
    pub max_connections: usize,
}

impl WsSettings {
    pub fn limits(&self) -> crate::ingest::ws::WsLimits {
        crate::ingest::ws::WsLimits {
            max_message_bytes: self.max_message_bytes,
            hello_timeout: std::time::Duration::from_secs_f64(self.hello_timeout),
            idle_timeout: std::time::Duration::from_secs_f64(self.idle_timeout),
            max_connections: self.max_connections,
        }
    }
}

/// Devices (`crate::devices`): the signaling socket (`/ingest/device`) and the UDP port their
/// RTP comes to, on by default.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DeviceSettings {
    pub enabled: bool,
    /// The UDP address devices send RTP to.
    pub rtp_listen: SocketAddr,
    /// The host devices are told to send RTP to. Empty: the host they reached the signaling
    /// socket at (right unless a proxy or NAT sits between them and this server).
    pub rtp_host: String,
    /// The UDP port devices are told to send RTP to. 0: the port `rtp_listen` bound (set it
    /// when a port forward or relay sits in front of this server).
    pub rtp_port: u16,
    /// Seconds a signaling connection has to send its `hello`.
    pub hello_timeout: f64,
    /// Seconds between pings (the round-trip time is measured on them).
    pub ping_interval: f64,
    /// Seconds without a message from a device before it is offline.
    pub offline_after: f64,
    /// Seconds without an RTP packet, while streaming, before the device counts as lost.
    pub rtp_idle_timeout: f64,
    /// The bit rate devices are told to start at, kbit/s.
    pub bitrate_kbps: u32,
    /// Devices connected at once.
    pub max_connections: usize,
}

impl DeviceSettings {
    pub fn signaling(&self) -> crate::devices::signaling::SignalingSettings {
        use std::time::Duration;
        crate::devices::signaling::SignalingSettings {
            hello_timeout: Duration::from_secs_f64(self.hello_timeout),
            ping_interval: Duration::from_secs_f64(self.ping_interval),
            offline_after: Duration::from_secs_f64(self.offline_after),
            rtp_idle_timeout: Duration::from_secs_f64(self.rtp_idle_timeout),
            bitrate_kbps: self.bitrate_kbps,
            max_connections: self.max_connections,
            rtp_host: self.rtp_host.clone(),
            rtp_port: self.rtp_port,
        }
    }
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct HttpSettings {
    pub listen: SocketAddr,
    /// Base URL players and OBS users are told about. Empty: derived from the listen address.
    pub public_url: String,
    /// The built web app (player, streams page, dashboard): `web/dist` after `make web`.
    pub web_root: PathBuf,
    /// Open HTTP connections, all workers together (event streams included). At the cap the
    /// server stops accepting; further clients wait in the listen backlog until one closes.
    pub max_connections: usize,
    /// Seconds an idle kept-alive connection stays open between requests (0: close after each
    /// response).
    pub keep_alive: f64,
    /// Seconds a new connection has to send its first request head; past it the server answers
    /// 408 and closes (a client that connects and says nothing does not hold a slot).
    pub request_timeout: f64,
    /// Event streams (`/api/v1/events` and `/api/public/events` together) open at once; past it
    /// a new one is answered 503 with `Retry-After`.
    pub max_event_subscribers: usize,
    /// Event streams open at once from one client address (IPv6: one /64), as the TCP peer
    /// (behind a reverse proxy that is the proxy); past it 429 with `Retry-After`.
    pub max_event_subscribers_per_ip: usize,
    /// `SO_SNDBUF` of every connection, bytes (0: the kernel's default, autotuned). Bounded so
    /// that the kernel holds little for a slow viewer (see `http::pacing`).
    pub send_buffer: usize,
    /// `TCP_NOTSENT_LOWAT` of every connection, bytes (0: off): unsent bytes the kernel may
    /// queue before the server stops writing.
    pub notsent_lowat: u32,
    /// Bytes of live objects (manifests, init segments, newest segments and parts) the origin
    /// keeps in memory, least recently used evicted first (see `hot`); 0: none.
    pub hot_cache_bytes: u64,
}

#[derive(Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct StorageSettings {
    /// `file:///path`, `memory://`, `s3://bucket[/prefix]`, `gs://bucket[/prefix]`,
    /// `az://container[/prefix]`. Empty: `file://{data_dir}/media`.
    pub url: String,
    /// S3-compatible endpoint (MinIO: `http://minio:9000`); empty: AWS (or `AWS_ENDPOINT`).
    pub endpoint: String,
    /// Empty: `AWS_REGION` / `AWS_DEFAULT_REGION`, else `us-east-1`.
    pub region: String,
    /// Empty: `AWS_ACCESS_KEY_ID` / `AWS_SECRET_ACCESS_KEY` (or the instance's role).
    pub access_key_id: String,
    pub secret_access_key: String,
    /// Path-style requests (`endpoint/bucket/key`): MinIO, moto and most local servers.
    pub path_style: bool,
    /// Allow a plain-HTTP endpoint.
    pub allow_http: bool,
    /// Seconds one object may take to store, retries included, before its segment waits for
    /// the next round. 0: one segment duration.
    pub write_budget: f64,
    /// Segments held (in order) while the store fails; past this the oldest is given up and
    /// reported.
    pub backlog: usize,
    /// When set, segment requests are redirected (302) to this base URL (a public bucket or a
    /// CDN) followed by the object's path.
    pub public_base_url: String,
}

impl std::fmt::Debug for StorageSettings {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("StorageSettings")
            .field("url", &self.url)
            .field("endpoint", &self.endpoint)
            .field("secret_access_key", &"…")
            .finish_non_exhaustive()
    }
}

/// How long objects stay in the store.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RetentionSettings {
    /// Seconds a segment that left the live window stays (players and CDNs that read the
    /// previous playlist can still fetch it).
    pub grace: f64,
    /// Seconds an ended broadcast's live manifests (and their last window) stay under `live/`.
    pub live_after_end: f64,
    /// Days recordings (`vod/`) are kept; 0 keeps them until deleted.
    pub vod_days: f64,
    /// Days clips are kept (counted from when they were cut); 0 keeps them until deleted.
    pub clip_days: f64,
    /// Seconds between sweeps of the store for leftovers (also run at start-up).
    pub sweep_interval: f64,
}

/// This process among several sharing one database and one bucket.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NodeSettings {
    /// Stable name of this node. Empty: generated once into `{data_dir}/node-id`.
    pub id: String,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DatabaseSettings {
    /// `sqlite://path` or `postgres://…`. Empty: SQLite at `{data_dir}/strata.db`.
    pub url: String,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SegmentSettings {
    /// Target segment duration, seconds.
    pub duration: f64,
    /// Target part duration, seconds: segments are cut into parts of at most this long, each
    /// published as soon as it is complete (LL-HLS, LL-DASH).
    pub part_duration: f64,
    /// Segments listed in a live playlist.
    pub window: usize,
}

/// Memory one broadcast may use, in bytes.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LimitSettings {
    /// Frames queued from ingest to packaging or the transcoder; past it the publisher's
    /// socket is not read (TCP pushes back).
    pub ingest_queue_bytes: usize,
    /// Media held for packaging (open segments, segments waiting for other renditions or
    /// audio); past it the broadcast ends with a reason.
    pub held_media_bytes: usize,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TranscodeSettings {
    /// Directory of extra ladder files (`*.toml`); the shipped ladders are built in.
    pub ladders: PathBuf,
    /// Ladder of streams created without `--ladder`.
    pub default_ladder: String,
    /// Address-space limit of each broadcast's transcoding worker, MiB (0: none).
    pub worker_memory_mb: u64,
    /// Nice levels each transcoding worker runs below the server (0-19).
    pub worker_nice: i32,
    /// Where a ladder decodes and encodes: in a worker process per broadcast (the default),
    /// or in threads of the server.
    pub isolation: TranscodeIsolation,
}

/// `transcode.isolation`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum TranscodeIsolation {
    /// A `strata worker` process per broadcast: a decoder crash or a runaway allocation ends
    /// that broadcast only.
    Process,
    /// Threads of the server process (what Strata did before the worker; for comparing its
    /// cost, or where a server may not start processes). A crash there ends every broadcast.
    Thread,
}

impl TranscodeSettings {
    /// The limits every transcoding worker runs under.
    pub fn worker_limits(&self) -> crate::transcode::WorkerLimits {
        crate::transcode::WorkerLimits {
            memory_mb: self.worker_memory_mb,
            nice: self.worker_nice,
            cpu_secs: 0,
        }
    }
}

#[derive(Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AuthSettings {
    /// Key of the HMAC that stream keys are stored as. Empty: generated once into
    /// `{data_dir}/secret`. Nodes sharing a database must share it.
    pub secret: String,
    /// Admin API bearer tokens. Empty: one is generated at first start, printed once, and only
    /// its hash stored.
    pub admin_tokens: Vec<String>,
}

/// Publish webhooks (see `webhooks`); an empty URL means no hook.
#[derive(Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct WebhookSettings {
    /// Asked before every publish; only a 2xx answer within `timeout` lets it start.
    pub on_publish: String,
    /// Told when a broadcast ends.
    pub on_unpublish: String,
    /// Told when a broadcast's recording (VOD manifests) is written.
    pub on_recording_ready: String,
    /// Told when a clip is ready (or could not be made).
    pub on_clip_ready: String,
    /// Seconds a hook may take to answer.
    pub timeout: f64,
    /// Key of the HMAC-SHA256 signature every hook request carries (see `webhooks`). Empty:
    /// requests are not signed.
    pub secret: String,
}

impl std::fmt::Debug for WebhookSettings {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("WebhookSettings")
            .field("on_publish", &self.on_publish)
            .field("on_unpublish", &self.on_unpublish)
            .field("on_recording_ready", &self.on_recording_ready)
            .field("on_clip_ready", &self.on_clip_ready)
            .field("timeout", &self.timeout)
            .field("secret", &if self.secret.is_empty() { "" } else { "…" })
            .finish()
    }
}

impl std::fmt::Debug for SrtSettings {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SrtSettings")
            .field("enabled", &self.enabled)
            .field("listen", &self.listen)
            .field("passphrase", &(!self.passphrase.is_empty()).then_some("…"))
            .field("latency_ms", &self.latency_ms)
            .field("max_connections", &self.max_connections)
            .field("max_pending_per_ip", &self.max_pending_per_ip)
            .field("idle_timeout", &self.idle_timeout)
            .finish()
    }
}

impl std::fmt::Debug for AuthSettings {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AuthSettings")
            .field("secret", &"…")
            .field("admin_tokens", &self.admin_tokens.len())
            .finish()
    }
}

const DEFAULTS: &str = r#"
data_dir = "./data"

[rtmp]
listen = "0.0.0.0:1935"
app = "live"
handshake_timeout = 5.0
max_message_size = 8388608
max_connections = 1000
max_pending_per_ip = 16
write_timeout = 10.0
idle_timeout = 15.0
reconnect_grace = 10.0

[rtmps]
listen = "0.0.0.0:1936"
cert = ""
key = ""

[srt]
enabled = true
listen = "0.0.0.0:9000"
passphrase = ""
latency_ms = 120
max_connections = 256
max_pending_per_ip = 16
idle_timeout = 15.0

[hls_push]
enabled = true
max_segment_bytes = 33554432
max_playlist_bytes = 65536
max_waiting_bytes = 67108864
requests_per_second = 20

[ws]
enabled = true
max_message_bytes = 2097152
hello_timeout = 10.0
idle_timeout = 10.0
max_connections = 256

[devices]
enabled = true
rtp_listen = "0.0.0.0:5004"
rtp_host = ""
rtp_port = 0
hello_timeout = 10.0
ping_interval = 2.0
offline_after = 6.0
rtp_idle_timeout = 10.0
bitrate_kbps = 2500
max_connections = 1024

[http]
listen = "0.0.0.0:8080"
public_url = ""
web_root = "./web/dist"
max_connections = 10000
keep_alive = 15.0
request_timeout = 10.0
max_event_subscribers = 1000
max_event_subscribers_per_ip = 20
send_buffer = 524288
notsent_lowat = 16384
hot_cache_bytes = 134217728

[storage]
url = ""
endpoint = ""
region = ""
access_key_id = ""
secret_access_key = ""
path_style = false
allow_http = false
write_budget = 0.0
backlog = 6
public_base_url = ""

[retention]
grace = 30.0
live_after_end = 3600.0
vod_days = 0.0
clip_days = 0.0
sweep_interval = 60.0

[node]
id = ""

[database]
url = ""

[segment]
duration = 2.0
part_duration = 0.5
window = 6

[limits]
ingest_queue_bytes = 16777216
held_media_bytes = 104857600

[transcode]
ladders = "./ladders"
default_ladder = "default"
worker_memory_mb = 4096
worker_nice = 5
isolation = "process"

[auth]
secret = ""
admin_tokens = []

[webhooks]
on_publish = ""
on_unpublish = ""
on_recording_ready = ""
on_clip_ready = ""
timeout = 2.0
secret = ""
"#;

impl Settings {
    /// Loads settings from defaults, the optional file and the environment, then validates.
    pub fn load(file: Option<&Path>) -> Result<Self, ConfigError> {
        let mut builder = config::Config::builder()
            .add_source(config::File::from_str(DEFAULTS, config::FileFormat::Toml));
        match file {
            Some(path) => {
                if !path.exists() {
                    return Err(invalid(
                        "--config",
                        format!("{} does not exist", path.display()),
                    ));
                }
                builder = builder.add_source(config::File::from(path).required(true));
            }
            None => {
                builder =
                    builder.add_source(config::File::with_name("strata.toml").required(false));
            }
        }
        let settings: Settings = builder
            .add_source(
                config::Environment::with_prefix("STRATA")
                    .prefix_separator("__")
                    .separator("__")
                    .list_separator(",")
                    .with_list_parse_key("auth.admin_tokens")
                    .try_parsing(true),
            )
            .build()?
            .try_deserialize()?;
        settings.validate()?;
        Ok(settings)
    }

    pub fn validate(&self) -> Result<(), ConfigError> {
        let (cert_set, key_set) = (
            !self.rtmps.cert.as_os_str().is_empty(),
            !self.rtmps.key.as_os_str().is_empty(),
        );
        if cert_set != key_set {
            let missing = if cert_set { "rtmps.key" } else { "rtmps.cert" };
            return Err(invalid(
                missing,
                "RTMPS needs both rtmps.cert and rtmps.key (PEM files); set it too, or neither",
            ));
        }
        if !self.srt.passphrase.is_empty() {
            in_range(
                "srt.passphrase",
                self.srt.passphrase.chars().count(),
                10..=79,
                "characters (SRT's limits)",
            )?;
        }
        in_range("srt.latency_ms", self.srt.latency_ms, 20..=8000, "ms")?;
        in_range(
            "hls_push.max_segment_bytes",
            self.hls_push.max_segment_bytes,
            65_536..=1 << 30,
            "bytes",
        )?;
        in_range(
            "hls_push.max_playlist_bytes",
            self.hls_push.max_playlist_bytes,
            1024..=1 << 24,
            "bytes",
        )?;
        in_range(
            "hls_push.max_waiting_bytes",
            self.hls_push.max_waiting_bytes,
            self.hls_push.max_segment_bytes..=1 << 32,
            "bytes (at least hls_push.max_segment_bytes)",
        )?;
        in_range(
            "ws.max_message_bytes",
            self.ws.max_message_bytes,
            65_536..=64 << 20,
            "bytes",
        )?;
        in_range(
            "ws.hello_timeout",
            self.ws.hello_timeout,
            0.5..=300.0,
            "seconds",
        )?;
        in_range(
            "ws.idle_timeout",
            self.ws.idle_timeout,
            1.0..=300.0,
            "seconds",
        )?;
        in_range(
            "ws.max_connections",
            self.ws.max_connections,
            1..=65_536,
            "connections",
        )?;
        in_range(
            "devices.hello_timeout",
            self.devices.hello_timeout,
            0.5..=300.0,
            "seconds",
        )?;
        in_range(
            "devices.ping_interval",
            self.devices.ping_interval,
            0.2..=60.0,
            "seconds",
        )?;
        in_range(
            "devices.offline_after",
            self.devices.offline_after,
            self.devices.ping_interval..=600.0,
            "seconds (at least devices.ping_interval)",
        )?;
        in_range(
            "devices.rtp_idle_timeout",
            self.devices.rtp_idle_timeout,
            1.0..=600.0,
            "seconds",
        )?;
        in_range(
            "devices.bitrate_kbps",
            self.devices.bitrate_kbps,
            50..=100_000,
            "kbit/s",
        )?;
        in_range(
            "devices.max_connections",
            self.devices.max_connections,
            1..=65_536,
            "connections",
        )?;
        in_range(
            "hls_push.requests_per_second",
            self.hls_push.requests_per_second,
            1..=10_000,
            "requests",
        )?;
        in_range(
            "srt.max_connections",
            self.srt.max_connections,
            1..=4096,
            "connections",
        )?;
        in_range(
            "srt.idle_timeout",
            self.srt.idle_timeout,
            1.0..=300.0,
            "seconds",
        )?;
        in_range(
            "segment.duration",
            self.segment.duration,
            1.0..=10.0,
            "seconds",
        )?;
        in_range(
            "segment.part_duration",
            self.segment.part_duration,
            0.2..=1.0,
            "seconds",
        )?;
        in_range("segment.window", self.segment.window, 3..=100, "segments")?;
        in_range(
            "limits.ingest_queue_bytes",
            self.limits.ingest_queue_bytes,
            1 << 20..=1 << 30,
            "bytes",
        )?;
        in_range(
            "limits.held_media_bytes",
            self.limits.held_media_bytes,
            8 << 20..=4 << 30,
            "bytes",
        )?;
        in_range(
            "rtmp.handshake_timeout",
            self.rtmp.handshake_timeout,
            0.5..=60.0,
            "seconds",
        )?;
        in_range(
            "rtmp.max_message_size",
            self.rtmp.max_message_size,
            65_536..=16_777_215,
            "bytes",
        )?;
        in_range(
            "rtmp.max_connections",
            self.rtmp.max_connections,
            1..=1_000_000,
            "connections",
        )?;
        in_range(
            "rtmp.max_pending_per_ip",
            self.rtmp.max_pending_per_ip,
            1..=100_000,
            "connections",
        )?;
        in_range(
            "rtmp.write_timeout",
            self.rtmp.write_timeout,
            0.5..=300.0,
            "seconds",
        )?;
        in_range(
            "rtmp.idle_timeout",
            self.rtmp.idle_timeout,
            1.0..=300.0,
            "seconds",
        )?;
        in_range(
            "rtmp.reconnect_grace",
            self.rtmp.reconnect_grace,
            0.0..=300.0,
            "seconds",
        )?;
        if self.transcode.worker_memory_mb != 0 {
            in_range(
                "transcode.worker_memory_mb",
                self.transcode.worker_memory_mb,
                16..=1 << 20,
                "MiB (or 0 for no limit)",
            )?;
        }
        in_range(
            "transcode.worker_nice",
            self.transcode.worker_nice,
            0..=19,
            "nice levels",
        )?;
        if !ids::is_name(&self.rtmp.app) {
            return Err(invalid("rtmp.app", ids::NAME_RULE));
        }
        if !self.auth.secret.is_empty() && self.auth.secret.len() < 32 {
            return Err(invalid(
                "auth.secret",
                "must be at least 32 characters (or empty to generate one)",
            ));
        }
        if self.auth.admin_tokens.iter().any(|t| t.len() < 20) {
            return Err(invalid(
                "auth.admin_tokens",
                "every token must be at least 20 characters",
            ));
        }
        url_with_scheme("http.public_url", &self.http.public_url, &["http", "https"])?;
        in_range(
            "http.max_connections",
            self.http.max_connections,
            1..=1_000_000,
            "connections",
        )?;
        in_range(
            "http.keep_alive",
            self.http.keep_alive,
            0.0..=3600.0,
            "seconds",
        )?;
        in_range(
            "http.request_timeout",
            self.http.request_timeout,
            0.1..=300.0,
            "seconds",
        )?;
        in_range(
            "http.max_event_subscribers",
            self.http.max_event_subscribers,
            1..=1_000_000,
            "event streams",
        )?;
        in_range(
            "http.max_event_subscribers_per_ip",
            self.http.max_event_subscribers_per_ip,
            1..=1_000_000,
            "event streams",
        )?;
        if self.http.send_buffer != 0 {
            in_range(
                "http.send_buffer",
                self.http.send_buffer,
                4096..=64 << 20,
                "bytes (or 0)",
            )?;
        }
        in_range(
            "http.notsent_lowat",
            self.http.notsent_lowat,
            0..=16 << 20,
            "bytes",
        )?;
        in_range(
            "http.hot_cache_bytes",
            self.http.hot_cache_bytes,
            0..=64 << 30,
            "bytes",
        )?;
        for (key, url) in [
            ("webhooks.on_publish", &self.webhooks.on_publish),
            ("webhooks.on_unpublish", &self.webhooks.on_unpublish),
            (
                "webhooks.on_recording_ready",
                &self.webhooks.on_recording_ready,
            ),
            ("webhooks.on_clip_ready", &self.webhooks.on_clip_ready),
        ] {
            url_with_scheme(key, url, &["http", "https"])?;
        }
        in_range(
            "webhooks.timeout",
            self.webhooks.timeout,
            0.1..=30.0,
            "seconds",
        )?;
        if !self.webhooks.secret.is_empty() && self.webhooks.secret.len() < 16 {
            return Err(invalid(
                "webhooks.secret",
                "must be at least 16 characters (or empty to send unsigned requests)",
            ));
        }
        url_with_scheme("storage.url", &self.storage.url, store::SCHEMES)?;
        url_with_scheme(
            "storage.endpoint",
            &self.storage.endpoint,
            &["http", "https"],
        )?;
        url_with_scheme(
            "storage.public_base_url",
            &self.storage.public_base_url,
            &["http", "https"],
        )?;
        in_range(
            "storage.write_budget",
            self.storage.write_budget,
            0.0..=60.0,
            "seconds",
        )?;
        in_range("storage.backlog", self.storage.backlog, 1..=100, "segments")?;
        in_range(
            "retention.grace",
            self.retention.grace,
            0.0..=86_400.0,
            "seconds",
        )?;
        in_range(
            "retention.live_after_end",
            self.retention.live_after_end,
            0.0..=31_536_000.0,
            "seconds",
        )?;
        in_range(
            "retention.vod_days",
            self.retention.vod_days,
            0.0..=36_500.0,
            "days",
        )?;
        in_range(
            "retention.clip_days",
            self.retention.clip_days,
            0.0..=36_500.0,
            "days",
        )?;
        in_range(
            "retention.sweep_interval",
            self.retention.sweep_interval,
            1.0..=86_400.0,
            "seconds",
        )?;
        if !self.node.id.is_empty() && !ids::is_name(&self.node.id) {
            return Err(invalid("node.id", ids::NAME_RULE));
        }
        url_with_scheme(
            "database.url",
            &self.database.url,
            &["sqlite", "postgres", "postgresql"],
        )?;
        Ok(())
    }

    /// The shipped ladders plus those in `transcode.ladders`; the default ladder must exist.
    pub fn load_ladders(&self) -> Result<Ladders, ConfigError> {
        let ladders = Ladders::load(&self.transcode.ladders)
            .map_err(|e| invalid("transcode.ladders", e.to_string()))?;
        ladders
            .get(&self.transcode.default_ladder)
            .map_err(|e| invalid("transcode.default_ladder", e.to_string()))?;
        Ok(ladders)
    }

    /// The stream-key hasher: keyed with `auth.secret`, or with `{data_dir}/secret`, which is
    /// created (mode 0600) on first use.
    pub fn key_hasher(&self) -> Result<KeyHasher, ConfigError> {
        if !self.auth.secret.is_empty() {
            return Ok(KeyHasher::new(self.auth.secret.as_bytes()));
        }
        let path = self.data_dir.join("secret");
        let fail = |e: std::io::Error| invalid("auth.secret", format!("{}: {e}", path.display()));
        match std::fs::read_to_string(&path) {
            Ok(secret) if secret.trim().len() >= 32 => {
                return Ok(KeyHasher::new(secret.trim().as_bytes()))
            }
            Ok(_) => {
                return Err(invalid(
                    "auth.secret",
                    format!("{} is too short", path.display()),
                ))
            }
            Err(e) if e.kind() != std::io::ErrorKind::NotFound => return Err(fail(e)),
            Err(_) => {}
        }
        std::fs::create_dir_all(&self.data_dir).map_err(fail)?;
        let secret = ids::new_secret();
        let mut options = std::fs::OpenOptions::new();
        options.write(true).create_new(true);
        #[cfg(unix)]
        std::os::unix::fs::OpenOptionsExt::mode(&mut options, 0o600);
        match options.open(&path) {
            Ok(mut file) => {
                std::io::Write::write_all(&mut file, secret.as_bytes()).map_err(fail)?;
                Ok(KeyHasher::new(secret.as_bytes()))
            }
            // another process created it first: use theirs
            Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => self.key_hasher(),
            Err(e) => Err(fail(e)),
        }
    }

    pub fn storage_url(&self) -> String {
        if self.storage.url.is_empty() {
            format!(
                "file://{}",
                absolute(&self.data_dir.join("media")).display()
            )
        } else {
            self.storage.url.clone()
        }
    }

    /// How to reach a cloud bucket; requests time out after the write budget.
    pub fn cloud_options(&self) -> store::CloudOptions {
        store::CloudOptions {
            endpoint: self.storage.endpoint.clone(),
            region: self.storage.region.clone(),
            access_key_id: self.storage.access_key_id.clone(),
            secret_access_key: self.storage.secret_access_key.clone(),
            path_style: self.storage.path_style,
            allow_http: self.storage.allow_http,
            request_timeout: self.write_budget(),
        }
    }

    /// How long one object write may take, retries included (`storage.write_budget`, or one
    /// segment duration).
    pub fn write_budget(&self) -> std::time::Duration {
        let secs = if self.storage.write_budget > 0.0 {
            self.storage.write_budget
        } else {
            self.segment.duration
        };
        std::time::Duration::from_secs_f64(secs)
    }

    /// This node's id: `node.id`, or the one generated into `{data_dir}/node-id` at first start.
    pub fn node_id(&self) -> Result<String, ConfigError> {
        if !self.node.id.is_empty() {
            return Ok(self.node.id.clone());
        }
        let path = self.data_dir.join("node-id");
        let fail = |e: std::io::Error| invalid("node.id", format!("{}: {e}", path.display()));
        match std::fs::read_to_string(&path) {
            Ok(id) if ids::is_name(id.trim()) => return Ok(id.trim().to_string()),
            Ok(_) => {
                return Err(invalid(
                    "node.id",
                    format!("{} holds no valid id", path.display()),
                ))
            }
            Err(e) if e.kind() != std::io::ErrorKind::NotFound => return Err(fail(e)),
            Err(_) => {}
        }
        std::fs::create_dir_all(&self.data_dir).map_err(fail)?;
        let id = format!("node-{}", ids::new_recording_id());
        std::fs::write(&path, &id).map_err(fail)?;
        Ok(id)
    }

    pub fn database_url(&self) -> String {
        if self.database.url.is_empty() {
            format!(
                "sqlite://{}?mode=rwc",
                absolute(&self.data_dir.join("strata.db")).display()
            )
        } else {
            self.database.url.clone()
        }
    }

    /// The public base URL without a trailing slash; when unset, built from the HTTP address
    /// actually bound (`localhost` for a wildcard address).
    pub fn public_url(&self, bound_http: SocketAddr) -> String {
        if !self.http.public_url.is_empty() {
            return self.http.public_url.trim_end_matches('/').to_string();
        }
        let host = if bound_http.ip().is_unspecified() {
            "localhost".to_string()
        } else {
            bound_http.ip().to_string()
        };
        format!("http://{host}:{}", bound_http.port())
    }

    /// What OBS's "Server" field should say.
    pub fn rtmp_url(&self, bound_http: SocketAddr, bound_rtmp: SocketAddr) -> String {
        let public = self.public_url(bound_http);
        let host = url::Url::parse(&public)
            .ok()
            .and_then(|u| u.host_str().map(str::to_string))
            .unwrap_or_else(|| "localhost".into());
        format!("rtmp://{host}:{}/{}", bound_rtmp.port(), self.rtmp.app)
    }

    /// What every SRT publish URL starts with (same host as `rtmp_url`), when SRT is on;
    /// `srt_publish_url` completes it with a key.
    pub fn srt_url_prefix(&self, bound_http: SocketAddr, bound_srt: SocketAddr) -> Option<String> {
        if !self.srt.enabled {
            return None;
        }
        let rtmp = self.rtmp_url(bound_http, bound_srt);
        let host_port = rtmp
            .strip_prefix("rtmp://")
            .and_then(|rest| rest.split('/').next())
            .unwrap_or("localhost");
        Some(format!(
            "srt://{host_port}?streamid=#!::r={}/",
            self.rtmp.app
        ))
    }

    /// The RTMPS URL OBS is told about (same host as `rtmp_url`), when RTMPS is on.
    pub fn rtmps_url(&self, bound_http: SocketAddr, bound_rtmps: SocketAddr) -> Option<String> {
        self.rtmps.identity()?;
        let rtmp = self.rtmp_url(bound_http, bound_rtmps);
        Some(format!(
            "rtmps{}",
            rtmp.strip_prefix("rtmp").unwrap_or(&rtmp)
        ))
    }
}

/// `value` must lie in `range` (NaN and infinities never do).
fn in_range<T: PartialOrd + std::fmt::Display>(
    key: &'static str,
    value: T,
    range: std::ops::RangeInclusive<T>,
    unit: &str,
) -> Result<(), ConfigError> {
    if range.contains(&value) {
        return Ok(());
    }
    let (low, high) = (range.start(), range.end());
    Err(invalid(
        key,
        format!("{value} is not between {low} and {high} {unit}"),
    ))
}

/// An optional URL (empty means "the default") whose scheme is one of `schemes`.
fn url_with_scheme(key: &'static str, value: &str, schemes: &[&str]) -> Result<(), ConfigError> {
    if value.is_empty() {
        return Ok(());
    }
    let url = url::Url::parse(value).map_err(|e| invalid(key, e.to_string()))?;
    if schemes.contains(&url.scheme()) {
        return Ok(());
    }
    let allowed: Vec<String> = schemes.iter().map(|s| format!("{s}:")).collect();
    Err(invalid(
        key,
        format!(
            "unsupported scheme `{}` (use {})",
            url.scheme(),
            allowed.join(", ")
        ),
    ))
}

fn absolute(path: &Path) -> PathBuf {
    std::path::absolute(path).unwrap_or_else(|_| path.to_path_buf())
}

/// The SRT URL a publisher with `key` uses: ffmpeg and OBS take it as is; the key travels in
/// the stream id (like a password, never in a path). A passphrase, when set, is not part of it:
/// it is the operator's to hand out (`&passphrase=…`).
pub fn srt_publish_url(prefix: &str, key: &str) -> String {
    format!("{prefix}{key},m=publish")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_are_valid() {
        let s: Settings = config::Config::builder()
            .add_source(config::File::from_str(DEFAULTS, config::FileFormat::Toml))
            .build()
            .unwrap()
            .try_deserialize()
            .unwrap();
        s.validate().unwrap();
        assert_eq!(s.segment.duration, 2.0);
        assert!(s.storage_url().starts_with("file:///"));
    }

    #[test]
    fn bad_values_name_their_key() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("strata.toml");
        for (toml, key) in [
            ("[segment]\nduration = 0.1\n", "segment.duration"),
            ("[segment]\npart_duration = 2.0\n", "segment.part_duration"),
            ("[segment]\nduration = \"fast\"\n", "duration"),
            ("[storage]\nurl = \"ftp://x\"\n", "storage.url"),
            ("[database]\nurl = \"mysql://x\"\n", "database.url"),
            ("[rtmp]\napp = \"a/b\"\n", "rtmp.app"),
            (
                "[http]\nmax_event_subscribers = 0\n",
                "http.max_event_subscribers",
            ),
            ("[http]\nrequest_timeout = 0\n", "http.request_timeout"),
            (
                "[transcode]\nworker_memory_mb = 8\n",
                "transcode.worker_memory_mb",
            ),
            ("[transcode]\nworker_nice = -1\n", "transcode.worker_nice"),
            ("[transcode]\nworker_nice = 20\n", "transcode.worker_nice"),
        ] {
            std::fs::write(&path, toml).unwrap();
            let err = Settings::load(Some(&path)).unwrap_err().to_string();
            assert!(err.contains(key), "{toml:?} → {err}");
        }
    }

    #[test]
    fn ladder_settings_are_checked_at_load() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("strata.toml");
        let ladders = dir.path().join("ladders");
        std::fs::create_dir(&ladders).unwrap();
        std::fs::write(
            &path,
            format!(
                "[transcode]\nladders = \"{}\"\ndefault_ladder = \"tiny\"\n",
                ladders.display()
            ),
        )
        .unwrap();
        let settings = Settings::load(Some(&path)).unwrap();
        let err = settings.load_ladders().unwrap_err().to_string();
        assert!(
            err.contains("transcode.default_ladder") && err.contains("tiny"),
            "{err}"
        );
        std::fs::write(
            ladders.join("tiny.toml"),
            "[[rungs]]\nname = \"a\"\nheight = 3\nbitrate = \"1M\"",
        )
        .unwrap();
        let err = settings.load_ladders().unwrap_err().to_string();
        assert!(err.contains("tiny.toml: rungs[0].height"), "{err}");
    }
}
