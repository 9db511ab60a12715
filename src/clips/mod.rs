//! Clips: a range of a live broadcast (its DVR view, or its live window when it has none) or of
//! a recording, kept as a VOD of its own under `vod/{clip_id}/` — HLS, DASH and a downloadable
//! MP4 — made from the stored segments without re-encoding.
//!
//! A clip is cut on segment boundaries: it holds every segment the range overlaps on the lead
//! rendition (`cut`), so it starts on the keyframe at or before the range's start and is at
//! most about one segment (one GOP at the recommended keyframe interval) longer at each end.
//! Each rendition's init segment and segments are copied (read and written, so it works on
//! every store), their timing read from the segments themselves, and the manifests written by
//! the same writers as a recording's. The MP4 (`mp4`) is written last, streamed through a
//! multipart upload, so a clip's size never sits in memory. The clip is `ready` once
//! everything is stored; anything missing on the way (a segment retention removed meanwhile, a
//! range outside what is stored) makes it `failed` with the reason. Its scrub previews
//! (`previews`) are made after it is ready.
//!
//! At most `MAX_CONCURRENT` clips are made at once; more are refused (the API answers 503), so
//! a burst of requests cannot take the node's memory or store bandwidth.

pub mod cut;
pub mod file;
pub mod mp4;
pub mod precise;

use std::sync::Arc;

use bytes::Bytes;
use chrono::{DateTime, Utc};
use object_store::path::Path;
use object_store::{ObjectStore, ObjectStoreExt, WriteMultipart};
use tokio::sync::Semaphore;

use crate::db::clips::Clip;
use crate::db::Db;
use crate::ingest::fmp4::Fmp4Demuxer;
use crate::manifest::{dash, hls, Presentation, PresentationKind, SegmentEntry, Timeline};
use crate::media::{StreamEvent, TrackKind};
use crate::publish::store::{self, Root};
use crate::transcode::WorkerLimits;
use crate::webhooks::Webhooks;

/// The longest clip: ten minutes.
pub const MAX_CLIP_SECS: f64 = 600.0;
/// Clips made at once per node.
pub const MAX_CONCURRENT: usize = 2;
/// Recording downloads (`/vod/{id}/recording.mp4`) sent at once per node.
pub const MAX_DOWNLOADS: usize = 8;
/// The downloadable file's name under the clip's root.
pub const MP4_FILE: &str = "clip.mp4";

#[derive(Debug, thiserror::Error)]
pub enum ClipError {
    #[error("the source cannot be read: {0}")]
    Source(String),
    #[error("{0}")]
    Range(String),
    #[error("a stored segment is not what Strata writes: {0}")]
    Media(String),
    #[error("re-encoding the clip's first or last frames failed: {0}")]
    Edge(String),
    #[error("storage: {0}")]
    Store(#[from] object_store::Error),
}

/// What to cut.
#[derive(Debug, Clone, PartialEq)]
pub enum ClipRange {
    /// The last seconds before the live edge (the end of the newest stored segment).
    Last(f64),
    /// From one wall clock to another.
    Between(DateTime<Utc>, DateTime<Utc>),
}

/// Where the segments come from.
#[derive(Debug, Clone, PartialEq)]
pub enum ClipSource {
    /// A live (or just ended) broadcast: `live/{playback_id}/`, its DVR view when it has one.
    Live { playback_id: String },
    /// A recording: `vod/{recording_id}/` (checkpointed while its broadcast runs).
    Recording { recording_id: String },
}

/// A clip that was made.
#[derive(Debug, Clone, PartialEq)]
pub struct Made {
    pub starts_at: DateTime<Utc>,
    pub duration_secs: f64,
}

/// The manifest and file URLs of clip `id` under `public_url`.
pub fn urls(public_url: &str, id: &str) -> (String, String, String) {
    (
        format!("{public_url}/vod/{id}/{}", store::MASTER_PLAYLIST),
        format!("{public_url}/vod/{id}/{}", store::MPD),
        format!("{public_url}/vod/{id}/{MP4_FILE}"),
    )
}

/// Makes clips in the background, at most `MAX_CONCURRENT` at once.
pub struct Clipper {
    store: Arc<dyn ObjectStore>,
    db: Db,
    webhooks: Webhooks,
    /// This node: its pending clips are failed when it restarts.
    node_id: String,
    slots: Arc<Semaphore>,
    downloads: Arc<Semaphore>,
    /// What the `on_clip_ready` payload shows, given the finished clip.
    describe: Box<dyn Fn(&Clip) -> serde_json::Value + Send + Sync>,
    /// The limits a ready clip's scrub previews are made under (`previews`).
    previews: WorkerLimits,
}

/// Every slot is making a clip.
#[derive(Debug, thiserror::Error)]
#[error("{MAX_CONCURRENT} clips are being made; try again in a few seconds")]
pub struct Busy;

impl Clipper {
    pub fn new(
        store: Arc<dyn ObjectStore>,
        db: Db,
        webhooks: Webhooks,
        node_id: String,
        previews: WorkerLimits,
        describe: impl Fn(&Clip) -> serde_json::Value + Send + Sync + 'static,
    ) -> Self {
        Self {
            store,
            db,
            webhooks,
            node_id,
            previews,
            slots: Arc::new(Semaphore::new(MAX_CONCURRENT)),
            downloads: Arc::new(Semaphore::new(MAX_DOWNLOADS)),
            describe: Box::new(describe),
        }
    }

    /// This node, which makes the clips it is asked for.
    pub fn node_id(&self) -> &str {
        &self.node_id
    }

    /// At start-up: the clips this node was making when it stopped are failed and what they
    /// stored is removed (nobody else finishes them).
    pub async fn recover(&self) {
        match self.db.fail_pending_clips(&self.node_id).await {
            Ok(ids) => {
                for id in ids {
                    tracing::warn!(clip = %id, "a clip left unfinished by a restart failed");
                    if let Err(e) = crate::publish::sweep::remove_recording(&self.store, &id).await
                    {
                        tracing::warn!(clip = %id, error = %e, "its objects are left");
                    }
                }
            }
            Err(e) => tracing::warn!(error = %e, "could not look for unfinished clips"),
        }
    }

    /// A slot for one clip, if one is free.
    pub fn reserve(&self) -> Result<tokio::sync::OwnedSemaphorePermit, Busy> {
        self.slots.clone().try_acquire_owned().map_err(|_| Busy)
    }

    /// A slot for one recording download, if one is free (held until the response is sent).
    pub fn reserve_download(&self) -> Option<tokio::sync::OwnedSemaphorePermit> {
        self.downloads.clone().try_acquire_owned().ok()
    }

    /// Makes `clip` (already recorded as pending) in the background, in `slot`; records and
    /// announces the outcome.
    pub fn start(
        self: &Arc<Self>,
        clip: Clip,
        source: ClipSource,
        range: ClipRange,
        slot: tokio::sync::OwnedSemaphorePermit,
    ) {
        let me = self.clone();
        tokio::spawn(async move {
            let started = std::time::Instant::now();
            let precise = clip.precise.then_some(me.previews);
            let made = make(&me.store, &source, &range, &clip.id, precise).await;
            drop(slot);
            let finished = match &made {
                Ok(made) => {
                    tracing::info!(clip = %clip.id, duration_secs = made.duration_secs,
                        took_ms = started.elapsed().as_millis() as u64, "clip ready");
                    let duration_ms = (made.duration_secs * 1000.0).round() as i64;
                    // the clip is ready without them; they follow
                    crate::previews::spawn(
                        me.store.clone(),
                        me.db.clone(),
                        crate::previews::Vod::Clip,
                        clip.id.clone(),
                        me.previews,
                    );
                    me.db
                        .clip_ready(&clip.id, made.starts_at.timestamp_millis(), duration_ms)
                        .await
                }
                Err(e) => {
                    tracing::warn!(clip = %clip.id, error = %e, "clip failed");
                    // what was stored of it goes; the row says why
                    if let Err(e) =
                        crate::publish::sweep::remove_recording(&me.store, &clip.id).await
                    {
                        tracing::warn!(clip = %clip.id, error = %e, "a failed clip's objects are left");
                    }
                    me.db.clip_failed(&clip.id, &e.to_string()).await
                }
            };
            match finished {
                Ok(Some(clip)) => me
                    .webhooks
                    .clip_finished(made.is_ok(), (me.describe)(&clip)),
                Ok(None) => {
                    // deleted while it was made: what it stored goes too
                    tracing::info!(clip = %clip.id, "the clip was deleted while it was made");
                    if let Err(e) =
                        crate::publish::sweep::remove_recording(&me.store, &clip.id).await
                    {
                        tracing::warn!(clip = %clip.id, error = %e, "a deleted clip's objects are left");
                    }
                }
                Err(e) => {
                    tracing::error!(clip = %clip.id, error = %e, "could not record a clip's outcome")
                }
            }
        });
    }
}

/// The largest stored object a clip or download reads (a playlist of a day-long DVR view is a
/// few MB, a segment a few MB at most): anything larger is not what Strata wrote.
pub const MAX_OBJECT_BYTES: u64 = 64 << 20;

pub(crate) async fn get(store: &Arc<dyn ObjectStore>, path: &Path) -> Result<Bytes, ClipError> {
    match store.get(path).await {
        Ok(result) if result.meta.size > MAX_OBJECT_BYTES => Err(ClipError::Source(format!(
            "{path} is {} bytes, more than a clip reads",
            result.meta.size
        ))),
        Ok(result) => Ok(result.bytes().await?),
        Err(object_store::Error::NotFound { .. }) => Err(ClipError::Source(format!(
            "{path} is not stored (any more)"
        ))),
        Err(e) => Err(e.into()),
    }
}

/// The source's root and its multivariant playlist.
async fn source_manifest(
    store: &Arc<dyn ObjectStore>,
    source: &ClipSource,
) -> Result<(Root, Bytes), ClipError> {
    match source {
        ClipSource::Live { playback_id } => {
            let root = Root::live(playback_id);
            // the DVR view reaches back furthest; without one, the live window
            let dvr = get(store, &root.file(store::DVR_PLAYLIST)).await;
            let master =
                match dvr {
                    Ok(master) => master,
                    Err(ClipError::Source(_)) => get(store, &root.file(store::MASTER_PLAYLIST))
                        .await
                        .map_err(|_| ClipError::Range("the stream has nothing stored".into()))?,
                    Err(e) => return Err(e),
                };
            Ok((root, master))
        }
        ClipSource::Recording { recording_id } => {
            let root = Root::vod(recording_id);
            let master = get(store, &root.file(store::MASTER_PLAYLIST))
                .await
                .map_err(|_| ClipError::Range("the recording has nothing stored yet".into()))?;
            Ok((root, master))
        }
    }
}

/// Makes clip `id` from `source`: its objects under `vod/{id}/`. `precise`: the limits its
/// edges are re-encoded under (`precise`), or `None` for a clip cut on segment boundaries.
pub async fn make(
    store: &Arc<dyn ObjectStore>,
    source: &ClipSource,
    range: &ClipRange,
    id: &str,
    precise: Option<WorkerLimits>,
) -> Result<Made, ClipError> {
    let (root, master) = source_manifest(store, source).await?;
    let renditions = cut::renditions(&cut::parse_master(&master)?)?;
    let lead = &renditions[0];
    let listed = cut::listed(&get(store, &root.rendition_file(&lead.name, &lead.playlist)).await?)?;
    let chosen = match precise {
        Some(_) => cut::covering_with(&listed, range, chrono::Duration::zero())?,
        None => cut::covering(&listed, range)?,
    };
    let window = match precise {
        Some(_) => Some(media_window(store, &root, lead, &listed, &chosen, range).await?),
        None => None,
    };
    let clip = Root::vod(id);
    let mut videos = Vec::new();
    let mut audio = None;
    let mut starts_at = chosen[0].starts_at;
    for (r, rendition) in renditions.iter().enumerate() {
        let init = get(
            store,
            &root.rendition_file(&rendition.name, store::INIT_SEGMENT),
        )
        .await?;
        let mut demuxer = Fmp4Demuxer::new();
        let info = demuxer
            .init(&init)
            .map_err(|e| ClipError::Media(e.to_string()))?
            .into_iter()
            .find_map(|event| match event {
                StreamEvent::Track(info) => Some(info),
                _ => None,
            })
            .ok_or_else(|| ClipError::Media(format!("{} has no track", rendition.name)))?;
        let default_duration = trex_default_duration(&init);
        // a precise clip's video edges get parameter set ids of their own
        let edge_ids = match (window, info.kind) {
            (Some(_), TrackKind::Video) => {
                let avc = precise::spliceable(&info)?;
                precise::free_ids(avc, 2).ok_or_else(|| {
                    ClipError::Range(
                        "the stored H.264 has no room for two more parameter sets".into(),
                    )
                })?
            }
            _ => Vec::new(),
        };
        let mut parameter_sets = Vec::new();
        // a rendition may lack a number the lead has (its encoder gave up on that segment,
        // audio that started late): it gets the ones it has
        let own = rendition_numbers(store, &root, rendition).await?;
        let mut timeline = Timeline::new(rendition.name.clone(), info.kind, info.codec.clone());
        let last = chosen.len() - 1;
        let mut written = 0usize;
        for (i, segment) in chosen.iter().enumerate() {
            if !own.contains(&segment.number) {
                continue;
            }
            let from = root.segment(&rendition.name, segment.number);
            let bytes = get(store, &from).await?;
            let mut wall_clock = segment.starts_at;
            let (bytes, start, duration, samples) = match window {
                Some(window) if i == 0 || i == last => {
                    let job = precise::EdgeJob {
                        demuxer: demuxer.clone(),
                        segment: bytes,
                        default_duration,
                        codec: info.codec.clone(),
                        window,
                        // only `mfhd`: its numbers need not be the segment's
                        sequence: (segment.number & u64::from(u32::MAX)) as u32,
                        video: (
                            precise.unwrap_or_default(),
                            format!("{id}-{}", rendition.name),
                            // the last edge's sets are not the first's
                            edge_ids
                                .get(usize::from(i == last && i > 0))
                                .copied()
                                .unwrap_or_default(),
                        ),
                    };
                    let made = tokio::task::spawn_blocking(move || precise::make_edge(job))
                        .await
                        .map_err(|e| ClipError::Edge(e.to_string()))??;
                    // an edge none of whose frames is in the range is left out
                    let Some(edge) = made else { continue };
                    parameter_sets.extend(edge.parameter_sets);
                    wall_clock +=
                        chrono::Duration::milliseconds((edge.skipped_secs * 1000.0).round() as i64);
                    let bytes = Bytes::from(edge.segment);
                    (bytes, edge.start, edge.duration, edge.samples)
                }
                _ => {
                    let (start, duration, samples) = mp4::segment_timing(&bytes, default_duration)?;
                    (bytes, start, duration, samples)
                }
            };
            if r == 0 && written == 0 {
                starts_at = wall_clock;
            }
            written += 1;
            let size = bytes.len() as u64;
            store
                .put(&clip.segment(&rendition.name, segment.number), bytes.into())
                .await?;
            timeline.push(SegmentEntry {
                number: segment.number,
                start,
                duration,
                wall_clock,
                bytes: size,
                samples,
                discontinuity: i > 0 && segment.discontinuity,
                parts: Vec::new(),
            });
        }
        if r == 0 && written == 0 {
            return Err(ClipError::Range(
                "the range is shorter than one frame".into(),
            ));
        }
        // written after the edges: a precise clip's holds their parameter sets too
        let init = if parameter_sets.is_empty() {
            init
        } else {
            Bytes::from(precise::with_parameter_sets(&init, &parameter_sets)?)
        };
        store
            .put(
                &clip.rendition_file(&rendition.name, store::INIT_SEGMENT),
                init.into(),
            )
            .await?;
        match info.kind {
            TrackKind::Video => videos.push(timeline),
            TrackKind::Audio => audio = Some(timeline),
        }
    }
    if videos.is_empty() {
        return Err(ClipError::Source("it has no video rendition".into()));
    }
    let segment_secs = videos[0].longest_segment_secs();
    let mut p = Presentation {
        kind: PresentationKind::Vod,
        availability_start: starts_at,
        target_duration: segment_secs.round().max(1.0) as u64,
        segment_duration: segment_secs,
        part_duration: None,
        videos,
        audio,
        ended: true,
    };
    p.fit_target_duration();
    for timeline in p.timelines() {
        let text = hls::media_playlist(&p, timeline);
        store
            .put(
                &clip.rendition_file(&timeline.name, store::MEDIA_PLAYLIST),
                text.into(),
            )
            .await?;
    }
    store
        .put(
            &clip.file(store::MASTER_PLAYLIST),
            hls::master_playlist(&p).into(),
        )
        .await?;
    store
        .put(&clip.file(store::MPD), dash::mpd(&p, "", Utc::now()).into())
        .await?;
    let duration_secs = p.duration_secs();
    write_mp4(store, &clip).await?;
    // the picture of the source, when it has one, is the clip's poster
    let poster = root.file(store::POSTER);
    if store.head(&poster).await.is_ok() {
        store.copy(&poster, &clip.file(store::POSTER)).await?;
    }
    Ok(Made {
        starts_at,
        duration_secs,
    })
}

/// A precise clip's range in media seconds: its wall clocks mapped on the lead rendition's
/// first chosen segment, whose program date time is the presentation time of its first frame.
async fn media_window(
    store: &Arc<dyn ObjectStore>,
    root: &Root,
    lead: &cut::SourceRendition,
    listed: &[cut::Listed],
    chosen: &[cut::Listed],
    range: &ClipRange,
) -> Result<precise::Window, ClipError> {
    let (from, to) = cut::bounds(listed, range)?;
    let first = &chosen[0];
    let init = get(store, &root.rendition_file(&lead.name, store::INIT_SEGMENT)).await?;
    let mut demuxer = Fmp4Demuxer::new();
    let tracks = demuxer
        .init(&init)
        .map_err(|e| ClipError::Media(e.to_string()))?;
    let timescale = tracks
        .iter()
        .find_map(|event| match event {
            StreamEvent::Track(info) => Some(info.codec.timescale()),
            _ => None,
        })
        .ok_or_else(|| ClipError::Media(format!("{} has no track", lead.name)))?;
    let segment = get(store, &root.segment(&lead.name, first.number)).await?;
    let default_duration = trex_default_duration(&init);
    let shown = tokio::task::spawn_blocking(move || {
        let (frames, _) = precise::frames_of(&demuxer, &segment, default_duration, timescale)?;
        precise::first_shown_secs(&frames)
            .ok_or_else(|| ClipError::Media("a segment without frames".into()))
    })
    .await
    .map_err(|e| ClipError::Media(e.to_string()))??;
    let secs =
        |t: DateTime<Utc>| (t - first.starts_at).num_microseconds().unwrap_or(0) as f64 / 1e6;
    Ok(precise::Window {
        from_secs: shown + secs(from),
        to_secs: shown + secs(to),
    })
}

/// The segment numbers `rendition`'s own media playlist lists.
async fn rendition_numbers(
    store: &Arc<dyn ObjectStore>,
    root: &Root,
    rendition: &cut::SourceRendition,
) -> Result<std::collections::HashSet<u64>, ClipError> {
    let playlist = get(
        store,
        &root.rendition_file(&rendition.name, &rendition.playlist),
    )
    .await?;
    Ok(cut::listed(&playlist)?
        .into_iter()
        .map(|s| s.number)
        .collect())
}

/// The `trex` default sample duration of an init segment's first track (0 when it has none).
pub(crate) fn trex_default_duration(init: &[u8]) -> u32 {
    use mp4_atom::Decode;
    crate::ingest::fmp4::boxes(init)
        .ok()
        .and_then(|b| b.into_iter().find(|b| &b.kind == b"moov"))
        .and_then(|b| mp4_atom::Moov::decode(&mut &init[b.start..b.end]).ok())
        .and_then(|moov| moov.mvex)
        .and_then(|mvex| mvex.trex.first().map(|t| t.default_sample_duration))
        .unwrap_or(0)
}

/// `clip.mp4`: the clip's top video rendition and its audio (`file`), segment by segment,
/// through a multipart upload (one segment in memory at a time).
async fn write_mp4(store: &Arc<dyn ObjectStore>, clip: &Root) -> Result<(), ClipError> {
    let source = file::Mp4Source::open(store, clip).await?;
    let upload = store.put_multipart(&clip.file(MP4_FILE)).await?;
    let mut out = WriteMultipart::new(upload);
    out.write(&source.header);
    let mut sequence = 0;
    for index in 0..source.len() {
        match source.fragment(store, index, &mut sequence).await {
            Ok(bytes) => out.write(&bytes),
            Err(e) => {
                let _ = out.abort().await;
                return Err(e);
            }
        }
    }
    out.finish().await?;
    Ok(())
}
