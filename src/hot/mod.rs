//! Hot objects: the live objects the origin serves most, kept in memory on the node.
//!
//! A live stream's manifests, init segments, newest segments and parts are asked for by every
//! viewer (and every CDN edge) within seconds of being written, so the origin answers them from
//! here instead of the store. Entries come from two places:
//! - this node's writes: [`HotStore`] wraps the object store and copies the `live/` objects it
//!   puts (and drops what it deletes, copies over or renames), so the publishing node never
//!   reads back what it just wrote. Manifests and init segments are always kept; a segment or
//!   part only while its broadcast is watched from this node (one of its segments or parts was
//!   served to someone in the last [`WATCHED_FOR`]), so a broadcast nobody watches costs no
//!   memory here. Playlists alone do not count: a monitor or a dashboard polling them never
//!   reads the segments, and keeping them for it would fill the budget with bytes nobody asks
//!   for;
//! - a read that missed: the origin fills the entry from the store (a node that does not
//!   publish the stream, or an object evicted meanwhile). The fill takes a [`Ticket`] before
//!   it reads and is dropped if a write or removal came in between, so a read racing a put
//!   or a delete never brings back what the store no longer holds.
//!
//! Consistency: segments, parts and preview sheets are written once under a name that is not
//! reused while they are listed, so an entry of one stays valid until it is deleted (this
//! node's deletes drop it) or evicted. Everything else (playlists, MPDs, a live `init.mp4`, the
//! poster, the thumbnails track) is rewritten in place, possibly by another node: an entry of
//! one is fresh for [`MUTABLE_FRESH_FOR`] after it was filled (the `max-age` the origin gives
//! these objects anyway), then the next request reads the store again.
//!
//! A VOD's media segments are kept too, filled on their second read within [`VOD_FRESH_FOR`]
//! (never on write; a client reading a recording through once does not push the live objects
//! out), and served for [`VOD_FRESH_FOR`] before the store is looked at again (a VOD deleted
//! through another node stops being served here after at most that). Its playlists, MPDs and
//! downloads stay cold.
//!
//! Bounds: at most `budget` bytes of object bodies (`http.hot_cache_bytes`); an object larger
//! than an eighth of the budget is never kept. Eviction: least recently used first (a hit, a
//! write and a fill all count as a use), until the new entry fits.

mod store;

pub use store::HotStore;

use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::{Duration, Instant, SystemTime};

use actix_web::http::header::HeaderValue;
use bytes::Bytes;
use hashlink::LinkedHashMap;

use crate::http::playback::{classify, Kind};

/// How long an entry of an object rewritten in place is served without looking at the store.
pub const MUTABLE_FRESH_FOR: Duration = Duration::from_secs(1);

/// How long an entry of a VOD segment is served without looking at the store. A VOD is
/// deleted as a whole (by a user, or past its retention), possibly on another node: this is how
/// long this node may go on serving a segment of a deleted VOD. This node's own deletes drop
/// the entry at once.
pub const VOD_FRESH_FOR: Duration = Duration::from_secs(10);

/// A broadcast is watched for this long after one of its segments or parts was asked for.
pub const WATCHED_FOR: Duration = Duration::from_secs(30);

/// Watched broadcasts remembered at most (those not asked for within [`WATCHED_FOR`] are
/// forgotten first). A broadcast is watched only once one of its objects was found.
const WATCHED_REMEMBERED: usize = 4096;

/// VOD segments remembered as read once (see `Inner::read_once`).
const READ_ONCE_REMEMBERED: usize = 4096;

/// Stripes of write generations (see [`Ticket`]).
const STRIPES: usize = 1024;

/// `live/{id}` of an object path under `live/`.
fn broadcast_of(path: &str) -> Option<&str> {
    let rest = path.strip_prefix("live/")?;
    let id = rest.split('/').next()?;
    Some(&path[..5 + id.len()])
}

/// One object's bytes and the headers that describe them, built once.
#[derive(Debug)]
pub struct HotObject {
    pub body: Bytes,
    /// A strong validator, quoted (`"…"`): the store's ETag when it gave one.
    pub etag: HeaderValue,
    pub last_modified: HeaderValue,
    /// `None`: valid until dropped (an immutable object).
    fresh_until: Option<Instant>,
}

impl HotObject {
    /// An object stored at `path` with the store's `etag` (if any), modified at `modified`.
    pub fn new(path: &str, body: Bytes, etag: Option<&str>, modified: SystemTime) -> Self {
        let etag = match etag {
            Some(tag) => quoted(tag.trim_matches('"')),
            None => quoted(&format!("{:016x}-{:x}", digest(&body), body.len())),
        };
        let fresh_until = if is_vod_segment(path) {
            Some(Instant::now() + VOD_FRESH_FOR)
        } else {
            (!is_immutable(path)).then(|| Instant::now() + MUTABLE_FRESH_FOR)
        };
        Self {
            body,
            etag,
            last_modified: http_date(modified),
            fresh_until,
        }
    }

    fn is_fresh(&self, now: Instant) -> bool {
        self.fresh_until.is_none_or(|until| now < until)
    }
}

/// `"tag"` as a header value; a tag with bytes a header cannot hold is replaced by a digest.
fn quoted(tag: &str) -> HeaderValue {
    HeaderValue::from_str(&format!("\"{tag}\"")).unwrap_or_else(|_| {
        HeaderValue::from_str(&format!("\"{:016x}\"", digest(tag.as_bytes())))
            .unwrap_or(HeaderValue::from_static("\"0\""))
    })
}

/// An IMF-fixdate (`Tue, 08 Dec 2026 00:30:53 GMT`).
pub fn http_date(time: SystemTime) -> HeaderValue {
    HeaderValue::from_str(&httpdate::fmt_http_date(time))
        .unwrap_or(HeaderValue::from_static("Thu, 01 Jan 1970 00:00:00 GMT"))
}

/// FNV-1a over the bytes: a validator for stores that give none, and for rendered playlists
/// (not a security boundary).
pub fn digest(bytes: &[u8]) -> u64 {
    bytes.iter().fold(0xcbf2_9ce4_8422_2325, |hash, &b| {
        (hash ^ u64::from(b)).wrapping_mul(0x0100_0000_01b3)
    })
}

/// Whether `path` (as stored) is an object the origin keeps hot: any live object, and a VOD's
/// media segments.
pub fn is_hot(path: &str) -> bool {
    path.strip_prefix("live/")
        .and_then(|tail| classify("live", tail))
        .is_some()
        || is_vod_segment(path)
}

/// Whether `path` is a media segment of a VOD (a recording or a clip).
fn is_vod_segment(path: &str) -> bool {
    path.strip_prefix("vod/")
        .and_then(|tail| classify("vod", tail))
        .is_some_and(|(_, kind)| kind == Kind::Segment)
}

/// Whether an object at `path` is written once under a name not reused while it is listed.
fn is_immutable(path: &str) -> bool {
    path.strip_prefix("live/")
        .and_then(|tail| classify("live", tail))
        .is_some_and(|(_, kind)| matches!(kind, Kind::Segment | Kind::Part | Kind::Sheet))
}

/// The node's hot objects, bounded in bytes (see the module doc).
#[derive(Debug)]
pub struct HotObjects {
    inner: Mutex<Inner>,
    budget: u64,
}

#[derive(Debug)]
struct Inner {
    /// Least recently used first.
    entries: LinkedHashMap<String, Arc<HotObject>>,
    bytes: u64,
    /// `live/{id}` → when one of its objects was last asked for.
    watched: std::collections::HashMap<String, Instant>,
    /// VOD segments read once (oldest first), at most [`READ_ONCE_REMEMBERED`]: one is kept
    /// on its second read within [`VOD_FRESH_FOR`], so a client reading a long recording
    /// through once does not push the live objects out.
    read_once: LinkedHashMap<String, Instant>,
    /// Per stripe of paths: how many writes and removals it has seen.
    generations: Box<[u64; STRIPES]>,
}

impl Default for Inner {
    fn default() -> Self {
        Self {
            entries: LinkedHashMap::new(),
            bytes: 0,
            watched: Default::default(),
            read_once: LinkedHashMap::new(),
            generations: Box::new([0; STRIPES]),
        }
    }
}

/// Taken before a read of the store that may fill an entry: the fill is kept only if nothing
/// was written or removed at a path of the same stripe meanwhile, so a read that raced a put
/// or a delete never brings back what the store no longer holds.
#[derive(Debug, Clone, Copy)]
pub struct Ticket {
    stripe: usize,
    generation: u64,
}

impl Inner {
    /// Notes a read of `path`: one of a segment or part makes its broadcast watched.
    fn watch(&mut self, path: &str, now: Instant) {
        let media = path
            .strip_prefix("live/")
            .and_then(|tail| classify("live", tail))
            .is_some_and(|(_, kind)| matches!(kind, Kind::Segment | Kind::Part));
        if !media {
            return;
        }
        let Some(broadcast) = broadcast_of(path) else {
            return;
        };
        match self.watched.get_mut(broadcast) {
            Some(seen) => *seen = now,
            None => {
                if self.watched.len() >= WATCHED_REMEMBERED {
                    self.watched
                        .retain(|_, seen| now.duration_since(*seen) < WATCHED_FOR);
                }
                // full of broadcasts watched now: this one is filled on reads instead
                if self.watched.len() < WATCHED_REMEMBERED {
                    self.watched.insert(broadcast.to_string(), now);
                }
            }
        }
    }

    /// Whether the VOD segment at `path` was read within [`VOD_FRESH_FOR`]; notes this read
    /// otherwise.
    fn read_before(&mut self, path: &str) -> bool {
        let now = Instant::now();
        if let Some(first) = self.read_once.remove(path) {
            if now.duration_since(first) < VOD_FRESH_FOR {
                return true;
            }
        }
        if self.read_once.len() >= READ_ONCE_REMEMBERED {
            self.read_once.pop_front();
        }
        self.read_once.insert(path.to_string(), now);
        false
    }

    /// The stripe of write generations `path` belongs to.
    fn stripe(path: &str) -> usize {
        (digest(path.as_bytes()) % STRIPES as u64) as usize
    }

    fn bump(&mut self, path: &str) {
        let stripe = Self::stripe(path);
        self.generations[stripe] = self.generations[stripe].wrapping_add(1);
    }

    fn evict_for(&mut self, size: u64, budget: u64) {
        while self.bytes + size > budget {
            let Some((_, evicted)) = self.entries.pop_front() else {
                break;
            };
            self.bytes -= evicted.body.len() as u64;
        }
    }

    fn report(&self) {
        metrics::gauge!(crate::telemetry::HOT_OBJECT_BYTES).set(self.bytes as f64);
    }

    fn remove(&mut self, path: &str) {
        self.bump(path);
        if let Some(old) = self.entries.remove(path) {
            self.bytes -= old.body.len() as u64;
            self.report();
        }
    }
}

impl HotObjects {
    pub fn new(budget: u64) -> Self {
        Self {
            inner: Mutex::default(),
            budget,
        }
    }

    /// The largest object kept.
    pub fn max_object(&self) -> u64 {
        self.budget / 8
    }

    fn lock(&self) -> MutexGuard<'_, Inner> {
        // a panic elsewhere never leaves the map half-updated: every method finishes its change
        self.inner.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// The fresh entry of `path`, made the most recently used (and its broadcast watched); a
    /// stale one is dropped.
    pub fn get(&self, path: &str) -> Option<Arc<HotObject>> {
        let now = Instant::now();
        let mut inner = self.lock();
        let object = inner.entries.to_back(path)?.clone();
        if object.is_fresh(now) {
            inner.watch(path, now);
            Some(object)
        } else {
            inner.remove(path);
            None
        }
    }

    /// Keeps `object`, just written at `path` by this node (replacing an older entry), evicting
    /// the least recently used entries until the budget holds it; an object over
    /// [`Self::max_object`] is not kept.
    pub fn insert(&self, path: &str, object: HotObject) -> Option<Arc<HotObject>> {
        let mut inner = self.lock();
        inner.remove(path);
        self.keep(&mut inner, path, Arc::new(object))
    }

    /// A ticket for a read of `path` from the store that may fill its entry.
    pub fn ticket(&self, path: &str) -> Ticket {
        let stripe = Inner::stripe(path);
        Ticket {
            stripe,
            generation: self.lock().generations[stripe],
        }
    }

    /// Keeps `object`, read from the store at `path` after `ticket` was taken, unless a write
    /// or removal in its stripe came since (then the store may hold something else now); its
    /// broadcast is watched either way (the object was found).
    pub fn fill(&self, path: &str, object: Arc<HotObject>, ticket: Ticket) -> bool {
        let mut inner = self.lock();
        inner.watch(path, Instant::now());
        if inner.generations[ticket.stripe] != ticket.generation {
            return false;
        }
        if is_vod_segment(path) && !inner.read_before(path) {
            return false;
        }
        if let Some(old) = inner.entries.remove(path) {
            inner.bytes -= old.body.len() as u64;
        }
        self.keep(&mut inner, path, object).is_some()
    }

    fn keep(
        &self,
        inner: &mut Inner,
        path: &str,
        object: Arc<HotObject>,
    ) -> Option<Arc<HotObject>> {
        let size = object.body.len() as u64;
        if size > self.max_object() {
            return None;
        }
        inner.evict_for(size, self.budget);
        inner.entries.insert(path.to_string(), object.clone());
        inner.bytes += size;
        inner.report();
        Some(object)
    }

    /// Notes that `path` (an object of a broadcast live on this node) was asked for, though
    /// it is answered from elsewhere (a low-latency playlist rendered from the broadcast's
    /// edge).
    pub fn watch(&self, path: &str) {
        self.lock().watch(path, Instant::now());
    }

    /// Whether an object this node just wrote at `path` is worth keeping: a manifest or init
    /// segment always; a segment or part while its broadcast is watched.
    pub fn keeps_written(&self, path: &str) -> bool {
        if !is_hot(path) || is_vod_segment(path) {
            // a VOD's segments are kept when read, not when written (a recording is written
            // once and mostly never watched)
            return false;
        }
        if !is_immutable(path) {
            return true;
        }
        let watched = broadcast_of(path).and_then(|b| self.lock().watched.get(b).copied());
        watched.is_some_and(|seen| seen.elapsed() < WATCHED_FOR)
    }

    /// Drops `path`'s entry (it was deleted or overwritten by other means).
    pub fn remove(&self, path: &str) {
        self.lock().remove(path);
    }

    /// Bytes of object bodies held.
    pub fn bytes(&self) -> u64 {
        self.lock().bytes
    }

    /// Entries held.
    pub fn len(&self) -> usize {
        self.lock().entries.len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const ID: &str = "abcdefghij012345";

    fn object(path: &str, size: usize) -> HotObject {
        HotObject::new(path, Bytes::from(vec![7u8; size]), None, SystemTime::now())
    }

    #[test]
    fn only_live_objects_the_origin_serves_are_hot() {
        assert!(is_hot(&format!("live/{ID}/source/3.m4s")));
        assert!(is_hot(&format!("live/{ID}/source/3.1.m4s")));
        assert!(is_hot(&format!("live/{ID}/master.m3u8")));
        assert!(is_hot(&format!("live/{ID}/720p/init.mp4")));
        assert!(
            is_hot(&format!("vod/{ID}/source/3.m4s")),
            "a VOD's segments"
        );
        assert!(!is_hot(&format!("vod/{ID}/source/index.m3u8")));
        assert!(!is_hot(&format!("vod/{ID}/recording.mp4")));
        assert!(!is_hot(&format!("live/{ID}/source/3.m4s.tmp")));
        assert!(!is_hot("live/../x"));
    }

    #[test]
    fn the_least_recently_used_go_first_and_the_budget_holds() {
        let hot = HotObjects::new(1000);
        let path = |n: u32| format!("live/{ID}/source/{n}.m4s");
        for n in 0..4 {
            hot.insert(&path(n), object(&path(n), 100));
        }
        // 0 is used: 1 is now the least recently used
        assert!(hot.get(&path(0)).is_some());
        for n in 4..10 {
            hot.insert(&path(n), object(&path(n), 100));
        }
        assert_eq!(hot.bytes(), 1000);
        hot.insert(&path(10), object(&path(10), 100));
        assert_eq!(hot.bytes(), 1000, "one entry left for the new one");
        assert!(
            hot.get(&path(1)).is_none(),
            "the least recently used was evicted"
        );
        assert!(hot.get(&path(0)).is_some(), "a recently used entry stays");
        // too large for an eighth of the budget: not kept, and the old entry is gone too
        assert!(hot.insert(&path(0), object(&path(0), 126)).is_none());
        assert!(hot.get(&path(0)).is_none());
        assert_eq!(hot.bytes(), 900);
        hot.remove(&path(10));
        assert_eq!(hot.bytes(), 800);
        assert_eq!(hot.len(), 8);
    }

    #[test]
    fn segments_written_are_kept_only_for_watched_broadcasts() {
        let hot = HotObjects::new(1 << 20);
        let segment = format!("live/{ID}/source/1.m4s");
        let other = "live/zyxwvutsrq543210/source/1.m4s";
        assert!(hot.keeps_written(&format!("live/{ID}/master.m3u8")));
        assert!(hot.keeps_written(&format!("live/{ID}/source/init.mp4")));
        assert!(!hot.keeps_written(&segment), "nobody watches it yet");
        assert!(hot.get(&segment).is_none());
        assert!(
            !hot.keeps_written(&segment),
            "a miss does not make it watched"
        );
        hot.watch(&format!("live/{ID}/source/index.m3u8"));
        assert!(
            !hot.keeps_written(&segment),
            "a playlist read alone does not make it watched"
        );
        hot.watch(&format!("live/{ID}/360p/7.2.m4s"));
        assert!(
            hot.keeps_written(&segment),
            "a viewer asked for one of its parts"
        );
        assert!(hot.keeps_written(&format!("live/{ID}/source/2.3.m4s")));
        assert!(
            !hot.keeps_written(other),
            "another broadcast is not watched"
        );
        assert!(!hot.keeps_written(&format!("vod/{ID}/source/1.m4s")));
        assert_eq!(broadcast_of(&segment), Some(&*format!("live/{ID}")));
        assert_eq!(broadcast_of("vod/x/y"), None);
    }

    #[test]
    fn a_fill_that_raced_a_write_or_a_delete_is_not_kept() {
        let hot = HotObjects::new(1 << 20);
        let path = format!("live/{ID}/source/1.m4s");
        let read = |size| Arc::new(object(&path, size));
        let ticket = hot.ticket(&path);
        // the store is read; meanwhile the object is deleted
        hot.remove(&path);
        assert!(!hot.fill(&path, read(10), ticket));
        assert!(
            hot.get(&path).is_none(),
            "the deleted object did not come back"
        );
        let ticket = hot.ticket(&path);
        hot.insert(&path, object(&path, 20));
        assert!(!hot.fill(&path, read(10), ticket));
        assert_eq!(
            hot.get(&path).unwrap().body.len(),
            20,
            "the write's bytes stay"
        );
        let ticket = hot.ticket(&path);
        assert!(hot.fill(&path, read(30), ticket));
        assert_eq!(hot.bytes(), 30);
    }

    #[test]
    fn watched_broadcasts_are_bounded() {
        let hot = HotObjects::new(1 << 20);
        for n in 0..WATCHED_REMEMBERED + 10 {
            hot.watch(&format!("live/{n:016}/source/1.m4s"));
        }
        assert_eq!(hot.lock().watched.len(), WATCHED_REMEMBERED);
    }

    #[test]
    fn objects_rewritten_in_place_go_stale_and_immutable_ones_do_not() {
        let hot = HotObjects::new(1 << 20);
        let playlist = format!("live/{ID}/master.m3u8");
        let segment = format!("live/{ID}/source/1.m4s");
        let mut stale = object(&playlist, 10);
        assert!(stale.fresh_until.is_some());
        stale.fresh_until = Some(Instant::now());
        hot.insert(&playlist, stale);
        hot.insert(&segment, object(&segment, 10));
        assert!(
            hot.get(&playlist).is_none(),
            "a stale manifest is read again"
        );
        assert_eq!(hot.len(), 1, "and its entry is dropped");
        assert!(hot.get(&segment).is_some());
    }

    #[test]
    fn vod_segments_are_kept_for_a_while_on_read_only() {
        let hot = HotObjects::new(1 << 20);
        let segment = format!("vod/{ID}/720p/3.m4s");
        assert!(!hot.keeps_written(&segment), "not kept when written");
        let entry = object(&segment, 10);
        let until = entry.fresh_until.expect("a VOD segment is checked again");
        assert!(until > Instant::now() + VOD_FRESH_FOR - Duration::from_secs(1));
        assert!(until <= Instant::now() + VOD_FRESH_FOR);
        let entry = Arc::new(entry);
        assert!(
            !hot.fill(&segment, entry.clone(), hot.ticket(&segment)),
            "not kept on its first read"
        );
        assert!(hot.get(&segment).is_none());
        assert!(hot.fill(&segment, entry, hot.ticket(&segment)));
        assert!(hot.get(&segment).is_some(), "kept on its second");
        hot.remove(&segment);
        assert!(hot.get(&segment).is_none(), "dropped when deleted here");
    }

    #[test]
    fn validators_are_quoted_and_stable() {
        let path = format!("live/{ID}/source/1.m4s");
        let a = HotObject::new(
            &path,
            Bytes::from_static(b"abc"),
            None,
            SystemTime::UNIX_EPOCH,
        );
        let b = HotObject::new(&path, Bytes::from_static(b"abc"), None, SystemTime::now());
        let c = HotObject::new(&path, Bytes::from_static(b"abd"), None, SystemTime::now());
        assert_eq!(a.etag, b.etag);
        assert_ne!(a.etag, c.etag);
        let stored = HotObject::new(&path, Bytes::new(), Some("\"1a-2b\""), SystemTime::now());
        assert_eq!(stored.etag, "\"1a-2b\"");
        assert_eq!(a.last_modified, "Thu, 01 Jan 1970 00:00:00 GMT");
        let odd = HotObject::new(&path, Bytes::new(), Some("a\nb"), SystemTime::now());
        assert!(odd.etag.to_str().is_ok_and(|t| t.starts_with('"')));
    }
}
