//! Playback: `live/…` and `vod/…`, plus the time endpoint.
//!
//! Where an answer comes from, first match wins:
//! 1. a broadcast live on this node: its low-latency playlists (rendered once per change of
//!    its edge), a growing segment, or the wait for a hinted part (`low_latency`);
//! 2. a `live/` object from memory (`crate::hot`): this node's own writes, or filled from the
//!    store on a miss;
//! 3. a local-disk store: the file, mapped (`cold`);
//! 4. any other store (a bucket): the object streamed as the store sends it, never gathered
//!    whole.
//!
//! Conditional requests (`If-None-Match`, weak comparison) get `304` on every path.
//!
//! Only paths of the shapes Strata writes are looked up (`{root}/{id}/{manifest}` and
//! `{root}/{id}/{rendition}/{file}`, with a server-generated id; the DVR view's `dvr.m3u8` and
//! `dvr.mpd` only under `live/`); anything else is a 404
//! before the store is touched, so no request reaches outside the store's prefix.
//!
//! With `storage.public_base_url` set, segment requests answer `302` to that base (a public
//! bucket or a CDN) plus the object's path, so segment bytes leave from the bucket or the CDN
//! while manifests, which change every segment, still come from here. Parts (`{n}.{p}.m4s`)
//! are always served here: a player asks for one as it is produced, before a bucket or CDN
//! could have it.
//!
//! Caching: segments and a clip's MP4 (`vod/{clip_id}/clip.mp4`) are immutable; `init.mp4` is
//! immutable under `vod/` but revalidated under `live/` (a new broadcast of the stream may change it); live manifests live for 1 s (less
//! than half a target duration); VOD manifests for an hour; 404s for 1 s; the live poster
//! (`live/{id}/poster.jpg`) for 5 s. Scrub previews: sheets (`previews/{n}.jpg`) are
//! immutable; the thumbnails track (`thumbnails.vtt`) is cached as the manifests beside it.
//!
//! `HEAD` answers the headers `GET` would (the object's real `Content-Length` included) with no
//! body. A single `bytes=` range is served as `206`; a range that selects no byte of the object
//! (a first byte at or past its end, or a zero-length suffix such as `bytes=-0`) is `416` with
//! `Content-Range: bytes */SIZE` (RFC 9110 §14.1.1, §15.5.17); a malformed or multi-range
//! header is ignored and the whole object is served; `HEAD` ignores `Range`, as RFC 9110 §14.2
//! defines ranges for `GET` only.

use std::convert::Infallible;
use std::ops::Range;
use std::pin::Pin;
use std::task::{Context, Poll};

use actix_web::body::SizedStream;
use actix_web::body::{BodySize, MessageBody};
use actix_web::http::header::{self, HeaderValue};
use actix_web::http::{Method, StatusCode};
use actix_web::{web, HttpRequest, HttpResponse};
use futures::StreamExt;
use object_store::path::Path;
use object_store::{GetOptions, GetRange, ObjectStoreExt};

use super::{cold, low_latency, serve, HttpState};
use crate::db::ids;

pub const SEGMENT_CACHE: &str = "public, max-age=31536000, immutable";
pub const LIVE_MANIFEST_CACHE: &str = "public, max-age=1";
const LIVE_INIT_CACHE: &str = "public, max-age=0, must-revalidate";
const VOD_MANIFEST_CACHE: &str = "public, max-age=3600";
const NOT_FOUND_CACHE: &str = "public, max-age=1";
/// A segment's redirect never changes, but a configuration change may move the base.
const REDIRECT_CACHE: &str = "public, max-age=3600";
/// A live poster is replaced every 10 s.
const POSTER_CACHE: &str = "public, max-age=5";

pub fn configure(cfg: &mut web::ServiceConfig) {
    cfg.route("/time", web::get().to(time))
        .route("/time", web::head().to(time));
}

/// The methods playback answers.
const ALLOWED_METHODS: &str = "GET, HEAD, OPTIONS";

/// The origin: `/live/…` and `/vod/…`, registered before every other route. Each is a scope
/// matched by its prefix alone (no pattern to run per request) whose default service
/// classifies the rest of the path; `vod` also holds a recording's MP4 download. CORS is open
/// (`*`, no credentials) by two fixed headers and a fixed preflight answer; requests are
/// counted by [`super::counting::count_origin`] with handles made once.
pub fn configure_origin(cfg: &mut web::ServiceConfig) {
    let cors = || {
        actix_web::middleware::DefaultHeaders::new()
            .add((header::ACCESS_CONTROL_ALLOW_ORIGIN, "*"))
            .add((
                header::ACCESS_CONTROL_EXPOSE_HEADERS,
                "Content-Length, Content-Range, ETag",
            ))
    };
    let counted = || actix_web::middleware::from_fn(super::counting::count_origin);
    cfg.service(
        web::scope("/live")
            .wrap(cors())
            .wrap(counted())
            .default_service(web::to(|req, state| object(req, state, "live"))),
    )
    .service(
        web::scope("/vod")
            .wrap(cors())
            .wrap(counted())
            .configure(super::replay::configure_download)
            .default_service(web::to(|req, state| object(req, state, "vod"))),
    );
}

/// A CORS preflight: any origin may `GET` and `HEAD` with `Range` and `If-None-Match`.
pub async fn preflight() -> HttpResponse {
    HttpResponse::NoContent()
        .insert_header((header::ACCESS_CONTROL_ALLOW_METHODS, ALLOWED_METHODS))
        .insert_header((header::ACCESS_CONTROL_ALLOW_HEADERS, "Range, If-None-Match"))
        .insert_header((header::ACCESS_CONTROL_MAX_AGE, "86400"))
        .finish()
}

/// `urn:mpeg:dash:utc:http-iso:2014`: the server's clock as ISO 8601 text.
async fn time() -> HttpResponse {
    HttpResponse::Ok()
        .insert_header((header::CACHE_CONTROL, "no-store"))
        .content_type("text/plain")
        .body(chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Millis, true))
}

#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Kind {
    Playlist,
    Mpd,
    Init,
    Segment,
    /// A low-latency part (`{n}.{p}.m4s`).
    Part,
    Poster,
    /// A clip's downloadable MP4 (`vod/{clip_id}/clip.mp4`).
    Download,
    /// A VOD's scrub-preview track (`vod/{id}/thumbnails.vtt`).
    Thumbnails,
    /// One of its sprite sheets (`vod/{id}/previews/{n}.jpg`).
    Sheet,
}

fn is_rendition(s: &str) -> bool {
    (1..=32).contains(&s.len())
        && s.bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_' || b == b'-')
}

fn is_number(s: &str) -> bool {
    (1..=20).contains(&s.len()) && s.bytes().all(|b| b.is_ascii_digit())
}

/// Classifies a well-formed object path; `None` for anything Strata never writes.
pub fn classify(root: &str, tail: &str) -> Option<(Path, Kind)> {
    let parts: Vec<&str> = tail.split('/').collect();
    let kind = match parts.as_slice() {
        [id, "master.m3u8"] if ids::is_public_id(id) => Kind::Playlist,
        [id, "manifest.mpd"] if ids::is_public_id(id) => Kind::Mpd,
        // the DVR view exists only while a broadcast is live (and a while after)
        [id, "dvr.m3u8"] if root == "live" && ids::is_public_id(id) => Kind::Playlist,
        [id, "dvr.mpd"] if root == "live" && ids::is_public_id(id) => Kind::Mpd,
        // the live picture, or a recording's or clip's
        [id, "poster.jpg"] if ids::is_public_id(id) => Kind::Poster,
        [id, "clip.mp4"] if root == "vod" && ids::is_public_id(id) => Kind::Download,
        // scrub previews: a VOD's, or a live broadcast's DVR view's
        [id, "thumbnails.vtt"] if ids::is_public_id(id) => Kind::Thumbnails,
        [id, "previews", sheet]
            if ids::is_public_id(id) && sheet.strip_suffix(".jpg").is_some_and(is_number) =>
        {
            Kind::Sheet
        }
        [id, rendition, file] if ids::is_public_id(id) && is_rendition(rendition) => match *file {
            "index.m3u8" => Kind::Playlist,
            "dvr.m3u8" if root == "live" => Kind::Playlist,
            "init.mp4" => Kind::Init,
            f => {
                let stem = f.strip_suffix(".m4s")?;
                match stem.split_once('.') {
                    None if is_number(stem) => Kind::Segment,
                    Some((n, p)) if is_number(n) && is_number(p) => Kind::Part,
                    _ => return None,
                }
            }
        },
        _ => return None,
    };
    Some((Path::from(format!("{root}/{tail}")), kind))
}

fn content_type(kind: Kind, tail: &str) -> &'static str {
    match kind {
        Kind::Playlist => "application/vnd.apple.mpegurl",
        Kind::Mpd => "application/dash+xml",
        Kind::Init if tail.contains("/audio/") => "audio/mp4",
        Kind::Init => "video/mp4",
        Kind::Segment | Kind::Part => "video/iso.segment",
        Kind::Poster | Kind::Sheet => "image/jpeg",
        Kind::Download => "video/mp4",
        Kind::Thumbnails => "text/vtt",
    }
}

fn cache_control(root: &str, kind: Kind) -> &'static str {
    match (root, kind) {
        // a sheet is written once under a name never reused
        (_, Kind::Segment | Kind::Part | Kind::Download | Kind::Sheet) | ("vod", Kind::Init) => {
            SEGMENT_CACHE
        }
        (_, Kind::Init) => LIVE_INIT_CACHE,
        (_, Kind::Poster) => POSTER_CACHE,
        ("vod", _) => VOD_MANIFEST_CACHE,
        _ => LIVE_MANIFEST_CACHE,
    }
}

fn not_found() -> HttpResponse {
    HttpResponse::NotFound()
        .insert_header((header::CACHE_CONTROL, NOT_FOUND_CACHE))
        .finish()
}

/// A single `bytes=` range (the unit is case-insensitive); `None` for anything else: multi-range
/// requests and malformed headers are served whole (allowed by RFC 9110 §14.2). Whether the
/// range fits the object is [`satisfiable`]'s question.
pub fn parse_range(value: &HeaderValue) -> Option<GetRange> {
    let (unit, spec) = value.to_str().ok()?.trim().split_once('=')?;
    if !unit.trim().eq_ignore_ascii_case("bytes") || spec.contains(',') {
        return None;
    }
    let (start, end) = spec.split_once('-')?;
    // Digits only; a number too large for u64 is past the end of any object.
    let number = |s: &str| -> Option<u64> {
        (!s.is_empty() && s.bytes().all(|b| b.is_ascii_digit()))
            .then(|| s.parse().unwrap_or(u64::MAX))
    };
    match (start.trim(), end.trim()) {
        ("", n) => Some(GetRange::Suffix(number(n)?)),
        (s, "") => Some(GetRange::Offset(number(s)?)),
        (s, e) => {
            let (s, e) = (number(s)?, number(e)?);
            (e >= s).then(|| GetRange::Bounded(s..e.saturating_add(1)))
        }
    }
}

/// The bytes of an object of `size` that `range` selects, or `None` when it selects none (then
/// the answer is 416): the first byte is at or past the end, or the suffix is empty. A last
/// byte past the end and a suffix longer than the object are cut to the object.
pub fn satisfiable(range: &GetRange, size: u64) -> Option<Range<u64>> {
    range.as_range(size).ok().filter(|r| r.start < r.end)
}

/// 416 for an object of `size` bytes.
pub fn unsatisfiable(size: u64) -> HttpResponse {
    HttpResponse::build(StatusCode::RANGE_NOT_SATISFIABLE)
        .insert_header((header::CONTENT_RANGE, format!("bytes */{size}")))
        .insert_header((header::CACHE_CONTROL, NOT_FOUND_CACHE))
        .finish()
}

/// A `HEAD` answer's body: it declares the object's size, so `Content-Length` is what `GET`
/// sends, and yields no bytes (actix writes no body for `HEAD` anyway).
pub struct HeadBody(pub u64);

impl MessageBody for HeadBody {
    type Error = Infallible;

    fn size(&self) -> BodySize {
        BodySize::Sized(self.0)
    }

    fn poll_next(
        self: Pin<&mut Self>,
        _: &mut Context<'_>,
    ) -> Poll<Option<Result<bytes::Bytes, Infallible>>> {
        Poll::Ready(None)
    }
}

/// `live/…` or `vod/…` (the scope's `root`): hot objects from memory, a local store's cold
/// files mapped, a bucket's objects streamed.
async fn object(req: HttpRequest, state: web::Data<HttpState>, root: &'static str) -> HttpResponse {
    match *req.method() {
        Method::GET | Method::HEAD => {}
        Method::OPTIONS => return preflight().await,
        _ => {
            return HttpResponse::MethodNotAllowed()
                .insert_header((header::ALLOW, ALLOWED_METHODS))
                .finish()
        }
    }
    // the scope matched `/{root}`; paths Strata writes need no percent-decoding, so one that has
    // any is not one of them
    let Some(tail) = req
        .path()
        .strip_prefix('/')
        .and_then(|p| p.strip_prefix(root))
        .and_then(|t| t.strip_prefix('/'))
    else {
        return not_found();
    };
    let Some((location, kind)) = classify(root, tail) else {
        return not_found();
    };
    if root == "live" {
        if let Some(answer) = low_latency_answer(&req, &state, kind, tail).await {
            state.hot.watch(location.as_ref());
            return answer;
        }
    }
    if let (Kind::Segment, Some(base)) = (kind, &state.segment_base_url) {
        return HttpResponse::Found()
            .insert_header((header::LOCATION, format!("{base}/{root}/{tail}")))
            .insert_header((header::CACHE_CONTROL, REDIRECT_CACHE))
            .finish();
    }
    let (content_type, cache) = (content_type(kind, tail), cache_control(root, kind));
    let in_memory = |body, etag, modified| serve::InMemory {
        body,
        etag,
        last_modified: modified,
        content_type,
        cache_control: cache,
    };
    if root == "live" || kind == Kind::Segment {
        if let Some(hot) = state.hot.get(location.as_ref()) {
            return serve::answer(
                &req,
                in_memory(hot.body.clone(), Some(&hot.etag), Some(&hot.last_modified)),
            );
        }
        match fill(&state, &location).await {
            Filled::Read(hot) => {
                return serve::answer(
                    &req,
                    in_memory(hot.body.clone(), Some(&hot.etag), Some(&hot.last_modified)),
                )
            }
            Filled::Missing => return not_found(),
            Filled::Elsewhere => {}
        }
    }
    if let Some(local) = &state.local_root {
        return match cold::open(local, location.as_ref()).await {
            Ok(cold::Opened::TooLarge) => {
                from_store(&req, &state, &location, content_type, cache).await
            }
            Ok(cold::Opened::File(file)) => serve::answer(
                &req,
                in_memory(file.body, Some(&file.etag), Some(&file.last_modified)),
            ),
            Ok(cold::Opened::Missing) => not_found(),
            Err(e) => {
                tracing::warn!(object = %location, error = %e, "reading a stored file failed");
                HttpResponse::ServiceUnavailable()
                    .insert_header((header::CACHE_CONTROL, "no-store"))
                    .finish()
            }
        };
    }
    from_store(&req, &state, &location, content_type, cache).await
}

/// What a broadcast live on this node answers from memory: its low-latency playlists, a
/// growing segment (low-latency DASH), or the wait for the part its playlist hints at (after
/// which the part is read as any other object).
async fn low_latency_answer(
    req: &HttpRequest,
    state: &HttpState,
    kind: Kind,
    tail: &str,
) -> Option<HttpResponse> {
    let mut parts = tail.split('/');
    let (Some(id), Some(rendition), Some(file), None) =
        (parts.next(), parts.next(), parts.next(), parts.next())
    else {
        return None;
    };
    match kind {
        // the DVR view is plain HLS from the store
        Kind::Playlist if file == "index.m3u8" => {
            low_latency::playlist(req, &state.edges, &state.rendered, id, rendition).await
        }
        Kind::Segment
            if req.method() == Method::GET && !req.headers().contains_key(header::RANGE) =>
        {
            let number = file.trim_end_matches(".m4s").parse().ok()?;
            low_latency::growing_segment(state, id, rendition, number)
        }
        Kind::Part => {
            let (n, p) = file.trim_end_matches(".m4s").split_once('.')?;
            if let (Ok(n), Ok(p)) = (n.parse(), p.parse()) {
                low_latency::wait_for_hinted_part(&state.edges, id, rendition, n, p).await;
            }
            None
        }
        _ => None,
    }
}

/// What reading a live object missing from the hot objects gave.
enum Filled {
    /// Its bytes, kept for the next request unless a write raced the read.
    Read(std::sync::Arc<crate::hot::HotObject>),
    /// The store has no such object.
    Missing,
    /// Not to be kept (the hot objects are off, or it is too large) or the store failed: the
    /// caller reads it the cold way.
    Elsewhere,
}

/// Reads a hot object (live, or a VOD's segment) missing from the hot objects whole from the
/// store, and keeps it.
async fn fill(state: &HttpState, location: &Path) -> Filled {
    if state.hot.max_object() == 0 || !crate::hot::is_hot(location.as_ref()) {
        return Filled::Elsewhere;
    }
    let ticket = state.hot.ticket(location.as_ref());
    let got = match state.store.get(location).await {
        Ok(got) => got,
        Err(object_store::Error::NotFound { .. }) => return Filled::Missing,
        Err(_) => return Filled::Elsewhere,
    };
    if got.meta.size > state.hot.max_object() {
        return Filled::Elsewhere;
    }
    let meta = got.meta.clone();
    let Ok(body) = got.bytes().await else {
        return Filled::Elsewhere;
    };
    let object = crate::hot::HotObject::new(
        location.as_ref(),
        body,
        meta.e_tag.as_deref(),
        meta.last_modified.into(),
    );
    // kept or not (a write raced the read), this answer has the bytes it read
    let read = std::sync::Arc::new(object);
    state.hot.fill(location.as_ref(), read.clone(), ticket);
    Filled::Read(read)
}

/// An object of a store that is not on local disk (a bucket): its bytes are streamed as the
/// store sends them, never gathered whole.
async fn from_store(
    req: &HttpRequest,
    state: &HttpState,
    location: &Path,
    content_type: &'static str,
    cache: &'static str,
) -> HttpResponse {
    let head = req.method() == Method::HEAD;
    let range = if head {
        None
    } else {
        req.headers().get(header::RANGE).and_then(parse_range)
    };
    let options = GetOptions {
        if_none_match: req
            .headers()
            .get(header::IF_NONE_MATCH)
            .and_then(|v| v.to_str().ok())
            .map(str::to_string),
        range: range.clone(),
        head,
        ..Default::default()
    };
    let result = match state.store.get_opts(location, options).await {
        Ok(r) => r,
        Err(object_store::Error::NotFound { .. }) => return not_found(),
        Err(object_store::Error::NotModified { .. }) => {
            return HttpResponse::NotModified()
                .insert_header((header::CACHE_CONTROL, cache))
                .finish()
        }
        Err(e) => {
            // Stores word an unsatisfiable range differently; the object's size decides.
            if let Some(range) = &range {
                if let Ok(meta) = state.store.head(location).await {
                    if satisfiable(range, meta.size).is_none() {
                        return unsatisfiable(meta.size);
                    }
                }
            }
            return store_failure(location, &e);
        }
    };
    let meta = result.meta.clone();
    let served = result.range.clone();
    // Some stores serve an empty range (`bytes=-0`) without complaint.
    if range
        .as_ref()
        .is_some_and(|r| satisfiable(r, meta.size).is_none() || served.is_empty())
    {
        return unsatisfiable(meta.size);
    }
    let mut response = if range.is_some() {
        let mut r = HttpResponse::PartialContent();
        r.insert_header((
            header::CONTENT_RANGE,
            format!(
                "bytes {}-{}/{}",
                served.start,
                served.end.saturating_sub(1),
                meta.size
            ),
        ));
        r
    } else {
        HttpResponse::Ok()
    };
    response
        .insert_header((header::CONTENT_TYPE, content_type))
        .insert_header((header::CACHE_CONTROL, cache))
        .insert_header((header::ACCEPT_RANGES, "bytes"))
        .insert_header((
            header::LAST_MODIFIED,
            crate::hot::http_date(meta.last_modified.into()),
        ));
    if let Some(etag) = &meta.e_tag {
        response.insert_header((header::ETAG, format!("\"{}\"", etag.trim_matches('"'))));
    }
    if head {
        return response.body(HeadBody(meta.size));
    }
    let location = location.clone();
    let length = served.end - served.start;
    let body = result.into_stream().map(move |chunk| {
        chunk.map_err(|e| {
            tracing::warn!(object = %location, error = %e, "store read failed mid-answer");
            std::io::Error::other(e.to_string())
        })
    });
    response.body(SizedStream::new(length, body))
}

/// The store failed (not "not found"): 503, never cached.
fn store_failure(location: &Path, error: &object_store::Error) -> HttpResponse {
    tracing::warn!(object = %location, %error, "store read failed");
    HttpResponse::ServiceUnavailable()
        .insert_header((header::CACHE_CONTROL, "no-store"))
        .finish()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_paths_strata_writes_are_classified() {
        let id = "abcdefghij012345";
        assert_eq!(
            classify("live", &format!("{id}/master.m3u8")).map(|c| c.1),
            Some(Kind::Playlist)
        );
        assert_eq!(
            classify("live", &format!("{id}/source/12.m4s")).map(|c| c.1),
            Some(Kind::Segment)
        );
        assert_eq!(
            classify("live", &format!("{id}/source/12.3.m4s")).map(|c| c.1),
            Some(Kind::Part)
        );
        assert_eq!(
            classify("vod", &format!("{id}/audio/init.mp4")).map(|c| c.1),
            Some(Kind::Init)
        );
        assert_eq!(
            classify("vod", &format!("{id}/clip.mp4")).map(|c| c.1),
            Some(Kind::Download)
        );
        assert!(classify("live", &format!("{id}/clip.mp4")).is_none());
        assert_eq!(
            classify("vod", &format!("{id}/thumbnails.vtt")).map(|c| c.1),
            Some(Kind::Thumbnails)
        );
        assert_eq!(
            classify("vod", &format!("{id}/previews/3.jpg")).map(|c| c.1),
            Some(Kind::Sheet)
        );
        // a rendition may be called `previews`
        assert_eq!(
            classify("vod", &format!("{id}/previews/3.m4s")).map(|c| c.1),
            Some(Kind::Segment)
        );
        for bad in ["previews/x.jpg", "previews/3.png", "previews/../3.jpg"] {
            assert!(classify("vod", &format!("{id}/{bad}")).is_none(), "{bad}");
        }
        assert_eq!(
            classify("live", &format!("{id}/thumbnails.vtt")).map(|c| c.1),
            Some(Kind::Thumbnails)
        );
        assert_eq!(
            classify("live", &format!("{id}/previews/1234.jpg")).map(|c| c.1),
            Some(Kind::Sheet)
        );
        for dvr in ["dvr.m3u8", "source/dvr.m3u8", "dvr.mpd"] {
            assert!(classify("live", &format!("{id}/{dvr}")).is_some(), "{dvr}");
            assert!(classify("vod", &format!("{id}/{dvr}")).is_none(), "{dvr}");
        }
        for bad in [
            "../etc/passwd".to_string(),
            format!("{id}/../../x/master.m3u8"),
            format!("{id}/source/../index.m3u8"),
            format!("{id}/Source/1.m4s"),
            format!("{id}/source/1.m4s.tmp"),
            format!("{id}/source/-1.m4s"),
            "ABCDEFGHIJ012345/master.m3u8".into(),
            format!("{id}/source/x/1.m4s"),
        ] {
            assert!(classify("live", &bad).is_none(), "{bad}");
        }
    }

    #[test]
    fn ranges() {
        let h = |s: &'static str| HeaderValue::from_static(s);
        assert_eq!(
            parse_range(&h("bytes=0-99")),
            Some(GetRange::Bounded(0..100))
        );
        assert_eq!(parse_range(&h("bytes=100-")), Some(GetRange::Offset(100)));
        assert_eq!(parse_range(&h("bytes=-20")), Some(GetRange::Suffix(20)));
        assert_eq!(parse_range(&h("bytes=9-3")), None);
        assert_eq!(parse_range(&h("items=0-1")), None);
        assert_eq!(parse_range(&h("Bytes=0-0")), Some(GetRange::Bounded(0..1)));
        assert_eq!(parse_range(&h("bytes=-0")), Some(GetRange::Suffix(0)));
        for ignored in [
            "bytes=0-1,4-5",
            "bytes=-",
            "bytes=",
            "bytes=+1-2",
            "bytes=1-+2",
            "bytes=--1",
            "bytes=a-",
            "bytes=1",
            "0-1",
        ] {
            assert_eq!(parse_range(&h(ignored)), None, "{ignored}");
        }
    }

    #[test]
    fn a_range_that_selects_no_byte_is_unsatisfiable() {
        let size = 100;
        let s = |spec: &'static str| {
            parse_range(&HeaderValue::from_static(spec)).and_then(|r| satisfiable(&r, size))
        };
        assert_eq!(s("bytes=-0"), None, "an empty suffix selects nothing");
        assert_eq!(s("bytes=100-"), None);
        assert_eq!(s("bytes=100-100"), None);
        assert_eq!(s("bytes=250-300"), None);
        assert_eq!(s("bytes=99999999999999999999999-"), None);
        assert_eq!(s("bytes=0-99999999999999999999999"), Some(0..100));
        assert_eq!(s("bytes=0-0"), Some(0..1));
        assert_eq!(s("bytes=99-"), Some(99..100));
        assert_eq!(
            s("bytes=90-1000"),
            Some(90..100),
            "the end is cut to the object"
        );
        assert_eq!(s("bytes=-1"), Some(99..100));
        assert_eq!(
            s("bytes=-500"),
            Some(0..100),
            "a long suffix is the whole object"
        );
        assert_eq!(
            satisfiable(&GetRange::Suffix(5), 0),
            None,
            "an empty object has no byte"
        );
        assert_eq!(satisfiable(&GetRange::Offset(0), 0), None);
    }

    #[test]
    fn unsatisfiable_answers_name_the_size() {
        let response = unsatisfiable(1234);
        assert_eq!(response.status(), StatusCode::RANGE_NOT_SATISFIABLE);
        assert_eq!(
            response.headers().get(header::CONTENT_RANGE),
            Some(&HeaderValue::from_static("bytes */1234"))
        );
    }

    #[test]
    fn head_bodies_declare_the_object_size_and_hold_no_bytes() {
        let body = HeadBody(4321);
        assert_eq!(body.size(), BodySize::Sized(4321));
        let mut body = std::pin::pin!(body);
        let waker = futures::task::noop_waker();
        let mut cx = Context::from_waker(&waker);
        assert!(matches!(
            body.as_mut().poll_next(&mut cx),
            Poll::Ready(None)
        ));
    }
}
