//! HTTP origin targets: the playback path classifier and the Range header parser, the two
//! places a request's own text decides which object bytes are read.

use actix_web::http::header::HeaderValue;
use object_store::path::Path;

use crate::http::playback::{classify, parse_range, satisfiable, Kind};

/// Byte 0 picks the root (`live` or `vod`, as the route allows), the rest is the path tail as
/// actix hands it over (percent-decoded text). A classified path must name exactly
/// `{root}/{tail}` (no escaping needed: every component was already clean), have no empty, `.`
/// or `..` component, and have the shape its kind says.
pub fn origin_path(data: &[u8]) {
    let Some((&which, tail)) = data.split_first() else {
        return;
    };
    let root = if which & 1 == 0 { "live" } else { "vod" };
    let Ok(tail) = std::str::from_utf8(tail) else {
        return;
    };
    let Some((path, kind)) = classify(root, tail) else {
        return;
    };
    let raw = format!("{root}/{tail}");
    assert_eq!(
        path.as_ref(),
        raw,
        "the object key differs from the URL path"
    );
    assert_eq!(Path::parse(&raw).ok(), Some(path.clone()));
    let parts: Vec<&str> = raw.split('/').collect();
    assert!((3..=4).contains(&parts.len()), "{raw}: wrong depth");
    for part in &parts {
        assert!(!part.is_empty() && *part != "." && *part != "..", "{raw}");
        assert!(
            part.bytes()
                .all(|b| b.is_ascii_alphanumeric() || b"._-".contains(&b)),
            "{raw}: unexpected character"
        );
    }
    let file = parts[parts.len() - 1];
    let expected = match kind {
        Kind::Playlist => file.ends_with(".m3u8"),
        Kind::Mpd => file == "manifest.mpd" || (file == "dvr.mpd" && root == "live"),
        Kind::Init => file == "init.mp4",
        Kind::Segment => file.ends_with(".m4s") && file.matches('.').count() == 1,
        Kind::Part => file.ends_with(".m4s") && file.matches('.').count() == 2,
        Kind::Poster => file == "poster.jpg",
        Kind::Download => file == "clip.mp4" && root == "vod",
        Kind::Thumbnails => file == "thumbnails.vtt",
        Kind::Sheet => parts[2] == "previews" && file.ends_with(".jpg"),
    };
    assert!(expected, "{raw} classified as {kind:?}");
}

/// The first 8 bytes are an object size, the rest a `Range` header value. A parsed range,
/// resolved against the size the way the handler does (`satisfiable`; `None` answers 416),
/// selects at least one byte, lies within the object and within what was asked; and it prints
/// back to a header that parses to itself.
pub fn origin_range(data: &[u8]) {
    let Some((size, header)) = data.split_first_chunk::<8>() else {
        return;
    };
    let size = u64::from_le_bytes(*size);
    let Ok(value) = HeaderValue::from_bytes(header) else {
        return;
    };
    let Some(range) = parse_range(&value) else {
        return;
    };
    let printed = range.to_string();
    let reparsed = HeaderValue::from_str(&printed)
        .ok()
        .and_then(|v| parse_range(&v));
    assert_eq!(
        reparsed.as_ref(),
        Some(&range),
        "{printed} does not parse back"
    );
    let Some(resolved) = satisfiable(&range, size) else {
        return;
    };
    assert!(resolved.start < resolved.end && resolved.end <= size);
    match range {
        object_store::GetRange::Bounded(asked) => {
            assert_eq!(resolved.start, asked.start);
            assert!(resolved.end <= asked.end);
        }
        object_store::GetRange::Offset(start) => assert_eq!(resolved, start..size),
        object_store::GetRange::Suffix(n) => {
            assert_eq!(resolved.end, size);
            assert_eq!(resolved.end - resolved.start, n.min(size));
        }
    }
}
