//! VP8 configuration and a keyframe's picture size (RFC 6386 §9.1: the 3-byte frame tag, the
//! start code `9d 01 2a`, then 14-bit width and height). VP8 has no configuration record (a
//! WebM `CodecPrivate` is empty), so the configuration is the size the first keyframe gives;
//! written here because it is ten fixed bytes. Strata decodes VP8 (a transcoding ladder: a
//! browser's recording) but does not package it.

use bytes::Bytes;

use super::CodecError;

/// The start code after a keyframe's frame tag.
const START_CODE: [u8; 3] = [0x9d, 0x01, 0x2a];

/// VP8 configuration: the picture size a keyframe declared.
#[derive(Debug, Clone, PartialEq)]
pub struct Vp8Config {
    pub width: u32,
    pub height: u32,
}

impl Vp8Config {
    /// The record the worker wire carries: width and height, 16 bits each, big-endian.
    pub fn record(&self) -> Bytes {
        let mut record = Vec::with_capacity(4);
        record.extend_from_slice(&(self.width as u16).to_be_bytes());
        record.extend_from_slice(&(self.height as u16).to_be_bytes());
        Bytes::from(record)
    }

    /// Reads what `record` wrote.
    pub fn parse(record: &[u8]) -> Result<Self, CodecError> {
        let [w0, w1, h0, h1] = record else {
            return Err(CodecError::Vp8(format!(
                "a record of {} bytes (4 expected)",
                record.len()
            )));
        };
        Self::sized(
            u32::from(u16::from_be_bytes([*w0, *w1])),
            u32::from(u16::from_be_bytes([*h0, *h1])),
        )
    }

    /// The configuration of a keyframe, or why `frame` is not a usable one.
    pub fn from_keyframe(frame: &[u8]) -> Result<Self, CodecError> {
        let (width, height) = keyframe_size(frame)
            .ok_or_else(|| CodecError::Vp8("not a keyframe with a picture size".into()))?;
        Self::sized(width, height)
    }

    fn sized(width: u32, height: u32) -> Result<Self, CodecError> {
        if width == 0 || height == 0 {
            return Err(CodecError::Vp8(format!("picture size {width}x{height}")));
        }
        Ok(Self { width, height })
    }

    pub fn codec_string(&self) -> String {
        "vp8".into()
    }
}

/// The picture size of a VP8 keyframe, or `None` if `frame` is not a keyframe, is too short,
/// has a version above 3 or a first partition longer than the frame. The 2-bit scaling fields
/// above each 14-bit dimension are ignored (they ask the player to upscale; the coded size is
/// what a decoder produces).
pub fn keyframe_size(frame: &[u8]) -> Option<(u32, u32)> {
    let header = frame.get(..10)?;
    let tag = u32::from_le_bytes([header[0], header[1], header[2], 0]);
    let keyframe = tag & 1 == 0;
    let version = (tag >> 1) & 7;
    let first_partition = (tag >> 5) as usize;
    if !keyframe || version > 3 || header[3..6] != START_CODE || first_partition > frame.len() {
        return None;
    }
    let width = u32::from(u16::from_le_bytes([header[6], header[7]]) & 0x3fff);
    let height = u32::from(u16::from_le_bytes([header[8], header[9]]) & 0x3fff);
    Some((width, height))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A 640x480 keyframe's header: shown, version 0, a first partition of 4 bytes.
    const KEYFRAME_640X480: [u8; 10] = [0x90, 0x00, 0x00, 0x9d, 0x01, 0x2a, 0x80, 0x02, 0xe0, 0x01];

    #[test]
    fn a_keyframe_gives_its_size_and_an_interframe_none() {
        assert_eq!(keyframe_size(&KEYFRAME_640X480), Some((640, 480)));
        let config = Vp8Config::from_keyframe(&KEYFRAME_640X480).unwrap();
        assert_eq!(Vp8Config::parse(&config.record()), Ok(config));
        let mut inter = KEYFRAME_640X480;
        inter[0] |= 1;
        assert_eq!(keyframe_size(&inter), None);
        assert_eq!(keyframe_size(&KEYFRAME_640X480[..9]), None);
        let mut long_partition = KEYFRAME_640X480;
        long_partition[1] = 0x42; // a first partition of 530 bytes in a 10-byte frame
        assert_eq!(keyframe_size(&long_partition), None);
        let mut version = KEYFRAME_640X480;
        version[0] |= 4 << 1;
        assert_eq!(keyframe_size(&version), None);
    }

    #[test]
    fn a_zero_size_or_a_bad_record_is_refused() {
        let mut zero = KEYFRAME_640X480;
        zero[6..10].fill(0);
        assert!(Vp8Config::from_keyframe(&zero).is_err());
        assert!(Vp8Config::parse(&[0, 1, 0]).is_err());
        assert!(Vp8Config::parse(&[0, 0, 0, 1]).is_err());
    }
}
