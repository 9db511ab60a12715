//! One pushed stream's task: owns its broadcast, takes the uploads the requests hand it, asks
//! `Order` what to feed, demuxes (MPEG-TS or fMP4) into the broadcast, and decides how the
//! push ends (see the parent module doc).

use std::time::{Duration, Instant};

use bytes::Bytes;
use tokio::sync::mpsc;

use super::order::{Order, Step};
use super::{HlsPush, Upload};
use crate::broadcast::{Broadcast, Ending};
use crate::ingest::fmp4::Fmp4Demuxer;
use crate::ingest::mpegts::{TsDemuxer, PACKET};
use crate::media::StreamEvent;

/// How long a new push may take to upload its first playlist.
const FIRST_PLAYLIST_TIMEOUT: Duration = Duration::from_secs(10);
/// How often the task looks for skips that came due and for silence.
const TICK: Duration = Duration::from_millis(250);

/// How a session ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Over {
    /// `EXT-X-ENDLIST`, all fed.
    Finished,
    /// No playlist for twice the target duration: parked for the reconnect grace.
    Silent,
    /// Taken over, stopped from the API, or server shutdown.
    Cancelled(Duration),
    /// The media cannot be packaged (unsupported codec, broken init).
    Refused(Duration),
    /// The broadcast's pipeline stopped.
    PipelineGone,
}

impl Over {
    /// How the pusher's further uploads are answered: (status, message, until quiet this long).
    pub(super) fn refusal(self) -> Option<(u16, &'static str, Duration)> {
        match self {
            Over::Finished | Over::Silent => None,
            Over::Cancelled(quiet) => Some((
                409,
                "this push was ended (stopped, or replaced by another publisher); stop pushing, then push again",
                quiet,
            )),
            Over::Refused(quiet) => Some((
                415,
                "this push's media cannot be published (see the server log); Strata takes H.264 and AAC",
                quiet,
            )),
            Over::PipelineGone => None,
        }
    }
}

/// The demuxer of the current run of segments (a discontinuity starts a new one).
enum Demuxer {
    None,
    Ts(Box<TsDemuxer>),
    Fmp4(Fmp4Demuxer),
}

#[derive(Debug, thiserror::Error)]
enum FeedError {
    #[error("{0}")]
    Fatal(String),
    #[error("the broadcast pipeline stopped")]
    Gone,
}

struct Feeder {
    demuxer: Demuxer,
    fed_any: bool,
}

impl Feeder {
    async fn send_all(
        broadcast: &mut Broadcast,
        events: Vec<StreamEvent>,
    ) -> Result<(), FeedError> {
        for event in events {
            broadcast.send(event).await.map_err(|_| FeedError::Gone)?;
        }
        Ok(())
    }

    /// What the current demuxer still holds goes out.
    async fn flush(&mut self, broadcast: &mut Broadcast) -> Result<(), FeedError> {
        if let Demuxer::Ts(ts) = &mut self.demuxer {
            if let Ok(events) = ts.flush() {
                Self::send_all(broadcast, events).await?;
            }
        }
        Ok(())
    }

    async fn feed(
        &mut self,
        broadcast: &mut Broadcast,
        name: &str,
        bytes: Bytes,
        init: Option<Bytes>,
        discontinuity: bool,
    ) -> Result<(), FeedError> {
        if discontinuity && self.fed_any {
            self.flush(broadcast).await?;
            broadcast
                .discontinuity()
                .await
                .map_err(|_| FeedError::Gone)?;
            tracing::info!(playback_id = %broadcast.playback_id(), segment = name, "HLS push: discontinuity before this segment");
            self.demuxer = Demuxer::None;
        }
        let ts = bytes.first() == Some(&0x47)
            && (bytes.len() < PACKET || bytes.get(PACKET) == Some(&0x47));
        let events = if ts {
            if !matches!(self.demuxer, Demuxer::Ts(_)) {
                self.flush(broadcast).await?;
                self.demuxer = Demuxer::Ts(Box::new(TsDemuxer::new()));
            }
            let Demuxer::Ts(demuxer) = &mut self.demuxer else {
                return Ok(());
            };
            match demuxer.push(&bytes) {
                Ok(events) => events,
                Err(e) if e.is_fatal() => return Err(FeedError::Fatal(e.to_string())),
                Err(e) => {
                    tracing::debug!(segment = name, error = %e, "HLS push: MPEG-TS data dropped");
                    Vec::new()
                }
            }
        } else {
            if !matches!(self.demuxer, Demuxer::Fmp4(_)) {
                self.flush(broadcast).await?;
                self.demuxer = Demuxer::Fmp4(Fmp4Demuxer::new());
            }
            let Demuxer::Fmp4(demuxer) = &mut self.demuxer else {
                return Ok(());
            };
            let mut events = Vec::new();
            if let Some(init) = init {
                match demuxer.init(&init) {
                    Ok(tracks) => events.extend(tracks),
                    Err(e) => return Err(FeedError::Fatal(format!("init segment: {e}"))),
                }
            }
            match demuxer.segment(&bytes) {
                Ok(frames) => events.extend(frames),
                Err(e) if e.is_fatal() => return Err(FeedError::Fatal(e.to_string())),
                Err(e) => {
                    tracing::warn!(playback_id = %broadcast.playback_id(), segment = name, error = %e, "HLS push: segment dropped");
                }
            }
            events
        };
        self.fed_any = true;
        Self::send_all(broadcast, events).await
    }
}

/// Runs one push until it ends; hands the broadcast back to the core.
pub(super) async fn run(
    mut broadcast: Broadcast,
    mut uploads: mpsc::Receiver<Upload>,
    push: &HlsPush,
) -> Over {
    let core = &push.core;
    let mut order = Order::new(push.settings.max_waiting_bytes);
    let mut feeder = Feeder {
        demuxer: Demuxer::None,
        fed_any: false,
    };
    let started = Instant::now();
    let mut last_playlist: Option<Instant> = None;
    let cancel = broadcast.cancel.clone();
    let mut tick = tokio::time::interval(TICK);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let over = loop {
        tokio::select! {
            upload = uploads.recv() => match upload {
                Some(Upload::File(name, bytes)) => order.file(&name, bytes),
                Some(Upload::Playlist(playlist)) => {
                    order.playlist(playlist, Instant::now());
                    last_playlist = Some(Instant::now());
                }
                None => break Over::PipelineGone,
            },
            _ = tick.tick() => {}
            _ = cancel.cancelled() => break Over::Cancelled(2 * order.target()),
        }
        let silent_for = last_playlist.unwrap_or(started).elapsed();
        let allowed = match last_playlist {
            Some(_) => 2 * order.target(),
            None => FIRST_PLAYLIST_TIMEOUT,
        };
        // after EXT-X-ENDLIST the order finishes by itself (what is missing is skipped)
        if silent_for > allowed && !order.ended() {
            tracing::info!(playback_id = %broadcast.playback_id(), "HLS push: no playlist for {silent_for:?}; the publisher is lost");
            break Over::Silent;
        }
        let mut ended = None;
        for step in order.steps(Instant::now()) {
            let result = match step {
                Step::Feed {
                    name,
                    bytes,
                    init,
                    discontinuity,
                    ..
                } => {
                    feeder
                        .feed(&mut broadcast, &name, bytes, init, discontinuity)
                        .await
                }
                Step::Finished => {
                    ended = Some(Over::Finished);
                    break;
                }
            };
            match result {
                Ok(()) => {}
                Err(FeedError::Gone) => {
                    ended = Some(Over::PipelineGone);
                    break;
                }
                Err(FeedError::Fatal(why)) => {
                    tracing::warn!(playback_id = %broadcast.playback_id(), "HLS push refused: {why}");
                    ended = Some(Over::Refused(2 * order.target()));
                    break;
                }
            }
        }
        if let Some(over) = ended {
            break over;
        }
    };
    if !matches!(over, Over::Cancelled(_)) {
        let _ = feeder.flush(&mut broadcast).await;
    }
    let stats = order.stats();
    tracing::info!(
        playback_id = %broadcast.playback_id(),
        fed = stats.fed,
        skipped = stats.skipped,
        duplicates = stats.duplicates,
        late = stats.late,
        evicted = stats.evicted,
        "HLS push over: {over:?}"
    );
    let how = match over {
        Over::Finished => Ending::Finished,
        Over::Silent => Ending::Lost,
        Over::Cancelled(_) | Over::Refused(_) | Over::PipelineGone => Ending::Failed,
    };
    core.finish(broadcast, how).await;
    over
}
