//! Fragmented MP4 (as an HLS pusher sends it: an init segment named by `EXT-X-MAP`, then
//! `moof`+`mdat` media segments) → `StreamEvent`s. Pure: no I/O, no clock of its own.
//!
//! - **Init** (`ftyp`+`moov`): the first `avc1` video track (its `avcC`, validated by
//!   `AvcConfig::parse`) and the first `mp4a` AAC track (its AudioSpecificConfig, validated by
//!   `AacConfig::parse`) are taken, with their `mdhd` timescales and `trex` defaults. Any other
//!   codec of a video or audio track (HEVC in `hev1`, VP9, Opus, AC-3, …) is refused with its
//!   name; an init without either track is refused. A changed init announces its tracks again.
//! - **Media segments**: every top-level `moof` (decoded by mp4-atom) addresses its samples in
//!   the same bytes; `styp`, `sidx`, `mdat`, `free`, `prft` and unknown boxes are skipped by
//!   size. Each `traf`'s samples start at its base (`base_data_offset` when given, else the
//!   `moof`'s first byte) plus the run's `data_offset`, or where the previous run ended. Sample
//!   duration, size and flags come from the run, else the `tfhd`, else the init's `trex`.
//! - **Native clock**: each track keeps its `mdhd` timescale; decode times are the `tfdt` plus
//!   the durations before the sample, presentation times add the composition offset.
//! - The frames of one `moof` are handed out in decode-time order across tracks (a pusher's
//!   fragment holds seconds of each track one after the other), so later stages see them
//!   interleaved as every other way in delivers them.
//! - **Limits before allocation**: a sample must lie inside the segment's bytes, be 1 to
//!   `MAX_SAMPLE` bytes, and all samples together may not be more bytes than the segment (no
//!   run may address the same bytes twice over); at most `MAX_SAMPLES` per segment; decode
//!   times and composition offsets are bounded (`MAX_TIME`, `MAX_CTS`); a box must fit in what
//!   is left; samples share the segment's `Bytes` (no copy). The caller bounds the segment.
//!
//! Hand-written on mp4-atom's box decoders: no crate turns fMP4 fragments into timed samples,
//! and the subset (one video and one audio track, `trun` addressing) is small.

use std::cmp::Ordering;

use bytes::Bytes;
use mp4_atom::{Atom, Codec, Decode, FourCC, Moof, Moov};

use crate::media::{
    AacConfig, AvcConfig, CodecConfig, CodecError, MediaFrame, StreamEvent, Timestamp, TrackInfo,
    TrackKind,
};

/// Largest sample taken (a 4K intra frame fits).
pub const MAX_SAMPLE: usize = 8 << 20;
/// Most samples one media segment may hold (a 30 s segment at 60 fps with audio has ~3,300).
pub const MAX_SAMPLES: usize = 100_000;
/// Largest decode time and composition offset taken, in track ticks: far past any stream, and
/// small enough that the timeline's arithmetic (shifts after a discontinuity) cannot overflow.
const MAX_TIME: u64 = 1 << 52;
const MAX_CTS: i64 = 1 << 40;
/// `sample_is_non_sync_sample` in ISO/IEC 14496-12 sample flags.
const NON_SYNC: u32 = 0x0001_0000;

#[derive(Debug, thiserror::Error, PartialEq)]
pub enum Fmp4Error {
    #[error("malformed fMP4: {0}")]
    Malformed(String),
    #[error("unsupported {0} codec {1} in the init segment; Strata accepts H.264 (avc1) and AAC")]
    Unsupported(&'static str, String),
    #[error("the init segment has neither an H.264 video nor an AAC audio track")]
    NoTracks,
    #[error("a media segment came before any init segment")]
    NoInit,
    #[error(transparent)]
    Codec(#[from] CodecError),
}

impl Fmp4Error {
    /// Whether the stream cannot go on: its init names what cannot be packaged. A malformed
    /// media segment is dropped and the next one is tried.
    pub fn is_fatal(&self) -> bool {
        matches!(
            self,
            Fmp4Error::Unsupported(..) | Fmp4Error::NoTracks | Fmp4Error::Codec(_)
        )
    }
}

fn malformed(what: impl Into<String>) -> Fmp4Error {
    Fmp4Error::Malformed(what.into())
}

/// One track the init segment declared and the demuxer takes.
#[derive(Debug, Clone)]
struct Track {
    id: u32,
    kind: TrackKind,
    timescale: u32,
    default_duration: u32,
    default_size: u32,
    default_flags: u32,
}

/// Turns an init segment and the media segments after it into stream events.
#[derive(Debug, Default, Clone)]
pub struct Fmp4Demuxer {
    tracks: Vec<Track>,
    /// The init segment's bytes, so a repeated identical init announces nothing.
    init: Option<Bytes>,
}

/// Box type and the range of the whole box (header included) in the bytes walked.
pub(crate) struct BoxAt {
    pub(crate) kind: [u8; 4],
    pub(crate) start: usize,
    pub(crate) end: usize,
}

/// The top-level boxes of `bytes`, each checked to fit.
pub(crate) fn boxes(bytes: &[u8]) -> Result<Vec<BoxAt>, Fmp4Error> {
    let mut out = Vec::new();
    let mut at = 0usize;
    while at < bytes.len() {
        let rest = &bytes[at..];
        if rest.len() < 8 {
            return Err(malformed("trailing bytes shorter than a box header"));
        }
        let size32 = u32::from_be_bytes([rest[0], rest[1], rest[2], rest[3]]);
        let kind = [rest[4], rest[5], rest[6], rest[7]];
        let size = match size32 {
            0 => rest.len() as u64,
            1 => {
                let large = rest
                    .get(8..16)
                    .ok_or_else(|| malformed("truncated 64-bit box size"))?;
                u64::from_be_bytes(large.try_into().map_err(|_| malformed("box size"))?)
            }
            n => u64::from(n),
        };
        if size < 8 || size > rest.len() as u64 {
            return Err(malformed(format!(
                "box {} of {size} bytes where {} remain",
                String::from_utf8_lossy(&kind),
                rest.len()
            )));
        }
        let end = at + size as usize;
        out.push(BoxAt {
            kind,
            start: at,
            end,
        });
        at = end;
    }
    Ok(out)
}

impl Fmp4Demuxer {
    pub fn new() -> Self {
        Self::default()
    }

    /// Whether an init segment was taken.
    pub fn has_init(&self) -> bool {
        self.init.is_some()
    }

    /// Reads an init segment; announces its tracks unless it repeats the one before.
    pub fn init(&mut self, bytes: &Bytes) -> Result<Vec<StreamEvent>, Fmp4Error> {
        if self.init.as_ref() == Some(bytes) {
            return Ok(Vec::new());
        }
        let moov_box = boxes(bytes)?
            .into_iter()
            .find(|b| &b.kind == b"moov")
            .ok_or_else(|| malformed("the init segment has no moov"))?;
        let moov = Moov::decode(&mut &bytes[moov_box.start..moov_box.end])
            .map_err(|e| malformed(format!("moov: {e}")))?;
        let mut tracks = Vec::new();
        let mut events = Vec::new();
        for trak in &moov.trak {
            let id = trak.tkhd.track_id;
            let Some(codec) = trak.mdia.minf.stbl.stsd.codecs.first() else {
                continue;
            };
            let handler = trak.mdia.hdlr.handler;
            let (kind, config) = match codec {
                Codec::Avc1(avc1) => {
                    let mut record = Vec::new();
                    avc1.avcc
                        .encode_body(&mut record)
                        .map_err(|e| malformed(format!("avcC: {e}")))?;
                    (
                        TrackKind::Video,
                        CodecConfig::Avc(AvcConfig::parse(Bytes::from(record))?),
                    )
                }
                Codec::Mp4a(mp4a) => {
                    let asc = mp4a
                        .esds
                        .es_desc
                        .dec_config
                        .dec_specific
                        .as_ref()
                        .map(|d| d.raw.clone())
                        .filter(|raw| !raw.is_empty())
                        .ok_or_else(|| malformed("mp4a without an AudioSpecificConfig"))?;
                    (
                        TrackKind::Audio,
                        CodecConfig::Aac(AacConfig::parse(Bytes::from(asc))?),
                    )
                }
                other if handler == FourCC::new(b"vide") => {
                    return Err(Fmp4Error::Unsupported("video", codec_name(other)))
                }
                other if handler == FourCC::new(b"soun") => {
                    return Err(Fmp4Error::Unsupported("audio", codec_name(other)))
                }
                _ => continue,
            };
            if tracks.iter().any(|t: &Track| t.kind == kind) {
                continue;
            }
            let timescale = trak.mdia.mdhd.timescale;
            if timescale == 0 {
                return Err(malformed("a track with timescale 0"));
            }
            let trex = moov
                .mvex
                .as_ref()
                .and_then(|mvex| mvex.trex.iter().find(|t| t.track_id == id));
            tracks.push(Track {
                id,
                kind,
                timescale,
                default_duration: trex.map_or(0, |t| t.default_sample_duration),
                default_size: trex.map_or(0, |t| t.default_sample_size),
                default_flags: trex.map_or(0, |t| t.default_sample_flags),
            });
            events.push(StreamEvent::Track(TrackInfo {
                kind,
                codec: config,
            }));
        }
        if tracks.is_empty() {
            return Err(Fmp4Error::NoTracks);
        }
        self.tracks = tracks;
        self.init = Some(bytes.clone());
        Ok(events)
    }

    /// Reads one media segment: its frames, in decode order across tracks per fragment.
    pub fn segment(&self, bytes: &Bytes) -> Result<Vec<StreamEvent>, Fmp4Error> {
        if self.init.is_none() {
            return Err(Fmp4Error::NoInit);
        }
        let mut events = Vec::new();
        let mut budget = Budget {
            samples: MAX_SAMPLES,
            bytes: bytes.len(),
        };
        for b in boxes(bytes)? {
            if &b.kind != b"moof" {
                continue;
            }
            let moof = Moof::decode(&mut &bytes[b.start..b.end])
                .map_err(|e| malformed(format!("moof: {e}")))?;
            let mut frames = Vec::new();
            for traf in &moof.traf {
                self.traf_frames(bytes, b.start, traf, &mut frames, &mut budget)?;
            }
            frames.sort_by(|a: &MediaFrame, b: &MediaFrame| decode_order(a, b));
            events.extend(frames.into_iter().map(StreamEvent::Frame));
        }
        Ok(events)
    }

    fn traf_frames(
        &self,
        bytes: &Bytes,
        moof_start: usize,
        traf: &mp4_atom::Traf,
        out: &mut Vec<MediaFrame>,
        budget: &mut Budget,
    ) -> Result<(), Fmp4Error> {
        let tfhd = &traf.tfhd;
        let Some(track) = self.tracks.iter().find(|t| t.id == tfhd.track_id) else {
            return Ok(()); // a track not taken (a second video, subtitles)
        };
        let base = match tfhd.base_data_offset {
            Some(offset) => usize::try_from(offset).map_err(|_| malformed("base offset"))?,
            None => moof_start,
        };
        let mut dts = traf
            .tfdt
            .as_ref()
            .map(|t| t.base_media_decode_time)
            .filter(|t| *t <= MAX_TIME)
            .ok_or_else(|| malformed("traf without tfdt, or a decode time out of range"))?;
        let mut position = base;
        for run in &traf.trun {
            if let Some(offset) = run.data_offset {
                position = base
                    .checked_add_signed(offset as isize)
                    .ok_or_else(|| malformed("data offset before the segment"))?;
            }
            for entry in run.samples.iter() {
                let duration = entry
                    .duration
                    .or(tfhd.default_sample_duration)
                    .unwrap_or(track.default_duration);
                let size = entry
                    .size
                    .or(tfhd.default_sample_size)
                    .unwrap_or(track.default_size) as usize;
                let flags = entry
                    .flags
                    .or(tfhd.default_sample_flags)
                    .unwrap_or(track.default_flags);
                if size == 0 || size > MAX_SAMPLE {
                    return Err(malformed(format!("a sample of {size} bytes")));
                }
                budget.samples = budget
                    .samples
                    .checked_sub(1)
                    .ok_or_else(|| malformed(format!("more than {MAX_SAMPLES} samples")))?;
                budget.bytes = budget
                    .bytes
                    .checked_sub(size)
                    .ok_or_else(|| malformed("samples add up to more than the segment"))?;
                let cts = entry.cts.unwrap_or(0);
                if cts.abs() > MAX_CTS || dts > MAX_TIME {
                    return Err(malformed("a time out of range"));
                }
                let end = position
                    .checked_add(size)
                    .filter(|end| *end <= bytes.len())
                    .ok_or_else(|| malformed("a sample outside the segment"))?;
                let decode = i64::try_from(dts).map_err(|_| malformed("decode time"))?;
                let presented = decode + cts;
                out.push(MediaFrame {
                    kind: track.kind,
                    dts: Timestamp::new(decode, track.timescale),
                    pts: Timestamp::new(presented, track.timescale),
                    sync: track.kind == TrackKind::Audio || flags & NON_SYNC == 0,
                    segment_start: false,
                    data: bytes.slice(position..end),
                });
                position = end;
                dts = dts.saturating_add(u64::from(duration));
            }
        }
        Ok(())
    }
}

/// What one media segment may still yield.
struct Budget {
    samples: usize,
    bytes: usize,
}

/// Earlier decode time first, on each frame's own clock.
fn decode_order(a: &MediaFrame, b: &MediaFrame) -> Ordering {
    let lhs = i128::from(a.dts.ticks) * i128::from(b.dts.timescale);
    let rhs = i128::from(b.dts.ticks) * i128::from(a.dts.timescale);
    lhs.cmp(&rhs)
}

fn codec_name(codec: &Codec) -> String {
    let debug = format!("{codec:?}");
    debug
        .split(|c: char| !c.is_alphanumeric())
        .next()
        .unwrap_or("unknown")
        .to_lowercase()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::media::codec_test_data::AVC_RECORD_320X240;
    use crate::package::cmaf;

    fn avc() -> CodecConfig {
        CodecConfig::Avc(AvcConfig::parse(Bytes::from_static(AVC_RECORD_320X240)).unwrap())
    }

    #[test]
    fn our_own_cmaf_reads_back_as_the_frames_it_was_made_of() {
        let init = Bytes::from(cmaf::init_segment(&avc()).unwrap());
        let samples = [
            cmaf::Sample {
                duration: 3000,
                composition_offset: 3000,
                sync: true,
                data: Bytes::from_static(b"\0\0\0\x01K"),
            },
            cmaf::Sample {
                duration: 3000,
                composition_offset: 0,
                sync: false,
                data: Bytes::from_static(b"\0\0\0\x01P"),
            },
        ];
        let segment = Bytes::from(cmaf::chunk(3, 90_000, &samples, true).unwrap());
        let mut demuxer = Fmp4Demuxer::new();
        let tracks = demuxer.init(&init).unwrap();
        assert!(matches!(&tracks[..], [StreamEvent::Track(t)] if t.kind == TrackKind::Video));
        assert!(demuxer.init(&init).unwrap().is_empty(), "a repeat is quiet");
        let frames: Vec<MediaFrame> = demuxer
            .segment(&segment)
            .unwrap()
            .into_iter()
            .filter_map(|e| match e {
                StreamEvent::Frame(f) => Some(f),
                _ => None,
            })
            .collect();
        assert_eq!(frames.len(), 2);
        assert_eq!(frames[0].dts, Timestamp::new(90_000, 90_000));
        assert_eq!(frames[0].pts, Timestamp::new(93_000, 90_000));
        assert!(frames[0].sync && !frames[1].sync);
        assert_eq!(frames[1].dts, Timestamp::new(93_000, 90_000));
        assert_eq!(&frames[1].data[..], b"\0\0\0\x01P");
    }

    #[test]
    fn a_segment_before_its_init_or_cut_short_is_an_error_not_a_panic() {
        let init = Bytes::from(cmaf::init_segment(&avc()).unwrap());
        let sample = cmaf::Sample {
            duration: 3000,
            composition_offset: 0,
            sync: true,
            data: Bytes::from_static(b"\0\0\0\x01K"),
        };
        let segment = Bytes::from(cmaf::chunk(1, 0, &[sample], true).unwrap());
        let mut demuxer = Fmp4Demuxer::new();
        assert_eq!(demuxer.segment(&segment), Err(Fmp4Error::NoInit));
        demuxer.init(&init).unwrap();
        for cut in 1..segment.len() {
            let _ = demuxer.segment(&segment.slice(..cut));
        }
        let _ = demuxer.init(&init.slice(..init.len() / 2));
    }
}
