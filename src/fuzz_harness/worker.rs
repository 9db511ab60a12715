//! Fuzz entry point for the server's side of the transcoding worker's protocol: what a
//! compromised worker can send.

use std::time::{Duration, Instant};

use crate::transcode::worker::check::OutputCheck;
use crate::transcode::worker::wire::{self, FromWorker};
use crate::transcode::Ladders;

/// Arbitrary bytes as a worker's stdout, read message by message as the server reads them and
/// checked against the shipped `default` ladder offering the source too. Every message that
/// decodes is within the limits and encodes back to exactly the bytes it came from; a
/// malformed one ends the stream (as it ends the broadcast), never a panic.
pub fn worker_wire(data: &[u8]) {
    let Ok(ladder) = Ladders::shipped().get("default").cloned() else {
        return;
    };
    let mut ladder = ladder;
    ladder.source = true;
    let mut check = OutputCheck::new(&ladder);
    let start = Instant::now();
    let mut input = data;
    let mut step = 0u64;
    loop {
        let before = input;
        let message = match wire::read_from_worker(&mut input) {
            Ok(Some(message)) => message,
            Ok(None) | Err(_) => return,
        };
        let consumed = &before[..before.len() - input.len()];
        match &message {
            FromWorker::Event(crate::media::RenditionEvent::Frame { frame, .. }) => {
                assert!(frame.data.len() <= wire::MAX_FRAME_DATA);
                assert!(frame.dts.timescale > 0 && frame.pts.timescale > 0);
            }
            FromWorker::Event(crate::media::RenditionEvent::Track { name, .. })
            | FromWorker::Speed {
                rendition: name, ..
            }
            | FromWorker::Dropped {
                rendition: name, ..
            } => assert!(name.len() <= wire::MAX_NAME),
            FromWorker::Event(crate::media::RenditionEvent::Poster(jpeg)) => {
                assert!(jpeg.len() <= wire::MAX_POSTER)
            }
            FromWorker::Event(_) => {}
        }
        let again = wire::encode_from_worker(&message).expect("a decoded message encodes");
        assert_eq!(again, consumed, "decoding then encoding changed the bytes");
        // posters a second apart: the rate limit is exercised too
        step += 1;
        let _ = check.check(message, start + Duration::from_secs(step));
    }
}

/// Arbitrary bytes as a previews process's stdout (`previews::parse_sheet`): an accepted sheet
/// has a thumbnail size within `layout`'s limits, at most a sheet of keyframes, a JPEG start,
/// and no more bytes than the server reads.
pub fn previews_sheet(data: &[u8]) {
    use crate::previews::{layout, parse_sheet, MAX_SHEET_BYTES};
    let Ok(made) = parse_sheet(data) else {
        return;
    };
    let (width, height) = made.tile;
    assert!((2..=layout::TILE_WIDTH).contains(&width), "{width}");
    assert!((2..=8 * layout::TILE_WIDTH).contains(&height), "{height}");
    assert!(made.keyframes <= layout::TILES_PER_SHEET);
    assert!(made.jpeg.starts_with(&[0xFF, 0xD8]) && made.jpeg.len() <= MAX_SHEET_BYTES);
    assert_eq!(made.jpeg.len() + 16, data.len());
}

/// Arbitrary bytes as a clip-edge process's stdout (`clips::precise::parse_edge`), checked
/// against the x264 320×240 Main record as the source, three frames asked for and parameter
/// set id 1: an accepted edge has exactly those frames, a keyframe first, and one SPS and one
/// PPS numbered 1 at the source's size. The parameter-set id readers get the same bytes.
pub fn clip_edge(data: &[u8]) {
    use crate::clips::precise::{free_ids, parse_edge, pps_ids_of, sps_id_of};
    let Ok(source) =
        crate::media::AvcConfig::parse(bytes::Bytes::from_static(super::media::AVC_RECORD))
    else {
        return;
    };
    let _ = (sps_id_of(data), pps_ids_of(data));
    assert_eq!(free_ids(&source, 2), Some(vec![1, 2]));
    let expected = [0, 3600, 7200];
    let Ok((config, frames)) = parse_edge(data, &expected, 1, &source) else {
        return;
    };
    assert_eq!((config.sps.len(), config.pps.len()), (1, 1));
    assert_eq!(sps_id_of(&config.sps[0]), Some(1));
    assert_eq!((config.width, config.height), (source.width, source.height));
    let times: Vec<i64> = frames.iter().map(|f| f.pts.rescale(90_000).ticks).collect();
    assert_eq!(times, expected);
    assert!(frames[0].sync);
}
