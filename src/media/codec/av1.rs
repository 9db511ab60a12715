//! AV1 configuration: the `AV1CodecConfigurationRecord` (`av1C`, as Enhanced RTMP's `av01`
//! sequence start carries it) and the picture size from a sequence header OBU (AV1 §5.5),
//! in the record's configOBUs or in a keyframe's temporal unit.
//!
//! Written here: the record is four bytes, and the sequence header is read only up to
//! `max_frame_height_minus_1`; no crate on crates.io reads just that without a decoder.
//! Strata decodes AV1 (a transcoding ladder) but does not package it.

use bytes::Bytes;

use super::bits::{BitReader, Truncated};
use super::CodecError;

const OBU_SEQUENCE_HEADER: u32 = 1;

/// AV1 configuration, as carried in Enhanced RTMP and in the `av1C` box.
#[derive(Debug, Clone, PartialEq)]
pub struct Av1Config {
    /// The record exactly as received; FFmpeg's AV1 decoders take it as extradata.
    pub record: Bytes,
    pub profile: u8,
    pub level_idx: u8,
    pub tier_high: bool,
    pub bit_depth: u8,
    pub monochrome: bool,
    /// From a sequence header in the record's configOBUs, when the encoder put one there.
    pub size: Option<(u32, u32)>,
}

impl Av1Config {
    pub fn parse(record: Bytes) -> Result<Self, CodecError> {
        let head = record
            .get(..4)
            .ok_or_else(|| CodecError::Av1("shorter than its 4 fixed bytes".into()))?;
        if head[0] != 0x81 {
            return Err(CodecError::Av1(format!(
                "marker/version byte {:#04x}, expected 0x81",
                head[0]
            )));
        }
        let high_bitdepth = head[2] & 0x40 != 0;
        let twelve_bit = head[2] & 0x20 != 0;
        let size = sequence_header_size(&record[4..]);
        Ok(Self {
            profile: head[1] >> 5,
            level_idx: head[1] & 0x1F,
            tier_high: head[2] & 0x80 != 0,
            bit_depth: match (high_bitdepth, twelve_bit) {
                (true, true) => 12,
                (true, false) => 10,
                _ => 8,
            },
            monochrome: head[2] & 0x10 != 0,
            size,
            record,
        })
    }

    /// `av01.0.04M.08` (AV1 ISOBMFF binding, "Codecs Parameter String").
    pub fn codec_string(&self) -> String {
        format!(
            "av01.{}.{:02}{}.{:02}",
            self.profile,
            self.level_idx,
            if self.tier_high { 'H' } else { 'M' },
            self.bit_depth
        )
    }
}

/// The maximum frame size of the first sequence header OBU in `obus` (low-overhead format:
/// every OBU carries its size), or `None` if there is none or it is malformed.
pub fn sequence_header_size(mut obus: &[u8]) -> Option<(u32, u32)> {
    while let Some(&header) = obus.first() {
        let obu_type = u32::from(header >> 3) & 0x0F;
        let has_extension = header & 0x04 != 0;
        let has_size = header & 0x02 != 0;
        let mut pos = 1 + usize::from(has_extension);
        if !has_size {
            // the last OBU of the unit: the rest of the bytes
            return (obu_type == OBU_SEQUENCE_HEADER)
                .then(|| max_frame_size(obus.get(pos..)?).ok().flatten())
                .flatten();
        }
        let (size, used) = leb128(obus.get(pos..)?)?;
        pos += used;
        let end = pos.checked_add(usize::try_from(size).ok()?)?;
        let payload = obus.get(pos..end)?;
        if obu_type == OBU_SEQUENCE_HEADER {
            return max_frame_size(payload).ok().flatten();
        }
        obus = &obus[end..];
    }
    None
}

fn leb128(data: &[u8]) -> Option<(u64, usize)> {
    let mut value = 0u64;
    for (i, byte) in data.iter().take(8).enumerate() {
        value |= u64::from(byte & 0x7F) << (7 * i);
        if byte & 0x80 == 0 {
            return Some((value, i + 1));
        }
    }
    None
}

/// `sequence_header_obu()` up to `max_frame_height_minus_1`; `Ok(None)` for a size that
/// cannot be real.
fn max_frame_size(payload: &[u8]) -> Result<Option<(u32, u32)>, Truncated> {
    let mut r = BitReader::new(payload);
    let _seq_profile = r.read(3)?;
    let _still_picture = r.flag()?;
    let reduced_still_picture_header = r.flag()?;
    if reduced_still_picture_header {
        r.skip(5)?; // seq_level_idx[0]
    } else {
        let mut decoder_model_info_present = false;
        let mut buffer_delay_length = 0;
        if r.flag()? {
            // timing_info()
            r.skip(64)?; // num_units_in_display_tick, time_scale
            if r.flag()? {
                // equal_picture_interval: num_ticks_per_picture_minus_1 as uvlc()
                let mut zeros = 0;
                while !r.flag()? {
                    zeros += 1;
                    if zeros >= 32 {
                        return Ok(None);
                    }
                }
                r.skip(zeros)?;
            }
            decoder_model_info_present = r.flag()?;
            if decoder_model_info_present {
                buffer_delay_length = r.read(5)? as usize + 1;
                r.skip(32 + 5 + 5)?; // num_units_in_decoding_tick, two lengths
            }
        }
        let initial_display_delay_present = r.flag()?;
        let operating_points = r.read(5)? + 1;
        for _ in 0..operating_points {
            r.skip(12)?; // operating_point_idc
            let seq_level_idx = r.read(5)?;
            if seq_level_idx > 7 {
                r.skip(1)?; // seq_tier
            }
            if decoder_model_info_present && r.flag()? {
                r.skip(2 * buffer_delay_length + 1)?; // operating_parameters_info()
            }
            if initial_display_delay_present && r.flag()? {
                r.skip(4)?;
            }
        }
    }
    let width_bits = r.read(4)? as usize + 1;
    let height_bits = r.read(4)? as usize + 1;
    let width = u64::from(r.read(width_bits)?) + 1;
    let height = u64::from(r.read(height_bits)?) + 1;
    Ok((width <= 65_536 && height <= 65_536).then_some((width as u32, height as u32)))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::media::codec_test_data::AV1_RECORD_320X240;

    #[test]
    fn parses_a_libaom_record_with_its_sequence_header() {
        let av1 = Av1Config::parse(Bytes::from_static(AV1_RECORD_320X240)).unwrap();
        assert_eq!(av1.size, Some((320, 240)));
        assert_eq!(av1.bit_depth, 8);
        assert!(
            av1.codec_string().starts_with("av01.0."),
            "{}",
            av1.codec_string()
        );
    }

    #[test]
    fn refuses_bad_records_and_survives_bad_obus() {
        assert!(Av1Config::parse(Bytes::from_static(&[0x81, 0, 0])).is_err());
        assert!(Av1Config::parse(Bytes::from_static(&[0x01, 0, 0, 0])).is_err());
        let bare = Av1Config::parse(Bytes::from_static(&[0x81, 0, 0, 0])).unwrap();
        assert_eq!(bare.size, None);
        for len in 4..AV1_RECORD_320X240.len() {
            let _ = Av1Config::parse(Bytes::copy_from_slice(&AV1_RECORD_320X240[..len]));
        }
        assert_eq!(sequence_header_size(&[0x0A, 0xFF, 0xFF, 0xFF, 0xFF]), None);
    }
}
