//! Fuzz entry points for the ingest parsers: SRT's MPEG-TS demuxer and stream id, HLS push's
//! fMP4 demuxer and pushed playlists (with the order they drive), the WebSocket ingest's text
//! messages.

use std::time::Instant;

use bytes::Bytes;

use super::Pieces;
use crate::ingest::fmp4::{self, Fmp4Demuxer};
use crate::ingest::hls_push::{Order, PushedPlaylist, Step};
use crate::ingest::mpegts::{TsDemuxer, PACKET};
use crate::ingest::srt::streamid;
use crate::ingest::ws::messages::{
    Container, Control, Hello, MessageError, CONTROL_EXPECTED, EMPTY_KEY, HELLO_EXPECTED, MAX_TEXT,
};
use crate::media::StreamEvent;

/// MPEG-TS into `TsDemuxer`: the first byte seeds the split points, the rest is the stream.
/// Any split gives the same events as one push; frames carry 90 kHz timestamps and data.
pub fn mpegts_demux(data: &[u8]) {
    let Some((&seed, stream)) = data.split_first() else {
        return;
    };
    let whole = demux(stream, 0);
    if seed != 0 {
        assert_eq!(demux(stream, seed), whole, "a split changed the events");
    }
    if let Ok(events) = whole {
        for event in events {
            if let StreamEvent::Frame(frame) = event {
                assert_eq!(frame.dts.timescale, 90_000);
                assert!(!frame.data.is_empty());
                assert!(frame.data.len() <= stream.len().max(PACKET));
            }
        }
    }
}

fn demux(stream: &[u8], seed: u8) -> Result<Vec<StreamEvent>, String> {
    let mut demuxer = TsDemuxer::new();
    let mut events = Vec::new();
    for piece in Pieces::new(stream, seed) {
        events.extend(demuxer.push(piece).map_err(|e| e.to_string())?);
    }
    events.extend(demuxer.flush().map_err(|e| e.to_string())?);
    Ok(events)
}

/// Any string as an SRT stream id: a key comes out only of a valid publish id, never empty and
/// never longer than the id.
pub fn srt_stream_id(data: &[u8]) {
    let Ok(id) = std::str::from_utf8(data) else {
        return;
    };
    if let Ok(key) = streamid::publish_key(id, "live") {
        assert!(!key.is_empty() && key.len() <= id.len());
        assert!(!key.contains('/') && !key.contains('?'));
    }
}

/// fMP4 into `Fmp4Demuxer`: the first two bytes (big-endian) are the init segment's length,
/// then the init, then one media segment. Frames lie inside the segment and carry the track's
/// timescale; a repeated init announces nothing.
pub fn fmp4_demux(data: &[u8]) {
    let Some((len, rest)) = data.split_first_chunk::<2>() else {
        return;
    };
    let split = usize::from(u16::from_be_bytes(*len)).min(rest.len());
    let (init, segment) = rest.split_at(split);
    let (init, segment) = (
        Bytes::copy_from_slice(init),
        Bytes::copy_from_slice(segment),
    );
    let mut demuxer = Fmp4Demuxer::new();
    let announced = demuxer.init(&init);
    if announced.is_ok() {
        assert!(demuxer.has_init());
        assert_eq!(demuxer.init(&init), Ok(Vec::new()));
    }
    if let Ok(events) = demuxer.segment(&segment) {
        for event in events {
            if let StreamEvent::Frame(frame) = event {
                assert!(frame.dts.timescale > 0);
                assert!(frame.data.len() <= segment.len().min(fmp4::MAX_SAMPLE));
            }
        }
    }
}

/// A pushed playlist: parsed, then driven through `Order` with every listed file uploaded
/// (a duplicate of each second one), at times a target duration apart. Waiting bytes stay
/// within the budget, each segment is fed at most once and in media sequence order, and
/// `Finished` comes at most once.
pub fn hls_push_playlist(data: &[u8]) {
    let Ok(playlist) = PushedPlaylist::parse(data) else {
        return;
    };
    let budget = 64;
    let mut order = Order::new(budget);
    let start = Instant::now();
    let target = playlist.target;
    let names: Vec<String> = playlist
        .segments
        .iter()
        .flat_map(|s| [s.name.clone()].into_iter().chain(s.map.clone()))
        .collect();
    for (i, name) in names.iter().enumerate() {
        order.file(name, Bytes::from(vec![0; 1 + i % 8]));
        if i % 2 == 1 {
            order.file(name, Bytes::from_static(b"again"));
        }
        assert!(order.waiting_bytes() <= budget);
    }
    order.playlist(playlist.clone(), start);
    let mut fed = Vec::new();
    let mut finished = 0;
    for tick in 0..4u32 {
        for step in order.steps(start + tick * target) {
            match step {
                Step::Feed { msn, .. } => fed.push(msn),
                Step::Finished => finished += 1,
            }
        }
        order.playlist(playlist.clone(), start + tick * target);
    }
    assert!(finished <= 1);
    assert!(
        fed.windows(2).all(|w| w[0] < w[1]),
        "fed out of order: {fed:?}"
    );
    assert!(order.waiting_bytes() <= budget);
}

/// A WebSocket ingest client's text message, as the opening message and as a later control.
/// Whatever parses is within the limits; no error quotes the key.
pub fn ws_messages(data: &[u8]) {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    match Hello::parse(text) {
        Ok(hello) => {
            assert!(!hello.key.is_empty() && text.len() <= MAX_TEXT);
            assert!(Container::from_name(hello.container.name()) == Some(hello.container));
        }
        // what a malformed opening message (which may hold a key) is told names a position,
        // never the input
        Err(MessageError::Malformed(why)) => {
            assert!(
                why == EMPTY_KEY || only_position(&why, HELLO_EXPECTED),
                "{why}"
            );
        }
        Err(_) => {}
    }
    match Control::parse(text) {
        Ok(Control::Recording(container)) => {
            assert!(Container::from_name(container.name()) == Some(container));
        }
        Err(MessageError::Malformed(why)) => {
            assert!(only_position(&why, CONTROL_EXPECTED), "{why}");
        }
        _ => {}
    }
}

/// Whether `why` is `expected` followed by ` (line N, column M)` and nothing else.
fn only_position(why: &str, expected: &str) -> bool {
    let Some(position) = why
        .strip_prefix(expected)
        .and_then(|rest| rest.strip_prefix(" (line "))
        .and_then(|rest| rest.strip_suffix(')'))
    else {
        return false;
    };
    let Some((line, column)) = position.split_once(", column ") else {
        return false;
    };
    [line, column]
        .iter()
        .all(|n| !n.is_empty() && n.bytes().all(|b| b.is_ascii_digit()))
}
