//! HLS push ingest: an encoder that can only make outgoing HTTP requests (ffmpeg's HLS muxer
//! with `-method PUT`, an edge box behind a firewall) uploads its playlist and segments to
//! `/ingest/hls/{stream name}/{file}`, and they go into the broadcast core like any other way in.
//!
//! - **Authentication**: the stream key travels in `Authorization: Bearer <key>` (ffmpeg:
//!   `-headers`), never in the path. It is checked before any byte of the body is read: a
//!   missing or wrong key, or a key of another stream than the path names, answers 401 and
//!   stores nothing. The key is never logged; a session remembers only its SHA-256.
//! - **Files**: `*.m3u8` is the pushed media playlist (at most `hls_push.max_playlist_bytes`,
//!   parsed by `playlist`); any other name is a segment or an init segment (at most
//!   `hls_push.max_segment_bytes`), MPEG-TS (demuxed by `ingest::mpegts`) or fMP4 with its
//!   `EXT-X-MAP` (by `ingest::fmp4`), told apart by their first bytes. `DELETE` (ffmpeg's
//!   `delete_segments`) is authenticated and ignored: what Strata publishes is its own.
//! - **Order**: `order` decides, from the playlists, which upload is fed next and what becomes
//!   of a missing, duplicated, late or out-of-order one (its module doc states the rules).
//!   Uploads waiting to be fed are bounded by `hls_push.max_waiting_bytes`.
//! - **Sessions**: the first authenticated upload of a stream is admitted by the broadcast
//!   core (key, claim, webhook, takeover, reconnect); a task (`session`) then owns the
//!   broadcast (one admission at a time per stream; a segment's body is read only once its push
//!   is admitted). Requests reach it through a bounded queue of `SESSION_QUEUE` uploads; when
//!   it is full the upload is answered 503 with `Retry-After` (no request waits holding a
//!   body). Each stream may make `hls_push.requests_per_second` requests (a burst of twice
//!   that); past it 429. A refused admission is answered from memory for `ADMIT_REFUSAL_HOLD`.
//!   A first upload that is an ended playlist (ffmpeg repeats its last one) starts nothing.
//! - **How it ends**: an `EXT-X-ENDLIST` ends the broadcast when everything before it was fed;
//!   no playlist for twice the target duration is a lost publisher (the reconnect grace: a
//!   pusher that comes back continues the session). A takeover by another publisher, a stop
//!   from the API or an unsupported codec ends it, and the pusher's further uploads are
//!   answered 409 until it has been quiet for twice the target duration; then a new push is
//!   a new broadcast.

mod order;
pub mod playlist;
mod session;

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use actix_web::http::header;
use actix_web::{web, HttpRequest, HttpResponse};
use bytes::{Bytes, BytesMut};
use futures::StreamExt;
use sha2::{Digest, Sha256};
use tokio::sync::mpsc;

pub use order::{Order, OrderStats, Step};
pub use playlist::{PushedPlaylist, MAX_NAME};

use crate::broadcast::{AdmitError, Core, Protocol};
use crate::telemetry::{self, LogThrottle};

/// Uploads queued from requests to a session's task.
const SESSION_QUEUE: usize = 16;
/// How long a refused admission (webhook, another node, busy) is answered from memory.
const ADMIT_REFUSAL_HOLD: Duration = Duration::from_secs(3);
/// How long an upload's body may take to arrive.
const BODY_TIMEOUT: Duration = Duration::from_secs(30);
/// Longest stream name in a push path.
const MAX_STREAM_NAME: usize = 128;

/// The limits of HLS push (`[hls_push]`).
#[derive(Debug, Clone)]
pub struct HlsPushSettings {
    pub max_segment_bytes: usize,
    pub max_playlist_bytes: usize,
    pub max_waiting_bytes: usize,
    pub requests_per_second: u32,
}

/// HLS push's state: the sessions of this node by stream name.
pub struct HlsPush {
    settings: HlsPushSettings,
    core: Arc<Core>,
    sessions: Mutex<HashMap<String, Entry>>,
    /// One admission at a time per stream (a pusher's first uploads come at once); an entry
    /// lives while an admission of its stream runs.
    admitting: Mutex<HashMap<String, Arc<tokio::sync::Mutex<()>>>>,
    refusals: LogThrottle,
    generations: std::sync::atomic::AtomicU64,
}

/// What one upload carries to a session.
enum Upload {
    File(String, Bytes),
    Playlist(PushedPlaylist),
}

/// A stream's push, as requests see it.
enum Entry {
    Live {
        key_hash: [u8; 32],
        generation: u64,
        uploads: mpsc::Sender<Upload>,
        bucket: TokenBucket,
    },
    /// Ended by a takeover, a stop or a refusal: the same key is answered `status` until
    /// quiet for `quiet` (each of its requests starts the wait again when `refresh`; else the
    /// wait runs from the refusal). Another key good for the stream starts a new push.
    Refused {
        key_hash: [u8; 32],
        status: u16,
        why: &'static str,
        last_request: Instant,
        quiet: Duration,
        refresh: bool,
    },
}

/// Requests a stream may make: `rate` per second, bursts of twice that.
struct TokenBucket {
    tokens: f64,
    rate: f64,
    at: Instant,
}

impl TokenBucket {
    fn new(rate: u32) -> Self {
        let rate = f64::from(rate.max(1));
        Self {
            tokens: 2.0 * rate,
            rate,
            at: Instant::now(),
        }
    }

    fn take(&mut self) -> bool {
        let now = Instant::now();
        let elapsed = now.duration_since(self.at).as_secs_f64();
        self.at = now;
        self.tokens = (self.tokens + elapsed * self.rate).min(2.0 * self.rate);
        if self.tokens >= 1.0 {
            self.tokens -= 1.0;
            true
        } else {
            false
        }
    }
}

fn key_hash(key: &str) -> [u8; 32] {
    Sha256::digest(key.as_bytes()).into()
}

fn bearer(req: &HttpRequest) -> Option<&str> {
    let value = req.headers().get(header::AUTHORIZATION)?.to_str().ok()?;
    let (scheme, key) = value.split_once(' ')?;
    let key = key.trim();
    (scheme.eq_ignore_ascii_case("bearer") && !key.is_empty() && key.len() <= 256).then_some(key)
}

fn plain(status: u16, message: &str) -> HttpResponse {
    let status =
        actix_web::http::StatusCode::from_u16(status).unwrap_or(actix_web::http::StatusCode::OK);
    HttpResponse::build(status)
        .content_type("text/plain; charset=utf-8")
        .body(format!("{message}\n"))
}

fn unauthorized() -> HttpResponse {
    HttpResponse::Unauthorized()
        .insert_header((header::WWW_AUTHENTICATE, "Bearer"))
        .content_type("text/plain; charset=utf-8")
        .body("a stream key for this stream is needed in `Authorization: Bearer <key>`\n")
}

fn too_many() -> HttpResponse {
    HttpResponse::TooManyRequests()
        .insert_header((header::RETRY_AFTER, "1"))
        .content_type("text/plain; charset=utf-8")
        .body("too many requests for this stream\n")
}

fn valid_stream_name(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= MAX_STREAM_NAME
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'-'))
}

/// What a request may do once its key is known good.
enum Authorized {
    /// Hand the upload to this session.
    Live(mpsc::Sender<Upload>),
    /// No session yet: admit one.
    New,
}

impl HlsPush {
    pub fn new(settings: HlsPushSettings, core: Arc<Core>) -> Arc<Self> {
        Arc::new(Self {
            settings,
            core,
            sessions: Mutex::new(HashMap::new()),
            admitting: Mutex::new(HashMap::new()),
            refusals: LogThrottle::new(Duration::from_secs(5)),
            generations: std::sync::atomic::AtomicU64::new(0),
        })
    }

    fn sessions(&self) -> std::sync::MutexGuard<'_, HashMap<String, Entry>> {
        self.sessions.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// The answer for a known session of `name` whose key hashes to `hash`, if there is one.
    /// `None`: the key must be checked with the database.
    fn known(&self, name: &str, hash: &[u8; 32]) -> Option<Result<Authorized, HttpResponse>> {
        let mut sessions = self.sessions();
        let entry = sessions.get_mut(name)?;
        match entry {
            Entry::Live {
                key_hash,
                uploads,
                bucket,
                ..
            } if key_hash == hash && !uploads.is_closed() => Some(if bucket.take() {
                Ok(Authorized::Live(uploads.clone()))
            } else {
                Err(too_many())
            }),
            Entry::Refused {
                key_hash,
                status,
                why,
                last_request,
                quiet,
                refresh,
            } if key_hash == hash => {
                if last_request.elapsed() >= *quiet {
                    sessions.remove(name);
                    None
                } else {
                    if *refresh {
                        *last_request = Instant::now();
                    }
                    Some(Err(plain(*status, why)))
                }
            }
            _ => None,
        }
    }

    /// Checks `key` for the stream `name` (cached for a live session, else in the database).
    async fn authorize(&self, name: &str, key: &str) -> Result<Authorized, HttpResponse> {
        let hash = key_hash(key);
        if let Some(known) = self.known(name, &hash) {
            return known;
        }
        let stream = match self.core.db.stream_by_key(key).await {
            Ok(stream) => stream,
            Err(e) => {
                tracing::warn!(stream = name, error = %e, "HLS push: cannot check the key");
                return Err(plain(503, "the server cannot check keys right now"));
            }
        };
        if stream.is_none_or(|s| s.name != name) {
            telemetry::publish_result(Protocol::HlsPush.label(), "bad_key");
            if let Some(unlogged) = self.refusals.check() {
                tracing::warn!(
                    stream = name,
                    unlogged,
                    "HLS push refused: wrong stream key"
                );
            }
            return Err(unauthorized());
        }
        // the key is good for this stream: a session under an older key (rotated) goes on
        let mut sessions = self.sessions();
        match sessions.get_mut(name) {
            Some(Entry::Live {
                key_hash,
                uploads,
                bucket,
                ..
            }) if !uploads.is_closed() => {
                *key_hash = hash;
                if !bucket.take() {
                    return Err(too_many());
                }
                Ok(Authorized::Live(uploads.clone()))
            }
            // a refusal holds for the key it refused; another key good for this stream (the
            // owner's new one after a rotation) starts a new push
            Some(Entry::Refused {
                key_hash,
                status,
                why,
                last_request,
                quiet,
                refresh,
            }) if *key_hash == hash && last_request.elapsed() < *quiet => {
                if *refresh {
                    *last_request = Instant::now();
                }
                Err(plain(*status, why))
            }
            _ => {
                sessions.remove(name);
                Ok(Authorized::New)
            }
        }
    }

    /// Admits a new push of `name` (once, however many uploads ask at the same time).
    async fn admit(
        self: &Arc<Self>,
        name: &str,
        key: &str,
        peer: IpAddr,
    ) -> Result<mpsc::Sender<Upload>, HttpResponse> {
        let lock = self
            .admitting
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .entry(name.to_string())
            .or_default()
            .clone();
        let result = {
            let _one_at_a_time = lock.lock().await;
            self.admit_once(name, key, peer).await
        };
        let mut admitting = self.admitting.lock().unwrap_or_else(|e| e.into_inner());
        // the map's and ours: no other admission of this stream waits
        if Arc::strong_count(&lock) == 2 {
            admitting.remove(name);
        }
        result
    }

    async fn admit_once(
        self: &Arc<Self>,
        name: &str,
        key: &str,
        peer: IpAddr,
    ) -> Result<mpsc::Sender<Upload>, HttpResponse> {
        // another upload of the same push may have been admitted while this one waited
        if let Some(known) = self.known(name, &key_hash(key)) {
            return match known? {
                Authorized::Live(uploads) => Ok(uploads),
                Authorized::New => Err(plain(503, "try again")),
            };
        }
        let broadcast = match self.core.admit(key, peer, Protocol::HlsPush).await {
            Ok(broadcast) => broadcast,
            Err(e) => {
                tracing::warn!(stream = name, error = %e, "HLS push refused");
                let (status, why) = match e {
                    AdmitError::BadKey => return Err(unauthorized()),
                    AdmitError::LiveElsewhere(_) => {
                        (409, "publish refused: the stream is live on another node")
                    }
                    AdmitError::HookRefused(_) => {
                        (403, "publish refused by the on_publish webhook")
                    }
                    AdmitError::Busy(_) | AdmitError::Database(_) => {
                        (503, "publish refused: the server is busy")
                    }
                };
                // the pusher's next uploads get the same answer for a while, without the
                // database and the webhook being asked again for each
                self.sessions().insert(
                    name.to_string(),
                    Entry::Refused {
                        key_hash: key_hash(key),
                        status,
                        why,
                        last_request: Instant::now(),
                        quiet: ADMIT_REFUSAL_HOLD,
                        refresh: false,
                    },
                );
                return Err(plain(status, why));
            }
        };
        let (uploads, queue) = mpsc::channel(SESSION_QUEUE);
        let generation = self
            .generations
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        self.sessions().insert(
            name.to_string(),
            Entry::Live {
                key_hash: key_hash(key),
                generation,
                uploads: uploads.clone(),
                bucket: TokenBucket::new(self.settings.requests_per_second),
            },
        );
        let push = self.clone();
        let stream = name.to_string();
        self.core.tracker.spawn(async move {
            let how = session::run(broadcast, queue, &push).await;
            push.session_over(&stream, generation, how);
        });
        Ok(uploads)
    }

    /// A session's task ended `how`: its entry goes (a new push may start) or refuses.
    fn session_over(&self, name: &str, generation: u64, how: session::Over) {
        let mut sessions = self.sessions();
        let (key_hash, ours) = match sessions.get(name) {
            Some(Entry::Live {
                key_hash,
                generation: g,
                ..
            }) => (*key_hash, *g == generation),
            _ => return,
        };
        if !ours {
            return;
        }
        match how.refusal() {
            None => {
                sessions.remove(name);
            }
            Some((status, why, quiet)) => {
                sessions.insert(
                    name.to_string(),
                    Entry::Refused {
                        key_hash,
                        status,
                        why,
                        last_request: Instant::now(),
                        quiet,
                        refresh: true,
                    },
                );
            }
        }
    }
}

/// Reads a request body of at most `limit` bytes (413 past it, before it is all read).
async fn body(
    declared: Option<usize>,
    mut payload: web::Payload,
    limit: usize,
) -> Result<Bytes, HttpResponse> {
    let too_large = || plain(413, &format!("at most {limit} bytes"));
    if declared.is_some_and(|n| n > limit) {
        return Err(too_large());
    }
    let mut bytes = BytesMut::with_capacity(declared.unwrap_or(0).min(limit));
    while let Some(chunk) = payload.next().await {
        let chunk = chunk.map_err(|e| plain(400, &format!("reading the body: {e}")))?;
        if bytes.len() + chunk.len() > limit {
            return Err(too_large());
        }
        bytes.extend_from_slice(&chunk);
    }
    Ok(bytes.freeze())
}

/// Takes one upload. Runs detached from the connection: ffmpeg's HLS muxer closes its socket
/// as soon as the body is sent, without waiting for the answer, and the server drops a
/// connection at its client's EOF (`http` module doc), which would cancel the request
/// half-way. The body still must arrive within `BODY_TIMEOUT`.
async fn upload(
    req: HttpRequest,
    path: web::Path<(String, String)>,
    payload: web::Payload,
    push: web::Data<Arc<HlsPush>>,
) -> HttpResponse {
    let (answer, answered) = tokio::sync::oneshot::channel();
    actix_web::rt::spawn(async move {
        let response = take_upload(req, path.into_inner(), payload, &push).await;
        let _ = answer.send(response);
    });
    answered
        .await
        .unwrap_or_else(|_| plain(500, "the upload was not taken"))
}

// the errors are the answers themselves, made once per request
#[allow(clippy::result_large_err)]
async fn take_upload(
    req: HttpRequest,
    (name, file): (String, String),
    payload: web::Payload,
    push: &Arc<HlsPush>,
) -> HttpResponse {
    let Some(key) = bearer(&req) else {
        telemetry::publish_result(Protocol::HlsPush.label(), "bad_key");
        return unauthorized();
    };
    if !valid_stream_name(&name) || !playlist::valid_name(&file) {
        return plain(
            400,
            "the path must be /ingest/hls/{stream name}/{file name}",
        );
    }
    let authorized = match push.authorize(&name, key).await {
        Ok(a) => a,
        Err(response) => return response,
    };
    if req.method() == actix_web::http::Method::DELETE {
        return HttpResponse::NoContent().finish();
    }
    let is_playlist = file.ends_with(".m3u8");
    let limit = if is_playlist {
        push.settings.max_playlist_bytes
    } else {
        push.settings.max_segment_bytes
    };
    let declared = req
        .headers()
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<usize>().ok());
    let read = |payload: Option<web::Payload>| async move {
        let payload = payload.ok_or_else(|| plain(500, "the body was read already"))?;
        match tokio::time::timeout(BODY_TIMEOUT, body(declared, payload, limit)).await {
            Ok(result) => result,
            Err(_) => Err(plain(408, "the body did not arrive in time")),
        }
    };
    let parse =
        |bytes: &Bytes| PushedPlaylist::parse(bytes).map_err(|e| plain(400, &e.to_string()));
    let mut payload = Some(payload);
    let (uploads, upload) = match authorized {
        Authorized::Live(uploads) => {
            let bytes = match read(payload.take()).await {
                Ok(bytes) => bytes,
                Err(response) => return response,
            };
            let upload = if is_playlist {
                match parse(&bytes) {
                    Ok(p) => Upload::Playlist(p),
                    Err(response) => return response,
                }
            } else {
                Upload::File(file, bytes)
            };
            (uploads, upload)
        }
        Authorized::New => {
            // A playlist (small) is read first: ffmpeg uploads its ended playlist again after
            // the push is over, and a push that starts with its end has nothing to publish. A
            // segment's body is read only once the push is admitted.
            let early = if is_playlist {
                match read(payload.take()).await.and_then(|b| parse(&b)) {
                    Ok(p) if p.ended => return HttpResponse::NoContent().finish(),
                    Ok(p) => Some(Upload::Playlist(p)),
                    Err(response) => return response,
                }
            } else {
                None
            };
            let peer = req
                .peer_addr()
                .map(|a| a.ip())
                .unwrap_or(IpAddr::from([0, 0, 0, 0]));
            let uploads = match push.admit(&name, key, peer).await {
                Ok(uploads) => uploads,
                Err(response) => return response,
            };
            let upload = match early {
                Some(upload) => upload,
                None => match read(payload.take()).await {
                    Ok(bytes) => Upload::File(file, bytes),
                    Err(response) => return response,
                },
            };
            (uploads, upload)
        }
    };
    // never waits: a push whose task is behind is told to slow down (bounded: its queue holds
    // `SESSION_QUEUE` uploads, no request waits holding a body)
    match uploads.try_send(upload) {
        Ok(()) => HttpResponse::Created().finish(),
        Err(mpsc::error::TrySendError::Full(_)) => HttpResponse::ServiceUnavailable()
            .insert_header((header::RETRY_AFTER, "1"))
            .body("this push's uploads are not taken as fast as they come; slow down\n"),
        Err(mpsc::error::TrySendError::Closed(_)) => plain(
            409,
            "this push's broadcast has ended; push again to start a new one",
        ),
    }
}

/// `PUT`, `POST` and `DELETE` under `/ingest/hls/{stream}/{file}`.
pub fn configure(cfg: &mut web::ServiceConfig) {
    cfg.service(
        web::resource("/ingest/hls/{stream}/{file}")
            .route(web::put().to(upload))
            .route(web::post().to(upload))
            .route(web::delete().to(upload)),
    );
}
