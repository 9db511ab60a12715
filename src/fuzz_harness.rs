//! The entry points shared by the cargo-fuzz targets in `fuzz/fuzz_targets/` and by the corpus
//! replay test (`tests/fuzz_corpora.rs`): one `pub fn <target>(data: &[u8])` per fuzz target,
//! named like the target. Each feeds the bytes to one untrusted-input parser (or a chain of
//! them) and asserts the invariants that are cheap to check; a broken invariant or any panic is
//! a finding. The fuzz targets are one-liners calling these, so a committed corpus file replays
//! through exactly the code libFuzzer ran.
//!
//! - `rtmp_guard`: bytes after the handshake into `ChunkGuard`, split where the input says.
//! - `rtmp_session`: the differential target, guard → rml_rtmp (`GuardedSession`), with the
//!   media it yields into the FLV demuxer.
//! - `flv_demux`: structure-aware FLV tags into `FlvDemuxer`, then the `Segmenter`.
//! - `codec_config`: every decoder-configuration parser on the same bytes.
//! - `segmenter`: structure-aware multi-rendition frames into the `Segmenter` and CMAF writer.
//! - `origin_path` / `origin_range`: the HTTP origin's path classifier and Range parsing.
//! - `mpegts_demux`: MPEG-TS (SRT's payload) into `TsDemuxer`, split where the input says.
//! - `srt_stream_id`: the SRT stream id parser.
//! - `worker_wire`: a transcoding worker's output, as the server decodes and checks it.
//! - `fmp4_demux`: an init and a media segment into `Fmp4Demuxer` (HLS push's fMP4).
//! - `hls_push_playlist`: a pushed playlist, and the `Order` it drives.
//! - `ws_messages`: the WebSocket ingest's text messages (opening message and controls).
//! - `rtp_h264`: length-prefixed datagrams through `RtpPacket::parse` into `H264Depacketizer`
//!   (device ingest): reordering, loss, restarts and RFC 6184 payloads.
//! - `device_messages`: the device signaling protocol's text messages, both directions.
//! - `previews_sheet`: a scrub-previews process's output, as the server checks it.
//! - `clip_edge`: a precise clip's clip-edge process output, as the server checks it.
//!
//! The structure-aware targets decode their input with the `arbitrary` crate; any byte string
//! is a valid input to every target.

mod devices;
mod ingest;
mod media;
mod origin;
mod rtmp;
mod rtp;
mod worker;

pub use devices::device_messages;
pub use ingest::{fmp4_demux, hls_push_playlist, mpegts_demux, srt_stream_id, ws_messages};
pub use media::{codec_config, flv_demux, segmenter};
pub use origin::{origin_path, origin_range};
pub use rtmp::{rtmp_guard, rtmp_session};
pub use rtp::rtp_h264;
pub use worker::{clip_edge, previews_sheet, worker_wire};

/// A fuzz target's entry point.
pub type Target = fn(&[u8]);

/// Every target by name, in the order `make fuzz` runs them.
pub const TARGETS: &[(&str, Target)] = &[
    ("origin_path", origin_path),
    ("origin_range", origin_range),
    ("codec_config", codec_config),
    ("rtmp_guard", rtmp_guard),
    ("flv_demux", flv_demux),
    ("segmenter", segmenter),
    ("rtmp_session", rtmp_session),
    ("mpegts_demux", mpegts_demux),
    ("srt_stream_id", srt_stream_id),
    ("worker_wire", worker_wire),
    ("fmp4_demux", fmp4_demux),
    ("hls_push_playlist", hls_push_playlist),
    ("ws_messages", ws_messages),
    ("rtp_h264", rtp_h264),
    ("device_messages", device_messages),
    ("previews_sheet", previews_sheet),
    ("clip_edge", clip_edge),
];

/// Splits `data` into pieces whose lengths follow a small PRNG seeded by `seed`, so the input
/// chooses its split points: seed 0 is one piece, seed `s` gives pieces of 1..=4·s bytes.
pub(crate) struct Pieces<'a> {
    rest: &'a [u8],
    max: usize,
    state: u32,
}

impl<'a> Pieces<'a> {
    pub(crate) fn new(data: &'a [u8], seed: u8) -> Self {
        Self {
            rest: data,
            max: if seed == 0 {
                usize::MAX
            } else {
                usize::from(seed) * 4
            },
            state: u32::from(seed) | 0x9E37_0000,
        }
    }
}

impl<'a> Iterator for Pieces<'a> {
    type Item = &'a [u8];

    fn next(&mut self) -> Option<&'a [u8]> {
        if self.rest.is_empty() {
            return None;
        }
        // xorshift32
        self.state ^= self.state << 13;
        self.state ^= self.state >> 17;
        self.state ^= self.state << 5;
        let len = if self.max == usize::MAX {
            self.rest.len()
        } else {
            1 + self.state as usize % self.max
        };
        let (piece, rest) = self.rest.split_at(len.min(self.rest.len()));
        self.rest = rest;
        Some(piece)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pieces_cover_the_input_in_order() {
        let data: Vec<u8> = (0..=255).collect();
        for seed in [0u8, 1, 7, 255] {
            let joined: Vec<u8> = Pieces::new(&data, seed).flatten().copied().collect();
            assert_eq!(joined, data, "seed {seed}");
        }
        assert_eq!(Pieces::new(&data, 0).count(), 1);
        assert!(Pieces::new(&data, 1).all(|p| (1..=4).contains(&p.len())));
    }

    #[test]
    fn every_target_accepts_empty_and_junk_input() {
        for (name, target) in TARGETS {
            for input in [&b""[..], &[0xFF; 64][..], b"bytes=0-1 live/x/y"] {
                target(input);
                let _ = name;
            }
        }
    }
}
