//! Answers for an object whose bytes are in memory (a hot object, a mapped cold file, a
//! rendered playlist): validators, conditional requests, `HEAD` and a single range, with
//! every header built before the request came.
//!
//! `If-None-Match` is compared weakly (RFC 9110 §13.1.2) against the object's ETag, `*` matches
//! any object, and a match is `304` (it wins over `Range`, §13.2.2). `HEAD` answers what `GET`
//! would with no body. A single `bytes=` range is `206`; a range that selects no byte is `416`
//! (see `playback::parse_range` and `playback::satisfiable`).
//!
//! actix-web copies each body chunk whole into the connection's write buffer before writing it,
//! so the chunk size is a trade: large chunks mean few system calls (an 833 KB segment in one
//! chunk goes out at 0.86× nginx's `sendfile` on one core, in 32 KiB chunks at 0.38×), small
//! ones bound what every connection holds (10,000 viewers with whole segments in flight held
//! 1.5 GiB). So a body goes out in slices of the same buffer (no copy) of [`chunk_size`]: the
//! connections open now share `pacing::WRITE_BUFFERS`, between [`MIN_CHUNK`] and
//! [`MAX_CHUNK`] each.

use std::convert::Infallible;

use actix_web::body::{MessageBody, SizedStream};
use actix_web::http::header::{self, HeaderValue};
use actix_web::http::{Method, StatusCode};
use actix_web::{HttpRequest, HttpResponse, HttpResponseBuilder};
use bytes::Bytes;

use super::playback::{parse_range, satisfiable, unsatisfiable, HeadBody};

/// The smallest slice of a body handed to the server at a time.
pub const MIN_CHUNK: usize = 32 * 1024;
/// The largest.
pub const MAX_CHUNK: usize = 4 << 20;

/// The slice of a body handed to the server at a time, with `open` connections sharing
/// `pacing::WRITE_BUFFERS`.
pub fn chunk_size(open: usize) -> usize {
    (super::pacing::WRITE_BUFFERS / open.max(1)).clamp(MIN_CHUNK, MAX_CHUNK)
}

/// An object ready to be answered.
pub struct InMemory<'a> {
    pub body: Bytes,
    pub etag: Option<&'a HeaderValue>,
    pub last_modified: Option<&'a HeaderValue>,
    pub content_type: &'static str,
    pub cache_control: &'static str,
}

/// Whether `If-None-Match` (a list of entity tags, or `*`) names `etag` (weak comparison).
pub fn none_match(req: &HttpRequest, etag: Option<&HeaderValue>) -> bool {
    let (Some(header), Some(etag)) = (req.headers().get(header::IF_NONE_MATCH), etag) else {
        return false;
    };
    let (Ok(list), Ok(etag)) = (header.to_str(), etag.to_str()) else {
        return false;
    };
    fn opaque(tag: &str) -> &str {
        tag.trim().trim_start_matches("W/")
    }
    let ours = opaque(etag);
    list.split(',')
        .any(|tag| tag.trim() == "*" || opaque(tag) == ours)
}

fn headers(response: &mut HttpResponseBuilder, object: &InMemory<'_>) {
    response
        .insert_header((header::CACHE_CONTROL, object.cache_control))
        .insert_header((header::ACCEPT_RANGES, "bytes"));
    if let Some(etag) = object.etag {
        response.insert_header((header::ETAG, etag.clone()));
    }
    if let Some(modified) = object.last_modified {
        response.insert_header((header::LAST_MODIFIED, modified.clone()));
    }
}

/// The answer to `req` (`GET` or `HEAD`) for `object`.
pub fn answer(req: &HttpRequest, object: InMemory<'_>) -> HttpResponse {
    if none_match(req, object.etag) {
        let mut response = HttpResponse::NotModified();
        headers(&mut response, &object);
        return response.finish();
    }
    let size = object.body.len() as u64;
    let head = req.method() == Method::HEAD;
    let range = if head {
        None
    } else {
        req.headers().get(header::RANGE).and_then(parse_range)
    };
    let (mut response, body) = match range {
        None => (HttpResponse::Ok(), object.body.clone()),
        Some(range) => {
            let Some(bytes) = satisfiable(&range, size) else {
                return unsatisfiable(size);
            };
            let mut response = HttpResponse::build(StatusCode::PARTIAL_CONTENT);
            response.insert_header((
                header::CONTENT_RANGE,
                format!("bytes {}-{}/{size}", bytes.start, bytes.end - 1),
            ));
            // within the body: `satisfiable` cut the range to the object
            (
                response,
                object.body.slice(bytes.start as usize..bytes.end as usize),
            )
        }
    };
    response.insert_header((header::CONTENT_TYPE, object.content_type));
    headers(&mut response, &object);
    if head {
        return response.body(HeadBody(size));
    }
    let chunk = chunk_size(super::pacing::open_connections());
    response.body(chunked(body, chunk))
}

/// `body` as `chunk`-sized slices of it (no copy), its length declared.
pub fn chunked(body: Bytes, chunk: usize) -> impl MessageBody {
    let size = body.len();
    let chunk = chunk.max(1);
    let slices = futures::stream::iter(
        (0..size)
            .step_by(chunk)
            .map(move |start| Ok::<_, Infallible>(body.slice(start..(start + chunk).min(size)))),
    );
    SizedStream::new(size as u64, slices)
}

#[cfg(test)]
mod tests {
    use super::*;
    use actix_web::body::to_bytes;
    use actix_web::test::TestRequest;

    fn object(etag: &HeaderValue) -> InMemory<'_> {
        InMemory {
            body: Bytes::from((0..=255u8).cycle().take(200_000).collect::<Vec<_>>()),
            etag: Some(etag),
            last_modified: None,
            content_type: "video/iso.segment",
            cache_control: "public, max-age=1",
        }
    }

    #[test]
    fn chunks_shrink_as_connections_grow_within_their_bounds() {
        assert_eq!(chunk_size(0), MAX_CHUNK);
        assert_eq!(chunk_size(64), MAX_CHUNK);
        assert_eq!(chunk_size(1000), 268_435);
        assert_eq!(chunk_size(10_000), MIN_CHUNK);
    }

    #[actix_web::test]
    async fn slices_add_up_to_the_body() {
        let body = Bytes::from((0..=255u8).cycle().take(100_001).collect::<Vec<_>>());
        for chunk in [1, 4096, 100_000, 100_001, 1 << 20] {
            let sent = to_bytes(chunked(body.clone(), chunk)).await.ok();
            let sent = sent.expect("the body is read");
            assert_eq!(sent, body, "{chunk}");
        }
    }

    #[actix_web::test]
    async fn conditional_range_and_head_answers() {
        let etag = HeaderValue::from_static("\"a-1\"");
        let get = |headers: &[(&str, &str)]| {
            let mut req = TestRequest::get();
            for (name, value) in headers {
                req = req.insert_header((*name, *value));
            }
            answer(&req.to_http_request(), object(&etag))
        };
        let whole = get(&[]);
        assert_eq!(whole.status(), 200);
        assert_eq!(whole.headers().get(header::ETAG).unwrap(), "\"a-1\"");
        let body = to_bytes(whole.into_body()).await.unwrap();
        assert_eq!(body, object(&etag).body, "the slices add up to the object");

        for matching in ["\"a-1\"", "W/\"a-1\"", "\"x\", \"a-1\"", "*"] {
            let answer = get(&[("if-none-match", matching), ("range", "bytes=0-1")]);
            assert_eq!(answer.status(), 304, "{matching}");
        }
        assert_eq!(get(&[("if-none-match", "\"a-2\"")]).status(), 200);

        let part = get(&[("range", "bytes=199998-")]);
        assert_eq!(part.status(), 206);
        assert_eq!(
            part.headers().get(header::CONTENT_RANGE).unwrap(),
            "bytes 199998-199999/200000"
        );
        let body = to_bytes(part.into_body()).await.unwrap();
        assert_eq!(&body[..], &object(&etag).body[199_998..]);
        assert_eq!(get(&[("range", "bytes=200000-")]).status(), 416);

        let head = answer(
            &TestRequest::default()
                .method(Method::HEAD)
                .insert_header(("range", "bytes=0-1"))
                .to_http_request(),
            object(&etag),
        );
        assert_eq!(head.status(), 200, "HEAD ignores Range");
        assert_eq!(
            head.into_body().size(),
            actix_web::body::BodySize::Sized(200_000)
        );
    }
}
