//! Decoder configurations (H.264 `AVCDecoderConfigurationRecord`, H.265 `hvcC`, AV1 `av1C`,
//! VP9 `vpcC`, AAC `AudioSpecificConfig`, Opus `OpusHead`, VP8's keyframe size), validated once when they arrive, with what manifests
//! and the transcoder need from them: codec strings, resolution, frame rate, sample rate, and
//! whether Strata can package the codec as CMAF (H.264, HEVC, AAC) or only decode it (AV1, VP9,
//! VP8, Opus).
//!
//! The AVC record and its SPS are parsed by `h264-reader`, the HEVC record by mp4-atom; the
//! AudioSpecificConfig and the few header fields of `hevc`, `av1` and `vp9` are read here with
//! `bits`, because no maintained crate exposes just those without a decoder.

mod av1;
pub(crate) mod bits;
mod hevc;
mod opus;
mod vp8;
mod vp9;

pub use av1::{sequence_header_size as av1_sequence_header_size, Av1Config};
pub use hevc::{record_from_parameter_sets as hevc_record, HevcConfig};
pub use opus::{OpusConfig, OPUS_SAMPLE_RATE};
pub use vp8::{keyframe_size as vp8_keyframe_size, Vp8Config};
pub use vp9::{keyframe_size as vp9_keyframe_size, Vp9Config};

use bytes::Bytes;
use h264_reader::avcc::AvcDecoderConfigurationRecord;
use h264_reader::nal::sps::SeqParameterSet;
use h264_reader::nal::{Nal, RefNal};

#[derive(Debug, thiserror::Error, PartialEq)]
pub enum CodecError {
    #[error("invalid AVCDecoderConfigurationRecord: {0}")]
    Avc(String),
    #[error("invalid HEVCDecoderConfigurationRecord: {0}")]
    Hevc(String),
    #[error("invalid AV1CodecConfigurationRecord: {0}")]
    Av1(String),
    #[error("invalid VPCodecConfigurationRecord: {0}")]
    Vp9(String),
    #[error("invalid AAC AudioSpecificConfig: {0}")]
    Aac(String),
    #[error("invalid VP8 configuration: {0}")]
    Vp8(String),
    #[error("invalid OpusHead: {0}")]
    Opus(String),
}

/// A track's decoder configuration.
#[derive(Debug, Clone, PartialEq)]
pub enum CodecConfig {
    Avc(AvcConfig),
    Hevc(HevcConfig),
    Av1(Av1Config),
    Vp9(Vp9Config),
    Vp8(Vp8Config),
    Aac(AacConfig),
    Opus(OpusConfig),
}

impl CodecConfig {
    /// RFC 6381 codec string for manifests (`avc1.64001f`, `hvc1.1.6.L93.B0`, `mp4a.40.2`).
    pub fn codec_string(&self) -> String {
        match self {
            CodecConfig::Avc(avc) => avc.codec_string(),
            CodecConfig::Hevc(hevc) => hevc.codec_string(),
            CodecConfig::Av1(av1) => av1.codec_string(),
            CodecConfig::Vp9(vp9) => vp9.codec_string(),
            CodecConfig::Vp8(vp8) => vp8.codec_string(),
            CodecConfig::Aac(aac) => aac.codec_string(),
            CodecConfig::Opus(opus) => opus.codec_string(),
        }
    }

    /// The codec's name for people (logs, refusals).
    pub fn name(&self) -> &'static str {
        match self {
            CodecConfig::Avc(_) => "H.264",
            CodecConfig::Hevc(_) => "HEVC",
            CodecConfig::Av1(_) => "AV1",
            CodecConfig::Vp9(_) => "VP9",
            CodecConfig::Vp8(_) => "VP8",
            CodecConfig::Aac(_) => "AAC",
            CodecConfig::Opus(_) => "Opus",
        }
    }

    /// The picture size the configuration declares: `None` for audio, and for AV1/VP9 records
    /// that do not carry one (the first keyframe then tells).
    pub fn video_size(&self) -> Option<(u32, u32)> {
        match self {
            CodecConfig::Avc(avc) => Some((avc.width, avc.height)),
            CodecConfig::Hevc(hevc) => Some((hevc.width, hevc.height)),
            CodecConfig::Av1(av1) => av1.size,
            CodecConfig::Vp8(vp8) => Some((vp8.width, vp8.height)),
            CodecConfig::Vp9(_) | CodecConfig::Aac(_) | CodecConfig::Opus(_) => None,
        }
    }

    /// The frame rate the configuration declares, when it does.
    pub fn frame_rate(&self) -> Option<f64> {
        match self {
            CodecConfig::Avc(avc) => avc.frame_rate,
            CodecConfig::Hevc(hevc) => hevc.frame_rate,
            _ => None,
        }
    }

    /// Whether Strata can package this codec as CMAF as it is (passthrough). AV1, VP9, VP8 and
    /// Opus are decoded by a transcoding ladder only: their CMAF bindings (`av01`, `vp09`,
    /// `Opus` sample entries) are not written, and a player that is sent a codec it cannot play
    /// shows nothing, so a passthrough broadcast of them is refused with this reason.
    pub fn packaging_refusal(&self) -> Option<String> {
        match self {
            CodecConfig::Opus(_) => Some(
                "Opus audio cannot be passed through (Strata packages AAC as it is); give the \
                 stream a transcoding ladder, which encodes it as AAC"
                    .into(),
            ),
            CodecConfig::Av1(_) | CodecConfig::Vp9(_) | CodecConfig::Vp8(_) => Some(format!(
                "{} video cannot be passed through (Strata packages H.264 and HEVC as they \
                 are); give the stream a transcoding ladder, which decodes {} into H.264",
                self.name(),
                self.name()
            )),
            _ => None,
        }
    }

    /// Whether `other` describes the same coded stream: the same parameter sets and NAL length
    /// size (H.264), the same object type, rate and channels (AAC), however the record was
    /// written (an FLV sequence header and a record built from MPEG-TS differ in their bytes:
    /// a publisher resuming over another protocol sends the same stream).
    pub fn same_stream(&self, other: &CodecConfig) -> bool {
        match (self, other) {
            (CodecConfig::Avc(a), CodecConfig::Avc(b)) => {
                a.sps == b.sps
                    && a.pps == b.pps
                    && a.nalu_length_size == b.nalu_length_size
                    && (a.width, a.height) == (b.width, b.height)
            }
            (CodecConfig::Hevc(a), CodecConfig::Hevc(b)) => {
                (&a.vps, &a.sps, &a.pps, a.nalu_length_size)
                    == (&b.vps, &b.sps, &b.pps, b.nalu_length_size)
            }
            (CodecConfig::Aac(a), CodecConfig::Aac(b)) => {
                (a.object_type, a.sample_rate, a.channels)
                    == (b.object_type, b.sample_rate, b.channels)
            }
            (a, b) => a == b,
        }
    }

    /// The media timescale CMAF uses for this track: 90 kHz for video, the sample rate for audio.
    pub fn timescale(&self) -> u32 {
        match self {
            CodecConfig::Aac(aac) => aac.sample_rate,
            CodecConfig::Opus(_) => OPUS_SAMPLE_RATE,
            _ => 90_000,
        }
    }
}

/// H.264 configuration, as carried in FLV/RTMP and in the `avcC` box.
#[derive(Debug, Clone, PartialEq)]
pub struct AvcConfig {
    /// The record exactly as received; `avcC` carries it verbatim.
    pub record: Bytes,
    pub profile_idc: u8,
    pub constraint_flags: u8,
    pub level_idc: u8,
    /// Bytes in each NAL unit length prefix (1, 2 or 4).
    pub nalu_length_size: u8,
    pub sps: Vec<Bytes>,
    pub pps: Vec<Bytes>,
    pub width: u32,
    pub height: u32,
    /// From the SPS VUI timing info when present.
    pub frame_rate: Option<f64>,
}

impl AvcConfig {
    pub fn parse(record: Bytes) -> Result<Self, CodecError> {
        let avcc = AvcDecoderConfigurationRecord::try_from(&record[..])
            .map_err(|e| CodecError::Avc(format!("{e:?}")))?;
        let nalu_length_size = avcc.length_size_minus_one() + 1;
        if nalu_length_size == 3 {
            return Err(CodecError::Avc(
                "3-byte NAL unit lengths are not allowed".into(),
            ));
        }
        // h264-reader's parameter-set iterators index into a zero-length set and panic (fuzz
        // target `codec_config`), so the sets are walked here; its record check above has
        // already confirmed every length fits.
        let (sps, pps) = param_sets(&record)?;
        let first_sps = sps
            .first()
            .ok_or_else(|| CodecError::Avc("no SPS".into()))?;
        if pps.is_empty() {
            return Err(CodecError::Avc("no PPS".into()));
        }
        let nal = RefNal::new(&first_sps[..], &[], true);
        let parsed = SeqParameterSet::from_bits(nal.rbsp_bits())
            .map_err(|e| CodecError::Avc(format!("SPS: {e:?}")))?;
        let (width, height) = parsed
            .pixel_dimensions()
            .map_err(|e| CodecError::Avc(format!("SPS dimensions: {e:?}")))?;
        if width == 0 || height == 0 || width > 16_384 || height > 16_384 {
            return Err(CodecError::Avc(format!(
                "implausible size {width}x{height}"
            )));
        }
        let frame_rate = parsed
            .fps()
            .filter(|f| f.is_finite() && *f > 0.0 && *f <= 1000.0);
        Ok(Self {
            profile_idc: record[1],
            constraint_flags: record[2],
            level_idc: record[3],
            record,
            nalu_length_size,
            sps,
            pps,
            width,
            height,
            frame_rate,
        })
    }

    pub fn codec_string(&self) -> String {
        format!(
            "avc1.{:02x}{:02x}{:02x}",
            self.profile_idc, self.constraint_flags, self.level_idc
        )
    }
}

/// The SPS and PPS of an AVCDecoderConfigurationRecord, each a non-empty NAL unit of its type.
fn param_sets(record: &[u8]) -> Result<(Vec<Bytes>, Vec<Bytes>), CodecError> {
    const SPS: u8 = 7;
    const PPS: u8 = 8;
    let truncated = || CodecError::Avc("truncated parameter sets".into());
    let mut pos = 5;
    let mut sets = [Vec::new(), Vec::new()];
    for (i, (kind, mask)) in [(SPS, 0x1F), (PPS, 0xFF)].into_iter().enumerate() {
        let count = record.get(pos).ok_or_else(truncated)? & mask;
        pos += 1;
        for _ in 0..count {
            let len = record.get(pos..pos + 2).ok_or_else(truncated)?;
            let len = usize::from(u16::from_be_bytes([len[0], len[1]]));
            let set = record.get(pos + 2..pos + 2 + len).ok_or_else(truncated)?;
            let name = if kind == SPS { "SPS" } else { "PPS" };
            match set.first() {
                Some(header) if header & 0x1F == kind => {}
                Some(header) => {
                    return Err(CodecError::Avc(format!(
                        "{name}: NAL unit type {}",
                        header & 0x1F
                    )))
                }
                None => return Err(CodecError::Avc(format!("empty {name}"))),
            }
            sets[i].push(Bytes::copy_from_slice(set));
            pos += 2 + len;
        }
    }
    let [sps, pps] = sets;
    Ok((sps, pps))
}

/// AAC configuration (ISO/IEC 14496-3 AudioSpecificConfig).
#[derive(Debug, Clone, PartialEq)]
pub struct AacConfig {
    /// The AudioSpecificConfig exactly as received; `esds` carries it verbatim.
    pub asc: Bytes,
    /// Audio object type: 2 = AAC-LC, 5 = HE-AAC (SBR), 29 = HE-AACv2.
    pub object_type: u8,
    pub sample_rate: u32,
    pub channels: u8,
}

const AAC_SAMPLE_RATES: [u32; 13] = [
    96_000, 88_200, 64_000, 48_000, 44_100, 32_000, 24_000, 22_050, 16_000, 12_000, 11_025, 8_000,
    7_350,
];

/// Samples in one AAC frame (AAC-LC and the core of HE-AAC).
pub const AAC_FRAME_SAMPLES: u32 = 1024;

impl AacConfig {
    pub fn parse(asc: Bytes) -> Result<Self, CodecError> {
        let mut bits = bits::BitReader::new(&asc);
        let truncated = |_| CodecError::Aac("truncated".into());
        let mut object_type = bits.read(5).map_err(truncated)? as u8;
        if object_type == 31 {
            object_type = 32 + bits.read(6).map_err(truncated)? as u8;
        }
        let freq_index = bits.read(4).map_err(truncated)? as usize;
        let sample_rate = if freq_index == 15 {
            bits.read(24).map_err(truncated)?
        } else {
            *AAC_SAMPLE_RATES
                .get(freq_index)
                .ok_or_else(|| CodecError::Aac(format!("reserved frequency index {freq_index}")))?
        };
        let channels = bits.read(4).map_err(truncated)? as u8;
        if object_type == 0 {
            return Err(CodecError::Aac("object type 0".into()));
        }
        if !(1_000..=192_000).contains(&sample_rate) {
            return Err(CodecError::Aac(format!("sample rate {sample_rate} Hz")));
        }
        Ok(Self {
            asc,
            object_type,
            sample_rate,
            channels,
        })
    }

    pub fn codec_string(&self) -> String {
        format!("mp4a.40.{}", self.object_type)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::media::codec_test_data::AVC_RECORD_320X240;

    #[test]
    fn parses_x264_record() {
        let avc = AvcConfig::parse(Bytes::from_static(AVC_RECORD_320X240)).unwrap();
        assert_eq!((avc.width, avc.height), (320, 240));
        assert_eq!(avc.codec_string(), "avc1.4d400d");
        assert_eq!(avc.nalu_length_size, 4);
        assert_eq!(avc.sps.len(), 1);
        assert_eq!(avc.pps.len(), 1);
    }

    #[test]
    fn refuses_truncated_record() {
        let err = AvcConfig::parse(Bytes::from_static(&AVC_RECORD_320X240[..20])).unwrap_err();
        assert!(matches!(err, CodecError::Avc(_)));
        assert!(AvcConfig::parse(Bytes::new()).is_err());
    }

    #[test]
    fn refuses_an_empty_parameter_set() {
        // found by the `codec_config` fuzz target: h264-reader's iterator panicked on it
        let record = [0x01, 0x00, 0x00, 0x01, 0x00, 0x00, 0x01, 0x00, 0x00];
        assert_eq!(
            AvcConfig::parse(Bytes::copy_from_slice(&record)),
            Err(CodecError::Avc("empty PPS".into()))
        );
        let mut empty_sps = AVC_RECORD_320X240[..6].to_vec();
        empty_sps.extend_from_slice(&[0, 0, 1, 0, 4, 0x68, 0xce, 0x0f, 0xc8]);
        assert_eq!(
            AvcConfig::parse(Bytes::from(empty_sps)),
            Err(CodecError::Avc("empty SPS".into()))
        );
    }

    #[test]
    fn parses_aac_lc_48k_stereo() {
        let aac = AacConfig::parse(Bytes::from_static(&[0x11, 0x90, 0x56, 0xe5, 0x00])).unwrap();
        assert_eq!(
            (aac.object_type, aac.sample_rate, aac.channels),
            (2, 48_000, 2)
        );
        assert_eq!(aac.codec_string(), "mp4a.40.2");
    }

    #[test]
    fn refuses_short_or_reserved_aac_config() {
        assert!(AacConfig::parse(Bytes::from_static(&[0x11])).is_err());
        // frequency index 13 is reserved
        assert!(AacConfig::parse(Bytes::from_static(&[0x16, 0x90])).is_err());
    }
}
