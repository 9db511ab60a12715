//! Publish webhooks: HTTP POSTs of JSON to URLs from the `[webhooks]` settings.
//!
//! - `on_publish` decides: a publish is accepted only if the hook answers 2xx within the
//!   timeout; any other status, an unreachable hook or no answer refuses it (fail closed).
//! - `on_unpublish` (the broadcast ended) and then `on_recording_ready` (its VOD manifests are
//!   written; recorded streams only) inform: they are sent in that order from a spawned task
//!   once the broadcast is finished, each retried up to `NOTIFY_ATTEMPTS` times, and a failure
//!   is logged; broadcasting never waits for them.
//!
//! Payloads carry ids and names, never the stream key.
//!
//! Signing: with `webhooks.secret` set, every request carries
//! `X-Strata-Timestamp: <unix seconds>` and
//! `X-Strata-Signature: sha256=<hex HMAC-SHA256(secret, "<timestamp>." + body)>`, computed
//! over the exact body bytes sent. The timestamp is part of the signed material, so a receiver
//! that also rejects timestamps far from its clock (the README suggests 5 minutes) cannot be
//! replayed an old request. Each attempt is signed afresh. The secret is never logged
//! (`Debug` shows `…`).

use std::time::Duration;

use hmac::{Hmac, Mac};
use serde::Serialize;
use sha2::Sha256;

use crate::config::WebhookSettings;
use crate::db::Stream;
use crate::events::Ended;

/// Attempts for an informational hook (the publish hook is asked once: the publisher waits).
pub const NOTIFY_ATTEMPTS: u32 = 3;
/// Wait before the second attempt; doubled for each next one.
const FIRST_RETRY_DELAY: Duration = Duration::from_secs(1);

#[derive(Debug, thiserror::Error)]
pub enum WebhookError {
    #[error("the hook answered HTTP {0}")]
    Refused(u16),
    #[error("no answer from the hook within {0:?}")]
    Timeout(Duration),
    #[error("the hook could not be reached: {0}")]
    Unreachable(String),
    #[error("the webhook client could not be built: {0}")]
    Client(String),
    #[error("the webhook payload could not be encoded: {0}")]
    Encode(String),
}

/// The header carrying the signature (`sha256=<hex>`).
pub const SIGNATURE_HEADER: &str = "X-Strata-Signature";
/// The header carrying the signed Unix timestamp (seconds).
pub const TIMESTAMP_HEADER: &str = "X-Strata-Timestamp";

/// Signs request bodies with `webhooks.secret`.
#[derive(Clone)]
struct Signer {
    /// Keyed once; cloned per request.
    mac: Hmac<Sha256>,
}

impl std::fmt::Debug for Signer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Signer(…)")
    }
}

impl Signer {
    fn new(secret: &str) -> Result<Self, WebhookError> {
        let mac = Hmac::<Sha256>::new_from_slice(secret.as_bytes())
            .map_err(|e| WebhookError::Client(format!("webhooks.secret: {e}")))?;
        Ok(Self { mac })
    }

    /// `sha256=<hex>` of HMAC-SHA256 over `"{timestamp}." + body`.
    fn sign(&self, timestamp: i64, body: &[u8]) -> String {
        let mut mac = self.mac.clone();
        mac.update(format!("{timestamp}.").as_bytes());
        mac.update(body);
        format!("sha256={}", hex::encode(mac.finalize().into_bytes()))
    }
}

/// The configured hooks (each optional) and the client that calls them.
#[derive(Clone, Debug)]
pub struct Webhooks {
    client: reqwest::Client,
    on_publish: Option<String>,
    on_unpublish: Option<String>,
    on_recording_ready: Option<String>,
    on_clip_ready: Option<String>,
    timeout: Duration,
    /// Base of the recording URLs sent to `on_recording_ready`.
    public_url: String,
    /// Present when `webhooks.secret` is set.
    signer: Option<Signer>,
}

/// `on_publish`: a publisher presented a valid key for `stream`.
#[derive(Debug, Clone, Serialize)]
pub struct PublishRequest {
    event: &'static str,
    /// The session (and recording) id the broadcast will have if accepted.
    session_id: String,
    /// As `GET /api/v1/streams/{id}` shows it.
    stream: Stream,
    /// The publisher's IP address.
    client_ip: String,
    /// How it connects: `rtmp`, `rtmps`, `srt` or `hls_push`.
    protocol: &'static str,
}

impl PublishRequest {
    pub fn new(
        session_id: &str,
        stream: &Stream,
        client_ip: std::net::IpAddr,
        protocol: &'static str,
    ) -> Self {
        Self {
            event: "publish",
            session_id: session_id.to_string(),
            stream: stream.clone(),
            client_ip: client_ip.to_string(),
            protocol,
        }
    }
}

#[derive(Serialize)]
struct Notification {
    event: &'static str,
    /// The same payload as the `stream.ended` event.
    #[serde(flatten)]
    ended: Ended,
    #[serde(skip_serializing_if = "Option::is_none")]
    recording: Option<RecordingUrls>,
}

impl Notification {
    fn new(event: &'static str, ended: &Ended, recording: Option<RecordingUrls>) -> Self {
        Self {
            event,
            ended: ended.clone(),
            recording,
        }
    }
}

/// `on_clip_ready`'s body.
#[derive(Serialize)]
struct ClipNotification {
    event: &'static str,
    clip: serde_json::Value,
}

/// What a delivered notification is called in logs.
trait Described {
    fn event(&self) -> &'static str;
}

impl Described for Notification {
    fn event(&self) -> &'static str {
        self.event
    }
}

impl Described for ClipNotification {
    fn event(&self) -> &'static str {
        self.event
    }
}

#[derive(Serialize)]
struct RecordingUrls {
    id: String,
    hls_url: String,
    dash_url: String,
}

fn non_empty(url: &str) -> Option<String> {
    (!url.trim().is_empty()).then(|| url.trim().to_string())
}

impl Webhooks {
    /// The configured hooks; `settings.timeout` bounds each call, connection included.
    pub fn new(settings: &WebhookSettings, public_url: &str) -> Result<Self, WebhookError> {
        let timeout = Duration::from_secs_f64(settings.timeout);
        let client = reqwest::Client::builder()
            .timeout(timeout)
            .user_agent(concat!("strata/", env!("CARGO_PKG_VERSION")))
            .build()
            .map_err(|e| WebhookError::Client(e.to_string()))?;
        Ok(Self {
            client,
            on_publish: non_empty(&settings.on_publish),
            on_unpublish: non_empty(&settings.on_unpublish),
            on_recording_ready: non_empty(&settings.on_recording_ready),
            on_clip_ready: non_empty(&settings.on_clip_ready),
            timeout,
            public_url: public_url.trim_end_matches('/').to_string(),
            signer: match settings.secret.as_str() {
                "" => None,
                secret => Some(Signer::new(secret)?),
            },
        })
    }

    /// Asks `on_publish` whether this publish may start; `Ok` when no hook is configured.
    pub async fn authorize_publish(&self, request: &PublishRequest) -> Result<(), WebhookError> {
        let Some(url) = &self.on_publish else {
            return Ok(());
        };
        self.post(url, request).await
    }

    /// Sends `on_unpublish`, then (for a recorded broadcast) `on_recording_ready` with the
    /// recording's manifest URLs: in that order, from one background task.
    pub fn broadcast_ended(&self, ended: &Ended, recorded: bool) {
        let id = &ended.session_id;
        let recording = RecordingUrls {
            hls_url: format!("{}/vod/{id}/master.m3u8", self.public_url),
            dash_url: format!("{}/vod/{id}/manifest.mpd", self.public_url),
            id: id.clone(),
        };
        let mut calls = Vec::new();
        if let Some(url) = &self.on_unpublish {
            calls.push((url.clone(), Notification::new("unpublish", ended, None)));
        }
        if let Some(url) = self.on_recording_ready.as_ref().filter(|_| recorded) {
            let ready = Notification::new("recording.ready", ended, Some(recording));
            calls.push((url.clone(), ready));
        }
        if calls.is_empty() {
            return;
        }
        let hooks = self.clone();
        tokio::spawn(async move {
            for (url, notification) in calls {
                hooks.deliver(&url, &notification).await;
            }
        });
    }

    /// Sends `on_clip_ready` (event `clip.ready`, or `clip.failed`) with `clip` as the clips
    /// API shows it, from a background task.
    pub fn clip_finished(&self, ready: bool, clip: serde_json::Value) {
        let Some(url) = self.on_clip_ready.clone() else {
            return;
        };
        let notification = ClipNotification {
            event: if ready { "clip.ready" } else { "clip.failed" },
            clip,
        };
        let hooks = self.clone();
        tokio::spawn(async move { hooks.deliver(&url, &notification).await });
    }

    /// Posts `notification`, retrying up to `NOTIFY_ATTEMPTS` times; logs a failure.
    async fn deliver(&self, url: &str, notification: &(impl Serialize + Described)) {
        let mut delay = FIRST_RETRY_DELAY;
        for attempt in 1..=NOTIFY_ATTEMPTS {
            match self.post(url, notification).await {
                Ok(()) => return,
                Err(e) if attempt == NOTIFY_ATTEMPTS => {
                    tracing::warn!(event = notification.event(), attempts = attempt, error = %e, "webhook not delivered");
                }
                Err(_) => {
                    tokio::time::sleep(delay).await;
                    delay *= 2;
                }
            }
        }
    }

    async fn post(&self, url: &str, body: &impl Serialize) -> Result<(), WebhookError> {
        let body = serde_json::to_vec(body).map_err(|e| WebhookError::Encode(e.to_string()))?;
        let mut request = self
            .client
            .post(url)
            .header(reqwest::header::CONTENT_TYPE, "application/json");
        if let Some(signer) = &self.signer {
            let timestamp = chrono::Utc::now().timestamp();
            request = request
                .header(TIMESTAMP_HEADER, timestamp.to_string())
                .header(SIGNATURE_HEADER, signer.sign(timestamp, &body));
        }
        let response = request.body(body).send().await.map_err(|e| {
            if e.is_timeout() {
                WebhookError::Timeout(self.timeout)
            } else {
                WebhookError::Unreachable(without_url(e))
            }
        })?;
        let status = response.status();
        if status.is_success() {
            Ok(())
        } else {
            Err(WebhookError::Refused(status.as_u16()))
        }
    }
}

/// reqwest's message without the URL it prints (hook URLs may carry credentials).
fn without_url(error: reqwest::Error) -> String {
    let error = error.without_url();
    match std::error::Error::source(&error) {
        Some(source) => format!("{error}: {source}"),
        None => error.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_signature_is_hmac_sha256_of_timestamp_dot_body() {
        let signer = Signer::new("whsec_test_secret_0123").unwrap();
        // python3: hmac.new(key, b"1700000000." + body, hashlib.sha256).hexdigest()
        assert_eq!(
            signer.sign(1_700_000_000, br#"{"event":"publish"}"#),
            "sha256=3bb516a682b725587c2e724fe00d69b681692fd15b692319f109a20cd29390a0"
        );
        assert_ne!(
            signer.sign(1_700_000_001, br#"{"event":"publish"}"#),
            signer.sign(1_700_000_000, br#"{"event":"publish"}"#),
            "the timestamp is signed"
        );
    }

    #[test]
    fn the_secret_is_not_in_debug_output() {
        let settings = WebhookSettings {
            on_publish: String::new(),
            on_unpublish: String::new(),
            on_recording_ready: String::new(),
            on_clip_ready: String::new(),
            timeout: 1.0,
            secret: "whsec_do_not_print_me_0123".into(),
        };
        let hooks = Webhooks::new(&settings, "http://localhost").unwrap();
        let shown = format!("{settings:?} {hooks:?}");
        assert!(!shown.contains("do_not_print_me"), "{shown}");
    }
}
