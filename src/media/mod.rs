//! Protocol-neutral media types: what every ingest protocol produces and every later stage
//! consumes. Nothing here knows about RTMP, FLV, MP4 or HTTP.
//!
//! Codec configuration travels before the first frame (`StreamEvent::Tracks`), and the end of a
//! broadcast is an explicit event (`StreamEvent::End`), never inferred from silence.

pub(crate) mod codec;
#[cfg(test)]
pub(crate) mod codec_test_data;
pub mod early_audio;
pub mod queue;
mod rendition;
mod timestamp;

pub use codec::{
    av1_sequence_header_size, hevc_record, vp8_keyframe_size, vp9_keyframe_size, AacConfig,
    Av1Config, AvcConfig, CodecConfig, CodecError, HevcConfig, OpusConfig, Vp8Config, Vp9Config,
    AAC_FRAME_SAMPLES, OPUS_SAMPLE_RATE,
};
pub use early_audio::EarlyAudio;
pub use rendition::{RenditionEvent, TrackId, AUDIO_RENDITION, SOURCE_RENDITION};
pub use timestamp::{Timestamp, TimestampUnwrapper};

use bytes::Bytes;

/// Which elementary stream a track or frame belongs to. Strata carries at most one of each per
/// broadcast.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum TrackKind {
    Video,
    Audio,
}

impl TrackKind {
    pub fn as_str(self) -> &'static str {
        match self {
            TrackKind::Video => "video",
            TrackKind::Audio => "audio",
        }
    }
}

/// A track's decoder configuration, announced before its first frame.
#[derive(Debug, Clone, PartialEq)]
pub struct TrackInfo {
    pub kind: TrackKind,
    pub codec: CodecConfig,
}

/// One coded access unit (video) or raw codec frame (audio).
///
/// `dts` and `pts` share the frame's timebase: the source's own clock (1 kHz for RTMP, 90 kHz for
/// MPEG-TS) until an encoder or the segmenter needs another, never rounded through milliseconds. Video `data` is length-prefixed NAL units (the
/// NALU length size is in the track's `AvcConfig`); audio `data` is one raw AAC frame.
#[derive(Debug, Clone, PartialEq)]
pub struct MediaFrame {
    pub kind: TrackKind,
    pub dts: Timestamp,
    pub pts: Timestamp,
    /// A random access point: decoding can start here (an IDR for H.264, every AAC frame).
    /// CMAF sample flags follow it.
    pub sync: bool,
    /// Where every rendition of a ladder starts a segment: set by the transcoder on the forced
    /// IDRs (a `sync` frame) it aligned across rungs; ingest never sets it.
    pub segment_start: bool,
    pub data: Bytes,
}

/// What an ingest protocol tells the rest of the server about one live broadcast.
#[derive(Debug, Clone, PartialEq)]
pub enum StreamEvent {
    /// A track's configuration: first announcement, or a change (new SPS/PPS, new sample rate).
    Track(TrackInfo),
    /// A coded frame of a track already announced.
    Frame(MediaFrame),
    /// The publisher was lost and may come back (reconnect grace): publish what is held now.
    /// If frames follow, they continue the same timeline, starting with a video keyframe.
    Pause,
    /// The publisher stopped (cleanly or not). Nothing follows.
    End,
}
