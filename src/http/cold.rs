//! Cold objects on a local-disk store (`file://…`): a recording's segments, older live
//! segments, clips. The file is mapped into memory rather than read into a fresh buffer, so its
//! bytes go from the page cache to the connection with one copy (into the server's write
//! buffer) and no allocation the size of the object.
//!
//! Why not `sendfile`: actix-web's HTTP/1 encoder copies every body chunk into its own write
//! buffer and owns the socket, so a zero-copy `sendfile` is not reachable through it; a mapping
//! is the closest it allows. The mapping is made, and its pages faulted in, on a blocking
//! thread, never on the runtime.
//!
//! Safety of the mapping: the local store replaces an object by writing a new file and renaming
//! it over the old one, and deletes by unlinking, so a mapped file is never truncated under a
//! reader (which would fault); the mapping keeps the old bytes alive until the answer is sent.
//! This holds while the media directory belongs to Strata: a file truncated in place by
//! something else (or lost to a disk error) while it is being sent ends the process with
//! `SIGBUS`. Only files up to [`MAX_MAPPED`] are mapped, one mapping per answer in flight (the
//! kernel's `vm.max_map_count`, 65,530 by default, is far above `http.max_connections`).
//! Paths come from `playback::classify` (server-generated ids, rendition names, numbers), so
//! they never leave the store's directory.

use std::fs::File;
use std::io;
use std::path::PathBuf;
use std::time::SystemTime;

use actix_web::http::header::HeaderValue;
use bytes::Bytes;

/// The directory of a local-disk store.
#[derive(Debug, Clone)]
pub struct LocalRoot(pub PathBuf);

impl LocalRoot {
    /// The directory of `url` when it names a local-disk store (`file:///dir`).
    pub fn of(url: &str) -> Option<Self> {
        url::Url::parse(url)
            .ok()
            .filter(|u| u.scheme() == "file")
            .and_then(|u| u.to_file_path().ok())
            .map(Self)
    }
}

/// A stored file, mapped.
pub struct ColdFile {
    pub body: Bytes,
    /// The local store's own validator for the file (inode, modification time, size), so a
    /// client's `If-None-Match` works whichever path answered it before.
    pub etag: HeaderValue,
    pub last_modified: HeaderValue,
}

/// Files larger than this are not mapped (a clip's or a recording's MP4 download): they are
/// streamed by the store in chunks, so a small range or a `HEAD` of one reads only what it
/// needs.
pub const MAX_MAPPED: u64 = 16 << 20;

/// What opening a stored file gave.
pub enum Opened {
    File(ColdFile),
    Missing,
    /// Over [`MAX_MAPPED`].
    TooLarge,
}

/// Maps `location` (a classified object path) under `root`.
pub async fn open(root: &LocalRoot, location: &str) -> io::Result<Opened> {
    let path = root.0.join(location);
    match tokio::task::spawn_blocking(move || map(path)).await {
        Ok(result) => result,
        Err(e) => Err(io::Error::other(e)),
    }
}

fn map(path: PathBuf) -> io::Result<Opened> {
    let file = match File::open(&path) {
        Ok(file) => file,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(Opened::Missing),
        Err(e) => return Err(e),
    };
    let meta = file.metadata()?;
    if !meta.is_file() {
        return Ok(Opened::Missing);
    }
    if meta.len() > MAX_MAPPED {
        return Ok(Opened::TooLarge);
    }
    let body = if meta.len() == 0 {
        Bytes::new()
    } else {
        // SAFETY: see the module doc: stored files are replaced by rename and removed by
        // unlink, never truncated in place, so the mapped pages stay valid.
        let mapped = unsafe { memmap2::MmapOptions::new().populate().map(&file)? };
        Bytes::from_owner(mapped)
    };
    Ok(Opened::File(ColdFile {
        body,
        etag: etag(&meta),
        last_modified: crate::hot::http_date(meta.modified().unwrap_or(SystemTime::UNIX_EPOCH)),
    }))
}

/// `"{inode:x}-{mtime µs:x}-{size:x}"`, as object_store's local store makes it.
fn etag(meta: &std::fs::Metadata) -> HeaderValue {
    use std::os::unix::fs::MetadataExt;
    let micros = meta
        .modified()
        .ok()
        .and_then(|m| m.duration_since(SystemTime::UNIX_EPOCH).ok())
        .unwrap_or_default()
        .as_micros();
    let tag = format!("\"{:x}-{micros:x}-{:x}\"", meta.ino(), meta.len());
    HeaderValue::from_str(&tag).unwrap_or(HeaderValue::from_static("\"0\""))
}

#[cfg(test)]
mod tests {
    use super::*;
    use object_store::local::LocalFileSystem;
    use object_store::path::Path;
    use object_store::ObjectStoreExt;

    #[tokio::test]
    async fn a_mapped_file_has_the_stores_bytes_and_validator() {
        let dir = tempfile::tempdir().unwrap();
        let store = LocalFileSystem::new_with_prefix(dir.path()).unwrap();
        let location = "vod/abcdefghij012345/source/3.m4s";
        let body = Bytes::from((0..=255u8).cycle().take(300_000).collect::<Vec<_>>());
        store
            .put(&Path::from(location), body.clone().into())
            .await
            .unwrap();
        let root = LocalRoot::of(&format!("file://{}", dir.path().display())).unwrap();
        let Opened::File(cold) = open(&root, location).await.unwrap() else {
            panic!("the file is there and small");
        };
        assert_eq!(cold.body, body);
        let meta = store.head(&Path::from(location)).await.unwrap();
        assert_eq!(cold.etag.to_str().unwrap(), meta.e_tag.unwrap());
        assert!(matches!(
            open(&root, "vod/abcdefghij012345/source/4.m4s")
                .await
                .unwrap(),
            Opened::Missing
        ));
        let large = "vod/abcdefghij012345/clip.mp4";
        let big = Bytes::from(vec![0u8; MAX_MAPPED as usize + 1]);
        store.put(&Path::from(large), big.into()).await.unwrap();
        assert!(matches!(
            open(&root, large).await.unwrap(),
            Opened::TooLarge
        ));
        assert!(LocalRoot::of("s3://bucket/prefix").is_none());
        let _ = store.delete(&Path::from(location)).await;
        assert_eq!(cold.body, body, "a deleted file's mapping stays readable");
    }
}
