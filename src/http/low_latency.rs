//! Low-latency HLS at the origin. On the node that publishes a broadcast, a live rendition's
//! `index.m3u8` is rendered from the broadcast's `LiveEdge`, never read from the store:
//! `_HLS_msn` (+ `_HLS_part`) holds the request until the playlist has that segment or part
//! (RFC 8216bis §6.2.5.2; 400 for more than two segments ahead, 503 after three target
//! durations), and `_HLS_skip=YES` answers a delta update. A request for the part the playlist
//! hints at (`EXT-X-PRELOAD-HINT`) waits until that part is stored (or its segment ends
//! without it). Blocking answers are cacheable by their full URL, query included, for six
//! target durations: a CDN collapses the viewers waiting for one part into one request.
//!
//! A stream live on another node, and every ended one, is answered from the store.

use std::sync::Arc;
use std::time::Duration;

use actix_web::http::header;
use actix_web::{HttpRequest, HttpResponse};
use serde::Deserialize;
use tokio::sync::watch;

use crate::edge::LiveEdges;
use crate::manifest::ll_hls::{self, LiveEdge, Readiness};

/// A blocking request is answered within this many target durations (RFC 8216bis §6.2.5.2).
const BLOCK_TARGET_DURATIONS: u64 = 3;

/// The playlist delivery directives of RFC 8216bis §6.2.5.
#[derive(Debug, Deserialize)]
struct Directives {
    #[serde(rename = "_HLS_msn")]
    msn: Option<u64>,
    #[serde(rename = "_HLS_part")]
    part: Option<u32>,
    #[serde(rename = "_HLS_skip")]
    skip: Option<String>,
}

fn bad_request(why: &'static str) -> HttpResponse {
    HttpResponse::BadRequest()
        .insert_header((header::CACHE_CONTROL, "no-store"))
        .body(why)
}

fn index_of(edge: &LiveEdge, rendition: &str) -> Option<usize> {
    edge.renditions.iter().position(|r| r.name == rendition)
}

/// `rendition`'s low-latency playlist of broadcast `id`, if it is live on this node (`None`:
/// answer from the store).
pub async fn playlist(
    req: &HttpRequest,
    edges: &LiveEdges,
    rendered: &Rendered,
    id: &str,
    rendition: &str,
) -> Option<HttpResponse> {
    let mut rx = edges.get(id)?;
    let target = rx.borrow().target_duration.max(1);
    index_of(&rx.borrow(), rendition)?;
    let Ok(directives) =
        actix_web::web::Query::<Directives>::from_query(req.query_string()).map(|q| q.0)
    else {
        return Some(bad_request("malformed _HLS_ directive"));
    };
    let skip = match directives.skip.as_deref() {
        None => false,
        Some("YES" | "v2") => true,
        Some(_) => return Some(bad_request("_HLS_skip must be YES or v2")),
    };
    let blocking = match (directives.msn, directives.part) {
        (None, Some(_)) => return Some(bad_request("_HLS_part without _HLS_msn")),
        (None, None) => false,
        (Some(msn), part) => {
            let limit = Duration::from_secs(BLOCK_TARGET_DURATIONS * target);
            let wait = wait_until(&mut rx, limit, |edge| {
                index_of(edge, rendition)
                    .and_then(|i| edge.renditions.get(i))
                    .map_or(Readiness::Ready, |r| r.readiness(msn, part))
            });
            match wait.await {
                Waited::Ready => true,
                Waited::TooFar => return Some(bad_request("_HLS_msn is too far ahead")),
                Waited::TimedOut => {
                    return Some(
                        HttpResponse::ServiceUnavailable()
                            .insert_header((header::CACHE_CONTROL, "no-store"))
                            .finish(),
                    )
                }
                // the broadcast ended meanwhile: its last playlist is in the store
                Waited::Gone => return None,
            }
        }
    };
    let edge: Arc<LiveEdge> = rx.borrow().clone();
    let index = index_of(&edge, rendition)?;
    let text = rendered.get(edges, id, &edge, index, skip);
    if !blocking {
        return Some(super::serve::answer(
            req,
            super::serve::InMemory {
                body: text.body.clone(),
                etag: Some(&text.etag),
                last_modified: None,
                content_type: PLAYLIST_TYPE,
                cache_control: super::playback::LIVE_MANIFEST_CACHE,
            },
        ));
    }
    Some(
        HttpResponse::Ok()
            .insert_header((header::CONTENT_TYPE, PLAYLIST_TYPE))
            .insert_header((
                header::CACHE_CONTROL,
                format!("public, max-age={}", 6 * target),
            ))
            .insert_header((header::ETAG, text.etag.clone()))
            .body(text.body.clone()),
    )
}

const PLAYLIST_TYPE: &str = "application/vnd.apple.mpegurl";

/// One rendering of a media playlist and its validator.
pub struct Text {
    pub body: bytes::Bytes,
    pub etag: header::HeaderValue,
}

/// Each live broadcast's media playlists, rendered once per edge (a new edge comes with every
/// part) rather than once per request: per broadcast id, the edge they were rendered from and
/// the renderings made from it, by rendition and delta-or-not.
#[derive(Default)]
pub struct Rendered {
    by_broadcast: std::sync::Mutex<std::collections::HashMap<String, Renderings>>,
}

struct Renderings {
    edge: Arc<LiveEdge>,
    texts: Vec<((usize, bool), Arc<Text>)>,
}

impl Rendered {
    /// Rendition `index`'s playlist of `edge` (broadcast `id`), rendered at most once.
    /// A broadcast seen for the first time drops the renderings of those no longer live.
    fn get(
        &self,
        edges: &LiveEdges,
        id: &str,
        edge: &Arc<LiveEdge>,
        index: usize,
        skip: bool,
    ) -> Arc<Text> {
        let key = (index, skip);
        {
            let map = self.lock();
            if let Some(r) = map.get(id).filter(|r| Arc::ptr_eq(&r.edge, edge)) {
                if let Some((_, text)) = r.texts.iter().find(|(k, _)| *k == key) {
                    return text.clone();
                }
            }
        }
        // rendered outside the lock; two requests racing render twice, harmlessly
        let body = bytes::Bytes::from(ll_hls::media_playlist(edge, index, skip));
        let etag =
            header::HeaderValue::from_str(&format!("\"{:016x}\"", crate::hot::digest(&body)))
                .unwrap_or(header::HeaderValue::from_static("\"0\""));
        let text = Arc::new(Text { body, etag });
        let mut map = self.lock();
        if !map.contains_key(id) {
            map.retain(|id, _| edges.get(id).is_some());
        }
        let entry = map.entry(id.to_string()).or_insert_with(|| Renderings {
            edge: edge.clone(),
            texts: Vec::new(),
        });
        if !Arc::ptr_eq(&entry.edge, edge) {
            *entry = Renderings {
                edge: edge.clone(),
                texts: Vec::new(),
            };
        }
        entry.texts.push((key, text.clone()));
        text
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, std::collections::HashMap<String, Renderings>> {
        self.by_broadcast
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }
}

/// Waits while part `index` of segment `number` of `rendition` is the one the playlist hints
/// at and not stored yet, for at most one target duration (then the store answers).
pub async fn wait_for_hinted_part(
    edges: &LiveEdges,
    id: &str,
    rendition: &str,
    number: u64,
    index: u32,
) {
    let Some(mut rx) = edges.get(id) else {
        return;
    };
    let limit = Duration::from_secs(rx.borrow().target_duration.max(1));
    let hinted = {
        let edge = rx.borrow();
        edge.rendition(rendition)
            .is_some_and(|r| r.next_part == (number, index))
    };
    if !hinted {
        return;
    }
    // until it is stored and listed, or it stops being the part to come (its segment was
    // listed without it)
    let _ = wait_until(&mut rx, limit, |edge| match edge.rendition(rendition) {
        Some(r)
            if !r.has_part(number, index)
                && (r.next_part == (number, index) || r.open_number < number) =>
        {
            Readiness::Wait
        }
        _ => Readiness::Ready,
    })
    .await;
}

enum Waited {
    Ready,
    TooFar,
    TimedOut,
    /// The broadcast stopped serving its edge.
    Gone,
}

async fn wait_until(
    rx: &mut watch::Receiver<Arc<LiveEdge>>,
    limit: Duration,
    mut check: impl FnMut(&LiveEdge) -> Readiness,
) -> Waited {
    let deadline = tokio::time::Instant::now() + limit;
    loop {
        match check(&rx.borrow_and_update()) {
            Readiness::Ready => return Waited::Ready,
            Readiness::TooFar => return Waited::TooFar,
            Readiness::Wait => {}
        }
        match tokio::time::timeout_at(deadline, rx.changed()).await {
            Ok(Ok(())) => {}
            Ok(Err(_)) => return Waited::Gone,
            Err(_) => return Waited::TimedOut,
        }
    }
}

/// Segment `number` of `rendition` while this node produces it (low-latency DASH): `None`
/// unless it is the segment being produced or the one after it (whose first parts may wait
/// for the other renditions to finish the one before). The answer streams (chunked) every part as soon
/// as it is stored, then whatever of the stored segment follows the parts sent (all its parts
/// were sent, normally); a segment that stops being produced without its parts ends the
/// response with an error, so no client or cache takes a short body for the segment.
pub fn growing_segment(
    state: &super::HttpState,
    id: &str,
    rendition: &str,
    number: u64,
) -> Option<HttpResponse> {
    let rx = state.edges.get(id)?;
    let (producing, target) = {
        let edge = rx.borrow();
        let r = edge.rendition(rendition)?;
        let producing = r.open_number == number || r.open_number + 1 == number;
        (producing, edge.target_duration.max(1))
    };
    if !producing {
        return None;
    }
    let root = format!("live/{id}/{rendition}");
    let growing = Growing {
        rx,
        store: state.store.clone(),
        rendition: rendition.to_string(),
        root,
        number,
        next_part: 0,
        sent: 0,
        done: false,
        limit: Duration::from_secs(BLOCK_TARGET_DURATIONS * target),
    };
    let body = futures::stream::unfold(growing, |mut g| async move {
        let chunk = g.next_chunk().await?;
        Some((chunk, g))
    });
    Some(
        HttpResponse::Ok()
            .insert_header((header::CONTENT_TYPE, "video/iso.segment"))
            .insert_header((header::CACHE_CONTROL, super::playback::SEGMENT_CACHE))
            .streaming(body),
    )
}

/// The state of one growing segment's response.
struct Growing {
    rx: watch::Receiver<Arc<LiveEdge>>,
    store: Arc<dyn object_store::ObjectStore>,
    rendition: String,
    /// `live/{id}/{rendition}`.
    root: String,
    number: u64,
    next_part: u32,
    /// Bytes sent so far (the parts before `next_part`).
    sent: u64,
    done: bool,
    limit: Duration,
}

/// What the response failed on: the connection is closed without ending the body.
fn truncated(why: String) -> std::io::Error {
    std::io::Error::other(why)
}

impl Growing {
    async fn next_chunk(&mut self) -> Option<Result<bytes::Bytes, std::io::Error>> {
        if self.done {
            return None;
        }
        let (number, part) = (self.number, self.next_part);
        let rendition = self.rendition.clone();
        let waited = wait_until(&mut self.rx, self.limit, |edge| {
            match edge.rendition(&rendition) {
                Some(r) if r.open_number <= number && !r.has_part(number, part) => Readiness::Wait,
                _ => Readiness::Ready,
            }
        })
        .await;
        let (has_part, listed_parts) = {
            let edge = self.rx.borrow();
            let r = edge.rendition(&self.rendition);
            let has = r.is_some_and(|r| r.has_part(number, part));
            let listed = r
                .and_then(|r| r.segments.iter().find(|s| s.number == number))
                .map(|s| s.parts.len());
            (has, listed)
        };
        use object_store::ObjectStoreExt;
        if has_part {
            let path = object_store::path::Path::from(format!("{}/{number}.{part}.m4s", self.root));
            let bytes = match self.store.get(&path).await {
                Ok(got) => got.bytes().await,
                Err(e) => Err(e),
            };
            return Some(match bytes {
                Ok(bytes) => {
                    self.next_part += 1;
                    self.sent += bytes.len() as u64;
                    Ok(bytes)
                }
                Err(e) => {
                    self.done = true;
                    Err(truncated(format!("part {path}: {e}")))
                }
            });
        }
        self.done = true;
        match (waited, listed_parts) {
            // every part of the listed segment was sent
            (_, Some(parts)) if parts == part as usize && parts > 0 => None,
            // listed, or at least stored, without all of its parts: the rest from the segment
            (Waited::Ready | Waited::Gone, _) => {
                let path = object_store::path::Path::from(format!("{}/{number}.m4s", self.root));
                let options = object_store::GetOptions {
                    range: (self.sent > 0).then_some(object_store::GetRange::Offset(self.sent)),
                    ..Default::default()
                };
                let rest = match self.store.get_opts(&path, options).await {
                    Ok(got) => got.bytes().await,
                    Err(e) => Err(e),
                };
                Some(rest.map_err(|e| truncated(format!("segment {path}: {e}"))))
            }
            (Waited::TimedOut | Waited::TooFar, _) => Some(Err(truncated(format!(
                "segment {number} of {} was not produced in time",
                self.rendition
            )))),
        }
    }
}
