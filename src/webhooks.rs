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

use std::time::Duration;

use serde::Serialize;

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
}

/// The configured hooks (each optional) and the client that calls them.
#[derive(Clone, Debug)]
pub struct Webhooks {
    client: reqwest::Client,
    on_publish: Option<String>,
    on_unpublish: Option<String>,
    on_recording_ready: Option<String>,
    timeout: Duration,
    /// Base of the recording URLs sent to `on_recording_ready`.
    public_url: String,
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
}

impl PublishRequest {
    pub fn new(session_id: &str, stream: &Stream, client_ip: std::net::IpAddr) -> Self {
        Self {
            event: "publish",
            session_id: session_id.to_string(),
            stream: stream.clone(),
            client_ip: client_ip.to_string(),
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
            timeout,
            public_url: public_url.trim_end_matches('/').to_string(),
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

    /// Posts `notification`, retrying up to `NOTIFY_ATTEMPTS` times; logs a failure.
    async fn deliver(&self, url: &str, notification: &Notification) {
        let mut delay = FIRST_RETRY_DELAY;
        for attempt in 1..=NOTIFY_ATTEMPTS {
            match self.post(url, notification).await {
                Ok(()) => return,
                Err(e) if attempt == NOTIFY_ATTEMPTS => {
                    tracing::warn!(event = notification.event, attempts = attempt, error = %e, "webhook not delivered");
                }
                Err(_) => {
                    tokio::time::sleep(delay).await;
                    delay *= 2;
                }
            }
        }
    }

    async fn post(&self, url: &str, body: &impl Serialize) -> Result<(), WebhookError> {
        let response = self.client.post(url).json(body).send().await.map_err(|e| {
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
