//! Decoder configurations (H.264 `AVCDecoderConfigurationRecord`, AAC `AudioSpecificConfig`),
//! validated once when they arrive, with what manifests need from them: codec strings,
//! resolution, frame rate, sample rate.
//!
//! The AVC record and its SPS are parsed by `h264-reader`; the AudioSpecificConfig is a few bits,
//! parsed here because no maintained crate exposes just that without a decoder.

use bytes::Bytes;
use h264_reader::avcc::AvcDecoderConfigurationRecord;
use h264_reader::nal::sps::SeqParameterSet;
use h264_reader::nal::{Nal, RefNal};

#[derive(Debug, thiserror::Error, PartialEq)]
pub enum CodecError {
    #[error("invalid AVCDecoderConfigurationRecord: {0}")]
    Avc(String),
    #[error("invalid AAC AudioSpecificConfig: {0}")]
    Aac(String),
}

/// A track's decoder configuration.
#[derive(Debug, Clone, PartialEq)]
pub enum CodecConfig {
    Avc(AvcConfig),
    Aac(AacConfig),
}

impl CodecConfig {
    /// RFC 6381 codec string for manifests (`avc1.64001f`, `mp4a.40.2`).
    pub fn codec_string(&self) -> String {
        match self {
            CodecConfig::Avc(avc) => avc.codec_string(),
            CodecConfig::Aac(aac) => aac.codec_string(),
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
            (CodecConfig::Aac(a), CodecConfig::Aac(b)) => {
                (a.object_type, a.sample_rate, a.channels)
                    == (b.object_type, b.sample_rate, b.channels)
            }
            _ => false,
        }
    }

    /// The media timescale CMAF uses for this track: 90 kHz for video, the sample rate for audio.
    pub fn timescale(&self) -> u32 {
        match self {
            CodecConfig::Avc(_) => 90_000,
            CodecConfig::Aac(aac) => aac.sample_rate,
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
        let mut bits = BitCursor::new(&asc);
        let mut object_type = bits.read(5)? as u8;
        if object_type == 31 {
            object_type = 32 + bits.read(6)? as u8;
        }
        let freq_index = bits.read(4)? as usize;
        let sample_rate = if freq_index == 15 {
            bits.read(24)?
        } else {
            *AAC_SAMPLE_RATES
                .get(freq_index)
                .ok_or_else(|| CodecError::Aac(format!("reserved frequency index {freq_index}")))?
        };
        let channels = bits.read(4)? as u8;
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

struct BitCursor<'a> {
    data: &'a [u8],
    pos: usize,
}

impl<'a> BitCursor<'a> {
    fn new(data: &'a [u8]) -> Self {
        Self { data, pos: 0 }
    }

    fn read(&mut self, count: usize) -> Result<u32, CodecError> {
        let mut value = 0u32;
        for _ in 0..count {
            let byte = self
                .data
                .get(self.pos / 8)
                .ok_or_else(|| CodecError::Aac("truncated".into()))?;
            let bit = (byte >> (7 - self.pos % 8)) & 1;
            value = (value << 1) | u32::from(bit);
            self.pos += 1;
        }
        Ok(value)
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
