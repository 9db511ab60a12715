//! A clip's downloadable MP4: one fragmented MP4 holding the top video rendition and the audio,
//! put together from their CMAF init segments and segments without re-encoding. Every CMAF
//! track Strata writes has track id 1; in the file the audio track becomes 2. A segment's
//! `moof` boxes keep their size, so the sample data offsets (relative to each `moof`) stay
//! right: only the fixed-width `tfhd` track id, `mfhd` sequence number and `tfdt` decode time
//! fields are rewritten, in place. Decode times are moved so that the file starts at 0 (both
//! tracks by the same wall-clock amount, so they stay in sync). `mehd` carries the whole
//! duration, so a player knows it up front.
//!
//! Written by hand on mp4-atom: FFmpeg would remux it, but only through a file or a custom
//! I/O layer per store; this is a few box edits on bytes Strata itself wrote.

use mp4_atom::{Decode, Encode, Mehd, Moov};

use super::ClipError;
use crate::ingest::fmp4::boxes;

/// The file's track id of the audio track.
pub const AUDIO_TRACK_ID: u32 = 2;

fn media(what: impl Into<String>) -> ClipError {
    ClipError::Media(what.into())
}

/// The file's header: the video init segment's `ftyp`, and a `moov` with the video track and
/// (when there is one) the audio track, with `duration_secs` in `mehd`.
pub fn header(
    video_init: &[u8],
    audio_init: Option<&[u8]>,
    duration_secs: f64,
) -> Result<Vec<u8>, ClipError> {
    let mut out = Vec::new();
    let mut moov = None;
    for b in boxes(video_init).map_err(|e| media(e.to_string()))? {
        match &b.kind {
            b"ftyp" => out.extend_from_slice(&video_init[b.start..b.end]),
            b"moov" => moov = Some(decode_moov(&video_init[b.start..b.end])?),
            _ => {}
        }
    }
    let mut moov = moov.ok_or_else(|| media("the video init segment has no moov"))?;
    let mvex = moov
        .mvex
        .as_mut()
        .ok_or_else(|| media("the video init segment has no mvex"))?;
    if let Some(audio_init) = audio_init {
        let audio = boxes(audio_init)
            .map_err(|e| media(e.to_string()))?
            .into_iter()
            .find(|b| &b.kind == b"moov")
            .ok_or_else(|| media("the audio init segment has no moov"))?;
        let mut audio = decode_moov(&audio_init[audio.start..audio.end])?;
        let mut trak = audio
            .trak
            .pop()
            .ok_or_else(|| media("the audio init segment has no track"))?;
        trak.tkhd.track_id = AUDIO_TRACK_ID;
        let mut trex = audio
            .mvex
            .and_then(|m| m.trex.into_iter().next())
            .ok_or_else(|| media("the audio init segment has no trex"))?;
        trex.track_id = AUDIO_TRACK_ID;
        mvex.trex.push(trex);
        moov.trak.push(trak);
    }
    mvex.mehd = Some(Mehd {
        fragment_duration: (duration_secs.max(0.0) * f64::from(moov.mvhd.timescale)).round() as u64,
    });
    moov.mvhd.next_track_id = AUDIO_TRACK_ID + 1;
    moov.encode(&mut out)
        .map_err(|e| media(format!("writing the moov: {e}")))?;
    Ok(out)
}

fn decode_moov(bytes: &[u8]) -> Result<Moov, ClipError> {
    Moov::decode(&mut &bytes[..]).map_err(|e| media(format!("reading a moov: {e}")))
}

/// How one track's fragments change in the file.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Renumber {
    /// The file's track id for it (`None`: as it is).
    pub track_id: Option<u32>,
    /// Ticks taken off every decode time (so the file starts at 0).
    pub shift: u64,
}

/// The `moof` and `mdat` boxes of one CMAF segment for the file (its `styp` and anything else
/// left out), each `moof` numbered from `sequence` on (advanced) and renumbered per `how`.
pub fn fragments(segment: &[u8], how: Renumber, sequence: &mut u32) -> Result<Vec<u8>, ClipError> {
    let mut out = Vec::with_capacity(segment.len());
    for b in boxes(segment).map_err(|e| media(e.to_string()))? {
        match &b.kind {
            b"moof" => {
                let mut moof = segment[b.start..b.end].to_vec();
                *sequence += 1;
                rewrite_moof(&mut moof, how, *sequence)?;
                out.extend_from_slice(&moof);
            }
            b"mdat" => out.extend_from_slice(&segment[b.start..b.end]),
            _ => {}
        }
    }
    Ok(out)
}

/// Header length of the box at the start of `bytes` (8, or 16 with a 64-bit size).
fn header_len(bytes: &[u8]) -> usize {
    if bytes.get(..4) == Some(&[0, 0, 0, 1]) {
        16
    } else {
        8
    }
}

/// Sets the sequence number in `mfhd` and, per `how`, the track id in every `tfhd` and the
/// decode time in every `tfdt`.
fn rewrite_moof(moof: &mut [u8], how: Renumber, sequence: u32) -> Result<(), ClipError> {
    let body = header_len(moof);
    for child in boxes(&moof[body..]).map_err(|e| media(e.to_string()))? {
        let (start, end) = (body + child.start, body + child.end);
        match &child.kind {
            b"mfhd" => set_field(&mut moof[start..end], sequence)?,
            b"traf" => {
                let traf = &mut moof[start..end];
                let inner = header_len(traf);
                for grandchild in boxes(&traf[inner..]).map_err(|e| media(e.to_string()))? {
                    let full = &mut traf[inner + grandchild.start..inner + grandchild.end];
                    match &grandchild.kind {
                        b"tfhd" => {
                            if let Some(track_id) = how.track_id {
                                set_field(full, track_id)?;
                            }
                        }
                        b"tfdt" => shift_decode_time(full, how.shift)?,
                        _ => {}
                    }
                }
            }
            _ => {}
        }
    }
    Ok(())
}

/// Takes `shift` off a `tfdt` box's decode time (32-bit in version 0, 64-bit in version 1).
fn shift_decode_time(tfdt: &mut [u8], shift: u64) -> Result<(), ClipError> {
    let short = || media("a tfdt box too short for its fields");
    let at = header_len(tfdt);
    let version = *tfdt.get(at).ok_or_else(short)?;
    if version == 1 {
        let field = tfdt.get_mut(at + 4..at + 12).ok_or_else(short)?;
        let time = u64::from_be_bytes(field.try_into().map_err(|_| short())?);
        field.copy_from_slice(&time.saturating_sub(shift).to_be_bytes());
    } else {
        let field = tfdt.get_mut(at + 4..at + 8).ok_or_else(short)?;
        let time = u64::from(u32::from_be_bytes(field.try_into().map_err(|_| short())?));
        field.copy_from_slice(&(time.saturating_sub(shift) as u32).to_be_bytes());
    }
    Ok(())
}

/// Sets the first field of a full box (after its header, version and flags) to `value`.
fn set_field(full_box: &mut [u8], value: u32) -> Result<(), ClipError> {
    let at = header_len(full_box) + 4;
    let field = full_box
        .get_mut(at..at + 4)
        .ok_or_else(|| media("a moof box too short for its fields"))?;
    field.copy_from_slice(&value.to_be_bytes());
    Ok(())
}

/// Start (decode time of the first sample), duration and sample count of a CMAF segment of a
/// track whose `trex` default sample duration is `default_duration`.
pub fn segment_timing(segment: &[u8], default_duration: u32) -> Result<(u64, u64, u32), ClipError> {
    let mut start = None;
    let mut duration = 0u64;
    let mut samples = 0u32;
    for b in boxes(segment).map_err(|e| media(e.to_string()))? {
        if &b.kind != b"moof" {
            continue;
        }
        let moof = mp4_atom::Moof::decode(&mut &segment[b.start..b.end])
            .map_err(|e| media(format!("reading a moof: {e}")))?;
        for traf in &moof.traf {
            if start.is_none() {
                start = traf.tfdt.as_ref().map(|t| t.base_media_decode_time);
            }
            let default = traf
                .tfhd
                .default_sample_duration
                .unwrap_or(default_duration);
            for trun in &traf.trun {
                for sample in trun.samples.iter() {
                    duration += u64::from(sample.duration.unwrap_or(default));
                    samples += 1;
                }
            }
        }
    }
    let start = start.ok_or_else(|| media("a segment without a decode time (tfdt)"))?;
    Ok((start, duration, samples))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_moof_gets_its_new_numbers_in_place() {
        // moof { mfhd(seq 7), traf { tfhd(track 1) } } then an mdat
        let mfhd = [0, 0, 0, 16, b'm', b'f', b'h', b'd', 0, 0, 0, 0, 0, 0, 0, 7];
        let tfhd = [0, 0, 0, 16, b't', b'f', b'h', b'd', 0, 2, 0, 0, 0, 0, 0, 1];
        let mut traf = vec![0, 0, 0, 24, b't', b'r', b'a', b'f'];
        traf.extend_from_slice(&tfhd);
        let mut moof = vec![0, 0, 0, 48, b'm', b'o', b'o', b'f'];
        moof.extend_from_slice(&mfhd);
        moof.extend_from_slice(&traf);
        let mut segment = vec![0, 0, 0, 8, b's', b't', b'y', b'p'];
        segment.extend_from_slice(&moof);
        segment.extend_from_slice(&[0, 0, 0, 9, b'm', b'd', b'a', b't', 0xAB]);
        let mut sequence = 41;
        let audio = Renumber {
            track_id: Some(AUDIO_TRACK_ID),
            shift: 0,
        };
        let out = fragments(&segment, audio, &mut sequence).unwrap();
        assert_eq!(sequence, 42);
        assert_eq!(out.len(), moof.len() + 9, "styp left out, sizes kept");
        assert_eq!(&out[20..24], &42u32.to_be_bytes());
        assert_eq!(&out[44..48], &AUDIO_TRACK_ID.to_be_bytes());
        assert_eq!(out.last(), Some(&0xAB));
        // video keeps its track id
        let video = Renumber {
            track_id: None,
            shift: 0,
        };
        let out = fragments(&segment, video, &mut sequence).unwrap();
        assert_eq!(&out[44..48], &1u32.to_be_bytes());
        // a truncated box is refused, not read past
        assert!(fragments(&segment[..30], video, &mut sequence).is_err());
    }

    #[test]
    fn decode_times_move_to_the_start_of_the_file() {
        let mut v1 = vec![0, 0, 0, 20, b't', b'f', b'd', b't', 1, 0, 0, 0];
        v1.extend_from_slice(&900_000u64.to_be_bytes());
        shift_decode_time(&mut v1, 899_000).unwrap();
        assert_eq!(&v1[12..], &1_000u64.to_be_bytes());
        let mut v0 = vec![0, 0, 0, 16, b't', b'f', b'd', b't', 0, 0, 0, 0, 0, 0, 0, 5];
        shift_decode_time(&mut v0, 9).unwrap();
        assert_eq!(&v0[12..], &0u32.to_be_bytes());
        assert!(shift_decode_time(&mut v0[..13], 1).is_err());
        // a 64-bit size header moves the fields
        let mut large = vec![
            0, 0, 0, 1, b't', b'f', b'd', b't', 0, 0, 0, 0, 0, 0, 0, 28, 1, 0, 0, 0,
        ];
        large.extend_from_slice(&50u64.to_be_bytes());
        shift_decode_time(&mut large, 20).unwrap();
        assert_eq!(&large[20..], &30u64.to_be_bytes());
    }
}
