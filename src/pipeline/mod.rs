//! One broadcast's path after ingest: `StreamEvent`s → (the ladder's transcoding worker
//! process, `transcode::worker`, unless the ladder is passthrough) → segmenter (this task) →
//! publisher (its own task, `publishing`), joined by a queue bounded in items and bytes.
//!
//! Queues: ingest sends into a queue of at most `EVENT_QUEUE` events and the configured bytes
//! (`media::queue`), read by this task
//! (passthrough) or by the transcoder's decode thread; the transcoder's threads write into a
//! bounded channel of `transcode::OUTPUT_QUEUE` events read by this task. When a queue is full
//! (transcoding or storage slower than real time), its writers wait; in the end the RTMP
//! connection stops reading its socket and TCP pushes back on that one publisher; other streams
//! are unaffected. After the end, the task finishes the manifests, releases the stream (a new
//! broadcast may start) and keeps running only to delete segments whose grace period has not
//! yet passed.

use std::sync::Arc;
use std::time::Duration;

use chrono::Utc;
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tracing::Instrument;

use crate::config::TranscodeIsolation;
use crate::db::claims::CLAIM_RENEW;
use crate::db::{Db, Stream};
use crate::edge::LiveEdges;
use crate::events::{Ended, Event, EventBus};
use crate::hub::Lease;
use crate::media::{queue, RenditionEvent};
use crate::package::{CutRule, Segmenter, SegmenterConfig, SegmenterOutput};
use crate::publish::numbers::SegmentNumbers;
use crate::publish::upload::Uploader;
use crate::publish::{BroadcastPlan, Publisher};
use crate::transcode::{self, Ladders, TranscodeJob, WorkerLimits};
use crate::webhooks::Webhooks;
use publishing::{Packaged, Publishing, PUBLISH_QUEUE};

mod publishing;

/// Events buffered between ingest and packaging (a few seconds of media at 30 fps + audio).
pub const EVENT_QUEUE: usize = 512;

/// What every broadcast shares.
#[derive(Clone)]
pub struct PipelineContext {
    /// This node (recorded on each session it runs).
    pub node_id: String,
    /// Writes to the store under the live budget.
    pub uploader: Uploader,
    pub db: Db,
    pub segment_duration: f64,
    /// Target part duration, seconds.
    pub part_duration: f64,
    pub window: usize,
    /// How long a segment that left the live window stays.
    pub grace: Duration,
    /// Segments held while the store fails.
    pub backlog: usize,
    pub utc_timing_url: String,
    pub ladders: Arc<Ladders>,
    /// Used when a stream names a ladder that no longer exists.
    pub default_ladder: String,
    pub events: EventBus,
    pub webhooks: Webhooks,
    pub budgets: Budgets,
    /// The limits of each ladder's transcoding worker process.
    pub worker: WorkerLimits,
    /// Whether ladders run in worker processes (the default) or in the server's threads.
    pub isolation: TranscodeIsolation,
    /// Where live edges are served from memory (low-latency playlists).
    pub edges: LiveEdges,
    pub shutdown: CancellationToken,
}

/// What one broadcast may hold in memory, in bytes.
#[derive(Debug, Clone, Copy)]
pub struct Budgets {
    /// Frames queued between ingest and packaging or the transcoder (ingest waits past it).
    pub ingest_queue_bytes: usize,
    /// Media the segmenter holds (the broadcast ends past it).
    pub held_media_bytes: usize,
}

/// Where the task reads the broadcast from.
enum Input {
    /// Straight from ingest: the source is the only video rendition.
    Passthrough(queue::Receiver),
    /// From the ladder's transcoder threads.
    Ladder(mpsc::Receiver<RenditionEvent>),
}

impl Input {
    async fn recv(&mut self) -> RenditionEvent {
        match self {
            Input::Passthrough(rx) => rx.recv().await.map_or(RenditionEvent::End, Into::into),
            Input::Ladder(rx) => rx.recv().await.unwrap_or(RenditionEvent::End),
        }
    }
}

/// Starts a broadcast of `stream`; returns the sender ingest feeds, and whether the broadcast
/// is transcoded (a broadcast parked for a reconnect can then tell whether it can take an input
/// that `needs_transcoding`).
pub fn spawn(
    ctx: PipelineContext,
    stream: Stream,
    lease: Lease,
    needs_transcoding: bool,
    tracker: &TaskTracker,
) -> (queue::Sender, bool) {
    let (tx, rx) = queue::channel(EVENT_QUEUE, ctx.budgets.ingest_queue_bytes);
    let recording_id = lease.stats.id.session_id.clone();
    let span = tracing::info_span!("broadcast", playback_id = %stream.playback_id, recording = %recording_id);
    // Without an input (a ladder that cannot start), `rx` is dropped: the publisher closes.
    let Some((input, cut)) =
        span.in_scope(|| open_input(&ctx, &stream, &lease, needs_transcoding, rx))
    else {
        return (tx, false);
    };
    let transcodes = matches!(input, Input::Ladder(_));
    tracker.spawn(run(ctx, stream, lease, input, cut).instrument(span));
    (tx, transcodes)
}

/// Where the broadcast's task reads from: ingest directly (passthrough), or the transcoder it
/// starts here for the stream's ladder (the default ladder if the stream's no longer exists,
/// or if it is passthrough and the input `needs_transcoding`).
fn open_input(
    ctx: &PipelineContext,
    stream: &Stream,
    lease: &Lease,
    needs_transcoding: bool,
    rx: queue::Receiver,
) -> Option<(Input, CutRule)> {
    let mut ladder = ctx
        .ladders
        .get(&stream.ladder)
        .or_else(|e| {
            tracing::warn!(error = %e, fallback = %ctx.default_ladder, "using the default ladder");
            ctx.ladders.get(&ctx.default_ladder)
        })
        .ok()? // the default is checked at start-up
        .clone();
    if needs_transcoding && !ladder.transcodes() {
        match ctx.ladders.get(&ctx.default_ladder) {
            Ok(default) if default.transcodes() => {
                tracing::info!(
                    ladder = %stream.ladder,
                    fallback = %ctx.default_ladder,
                    "this input must be transcoded and the stream's ladder passes through; \
                     using the default ladder"
                );
                ladder = default.clone();
            }
            _ => {
                tracing::error!(
                    ladder = %stream.ladder,
                    default = %ctx.default_ladder,
                    "this input must be transcoded, and neither the stream's ladder nor the \
                     default ladder transcodes; refusing the broadcast"
                );
                return None;
            }
        }
    }
    if !ladder.transcodes() {
        return Some((Input::Passthrough(rx), CutRule::AfterTarget));
    }
    let (out_tx, out_rx) = mpsc::channel(transcode::OUTPUT_QUEUE);
    let job = TranscodeJob {
        ladder,
        segment_duration: ctx.segment_duration,
        stats: lease.stats.clone(),
    };
    // in a worker process: decoding untrusted video cannot take the server down
    let started = match ctx.isolation {
        TranscodeIsolation::Process => ctx.worker.spawn(job, rx, out_tx),
        TranscodeIsolation::Thread => transcode::spawn(job, rx, out_tx),
    };
    if let Err(e) = started {
        tracing::error!(error = %e, "cannot start transcoding; refusing the broadcast");
        return None;
    }
    Some((Input::Ladder(out_rx), CutRule::AtMarks))
}

async fn run(ctx: PipelineContext, stream: Stream, lease: Lease, mut events: Input, cut: CutRule) {
    let stats = lease.stats.clone();
    let recording_id = stats.id.session_id.clone();
    match ctx
        .db
        .start_session(
            &recording_id,
            &stream.id,
            &stats.id.ladder,
            stream.record,
            &ctx.node_id,
        )
        .await
    {
        Ok(()) => {}
        Err(crate::db::DbError::NotFound) => {
            tracing::warn!("the stream was deleted as its broadcast started; ending it");
            return;
        }
        Err(e) => tracing::error!(error = %e, "could not record the broadcast start; continuing"),
    }
    // Numbers are reserved before anything is written, so a crash, a takeover or a database
    // error can never make two objects share one.
    let (numbers, first_number) = match SegmentNumbers::reserve(ctx.db.clone(), &stream.id).await {
        Ok(reserved) => reserved,
        Err(e) => {
            tracing::error!(error = %e, "could not reserve segment numbers; ending the broadcast");
            return;
        }
    };
    let mut segmenter = Segmenter::new(SegmenterConfig {
        target_duration: ctx.segment_duration,
        first_number,
        cut,
        part_duration: ctx.part_duration,
    })
    .with_budget(ctx.budgets.held_media_bytes);
    let publisher = Publisher::new(
        ctx.uploader.clone(),
        BroadcastPlan {
            playback_id: stream.playback_id.clone(),
            recording_id: recording_id.clone(),
            segment_duration: ctx.segment_duration,
            part_duration: ctx.part_duration,
            window: ctx.window,
            dvr_window: (stream.dvr_window > 0).then_some(f64::from(stream.dvr_window)),
            utc_timing_url: ctx.utc_timing_url.clone(),
            record: stream.record,
            grace: ctx.grace,
            backlog: ctx.backlog,
        },
    )
    .with_edges(ctx.edges.clone());
    let (to_publishing, publishing_queue) =
        queue::channel(PUBLISH_QUEUE, ctx.budgets.held_media_bytes);
    let publishing = tokio::spawn(
        Publishing {
            ctx: ctx.clone(),
            stream: stream.clone(),
            stats: stats.clone(),
            publisher,
            numbers,
        }
        .run(publishing_queue)
        .in_current_span(),
    );
    tracing::info!("broadcast started");
    ctx.events.send(Event::Live(stats.snapshot()));
    let mut renew = tokio::time::interval(CLAIM_RENEW);
    renew.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        let event = tokio::select! {
            event = events.recv() => event,
            _ = lease.cancel.cancelled() => RenditionEvent::End,
            _ = renew.tick() => {
                match ctx.db.renew_claim(&stream.id, &ctx.node_id).await {
                    Ok(true) => continue,
                    Ok(false) => {
                        tracing::error!("another node took this stream (this node's claim expired); ending the broadcast");
                        RenditionEvent::End
                    }
                    Err(e) => {
                        tracing::warn!(error = %e, "could not renew the stream claim; retrying");
                        continue;
                    }
                }
            }
        };
        let mut end = matches!(event, RenditionEvent::End);
        let outputs = match event {
            RenditionEvent::Poster(jpeg) => vec![Packaged::Poster(jpeg)],
            event => match segmenter.push(event) {
                Ok(outputs) => outputs.into_iter().map(packaged).collect(),
                Err(e) => {
                    // The stream cannot be packaged further: flush what is held and end here.
                    tracing::error!(error = %e, "ending broadcast");
                    end = true;
                    let rest = segmenter.push(RenditionEvent::End).unwrap_or_default();
                    rest.into_iter().map(packaged).collect()
                }
            },
        };
        for item in outputs {
            if to_publishing.send(item).await.is_err() {
                tracing::error!("the publishing task stopped; ending the broadcast");
                end = true;
                break;
            }
        }
        if end {
            break;
        }
    }
    // Drop the receiver first: a still-connected publisher's next send fails (directly, or
    // through the transcoder threads, which stop when their output closes), so its connection
    // closes. Then publishing finishes what is queued and writes the final manifests.
    drop(events);
    drop(to_publishing);
    let (segments, duration, publisher) = match publishing.await {
        Ok(done) => (done.segments, done.duration, Some(done.publisher)),
        Err(e) => {
            tracing::error!(error = %e, "the publishing task failed");
            (0, 0.0, None)
        }
    };
    // Nothing more is written under this broadcast's numbers: another node may take over.
    if let Err(e) = ctx.db.release_claim(&stream.id, &recording_id).await {
        tracing::warn!(error = %e, "could not release the stream claim; it expires by itself");
    }
    let bitrate = (duration > 0.0).then(|| (stats.bytes_in() as f64 * 8.0 / duration) as i64);
    let mut recorded = stream.record;
    match ctx
        .db
        .finish_session(
            &recording_id,
            (duration * 1000.0) as i64,
            bitrate,
            segmenter
                .next_number()
                .checked_sub(1)
                .filter(|_| segments > 0),
            publisher
                .as_ref()
                .map(|p| p.recorded_bytes().min(i64::MAX as u64) as i64),
        )
        .await
    {
        // the stream (and the recording with it) was deleted: no hook for a recording gone
        Ok(exists) => recorded &= exists,
        Err(e) => tracing::warn!(error = %e, "could not record the broadcast end"),
    }
    // after the database knows, so a client reacting to the event or a hook finds the recording
    let ended = Ended {
        session_id: recording_id.clone(),
        stream_id: stream.id.clone(),
        playback_id: stream.playback_id.clone(),
        duration_secs: duration,
        segments,
    };
    ctx.webhooks.broadcast_ended(&ended, recorded);
    ctx.events.send(Event::Ended(ended));
    if recorded && segments > 0 {
        crate::previews::spawn(
            ctx.uploader.store().clone(),
            ctx.db.clone(),
            crate::previews::Vod::Recording,
            recording_id.clone(),
            ctx.worker,
        );
    }
    drop(lease);
    let Some(mut publisher) = publisher else {
        return;
    };
    while let Some(at) = publisher.next_deletion() {
        tokio::select! {
            _ = tokio::time::sleep_until(at.into()) => publisher.delete_due(std::time::Instant::now()).await,
            _ = ctx.shutdown.cancelled() => break,
        }
    }
}

/// A segmenter output as the publishing task takes it (media time 0 is now, for an `Init`).
fn packaged(output: SegmenterOutput) -> Packaged {
    match output {
        SegmenterOutput::Init(inits) => Packaged::Start {
            inits,
            media_zero: Utc::now(),
        },
        SegmenterOutput::Part(part) => Packaged::Part(part),
        SegmenterOutput::Segment(segment) => Packaged::Segment(segment),
    }
}

async fn sleep_until(at: Option<std::time::Instant>) {
    match at {
        Some(at) => tokio::time::sleep_until(at.into()).await,
        None => std::future::pending().await,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::hub::Hub;
    use crate::media::codec_test_data::AVC_RECORD_320X240;
    use crate::media::{
        AvcConfig, CodecConfig, MediaFrame, StreamEvent, Timestamp, TrackInfo, TrackKind,
    };
    use bytes::Bytes;
    use object_store::memory::InMemory;
    use object_store::path::Path;
    use object_store::{ObjectStore, ObjectStoreExt};

    fn video_track(width: u32) -> StreamEvent {
        let mut avc = AvcConfig::parse(Bytes::from_static(AVC_RECORD_320X240)).unwrap();
        avc.width = width;
        StreamEvent::Track(TrackInfo {
            kind: TrackKind::Video,
            codec: CodecConfig::Avc(avc),
        })
    }

    fn frame(ms: i64, key: bool) -> StreamEvent {
        StreamEvent::Frame(MediaFrame {
            kind: TrackKind::Video,
            dts: Timestamp::from_millis(ms),
            pts: Timestamp::from_millis(ms),
            sync: key,
            segment_start: false,
            data: Bytes::from_static(&[0, 0, 0, 1, 0x65]),
        })
    }

    #[tokio::test]
    async fn a_fatal_stream_error_ends_the_broadcast_and_releases_the_publisher() {
        let (_dir, db) = crate::db::scratch().await;
        let (stream, _) = db.create_stream("s", "passthrough", true, 0).await.unwrap();
        let store: Arc<dyn ObjectStore> = Arc::new(InMemory::new());
        let shutdown = CancellationToken::new();
        let ctx = PipelineContext {
            node_id: "node-test".into(),
            uploader: Uploader::new(store.clone(), Duration::from_secs(1)),
            db,
            segment_duration: 1.0,
            part_duration: 0.5,
            window: 3,
            grace: Duration::from_secs(10),
            backlog: 3,
            utc_timing_url: "http://localhost/time".into(),
            ladders: Arc::new(Ladders::shipped()),
            default_ladder: "default".into(),
            events: EventBus::default(),
            webhooks: Webhooks::new(
                &crate::config::WebhookSettings {
                    on_publish: String::new(),
                    on_unpublish: String::new(),
                    on_recording_ready: String::new(),
                    on_clip_ready: String::new(),
                    timeout: 2.0,
                    secret: String::new(),
                },
                "http://localhost",
            )
            .unwrap(),
            budgets: Budgets {
                ingest_queue_bytes: 1 << 20,
                held_media_bytes: 8 << 20,
            },
            worker: WorkerLimits::default(),
            isolation: TranscodeIsolation::Process,
            edges: LiveEdges::default(),
            shutdown: shutdown.clone(),
        };
        let hub = Hub::new();
        let stats = Arc::new(crate::hub::LiveStats::new("rec".into(), &stream));
        let lease = hub.begin(stats, &shutdown).await.unwrap();
        let tracker = TaskTracker::new();
        let (events, _) = spawn(ctx, stream.clone(), lease, false, &tracker);
        events.send(video_track(320)).await.unwrap();
        for i in 0..60 {
            events.send(frame(i * 40, i % 25 == 0)).await.unwrap();
        }
        // the encoder changes resolution mid-broadcast: passthrough cannot follow
        events.send(video_track(640)).await.unwrap();
        let closed = tokio::time::timeout(std::time::Duration::from_secs(5), async {
            for i in 60.. {
                if events.send(frame(i * 40, i % 25 == 0)).await.is_err() {
                    return;
                }
                tokio::task::yield_now().await;
            }
        })
        .await;
        assert!(
            closed.is_ok(),
            "the pipeline must stop taking frames after a fatal error"
        );
        // the publishing task then writes the final playlist
        let playlist = Path::from(format!("live/{}/source/index.m3u8", stream.playback_id));
        let ended = tokio::time::timeout(std::time::Duration::from_secs(5), async {
            loop {
                if let Ok(got) = store.get(&playlist).await {
                    let text = got.bytes().await.unwrap_or_default();
                    if String::from_utf8_lossy(&text).contains("#EXT-X-ENDLIST") {
                        return;
                    }
                }
                tokio::time::sleep(std::time::Duration::from_millis(10)).await;
            }
        })
        .await;
        assert!(ended.is_ok(), "the playlist ends");
        shutdown.cancel();
        tracker.close();
        tracker.wait().await;
    }
}
