//! Fuzz entry point for the device (camera) ingest's pure part: RTP packets parsed and
//! depacketized as H.264.

use crate::ingest::rtp::depacketizer::{
    H264Depacketizer, Output, MAX_ACCESS_UNIT, REORDER_BYTES, REORDER_WINDOW, TIMESCALE,
};
use crate::ingest::rtp::packet::{RtpPacket, HEADER, MAX_DATAGRAM};
use crate::media::StreamEvent;

/// The payload type the harness announces.
const PAYLOAD_TYPE: u8 = 96;

/// Datagrams, each behind its 2-byte big-endian length (the last one takes what is left),
/// parsed by `RtpPacket::parse`; those that parse go into one `H264Depacketizer` (payload
/// type 96), which is then flushed. A parsed payload lies inside its datagram; the reorder
/// buffer stays within its bounds after every packet; every frame follows a track, fits
/// `MAX_ACCESS_UNIT`, is length-prefixed NAL units without parameter sets or delimiters, is a
/// keyframe when it is the first since the start, a loss or a discontinuity, and has a dts
/// strictly after the previous frame's and no later than its pts.
pub fn rtp_h264(data: &[u8]) {
    let mut depacketizer = H264Depacketizer::new(PAYLOAD_TYPE);
    let mut out = Vec::new();
    let mut check = Invariants::default();
    let mut rest = data;
    while let Some((len, after)) = rest.split_first_chunk::<2>() {
        let len = usize::from(u16::from_be_bytes(*len)).min(after.len());
        let (datagram, after) = after.split_at(len);
        rest = after;
        let Ok(packet) = RtpPacket::parse(datagram) else {
            continue;
        };
        assert!(datagram.len() <= MAX_DATAGRAM);
        assert!(packet.payload.len() + HEADER <= datagram.len());
        depacketizer.push(&packet, &mut out);
        assert!(
            depacketizer.held() <= REORDER_WINDOW,
            "reorder buffer past its window"
        );
        assert!(depacketizer.held_bytes() <= REORDER_BYTES);
        check.outputs(&out);
        out.clear();
    }
    depacketizer.flush(&mut out);
    assert_eq!(depacketizer.held(), 0);
    assert_eq!(depacketizer.held_bytes(), 0);
    check.outputs(&out);
    let stats = depacketizer.stats();
    assert!(stats.keyframes <= check.frames);
}

#[derive(Default)]
struct Invariants {
    track: bool,
    /// The next frame must be a keyframe (at the start, after a loss or a discontinuity).
    resumed: bool,
    started: bool,
    last_dts: Option<i64>,
    frames: u64,
}

impl Invariants {
    fn outputs(&mut self, out: &[Output]) {
        for output in out {
            match output {
                Output::Event(StreamEvent::Track(_)) => self.track = true,
                Output::Event(StreamEvent::Frame(frame)) => {
                    assert!(self.track, "a frame before any track");
                    if !self.started || self.resumed {
                        assert!(frame.sync, "a broken GOP was handed on");
                    }
                    self.started = true;
                    self.resumed = false;
                    assert!(
                        self.last_dts.is_none_or(|last| frame.dts.ticks > last),
                        "dts not strictly increasing"
                    );
                    self.last_dts = Some(frame.dts.ticks);
                    assert!(
                        frame.pts.ticks >= frame.dts.ticks,
                        "presented before decoded"
                    );
                    assert_eq!(frame.dts.timescale, TIMESCALE);
                    assert_eq!(frame.pts.timescale, TIMESCALE);
                    assert!(!frame.segment_start);
                    assert!(!frame.data.is_empty() && frame.data.len() <= MAX_ACCESS_UNIT);
                    let mut rest = &frame.data[..];
                    while let Some((len, after)) = rest.split_first_chunk::<4>() {
                        let len = u32::from_be_bytes(*len) as usize;
                        assert!(len > 0 && len <= after.len(), "a NAL unit length is wrong");
                        assert!(!matches!(after[0] & 0x1F, 7 | 8 | 9 | 12));
                        rest = &after[len..];
                    }
                    assert!(rest.is_empty(), "bytes after the last NAL unit");
                    self.frames += 1;
                }
                Output::Loss { .. } | Output::Discontinuity => self.resumed = true,
                Output::Event(_) => {}
            }
        }
    }
}
