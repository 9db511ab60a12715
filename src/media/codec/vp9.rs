//! VP9 configuration: the `VPCodecConfigurationRecord` (`vpcC`, as Enhanced RTMP's `vp09`
//! sequence start carries it, with or without the box's version/flags word), and the picture
//! size from a keyframe's uncompressed header (VP9 bitstream spec §6.2), since the record has
//! none. Written here: a handful of fixed fields no crate reads without a decoder. Strata
//! decodes VP9 (a transcoding ladder) but does not package it.

use bytes::Bytes;

use super::bits::{BitReader, Truncated};
use super::CodecError;

/// VP9 configuration.
#[derive(Debug, Clone, PartialEq)]
pub struct Vp9Config {
    /// The record exactly as received.
    pub record: Bytes,
    pub profile: u8,
    pub level: u8,
    pub bit_depth: u8,
}

impl Vp9Config {
    pub fn parse(record: Bytes) -> Result<Self, CodecError> {
        // FFmpeg's FLV muxer writes the FullBox version (1) and flags (0) first
        let body = match record.get(..4) {
            Some([1, 0, 0, 0]) if record.len() >= 12 => &record[4..],
            _ => &record[..],
        };
        let fixed = body
            .get(..8)
            .ok_or_else(|| CodecError::Vp9("shorter than its 8 fixed bytes".into()))?;
        let (profile, level, bit_depth) = (fixed[0], fixed[1], fixed[2] >> 4);
        if profile > 3 || !matches!(bit_depth, 8 | 10 | 12) {
            return Err(CodecError::Vp9(format!(
                "profile {profile}, bit depth {bit_depth}"
            )));
        }
        Ok(Self {
            profile,
            level,
            bit_depth,
            record,
        })
    }

    /// `vp09.00.31.08` (VP Codec ISOBMFF binding §4).
    pub fn codec_string(&self) -> String {
        format!(
            "vp09.{:02}.{:02}.{:02}",
            self.profile, self.level, self.bit_depth
        )
    }
}

/// The frame size of a VP9 keyframe (the first frame of a superframe), or `None` if `frame`
/// is not a keyframe or is malformed.
pub fn keyframe_size(frame: &[u8]) -> Option<(u32, u32)> {
    read_keyframe_size(frame).ok().flatten()
}

fn read_keyframe_size(frame: &[u8]) -> Result<Option<(u32, u32)>, Truncated> {
    const SYNC_CODE: u32 = 0x49_83_42;
    const CS_RGB: u32 = 7;
    let mut r = BitReader::new(frame);
    if r.read(2)? != 2 {
        return Ok(None); // frame_marker
    }
    let profile = r.read(1)? | (r.read(1)? << 1);
    if profile == 3 {
        r.skip(1)?;
    }
    if r.flag()? {
        return Ok(None); // show_existing_frame
    }
    if r.flag()? {
        return Ok(None); // frame_type 1: not a keyframe
    }
    r.skip(2)?; // show_frame, error_resilient_mode
    if r.read(24)? != SYNC_CODE {
        return Ok(None);
    }
    if profile >= 2 {
        r.skip(1)?; // ten_or_twelve_bit
    }
    if r.read(3)? != CS_RGB {
        r.skip(1)?; // color_range
        if profile == 1 || profile == 3 {
            r.skip(3)?; // subsampling_x, subsampling_y, reserved_zero
        }
    } else if profile == 1 || profile == 3 {
        r.skip(1)?;
    }
    let width = r.read(16)? + 1;
    let height = r.read(16)? + 1;
    Ok(Some((width, height)))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::media::codec_test_data::VP9_KEYFRAME_320X240_HEAD;

    #[test]
    fn records_with_and_without_the_box_header() {
        let plain = [0, 31, 0x80, 2, 2, 2, 0, 0];
        let vp9 = Vp9Config::parse(Bytes::copy_from_slice(&plain)).unwrap();
        assert_eq!(vp9.codec_string(), "vp09.00.31.08");
        let mut boxed = vec![1, 0, 0, 0];
        boxed.extend_from_slice(&plain);
        assert_eq!(
            Vp9Config::parse(Bytes::from(boxed)).unwrap().codec_string(),
            "vp09.00.31.08"
        );
        assert!(Vp9Config::parse(Bytes::from_static(&[0, 31, 0x80])).is_err());
        assert!(Vp9Config::parse(Bytes::from_static(&[5, 31, 0x80, 2, 2, 2, 0, 0])).is_err());
    }

    #[test]
    fn a_keyframe_tells_its_size() {
        assert_eq!(keyframe_size(VP9_KEYFRAME_320X240_HEAD), Some((320, 240)));
        assert_eq!(keyframe_size(&VP9_KEYFRAME_320X240_HEAD[..5]), None);
        assert_eq!(keyframe_size(&[]), None);
    }
}
