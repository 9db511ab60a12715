//! Scrub previews of a live broadcast's DVR view: while the broadcast runs, sheets of
//! `LIVE_SHEET_TILES` thumbnails (`live/{playback_id}/previews/{segment}.jpg`, named by the
//! number of their first thumbnail's segment, which no broadcast of the stream reuses) and a
//! thumbnails track, `live/{playback_id}/thumbnails.vtt`, rewritten after every sheet and
//! listing the cues of the DVR window.
//!
//! Cue times count from the broadcast's start as the directory gives it (`started_at`), so a
//! player that knows how far behind live a point of its timeline is knows which cue it shows.
//!
//! `LivePreviews` sits in the publishing task: when a segment starts at least
//! `layout::MIN_TILE_GAP_SECS` after the last thumbnail, it takes the keyframe the segment
//! starts with (parsed from the segment's own bytes, of the smallest video rendition, the
//! cheapest to decode) and holds it until a sheet is full. A full sheet goes to the broadcast's
//! previews task through a queue of one: when the task is still making the previous sheet, the
//! new one is dropped (a gap in the previews, one debug line) — previews never hold up
//! publishing. The task decodes the sheet in a process of its own (`run_sheet`), stores
//! it, rewrites the track, and deletes sheets whose cues all left the DVR window, after the
//! grace period the segments get. When the broadcast ends, the last partial sheet is made too
//! and the end waits (at most `FINISH_WAIT`) until the task stored everything, so nothing of
//! it is written once another broadcast of the stream may start; the task then lives on only
//! to delete what it doomed (at most the grace period). Thumbnails are taken only from
//! segments whose number the broadcast reserved, so a sheet's name is never another node's.
//!
//! Memory per broadcast: three sheets' keyframes (the one filling, one queued, the one being
//! made), each at most `LIVE_SHEET_TILES` keyframes and `LIVE_SHEET_INPUT_BYTES` (or a single
//! keyframe, itself at most `wire::MAX_FRAME_DATA`); the track's cues for the DVR window.

use std::collections::VecDeque;
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use object_store::path::Path;
use object_store::{ObjectStore, ObjectStoreExt};
use tokio::sync::{mpsc, oneshot};

use super::layout::{self, Cue};
use super::{run_sheet, sheet_limits, SheetMade, THUMBNAILS_VTT};
use crate::ingest::fmp4::Fmp4Demuxer;
use crate::media::{MediaFrame, StreamEvent, TrackId, TrackInfo, TrackKind};
use crate::package::{InitSegment, Segment};
use crate::publish::store::Root;
use crate::transcode::WorkerLimits;

/// Thumbnails per live sheet: the newest ~20 s of a DVR view have no previews until their sheet
/// is full, and a sheet is small enough to remake every 20 s.
pub const LIVE_SHEET_TILES: usize = 5;
/// Keyframe bytes a live sheet holds at most (five 1080p keyframes are about 1 MB; the
/// smallest rendition's are smaller): a keyframe past it closes the sheet early.
pub const LIVE_SHEET_INPUT_BYTES: usize = 8 << 20;
/// How long the end of a broadcast waits for its last sheet.
const FINISH_WAIT: Duration = Duration::from_secs(10);

/// One thumbnail waiting for its sheet.
struct Pending {
    segment: u64,
    start_secs: f64,
    frame: MediaFrame,
}

/// A sheet for the previews task.
struct SheetJob {
    first_segment: u64,
    tiles: Vec<(f64, MediaFrame)>,
    /// Where the last thumbnail's time ends (the next thumbnail's start, when known).
    end_secs: f64,
}

/// The publishing task's side (see the module doc).
pub struct LivePreviews {
    track: TrackId,
    demuxer: Fmp4Demuxer,
    /// Seconds from the broadcast's start to media time 0.
    offset_secs: f64,
    last_tile: Option<f64>,
    /// Where the last segment seen ends, on the broadcast's clock.
    end_secs: f64,
    pending: Vec<Pending>,
    pending_bytes: usize,
    jobs: Option<mpsc::Sender<SheetJob>>,
    /// Told by the task once it has stored everything it was given.
    stored: Option<oneshot::Receiver<()>>,
}

impl LivePreviews {
    /// Starts the previews of a broadcast whose tracks are `inits`; `None` without video.
    /// `offset_secs`: media time 0 on the broadcast's clock.
    pub fn start(
        store: Arc<dyn ObjectStore>,
        playback_id: &str,
        inits: &[InitSegment],
        offset_secs: f64,
        dvr_window: Duration,
        grace: Duration,
        limits: WorkerLimits,
    ) -> Option<Self> {
        let smallest = inits
            .iter()
            .filter(|i| i.info.kind == TrackKind::Video)
            .min_by_key(|i| {
                i.info
                    .codec
                    .video_size()
                    .map_or(u64::MAX, |(w, h)| u64::from(w) * u64::from(h))
            })?;
        let mut demuxer = Fmp4Demuxer::new();
        if let Err(e) = demuxer.init(&Bytes::from(smallest.bytes.clone())) {
            tracing::warn!(error = %e, "no scrub previews: the init segment does not parse");
            return None;
        }
        let (jobs, queue) = mpsc::channel(1);
        let (stored_tx, stored) = oneshot::channel();
        let task = LiveSheets {
            store,
            root: Root::live(playback_id),
            track: smallest.info.clone(),
            limits: sheet_limits(limits),
            dvr_window,
            grace,
            cues: Vec::new(),
            sheets: VecDeque::new(),
            doomed: VecDeque::new(),
        };
        tokio::spawn(task.run(queue, stored_tx));
        Some(Self {
            track: smallest.id,
            demuxer,
            offset_secs,
            last_tile: None,
            end_secs: 0.0,
            pending: Vec::new(),
            pending_bytes: 0,
            jobs: Some(jobs),
            stored: Some(stored),
        })
    }

    /// A segment about to be published: its keyframe becomes a thumbnail when one is due.
    pub fn segment(&mut self, segment: &Segment) {
        let Some(track) = segment.track(self.track) else {
            return;
        };
        let start = track.start_secs() + self.offset_secs;
        self.end_secs = start + track.duration_secs();
        if self
            .last_tile
            .is_some_and(|last| start - last < layout::MIN_TILE_GAP_SECS - 1e-6)
        {
            return;
        }
        let keyframe = self.demuxer.segment(&track.bytes).ok().and_then(|events| {
            events.into_iter().find_map(|event| match event {
                StreamEvent::Frame(frame) if frame.sync => Some(frame),
                _ => None,
            })
        });
        let Some(mut frame) = keyframe else {
            return;
        };
        // a copy of its own: the demuxer's frame is a view into the whole segment
        frame.data = Bytes::copy_from_slice(&frame.data);
        if !self.pending.is_empty()
            && self.pending_bytes + frame.data.len() > LIVE_SHEET_INPUT_BYTES
        {
            self.send(start);
        }
        self.last_tile = Some(start);
        self.pending_bytes += frame.data.len();
        self.pending.push(Pending {
            segment: segment.number,
            start_secs: start,
            frame,
        });
        if self.pending.len() >= LIVE_SHEET_TILES {
            // its end is the next thumbnail's start: one gap further
            self.send(start + layout::MIN_TILE_GAP_SECS);
        }
    }

    /// The pending thumbnails as a sheet whose last thumbnail ends at `end_secs` (none when
    /// nothing is pending).
    fn take_job(&mut self, end_secs: f64) -> Option<SheetJob> {
        let pending = std::mem::take(&mut self.pending);
        self.pending_bytes = 0;
        let first_segment = pending.first()?.segment;
        Some(SheetJob {
            first_segment,
            tiles: pending
                .into_iter()
                .map(|p| (p.start_secs, p.frame))
                .collect(),
            end_secs,
        })
    }

    /// Hands the pending thumbnails to the previews task (or drops them when it is busy).
    fn send(&mut self, end_secs: f64) {
        let Some(job) = self.take_job(end_secs) else {
            return;
        };
        let Some(jobs) = &self.jobs else {
            return;
        };
        if let Err(mpsc::error::TrySendError::Full(job)) = jobs.try_send(job) {
            tracing::debug!(
                segment = job.first_segment,
                "scrub previews behind: a sheet is skipped"
            );
        }
    }

    /// The broadcast ended: the last partial sheet is made too. Returns once the task stored
    /// everything (so nothing of this broadcast's previews is written after it released its
    /// claim), or after `FINISH_WAIT`, then without that sheet.
    pub async fn finish(mut self) {
        let job = self.take_job(self.end_secs);
        let (jobs, stored) = (self.jobs.take(), self.stored.take());
        let finished = async move {
            if let (Some(job), Some(jobs)) = (job, jobs) {
                let _ = jobs.send(job).await;
            }
            if let Some(stored) = stored {
                let _ = stored.await;
            }
        };
        if tokio::time::timeout(FINISH_WAIT, finished).await.is_err() {
            tracing::warn!("scrub previews still busy at the end of the broadcast; left behind");
        }
    }
}

/// The broadcast's previews task.
struct LiveSheets {
    store: Arc<dyn ObjectStore>,
    root: Root,
    track: TrackInfo,
    limits: WorkerLimits,
    dvr_window: Duration,
    grace: Duration,
    /// The track's cues, oldest first.
    cues: Vec<Cue>,
    /// Stored sheets (their first segment) and where their last cue ends.
    sheets: VecDeque<(u64, f64)>,
    /// Sheets that left the window and when they may be deleted.
    doomed: VecDeque<(Instant, Path)>,
}

impl LiveSheets {
    async fn run(mut self, mut queue: mpsc::Receiver<SheetJob>, stored: oneshot::Sender<()>) {
        while let Some(job) = queue.recv().await {
            if let Err(e) = self.sheet(job).await {
                tracing::warn!(error = %e, "a scrub-preview sheet was not made");
            }
            self.delete_due().await;
        }
        let _ = stored.send(());
        // the broadcast ended: what left its window still goes when its grace is over
        while let Some(&(at, _)) = self.doomed.front() {
            tokio::time::sleep_until(at.into()).await;
            self.delete_due().await;
        }
    }

    async fn sheet(&mut self, job: SheetJob) -> Result<(), super::PreviewError> {
        let count = job.tiles.len();
        let starts: Vec<f64> = job.tiles.iter().map(|(start, _)| *start).collect();
        let frames = job.tiles.into_iter().map(|(_, frame)| frame).collect();
        let input = super::sheet_input(&self.track, frames)?;
        let (limits, label) = (self.limits, self.root.prefix().to_string());
        let made: SheetMade =
            tokio::task::spawn_blocking(move || run_sheet(limits, &label, &input))
                .await
                .map_err(|e| super::PreviewError::Process(e.to_string()))??;
        if made.keyframes != count {
            return Err(super::PreviewError::Process(format!(
                "it read {} of {count} keyframes",
                made.keyframes
            )));
        }
        let sheet = job.first_segment as usize;
        super::put(
            &self.store,
            &self.root.file(&layout::sheet_name(sheet)),
            made.jpeg,
        )
        .await?;
        // the previous sheet's last cue ends where this one starts, unless a sheet was skipped
        // in between: then one gap after its own start (no picture stands for the missing ones)
        if let (Some(last), Some(first)) = (self.cues.last_mut(), starts.first()) {
            let gap = *first - last.start_secs;
            if gap > 0.0 {
                last.end_secs = last.start_secs + gap.min(2.0 * layout::MIN_TILE_GAP_SECS);
                if let Some(sheet) = self.sheets.back_mut() {
                    sheet.1 = last.end_secs;
                }
            }
        }
        for (index, start) in starts.iter().enumerate() {
            let (x, y) = layout::region(index, made.tile.0, made.tile.1);
            self.cues.push(Cue {
                start_secs: *start,
                end_secs: starts.get(index + 1).copied().unwrap_or(job.end_secs),
                sheet,
                x,
                y,
                width: made.tile.0,
                height: made.tile.1,
            });
        }
        self.sheets.push_back((job.first_segment, job.end_secs));
        self.leave_window(job.end_secs);
        super::put(
            &self.store,
            &self.root.file(THUMBNAILS_VTT),
            layout::vtt(&self.cues),
        )
        .await?;
        Ok(())
    }

    /// Drops the cues and sheets that ended before the DVR window (which ends at `edge_secs`).
    fn leave_window(&mut self, edge_secs: f64) {
        let window_start = edge_secs - self.dvr_window.as_secs_f64();
        self.cues.retain(|cue| cue.end_secs > window_start);
        while let Some(&(first, end)) = self.sheets.front() {
            if end > window_start {
                break;
            }
            self.sheets.pop_front();
            let path = self.root.file(&layout::sheet_name(first as usize));
            self.doomed.push_back((Instant::now() + self.grace, path));
        }
    }

    async fn delete_due(&mut self) {
        let now = Instant::now();
        while let Some((at, _)) = self.doomed.front() {
            if *at > now {
                break;
            }
            let Some((_, path)) = self.doomed.pop_front() else {
                break;
            };
            if let Err(e) = self.store.delete(&path).await {
                tracing::warn!(object = %path, error = %e, "a scrub-preview sheet is left");
            }
        }
    }
}
