//! Opening the object store named by `storage.url`, and the object keys Strata writes.
//! Keys are built only from server-generated ids and rendition names (see `db::ids`).

use std::sync::Arc;

use object_store::local::LocalFileSystem;
use object_store::memory::InMemory;
use object_store::path::Path;
use object_store::ObjectStore;

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("storage.url `{0}`: {1}")]
    BadUrl(String, String),
    #[error("storage: {0}")]
    Store(#[from] object_store::Error),
}

/// The `storage.url` schemes `open` understands.
pub const SCHEMES: &[&str] = &["file", "memory"];

/// Opens `file:///dir` (created if missing) or `memory://`.
pub fn open(url: &str) -> Result<Arc<dyn ObjectStore>, StoreError> {
    let parsed = url::Url::parse(url).map_err(|e| StoreError::BadUrl(url.into(), e.to_string()))?;
    match parsed.scheme() {
        "memory" => Ok(Arc::new(InMemory::new())),
        "file" => {
            let dir = parsed
                .to_file_path()
                .map_err(|_| StoreError::BadUrl(url.into(), "not a local path".into()))?;
            std::fs::create_dir_all(&dir)
                .map_err(|e| StoreError::BadUrl(url.into(), e.to_string()))?;
            Ok(Arc::new(LocalFileSystem::new_with_prefix(dir)?))
        }
        other => Err(StoreError::BadUrl(
            url.into(),
            format!("unsupported scheme `{other}`"),
        )),
    }
}

/// Where a broadcast's objects live: `live/{playback_id}` or `vod/{recording_id}`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Root(String);

impl Root {
    pub fn live(playback_id: &str) -> Self {
        Self(format!("live/{playback_id}"))
    }

    pub fn vod(recording_id: &str) -> Self {
        Self(format!("vod/{recording_id}"))
    }

    pub fn prefix(&self) -> Path {
        Path::from(self.0.as_str())
    }

    pub fn file(&self, name: &str) -> Path {
        Path::from(format!("{}/{name}", self.0))
    }

    pub fn rendition_file(&self, rendition: &str, name: &str) -> Path {
        Path::from(format!("{}/{rendition}/{name}", self.0))
    }

    pub fn segment(&self, rendition: &str, number: u64) -> Path {
        self.rendition_file(rendition, &format!("{number}.m4s"))
    }
}

pub const MASTER_PLAYLIST: &str = "master.m3u8";
pub const MEDIA_PLAYLIST: &str = "index.m3u8";
pub const MPD: &str = "manifest.mpd";
pub const INIT_SEGMENT: &str = "init.mp4";
/// The live picture's poster (JPEG), under the live root.
pub const POSTER: &str = "poster.jpg";
