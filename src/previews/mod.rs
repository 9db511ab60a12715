//! Scrub previews of a VOD (a recording, a clip): sprite sheets of thumbnails under
//! `vod/{id}/previews/{sheet}.jpg` and a WebVTT thumbnails track, `vod/{id}/thumbnails.vtt`,
//! that the player shows when the pointer is over its timeline. A live broadcast's DVR view
//! gets them while it runs (`live`).
//!
//! `spawn` makes them in the background once the VOD is complete (a recording after its
//! broadcast ended, a clip once it is ready: neither waits for its previews). `layout` chooses
//! one keyframe every few seconds of the top video rendition; each sheet's keyframes are read
//! from the stored segments (`Fmp4Demuxer`, the parser HLS push ingest uses) and decoded in a
//! process of its own (`child`), one per sheet: forked by the node's previews zygote
//! (`zygote`), or a one-shot `strata previews` when the zygote is busy; under the transcoding
//! worker's limits, at most `SHEET_MEMORY_MB` of address space and `SHEET_CPU_SECS` of CPU
//! time. Sheets are stored first, the track last: a track never names a sheet that is not
//! stored. At most `MAX_CONCURRENT` VODs get previews at once per node; more wait their turn.
//!
//! Memory: one sheet's keyframes at a time, at most `MAX_SHEET_INPUT_BYTES` (a sheet closes
//! early when its keyframes reach it), and one sheet's JPEG of at most `MAX_SHEET_BYTES`.
//! A VOD without video, or whose video does not decode, gets no previews: one log line, and
//! the player shows its timeline without thumbnails.

pub mod child;
pub mod layout;
pub mod live;
pub mod zygote;

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use object_store::{ObjectStore, ObjectStoreExt, PutPayload};
use tokio::sync::Semaphore;

use crate::clips::{self, file, ClipError};
use crate::db::Db;
use crate::ingest::fmp4::Fmp4Demuxer;
use crate::media::{MediaFrame, StreamEvent, TrackInfo, TrackKind};
use crate::publish::store::Root;
use crate::transcode::worker::one_shot::{self, OneShot};
use crate::transcode::worker::wire::{self, ToWorker};
use crate::transcode::worker::WorkerLimits;

/// The thumbnails track's name under a VOD's root.
pub const THUMBNAILS_VTT: &str = "thumbnails.vtt";
/// VODs that get previews at once per node.
pub const MAX_CONCURRENT: usize = 1;
/// Keyframe bytes one sheet reads at most.
pub const MAX_SHEET_INPUT_BYTES: usize = 64 << 20;
/// The largest sheet JPEG taken from a previews process.
pub const MAX_SHEET_BYTES: usize = 8 << 20;
/// A previews process's address space (decoding keyframes up to 4096×2304).
const SHEET_MEMORY_MB: u64 = 1024;
/// A previews process's CPU time, far above what a sheet needs (a test recording's sheet of
/// 18 360p keyframes was made and stored in 0.2 s).
const SHEET_CPU_SECS: u64 = 60;

/// VODs waiting for their turn at most; more get no previews.
pub const MAX_WAITING: usize = 32;
/// Wall-clock time a previews process may take (its CPU time is limited too).
const SHEET_WALL_TIME: Duration = Duration::from_secs(120);
/// How long after its previews are stored a VOD is checked once more for a delete.
const RECHECK_AFTER: Duration = Duration::from_secs(10);
/// How long a store write of a sheet or a track may take.
pub const STORE_WAIT: Duration = Duration::from_secs(30);

static RUNNING: Semaphore = Semaphore::const_new(MAX_CONCURRENT);
static WAITING: AtomicUsize = AtomicUsize::new(0);

#[derive(Debug, thiserror::Error)]
pub enum PreviewError {
    #[error("{0}")]
    Source(#[from] ClipError),
    #[error("the VOD has no video track")]
    NoVideo,
    #[error("a stored segment does not start with a keyframe")]
    NoKeyframe,
    #[error("the previews process: {0}")]
    Process(String),
    #[error("storage: {0}")]
    Store(#[from] object_store::Error),
    #[error("storage did not answer within {STORE_WAIT:?}")]
    StoreTimeout,
}

/// Stores `bytes` at `path` within `STORE_WAIT`.
async fn put(
    store: &Arc<dyn ObjectStore>,
    path: &object_store::path::Path,
    bytes: impl Into<PutPayload>,
) -> Result<(), PreviewError> {
    tokio::time::timeout(STORE_WAIT, store.put(path, bytes.into()))
        .await
        .map_err(|_| PreviewError::StoreTimeout)??;
    Ok(())
}

/// What a VOD is, for the check that it still exists once its previews are stored.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Vod {
    Recording,
    Clip,
}

/// Whether VOD `id` still has its database row (a delete or retention removes it).
async fn still_there(db: &Db, kind: Vod, id: &str) -> Result<bool, crate::db::DbError> {
    Ok(match kind {
        Vod::Recording => db.recording_stream(id).await?.is_some(),
        Vod::Clip => db.clip(id).await?.is_some(),
    })
}

/// Makes the previews of VOD `id` in the background (see the module doc). When
/// `MAX_WAITING` VODs wait their turn already, this one gets none (one warning).
pub fn spawn(store: Arc<dyn ObjectStore>, db: Db, kind: Vod, id: String, limits: WorkerLimits) {
    if WAITING.fetch_add(1, Ordering::SeqCst) >= MAX_WAITING {
        WAITING.fetch_sub(1, Ordering::SeqCst);
        tracing::warn!(vod = %id, "no scrub previews: {MAX_WAITING} VODs wait for theirs");
        return;
    }
    tokio::spawn(async move {
        let turn = RUNNING.acquire().await;
        WAITING.fetch_sub(1, Ordering::SeqCst);
        let Ok(_turn) = turn else {
            return;
        };
        let started = std::time::Instant::now();
        match make(&store, &id, limits).await {
            Ok(thumbnails) => tracing::info!(vod = %id, thumbnails,
                took_ms = started.elapsed().as_millis() as u64, "scrub previews stored"),
            Err(e) => tracing::warn!(vod = %id, error = %e, "no scrub previews"),
        }
        // deleted (the API, retention) while its previews were made: they go too. A delete
        // that listed the VOD's objects just before they were stored ends moments later: asked
        // again after `RECHECK_AFTER`.
        for wait in [Duration::ZERO, RECHECK_AFTER] {
            tokio::time::sleep(wait).await;
            match still_there(&db, kind, &id).await {
                Ok(true) => continue,
                Ok(false) => {}
                Err(e) => {
                    tracing::warn!(vod = %id, error = %e, "cannot tell whether a VOD was deleted");
                    return;
                }
            }
            if let Err(e) = crate::publish::sweep::remove_recording(&store, &id).await {
                tracing::warn!(vod = %id, error = %e, "a deleted VOD's previews are left");
            }
            return;
        }
    });
}

/// Makes and stores the sheets and the track of VOD `id`; returns how many thumbnails it has.
pub async fn make(
    store: &Arc<dyn ObjectStore>,
    id: &str,
    limits: WorkerLimits,
) -> Result<usize, PreviewError> {
    let root = Root::vod(id);
    let (video, _) = file::main_renditions(store, &root).await?;
    let listed = file::listed_in(store, &root, &video).await?;
    let (init, _, _) = file::init_of(store, &root, &video.name).await?;
    let mut demuxer = Fmp4Demuxer::new();
    let track = demuxer
        .init(&init)
        .map_err(|e| ClipError::Media(e.to_string()))?
        .into_iter()
        .find_map(|event| match event {
            StreamEvent::Track(info) if info.kind == TrackKind::Video => Some(info),
            _ => None,
        })
        .ok_or(PreviewError::NoVideo)?;
    let durations: Vec<f64> = listed.iter().map(|s| s.duration_secs).collect();
    let tiles = layout::choose(&durations);
    let limits = sheet_limits(limits);
    let mut cues = Vec::new();
    let mut next = 0;
    let mut sheet = 0;
    while next < tiles.len() {
        // this sheet's keyframes, as many as fit
        let mut keyframes = Vec::new();
        let mut bytes = 0;
        while next < tiles.len() && keyframes.len() < layout::TILES_PER_SHEET {
            let number = listed[tiles[next].segment].number;
            let segment = clips::get(store, &root.segment(&video.name, number)).await?;
            let frame = first_keyframe(&demuxer, &segment)?;
            bytes += frame.data.len();
            if !keyframes.is_empty() && bytes > MAX_SHEET_INPUT_BYTES {
                break;
            }
            keyframes.push(frame);
            next += 1;
        }
        let count = keyframes.len();
        let input = sheet_input(&track, keyframes)?;
        let label = id.to_string();
        let made = tokio::task::spawn_blocking(move || run_sheet(limits, &label, &input))
            .await
            .map_err(|e| PreviewError::Process(e.to_string()))??;
        if made.keyframes != count {
            return Err(PreviewError::Process(format!(
                "it read {} of {count} keyframes",
                made.keyframes
            )));
        }
        put(store, &root.file(&layout::sheet_name(sheet)), made.jpeg).await?;
        let first = next - count;
        for (index, tile) in tiles[first..next].iter().enumerate() {
            let (x, y) = layout::region(index, made.tile.0, made.tile.1);
            cues.push(layout::Cue {
                start_secs: tile.start_secs,
                end_secs: tile.end_secs,
                sheet,
                x,
                y,
                width: made.tile.0,
                height: made.tile.1,
            });
        }
        sheet += 1;
    }
    if cues.is_empty() {
        return Err(PreviewError::NoVideo);
    }
    put(store, &root.file(THUMBNAILS_VTT), layout::vtt(&cues)).await?;
    Ok(cues.len())
}

/// Whether `path` is a sheet under `root` (`{root}/previews/{n}.jpg`; a rendition may be
/// called `previews` too, but holds no `.jpg`).
pub fn is_sheet(root: &Root, path: &object_store::path::Path) -> bool {
    let Some(name) = path.filename() else {
        return false;
    };
    let numbered = name
        .strip_suffix(".jpg")
        .is_some_and(|n| !n.is_empty() && n.bytes().all(|b| b.is_ascii_digit()));
    numbered && *path == root.file(&format!("{}/{name}", layout::SHEET_DIR))
}

/// A previews process's limits: the transcoding worker's, at most `SHEET_MEMORY_MB` of
/// address space, and `SHEET_CPU_SECS` of CPU time.
fn sheet_limits(limits: WorkerLimits) -> WorkerLimits {
    WorkerLimits {
        memory_mb: match limits.memory_mb {
            0 => SHEET_MEMORY_MB,
            mb => mb.min(SHEET_MEMORY_MB),
        },
        cpu_secs: SHEET_CPU_SECS,
        ..limits
    }
}

/// The keyframe a segment starts with, as a copy of its own (the demuxer's frames are views
/// into the segment, which is not kept).
fn first_keyframe(demuxer: &Fmp4Demuxer, segment: &Bytes) -> Result<MediaFrame, PreviewError> {
    let events = demuxer
        .segment(segment)
        .map_err(|e| ClipError::Media(e.to_string()))?;
    let mut frame = events
        .into_iter()
        .find_map(|event| match event {
            StreamEvent::Frame(frame) if frame.kind == TrackKind::Video => Some(frame),
            _ => None,
        })
        .filter(|frame| frame.sync)
        .ok_or(PreviewError::NoKeyframe)?;
    frame.data = Bytes::copy_from_slice(&frame.data);
    Ok(frame)
}

/// What a previews process reads: the track, then the keyframes.
fn sheet_input(track: &TrackInfo, keyframes: Vec<MediaFrame>) -> Result<Vec<u8>, PreviewError> {
    let encode = |event| {
        wire::encode_to_worker(&ToWorker::Event(event))
            .map_err(|e| PreviewError::Process(e.to_string()))
    };
    let mut input = encode(StreamEvent::Track(track.clone()))?;
    for frame in keyframes {
        input.extend(encode(StreamEvent::Frame(frame))?);
    }
    Ok(input)
}

/// A sheet as a previews process made it.
#[derive(Debug)]
pub struct SheetMade {
    /// A thumbnail's width and height.
    pub tile: (u32, u32),
    /// How many keyframes it read (one place each).
    pub keyframes: usize,
    pub jpeg: Vec<u8>,
}

/// Makes one sheet of `input` in a child of the node's previews zygote, or in a one-shot
/// `strata previews` process when the zygote is busy or unavailable (blocking: call off the
/// runtime).
fn run_sheet(limits: WorkerLimits, label: &str, input: &[u8]) -> Result<SheetMade, PreviewError> {
    match zygote::run(limits, input) {
        Some(Ok((0, output))) => return parse_sheet(&output),
        Some(Ok((zygote::KILLED, _))) => {
            return Err(PreviewError::Process(
                "it was killed (too long, too much output, or a signal)".into(),
            ))
        }
        Some(Ok((status, _))) => {
            return Err(PreviewError::Process(format!(
                "it ended with exit status: {status}"
            )))
        }
        Some(Err(e)) => {
            tracing::warn!(vod = %label, error = %e, "the previews zygote failed; it is started again");
        }
        None => {}
    }
    let job = OneShot {
        limits,
        args: &["previews", label],
        wall_time: SHEET_WALL_TIME,
        max_output: MAX_SHEET_BYTES + 16,
    };
    let output = one_shot::run(job, input).map_err(|e| PreviewError::Process(e.to_string()))?;
    parse_sheet(&output)
}

/// Checks a previews process's output (it decoded hostile bytes: its output is hostile too).
pub fn parse_sheet(output: &[u8]) -> Result<SheetMade, PreviewError> {
    let bad = |why: &str| PreviewError::Process(format!("its output {why}"));
    if output.len() > MAX_SHEET_BYTES + 16 {
        return Err(bad("is too large"));
    }
    let (header, jpeg) = output
        .split_at_checked(16)
        .ok_or_else(|| bad("is truncated"))?;
    let field = |i: usize| {
        let mut b = [0u8; 4];
        b.copy_from_slice(&header[i * 4..i * 4 + 4]);
        u32::from_be_bytes(b)
    };
    let (width, height, keyframes) = (field(0), field(1), field(3) as usize);
    let fits =
        (2..=layout::TILE_WIDTH).contains(&width) && (2..=8 * layout::TILE_WIDTH).contains(&height);
    if !fits || keyframes > layout::TILES_PER_SHEET || !jpeg.starts_with(&[0xFF, 0xD8]) {
        return Err(bad("is not a sheet"));
    }
    Ok(SheetMade {
        tile: (width, height),
        keyframes,
        jpeg: jpeg.to_vec(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sheets_are_told_from_a_rendition_called_previews() {
        let root = Root::live("abcdefghijklmnop");
        let path = |p: &str| object_store::path::Path::from(p);
        assert!(is_sheet(
            &root,
            &path("live/abcdefghijklmnop/previews/12.jpg")
        ));
        for not in [
            "live/abcdefghijklmnop/previews/12.m4s",
            "live/abcdefghijklmnop/previews/init.mp4",
            "live/abcdefghijklmnop/previews/x.jpg",
            "live/abcdefghijklmnop/poster.jpg",
            "live/other0000000000/previews/12.jpg",
        ] {
            assert!(!is_sheet(&root, &path(not)), "{not}");
        }
    }

    #[test]
    fn a_sheets_output_is_checked_before_it_is_stored() {
        let mut good = Vec::new();
        for v in [160u32, 90, 3, 3] {
            good.extend(v.to_be_bytes());
        }
        good.extend([0xFF, 0xD8, 0xFF, 0xD9]);
        let made = parse_sheet(&good).unwrap();
        assert_eq!(
            (made.tile, made.keyframes, made.jpeg.len()),
            ((160, 90), 3, 4)
        );
        assert!(parse_sheet(&good[..10]).is_err());
        let mut wide = good.clone();
        wide[..4].copy_from_slice(&4000u32.to_be_bytes());
        assert!(parse_sheet(&wide).is_err());
        let mut many = good.clone();
        many[12..16].copy_from_slice(&1000u32.to_be_bytes());
        assert!(parse_sheet(&many).is_err());
        let mut not_jpeg = good.clone();
        not_jpeg[16] = 0;
        assert!(parse_sheet(&not_jpeg).is_err());
    }
}
