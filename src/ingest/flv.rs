//! FLV tag bodies (as RTMP carries them) → `StreamEvent`s. Pure: no I/O, no clock.
//!
//! Handles legacy AVC (codec id 7) and Enhanced RTMP (v1) video — FourCCs `avc1`, `hvc1`,
//! `av01` and `vp09` with their configuration records — AAC audio, the signed 24-bit
//! composition offset (legacy AVC, `avc1`, `hvc1`), and per-track unwrapping of RTMP's 32-bit
//! millisecond clock. Everything else (VP6, Sorenson, legacy codec id 12 "HEVC", Enhanced
//! RTMP multitrack, MP3, Speex, PCM, …) is refused with an error naming the codec: a stream
//! Strata cannot decode or package is better refused than silent. Whether AV1/VP9 can be
//! packaged is not decided here (a transcoding ladder decodes them).

use bytes::Bytes;

use crate::media::{
    AacConfig, Av1Config, AvcConfig, CodecConfig, CodecError, HevcConfig, MediaFrame, StreamEvent,
    Timestamp, TimestampUnwrapper, TrackInfo, TrackKind, Vp9Config,
};

#[derive(Debug, thiserror::Error, PartialEq)]
pub enum FlvError {
    #[error("empty {0} tag")]
    Empty(&'static str),
    #[error("truncated {0} tag")]
    Truncated(&'static str),
    #[error(
        "unsupported video codec {0}; Strata accepts H.264, and HEVC, AV1 and VP9 over \
         Enhanced RTMP"
    )]
    UnsupportedVideo(String),
    #[error("unsupported audio codec {0}; Strata accepts AAC")]
    UnsupportedAudio(String),
    #[error(transparent)]
    Codec(#[from] CodecError),
    #[error("{0} frame before its sequence header (dropped)")]
    FrameBeforeConfig(&'static str),
}

impl FlvError {
    /// Fatal errors end the broadcast (the stream cannot be packaged); the others drop one tag.
    pub fn is_fatal(&self) -> bool {
        matches!(
            self,
            FlvError::UnsupportedVideo(_) | FlvError::UnsupportedAudio(_) | FlvError::Codec(_)
        )
    }
}

const VIDEO_FRAME_KEY: u8 = 1;
const VIDEO_FRAME_COMMAND: u8 = 5;
const VIDEO_CODEC_AVC: u8 = 7;
// Enhanced RTMP VideoPacketType
const PACKET_SEQUENCE_START: u8 = 0;
const PACKET_CODED_FRAMES: u8 = 1;
const PACKET_CODED_FRAMES_X: u8 = 3;
const PACKET_MULTITRACK: u8 = 6;
const AUDIO_FORMAT_AAC: u8 = 10;

/// Demuxes one publisher's FLV tags. Keeps the current configs so that a repeated, identical
/// sequence header (OBS sends one again on some reconnects) produces no event.
#[derive(Debug, Default)]
pub struct FlvDemuxer {
    video_clock: TimestampUnwrapper,
    audio_clock: TimestampUnwrapper,
    video_config: Option<CodecConfig>,
    audio_config: Option<AacConfig>,
}

/// The video codecs an FLV video tag can carry here.
#[derive(Debug, Clone, Copy, PartialEq)]
enum VideoCodec {
    Avc,
    Hevc,
    Av1,
    Vp9,
}

impl VideoCodec {
    fn parse_config(self, record: Bytes) -> Result<CodecConfig, CodecError> {
        Ok(match self {
            VideoCodec::Avc => CodecConfig::Avc(AvcConfig::parse(record)?),
            VideoCodec::Hevc => CodecConfig::Hevc(HevcConfig::parse(record)?),
            VideoCodec::Av1 => CodecConfig::Av1(Av1Config::parse(record)?),
            VideoCodec::Vp9 => CodecConfig::Vp9(Vp9Config::parse(record)?),
        })
    }
}

enum VideoPacket {
    SequenceStart(VideoCodec, Bytes),
    Frames { cts: i32, nalus: Bytes },
    Ignored,
}

impl FlvDemuxer {
    pub fn new() -> Self {
        Self::default()
    }

    /// One video tag body with its RTMP timestamp (ms, decode time).
    pub fn video(
        &mut self,
        body: Bytes,
        timestamp_ms: u32,
    ) -> Result<Option<StreamEvent>, FlvError> {
        let first = *body.first().ok_or(FlvError::Empty("video"))?;
        let frame_type = (first >> 4) & 0x07;
        let packet = if first & 0x80 != 0 {
            parse_enhanced_video(&body)?
        } else {
            parse_legacy_video(&body)?
        };
        if frame_type == VIDEO_FRAME_COMMAND {
            return Ok(None);
        }
        match packet {
            VideoPacket::Ignored => Ok(None),
            VideoPacket::SequenceStart(codec, record) => {
                let config = codec.parse_config(record)?;
                if self.video_config.as_ref() == Some(&config) {
                    return Ok(None);
                }
                self.video_config = Some(config.clone());
                Ok(Some(StreamEvent::Track(TrackInfo {
                    kind: TrackKind::Video,
                    codec: config,
                })))
            }
            VideoPacket::Frames { cts, nalus } => {
                // Unwrap first so the clock follows every tag, even ones dropped below.
                let dts = self.video_clock.unwrap(timestamp_ms);
                if self.video_config.is_none() {
                    return Err(FlvError::FrameBeforeConfig("video"));
                }
                if nalus.is_empty() {
                    return Ok(None);
                }
                Ok(Some(StreamEvent::Frame(MediaFrame {
                    kind: TrackKind::Video,
                    dts: Timestamp::from_millis(dts),
                    pts: Timestamp::from_millis(dts + i64::from(cts)),
                    sync: frame_type == VIDEO_FRAME_KEY,
                    segment_start: false,
                    data: nalus,
                })))
            }
        }
    }

    /// One audio tag body with its RTMP timestamp (ms).
    pub fn audio(
        &mut self,
        body: Bytes,
        timestamp_ms: u32,
    ) -> Result<Option<StreamEvent>, FlvError> {
        let first = *body.first().ok_or(FlvError::Empty("audio"))?;
        let format = first >> 4;
        if format != AUDIO_FORMAT_AAC {
            return Err(FlvError::UnsupportedAudio(audio_format_name(format)));
        }
        let packet_type = *body.get(1).ok_or(FlvError::Truncated("audio"))?;
        let payload = body.slice(2..);
        match packet_type {
            0 => {
                let config = AacConfig::parse(payload)?;
                if self.audio_config.as_ref() == Some(&config) {
                    return Ok(None);
                }
                self.audio_config = Some(config.clone());
                Ok(Some(StreamEvent::Track(TrackInfo {
                    kind: TrackKind::Audio,
                    codec: CodecConfig::Aac(config),
                })))
            }
            1 => {
                let dts = self.audio_clock.unwrap(timestamp_ms);
                if self.audio_config.is_none() {
                    return Err(FlvError::FrameBeforeConfig("audio"));
                }
                if payload.is_empty() {
                    return Ok(None);
                }
                let ts = Timestamp::from_millis(dts);
                Ok(Some(StreamEvent::Frame(MediaFrame {
                    kind: TrackKind::Audio,
                    dts: ts,
                    pts: ts,
                    sync: true,
                    segment_start: false,
                    data: payload,
                })))
            }
            _ => Ok(None),
        }
    }
}

fn parse_legacy_video(body: &Bytes) -> Result<VideoPacket, FlvError> {
    let codec = body[0] & 0x0F;
    if codec != VIDEO_CODEC_AVC {
        return Err(FlvError::UnsupportedVideo(video_codec_name(codec)));
    }
    if body.len() < 5 {
        // A bare command frame can be this short; anything else is broken.
        return if (body[0] >> 4) & 0x07 == VIDEO_FRAME_COMMAND {
            Ok(VideoPacket::Ignored)
        } else {
            Err(FlvError::Truncated("video"))
        };
    }
    let cts = read_i24(&body[2..5]);
    match body[1] {
        0 => Ok(VideoPacket::SequenceStart(VideoCodec::Avc, body.slice(5..))),
        1 => Ok(VideoPacket::Frames {
            cts,
            nalus: body.slice(5..),
        }),
        _ => Ok(VideoPacket::Ignored), // 2 = end of sequence
    }
}

/// Enhanced RTMP: `IsExHeader | FrameType(3) | PacketType(4)`, then a FourCC.
fn parse_enhanced_video(body: &Bytes) -> Result<VideoPacket, FlvError> {
    if body.len() < 5 {
        return Err(FlvError::Truncated("video"));
    }
    let packet_type = body[0] & 0x0F;
    if packet_type == PACKET_MULTITRACK {
        return Err(FlvError::UnsupportedVideo(
            "multitrack (Enhanced RTMP v2)".into(),
        ));
    }
    let codec = match &body[1..5] {
        b"avc1" => VideoCodec::Avc,
        b"hvc1" => VideoCodec::Hevc,
        b"av01" => VideoCodec::Av1,
        b"vp09" => VideoCodec::Vp9,
        other => {
            return Err(FlvError::UnsupportedVideo(format!(
                "'{}' (Enhanced RTMP)",
                String::from_utf8_lossy(other).escape_debug()
            )))
        }
    };
    // only AVC and HEVC CodedFrames carry a composition time
    let has_composition_time = matches!(codec, VideoCodec::Avc | VideoCodec::Hevc);
    match packet_type {
        PACKET_SEQUENCE_START => Ok(VideoPacket::SequenceStart(codec, body.slice(5..))),
        PACKET_CODED_FRAMES if !has_composition_time => Ok(VideoPacket::Frames {
            cts: 0,
            nalus: body.slice(5..),
        }),
        PACKET_CODED_FRAMES => {
            if body.len() < 8 {
                return Err(FlvError::Truncated("video"));
            }
            Ok(VideoPacket::Frames {
                cts: read_i24(&body[5..8]),
                nalus: body.slice(8..),
            })
        }
        PACKET_CODED_FRAMES_X => Ok(VideoPacket::Frames {
            cts: 0,
            nalus: body.slice(5..),
        }),
        // SequenceEnd, Metadata (HDR), MPEG2TSSequenceStart (AV1's TS descriptor, which the
        // av1C in SequenceStart supersedes), ModEx: nothing to do
        _ => Ok(VideoPacket::Ignored),
    }
}

fn read_i24(b: &[u8]) -> i32 {
    let raw = (i32::from(b[0]) << 16) | (i32::from(b[1]) << 8) | i32::from(b[2]);
    (raw << 8) >> 8
}

fn video_codec_name(id: u8) -> String {
    let name = match id {
        2 => "Sorenson H.263",
        3 => "Screen video",
        4 => "VP6",
        5 => "VP6 with alpha",
        6 => "Screen video v2",
        12 => "HEVC (non-standard FLV id 12)",
        _ => "unknown",
    };
    format!("{name} (FLV codec id {id})")
}

fn audio_format_name(id: u8) -> String {
    let name = match id {
        0 | 3 => "linear PCM",
        1 => "ADPCM",
        2 | 14 => "MP3",
        4..=6 => "Nellymoser",
        7 => "G.711 A-law",
        8 => "G.711 mu-law",
        9 => "Enhanced RTMP audio",
        11 => "Speex",
        13 => "Opus (non-standard)",
        _ => "unknown",
    };
    format!("{name} (FLV sound format {id})")
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::media::codec_test_data::AVC_RECORD_320X240;

    fn avc_header() -> Bytes {
        let mut b = vec![0x17, 0x00, 0, 0, 0];
        b.extend_from_slice(AVC_RECORD_320X240);
        Bytes::from(b)
    }

    fn avc_frame(key: bool, cts: i32) -> Bytes {
        let c = cts.to_be_bytes();
        let first = if key { 0x17 } else { 0x27 };
        Bytes::from(vec![first, 0x01, c[1], c[2], c[3], 0, 0, 0, 2, 0x65, 0x88])
    }

    fn frame(ev: Option<StreamEvent>) -> MediaFrame {
        match ev {
            Some(StreamEvent::Frame(f)) => f,
            other => panic!("expected a frame, got {other:?}"),
        }
    }

    #[test]
    fn sequence_header_then_frames_with_composition_offsets() {
        let mut d = FlvDemuxer::new();
        match d.video(avc_header(), 0).unwrap() {
            Some(StreamEvent::Track(t)) => {
                assert_eq!(t.kind, TrackKind::Video);
                assert_eq!(t.codec.codec_string(), "avc1.4d400d");
            }
            other => panic!("unexpected {other:?}"),
        }
        let key = frame(d.video(avc_frame(true, 66), 0).unwrap());
        assert!(key.sync);
        assert_eq!((key.dts.ticks, key.pts.ticks), (0, 66));
        let b = frame(d.video(avc_frame(false, -33), 100).unwrap());
        assert!(!b.sync);
        assert_eq!((b.dts.ticks, b.pts.ticks), (100, 67));
        assert_eq!(&b.data[..], &[0, 0, 0, 2, 0x65, 0x88]);
    }

    #[test]
    fn repeated_identical_header_is_silent() {
        let mut d = FlvDemuxer::new();
        assert!(d.video(avc_header(), 0).unwrap().is_some());
        assert!(d.video(avc_header(), 40).unwrap().is_none());
    }

    #[test]
    fn frame_before_header_is_dropped_not_fatal() {
        let mut d = FlvDemuxer::new();
        let err = d.video(avc_frame(true, 0), 0).unwrap_err();
        assert_eq!(err, FlvError::FrameBeforeConfig("video"));
        assert!(!err.is_fatal());
    }

    #[test]
    fn unsupported_codecs_are_fatal_and_named() {
        let mut d = FlvDemuxer::new();
        let err = d
            .video(Bytes::from_static(&[0x14, 0, 0, 0, 0]), 0)
            .unwrap_err();
        assert!(err.is_fatal());
        assert!(err.to_string().contains("VP6"), "{err}");
        let err = d.audio(Bytes::from_static(&[0x2f, 0xff]), 0).unwrap_err();
        assert!(err.is_fatal());
        assert!(err.to_string().contains("MP3"), "{err}");
        let err = d.audio(Bytes::from_static(&[0xb2, 0x00]), 0).unwrap_err();
        assert!(err.to_string().contains("Speex"), "{err}");
        let err = d
            .video(Bytes::from_static(&[0x90, b'v', b'v', b'c', b'1', 0]), 0)
            .unwrap_err();
        assert!(err.is_fatal());
        assert!(err.to_string().contains("'vvc1' (Enhanced RTMP)"), "{err}");
        let err = d
            .video(Bytes::from_static(&[0x96, b'h', b'v', b'c', b'1', 0]), 0)
            .unwrap_err();
        assert!(err.to_string().contains("multitrack"), "{err}");
        // legacy codec id 12 (a non-standard HEVC some servers used) is not Enhanced RTMP
        let err = d
            .video(Bytes::from_static(&[0x1c, 0, 0, 0, 0]), 0)
            .unwrap_err();
        assert!(err.to_string().contains("id 12"), "{err}");
    }

    #[test]
    fn truncated_and_empty_tags_are_errors() {
        let mut d = FlvDemuxer::new();
        assert_eq!(
            d.video(Bytes::new(), 0).unwrap_err(),
            FlvError::Empty("video")
        );
        assert_eq!(
            d.video(Bytes::from_static(&[0x17, 0x01]), 0).unwrap_err(),
            FlvError::Truncated("video")
        );
        assert_eq!(
            d.audio(Bytes::from_static(&[0xaf]), 0).unwrap_err(),
            FlvError::Truncated("audio")
        );
        // a sequence header whose record is garbage
        let err = d
            .video(Bytes::from_static(&[0x17, 0x00, 0, 0, 0, 1, 2]), 0)
            .unwrap_err();
        assert!(matches!(err, FlvError::Codec(_)));
    }

    #[test]
    fn aac_config_and_frames() {
        let mut d = FlvDemuxer::new();
        match d
            .audio(Bytes::from_static(&[0xaf, 0x00, 0x11, 0x90]), 0)
            .unwrap()
        {
            Some(StreamEvent::Track(t)) => assert_eq!(t.codec.codec_string(), "mp4a.40.2"),
            other => panic!("unexpected {other:?}"),
        }
        let f = frame(
            d.audio(Bytes::from_static(&[0xaf, 0x01, 0x21, 0x10]), 23)
                .unwrap(),
        );
        assert_eq!(f.kind, TrackKind::Audio);
        assert_eq!(f.dts.ticks, 23);
        assert_eq!(&f.data[..], &[0x21, 0x10]);
    }

    #[test]
    fn timestamps_continue_across_the_32_bit_wrap() {
        let mut d = FlvDemuxer::new();
        d.video(avc_header(), 0).unwrap();
        let before = u32::MAX - 15;
        let a = frame(d.video(avc_frame(true, 0), before).unwrap());
        let b = frame(d.video(avc_frame(false, 0), 17).unwrap());
        assert_eq!(b.dts.ticks - a.dts.ticks, 33);
        assert!(b.dts.ticks > i64::from(u32::MAX));
    }

    #[test]
    fn enhanced_rtmp_avc1_is_accepted() {
        let mut d = FlvDemuxer::new();
        let mut header = vec![0x90, b'a', b'v', b'c', b'1'];
        header.extend_from_slice(AVC_RECORD_320X240);
        assert!(matches!(
            d.video(Bytes::from(header), 0).unwrap(),
            Some(StreamEvent::Track(_))
        ));
        // CodedFramesX: no composition time
        let f = frame(
            d.video(
                Bytes::from_static(&[0x93, b'a', b'v', b'c', b'1', 0, 0, 0, 1, 0x65]),
                40,
            )
            .unwrap(),
        );
        assert!(f.sync);
        assert_eq!(f.pts, f.dts);
    }

    fn enhanced(first: u8, fourcc: &[u8; 4], rest: &[u8]) -> Bytes {
        let mut tag = vec![first];
        tag.extend_from_slice(fourcc);
        tag.extend_from_slice(rest);
        Bytes::from(tag)
    }

    #[test]
    fn enhanced_rtmp_hevc_has_a_composition_time() {
        use crate::media::codec_test_data::HEVC_RECORD_320X240;
        let mut d = FlvDemuxer::new();
        match d
            .video(enhanced(0x90, b"hvc1", HEVC_RECORD_320X240), 0)
            .unwrap()
        {
            Some(StreamEvent::Track(t)) => {
                assert_eq!(t.codec.codec_string(), "hvc1.1.6.L60.90");
                assert_eq!(t.codec.video_size(), Some((320, 240)));
            }
            other => panic!("unexpected {other:?}"),
        }
        // CodedFrames with a composition time of 80 ms
        let f = frame(
            d.video(enhanced(0x91, b"hvc1", &[0, 0, 80, 0, 0, 0, 1, 0x26]), 40)
                .unwrap(),
        );
        assert!(f.sync);
        assert_eq!((f.dts.ticks, f.pts.ticks), (40, 120));
        assert_eq!(&f.data[..], &[0, 0, 0, 1, 0x26]);
        let f = frame(
            d.video(enhanced(0xa3, b"hvc1", &[0, 0, 0, 1, 0x02]), 80)
                .unwrap(),
        );
        assert!(!f.sync);
        assert_eq!(f.pts, f.dts);
    }

    #[test]
    fn enhanced_rtmp_av1_and_vp9_frames_have_no_composition_time() {
        use crate::media::codec_test_data::AV1_RECORD_320X240;
        let mut d = FlvDemuxer::new();
        match d
            .video(enhanced(0x90, b"av01", AV1_RECORD_320X240), 0)
            .unwrap()
        {
            Some(StreamEvent::Track(t)) => {
                assert_eq!(t.codec.name(), "AV1");
                assert!(t.codec.packaging_refusal().is_some());
            }
            other => panic!("unexpected {other:?}"),
        }
        let f = frame(
            d.video(enhanced(0x91, b"av01", &[0x12, 0x00, 0x0a]), 33)
                .unwrap(),
        );
        assert_eq!(&f.data[..], &[0x12, 0x00, 0x0a]);
        assert_eq!(f.pts, f.dts);
        let mut d = FlvDemuxer::new();
        let vpcc = [1, 0, 0, 0, 0, 31, 0x80, 2, 2, 2, 0, 0];
        match d.video(enhanced(0x90, b"vp09", &vpcc), 0).unwrap() {
            Some(StreamEvent::Track(t)) => assert_eq!(t.codec.codec_string(), "vp09.00.31.08"),
            other => panic!("unexpected {other:?}"),
        }
        let f = frame(
            d.video(enhanced(0x91, b"vp09", &[0x82, 0x49, 0x83]), 33)
                .unwrap(),
        );
        assert_eq!(f.data.len(), 3);
        // a broken record is fatal and says which one
        let err = d.video(enhanced(0x90, b"av01", &[0x81, 0]), 0).unwrap_err();
        assert!(err.is_fatal());
        assert!(
            err.to_string().contains("AV1CodecConfigurationRecord"),
            "{err}"
        );
    }
}
