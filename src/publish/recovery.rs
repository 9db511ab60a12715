//! Recordings a crashed process left behind, finished at the next start.
//!
//! While a broadcast runs, its recording's manifests are checkpointed as a finished VOD of
//! what is stored so far (`Publisher`, every `CHECKPOINT_EVERY` segments). When the process
//! dies (`kill -9`, power loss), the database still says the session is live and the recording
//! unfinished. At start-up, before the node ends its orphaned sessions, each such recording is
//! finished from its last checkpoint: its duration is read back from the stored media playlist
//! (with m3u8-rs), the session and recording are ended with it, and `on_recording_ready` (and
//! `on_unpublish`) are sent like after any broadcast. A recording that never reached its first
//! checkpoint has nothing playable: its row and objects are removed.

use std::sync::Arc;

use futures::TryStreamExt;
use object_store::path::Path;
use object_store::{ObjectStore, ObjectStoreExt};

use super::store::{Root, MASTER_PLAYLIST, MEDIA_PLAYLIST};
use crate::db::{Db, DbError};
use crate::events::Ended;
use crate::webhooks::Webhooks;

#[derive(Debug, thiserror::Error)]
pub enum RecoveryError {
    #[error(transparent)]
    Db(#[from] DbError),
    #[error("storage: {0}")]
    Store(#[from] object_store::Error),
}

/// What one recording's checkpoint says.
#[derive(Debug, Clone, PartialEq)]
pub struct Checkpoint {
    pub duration_secs: f64,
    pub segments: u64,
}

/// Reads the checkpointed manifests of recording `id`: its first variant's media playlist.
/// `None` when there is no checkpoint (or it cannot be read as one).
pub async fn read_checkpoint(
    store: &Arc<dyn ObjectStore>,
    id: &str,
) -> Result<Option<Checkpoint>, object_store::Error> {
    let root = Root::vod(id);
    let Some(master) = read_text(store, &root.file(MASTER_PLAYLIST)).await? else {
        return Ok(None);
    };
    let Ok(master) = m3u8_rs::parse_master_playlist_res(master.as_bytes()) else {
        return Ok(None);
    };
    let Some(variant) = master.variants.first() else {
        return Ok(None);
    };
    // variant URIs are `{rendition}/index.m3u8`, written by us
    let Some(rendition) = variant.uri.strip_suffix(&format!("/{MEDIA_PLAYLIST}")) else {
        return Ok(None);
    };
    let path = root.rendition_file(rendition, MEDIA_PLAYLIST);
    let Some(media) = read_text(store, &path).await? else {
        return Ok(None);
    };
    let Ok(media) = m3u8_rs::parse_media_playlist_res(media.as_bytes()) else {
        return Ok(None);
    };
    let duration_secs = media.segments.iter().map(|s| f64::from(s.duration)).sum();
    Ok(Some(Checkpoint {
        duration_secs,
        segments: media.segments.len() as u64,
    }))
}

async fn read_text(
    store: &Arc<dyn ObjectStore>,
    path: &Path,
) -> Result<Option<String>, object_store::Error> {
    match store.get(path).await {
        Ok(got) => Ok(Some(
            String::from_utf8_lossy(&got.bytes().await?).into_owned(),
        )),
        Err(object_store::Error::NotFound { .. }) => Ok(None),
        Err(e) => Err(e),
    }
}

/// Finishes every recording a crashed process of `node_id` left; returns how many were
/// finished (playable) and how many removed (nothing playable).
pub async fn recover(
    db: &Db,
    store: &Arc<dyn ObjectStore>,
    webhooks: &Webhooks,
    node_id: &str,
) -> Result<(usize, usize), RecoveryError> {
    let (mut finished, mut removed) = (0, 0);
    for (id, stream_id) in db.orphaned_recordings(node_id).await? {
        match read_checkpoint(store, &id).await? {
            Some(checkpoint) => {
                db.finish_session(
                    &id,
                    (checkpoint.duration_secs * 1000.0) as i64,
                    None,
                    None,
                    None,
                )
                .await?;
                let playback_id = db
                    .stream_by_id(&stream_id)
                    .await?
                    .map(|s| s.playback_id)
                    .unwrap_or_default();
                let ended = Ended {
                    session_id: id.clone(),
                    stream_id,
                    playback_id,
                    duration_secs: checkpoint.duration_secs,
                    segments: checkpoint.segments,
                };
                webhooks.broadcast_ended(&ended, true);
                tracing::warn!(recording = %id, duration_s = checkpoint.duration_secs, "recording of a broadcast interrupted by a crash finished from its last checkpoint");
                finished += 1;
            }
            None => {
                let prefix = Path::from(format!("vod/{id}"));
                let objects: Vec<_> = store.list(Some(&prefix)).try_collect().await?;
                for object in objects {
                    store.delete(&object.location).await?;
                }
                db.delete_recording(&id).await?;
                tracing::warn!(recording = %id, "recording of a broadcast interrupted by a crash had nothing playable; removed");
                removed += 1;
            }
        }
    }
    Ok((finished, removed))
}
