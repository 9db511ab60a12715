//! The broadcast core: admission and lifecycle of a live broadcast, the same for every way in.
//!
//! An ingest module (`ingest::rtmp`, `ingest::srt`, …) only turns its wire format into
//! `StreamEvent`s and owns its connection's clock. Everything else is here, written once:
//! - `Core::admit` checks the stream key or a device's token (by hash), refuses a stream live
//!   on another node, asks the `on_publish` webhook, takes the database claim (one node owns a
//!   stream), continues a broadcast parked in its reconnect grace or takes over the hub's slot
//!   (a second publisher of the same stream replaces the first), checks the key once more, and
//!   starts the pipeline;
//! - the returned `Broadcast` handle carries media into the pipeline, counts the input stats,
//!   keeps timestamps continuous across reconnects (`ResumableClock`) and is cancelled on a
//!   takeover, a stop from the API or shutdown;
//! - `Core::finish` ends it, or parks it for the reconnect grace when the publisher was lost
//!   (see `reconnect`).
//!
//! Metrics (`strata_publishes_total{protocol,result}`), events, webhooks, takeover, reconnect and
//! stop therefore behave identically for every protocol; `tests/ingest_matrix.rs` runs each
//! behaviour over each protocol.

mod handle;
pub mod reconnect;

use std::net::IpAddr;
use std::sync::Arc;

use tokio_util::task::TaskTracker;

pub use handle::{Broadcast, ResumableClock, RESUME_STEP};
pub use reconnect::Reconnects;

use crate::db::{ids, Db, DbError, Stream};
use crate::hub::{Hub, HubError, LiveStats};
use crate::pipeline::{self, PipelineContext};
use crate::telemetry;
use crate::webhooks::{PublishRequest, WebhookError};

/// How a publisher reached the server: labels metrics, logs and the `on_publish` webhook.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Protocol {
    Rtmp,
    Rtmps,
    Srt,
    /// HLS pushed over HTTP (`ingest::hls_push`).
    HlsPush,
    /// A recording sent over a WebSocket, as the Go live page sends it (`ingest::ws`).
    Ws,
    /// A device's RTP over UDP, started over its signaling socket (`ingest::rtp`, `devices`).
    Rtp,
}

impl Protocol {
    /// The metric label and webhook value: `rtmp`, `rtmps`, `srt`, `hls_push`, `ws`, `rtp`.
    pub fn label(self) -> &'static str {
        match self {
            Protocol::Rtmp => "rtmp",
            Protocol::Rtmps => "rtmps",
            Protocol::Srt => "srt",
            Protocol::HlsPush => "hls_push",
            Protocol::Ws => "ws",
            Protocol::Rtp => "rtp",
        }
    }

    /// Whether what this protocol carries must be decoded: a browser's recording is VP8, VP9
    /// or Opus, which Strata does not package, and its keyframes come when the browser's
    /// encoder likes (Chromium's: seconds to minutes apart), so it is always transcoded, on
    /// the default ladder when the stream's ladder is passthrough.
    pub fn needs_transcoding(self) -> bool {
        self == Protocol::Ws
    }
}

impl std::fmt::Display for Protocol {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Protocol::Rtmp => "RTMP",
            Protocol::Rtmps => "RTMPS",
            Protocol::Srt => "SRT",
            Protocol::HlsPush => "HLS push",
            Protocol::Ws => "WebSocket",
            Protocol::Rtp => "RTP",
        })
    }
}

/// What a publisher proves it may publish with: a stream's key, or the token of one of the
/// stream's devices. Either is checked by its hash, before and again after the broadcast is
/// listed (see `Core::admit`).
#[derive(Clone, Copy)]
pub enum Credential<'a> {
    StreamKey(&'a str),
    DeviceToken(&'a str),
}

impl Credential<'_> {
    /// The stream this credential opens now, if any.
    async fn stream(&self, db: &Db) -> Result<Option<Stream>, DbError> {
        match *self {
            Credential::StreamKey(key) => db.stream_by_key(key).await,
            Credential::DeviceToken(token) => match db.device_by_token(token).await? {
                Some(device) => db.stream_by_id(&device.stream_id).await,
                None => Ok(None),
            },
        }
    }
}

/// Why a publish was refused. Each protocol tells its client in its own words (an RTMP
/// `onStatus`, an SRT rejection code).
#[derive(Debug, thiserror::Error)]
pub enum AdmitError {
    #[error("publish refused: unknown stream key")]
    BadKey,
    #[error("publish refused: the stream is live on node `{0}` (publish there, or stop that broadcast first)")]
    LiveElsewhere(String),
    #[error("publish refused by the on_publish webhook: {0}")]
    HookRefused(#[from] WebhookError),
    #[error("publish refused: {0}")]
    Busy(#[from] HubError),
    #[error("publish refused: {0}")]
    Database(#[from] DbError),
}

impl AdmitError {
    /// The `result` label of a refused publish in `strata_publishes_total`.
    pub fn result_label(&self) -> &'static str {
        match self {
            AdmitError::BadKey => "bad_key",
            AdmitError::HookRefused(_) => "hook_refused",
            AdmitError::Busy(_) => "busy",
            AdmitError::LiveElsewhere(_) => "refused",
            AdmitError::Database(_) => "error",
        }
    }
}

/// How a broadcast's connection ended, which decides what happens to the broadcast.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Ending {
    /// The publisher said it was done (RTMP unpublish, SRT shutdown, an orderly close).
    Finished,
    /// The connection was lost (socket error, silence, write timeout): the broadcast waits for
    /// a reconnect during the grace.
    Lost,
    /// Refused media, a protocol error, a takeover or a stop: it ends now.
    Failed,
}

/// What every broadcast shares: the database, the hub, the pipeline's context, the reconnect
/// grace and the cluster's view.
pub struct Core {
    pub db: Db,
    pub hub: Arc<Hub>,
    pub pipeline: PipelineContext,
    pub tracker: TaskTracker,
    pub reconnects: Arc<Reconnects>,
    /// Which streams are live on other nodes (a publisher for one of those is refused).
    pub cluster: Arc<crate::cluster::Cluster>,
}

impl Core {
    /// Admits a publisher of the stream whose key is `key`, from `peer` over `protocol`, and
    /// returns its broadcast: a new one, or the one parked for this stream's reconnect. Counts
    /// the outcome in `strata_publishes_total`.
    pub async fn admit(
        &self,
        key: &str,
        peer: IpAddr,
        protocol: Protocol,
    ) -> Result<Broadcast, AdmitError> {
        self.admit_with(Credential::StreamKey(key), peer, protocol)
            .await
    }

    /// `admit` with a stream key or a device token.
    pub async fn admit_with(
        &self,
        credential: Credential<'_>,
        peer: IpAddr,
        protocol: Protocol,
    ) -> Result<Broadcast, AdmitError> {
        let result = self.admit_uncounted(credential, peer, protocol).await;
        let label = match &result {
            Ok(_) => "accepted",
            Err(e) => e.result_label(),
        };
        telemetry::publish_result(protocol.label(), label);
        result
    }

    async fn admit_uncounted(
        &self,
        credential: Credential<'_>,
        peer: IpAddr,
        protocol: Protocol,
    ) -> Result<Broadcast, AdmitError> {
        let stream = credential
            .stream(&self.db)
            .await?
            .ok_or(AdmitError::BadKey)?;
        if let Some(node) = self.cluster.live_elsewhere(&stream.id) {
            return Err(AdmitError::LiveElsewhere(node));
        }
        if protocol.needs_transcoding() {
            // a parked passthrough broadcast cannot take a browser's codecs: it ends, and this
            // publisher starts a new broadcast
            self.reconnects.end_untranscoded(&stream.id).await;
        }
        let session_id = self
            .reconnects
            .parked_session(&stream.id)
            .unwrap_or_else(ids::new_recording_id);
        let hook = PublishRequest::new(&session_id, &stream, peer, protocol.label());
        self.pipeline.webhooks.authorize_publish(&hook).await?;
        // One node owns a stream at a time: the claim is taken before anything starts.
        let node_id = &self.pipeline.node_id;
        if !self
            .db
            .claim_stream(&stream.id, node_id, &session_id)
            .await?
        {
            let node = self.db.claim_holder(&stream.id).await.ok().flatten();
            return Err(AdmitError::LiveElsewhere(
                node.unwrap_or_else(|| "another node".into()),
            ));
        }
        if let Some(broadcast) = self.reconnects.resume(&stream.id, protocol).await {
            return Ok(broadcast);
        }
        let stats = Arc::new(LiveStats::new(session_id, &stream));
        let lease = self
            .hub
            .begin(stats.clone(), &self.pipeline.shutdown)
            .await?;
        // The key may have been rotated or revoked while this publish waited (webhook,
        // takeover). The API stops what the hub lists after its change; checked again now that
        // this broadcast is listed, one of the two always sees the other.
        let still_valid = matches!(
            credential.stream(&self.db).await,
            Ok(Some(current)) if current.id == stream.id
        );
        if !still_valid {
            drop(lease);
            if let Err(e) = self
                .db
                .release_claim(&stream.id, &stats.id.session_id)
                .await
            {
                tracing::warn!(error = %e, "could not release the stream claim; it expires by itself");
            }
            return Err(AdmitError::BadKey);
        }
        let cancel = lease.cancel.clone();
        tracing::info!(playback_id = %stream.playback_id, %protocol, "publish accepted");
        let (events, transcodes) = pipeline::spawn(
            self.pipeline.clone(),
            stream,
            lease,
            protocol.needs_transcoding(),
            &self.tracker,
        );
        Ok(Broadcast::new(stats, events, cancel, protocol, transcodes))
    }

    /// The connection that carried `broadcast` ended `how`: the broadcast ends now, or waits
    /// for a reconnect when its publisher was lost.
    pub async fn finish(&self, broadcast: Broadcast, how: Ending) {
        match how {
            Ending::Lost => self.reconnects.park(broadcast).await,
            Ending::Finished | Ending::Failed => broadcast.end().await,
        }
    }
}
