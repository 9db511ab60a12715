//! One broadcast's path after ingest: `StreamEvent`s → segmenter → publisher, in one task.
//!
//! Queue: ingest sends into a bounded channel of `EVENT_QUEUE` events. When it is full
//! (storage slower than real time), the sender waits, the RTMP connection stops reading its
//! socket and TCP pushes back on that one publisher; other streams are unaffected. After the
//! end, the task finishes the manifests, releases the stream (a new broadcast may start) and
//! keeps running only to delete segments whose grace period has not yet passed.

use std::sync::Arc;

use chrono::Utc;
use object_store::ObjectStore;
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tracing::Instrument;

use crate::db::{ids, Db, Stream};
use crate::hub::Lease;
use crate::media::StreamEvent;
use crate::package::{Segmenter, SegmenterConfig, SegmenterOutput};
use crate::publish::{BroadcastPlan, Publisher};

/// Events buffered between ingest and packaging (a few seconds of media at 30 fps + audio).
pub const EVENT_QUEUE: usize = 512;

/// What every broadcast shares.
#[derive(Clone)]
pub struct PipelineContext {
    pub store: Arc<dyn ObjectStore>,
    pub db: Db,
    pub segment_duration: f64,
    pub window: usize,
    pub utc_timing_url: String,
    pub shutdown: CancellationToken,
}

/// Starts a broadcast of `stream`; returns the sender ingest feeds.
pub fn spawn(
    ctx: PipelineContext,
    stream: Stream,
    lease: Lease,
    tracker: &TaskTracker,
) -> mpsc::Sender<StreamEvent> {
    let (tx, rx) = mpsc::channel(EVENT_QUEUE);
    let recording_id = ids::new_recording_id();
    let span = tracing::info_span!("broadcast", playback_id = %stream.playback_id, recording = %recording_id);
    tracker.spawn(run(ctx, stream, recording_id, lease, rx).instrument(span));
    tx
}

async fn run(
    ctx: PipelineContext,
    stream: Stream,
    recording_id: String,
    lease: Lease,
    mut events: mpsc::Receiver<StreamEvent>,
) {
    if let Err(e) = ctx.db.start_recording(&stream.id, &recording_id).await {
        tracing::error!(error = %e, "could not record the broadcast start; continuing");
    }
    let mut segmenter = Segmenter::new(SegmenterConfig {
        target_duration: ctx.segment_duration,
        first_number: stream.next_segment,
    });
    let mut publisher = Publisher::new(
        ctx.store.clone(),
        BroadcastPlan {
            playback_id: stream.playback_id.clone(),
            recording_id: recording_id.clone(),
            segment_duration: ctx.segment_duration,
            window: ctx.window,
            utc_timing_url: ctx.utc_timing_url.clone(),
        },
    );
    let mut media_zero = Utc::now();
    let mut segments = 0u64;
    tracing::info!("broadcast started");
    loop {
        let event = tokio::select! {
            event = events.recv() => event.unwrap_or(StreamEvent::End),
            _ = lease.cancel.cancelled() => StreamEvent::End,
            _ = sleep_until(publisher.next_deletion()) => {
                publisher.delete_due(std::time::Instant::now()).await;
                continue;
            }
        };
        let end = matches!(event, StreamEvent::End);
        let outputs = match segmenter.push(event) {
            Ok(outputs) => outputs,
            Err(e) => {
                tracing::error!(error = %e, "ending broadcast");
                segmenter.push(StreamEvent::End).unwrap_or_default()
            }
        };
        let published_before = segments;
        for output in outputs {
            let result = match output {
                SegmenterOutput::Init(inits) => {
                    media_zero = Utc::now();
                    publisher.start(inits, media_zero).await
                }
                SegmenterOutput::Segment(segment) => {
                    segments += 1;
                    publisher.publish_segment(segment, media_zero).await
                }
            };
            if let Err(e) = result {
                tracing::error!(error = %e, "publishing failed");
            }
        }
        // Numbers are stored as they are used, so a crash can never reuse one.
        if segments > published_before {
            if let Err(e) = ctx
                .db
                .set_next_segment(&stream.id, segmenter.next_number())
                .await
            {
                tracing::warn!(error = %e, "could not store the next segment number");
            }
        }
        if end {
            break;
        }
    }
    // Drop the receiver first: a still-connected publisher sees the broadcast is over.
    drop(events);
    match publisher.finish().await {
        Ok(duration) => {
            tracing::info!(
                segments,
                duration_s = duration,
                "broadcast ended; recording stored"
            );
            let _ = ctx
                .db
                .set_next_segment(&stream.id, segmenter.next_number())
                .await;
            if let Err(e) = ctx
                .db
                .finish_recording(&recording_id, (duration * 1000.0) as i64)
                .await
            {
                tracing::warn!(error = %e, "could not record the broadcast end");
            }
        }
        Err(e) => tracing::error!(error = %e, "could not write the final manifests"),
    }
    drop(lease);
    while let Some(at) = publisher.next_deletion() {
        tokio::select! {
            _ = tokio::time::sleep_until(at.into()) => publisher.delete_due(std::time::Instant::now()).await,
            _ = ctx.shutdown.cancelled() => break,
        }
    }
}

async fn sleep_until(at: Option<std::time::Instant>) {
    match at {
        Some(at) => tokio::time::sleep_until(at.into()).await,
        None => std::future::pending().await,
    }
}
