//! Arbitrary FLV tag bodies into the demuxer and segmenter: errors are fine, panics are not.
#![no_main]

use bytes::Bytes;
use libfuzzer_sys::fuzz_target;
use strata::ingest::flv::FlvDemuxer;
use strata::package::{CutRule, Segmenter, SegmenterConfig};

fuzz_target!(|data: &[u8]| {
    let mut demuxer = FlvDemuxer::new();
    let mut segmenter = Segmenter::new(SegmenterConfig {
        target_duration: 2.0,
        first_number: 0,
        cut: CutRule::AfterTarget,
    });
    let mut ts = 0u32;
    for tag in data.split(|b| *b == 0xFF) {
        let Some((&kind, body)) = tag.split_first() else { continue };
        ts = ts.wrapping_add(u32::from(kind));
        let body = Bytes::copy_from_slice(body);
        let event = if kind & 1 == 0 { demuxer.video(body, ts) } else { demuxer.audio(body, ts) };
        if let Ok(Some(event)) = event {
            let _ = segmenter.push(event.into());
        }
    }
});
