//! [`HotStore`]: the object store every part of the node writes through, keeping
//! [`HotObjects`] in step with what this node stores. A `live/` object put whole is kept once
//! the store has it, when [`HotObjects::keeps_written`] says it is worth it (a put not kept,
//! or failed, drops any older entry: what the store holds is then unknown);
//! deletes, copies, renames and multipart uploads drop the entries they touch, before and
//! after the store acts (each removal also voids the tickets of fills under way, see
//! [`super::Ticket`]).
//! Reads and listings go to the store unchanged.

use std::fmt;
use std::sync::Arc;
use std::time::SystemTime;

use async_trait::async_trait;
use bytes::Bytes;
use futures::stream::{BoxStream, StreamExt};
use object_store::path::Path;
use object_store::{
    CopyOptions, GetOptions, GetResult, ListResult, MultipartUpload, ObjectMeta, ObjectStore,
    PutMultipartOptions, PutOptions, PutPayload, PutResult, RenameOptions, Result,
};

use super::{HotObject, HotObjects};

/// An object store that feeds this node's hot objects (see the module doc).
#[derive(Debug)]
pub struct HotStore {
    inner: Arc<dyn ObjectStore>,
    hot: Arc<HotObjects>,
}

impl HotStore {
    pub fn new(inner: Arc<dyn ObjectStore>, hot: Arc<HotObjects>) -> Self {
        Self { inner, hot }
    }
}

impl fmt::Display for HotStore {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} (hot objects in memory)", self.inner)
    }
}

#[async_trait]
impl ObjectStore for HotStore {
    async fn put_opts(
        &self,
        location: &Path,
        payload: PutPayload,
        opts: PutOptions,
    ) -> Result<PutResult> {
        let path = location.as_ref();
        let kept = (payload.content_length() as u64 <= self.hot.max_object()
            && self.hot.keeps_written(path))
        .then(|| Bytes::from(payload.clone()));
        let result = self.inner.put_opts(location, payload, opts).await;
        match (&result, kept) {
            (Ok(put), Some(body)) => {
                let object = HotObject::new(path, body, put.e_tag.as_deref(), SystemTime::now());
                self.hot.insert(path, object);
            }
            _ => self.hot.remove(path),
        }
        result
    }

    async fn put_multipart_opts(
        &self,
        location: &Path,
        opts: PutMultipartOptions,
    ) -> Result<Box<dyn MultipartUpload>> {
        self.hot.remove(location.as_ref());
        self.inner.put_multipart_opts(location, opts).await
    }

    async fn get_opts(&self, location: &Path, options: GetOptions) -> Result<GetResult> {
        self.inner.get_opts(location, options).await
    }

    fn delete_stream(
        &self,
        locations: BoxStream<'static, Result<Path>>,
    ) -> BoxStream<'static, Result<Path>> {
        let (before, after) = (self.hot.clone(), self.hot.clone());
        let locations = locations
            .inspect(move |l| {
                if let Ok(path) = l {
                    before.remove(path.as_ref());
                }
            })
            .boxed();
        self.inner
            .delete_stream(locations)
            .inspect(move |l| {
                if let Ok(path) = l {
                    after.remove(path.as_ref());
                }
            })
            .boxed()
    }

    fn list(&self, prefix: Option<&Path>) -> BoxStream<'static, Result<ObjectMeta>> {
        self.inner.list(prefix)
    }

    fn list_with_offset(
        &self,
        prefix: Option<&Path>,
        offset: &Path,
    ) -> BoxStream<'static, Result<ObjectMeta>> {
        self.inner.list_with_offset(prefix, offset)
    }

    async fn list_with_delimiter(&self, prefix: Option<&Path>) -> Result<ListResult> {
        self.inner.list_with_delimiter(prefix).await
    }

    async fn copy_opts(&self, from: &Path, to: &Path, options: CopyOptions) -> Result<()> {
        self.hot.remove(to.as_ref());
        let result = self.inner.copy_opts(from, to, options).await;
        self.hot.remove(to.as_ref());
        result
    }

    async fn rename_opts(&self, from: &Path, to: &Path, options: RenameOptions) -> Result<()> {
        for path in [from, to] {
            self.hot.remove(path.as_ref());
        }
        let result = self.inner.rename_opts(from, to, options).await;
        for path in [from, to] {
            self.hot.remove(path.as_ref());
        }
        result
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use object_store::memory::InMemory;
    use object_store::ObjectStoreExt;

    const ID: &str = "abcdefghij012345";

    #[tokio::test]
    async fn live_writes_are_kept_and_deletes_copies_and_renames_drop_them() {
        let hot = Arc::new(HotObjects::new(1 << 20));
        let store = HotStore::new(Arc::new(InMemory::new()), hot.clone());
        let segment = Path::from(format!("live/{ID}/source/1.m4s"));
        let vod = Path::from(format!("vod/{ID}/source/1.m4s"));
        // a viewer asks for one of the broadcast's segments: the next ones are kept from now on
        hot.watch(&format!("live/{ID}/source/0.m4s"));
        store
            .put(&segment, Bytes::from_static(b"one").into())
            .await
            .unwrap();
        store
            .put(&vod, Bytes::from_static(b"vod").into())
            .await
            .unwrap();
        let kept = hot.get(segment.as_ref()).expect("the live segment is hot");
        assert_eq!(kept.body, "one");
        let stored = store.head(&segment).await.unwrap();
        assert_eq!(
            kept.etag.to_str().unwrap().trim_matches('"'),
            stored.e_tag.unwrap().trim_matches('"'),
            "the same validator as the store's"
        );
        assert!(hot.get(vod.as_ref()).is_none(), "VOD is not kept");

        // overwritten: the new bytes
        store
            .put(&segment, Bytes::from_static(b"two").into())
            .await
            .unwrap();
        assert_eq!(hot.get(segment.as_ref()).unwrap().body, "two");

        store.copy(&vod, &segment).await.unwrap();
        assert!(hot.get(segment.as_ref()).is_none(), "copied over: dropped");
        store
            .put(&segment, Bytes::from_static(b"three").into())
            .await
            .unwrap();
        store.delete(&segment).await.unwrap();
        assert!(hot.get(segment.as_ref()).is_none(), "deleted: dropped");
        store
            .put(&segment, Bytes::from_static(b"four").into())
            .await
            .unwrap();
        let other = Path::from(format!("live/{ID}/source/2.m4s"));
        store.rename(&segment, &other).await.unwrap();
        assert!(hot.is_empty(), "renamed: both names dropped");
        assert_eq!(
            store.get(&other).await.unwrap().bytes().await.unwrap(),
            "four"
        );
    }
}
