//! CMAF boxes: one init segment (`ftyp` + `moov`) per track and CMAF chunks (`moof` + `mdat`,
//! the first chunk of a segment preceded by `styp`), one track per file. A segment is its
//! chunks back to back; each chunk is also served alone as a low-latency part. Pure functions over plain structs; the boxes themselves are
//! written by `mp4-atom` (the `mp4` crate cannot write fragments).

use bytes::Bytes;
use mp4_atom::{
    esds, Atom, Audio, Avc1, Avcc, Codec, Dinf, Dref, Encode, Esds, Ftyp, Hdlr, Hvc1, Hvcc, Mdhd,
    Mdia, Mfhd, Minf, Moof, Moov, Mp4a, Mvex, Mvhd, Smhd, Stbl, Stco, Stsc, Stsd, Stsz, Stts, Styp,
    Tfdt, Tfhd, Tkhd, Traf, Trak, Trex, Trun, TrunEntry, Url, Visual, Vmhd,
};

use crate::media::{AacConfig, AvcConfig, CodecConfig, HevcConfig};

/// Every CMAF file carries exactly one track, always with this id.
pub const TRACK_ID: u32 = 1;

/// `sample_depends_on = 2` (an I/IDR frame): a sync sample.
const SYNC_SAMPLE_FLAGS: u32 = 0x0200_0000;
/// `sample_depends_on = 1` + `sample_is_non_sync_sample`.
const NON_SYNC_SAMPLE_FLAGS: u32 = 0x0101_0000;

#[derive(Debug, thiserror::Error)]
pub enum CmafError {
    #[error("mp4 box encoding failed: {0}")]
    Encode(#[from] mp4_atom::Error),
    #[error("invalid avcC record: {0}")]
    Avcc(mp4_atom::Error),
    #[error("invalid hvcC record: {0}")]
    Hvcc(mp4_atom::Error),
    /// Refused before packaging (`CodecConfig::packaging_refusal`); here as a backstop.
    #[error("{0} has no CMAF sample entry in Strata")]
    Unpackageable(&'static str),
    #[error("segment too large for 32-bit offsets ({0} bytes)")]
    TooLarge(usize),
}

/// One coded sample of a fragment, in the track's timescale.
#[derive(Debug, Clone, PartialEq)]
pub struct Sample {
    pub duration: u32,
    /// Presentation minus decode time (signed: `trun` version 1).
    pub composition_offset: i32,
    pub sync: bool,
    pub data: Bytes,
}

/// The CMAF header for one track.
pub fn init_segment(codec: &CodecConfig) -> Result<Vec<u8>, CmafError> {
    let ftyp = Ftyp {
        major_brand: b"iso6".into(),
        minor_version: 0,
        compatible_brands: vec![b"iso6".into(), b"cmfc".into(), b"mp41".into()],
    };
    let timescale = codec.timescale();
    let (handler, name, minf, tkhd) = match codec {
        CodecConfig::Avc(_) | CodecConfig::Hevc(_) => {
            let (width, height) = codec.video_size().unwrap_or_default();
            (
                b"vide",
                "Strata video",
                video_minf(sample_entry(codec, width, height)?),
                Tkhd {
                    track_id: TRACK_ID,
                    enabled: true,
                    in_movie: true,
                    width: (width as u16).into(),
                    height: (height as u16).into(),
                    ..Default::default()
                },
            )
        }
        CodecConfig::Av1(_) | CodecConfig::Vp9(_) | CodecConfig::Vp8(_) | CodecConfig::Opus(_) => {
            return Err(CmafError::Unpackageable(codec.name()))
        }
        CodecConfig::Aac(aac) => (
            b"soun",
            "Strata audio",
            audio_minf(aac),
            Tkhd {
                track_id: TRACK_ID,
                enabled: true,
                in_movie: true,
                volume: 1.into(),
                ..Default::default()
            },
        ),
    };
    let moov = Moov {
        mvhd: Mvhd {
            timescale,
            rate: 1.into(),
            volume: 1.into(),
            next_track_id: TRACK_ID + 1,
            ..Default::default()
        },
        mvex: Some(Mvex {
            mehd: None,
            trex: vec![Trex {
                track_id: TRACK_ID,
                default_sample_description_index: 1,
                ..Default::default()
            }],
        }),
        trak: vec![Trak {
            tkhd,
            mdia: Mdia {
                mdhd: Mdhd {
                    timescale,
                    language: "und".into(),
                    ..Default::default()
                },
                hdlr: Hdlr {
                    handler: handler.into(),
                    name: name.into(),
                },
                minf,
            },
            ..Default::default()
        }],
        ..Default::default()
    };
    let mut out = Vec::with_capacity(1024);
    ftyp.encode(&mut out)?;
    moov.encode(&mut out)?;
    Ok(out)
}

fn empty_stbl(stsd: Stsd) -> Stbl {
    Stbl {
        stsd,
        stts: Stts::default(),
        stsc: Stsc::default(),
        stsz: Stsz::default(),
        stco: Some(Stco::default()),
        ..Default::default()
    }
}

fn dinf() -> Dinf {
    Dinf {
        dref: Dref {
            entries: vec![Url::default().into()],
        },
    }
}

/// The visual sample entry: `avc1` with the `avcC`, or `hvc1` with the `hvcC` (parameter
/// sets only in the record, as the `hvc1` brand requires; encoders that repeat them in-band
/// are still decodable).
fn sample_entry(codec: &CodecConfig, width: u32, height: u32) -> Result<Codec, CmafError> {
    let visual = Visual {
        data_reference_index: 1,
        width: width as u16,
        height: height as u16,
        ..Default::default()
    };
    Ok(match codec {
        CodecConfig::Hevc(hevc) => hvc1(hevc, visual)?.into(),
        CodecConfig::Avc(avc) => avc1(avc, visual)?.into(),
        other => return Err(CmafError::Unpackageable(other.name())),
    })
}

fn avc1(avc: &AvcConfig, visual: Visual) -> Result<Avc1, CmafError> {
    Ok(Avc1 {
        visual,
        avcc: Avcc::decode_body(&mut &avc.record[..]).map_err(CmafError::Avcc)?,
        btrt: None,
        colr: None,
        pasp: None,
        taic: None,
        fiel: None,
        spatial: None,
    })
}

fn hvc1(hevc: &HevcConfig, visual: Visual) -> Result<Hvc1, CmafError> {
    Ok(Hvc1 {
        visual,
        hvcc: Hvcc::decode_body(&mut &hevc.record[..]).map_err(CmafError::Hvcc)?,
        ..Default::default()
    })
}

fn video_minf(entry: Codec) -> Minf {
    Minf {
        vmhd: Some(Vmhd::default()),
        dinf: dinf(),
        stbl: empty_stbl(Stsd {
            codecs: vec![entry],
        }),
        ..Default::default()
    }
}

fn audio_minf(aac: &AacConfig) -> Minf {
    let entry = Mp4a {
        audio: Audio {
            data_reference_index: 1,
            channel_count: u16::from(aac.channels.max(1)),
            sample_size: 16,
            sample_rate: (aac.sample_rate.min(u32::from(u16::MAX)) as u16).into(),
        },
        esds: Esds {
            es_desc: esds::EsDescriptor {
                es_id: TRACK_ID as u16,
                dec_config: esds::DecoderConfig {
                    object_type_indication: 0x40, // MPEG-4 audio
                    stream_type: 5,               // audio stream
                    up_stream: 0,
                    dec_specific: Some(esds::DecoderSpecific {
                        profile: aac.object_type,
                        freq_index: 0,
                        chan_conf: aac.channels,
                        raw: aac.asc.to_vec(),
                    }),
                    ..Default::default()
                },
                ..Default::default()
            },
        },
        btrt: None,
        taic: None,
    };
    Minf {
        smhd: Some(Smhd::default()),
        dinf: dinf(),
        stbl: empty_stbl(Stsd {
            codecs: vec![entry.into()],
        }),
        ..Default::default()
    }
}

/// One CMAF chunk (`moof` + `mdat`) holding `samples`, starting at `base_decode_time` (64-bit
/// `tfdt`); `segment_start` puts the segment's `styp` in front of it.
pub fn chunk(
    sequence_number: u32,
    base_decode_time: u64,
    samples: &[Sample],
    segment_start: bool,
) -> Result<Vec<u8>, CmafError> {
    let payload_len: usize = samples.iter().map(|s| s.data.len()).sum();
    let entries: Vec<TrunEntry> = samples
        .iter()
        .map(|s| TrunEntry {
            duration: Some(s.duration),
            size: Some(s.data.len() as u32),
            flags: Some(if s.sync {
                SYNC_SAMPLE_FLAGS
            } else {
                NON_SYNC_SAMPLE_FLAGS
            }),
            cts: Some(i64::from(s.composition_offset)),
        })
        .collect();
    let mut moof = Moof {
        mfhd: Mfhd { sequence_number },
        traf: vec![Traf {
            tfhd: Tfhd {
                track_id: TRACK_ID,
                default_base_is_moof: true,
                ..Default::default()
            },
            tfdt: Some(Tfdt {
                base_media_decode_time: base_decode_time,
            }),
            trun: vec![Trun {
                data_offset: Some(0),
                samples: entries.into(),
            }],
            ..Default::default()
        }],
    };
    // The data offset is relative to the moof start: moof size + the 8-byte mdat header. The
    // field has a fixed width, so measuring once with a placeholder is exact.
    let mut moof_bytes = Vec::new();
    moof.encode(&mut moof_bytes)?;
    let offset = moof_bytes.len() + 8;
    let offset_i32 = i32::try_from(offset).map_err(|_| CmafError::TooLarge(offset))?;
    if let Some(trun) = moof.traf[0].trun.first_mut() {
        trun.data_offset = Some(offset_i32);
    }
    if payload_len + offset > u32::MAX as usize {
        return Err(CmafError::TooLarge(payload_len + offset));
    }

    let styp = Styp {
        major_brand: b"msdh".into(),
        minor_version: 0,
        compatible_brands: vec![
            b"msdh".into(),
            b"msix".into(),
            b"cmfs".into(),
            b"cmfc".into(),
        ],
    };
    let mut out = Vec::with_capacity(offset + payload_len + 32);
    if segment_start {
        styp.encode(&mut out)?;
    }
    moof.encode(&mut out)?;
    // The mdat header is written here because mp4-atom's `Mdat` owns its payload as one Vec,
    // which would copy every sample once more; the size fits in 32 bits (checked above).
    out.extend_from_slice(&((payload_len + 8) as u32).to_be_bytes());
    out.extend_from_slice(b"mdat");
    for s in samples {
        out.extend_from_slice(&s.data);
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::media::codec_test_data::AVC_RECORD_320X240;
    use mp4_atom::{Any, Decode};

    fn avc() -> CodecConfig {
        CodecConfig::Avc(AvcConfig::parse(Bytes::from_static(AVC_RECORD_320X240)).unwrap())
    }

    #[test]
    fn init_segment_round_trips_with_avcc_verbatim() {
        let bytes = init_segment(&avc()).unwrap();
        let mut cur = std::io::Cursor::new(&bytes);
        let ftyp = Ftyp::decode(&mut cur).unwrap();
        assert!(ftyp.compatible_brands.contains(&b"cmfc".into()));
        let moov = Moov::decode(&mut cur).unwrap();
        assert_eq!(moov.mvex.unwrap().trex[0].track_id, TRACK_ID);
        let trak = &moov.trak[0];
        assert_eq!(trak.mdia.mdhd.timescale, 90_000);
        let codec = &trak.mdia.minf.stbl.stsd.codecs[0];
        let mut avcc_body = Vec::new();
        match codec {
            mp4_atom::Codec::Avc1(a) => {
                assert_eq!((a.visual.width, a.visual.height), (320, 240));
                a.avcc.encode_body(&mut avcc_body).unwrap();
            }
            other => panic!("unexpected {other:?}"),
        }
        assert_eq!(avcc_body, AVC_RECORD_320X240);
    }

    #[test]
    fn a_chunk_inside_a_segment_has_no_styp() {
        let sample = Sample {
            duration: 3000,
            composition_offset: 0,
            sync: false,
            data: Bytes::from_static(b"P"),
        };
        let bytes = chunk(8, 3000, std::slice::from_ref(&sample), false).unwrap();
        let mut cur = std::io::Cursor::new(&bytes);
        assert!(matches!(Any::decode(&mut cur).unwrap(), Any::Moof(_)));
        assert!(matches!(Any::decode(&mut cur).unwrap(), Any::Mdat(_)));
        let with_styp = chunk(8, 3000, &[sample], true).unwrap();
        assert!(with_styp.ends_with(&bytes));
    }

    #[test]
    fn media_segment_offsets_point_at_sample_data() {
        let samples = vec![
            Sample {
                duration: 3000,
                composition_offset: 6000,
                sync: true,
                data: Bytes::from_static(b"KEYFRAME"),
            },
            Sample {
                duration: 3000,
                composition_offset: -3000,
                sync: false,
                data: Bytes::from_static(b"b"),
            },
        ];
        let bytes = chunk(7, 1 << 40, &samples, true).unwrap();
        let mut cur = std::io::Cursor::new(&bytes);
        assert!(matches!(Any::decode(&mut cur).unwrap(), Any::Styp(_)));
        let moof_start = cur.position() as usize;
        let moof = Moof::decode(&mut cur).unwrap();
        assert_eq!(moof.mfhd.sequence_number, 7);
        let traf = &moof.traf[0];
        assert_eq!(traf.tfdt.as_ref().unwrap().base_media_decode_time, 1 << 40);
        let trun = &traf.trun[0];
        let offset = trun.data_offset.unwrap() as usize;
        assert_eq!(
            &bytes[moof_start + offset..moof_start + offset + 8],
            b"KEYFRAME"
        );
        // the hand-written mdat header decodes as one box holding exactly the samples
        match Any::decode(&mut cur).unwrap() {
            Any::Mdat(mdat) => assert_eq!(mdat.data, b"KEYFRAMEb"),
            other => panic!("expected mdat, got {other:?}"),
        }
        assert_eq!(cur.position() as usize, bytes.len());
        let entries: Vec<_> = trun.samples.iter().collect();
        assert_eq!(entries[1].cts, Some(-3000));
        assert_eq!(entries[0].flags, Some(SYNC_SAMPLE_FLAGS));
        assert_eq!(entries[1].flags, Some(NON_SYNC_SAMPLE_FLAGS));
    }
}
