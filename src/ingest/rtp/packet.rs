//! One RTP packet (RFC 3550 §5.1), parsed in place from one UDP datagram. Pure: no I/O.
//!
//! - **Limits**: a datagram longer than `MAX_DATAGRAM` is refused (`RtpError::TooLarge`) before
//!   anything is read; the UDP shell refuses it too, so no larger buffer is ever needed.
//! - **Header**: version 2 only; the CSRC list (0–15 entries) and a header extension are
//!   skipped, the extension by its own length word; padding (the last byte counts the padding
//!   bytes, itself included) is removed. Every length is checked against what is left before
//!   anything is sliced, so any byte string gives either a packet or an error, never a panic.
//! - **Borrowing**: the payload borrows the datagram; nothing is copied or allocated here.
//!
//! Hand-written rather than on `rtp-rs` or webrtc-rs's `rtp`: the header is ~40 lines of
//! checks, and owning it keeps the datagram limit and the error variants (what the UDP shell
//! counts and logs) in one place with no allocation.

/// The largest datagram accepted (an Ethernet MTU-sized packet, with room for jumbo-ish ones
/// some cameras send); anything larger is refused, here and by the caller.
pub const MAX_DATAGRAM: usize = 4096;
/// The fixed RTP header.
pub const HEADER: usize = 12;

/// Why a datagram is not an RTP packet Strata accepts. The caller drops it and counts it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum RtpError {
    #[error("datagram of {0} bytes is larger than the {MAX_DATAGRAM}-byte limit")]
    TooLarge(usize),
    #[error("datagram of {0} bytes is shorter than the 12-byte RTP header")]
    TooShort(usize),
    #[error("RTP version {0}; only version 2 exists")]
    Version(u8),
    #[error("{count} CSRCs do not fit in a datagram of {len} bytes")]
    Csrc { count: usize, len: usize },
    #[error("the RTP header extension does not fit in the datagram")]
    Extension,
    #[error("padding of {0} bytes does not fit in the payload")]
    Padding(u8),
}

/// A parsed RTP packet; `payload` borrows the datagram, without CSRCs, extension and padding.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RtpPacket<'a> {
    /// Set on the last packet of a video access unit (RFC 6184 §5.1).
    pub marker: bool,
    pub payload_type: u8,
    /// 16-bit, wrapping.
    pub sequence: u16,
    /// 32-bit, wrapping; 90 kHz for video.
    pub timestamp: u32,
    pub ssrc: u32,
    pub payload: &'a [u8],
}

impl<'a> RtpPacket<'a> {
    /// Parses one datagram; never panics, whatever the bytes.
    pub fn parse(datagram: &'a [u8]) -> Result<RtpPacket<'a>, RtpError> {
        let len = datagram.len();
        if len > MAX_DATAGRAM {
            return Err(RtpError::TooLarge(len));
        }
        let Some((header, rest)) = datagram.split_first_chunk::<HEADER>() else {
            return Err(RtpError::TooShort(len));
        };
        let version = header[0] >> 6;
        if version != 2 {
            return Err(RtpError::Version(version));
        }
        let padding = header[0] & 0x20 != 0;
        let extension = header[0] & 0x10 != 0;
        let csrc_count = usize::from(header[0] & 0x0F);
        let marker = header[1] & 0x80 != 0;
        let payload_type = header[1] & 0x7F;
        let sequence = u16::from_be_bytes([header[2], header[3]]);
        let timestamp = u32::from_be_bytes([header[4], header[5], header[6], header[7]]);
        let ssrc = u32::from_be_bytes([header[8], header[9], header[10], header[11]]);

        let mut body = rest.get(csrc_count * 4..).ok_or(RtpError::Csrc {
            count: csrc_count,
            len,
        })?;
        if extension {
            // 16 bits profile-defined, 16 bits length in 32-bit words, then the words
            let Some((ext, after)) = body.split_first_chunk::<4>() else {
                return Err(RtpError::Extension);
            };
            let words = usize::from(u16::from_be_bytes([ext[2], ext[3]]));
            body = after.get(words * 4..).ok_or(RtpError::Extension)?;
        }
        if padding {
            let Some(&count) = body.last() else {
                return Err(RtpError::Padding(0));
            };
            if count == 0 || usize::from(count) > body.len() {
                return Err(RtpError::Padding(count));
            }
            body = &body[..body.len() - usize::from(count)];
        }
        Ok(RtpPacket {
            marker,
            payload_type,
            sequence,
            timestamp,
            ssrc,
            payload: body,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A datagram with the given header fields, CSRCs, extension words and padding.
    fn datagram(csrcs: u8, ext_words: Option<u16>, pad: Option<u8>, payload: &[u8]) -> Vec<u8> {
        let mut d = vec![
            0x80 | u8::from(pad.is_some()) << 5 | u8::from(ext_words.is_some()) << 4 | csrcs,
            0x80 | 96,
            0x12,
            0x34,
            0xDE,
            0xAD,
            0xBE,
            0xEF,
            0,
            0,
            0x04,
            0xD2,
        ];
        for i in 0..csrcs {
            d.extend_from_slice(&[0, 0, 0, i]);
        }
        if let Some(words) = ext_words {
            d.extend_from_slice(&[0xBE, 0xDE]);
            d.extend_from_slice(&words.to_be_bytes());
            d.extend(std::iter::repeat_n(0xAA, usize::from(words) * 4));
        }
        d.extend_from_slice(payload);
        if let Some(pad) = pad {
            d.extend(std::iter::repeat_n(0, usize::from(pad).saturating_sub(1)));
            d.push(pad);
        }
        d
    }

    #[test]
    fn parses_the_fields_and_skips_csrcs_extension_and_padding() {
        let d = datagram(2, Some(3), Some(4), b"\x65hello");
        let p = RtpPacket::parse(&d).expect("valid");
        assert_eq!(
            p,
            RtpPacket {
                marker: true,
                payload_type: 96,
                sequence: 0x1234,
                timestamp: 0xDEAD_BEEF,
                ssrc: 1234,
                payload: b"\x65hello",
            }
        );
        let plain = datagram(0, None, None, b"x");
        assert_eq!(RtpPacket::parse(&plain).map(|p| p.payload), Ok(&b"x"[..]));
        // an empty payload is a packet (the depacketizer decides what it means)
        let empty = datagram(0, None, None, b"");
        assert_eq!(RtpPacket::parse(&empty).map(|p| p.payload), Ok(&b""[..]));
        // padding may take the whole payload
        let all_padding = datagram(0, None, Some(3), b"");
        assert_eq!(
            RtpPacket::parse(&all_padding).map(|p| p.payload),
            Ok(&b""[..])
        );
    }

    #[test]
    fn refuses_what_is_not_a_version_2_packet_that_fits() {
        assert_eq!(
            RtpPacket::parse(&vec![0x80; MAX_DATAGRAM + 1]),
            Err(RtpError::TooLarge(MAX_DATAGRAM + 1))
        );
        let mut v1 = datagram(0, None, None, b"x");
        v1[0] = 0x40;
        assert_eq!(RtpPacket::parse(&v1), Err(RtpError::Version(1)));
        // CSRCs announced but missing
        let mut csrc = datagram(0, None, None, b"abcd");
        csrc[0] |= 0x02;
        assert_eq!(
            RtpPacket::parse(&csrc),
            Err(RtpError::Csrc { count: 2, len: 16 })
        );
        // extension whose length word runs past the end
        let mut ext = datagram(0, Some(1), None, b"");
        ext[15] = 9;
        assert_eq!(RtpPacket::parse(&ext), Err(RtpError::Extension));
        // padding bigger than the payload, and a zero padding count
        let mut pad = datagram(0, None, Some(2), b"ab");
        let last = pad.len() - 1;
        pad[last] = 5;
        assert_eq!(RtpPacket::parse(&pad), Err(RtpError::Padding(5)));
        pad[last] = 0;
        assert_eq!(RtpPacket::parse(&pad), Err(RtpError::Padding(0)));
    }

    #[test]
    fn every_truncation_of_a_full_header_is_an_error_or_a_shorter_payload() {
        let d = datagram(3, Some(2), Some(3), b"\x7c\x85payload");
        assert!(RtpPacket::parse(&d).is_ok());
        for cut in 0..d.len() {
            match RtpPacket::parse(&d[..cut]) {
                Ok(p) => assert!(p.payload.len() < 10, "cut {cut}"),
                Err(RtpError::TooShort(n)) => assert!(n < HEADER && n == cut),
                Err(_) => {}
            }
        }
        assert_eq!(RtpPacket::parse(&[]), Err(RtpError::TooShort(0)));
    }
}
