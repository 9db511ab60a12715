//! Fuzz entry points for the SRT ingest's parsers: the MPEG-TS demuxer and the stream id.

use super::Pieces;
use crate::ingest::mpegts::{TsDemuxer, PACKET};
use crate::ingest::srt::streamid;
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
