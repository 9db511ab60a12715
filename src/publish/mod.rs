//! Publishing one broadcast through `object_store`: one ordered writer per stream.
//!
//! Order per segment: every rendition's `{n}.m4s` (and its recording copy) in parallel, then the
//! media playlists, then the multivariant playlist and the MPD — a manifest never names an
//! object that is not fully stored.
//!
//! Live budget: every write retries only until about one segment duration has passed
//! (`upload`). A segment that could not be stored in time waits at the head of a backlog, and
//! later segments queue behind it, so manifests stay contiguous; each new segment retries the
//! backlog first, so when the store comes back publishing catches up and the manifests jump to
//! the live edge. A backlog longer than `BroadcastPlan::backlog` gives up its oldest segment:
//! logged as an error, counted in `strata_segments_lost_total` and the session's
//! `segments_lost`, never silently. Its number is never used again: its write may have landed
//! after all, and a stored object never changes. The next stored segment carries a
//! discontinuity (HLS `EXT-X-DISCONTINUITY`; a new DASH Period, as `$Number$` cannot skip).
//!
//! Numbers: a segment is written only under a number below `number_limit`, which the caller
//! sets from the numbers it reserved in the database (`numbers`); one that has no reserved
//! number waits in the backlog like one the store refused.
//!
//! DVR: when the stream has a DVR window, every segment round also rewrites the DVR view of the
//! broadcast (`dvr.m3u8` and each rendition's `dvr.m3u8`, `dvr.mpd`: the segments of the last
//! `dvr_window` seconds, plain HLS and DASH) after the live manifests, and segments stay until
//! they leave that view instead of the live window.
//!
//! Retention: a segment that leaves the live window (or the DVR view) is deleted only after
//! `grace`, so players and CDNs that fetched the previous playlist can still get it (the sweeper, `sweep`, removes
//! what a crashed process left). Each segment is also copied (a hard link on local disk, a
//! server-side copy on S3) under `vod/{recording_id}/`, where the finished broadcast stays as a
//! VOD with its own manifests. Those manifests are also written every `CHECKPOINT_EVERY` stored
//! segments while the broadcast runs (as a finished VOD of what exists so far), so a process
//! that dies leaves a playable recording behind (`recovery` finishes it at the next start).

pub mod numbers;
pub mod recovery;
pub mod store;
pub mod sweep;
pub mod upload;

use std::collections::VecDeque;
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use chrono::{DateTime, Utc};
use futures::TryStreamExt;
use object_store::path::Path;
use object_store::{ObjectStore, ObjectStoreExt};

use crate::edge::{EdgeWriter, LiveEdges};
use crate::manifest::ll_hls::LiveEdge;
use crate::manifest::{dash, hls, Presentation, PresentationKind, SegmentEntry, Timeline};
use crate::media::TrackId;
use crate::package::{InitSegment, Part, Segment};
use crate::previews;
use store::Root;
use upload::{UploadError, Uploader};

#[derive(Debug, thiserror::Error)]
pub enum PublishError {
    #[error(transparent)]
    Write(#[from] UploadError),
    #[error("segment {0} arrived before the init segments")]
    NotStarted(u64),
}

/// What one broadcast publishes, and where.
#[derive(Debug, Clone)]
pub struct BroadcastPlan {
    pub playback_id: String,
    pub recording_id: String,
    pub segment_duration: f64,
    /// Target part duration, seconds.
    pub part_duration: f64,
    pub window: usize,
    /// The DVR window in seconds (none: no DVR view; segments go when they leave `window`).
    pub dvr_window: Option<f64>,
    /// Absolute URL of the origin's time endpoint (DASH `UTCTiming`).
    pub utc_timing_url: String,
    /// Keep the broadcast as a recording under `vod/{recording_id}/`.
    pub record: bool,
    /// How long a segment that left the live window stays.
    pub grace: Duration,
    /// Segments held while the store fails before the oldest is given up.
    pub backlog: usize,
}

/// A segment the manifests now list.
#[derive(Debug, Clone, PartialEq)]
pub struct Stored {
    /// Its number in object names and manifests.
    pub number: u64,
    pub duration_secs: f64,
    pub bytes: u64,
    /// From the segment's arrival to its manifests being written.
    pub latency: Duration,
}

/// A cut segment waiting to be stored.
struct Pending {
    segment: Segment,
    arrived: Instant,
}

/// The ordered writer of one broadcast.
pub struct Publisher {
    up: Uploader,
    plan: BroadcastPlan,
    live_root: Root,
    /// Where the recording goes (none when the stream does not record).
    vod_root: Option<Root>,
    /// The broadcast so far (its live manifests list the window; the recording lists all).
    presentation: Option<Presentation>,
    /// Init segments not stored yet (live and recording paths).
    unstored_inits: Vec<(Path, Bytes)>,
    /// Segments cut but not stored yet, oldest first.
    backlog: VecDeque<Pending>,
    /// The number the next stored segment gets.
    next_number: Option<u64>,
    /// The next stored segment follows a lost one.
    after_loss: bool,
    /// Stored segments the manifests do not list yet (their write failed).
    manifests_behind: bool,
    /// Objects to delete once their instant has passed.
    retention: VecDeque<(Instant, Path)>,
    /// Segments numbered below this have been scheduled for deletion (they left every view).
    released_below: u64,
    /// BANDWIDTH last written into the multivariant playlist.
    master_bandwidth: u64,
    /// Segments given up.
    lost: u64,
    /// Only numbers below this may be written (the caller's reservation).
    number_limit: u64,
    /// Segments stored since the recording's manifests were last written.
    since_checkpoint: usize,
    /// Where the live edge is served from memory (low-latency playlists), if anywhere.
    edges: Option<LiveEdges>,
    edge: Option<EdgeWriter>,
}

/// The recording's manifests are rewritten after this many stored segments.
pub const CHECKPOINT_EVERY: usize = 3;

impl Publisher {
    pub fn new(up: Uploader, plan: BroadcastPlan) -> Self {
        Self {
            up,
            live_root: Root::live(&plan.playback_id),
            vod_root: plan.record.then(|| Root::vod(&plan.recording_id)),
            plan,
            presentation: None,
            unstored_inits: Vec::new(),
            backlog: VecDeque::new(),
            next_number: None,
            after_loss: false,
            manifests_behind: false,
            retention: VecDeque::new(),
            released_below: 0,
            master_bandwidth: 0,
            lost: 0,
            number_limit: u64::MAX,
            since_checkpoint: 0,
            edges: None,
            edge: None,
        }
    }

    /// Serves the broadcast's live edge through `edges` while it runs.
    pub fn with_edges(mut self, edges: LiveEdges) -> Self {
        self.edges = Some(edges);
        self
    }

    /// Hands the live edge out after a change (a stored part or segment, the end).
    fn update_edge(&self) {
        if let (Some(edge), Some(p)) = (&self.edge, &self.presentation) {
            edge.publish(LiveEdge::of(p, self.plan.part_duration));
        }
    }

    /// Only numbers below `limit` may be written from now on.
    pub fn set_number_limit(&mut self, limit: u64) {
        self.number_limit = limit;
    }

    /// The highest number the next `publish_segment` of a segment numbered `incoming` could
    /// write, plus one: it may store the whole backlog and that segment.
    pub fn numbers_needed(&self, incoming: u64) -> u64 {
        self.next_number.unwrap_or(incoming) + self.backlog.len() as u64 + 1
    }

    fn store(&self) -> &Arc<dyn ObjectStore> {
        self.up.store()
    }

    /// Segments given up so far.
    pub fn lost(&self) -> u64 {
        self.lost
    }

    /// Starts the broadcast: schedules leftovers of an earlier broadcast of this stream for
    /// deletion, then writes the init segments (retried with the first segments if the store
    /// fails now). `media_zero` is the wall clock of media time 0.
    pub async fn start(
        &mut self,
        inits: Vec<InitSegment>,
        media_zero: DateTime<Utc>,
    ) -> Result<(), PublishError> {
        self.schedule_leftovers().await;
        let mut videos = Vec::new();
        let mut audio = None;
        for init in inits {
            let bytes = Bytes::from(init.bytes);
            let live = self
                .live_root
                .rendition_file(&init.name, store::INIT_SEGMENT);
            self.unstored_inits.push((live, bytes.clone()));
            if let Some(vod) = &self.vod_root {
                let path = vod.rendition_file(&init.name, store::INIT_SEGMENT);
                self.unstored_inits.push((path, bytes));
            }
            let timeline = Timeline::new(init.name, init.info.kind, init.info.codec);
            match init.id {
                TrackId::Video(_) => videos.push(timeline),
                TrackId::Audio => audio = Some(timeline),
            }
        }
        if videos.is_empty() {
            return Ok(());
        }
        self.presentation = Some(Presentation {
            kind: PresentationKind::Live {
                window: self.plan.window,
            },
            availability_start: media_zero,
            target_duration: self.plan.segment_duration.ceil() as u64,
            segment_duration: self.plan.segment_duration,
            part_duration: Some(self.plan.part_duration),
            videos,
            audio,
            ended: false,
        });
        if let (Some(edges), Some(p)) = (&self.edges, &self.presentation) {
            let edge = LiveEdge::of(p, self.plan.part_duration);
            self.edge = Some(edges.open(&self.plan.playback_id, edge));
        }
        self.store_inits(self.up.deadline()).await
    }

    /// Stores the init segments not stored yet; those that fail stay for the next round.
    async fn store_inits(&mut self, deadline: Instant) -> Result<(), PublishError> {
        let unstored = std::mem::take(&mut self.unstored_inits);
        let writes = unstored
            .iter()
            .map(|(path, bytes)| self.up.put(path, bytes.clone(), deadline));
        let results = futures::future::join_all(writes).await;
        let mut first_error = None;
        for (init, result) in unstored.into_iter().zip(results) {
            if let Err(e) = result {
                self.unstored_inits.push(init);
                first_error.get_or_insert(e);
            }
        }
        first_error.map_or(Ok(()), |e| Err(e.into()))
    }

    /// Stores one part as `{n}.{p}.m4s` beside the segments, within one part duration (a part
    /// is worth something only near the live edge; the segment that holds it is stored whole
    /// anyway), and schedules its deletion after the grace period. Only parts of segments
    /// whose number is reserved are written: segments keep the segmenter's numbers (a segment
    /// given up spends its number too), so a part names exactly the segment it belongs to.
    pub async fn publish_part(&mut self, part: Part) {
        let Some(name) = self.rendition_name(part.id) else {
            return;
        };
        if part.segment >= self.number_limit {
            tracing::debug!(
                segment = part.segment,
                "part of an unreserved segment not stored"
            );
            return;
        }
        let path = self.live_root.part(&name, part.segment, part.index);
        let deadline = Instant::now() + Duration::from_secs_f64(self.plan.part_duration);
        match self.up.put(&path, part.bytes, deadline).await {
            Ok(()) => {
                let due = Instant::now() + self.plan.grace;
                self.retention.push_back((due, path));
                if let Some(timeline) = self
                    .presentation
                    .as_mut()
                    .and_then(|p| p.timeline_mut(part.id))
                {
                    timeline.push_part(part.segment, part.info, part.ends_segment);
                }
                self.update_edge();
            }
            Err(e) => {
                tracing::warn!(object = %path, error = %e, "part not stored in time; skipped")
            }
        }
    }

    /// Replaces the stream's poster (`live/{playback_id}/poster.jpg`).
    pub async fn publish_poster(&self, jpeg: Bytes) -> Result<(), PublishError> {
        let path = self.live_root.file(store::POSTER);
        Ok(self.up.put(&path, jpeg, self.up.deadline()).await?)
    }

    /// Objects under this stream's live prefix from an earlier broadcast (its last window):
    /// deleted after the grace period, like any segment leaving a window; its DVR view at once.
    async fn schedule_leftovers(&mut self) {
        let prefix = self.live_root.prefix();
        let listed: Result<Vec<_>, _> = self.store().list(Some(&prefix)).try_collect().await;
        let deadline = Instant::now() + self.plan.grace;
        match listed {
            Ok(objects) => {
                for meta in objects {
                    let sheet = previews::is_sheet(&self.live_root, &meta.location);
                    match meta.location.filename() {
                        Some(name) if name.ends_with(".m4s") || sheet => {
                            self.retention.push_back((deadline, meta.location))
                        }
                        // an earlier broadcast's DVR view (and its scrub previews' track) goes
                        // at once: this one writes its own (or has none), and a clip must never
                        // be cut from the old one
                        Some(store::DVR_PLAYLIST | store::DVR_MPD | previews::THUMBNAILS_VTT) => {
                            if let Err(e) = self.store().delete(&meta.location).await {
                                tracing::warn!(object = %meta.location, error = %e,
                                    "an earlier broadcast's DVR view could not be deleted");
                            }
                        }
                        _ => {}
                    }
                }
            }
            Err(e) => {
                tracing::warn!(error = %e, "could not list leftovers of an earlier broadcast")
            }
        }
    }

    /// Queues one segment of every rendition, stores what the backlog holds (oldest first,
    /// stopping at the first that cannot be stored within the budget), then rewrites the
    /// manifests. Returns the segments the manifests now list.
    pub async fn publish_segment(
        &mut self,
        segment: Segment,
        media_zero: DateTime<Utc>,
    ) -> Result<Vec<Stored>, PublishError> {
        if self.presentation.is_none() {
            return Err(PublishError::NotStarted(segment.number));
        }
        self.next_number.get_or_insert(segment.number);
        self.backlog.push_back(Pending {
            segment,
            arrived: Instant::now(),
        });
        let stored = self.store_backlog(media_zero, self.up.budget()).await;
        self.give_up_beyond(self.plan.backlog);
        if !stored.is_empty() {
            self.update_edge();
        }
        if !stored.is_empty() || self.manifests_behind {
            if let Err(e) = self.write_live_manifests(false).await {
                self.manifests_behind = true;
                tracing::warn!(error = %e, "manifests not updated; retried with the next segment");
            } else {
                self.manifests_behind = false;
            }
        }
        self.since_checkpoint += stored.len();
        if self.since_checkpoint >= CHECKPOINT_EVERY {
            self.checkpoint_recording().await;
        }
        let latency_end = Instant::now();
        Ok(stored
            .into_iter()
            .map(|(s, arrived)| Stored {
                latency: latency_end - arrived,
                ..s
            })
            .collect())
    }

    /// Stores backlog segments in order, each within `budget`, until one fails.
    async fn store_backlog(
        &mut self,
        media_zero: DateTime<Utc>,
        budget: Duration,
    ) -> Vec<(Stored, Instant)> {
        let mut stored = Vec::new();
        if !self.unstored_inits.is_empty() {
            if let Err(e) = self.store_inits(Instant::now() + budget).await {
                tracing::warn!(error = %e, "init segments not stored yet; segments wait");
                return stored;
            }
        }
        while let Some(pending) = self.backlog.front() {
            let number = self.next_number.unwrap_or(pending.segment.number);
            if number >= self.number_limit {
                tracing::warn!(
                    segment = number,
                    waiting = self.backlog.len(),
                    "segment number not reserved; the segment waits"
                );
                break;
            }
            let deadline = Instant::now() + budget;
            match self.store_segment(&pending.segment, number, deadline).await {
                Ok(()) => {}
                Err(e) => {
                    tracing::warn!(segment = number, waiting = self.backlog.len(), error = %e,
                        "segment not stored within the live budget; retried with the next one");
                    break;
                }
            }
            let Some(pending) = self.backlog.pop_front() else {
                break;
            };
            self.next_number = Some(number + 1);
            let entry = self.list_segment(&pending.segment, number, media_zero);
            stored.push((entry, pending.arrived));
        }
        stored
    }

    /// Every rendition's object (and its recording copy), in parallel.
    async fn store_segment(
        &self,
        segment: &Segment,
        number: u64,
        deadline: Instant,
    ) -> Result<(), UploadError> {
        let writes = segment.tracks.iter().filter_map(|track| {
            let name = self.rendition_name(track.id)?;
            Some(async move {
                let live = self.live_root.segment(&name, number);
                self.up.put(&live, track.bytes.clone(), deadline).await?;
                match &self.vod_root {
                    Some(vod) => {
                        self.up
                            .copy(&live, &vod.segment(&name, number), deadline)
                            .await
                    }
                    None => Ok(()),
                }
            })
        });
        futures::future::try_join_all(writes).await.map(|_| ())
    }

    /// Adds a stored segment to the timelines; what leaves the window is scheduled for deletion.
    fn list_segment(
        &mut self,
        segment: &Segment,
        number: u64,
        media_zero: DateTime<Utc>,
    ) -> Stored {
        let discontinuity = std::mem::take(&mut self.after_loss);
        let mut bytes = 0;
        if let Some(p) = self.presentation.as_mut() {
            for track in &segment.tracks {
                let Some(timeline) = p.timeline_mut(track.id) else {
                    continue;
                };
                let offset_ms = (track.start_secs() * 1000.0).round() as i64;
                bytes += track.bytes.len() as u64;
                timeline.push(SegmentEntry {
                    number,
                    start: track.start,
                    duration: track.duration,
                    wall_clock: media_zero + chrono::Duration::milliseconds(offset_ms),
                    bytes: track.bytes.len() as u64,
                    samples: track.samples,
                    discontinuity,
                    parts: track.parts.clone(),
                });
            }
        }
        self.release_unlisted();
        Stored {
            number,
            duration_secs: segment.tracks.first().map_or(0.0, |t| t.duration_secs()),
            bytes,
            latency: Duration::ZERO,
        }
    }

    /// The view whose segments the live root keeps: the DVR view, or else the live window.
    fn kept_view(&self) -> PresentationKind {
        match self.plan.dvr_window {
            Some(depth) => PresentationKind::Dvr {
                window: self.plan.window,
                depth,
            },
            None => PresentationKind::Live {
                window: self.plan.window,
            },
        }
    }

    /// Schedules for deletion (after the grace) every segment that no view lists any more:
    /// those numbered below the first the kept view lists on the lead rendition.
    fn release_unlisted(&mut self) {
        let Some(p) = &self.presentation else {
            return;
        };
        let first_kept = match self.kept_view() {
            PresentationKind::Dvr { window, depth } => p.dvr_first_number(window, depth),
            view => p
                .lead()
                .and_then(|lead| lead.listed(p.count_for(view, lead)).first())
                .map(|s| s.number),
        };
        let Some(first_kept) = first_kept else {
            return;
        };
        if first_kept <= self.released_below {
            return;
        }
        let deadline = Instant::now() + self.plan.grace;
        for timeline in p.timelines() {
            let all = timeline.all();
            let from = all.partition_point(|s| s.number < self.released_below);
            let to = all.partition_point(|s| s.number < first_kept);
            for old in &all[from..to.max(from)] {
                let path = self.live_root.segment(&timeline.name, old.number);
                self.retention.push_back((deadline, path));
            }
        }
        self.released_below = first_kept;
    }

    /// Gives up the oldest backlog segments beyond `keep`: reported, never listed.
    fn give_up_beyond(&mut self, keep: usize) {
        while self.backlog.len() > keep {
            let Some(pending) = self.backlog.pop_front() else {
                break;
            };
            // the number it was tried under is spent; whatever of it landed late goes after
            // the grace, like a segment that left the window
            let number = self.next_number.unwrap_or(pending.segment.number);
            self.next_number = Some(number + 1);
            let deadline = Instant::now() + self.plan.grace;
            for track in &pending.segment.tracks {
                let Some(name) = self.rendition_name(track.id) else {
                    continue;
                };
                self.retention
                    .push_back((deadline, self.live_root.segment(&name, number)));
                if let Some(vod) = &self.vod_root {
                    self.retention
                        .push_back((deadline, vod.segment(&name, number)));
                }
            }
            self.lost += 1;
            self.after_loss = true;
            metrics::counter!("strata_segments_lost_total").increment(1);
            tracing::error!(
                segment = number,
                waited_ms = pending.arrived.elapsed().as_millis() as u64,
                lost_so_far = self.lost,
                "segment could not be stored in time and is left out of every manifest \
                 (the store kept failing); the next one is marked as a discontinuity"
            );
        }
    }

    async fn write_live_manifests(&mut self, force_master: bool) -> Result<(), PublishError> {
        let Some(p) = self.presentation.as_mut() else {
            return Ok(());
        };
        if p.fit_target_duration() {
            tracing::warn!(
                target_duration = p.target_duration,
                "a segment ran longer than the target duration; raising EXT-X-TARGETDURATION \
                 (set the encoder's keyframe interval to the segment duration)"
            );
        }
        let bandwidth = p.timelines().map(|t| t.peak_bps).sum::<u64>();
        // The multivariant playlist is written first with the first segment's rate, then again
        // only when the measured peak grew by 10 % (players read it once).
        let write_master = force_master || bandwidth * 10 > self.master_bandwidth * 11;
        if let Some(p) = &self.presentation {
            self.write_manifests(&self.live_root, p, write_master)
                .await?;
        }
        let dvr = matches!(self.kept_view(), PresentationKind::Dvr { .. });
        if let Some(mut p) = dvr.then(|| self.presentation.take()).flatten() {
            // The DVR view of the same timelines (plain HLS and DASH: a player that rewinds has
            // no use for parts), without copying them: the presentation is lent out as that
            // view and restored before anything else reads it (`publish_segment` and `finish`
            // are never cancelled midway: the publishing task awaits them to the end).
            let live = (p.kind, p.part_duration);
            (p.kind, p.part_duration) = (self.kept_view(), None);
            let written = self
                .write_manifests(&self.live_root, &p, write_master)
                .await;
            (p.kind, p.part_duration) = live;
            self.presentation = Some(p);
            written?;
        }
        if write_master {
            self.master_bandwidth = bandwidth;
        }
        Ok(())
    }

    /// Writes the recording's manifests for what is stored so far (kept for the next try when
    /// the store refuses).
    async fn checkpoint_recording(&mut self) {
        let (Some(root), Some(p)) = (&self.vod_root, &self.presentation) else {
            return;
        };
        let vod = Presentation {
            kind: PresentationKind::Vod,
            ended: true,
            ..p.clone()
        };
        match self.write_manifests(root, &vod, true).await {
            Ok(()) => self.since_checkpoint = 0,
            Err(e) => tracing::warn!(error = %e, "recording manifests not checkpointed; retried"),
        }
    }

    /// The manifests of `p` under `root`, in order: every media playlist, then (when asked)
    /// the multivariant playlist, then the MPD. Objects are already stored. The DVR view has
    /// its own names (`store::DVR_PLAYLIST`, `store::DVR_MPD`).
    async fn write_manifests(
        &self,
        root: &Root,
        p: &Presentation,
        write_master: bool,
    ) -> Result<(), PublishError> {
        let (master, mpd) = match p.kind {
            PresentationKind::Dvr { .. } => (store::DVR_PLAYLIST, store::DVR_MPD),
            PresentationKind::Live { .. } | PresentationKind::Vod => {
                (store::MASTER_PLAYLIST, store::MPD)
            }
        };
        for timeline in p.timelines() {
            self.put(
                &root.rendition_file(&timeline.name, p.kind.media_playlist()),
                hls::media_playlist(p, timeline),
            )
            .await?;
        }
        if write_master {
            self.put(&root.file(master), hls::master_playlist(p))
                .await?;
        }
        self.put(
            &root.file(mpd),
            dash::mpd(p, &self.plan.utc_timing_url, Utc::now()),
        )
        .await
    }

    async fn put(&self, path: &Path, bytes: impl Into<Bytes>) -> Result<(), PublishError> {
        Ok(self.up.put(path, bytes.into(), self.up.deadline()).await?)
    }

    /// The broadcast ended: what the backlog still holds gets a last, longer chance; live
    /// manifests get ENDLIST / a static MPD, and the recording (if kept) gets its VOD
    /// manifests. Returns the broadcast's duration in seconds.
    pub async fn finish(&mut self, media_zero: DateTime<Utc>) -> Result<f64, PublishError> {
        if self.presentation.is_none() {
            return Ok(0.0);
        }
        if !self.backlog.is_empty() {
            let last_chance = self.up.budget() * 3;
            self.store_backlog(media_zero, last_chance).await;
            self.give_up_beyond(0);
        }
        let Some(p) = self.presentation.as_mut() else {
            return Ok(0.0);
        };
        p.ended = true;
        let written = self.write_live_manifests(true).await;
        // the ended playlists are in the store (or could not be): stop serving the edge
        self.update_edge();
        self.edge = None;
        written?;
        let Some(p) = &self.presentation else {
            return Ok(0.0);
        };
        let vod = Presentation {
            kind: PresentationKind::Vod,
            ..p.clone()
        };
        if let Some(root) = &self.vod_root {
            self.write_manifests(root, &vod, true).await?;
            // the live picture (ladders that transcode make one) becomes the recording's poster
            let (live, kept) = (self.live_root.file(store::POSTER), root.file(store::POSTER));
            if self.store().head(&live).await.is_ok() {
                if let Err(e) = self.up.copy(&live, &kept, self.up.deadline()).await {
                    tracing::warn!(error = %e, "the recording keeps no poster");
                }
            }
        }
        Ok(vod.duration_secs())
    }

    /// Bytes of every segment the recording lists (every rendition); 0 when not recording.
    pub fn recorded_bytes(&self) -> u64 {
        match (&self.vod_root, &self.presentation) {
            (Some(_), Some(p)) => p
                .timelines()
                .flat_map(|t| t.all().iter().map(|s| s.bytes))
                .sum(),
            _ => 0,
        }
    }

    fn rendition_name(&self, id: TrackId) -> Option<String> {
        let p = self.presentation.as_ref()?;
        match id {
            TrackId::Video(index) => p.videos.get(index),
            TrackId::Audio => p.audio.as_ref(),
        }
        .map(|t| t.name.clone())
    }

    /// When the next deletion is due.
    pub fn next_deletion(&self) -> Option<Instant> {
        self.retention.front().map(|(at, _)| *at)
    }

    /// Deletes every object whose grace period has passed. A failed delete is logged and left
    /// to the sweeper.
    pub async fn delete_due(&mut self, now: Instant) {
        while let Some((at, _)) = self.retention.front() {
            if *at > now {
                break;
            }
            let Some((_, path)) = self.retention.pop_front() else {
                break;
            };
            if let Err(e) = self.store().delete(&path).await {
                if !matches!(e, object_store::Error::NotFound { .. }) {
                    tracing::warn!(object = %path, error = %e, "retention delete failed; the sweeper retries it");
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::media::codec_test_data::AVC_RECORD_320X240;
    use crate::media::{AvcConfig, CodecConfig, TrackInfo, TrackKind};
    use crate::package::TrackSegment;
    use object_store::memory::InMemory;

    fn plan() -> BroadcastPlan {
        BroadcastPlan {
            playback_id: "aaaaaaaaaaaaaaaa".into(),
            recording_id: "rrrrrrrrrrrrrrrr".into(),
            segment_duration: 2.0,
            part_duration: 0.5,
            window: 3,
            dvr_window: None,
            utc_timing_url: "http://localhost/time".into(),
            record: true,
            grace: Duration::from_secs(30),
            backlog: 2,
        }
    }

    fn publisher(store: &Arc<dyn ObjectStore>, plan: BroadcastPlan) -> Publisher {
        Publisher::new(
            Uploader::new(store.clone(), Duration::from_millis(200)),
            plan,
        )
    }

    fn segment(number: u64) -> Segment {
        Segment {
            number,
            tracks: vec![TrackSegment {
                id: TrackId::Video(0),
                start: number * 180_000,
                duration: 180_000,
                timescale: 90_000,
                bytes: Bytes::from(vec![number as u8; 100]),
                samples: 50,
                starts_with_keyframe: true,
                parts: vec![crate::package::PartInfo {
                    duration: 180_000,
                    independent: true,
                }],
            }],
        }
    }

    async fn text(store: &Arc<dyn ObjectStore>, path: &str) -> String {
        let bytes = store
            .get(&Path::from(path))
            .await
            .unwrap()
            .bytes()
            .await
            .unwrap();
        String::from_utf8(bytes.to_vec()).unwrap()
    }

    fn video_init() -> InitSegment {
        let codec =
            CodecConfig::Avc(AvcConfig::parse(Bytes::from_static(AVC_RECORD_320X240)).unwrap());
        InitSegment {
            id: TrackId::Video(0),
            name: "source".into(),
            bytes: crate::package::cmaf::init_segment(&codec).unwrap(),
            info: TrackInfo {
                kind: TrackKind::Video,
                codec,
            },
        }
    }

    #[tokio::test]
    async fn a_stream_that_does_not_record_writes_nothing_under_vod() {
        let store: Arc<dyn ObjectStore> = Arc::new(InMemory::new());
        let plan = BroadcastPlan {
            record: false,
            ..plan()
        };
        let mut publisher = publisher(&store, plan);
        let zero = Utc::now();
        publisher.start(vec![video_init()], zero).await.unwrap();
        for n in 0..3 {
            publisher.publish_segment(segment(n), zero).await.unwrap();
        }
        assert_eq!(publisher.finish(zero).await.unwrap(), 6.0);
        let ended = text(&store, "live/aaaaaaaaaaaaaaaa/source/index.m3u8").await;
        assert!(ended.contains("#EXT-X-ENDLIST"));
        let vod: Vec<_> =
            futures::StreamExt::collect::<Vec<_>>(store.list(Some(&Path::from("vod")))).await;
        assert!(vod.is_empty(), "{vod:?}");
    }

    #[tokio::test]
    async fn window_slides_retention_waits_and_the_recording_keeps_everything() {
        let store: Arc<dyn ObjectStore> = Arc::new(InMemory::new());
        let mut publisher = publisher(&store, plan());
        let zero = Utc::now();
        publisher.start(vec![video_init()], zero).await.unwrap();
        for n in 10..16 {
            publisher.publish_segment(segment(n), zero).await.unwrap();
        }
        let playlist = text(&store, "live/aaaaaaaaaaaaaaaa/source/index.m3u8").await;
        assert!(playlist.contains("#EXT-X-MEDIA-SEQUENCE:13"), "{playlist}");
        assert!(!playlist.contains("12.m4s"));
        // segments that left the window are still there during the grace period …
        publisher.delete_due(Instant::now()).await;
        assert!(store
            .head(&Path::from("live/aaaaaaaaaaaaaaaa/source/10.m4s"))
            .await
            .is_ok());
        // … and gone after it
        publisher
            .delete_due(Instant::now() + Duration::from_secs(3600))
            .await;
        assert!(store
            .head(&Path::from("live/aaaaaaaaaaaaaaaa/source/10.m4s"))
            .await
            .is_err());
        assert!(store
            .head(&Path::from("live/aaaaaaaaaaaaaaaa/source/15.m4s"))
            .await
            .is_ok());

        let duration = publisher.finish(zero).await.unwrap();
        assert_eq!(duration, 12.0);
        let ended = text(&store, "live/aaaaaaaaaaaaaaaa/source/index.m3u8").await;
        assert!(ended.contains("#EXT-X-ENDLIST"));
        assert!(text(&store, "live/aaaaaaaaaaaaaaaa/manifest.mpd")
            .await
            .contains("type=\"static\""));
        let vod = text(&store, "vod/rrrrrrrrrrrrrrrr/source/index.m3u8").await;
        for n in 10..16 {
            assert!(vod.contains(&format!("{n}.m4s")), "{vod}");
            assert!(store
                .head(&Path::from(format!("vod/rrrrrrrrrrrrrrrr/source/{n}.m4s")))
                .await
                .is_ok());
        }
        assert!(text(&store, "vod/rrrrrrrrrrrrrrrr/master.m3u8")
            .await
            .contains("source/index.m3u8"));
    }

    #[tokio::test]
    async fn the_dvr_view_reaches_back_its_window_and_retention_keeps_what_it_lists() {
        let store: Arc<dyn ObjectStore> = Arc::new(InMemory::new());
        // 2 s segments, a live window of 3, a DVR window of 9 s: five segments (10 s)
        let plan = BroadcastPlan {
            dvr_window: Some(9.0),
            record: false,
            ..plan()
        };
        let mut publisher = publisher(&store, plan);
        let zero = Utc::now();
        publisher.start(vec![video_init()], zero).await.unwrap();
        for n in 10..20 {
            publisher.publish_segment(segment(n), zero).await.unwrap();
        }
        let live = text(&store, "live/aaaaaaaaaaaaaaaa/source/index.m3u8").await;
        assert!(live.contains("#EXT-X-MEDIA-SEQUENCE:17"), "{live}");
        let dvr = text(&store, "live/aaaaaaaaaaaaaaaa/source/dvr.m3u8").await;
        let parsed = m3u8_rs::parse_media_playlist_res(dvr.as_bytes()).unwrap();
        let uris: Vec<_> = parsed.segments.iter().map(|s| s.uri.as_str()).collect();
        assert_eq!(uris, ["15.m4s", "16.m4s", "17.m4s", "18.m4s", "19.m4s"]);
        assert_eq!(parsed.media_sequence, 15);
        assert!(!dvr.contains("#EXT-X-PART"), "{dvr}");
        assert!(text(&store, "live/aaaaaaaaaaaaaaaa/dvr.m3u8")
            .await
            .contains("source/dvr.m3u8"));
        let mpd = text(&store, "live/aaaaaaaaaaaaaaaa/dvr.mpd").await;
        assert!(mpd.contains("timeShiftBufferDepth=\"PT10S\""), "{mpd}");
        assert!(!mpd.contains("availabilityTimeOffset"), "{mpd}");
        // what left the DVR view goes after the grace; what it lists stays
        publisher
            .delete_due(Instant::now() + Duration::from_secs(3600))
            .await;
        assert!(
            missing_in_playlist(&store, "live/aaaaaaaaaaaaaaaa/source/dvr.m3u8")
                .await
                .is_empty()
        );
        for gone in 10..15 {
            let path = format!("live/aaaaaaaaaaaaaaaa/source/{gone}.m4s");
            assert!(store.head(&Path::from(path)).await.is_err(), "{gone}");
        }
        publisher.finish(zero).await.unwrap();
        let ended = text(&store, "live/aaaaaaaaaaaaaaaa/source/dvr.m3u8").await;
        assert!(ended.contains("#EXT-X-ENDLIST"), "{ended}");
    }

    #[tokio::test]
    async fn a_new_broadcast_removes_the_last_ones_dvr_view() {
        let store: Arc<dyn ObjectStore> = Arc::new(InMemory::new());
        let zero = Utc::now();
        let with_dvr = BroadcastPlan {
            dvr_window: Some(9.0),
            ..plan()
        };
        let mut first = publisher(&store, with_dvr);
        first.start(vec![video_init()], zero).await.unwrap();
        first.publish_segment(segment(1), zero).await.unwrap();
        first.finish(zero).await.unwrap();
        assert!(text(&store, "live/aaaaaaaaaaaaaaaa/dvr.mpd")
            .await
            .contains("static"));
        let mut second = publisher(&store, plan());
        second.start(vec![video_init()], zero).await.unwrap();
        for name in ["dvr.m3u8", "dvr.mpd", "source/dvr.m3u8"] {
            let path = Path::from(format!("live/aaaaaaaaaaaaaaaa/{name}"));
            assert!(store.head(&path).await.is_err(), "{name}");
        }
    }

    #[tokio::test]
    async fn without_a_dvr_window_no_dvr_view_is_written() {
        let store: Arc<dyn ObjectStore> = Arc::new(InMemory::new());
        let mut publisher = publisher(&store, plan());
        let zero = Utc::now();
        publisher.start(vec![video_init()], zero).await.unwrap();
        publisher.publish_segment(segment(1), zero).await.unwrap();
        for name in ["dvr.m3u8", "dvr.mpd", "source/dvr.m3u8"] {
            let path = Path::from(format!("live/aaaaaaaaaaaaaaaa/{name}"));
            assert!(store.head(&path).await.is_err(), "{name}");
        }
    }

    /// Every URI a media playlist names, and whether the store has it.
    async fn missing_in_playlist(store: &Arc<dyn ObjectStore>, path: &str) -> Vec<String> {
        let playlist = text(store, path).await;
        let dir = path.rsplit_once('/').unwrap().0;
        let mut missing = Vec::new();
        for uri in playlist.lines().filter(|l| l.ends_with(".m4s")) {
            let object = format!("{dir}/{uri}");
            if store.head(&Path::from(object.as_str())).await.is_err() {
                missing.push(object);
            }
        }
        missing
    }

    #[tokio::test]
    async fn a_failing_store_holds_segments_back_catches_up_then_gives_up_and_reports() {
        use object_store::throttle::{ThrottleConfig, ThrottledStore};
        let throttled = Arc::new(ThrottledStore::new(
            InMemory::new(),
            ThrottleConfig::default(),
        ));
        let store: Arc<dyn ObjectStore> = throttled.clone();
        let mut publisher = publisher(&store, plan());
        let playlist = "live/aaaaaaaaaaaaaaaa/source/index.m3u8";
        let zero = Utc::now();
        let numbers = |stored: Vec<Stored>| stored.iter().map(|s| s.number).collect::<Vec<_>>();
        let stall = |on: bool| {
            throttled.config_mut(|c| {
                c.wait_put_per_call = if on {
                    Duration::from_secs(3)
                } else {
                    Duration::ZERO
                }
            })
        };

        publisher.start(vec![video_init()], zero).await.unwrap();
        for n in 0..2 {
            assert_eq!(
                numbers(publisher.publish_segment(segment(n), zero).await.unwrap()),
                [n]
            );
        }
        // the store stops answering in time: segments wait, the manifests stay where they were
        stall(true);
        assert!(publisher
            .publish_segment(segment(2), zero)
            .await
            .unwrap()
            .is_empty());
        assert!(publisher
            .publish_segment(segment(3), zero)
            .await
            .unwrap()
            .is_empty());
        stall(false);
        assert!(text(&store, playlist).await.contains("1.m4s"));
        assert!(!text(&store, playlist).await.contains("2.m4s"));
        // it comes back: the backlog is stored in order and the manifests catch up
        assert_eq!(
            numbers(publisher.publish_segment(segment(4), zero).await.unwrap()),
            [2, 3, 4]
        );
        assert_eq!(publisher.lost(), 0);
        assert!(missing_in_playlist(&store, playlist).await.is_empty());

        // a longer outage: past the backlog of 2, the oldest is given up and counted
        stall(true);
        for n in 5..8 {
            assert!(publisher
                .publish_segment(segment(n), zero)
                .await
                .unwrap()
                .is_empty());
        }
        assert_eq!(publisher.lost(), 1);
        stall(false);
        // the given-up write of segment 5 may have landed after all (a store that timed out
        // can still apply a write): its object must keep its bytes
        let lost_object = Path::from("live/aaaaaaaaaaaaaaaa/source/5.m4s");
        let lost_bytes = segment(5).tracks[0].bytes.clone();
        store
            .put(&lost_object, lost_bytes.clone().into())
            .await
            .unwrap();
        // segments 6, 7, 8 keep their own numbers: 5 is never used again
        assert_eq!(
            numbers(publisher.publish_segment(segment(8), zero).await.unwrap()),
            [6, 7, 8]
        );
        let text_now = text(&store, playlist).await;
        assert!(text_now.contains("#EXT-X-DISCONTINUITY\n"), "{text_now}");
        // media sequence numbers run on without the gap: 6 is the sixth segment listed
        assert!(text_now.contains("#EXT-X-MEDIA-SEQUENCE:5\n"), "{text_now}");
        assert!(
            missing_in_playlist(&store, playlist).await.is_empty(),
            "{text_now}"
        );
        let mpd = text(&store, "live/aaaaaaaaaaaaaaaa/manifest.mpd").await;
        let parsed = dash_mpd_core::parse(&mpd).unwrap();
        // the run before the loss slid out of the window; the run after it is its own Period
        // starting where segment 6 starts (12 s), its numbers counted from 6
        assert_eq!(parsed.periods.len(), 1, "{mpd}");
        assert_eq!(parsed.periods[0].id.as_deref(), Some("6"), "{mpd}");
        assert_eq!(parsed.periods[0].start, Some(Duration::from_secs(12)));
        let template = parsed.periods[0].adaptations[0].representations[0]
            .SegmentTemplate
            .clone()
            .unwrap();
        assert_eq!(template.startNumber, Some(6));
        assert_eq!(template.presentationTimeOffset, Some(6 * 180_000));
        // once the discontinuity leaves the window, the playlist counts it
        publisher.publish_segment(segment(9), zero).await.unwrap();
        let slid = text(&store, playlist).await;
        assert!(slid.contains("#EXT-X-DISCONTINUITY-SEQUENCE:1"), "{slid}");
        assert!(!slid.contains("#EXT-X-DISCONTINUITY\n"), "{slid}");
        // the recording has every listed segment too, and two Periods around the loss, back
        // to back (a recording has no clock to keep; HLS plays it the same)
        publisher.finish(zero).await.unwrap();
        assert!(
            missing_in_playlist(&store, "vod/rrrrrrrrrrrrrrrr/source/index.m3u8")
                .await
                .is_empty()
        );
        let vod_mpd = text(&store, "vod/rrrrrrrrrrrrrrrr/manifest.mpd").await;
        let vod = dash_mpd_core::parse(&vod_mpd).unwrap();
        let starts: Vec<_> = vod
            .periods
            .iter()
            .map(|period| {
                let template = period.adaptations[0].representations[0]
                    .SegmentTemplate
                    .clone()
                    .unwrap();
                (period.start, template.startNumber)
            })
            .collect();
        assert_eq!(
            starts,
            [
                (Some(Duration::ZERO), Some(0)),
                (Some(Duration::from_secs(10)), Some(6))
            ],
            "{vod_mpd}"
        );
        assert_eq!(vod.mediaPresentationDuration, Some(Duration::from_secs(18)));
        // no object ever changed: the late write of segment 5 is still segment 5 …
        let now = store
            .get(&lost_object)
            .await
            .unwrap()
            .bytes()
            .await
            .unwrap();
        assert_eq!(now, lost_bytes);
        // … until the grace after the loss, when it goes like a segment that left the window
        publisher
            .delete_due(Instant::now() + Duration::from_secs(3600))
            .await;
        assert!(store.head(&lost_object).await.is_err());
    }
}
