//! The sweeper: deletes what no running broadcast will. A broadcast deletes the segments that
//! leave its own window (see `Publisher`), but a process that crashed, a node that died, an
//! ended broadcast's last window and recordings past their retention are nobody's. The sweeper
//! runs at start-up and every `retention.sweep_interval` on every node (deletes are
//! idempotent), and it touches nothing younger than `retention.grace`:
//!
//! - `live/{playback_id}/` of a stream not live on any node (neither in the snapshot of live
//!   broadcasts the sweep starts from, nor, checked again just before its objects are listed,
//!   claimed by any node in the database): when its newest manifest is older
//!   than `retention.live_after_end`, everything; otherwise every segment its media playlists
//!   (live window and DVR view) no longer name.
//! - `vod/{recording_id}/`: everything, once the recording ended more than
//!   `retention.vod_days` ago (0 keeps recordings). The recording's row goes with it. Objects
//!   of a recording the database does not know are left alone: a database pointed at another
//!   deployment's bucket must not empty it.
//! - `vod/{clip_id}/`: everything, once the clip was cut more than `retention.clip_days` ago
//!   (0 keeps clips), and the clip's row.
//! - `vod/{recording_id}/` of a recording whose stream was deleted (`deleted_recordings`, written
//!   with the delete): everything, at once. The API does the same right after the delete; the
//!   sweeper finishes what that left (a failed delete, a broadcast that was still finishing) and
//!   forgets the recording once nothing is left and `retention.grace` has passed.

use std::collections::HashSet;
use std::sync::Arc;
use std::time::Duration;

use chrono::{DateTime, Utc};
use futures::{StreamExt, TryStreamExt};
use object_store::path::Path;
use object_store::{ObjectMeta, ObjectStore, ObjectStoreExt};
use tokio_util::sync::CancellationToken;

use super::store::{Root, DVR_MPD, DVR_PLAYLIST, MEDIA_PLAYLIST, MPD};
use crate::db::Db;

#[derive(Debug, thiserror::Error)]
pub enum SweepError {
    #[error("sweeping the store: {0}")]
    Store(#[from] object_store::Error),
    #[error("sweeping: {0}")]
    Db(#[from] crate::db::DbError),
}

/// Start-up delay of the first sweep (longer than other nodes' one-second stats cadence).
pub const FIRST_SWEEP_AFTER: Duration = Duration::from_secs(3);

/// How long things stay (see `config::RetentionSettings`).
#[derive(Debug, Clone)]
pub struct Rules {
    pub grace: Duration,
    pub live_after_end: Duration,
    /// 0: recordings are kept.
    pub vod_days: f64,
    /// 0: clips are kept.
    pub clip_days: f64,
}

/// What one sweep deleted.
#[derive(Debug, Default, Clone, PartialEq)]
pub struct Swept {
    pub objects: u64,
    pub recordings: u64,
    pub clips: u64,
}

/// Sweeps now and then every `interval` until `shutdown`. `live_now()` gives the playback ids
/// any node is broadcasting (asked once per sweep).
pub async fn run(
    store: Arc<dyn ObjectStore>,
    db: Db,
    rules: Rules,
    interval: Duration,
    live_now: impl Fn() -> HashSet<String>,
    shutdown: CancellationToken,
) {
    // The first sweep waits until this node has heard which streams other nodes have live.
    let first = tokio::time::Instant::now() + FIRST_SWEEP_AFTER;
    let mut tick = tokio::time::interval_at(first, interval);
    loop {
        tokio::select! {
            _ = tick.tick() => {}
            _ = shutdown.cancelled() => return,
        }
        match sweep(&store, &db, &rules, &live_now(), Utc::now()).await {
            Ok(swept) if swept != Swept::default() => {
                metrics::counter!("strata_swept_objects_total").increment(swept.objects);
                tracing::info!(
                    objects = swept.objects,
                    recordings = swept.recordings,
                    clips = swept.clips,
                    "sweeper removed leftovers"
                )
            }
            Ok(_) => {}
            Err(e) => tracing::warn!(error = %e, "sweep failed; retried next interval"),
        }
    }
}

/// One sweep, as of `now`.
pub async fn sweep(
    store: &Arc<dyn ObjectStore>,
    db: &Db,
    rules: &Rules,
    live: &HashSet<String>,
    now: DateTime<Utc>,
) -> Result<Swept, SweepError> {
    // a failure here is logged and retried next time; it does not hold back the rest
    let mut swept = remove_deleted_recordings(store, db, rules.grace, now)
        .await
        .unwrap_or_else(|e| {
            tracing::warn!(error = %e, "could not look up deleted recordings; retried next sweep");
            Swept::default()
        });
    let settled = now - chrono::Duration::from_std(rules.grace).unwrap_or_default();
    for prefix in children(store, "live").await? {
        let Some(playback_id) = prefix.filename().map(str::to_string) else {
            continue;
        };
        if live.contains(&playback_id) || claimed(db, &playback_id).await? {
            continue;
        }
        swept.objects += sweep_live(store, &prefix, rules, now, settled).await?;
    }

    if rules.clip_days > 0.0 {
        let cutoff = now.timestamp_millis() - (rules.clip_days * 86_400_000.0) as i64;
        for clip in db.clips_created_before(cutoff).await? {
            swept.objects += remove_recording(store, &clip.id).await?;
            db.delete_clip(&clip.id).await?;
            swept.clips += 1;
        }
    }
    if rules.vod_days <= 0.0 {
        return Ok(swept);
    }
    let cutoff = now.timestamp_millis() - (rules.vod_days * 86_400_000.0) as i64;
    for recording in db.list_recordings(None).await? {
        if recording.ended_at.is_none_or(|ended| ended >= cutoff) {
            continue;
        }
        let objects = list(store, &Root::vod(&recording.id).prefix()).await?;
        swept.objects += delete(store, objects.into_iter().map(|o| o.location)).await;
        if db.delete_recording(&recording.id).await? {
            swept.recordings += 1;
        }
    }
    Ok(swept)
}

/// Deletes every object of the recordings of deleted streams; forgets a recording once it has
/// none left and was deleted more than `grace` before `now` (a broadcast stopped by the delete
/// may still write its last segments and manifests until then).
pub async fn remove_deleted_recordings(
    store: &Arc<dyn ObjectStore>,
    db: &Db,
    grace: Duration,
    now: DateTime<Utc>,
) -> Result<Swept, SweepError> {
    let mut swept = Swept::default();
    let settled = (now - chrono::Duration::from_std(grace).unwrap_or_default()).timestamp_millis();
    for (id, deleted_at) in db.deleted_recordings().await? {
        match remove_recording(store, &id).await {
            Ok(0) if deleted_at < settled => {
                if let Err(e) = db.forget_deleted_recording(&id).await {
                    tracing::warn!(recording = %id, error = %e, "could not forget a deleted recording");
                }
            }
            Ok(0) => {}
            Ok(objects) => {
                swept.objects += objects;
                swept.recordings += 1;
            }
            Err(e) => {
                tracing::warn!(recording = %id, error = %e, "could not remove a deleted recording; retried next sweep")
            }
        }
    }
    Ok(swept)
}

/// Deletes every object under `vod/{id}/` (a recording's or a clip's); returns how many there
/// were.
pub async fn remove_recording(store: &Arc<dyn ObjectStore>, id: &str) -> Result<u64, SweepError> {
    let objects = list(store, &Root::vod(id).prefix()).await?;
    if objects.is_empty() {
        return Ok(0);
    }
    Ok(delete(store, objects.into_iter().map(|o| o.location)).await)
}

/// Whether the stream of `playback_id` is claimed by a node now (a broadcast that started after
/// the sweep's snapshot of live broadcasts).
async fn claimed(db: &Db, playback_id: &str) -> Result<bool, SweepError> {
    let Some(stream) = db.stream_by_playback_id(playback_id).await? else {
        return Ok(false);
    };
    Ok(db.claim_holder(&stream.id).await?.is_some())
}

/// One stream's live objects: everything once its manifests are old, otherwise the segments
/// its playlists no longer name.
async fn sweep_live(
    store: &Arc<dyn ObjectStore>,
    prefix: &Path,
    rules: &Rules,
    now: DateTime<Utc>,
    settled: DateTime<Utc>,
) -> Result<u64, SweepError> {
    let objects = list(store, prefix).await?;
    let newest_manifest = objects
        .iter()
        .filter(|o| is_manifest(&o.location))
        .map(|o| o.last_modified)
        .max();
    let expired = now - chrono::Duration::from_std(rules.live_after_end).unwrap_or_default();
    let old = objects.iter().filter(|o| o.last_modified <= settled);
    if newest_manifest.is_none_or(|newest| newest <= expired) {
        let all: Vec<Path> = old.map(|o| o.location.clone()).collect();
        return Ok(delete(store, all).await);
    }
    let named = named_segments(store, &objects).await;
    let unnamed: Vec<Path> = old
        .filter(|o| o.location.as_ref().ends_with(".m4s") && !named.contains(&o.location))
        .map(|o| o.location.clone())
        .collect();
    Ok(delete(store, unnamed).await)
}

fn is_manifest(path: &Path) -> bool {
    matches!(
        path.filename(),
        Some(MPD) | Some(DVR_MPD) | Some(MEDIA_PLAYLIST) | Some(DVR_PLAYLIST)
    )
}

/// A rendition's media playlist (of the live window or the DVR view): `{root}/{rendition}/…`.
fn is_media_playlist(path: &Path) -> bool {
    matches!(path.filename(), Some(MEDIA_PLAYLIST) | Some(DVR_PLAYLIST)) && path.parts().count() > 3
}

/// Every segment the stored media playlists name. A playlist that cannot be read protects its
/// whole rendition (nothing under it is deleted this time).
async fn named_segments(store: &Arc<dyn ObjectStore>, objects: &[ObjectMeta]) -> HashSet<Path> {
    let mut named = HashSet::new();
    for playlist in objects.iter().filter(|o| is_media_playlist(&o.location)) {
        let dir: Vec<_> = playlist.location.parts().collect();
        let dir = Path::from_iter(dir[..dir.len().saturating_sub(1)].iter().cloned());
        let text = match store.get(&playlist.location).await {
            Ok(r) => r.bytes().await.ok(),
            Err(_) => None,
        };
        let parsed = text.and_then(|t| m3u8_rs::parse_media_playlist_res(&t).ok());
        match parsed {
            Some(p) => named.extend(p.segments.iter().map(|s| dir.clone().join(s.uri.as_str()))),
            None => named.extend(
                objects
                    .iter()
                    .filter(|o| o.location.prefix_matches(&dir))
                    .map(|o| o.location.clone()),
            ),
        }
    }
    named
}

/// The immediate "directories" under `root`.
async fn children(store: &Arc<dyn ObjectStore>, root: &str) -> Result<Vec<Path>, SweepError> {
    Ok(store
        .list_with_delimiter(Some(&Path::from(root)))
        .await?
        .common_prefixes)
}

async fn list(store: &Arc<dyn ObjectStore>, prefix: &Path) -> Result<Vec<ObjectMeta>, SweepError> {
    Ok(store.list(Some(prefix)).try_collect().await?)
}

/// Deletes `paths` (in batches where the store has a bulk delete, as S3 does); returns how many
/// went (a failure is logged and retried next sweep).
async fn delete(store: &Arc<dyn ObjectStore>, paths: impl IntoIterator<Item = Path>) -> u64 {
    let paths: Vec<Result<Path, object_store::Error>> = paths.into_iter().map(Ok).collect();
    let mut results = store.delete_stream(futures::stream::iter(paths).boxed());
    let mut deleted = 0;
    while let Some(result) = results.next().await {
        match result {
            Ok(_) | Err(object_store::Error::NotFound { .. }) => deleted += 1,
            Err(e) => tracing::warn!(error = %e, "sweeper could not delete an object"),
        }
    }
    deleted
}

#[cfg(test)]
mod tests {
    use super::*;
    use object_store::memory::InMemory;

    async fn put(store: &Arc<dyn ObjectStore>, path: &str, body: &str) {
        store
            .put(&Path::from(path), body.to_string().into())
            .await
            .unwrap();
    }

    async fn exists(store: &Arc<dyn ObjectStore>, path: &str) -> bool {
        store.head(&Path::from(path)).await.is_ok()
    }

    use crate::db::scratch as db;

    const PLAYLIST: &str = "#EXTM3U\n#EXT-X-TARGETDURATION:2\n#EXT-X-MEDIA-SEQUENCE:5\n\
        #EXTINF:2,\n5.m4s\n#EXTINF:2,\n6.m4s\n#EXT-X-ENDLIST\n";

    #[tokio::test]
    async fn leftovers_go_named_segments_and_live_streams_stay() {
        let store: Arc<dyn ObjectStore> = Arc::new(InMemory::new());
        let (_dir, db) = db().await;
        let ended = "live/eeeeeeeeeeeeeeee";
        put(&store, &format!("{ended}/source/index.m3u8"), PLAYLIST).await;
        put(&store, &format!("{ended}/manifest.mpd"), "<MPD/>").await;
        // the DVR view names one more (its multivariant playlist is no media playlist)
        let dvr = PLAYLIST.replace("SEQUENCE:5\n", "SEQUENCE:4\n#EXTINF:2,\n4.m4s\n");
        put(&store, &format!("{ended}/source/dvr.m3u8"), &dvr).await;
        put(&store, &format!("{ended}/dvr.m3u8"), "#EXTM3U\n").await;
        for n in 3..8 {
            put(&store, &format!("{ended}/source/{n}.m4s"), "x").await;
        }
        let live = "live/llllllllllllllll";
        put(&store, &format!("{live}/source/1.m4s"), "x").await;
        let rules = Rules {
            grace: Duration::from_secs(30),
            live_after_end: Duration::from_secs(3600),
            vod_days: 0.0,
            clip_days: 0.0,
        };
        let is_live = HashSet::from(["llllllllllllllll".to_string()]);

        // nothing is touched within the grace period
        let swept = sweep(&store, &db, &rules, &is_live, Utc::now())
            .await
            .unwrap();
        assert_eq!(swept.objects, 0);

        // later: what the ended broadcast's playlist no longer names goes
        let later = Utc::now() + chrono::Duration::seconds(60);
        let swept = sweep(&store, &db, &rules, &is_live, later).await.unwrap();
        assert_eq!(swept.objects, 2);
        for n in [3, 7] {
            assert!(!exists(&store, &format!("{ended}/source/{n}.m4s")).await);
        }
        for n in [4, 5, 6] {
            assert!(exists(&store, &format!("{ended}/source/{n}.m4s")).await);
        }
        assert!(exists(&store, &format!("{live}/source/1.m4s")).await);

        // after live_after_end, the ended broadcast's manifests and last window go too
        let much_later = Utc::now() + chrono::Duration::hours(2);
        sweep(&store, &db, &rules, &is_live, much_later)
            .await
            .unwrap();
        assert!(!exists(&store, &format!("{ended}/source/index.m3u8")).await);
        assert!(!exists(&store, &format!("{ended}/source/5.m4s")).await);
        assert!(exists(&store, &format!("{live}/source/1.m4s")).await);
    }

    #[tokio::test]
    async fn a_stream_claimed_after_the_snapshot_is_left_alone() {
        let store: Arc<dyn ObjectStore> = Arc::new(InMemory::new());
        let (_dir, db) = db().await;
        let (stream, _) = db.create_stream("s", "passthrough", true, 0).await.unwrap();
        let root = format!("live/{}", stream.playback_id);
        put(&store, &format!("{root}/source/index.m3u8"), PLAYLIST).await;
        put(&store, &format!("{root}/source/3.m4s"), "x").await;
        let rules = Rules {
            grace: Duration::from_secs(30),
            live_after_end: Duration::from_secs(3600),
            vod_days: 0.0,
            clip_days: 0.0,
        };
        // the snapshot says nothing is live, but a node claimed the stream since
        assert!(db.claim_stream(&stream.id, "node-x", "rec").await.unwrap());
        let much_later = Utc::now() + chrono::Duration::hours(2);
        let swept = sweep(&store, &db, &rules, &HashSet::new(), much_later)
            .await
            .unwrap();
        assert_eq!(swept.objects, 0);
        db.release_claim(&stream.id, "rec").await.unwrap();
        let swept = sweep(&store, &db, &rules, &HashSet::new(), much_later)
            .await
            .unwrap();
        assert_eq!(swept.objects, 2);
    }

    #[tokio::test]
    async fn clips_go_after_their_retention_and_are_kept_without_one() {
        let store: Arc<dyn ObjectStore> = Arc::new(InMemory::new());
        let (_dir, db) = db().await;
        db.create_clip("cccccccccccccccc", "str_s", None, false, "n")
            .await
            .unwrap();
        db.clip_ready("cccccccccccccccc", 0, 10_000).await.unwrap();
        put(&store, "vod/cccccccccccccccc/clip.mp4", "x").await;
        put(&store, "vod/cccccccccccccccc/source/1.m4s", "x").await;
        let mut rules = Rules {
            grace: Duration::from_secs(30),
            live_after_end: Duration::from_secs(3600),
            vod_days: 0.0,
            clip_days: 0.0,
        };
        let in_two_days = Utc::now() + chrono::Duration::days(2);
        let swept = sweep(&store, &db, &rules, &HashSet::new(), in_two_days)
            .await
            .unwrap();
        assert_eq!(swept.clips, 0, "0 keeps clips");
        rules.clip_days = 3.0;
        let swept = sweep(&store, &db, &rules, &HashSet::new(), in_two_days)
            .await
            .unwrap();
        assert_eq!(swept.clips, 0, "younger than its retention");
        rules.clip_days = 1.0;
        let swept = sweep(&store, &db, &rules, &HashSet::new(), in_two_days)
            .await
            .unwrap();
        assert_eq!((swept.clips, swept.objects), (1, 2));
        assert!(!exists(&store, "vod/cccccccccccccccc/clip.mp4").await);
        assert_eq!(db.clip("cccccccccccccccc").await.unwrap(), None);
    }

    /// A stream with one recording, `rrrrrrrrrrrrrrrr`, started.
    async fn recording_stream(db: &Db) -> crate::db::Stream {
        let (stream, _) = db.create_stream("s", "passthrough", true, 0).await.unwrap();
        db.start_session("rrrrrrrrrrrrrrrr", &stream.id, "passthrough", true, "n")
            .await
            .unwrap();
        stream
    }

    #[tokio::test]
    async fn a_deleted_streams_recordings_go_and_are_forgotten_after_the_grace() {
        let store: Arc<dyn ObjectStore> = Arc::new(InMemory::new());
        let (_dir, db) = db().await;
        let stream = recording_stream(&db).await;
        put(&store, "vod/rrrrrrrrrrrrrrrr/source/1.m4s", "x").await;
        put(&store, "vod/rrrrrrrrrrrrrrrr/master.m3u8", "x").await;
        put(&store, "vod/oooooooooooooooo/source/1.m4s", "x").await;
        let recordings = db.delete_stream(&stream.id).await.unwrap();
        assert_eq!(recordings, Some(vec!["rrrrrrrrrrrrrrrr".to_string()]));
        let grace = Duration::from_secs(30);
        let swept = remove_deleted_recordings(&store, &db, grace, Utc::now())
            .await
            .unwrap();
        assert_eq!((swept.objects, swept.recordings), (2, 1));
        assert!(!exists(&store, "vod/rrrrrrrrrrrrrrrr/master.m3u8").await);
        assert!(exists(&store, "vod/oooooooooooooooo/source/1.m4s").await);
        // the broadcast that was stopped by the delete writes once more: still removed
        put(&store, "vod/rrrrrrrrrrrrrrrr/master.m3u8", "late").await;
        remove_deleted_recordings(&store, &db, grace, Utc::now())
            .await
            .unwrap();
        assert!(!exists(&store, "vod/rrrrrrrrrrrrrrrr/master.m3u8").await);
        assert_eq!(db.deleted_recordings().await.unwrap().len(), 1);
        // nothing left and the grace passed: forgotten
        let later = Utc::now() + chrono::Duration::minutes(1);
        remove_deleted_recordings(&store, &db, grace, later)
            .await
            .unwrap();
        assert!(db.deleted_recordings().await.unwrap().is_empty());
    }

    #[tokio::test]
    async fn recordings_expire_after_vod_days_and_unknown_ones_stay() {
        let store: Arc<dyn ObjectStore> = Arc::new(InMemory::new());
        let (_dir, db) = db().await;
        recording_stream(&db).await;
        db.finish_session("rrrrrrrrrrrrrrrr", 4000, None, Some(1), None)
            .await
            .unwrap();
        put(&store, "vod/rrrrrrrrrrrrrrrr/source/1.m4s", "x").await;
        put(&store, "vod/oooooooooooooooo/source/1.m4s", "x").await;
        let mut rules = Rules {
            grace: Duration::from_secs(1),
            live_after_end: Duration::from_secs(3600),
            vod_days: 0.0,
            clip_days: 0.0,
        };
        let later = Utc::now() + chrono::Duration::days(3);
        let none = HashSet::new();
        sweep(&store, &db, &rules, &none, later).await.unwrap();
        // kept forever with vod_days = 0
        assert!(exists(&store, "vod/rrrrrrrrrrrrrrrr/source/1.m4s").await);

        rules.vod_days = 2.0;
        let swept = sweep(&store, &db, &rules, &none, later).await.unwrap();
        assert_eq!(swept.recordings, 1);
        assert!(!exists(&store, "vod/rrrrrrrrrrrrrrrr/source/1.m4s").await);
        assert!(db.list_recordings(None).await.unwrap().is_empty());
        // a recording this database never knew is not this node's to delete
        assert!(exists(&store, "vod/oooooooooooooooo/source/1.m4s").await);
    }
}
