//! H.264 byte formats between x264 and CMAF (pure). x264 (through FFmpeg) writes Annex-B: NAL
//! units behind `00 00 01` / `00 00 00 01` start codes, both in the extradata (SPS, PPS) and
//! in every packet. CMAF wants 4-byte length prefixes in samples and an `avcC` record built
//! from the SPS and PPS. FFmpeg's own converter (`ff_avc_parse_nal_units`) is not public API,
//! so these few loops are ours.

use bytes::{BufMut, Bytes, BytesMut};

use crate::media::{AvcConfig, CodecError};

const NAL_SPS: u8 = 7;
const NAL_PPS: u8 = 8;
const NAL_AUD: u8 = 9;

/// The NAL units of an Annex-B byte stream, without start codes (empty units skipped).
pub fn annex_b_units(data: &[u8]) -> Vec<&[u8]> {
    let mut units = Vec::new();
    let mut start = None;
    let mut i = 0;
    while i + 2 < data.len() {
        if data[i] == 0 && data[i + 1] == 0 && data[i + 2] == 1 {
            if let Some(s) = start {
                units.push(trim_trailing_zeros(&data[s..i]));
            }
            i += 3;
            start = Some(i);
        } else {
            i += 1;
        }
    }
    if let Some(s) = start {
        units.push(&data[s.min(data.len())..]);
    }
    units.retain(|u| !u.is_empty());
    units
}

/// A four-byte start code's leading zero belongs to the start code, not the unit before it.
fn trim_trailing_zeros(unit: &[u8]) -> &[u8] {
    let end = unit.iter().rposition(|b| *b != 0).map_or(0, |p| p + 1);
    &unit[..end]
}

/// An Annex-B access unit as 4-byte length-prefixed NAL units. Parameter sets and access unit
/// delimiters are dropped: CMAF carries the parameter sets in `avcC`, and the encoder's are
/// fixed for the broadcast.
pub fn to_length_prefixed(data: &[u8]) -> Bytes {
    let mut out = BytesMut::with_capacity(data.len() + 16);
    for unit in annex_b_units(data) {
        if matches!(unit[0] & 0x1f, NAL_SPS | NAL_PPS | NAL_AUD) {
            continue;
        }
        out.put_u32(unit.len() as u32);
        out.extend_from_slice(unit);
    }
    out.freeze()
}

/// The `avcC` record (AVCDecoderConfigurationRecord, ISO/IEC 14496-15) for the SPS and PPS in an
/// encoder's Annex-B extradata, parsed back into an `AvcConfig` (size, codec string).
pub fn config_from_annex_b(extradata: &[u8]) -> Result<AvcConfig, CodecError> {
    let units = annex_b_units(extradata);
    let sps: Vec<&[u8]> = units
        .iter()
        .copied()
        .filter(|u| u[0] & 0x1f == NAL_SPS && u.len() >= 4)
        .collect();
    let pps: Vec<&[u8]> = units
        .iter()
        .copied()
        .filter(|u| u[0] & 0x1f == NAL_PPS)
        .collect();
    let first = sps
        .first()
        .ok_or_else(|| CodecError::Avc("the encoder wrote no SPS".into()))?;
    let mut record = vec![
        1,
        first[1],
        first[2],
        first[3],
        0xFF,
        0xE0 | sps.len() as u8,
    ];
    for set in &sps {
        record.extend_from_slice(&(set.len() as u16).to_be_bytes());
        record.extend_from_slice(set);
    }
    record.push(pps.len() as u8);
    for set in &pps {
        record.extend_from_slice(&(set.len() as u16).to_be_bytes());
        record.extend_from_slice(set);
    }
    if matches!(first[1], 100 | 110 | 122 | 144) {
        // High profiles: chroma 4:2:0, 8-bit luma and chroma, no SPS extensions (we always
        // encode yuv420p).
        record.extend_from_slice(&[0xFC | 1, 0xF8, 0xF8, 0]);
    }
    AvcConfig::parse(Bytes::from(record))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::media::codec_test_data::AVC_RECORD_320X240;

    /// The SPS and PPS of the test record, as an encoder's Annex-B extradata.
    fn annex_b_extradata() -> Vec<u8> {
        let reference = AvcConfig::parse(Bytes::from_static(AVC_RECORD_320X240)).unwrap();
        let mut out = vec![0, 0, 0, 1];
        out.extend_from_slice(&reference.sps[0]);
        out.extend_from_slice(&[0, 0, 1]);
        out.extend_from_slice(&reference.pps[0]);
        out
    }

    #[test]
    fn extradata_becomes_the_same_avcc_an_flv_encoder_sends() {
        let config = config_from_annex_b(&annex_b_extradata()).unwrap();
        let reference = AvcConfig::parse(Bytes::from_static(AVC_RECORD_320X240)).unwrap();
        assert_eq!((config.width, config.height), (320, 240));
        assert_eq!(config.codec_string(), reference.codec_string());
        assert_eq!(config.sps, reference.sps);
        assert_eq!(config.pps, reference.pps);
        assert_eq!(config.nalu_length_size, 4);
    }

    #[test]
    fn packets_become_length_prefixed_without_parameter_sets() {
        let mut packet = vec![0, 0, 0, 1, 0x09, 0xf0]; // AUD
        packet.extend_from_slice(&annex_b_extradata()); // in-band SPS + PPS
        packet.extend_from_slice(&[0, 0, 0, 1, 0x65, 0x88, 0x00, 0x00, 0x03, 0x01]); // IDR slice
        packet.extend_from_slice(&[0, 0, 1, 0x41, 0x9a, 0x01]); // a second slice
        let out = to_length_prefixed(&packet);
        assert_eq!(
            &out[..],
            &[0, 0, 0, 6, 0x65, 0x88, 0x00, 0x00, 0x03, 0x01, 0, 0, 0, 3, 0x41, 0x9a, 0x01][..]
        );
    }

    #[test]
    fn missing_sps_is_an_error_not_a_panic() {
        assert!(config_from_annex_b(&[0, 0, 1, 0x68, 1, 2]).is_err());
        assert!(config_from_annex_b(&[]).is_err());
        assert!(to_length_prefixed(&[0, 0]).is_empty());
    }
}
