//! H.265/HEVC configuration: the `HEVCDecoderConfigurationRecord` (ISO/IEC 14496-15 §8.3.3, as
//! Enhanced RTMP's `hvc1` sequence start and CMAF's `hvcC` carry it), with the picture size
//! read from its first SPS.
//!
//! The record is decoded by mp4-atom (already our box library; it checks every count against
//! the bytes left before allocating). The SPS is read here only up to the conformance window:
//! the crates that parse whole HEVC SPSs also walk VUI/HRD/extension syntax Strata never uses,
//! and every field read from an attacker's bytes is attack surface.

use bytes::Bytes;
use mp4_atom::{Atom, HvcCArray, Hvcc};

use super::bits::{unescape_rbsp, BitReader, Truncated};
use super::CodecError;

const NAL_VPS: u8 = 32;
const NAL_SPS: u8 = 33;
const NAL_PPS: u8 = 34;

/// H.265 configuration, as carried in Enhanced RTMP and in the `hvcC` box.
#[derive(Debug, Clone, PartialEq)]
pub struct HevcConfig {
    /// The record exactly as received.
    pub record: Bytes,
    pub profile_space: u8,
    pub tier_high: bool,
    pub profile_idc: u8,
    pub compatibility_flags: u32,
    pub constraint_flags: [u8; 6],
    pub level_idc: u8,
    /// Bytes in each NAL unit length prefix (1, 2 or 4).
    pub nalu_length_size: u8,
    pub vps: Vec<Bytes>,
    pub sps: Vec<Bytes>,
    pub pps: Vec<Bytes>,
    pub width: u32,
    pub height: u32,
    /// From the record's `avgFrameRate` (frames per 256 s) when the encoder wrote it.
    pub frame_rate: Option<f64>,
}

fn error(what: impl Into<String>) -> CodecError {
    CodecError::Hevc(what.into())
}

impl HevcConfig {
    pub fn parse(record: Bytes) -> Result<Self, CodecError> {
        let hvcc = Hvcc::decode_body(&mut &record[..]).map_err(|e| error(e.to_string()))?;
        if hvcc.configuration_version != 1 {
            return Err(error(format!(
                "configuration version {}",
                hvcc.configuration_version
            )));
        }
        let nalu_length_size = hvcc.length_size_minus_one + 1;
        if nalu_length_size == 3 {
            return Err(error("3-byte NAL unit lengths are not allowed"));
        }
        let mut sets: [Vec<Bytes>; 3] = Default::default();
        for array in &hvcc.arrays {
            let slot = match array.nal_unit_type {
                NAL_VPS => 0,
                NAL_SPS => 1,
                NAL_PPS => 2,
                _ => continue, // SEI arrays are allowed and not needed
            };
            for nal in &array.nalus {
                match nal.first() {
                    Some(header) if (header >> 1) & 0x3F == array.nal_unit_type => {}
                    _ => {
                        return Err(error(format!(
                            "a parameter set of type {} is empty or mislabelled",
                            array.nal_unit_type
                        )))
                    }
                }
                sets[slot].push(Bytes::copy_from_slice(nal));
            }
        }
        let [vps, sps, pps] = sets;
        if vps.is_empty() || pps.is_empty() {
            return Err(error("the record has no VPS or no PPS"));
        }
        let first_sps = sps.first().ok_or_else(|| error("no SPS"))?;
        let SpsFacts { width, height, .. } =
            read_sps(first_sps).map_err(|Truncated| error("truncated SPS"))??;
        if width == 0 || height == 0 || width > 16_384 || height > 16_384 {
            return Err(error(format!("implausible size {width}x{height}")));
        }
        let frame_rate =
            Some(f64::from(hvcc.avg_frame_rate) / 256.0).filter(|f| *f > 0.0 && *f <= 1000.0);
        Ok(Self {
            record,
            profile_space: hvcc.general_profile_space,
            tier_high: hvcc.general_tier_flag,
            profile_idc: hvcc.general_profile_idc,
            compatibility_flags: u32::from_be_bytes(hvcc.general_profile_compatibility_flags),
            constraint_flags: hvcc.general_constraint_indicator_flags,
            level_idc: hvcc.general_level_idc,
            nalu_length_size,
            vps,
            sps,
            pps,
            width,
            height,
            frame_rate,
        })
    }

    /// RFC 6381 / ISO/IEC 14496-15 Annex E: `hvc1.1.6.L93.B0` — profile space and profile,
    /// the compatibility flags bit-reversed in hex, tier and level, then the constraint bytes
    /// up to the last non-zero one.
    pub fn codec_string(&self) -> String {
        let space = ["", "A", "B", "C"][usize::from(self.profile_space & 3)];
        let tier = if self.tier_high { 'H' } else { 'L' };
        let mut out = format!(
            "hvc1.{space}{}.{:X}.{tier}{}",
            self.profile_idc,
            self.compatibility_flags.reverse_bits(),
            self.level_idc
        );
        let used = self
            .constraint_flags
            .iter()
            .rposition(|b| *b != 0)
            .map_or(0, |last| last + 1);
        for byte in &self.constraint_flags[..used] {
            out.push_str(&format!(".{byte:X}"));
        }
        out
    }
}

/// An `HEVCDecoderConfigurationRecord` (4-byte NAL lengths) for parameter sets found in the
/// stream (MPEG-TS carries them in-band): the profile, tier and level bytes are the SPS's own
/// `profile_tier_level`, chroma format and bit depths come from the SPS.
pub fn record_from_parameter_sets(vps: &[u8], sps: &[u8], pps: &[u8]) -> Result<Bytes, CodecError> {
    let facts = read_sps(sps).map_err(|Truncated| error("truncated SPS"))??;
    let rbsp = unescape_rbsp(sps.get(2..).unwrap_or_default());
    let ptl = rbsp.get(1..13).ok_or_else(|| error("truncated SPS"))?;
    let mut compatibility = [0u8; 4];
    compatibility.copy_from_slice(&ptl[1..5]);
    let mut constraints = [0u8; 6];
    constraints.copy_from_slice(&ptl[5..11]);
    let array = |nal_unit_type: u8, nal: &[u8]| HvcCArray {
        completeness: true,
        nal_unit_type,
        nalus: vec![nal.to_vec()],
    };
    let hvcc = Hvcc {
        configuration_version: 1,
        general_profile_space: ptl[0] >> 6,
        general_tier_flag: ptl[0] & 0x20 != 0,
        general_profile_idc: ptl[0] & 0x1F,
        general_profile_compatibility_flags: compatibility,
        general_constraint_indicator_flags: constraints,
        general_level_idc: ptl[11],
        min_spatial_segmentation_idc: 0,
        parallelism_type: 0,
        chroma_format_idc: facts.chroma_format_idc,
        bit_depth_luma_minus8: facts.bit_depth_luma_minus8,
        bit_depth_chroma_minus8: facts.bit_depth_chroma_minus8,
        avg_frame_rate: 0,
        constant_frame_rate: 0,
        num_temporal_layers: facts.max_sub_layers,
        temporal_id_nested: facts.temporal_id_nesting,
        length_size_minus_one: 3,
        arrays: vec![
            array(NAL_VPS, vps),
            array(NAL_SPS, sps),
            array(NAL_PPS, pps),
        ],
    };
    let mut record = Vec::with_capacity(32 + vps.len() + sps.len() + pps.len());
    hvcc.encode_body(&mut record)
        .map_err(|e| error(format!("cannot write the record: {e}")))?;
    Ok(Bytes::from(record))
}

/// What Strata reads of an HEVC SPS (H.265 §7.3.2.2, up to the bit depths).
struct SpsFacts {
    width: u32,
    height: u32,
    chroma_format_idc: u8,
    bit_depth_luma_minus8: u8,
    bit_depth_chroma_minus8: u8,
    max_sub_layers: u8,
    temporal_id_nesting: bool,
}

/// Reads `nal` (an SPS with its 2-byte header). The outer `Result` is running out of bits; the
/// inner one a value out of range. The picture size is the cropped (conformance window) one.
fn read_sps(nal: &[u8]) -> Result<Result<SpsFacts, CodecError>, Truncated> {
    let rbsp = unescape_rbsp(nal.get(2..).ok_or(Truncated)?);
    let mut r = BitReader::new(&rbsp);
    r.skip(4)?; // sps_video_parameter_set_id
    let max_sub_layers_minus1 = r.read(3)? as usize;
    let temporal_id_nesting = r.flag()?;
    // profile_tier_level(1, max_sub_layers_minus1)
    r.skip(96)?; // general profile space … general_level_idc
    let mut sub_layers = [(false, false); 7];
    for layer in sub_layers.iter_mut().take(max_sub_layers_minus1) {
        *layer = (r.flag()?, r.flag()?);
    }
    if max_sub_layers_minus1 > 0 {
        r.skip(2 * (8 - max_sub_layers_minus1))?; // reserved_zero_2bits
    }
    for (profile_present, level_present) in sub_layers.iter().take(max_sub_layers_minus1) {
        if *profile_present {
            r.skip(88)?;
        }
        if *level_present {
            r.skip(8)?;
        }
    }
    let _sps_id = r.ue()?;
    let chroma_format_idc = r.ue()?;
    if chroma_format_idc > 3 {
        return Ok(Err(error(format!("chroma_format_idc {chroma_format_idc}"))));
    }
    let separate_colour_planes = chroma_format_idc == 3 && r.flag()?;
    let width = r.ue()?;
    let height = r.ue()?;
    let (sub_width, sub_height) = match (chroma_format_idc, separate_colour_planes) {
        (1, _) => (2, 2),
        (2, _) => (2, 1),
        _ => (1, 1),
    };
    let (mut crop_w, mut crop_h) = (0u64, 0u64);
    if r.flag()? {
        let (left, right, top, bottom) = (r.ue()?, r.ue()?, r.ue()?, r.ue()?);
        crop_w = sub_width * (u64::from(left) + u64::from(right));
        crop_h = sub_height * (u64::from(top) + u64::from(bottom));
    }
    let (luma, chroma) = (r.ue()?, r.ue()?);
    if luma > 8 || chroma > 8 {
        return Ok(Err(error(format!(
            "bit depth {} / {}",
            luma + 8,
            chroma + 8
        ))));
    }
    let cropped = |full: u32, crop: u64| u64::from(full).checked_sub(crop).map(|v| v as u32);
    let (Some(width), Some(height)) = (cropped(width, crop_w), cropped(height, crop_h)) else {
        return Ok(Err(error(
            "the conformance window is larger than the picture",
        )));
    };
    Ok(Ok(SpsFacts {
        width,
        height,
        chroma_format_idc: chroma_format_idc as u8,
        bit_depth_luma_minus8: luma as u8,
        bit_depth_chroma_minus8: chroma as u8,
        max_sub_layers: max_sub_layers_minus1 as u8 + 1,
        temporal_id_nesting,
    }))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::media::codec_test_data::HEVC_RECORD_320X240;

    #[test]
    fn parses_an_x265_record() {
        let hevc = HevcConfig::parse(Bytes::from_static(HEVC_RECORD_320X240)).unwrap();
        assert_eq!((hevc.width, hevc.height), (320, 240));
        assert_eq!(hevc.nalu_length_size, 4);
        assert_eq!((hevc.vps.len(), hevc.sps.len(), hevc.pps.len()), (1, 1, 1));
        // Main profile, level 2 (60 = 2.0 × 30), as FFmpeg's own hvcC writer describes it
        assert_eq!(hevc.codec_string(), "hvc1.1.6.L60.90");
    }

    #[test]
    fn refuses_truncated_or_empty_records() {
        for len in [0, 5, 22, 30, HEVC_RECORD_320X240.len() - 1] {
            let cut = Bytes::copy_from_slice(&HEVC_RECORD_320X240[..len]);
            assert!(HevcConfig::parse(cut).is_err(), "{len} bytes");
        }
    }

    #[test]
    fn a_record_rebuilt_from_in_band_parameter_sets_matches_x265s() {
        let hevc = HevcConfig::parse(Bytes::from_static(HEVC_RECORD_320X240)).unwrap();
        let record = record_from_parameter_sets(&hevc.vps[0], &hevc.sps[0], &hevc.pps[0]).unwrap();
        let rebuilt = HevcConfig::parse(record).unwrap();
        assert_eq!(rebuilt.codec_string(), hevc.codec_string());
        assert_eq!((rebuilt.width, rebuilt.height), (320, 240));
        assert_eq!(
            (rebuilt.vps, rebuilt.sps, rebuilt.pps),
            (hevc.vps, hevc.sps, hevc.pps)
        );
        assert!(record_from_parameter_sets(&[], &[0x42, 0x01], &[]).is_err());
    }

    #[test]
    fn the_codec_string_follows_annex_e() {
        let mut hevc = HevcConfig::parse(Bytes::from_static(HEVC_RECORD_320X240)).unwrap();
        hevc.profile_idc = 2;
        hevc.compatibility_flags = 0x2000_0000; // bit 2 set → reversed 0x4
        hevc.tier_high = true;
        hevc.level_idc = 120;
        hevc.constraint_flags = [0xB0, 0, 0, 0, 0, 0];
        assert_eq!(hevc.codec_string(), "hvc1.2.4.H120.B0");
    }
}
