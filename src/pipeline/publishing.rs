//! A broadcast's publishing task: what packaging cut (init segments, parts, segments, posters)
//! arrives in order through a queue bounded in items (`PUBLISH_QUEUE`) and in bytes (the
//! broadcast's held-media budget); the task stores it with the `Publisher` under reserved
//! numbers, reports every stored segment (stats, events), deletes what left the window, and
//! at the end writes the final manifests. A stream with a DVR window also hands each segment
//! to its scrub previews (`previews::live`), which never hold publishing up.
//!
//! It runs apart from packaging so that a slow store delays only what is stored: packaging
//! goes on cutting parts while a write is waiting. The queue fills only when the store stays
//! slower than real time past what the publisher's own backlog absorbs; then packaging waits,
//! and ingest behind it, the same back-pressure as a slow transcoder.

use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use chrono::{DateTime, Utc};

use super::PipelineContext;
use crate::db::Stream;
use crate::events::{Event, SegmentPublished};
use crate::hub::live::LiveStats;
use crate::media::queue::Weighed;
use crate::package::{InitSegment, Part, Segment};
use crate::previews::live::LivePreviews;
use crate::publish::numbers::SegmentNumbers;
use crate::publish::Publisher;

/// Items queued from packaging to publishing: about 8 segments of a 5-rendition ladder with
/// audio, cut into 0.5 s parts.
pub const PUBLISH_QUEUE: usize = 512;

/// What packaging hands to publishing.
pub enum Packaged {
    /// The tracks are fixed; media time 0 was at `media_zero` on the wall clock.
    Start {
        inits: Vec<InitSegment>,
        media_zero: DateTime<Utc>,
    },
    Part(Part),
    Segment(Segment),
    Poster(Bytes),
}

impl Weighed for Packaged {
    fn weight(&self) -> usize {
        match self {
            Packaged::Start { inits, .. } => inits.iter().map(|i| i.bytes.len()).sum(),
            Packaged::Part(part) => part.bytes.len(),
            Packaged::Segment(segment) => segment.tracks.iter().map(|t| t.bytes.len()).sum(),
            Packaged::Poster(jpeg) => jpeg.len(),
        }
    }
}

/// The publishing side of one broadcast.
pub struct Publishing {
    pub ctx: PipelineContext,
    pub stream: Stream,
    pub stats: Arc<LiveStats>,
    pub publisher: Publisher,
    pub numbers: SegmentNumbers,
}

/// What the task leaves to the end of the broadcast.
pub struct Published {
    pub segments: u64,
    /// Seconds of media the recording holds.
    pub duration: f64,
    /// Still holding deletions that are not due yet.
    pub publisher: Publisher,
}

impl Publishing {
    /// Publishes everything `queue` brings until packaging closes it, then finishes.
    pub async fn run(mut self, mut queue: crate::media::queue::Receiver<Packaged>) -> Published {
        let mut media_zero = Utc::now();
        let mut segments = 0u64;
        let mut previews: Option<LivePreviews> = None;
        self.publisher.set_number_limit(self.numbers.end());
        loop {
            let item = tokio::select! {
                item = queue.recv() => item,
                _ = super::sleep_until(self.publisher.next_deletion()) => {
                    self.publisher.delete_due(Instant::now()).await;
                    continue;
                }
            };
            match item {
                None => break,
                Some(Packaged::Start {
                    inits,
                    media_zero: zero,
                }) => {
                    media_zero = zero;
                    previews = self.previews(&inits, media_zero);
                    if let Err(e) = self.publisher.start(inits, media_zero).await {
                        tracing::error!(error = %e, "publishing failed");
                    }
                }
                Some(Packaged::Poster(jpeg)) => match self.publisher.publish_poster(jpeg).await {
                    Ok(()) => self.stats.poster_published(),
                    Err(e) => tracing::warn!(error = %e, "could not store the poster"),
                },
                Some(Packaged::Part(part)) => self.publisher.publish_part(part).await,
                Some(Packaged::Segment(segment)) => {
                    segments += 1;
                    if segments == 1 {
                        self.record_source().await;
                    }
                    self.segment(segment, media_zero, previews.as_mut()).await;
                }
            }
        }
        let needed = self.publisher.numbers_needed(self.numbers.end());
        self.publisher
            .set_number_limit(self.numbers.cover(needed).await);
        let duration = match self.publisher.finish(media_zero).await {
            Ok(duration) => {
                tracing::info!(
                    segments,
                    duration_s = duration,
                    "broadcast ended; recording stored"
                );
                duration
            }
            Err(e) => {
                tracing::error!(error = %e, "could not write the final manifests");
                0.0
            }
        };
        // after the final manifests (players see the end at once), before the claim goes
        if let Some(previews) = previews {
            previews.finish().await;
        }
        Published {
            segments,
            duration,
            publisher: self.publisher,
        }
    }

    /// The DVR view's scrub previews, when the stream has one.
    fn previews(&self, inits: &[InitSegment], media_zero: DateTime<Utc>) -> Option<LivePreviews> {
        if self.stream.dvr_window == 0 {
            return None;
        }
        // cue times count from the broadcast's start, as the directory gives it to players
        let offset_ms = media_zero.timestamp_millis() - self.stats.id.started_at;
        LivePreviews::start(
            self.ctx.uploader.store().clone(),
            &self.stream.playback_id,
            inits,
            offset_ms as f64 / 1000.0,
            Duration::from_secs(u64::from(self.stream.dvr_window)),
            self.ctx.grace,
            self.ctx.worker,
        )
    }

    /// The source is known by the first segment (its configs came before the first frame).
    async fn record_source(&self) {
        let session = &self.stats.id.session_id;
        if let Err(e) = self
            .ctx
            .db
            .set_session_source(session, &self.stats.source())
            .await
        {
            tracing::warn!(error = %e, "could not store the session's source");
        }
    }

    async fn segment(
        &mut self,
        segment: Segment,
        media_zero: DateTime<Utc>,
        previews: Option<&mut LivePreviews>,
    ) {
        let needed = self.publisher.numbers_needed(segment.number);
        let limit = self.numbers.cover(needed).await;
        self.publisher.set_number_limit(limit);
        // only a reserved number names a sheet (see `previews::live`)
        if let Some(previews) = previews.filter(|_| segment.number < limit) {
            previews.segment(&segment);
        }
        let result = self.publisher.publish_segment(segment, media_zero).await;
        self.stats.set_segments_lost(self.publisher.lost());
        match result {
            Ok(stored) => {
                for s in stored {
                    self.stats.segment_published(s.bytes, s.latency);
                    self.ctx.events.send(Event::Segment(SegmentPublished {
                        session_id: self.stats.id.session_id.clone(),
                        stream_id: self.stream.id.clone(),
                        playback_id: self.stream.playback_id.clone(),
                        number: s.number,
                        duration_secs: s.duration_secs,
                    }));
                }
            }
            Err(e) => tracing::error!(error = %e, "publishing failed"),
        }
    }
}
