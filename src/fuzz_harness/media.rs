//! Media targets: the FLV demuxer, the codec configuration parsers, and the segmenter with its
//! CMAF writer. `flv_demux` and `segmenter` are structure-aware (`arbitrary`); every packaged
//! output is re-parsed with `mp4-atom` and checked against what the segmenter promises.

use arbitrary::{Arbitrary, Unstructured};
use bytes::Bytes;
use mp4_atom::{Any, Decode, Moof, Moov};

use crate::ingest::flv::FlvDemuxer;
use crate::media::{
    vp9_keyframe_size, AacConfig, Av1Config, AvcConfig, CodecConfig, HevcConfig, MediaFrame,
    OpusConfig, RenditionEvent, Timestamp, TrackId, TrackInfo, TrackKind, Vp8Config, Vp9Config,
};
use crate::package::{
    cmaf, CutRule, Part, Segment, Segmenter, SegmenterConfig, SegmenterOutput, TrackSegment,
};
use crate::transcode::avc;

/// An AVCDecoderConfigurationRecord written by x264 (via ffmpeg's FLV muxer), 320x240 Main.
pub(super) const AVC_RECORD: &[u8] = &[
    0x01, 0x4d, 0x40, 0x0d, 0xff, 0xe1, 0x00, 0x18, 0x67, 0x4d, 0x40, 0x0d, 0xec, 0xa0, 0xa0, 0xfd,
    0x80, 0x88, 0x00, 0x00, 0x03, 0x00, 0x08, 0x00, 0x00, 0x03, 0x01, 0xe0, 0x78, 0xa1, 0x4c, 0xb0,
    0x01, 0x00, 0x04, 0x68, 0xce, 0x0f, 0xc8,
];
/// x265's HEVCDecoderConfigurationRecord, 320x240 Main.
const HEVC_RECORD: &[u8] = &[
    0x01, 0x01, 0x60, 0x00, 0x00, 0x00, 0x90, 0x00, 0x00, 0x00, 0x00, 0x00, 0x3c, 0xf0, 0x00, 0xfc,
    0xfd, 0xf8, 0xf8, 0x00, 0x00, 0x0f, 0x03, 0x20, 0x00, 0x01, 0x00, 0x18, 0x40, 0x01, 0x0c, 0x01,
    0xff, 0xff, 0x01, 0x60, 0x00, 0x00, 0x03, 0x00, 0x90, 0x00, 0x00, 0x03, 0x00, 0x00, 0x03, 0x00,
    0x3c, 0x95, 0x98, 0x09, 0x21, 0x00, 0x01, 0x00, 0x2a, 0x42, 0x01, 0x01, 0x01, 0x60, 0x00, 0x00,
    0x03, 0x00, 0x90, 0x00, 0x00, 0x03, 0x00, 0x00, 0x03, 0x00, 0x3c, 0xa0, 0x0a, 0x08, 0x0f, 0x16,
    0x59, 0x59, 0xa4, 0x93, 0x2b, 0xc0, 0x5a, 0x02, 0x00, 0x00, 0x03, 0x00, 0x02, 0x00, 0x00, 0x03,
    0x00, 0x3c, 0x10, 0x22, 0x00, 0x01, 0x00, 0x07, 0x44, 0x01, 0xc1, 0x72, 0xb4, 0x62, 0x40,
];
/// AAC-LC, 48 kHz, stereo.
const AAC_ASC: &[u8] = &[0x11, 0x90];

/// Timestamps are any tick count within ±2^40 (34,000 years at a 1 Hz timescale, far beyond any
/// clock a source has), so the segmenter's i64 arithmetic is exercised, not the i64 range.
const MAX_TICKS: i64 = 1 << 40;

#[derive(Debug, Arbitrary)]
enum TagKind {
    Audio,
    Video,
}

/// The first bytes of a tag body in the shapes publishers send, so the fuzzer gets past the
/// header checks quickly; `Raw` is any bytes at all.
#[derive(Debug, Arbitrary)]
enum TagStart {
    Raw,
    /// `0x17 0x00 cts` + the x264 record (legacy AVC sequence header).
    AvcSequenceHeader {
        cts: [u8; 3],
    },
    /// `frame_type|7, 0x01, cts` (legacy AVC NAL units).
    AvcFrame {
        frame_type: u8,
        cts: [u8; 3],
    },
    /// Enhanced RTMP `avc1`: packet type, FourCC.
    EnhancedAvc {
        frame_type: u8,
        packet_type: u8,
    },
    /// Enhanced RTMP `hvc1` (the x265 record on a sequence start), `av01` or `vp09`.
    Enhanced {
        fourcc: EnhancedFourCc,
        frame_type: u8,
        packet_type: u8,
    },
    /// `0xAF 0x00` + AAC-LC 48 kHz stereo.
    AacSequenceHeader,
    /// `0xAF packet_type`.
    Aac {
        packet_type: u8,
    },
}

#[derive(Debug, Arbitrary, Clone, Copy)]
enum EnhancedFourCc {
    Hvc1,
    Av01,
    Vp09,
}

#[derive(Debug, Arbitrary)]
struct FlvTag {
    kind: TagKind,
    timestamp: u32,
    start: TagStart,
    body: Vec<u8>,
}

impl FlvTag {
    fn bytes(&self) -> Bytes {
        let mut out = match self.start {
            TagStart::Raw => Vec::new(),
            TagStart::AvcSequenceHeader { cts } => {
                let mut v = vec![0x17, 0x00, cts[0], cts[1], cts[2]];
                v.extend_from_slice(AVC_RECORD);
                v
            }
            TagStart::AvcFrame { frame_type, cts } => {
                vec![(frame_type & 0x07) << 4 | 7, 0x01, cts[0], cts[1], cts[2]]
            }
            TagStart::EnhancedAvc {
                frame_type,
                packet_type,
            } => {
                let first = 0x80 | (frame_type & 0x07) << 4 | (packet_type & 0x0F);
                let mut v = vec![first];
                v.extend_from_slice(b"avc1");
                if packet_type & 0x0F == 0 {
                    v.extend_from_slice(AVC_RECORD);
                }
                v
            }
            TagStart::Enhanced {
                fourcc,
                frame_type,
                packet_type,
            } => {
                let first = 0x80 | (frame_type & 0x07) << 4 | (packet_type & 0x0F);
                let (name, record): (&[u8; 4], &[u8]) = match fourcc {
                    EnhancedFourCc::Hvc1 => (b"hvc1", HEVC_RECORD),
                    EnhancedFourCc::Av01 => (b"av01", &[0x81, 0, 0x0c, 0]),
                    EnhancedFourCc::Vp09 => (b"vp09", &[0, 31, 0x80, 2, 2, 2, 0, 0]),
                };
                let mut v = vec![first];
                v.extend_from_slice(name);
                if packet_type & 0x0F == 0 {
                    v.extend_from_slice(record);
                }
                v
            }
            TagStart::AacSequenceHeader => [&[0xAF, 0x00][..], AAC_ASC].concat(),
            TagStart::Aac { packet_type } => vec![0xAF, packet_type],
        };
        out.extend_from_slice(&self.body);
        Bytes::from(out)
    }
}

/// A publisher's FLV tags (audio or video, any u32 timestamp, any body) into `FlvDemuxer`, and
/// what it yields into a passthrough `Segmenter` as the pipeline does. Errors end the run where
/// the connection would end the broadcast (fatal demux errors, any segmenter error).
pub fn flv_demux(data: &[u8]) {
    let Ok(tags) = Vec::<FlvTag>::arbitrary_take_rest(Unstructured::new(data)) else {
        return;
    };
    let mut demuxer = FlvDemuxer::new();
    let mut check = Checker::new(SegmenterConfig {
        target_duration: 2.0,
        first_number: 0,
        cut: CutRule::AfterTarget,
        part_duration: 0.5,
    });
    for tag in &tags {
        let event = match tag.kind {
            TagKind::Audio => demuxer.audio(tag.bytes(), tag.timestamp),
            TagKind::Video => demuxer.video(tag.bytes(), tag.timestamp),
        };
        let event = match event {
            Ok(Some(event)) => event,
            Ok(None) => continue,
            Err(e) if e.is_fatal() => break,
            Err(_) => continue,
        };
        if let crate::media::StreamEvent::Frame(frame) = &event {
            assert!(!frame.data.is_empty(), "the demuxer yielded an empty frame");
        }
        if !check.push(event.into()) {
            return;
        }
    }
    check.push(RenditionEvent::End);
}

/// The same bytes into every decoder-configuration parser: the AVCDecoderConfigurationRecord
/// (with its SPS, through h264-reader), the AAC AudioSpecificConfig, and the Annex-B helpers the
/// transcoder applies to x264's output, the HEVC record (with the start of its SPS), the AV1
/// record (with its sequence header), the VP9 record and a VP9 keyframe header, the Opus
/// `OpusHead` and a VP8 keyframe header (what a browser's recording carries). Whatever
/// parses must also make a CMAF init segment that parses back (or be refused by name).
pub fn codec_config(data: &[u8]) {
    if let Ok(config) = HevcConfig::parse(Bytes::copy_from_slice(data)) {
        assert!((1..=16_384).contains(&config.width) && (1..=16_384).contains(&config.height));
        assert!(matches!(config.nalu_length_size, 1 | 2 | 4));
        assert!(!config.vps.is_empty() && !config.sps.is_empty() && !config.pps.is_empty());
        assert!(config.codec_string().starts_with("hvc1."));
        check_init(&CodecConfig::Hevc(config));
    }
    if let Ok(config) = Av1Config::parse(Bytes::copy_from_slice(data)) {
        assert!(config.size.is_none_or(|(w, h)| w >= 1 && h >= 1));
        let config = CodecConfig::Av1(config);
        assert!(config.packaging_refusal().is_some());
        assert!(cmaf::init_segment(&config).is_err());
    }
    if let Ok(config) = Vp9Config::parse(Bytes::copy_from_slice(data)) {
        assert!(config.profile <= 3);
    }
    if let Some((width, height)) = vp9_keyframe_size(data) {
        assert!(width >= 1 && height >= 1);
    }
    if let Ok(config) = Vp8Config::from_keyframe(data) {
        assert!(config.width >= 1 && config.height >= 1);
        assert_eq!(Vp8Config::parse(&config.record()), Ok(config.clone()));
        let config = CodecConfig::Vp8(config);
        assert!(config.packaging_refusal().is_some());
        assert!(cmaf::init_segment(&config).is_err());
    }
    if let Ok(config) = OpusConfig::parse(Bytes::copy_from_slice(data)) {
        assert!(config.channels >= 1);
        let config = CodecConfig::Opus(config);
        assert!(config.packaging_refusal().is_some());
        assert!(cmaf::init_segment(&config).is_err());
    }
    if let Ok(config) = AvcConfig::parse(Bytes::copy_from_slice(data)) {
        check_avc(&config);
    }
    if let Ok(config) = AacConfig::parse(Bytes::copy_from_slice(data)) {
        assert!((1_000..=192_000).contains(&config.sample_rate));
        assert_ne!(config.object_type, 0);
        check_init(&CodecConfig::Aac(config));
    }
    if let Ok(config) = avc::config_from_annex_b(data) {
        check_avc(&config);
    }
    let units = avc::annex_b_units(data);
    for unit in &units {
        assert!(!unit.is_empty());
        assert!(
            !unit.windows(3).any(|w| w == [0, 0, 1]),
            "a start code inside a unit"
        );
    }
    let prefixed = avc::to_length_prefixed(data);
    let mut rest = &prefixed[..];
    while let Some((len, tail)) = rest.split_first_chunk::<4>() {
        let len = u32::from_be_bytes(*len) as usize;
        assert!(len > 0 && len <= tail.len(), "a broken length prefix");
        rest = &tail[len..];
    }
    assert!(rest.is_empty(), "trailing bytes after the last unit");
}

fn check_avc(config: &AvcConfig) {
    assert!((1..=16_384).contains(&config.width) && (1..=16_384).contains(&config.height));
    assert!(matches!(config.nalu_length_size, 1 | 2 | 4));
    assert!(!config.sps.is_empty() && !config.pps.is_empty());
    assert_eq!(config.codec_string().len(), "avc1.64001f".len());
    check_init(&CodecConfig::Avc(config.clone()));
}

/// An init segment, when one is written, is `ftyp` + `moov` with one track.
fn check_init(codec: &CodecConfig) {
    let Ok(bytes) = cmaf::init_segment(codec) else {
        return;
    };
    let mut cur = std::io::Cursor::new(&bytes[..]);
    assert!(matches!(Any::decode(&mut cur), Ok(Any::Ftyp(_))));
    match Moov::decode(&mut cur) {
        Ok(moov) => assert_eq!(moov.trak.len(), 1),
        Err(e) => panic!("our init segment does not parse: {e}"),
    }
}

#[derive(Debug, Arbitrary)]
enum Timescale {
    Millis,
    Video,
    Audio,
    Other(u32),
}

impl Timescale {
    fn get(&self) -> u32 {
        match self {
            Timescale::Millis => 1_000,
            Timescale::Video => 90_000,
            Timescale::Audio => 48_000,
            Timescale::Other(t) => (*t).max(1),
        }
    }
}

#[derive(Debug, Arbitrary)]
enum SegEvent {
    /// A video rendition's config: the x264 record with this `level_idc` (so configs differ).
    VideoTrack {
        rendition: u8,
        level: u8,
    },
    /// The audio rendition's config: an AudioSpecificConfig (skipped when it does not parse).
    AudioTrack {
        asc: [u8; 2],
    },
    Video {
        rendition: u8,
        dts: i64,
        /// PTS − DTS, signed.
        cts: i32,
        timescale: Timescale,
        keyframe: bool,
        data: Vec<u8>,
    },
    Audio {
        time: i64,
        timescale: Timescale,
        data: Vec<u8>,
    },
    Poster,
    End,
}

#[derive(Debug, Arbitrary)]
struct SegmenterInput {
    every_keyframe: bool,
    /// Target duration in tenths of a second, minus one.
    target: u8,
    first_number: u32,
    /// Part duration in tenths of a second, minus two (0.2–1.0 s).
    part: u8,
    events: Vec<SegEvent>,
}

/// Arbitrary multi-rendition frames (renditions 0..20, any timestamps, sync flags and sizes)
/// into one `Segmenter`, as the ladder or passthrough feeds it.
pub fn segmenter(data: &[u8]) {
    let Ok(input) = SegmenterInput::arbitrary_take_rest(Unstructured::new(data)) else {
        return;
    };
    let mut check = Checker::new(SegmenterConfig {
        target_duration: (f64::from(input.target) + 1.0) / 10.0,
        first_number: u64::from(input.first_number),
        cut: if input.every_keyframe {
            CutRule::AtMarks
        } else {
            CutRule::AfterTarget
        },
        part_duration: (f64::from(input.part % 9) + 2.0) / 10.0,
    });
    let ticks = |t: i64| t % MAX_TICKS;
    for event in input.events {
        let event = match event {
            SegEvent::VideoTrack { rendition, level } => {
                let mut record = AVC_RECORD.to_vec();
                record[3] = level;
                let Ok(config) = AvcConfig::parse(Bytes::from(record)) else {
                    continue;
                };
                RenditionEvent::Track {
                    id: TrackId::Video(usize::from(rendition % 20)),
                    name: format!("r{rendition}"),
                    info: TrackInfo {
                        kind: TrackKind::Video,
                        codec: CodecConfig::Avc(config),
                    },
                }
            }
            SegEvent::AudioTrack { asc } => {
                let Ok(config) = AacConfig::parse(Bytes::copy_from_slice(&asc)) else {
                    continue;
                };
                RenditionEvent::Track {
                    id: TrackId::Audio,
                    name: "audio".into(),
                    info: TrackInfo {
                        kind: TrackKind::Audio,
                        codec: CodecConfig::Aac(config),
                    },
                }
            }
            SegEvent::Video {
                rendition,
                dts,
                cts,
                timescale,
                keyframe,
                data,
            } => {
                let dts = ticks(dts);
                let scale = timescale.get();
                RenditionEvent::Frame {
                    id: TrackId::Video(usize::from(rendition % 20)),
                    frame: MediaFrame {
                        kind: TrackKind::Video,
                        dts: Timestamp::new(dts, scale),
                        pts: Timestamp::new(dts + i64::from(cts), scale),
                        // one flag drives both, so either cut rule sees its cuts
                        sync: keyframe,
                        segment_start: keyframe,
                        data: Bytes::from(data),
                    },
                }
            }
            SegEvent::Audio {
                time,
                timescale,
                data,
            } => {
                let ts = Timestamp::new(ticks(time), timescale.get());
                RenditionEvent::Frame {
                    id: TrackId::Audio,
                    frame: MediaFrame {
                        kind: TrackKind::Audio,
                        dts: ts,
                        pts: ts,
                        sync: true,
                        segment_start: false,
                        data: Bytes::from(data),
                    },
                }
            }
            SegEvent::Poster => RenditionEvent::Poster(Bytes::from_static(b"\xFF\xD8")),
            SegEvent::End => RenditionEvent::End,
        };
        let end = matches!(event, RenditionEvent::End);
        if !check.push(event) || end {
            return;
        }
    }
    check.push(RenditionEvent::End);
}

/// Drives a `Segmenter` and checks what it emits: one `Init` before any segment, segment
/// numbers consecutive from the first, every track segment exactly the concatenation of its
/// parts (indices 0, 1, … of that segment), every video segment starting with a sync sample,
/// every part parsing back as (`styp` for the first) `moof` + `mdat` with the samples it claims
/// and no video sample of zero duration.
struct Checker {
    segmenter: Segmenter,
    next_number: u64,
    init: bool,
    /// Parts received and not yet in an emitted segment.
    parts: Vec<Part>,
}

impl Checker {
    fn new(config: SegmenterConfig) -> Self {
        Self {
            next_number: config.first_number,
            segmenter: Segmenter::new(config),
            init: false,
            parts: Vec::new(),
        }
    }

    /// `false` once the segmenter refused an event (the broadcast would end there).
    fn push(&mut self, event: RenditionEvent) -> bool {
        let Ok(out) = self.segmenter.push(event) else {
            return false;
        };
        for output in out {
            match output {
                SegmenterOutput::Init(tracks) => {
                    assert!(!self.init, "a second Init");
                    self.init = true;
                    assert!(!tracks.is_empty());
                    for track in &tracks {
                        check_init(&track.info.codec);
                    }
                }
                SegmenterOutput::Part(part) => {
                    assert!(self.init, "a part before the Init");
                    assert!(
                        part.segment >= self.next_number,
                        "a part of an emitted segment"
                    );
                    let before = self
                        .parts
                        .iter()
                        .filter(|p| p.id == part.id && p.segment == part.segment)
                        .count();
                    assert_eq!(part.index as usize, before, "part indices skip");
                    let video = part.id.kind() == TrackKind::Video;
                    assert_eq!(
                        check_chunks(&part.bytes, part.index == 0, video),
                        part.samples
                    );
                    self.parts.push(part);
                }
                SegmenterOutput::Segment(segment) => self.segment(&segment),
            }
        }
        true
    }

    fn segment(&mut self, segment: &Segment) {
        assert!(self.init, "a segment before the Init");
        assert_eq!(segment.number, self.next_number, "segment numbers skip");
        self.next_number += 1;
        for track in &segment.tracks {
            check_fragment(track);
            let parts: Vec<Part> = self
                .parts
                .extract_if(.., |p| p.id == track.id && p.segment == segment.number)
                .collect();
            let joined: Vec<u8> = parts.iter().flat_map(|p| p.bytes.iter().copied()).collect();
            assert_eq!(
                joined, track.bytes,
                "a segment is not its parts back to back"
            );
            assert_eq!(parts.len(), track.parts.len());
            for (part, info) in parts.iter().zip(&track.parts) {
                assert_eq!(part.info, *info);
            }
        }
        // a track left out of its segment (audio that stalled) had no parts either
        assert!(
            self.parts.iter().all(|p| p.segment > segment.number),
            "parts of segment {} are in no segment",
            segment.number
        );
    }
}

/// Checks one segment's or part's chunks (`styp` first when `with_styp`), returning the
/// samples they hold (video samples never last zero ticks).
fn check_chunks(bytes: &[u8], with_styp: bool, video: bool) -> u32 {
    let mut cur = std::io::Cursor::new(bytes);
    if with_styp {
        assert!(matches!(Any::decode(&mut cur), Ok(Any::Styp(_))));
    }
    let mut samples = 0;
    while (cur.position() as usize) < bytes.len() {
        let moof = match Moof::decode(&mut cur) {
            Ok(moof) => moof,
            Err(e) => panic!("our fragment does not parse: {e}"),
        };
        let entries: Vec<_> = moof.traf[0].trun[0].samples.iter().collect();
        assert!(!entries.is_empty());
        if video {
            assert!(entries.iter().all(|s| s.duration != Some(0)));
        }
        samples += entries.len() as u32;
        let payload: u64 = entries.iter().map(|s| u64::from(s.size.unwrap_or(0))).sum();
        match Any::decode(&mut cur) {
            Ok(Any::Mdat(mdat)) => assert_eq!(mdat.data.len() as u64, payload),
            other => panic!("no mdat after the moof: {other:?}"),
        }
    }
    samples
}

fn check_fragment(track: &TrackSegment) {
    let video = track.kind() == TrackKind::Video;
    if video {
        assert!(
            track.starts_with_keyframe,
            "a video segment starts without a keyframe"
        );
    }
    assert_eq!(check_chunks(&track.bytes, true, video), track.samples);
    let mut cur = std::io::Cursor::new(&track.bytes[..]);
    assert!(matches!(Any::decode(&mut cur), Ok(Any::Styp(_))));
    let Ok(moof) = Moof::decode(&mut cur) else {
        panic!("checked above")
    };
    let first = moof.traf[0].trun[0].samples.iter().next();
    if video {
        // sample_depends_on = 2: a sync sample
        assert_eq!(first.and_then(|s| s.flags).map(|f| f >> 24), Some(2));
    }
}
