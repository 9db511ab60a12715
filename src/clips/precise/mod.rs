//! Precise clips: a clip that starts and ends on the requested frames. Only its first and last
//! segment are made again; every segment between them is copied as it is stored.
//!
//! Which frames: the range's wall clocks are mapped to media time on the lead rendition's first
//! segment (its program date time is the presentation time of its first frame), and a frame
//! is in the clip when the middle of its display time is in the range, so a clip lasts the
//! range within one frame and starts on the frame nearest its start. Audio frames are kept by
//! the same rule (they are all sync samples: the edge segments are written again from the
//! kept frames). Video edges are decoded and the kept frames encoded again in a
//! `strata clip-edge` process (`child`). Its parameter sets get an id the source does not use,
//! and are added to the rendition's `avcC` beside the source's, so one init segment serves the
//! whole clip: the copied segments refer to the source's sets, the edges to their own. The
//! edges have no B-frames; each keeps the source segment's composition offset (decode time =
//! presentation time − that offset), so decode times run on without a gap into the copied
//! segments.
//!
//! Each edge is made off the async runtime (`make_edge`, in `spawn_blocking`): its segment
//! demuxed, its frames sent to the process, the output checked and the segment written, one
//! segment's frames and one edge's output in memory at a time.
//!
//! Written by hand: no library splices a re-encoded GOP into stored CMAF; the boxes are
//! written by `package::cmaf`, the frames read by `Fmp4Demuxer`, and the child's output is
//! checked (`parse_edge`, fuzz target `clip_edge`) before any of it is stored.

pub mod child;

use bytes::Bytes;
use mp4_atom::{Codec, Decode, Encode, Moov};

use super::ClipError;
use crate::ingest::fmp4::{boxes, Fmp4Demuxer};
use crate::media::codec::bits::{unescape_rbsp, BitReader};
use crate::media::{AvcConfig, CodecConfig, MediaFrame, RenditionEvent, StreamEvent, TrackInfo};
use crate::package::cmaf::{self, Sample};
use crate::transcode::worker::one_shot::{self, OneShot};
use crate::transcode::worker::wire::{self, FromWorker, ToWorker};
use crate::transcode::worker::WorkerLimits;

/// A clip-edge process's address space (decoding and encoding one segment up to 4096×2304).
const EDGE_MEMORY_MB: u64 = 1536;
/// A clip-edge process's CPU time, far above what an edge needs (a precise clip of a 360p
/// ladder, both edges made, was ready in 0.6 s).
const EDGE_CPU_SECS: u64 = 60;
/// Wall-clock time a clip-edge process may take.
const EDGE_WALL_TIME: std::time::Duration = std::time::Duration::from_secs(120);
/// The largest output taken from a clip-edge process: what it writes is stored as one segment,
/// which a clip's MP4 reads back whole (at most `clips::MAX_OBJECT_BYTES`).
pub const MAX_EDGE_OUTPUT: usize = 60 << 20;
/// Parameter sets an `avcC` holds at most (its counts are 5 and 8 bits; ids go to 31 and 255).
const MAX_SPS: usize = 31;
const MAX_PPS: usize = 255;

/// The range a precise clip keeps, in seconds of media time.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Window {
    pub from_secs: f64,
    pub to_secs: f64,
}

/// One frame of a segment as it is shown: its presentation time and how long it is shown, in
/// ticks of its track.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Shown {
    /// Its place in the segment's decode order.
    pub index: usize,
    pub pts: i64,
    pub duration: i64,
}

/// A segment's frames (decode order) in presentation order, each with how long it is shown: to
/// the next one, the last to the segment's end (`end_dts`, its decode end, plus the first
/// frame's composition offset).
pub fn shown(frames: &[MediaFrame], timescale: u32, end_dts: i64) -> Vec<Shown> {
    let Some(first) = frames.first() else {
        return Vec::new();
    };
    let offset = composition_offset(first, timescale);
    let mut out: Vec<Shown> = frames
        .iter()
        .enumerate()
        .map(|(index, f)| Shown {
            index,
            pts: f.pts.rescale(timescale).ticks,
            duration: 0,
        })
        .collect();
    out.sort_by_key(|s| s.pts);
    let ends: Vec<i64> = out
        .iter()
        .skip(1)
        .map(|s| s.pts)
        .chain([end_dts.saturating_add(offset)])
        .collect();
    for (s, end) in out.iter_mut().zip(ends) {
        s.duration = end.saturating_sub(s.pts).max(0);
    }
    out
}

/// A frame's presentation time minus its decode time, in `timescale` ticks.
fn composition_offset(frame: &MediaFrame, timescale: u32) -> i64 {
    frame
        .pts
        .rescale(timescale)
        .ticks
        .saturating_sub(frame.dts.rescale(timescale).ticks)
}

/// The frames of `shown` in the window: those the middle of whose display time is in it.
pub fn kept(shown: &[Shown], timescale: u32, window: Window) -> Vec<Shown> {
    let scale = f64::from(timescale);
    shown
        .iter()
        .filter(|s| {
            let middle = (s.pts as f64 + s.duration as f64 / 2.0) / scale;
            middle >= window.from_secs && middle < window.to_secs
        })
        .copied()
        .collect()
}

/// The presentation time, in seconds, of a segment's first frame.
pub fn first_shown_secs(frames: &[MediaFrame]) -> Option<f64> {
    frames
        .iter()
        .map(|f| f.pts.ticks as f64 / f64::from(f.pts.timescale.max(1)))
        .min_by(f64::total_cmp)
}

/// An edge segment made again.
#[derive(Debug, Clone, PartialEq)]
pub struct Edge {
    pub segment: Vec<u8>,
    /// Decode time of its first sample, and its duration, in ticks of its track.
    pub start: u64,
    pub duration: u64,
    pub samples: u32,
    /// Seconds from the source segment's first frame to the edge's.
    pub skipped_secs: f64,
    /// The parameter sets the edge's frames refer to (video), for the `avcC`.
    pub parameter_sets: Option<(Bytes, Bytes)>,
}

/// The frames of a stored segment, and its decode end, read with the rendition's demuxer
/// (blocking: a segment is up to `clips::MAX_OBJECT_BYTES`). Every frame must be in the
/// track's `timescale`, the clock the segment's decode times are in.
pub fn frames_of(
    demuxer: &Fmp4Demuxer,
    segment: &Bytes,
    default_duration: u32,
    timescale: u32,
) -> Result<(Vec<MediaFrame>, i64), ClipError> {
    let frames: Vec<MediaFrame> = demuxer
        .segment(segment)
        .map_err(|e| ClipError::Media(e.to_string()))?
        .into_iter()
        .filter_map(|event| match event {
            StreamEvent::Frame(frame) => Some(frame),
            _ => None,
        })
        .collect();
    if frames
        .iter()
        .any(|f| f.pts.timescale != timescale || f.dts.timescale != timescale)
    {
        return Err(ClipError::Media(
            "a track whose clock is not its codec's".into(),
        ));
    }
    let (start, duration, _) = super::mp4::segment_timing(segment, default_duration)?;
    let end = i64::try_from(start.saturating_add(duration))
        .map_err(|_| ClipError::Media("a decode time out of range".into()))?;
    Ok((frames, end))
}

/// What one edge segment is made from.
pub struct EdgeJob {
    /// The rendition's demuxer (its init read).
    pub demuxer: Fmp4Demuxer,
    pub segment: Bytes,
    pub default_duration: u32,
    pub codec: CodecConfig,
    pub window: Window,
    /// The edge's `mfhd` sequence number.
    pub sequence: u32,
    /// The limits a video edge's clip-edge process runs under, its label (for `ps`) and the
    /// parameter set id it writes.
    pub video: (WorkerLimits, String, u8),
}

/// Makes one edge segment again (blocking: demuxing, and a clip-edge process for video):
/// `None` when none of its frames is in the window.
pub fn make_edge(job: EdgeJob) -> Result<Option<Edge>, ClipError> {
    let timescale = job.codec.timescale();
    let (frames, end) = frames_of(&job.demuxer, &job.segment, job.default_duration, timescale)?;
    match &job.codec {
        CodecConfig::Avc(avc) => {
            let (limits, label, sps_id) = job.video;
            video_edge(
                limits,
                &label,
                avc,
                frames,
                end,
                job.window,
                sps_id,
                job.sequence,
            )
        }
        CodecConfig::Aac(_) | CodecConfig::Opus(_) => {
            audio_edge(&frames, timescale, end, job.window, job.sequence)
        }
        other => Err(ClipError::Range(format!(
            "a precise clip re-encodes H.264 only, not {}",
            other.name()
        ))),
    }
}

/// A sample's duration in a `trun` (32 bits).
fn sample_duration(ticks: i64) -> Result<u32, ClipError> {
    u32::try_from(ticks).map_err(|_| ClipError::Media("a frame shown for too long".into()))
}

/// An audio edge: the kept frames of `frames`, written again as one segment (`None`: none is
/// kept).
pub fn audio_edge(
    frames: &[MediaFrame],
    timescale: u32,
    end_dts: i64,
    window: Window,
    sequence: u32,
) -> Result<Option<Edge>, ClipError> {
    let all = shown(frames, timescale, end_dts);
    let kept = kept(&all, timescale, window);
    let (Some(first), Some(source_first)) = (kept.first(), all.first()) else {
        return Ok(None);
    };
    let samples = kept
        .iter()
        .map(|s| {
            Ok(Sample {
                duration: sample_duration(s.duration)?,
                composition_offset: 0,
                sync: true,
                data: frames[s.index].data.clone(),
            })
        })
        .collect::<Result<Vec<_>, ClipError>>()?;
    let start = frames[first.index].dts.rescale(timescale).ticks;
    edge(
        &samples,
        start,
        sequence,
        (first.pts - source_first.pts) as f64 / f64::from(timescale),
        None,
    )
    .map(Some)
}

/// A video edge: the kept frames of `frames` decoded and encoded again in a clip-edge process
/// under `limits`, with parameter set id `sps_id` (`None`: none is kept). Blocking.
#[allow(clippy::too_many_arguments)]
pub fn video_edge(
    limits: WorkerLimits,
    label: &str,
    config: &AvcConfig,
    frames: Vec<MediaFrame>,
    end_dts: i64,
    window: Window,
    sps_id: u8,
    sequence: u32,
) -> Result<Option<Edge>, ClipError> {
    let timescale = CodecConfig::Avc(config.clone()).timescale();
    let all = shown(&frames, timescale, end_dts);
    let kept = kept(&all, timescale, window);
    let (Some(first), Some(last), Some(source_first)) = (kept.first(), kept.last(), all.first())
    else {
        return Ok(None);
    };
    let offset = frames
        .first()
        .map_or(0, |f| composition_offset(f, timescale));
    let composition = i32::try_from(offset)
        .map_err(|_| ClipError::Media("a composition offset out of range".into()))?;
    let wire = |message: &ToWorker| {
        wire::encode_to_worker(message).map_err(|e| ClipError::Media(e.to_string()))
    };
    let mut input = wire(&ToWorker::Event(StreamEvent::Track(TrackInfo {
        kind: crate::media::TrackKind::Video,
        codec: CodecConfig::Avc(config.clone()),
    })))?;
    for frame in frames {
        input.extend(wire(&ToWorker::Event(StreamEvent::Frame(frame)))?);
    }
    let args = [
        "clip-edge".to_string(),
        label.to_string(),
        format!("--first={}", first.pts),
        format!("--last={}", last.pts),
        format!("--sps-id={sps_id}"),
    ];
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    let job = OneShot {
        limits: WorkerLimits {
            memory_mb: match limits.memory_mb {
                0 => EDGE_MEMORY_MB,
                mb => mb.min(EDGE_MEMORY_MB),
            },
            cpu_secs: EDGE_CPU_SECS,
            ..limits
        },
        args: &args,
        wall_time: EDGE_WALL_TIME,
        max_output: MAX_EDGE_OUTPUT,
    };
    let output = one_shot::run(job, &input).map_err(|e| ClipError::Edge(e.to_string()))?;
    drop(input);
    let expected: Vec<i64> = kept.iter().map(|s| s.pts).collect();
    let (new, encoded) = parse_edge(&output, &expected, sps_id, config).map_err(ClipError::Edge)?;
    let samples = kept
        .iter()
        .zip(&encoded)
        .map(|(s, frame)| {
            Ok(Sample {
                duration: sample_duration(s.duration)?,
                composition_offset: composition,
                sync: frame.sync,
                data: frame.data.clone(),
            })
        })
        .collect::<Result<Vec<_>, ClipError>>()?;
    let sets = (new.sps[0].clone(), new.pps[0].clone());
    edge(
        &samples,
        first.pts.saturating_sub(offset),
        sequence,
        (first.pts - source_first.pts) as f64 / f64::from(timescale),
        Some(sets),
    )
    .map(Some)
}

fn edge(
    samples: &[Sample],
    start: i64,
    sequence: u32,
    skipped_secs: f64,
    parameter_sets: Option<(Bytes, Bytes)>,
) -> Result<Edge, ClipError> {
    let start =
        u64::try_from(start).map_err(|_| ClipError::Media("a decode time before 0".into()))?;
    let segment =
        cmaf::chunk(sequence, start, samples, true).map_err(|e| ClipError::Media(e.to_string()))?;
    Ok(Edge {
        segment,
        start,
        duration: samples.iter().map(|s| u64::from(s.duration)).sum(),
        samples: samples.len() as u32,
        skipped_secs,
        parameter_sets,
    })
}

/// Checks a clip-edge process's output (it decoded hostile bytes: its output is hostile too):
/// one H.264 track at `source`'s size with one SPS and one PPS numbered `sps_id`, then exactly
/// the `expected` presentation times (ticks of the 90 kHz video clock), in order, the first a
/// keyframe. Returns the track's configuration and its frames.
pub fn parse_edge(
    output: &[u8],
    expected: &[i64],
    sps_id: u8,
    source: &AvcConfig,
) -> Result<(AvcConfig, Vec<MediaFrame>), String> {
    let mut input = output;
    let config = match wire::read_from_worker(&mut input) {
        Ok(Some(FromWorker::Event(RenditionEvent::Track {
            info:
                TrackInfo {
                    codec: CodecConfig::Avc(avc),
                    ..
                },
            ..
        }))) => avc,
        Ok(_) => return Err("its output does not start with an H.264 track".into()),
        Err(e) => return Err(format!("its output: {e}")),
    };
    let id = u32::from(sps_id);
    let numbered = config.sps.len() == 1
        && config.pps.len() == 1
        && sps_id_of(&config.sps[0]) == Some(id)
        && pps_ids_of(&config.pps[0]) == Some((id, id));
    if !numbered {
        return Err(format!("its parameter sets are not numbered {sps_id}"));
    }
    if (config.width, config.height) != (source.width, source.height)
        || config.profile_idc > source.profile_idc.max(66)
        || config.nalu_length_size != 4
    {
        return Err("its track is not the source's size and profile".into());
    }
    let mut frames = Vec::with_capacity(expected.len());
    loop {
        match wire::read_from_worker(&mut input) {
            Ok(Some(FromWorker::Event(RenditionEvent::Frame { frame, .. }))) => {
                let at = frames.len();
                if expected.get(at) != Some(&frame.pts.rescale(90_000).ticks)
                    || (at == 0 && !frame.sync)
                    || frame.data.is_empty()
                {
                    return Err(format!("its frame {at} is not the one asked for"));
                }
                frames.push(frame);
            }
            Ok(None) => break,
            Ok(Some(_)) => return Err("its output has more than one track's frames".into()),
            Err(e) => return Err(format!("its output: {e}")),
        }
    }
    if frames.len() != expected.len() {
        return Err(format!(
            "it encoded {} of {} frames",
            frames.len(),
            expected.len()
        ));
    }
    Ok((config, frames))
}

/// The first fields of a NAL unit's payload, after `skip` bytes (its header and, in an SPS,
/// profile, constraint flags and level), emulation prevention bytes removed.
fn fields(nal: &[u8], skip: usize) -> Vec<u8> {
    let payload = nal.get(skip..).unwrap_or_default();
    // the ids come first: a few dozen bytes hold them
    unescape_rbsp(&payload[..payload.len().min(32)])
}

/// An SPS's `seq_parameter_set_id` (after its NAL header, profile, constraint flags and level).
pub fn sps_id_of(sps: &[u8]) -> Option<u32> {
    BitReader::new(&fields(sps, 4))
        .ue()
        .ok()
        .filter(|id| *id <= 31)
}

/// A PPS's `pic_parameter_set_id` and the `seq_parameter_set_id` it refers to.
pub fn pps_ids_of(pps: &[u8]) -> Option<(u32, u32)> {
    let bytes = fields(pps, 1);
    let mut reader = BitReader::new(&bytes);
    let pps_id = reader.ue().ok().filter(|id| *id <= 255)?;
    let sps_id = reader.ue().ok().filter(|id| *id <= 31)?;
    Some((pps_id, sps_id))
}

/// `count` parameter set ids (1–31) that no SPS or PPS of `config` uses, if the `avcC` has room
/// for `count` more sets of each (`None`: too few free, too many sets, or a set whose id does
/// not read).
pub fn free_ids(config: &AvcConfig, count: usize) -> Option<Vec<u8>> {
    if config.sps.len() + count > MAX_SPS || config.pps.len() + count > MAX_PPS {
        return None;
    }
    let used: Vec<u32> = config
        .sps
        .iter()
        .map(|s| sps_id_of(s))
        .chain(config.pps.iter().map(|p| pps_ids_of(p).map(|(id, _)| id)))
        .collect::<Option<_>>()?;
    let free: Vec<u8> = (1..=31u8)
        .filter(|id| !used.contains(&u32::from(*id)))
        .take(count)
        .collect();
    (free.len() == count).then_some(free)
}

/// `init` (an H.264 CMAF init segment) with `sets` added to its `avcC`.
pub fn with_parameter_sets(init: &[u8], sets: &[(Bytes, Bytes)]) -> Result<Vec<u8>, ClipError> {
    let media = |what: String| ClipError::Media(what);
    let mut out = Vec::with_capacity(init.len() + 256);
    let mut moov = None;
    for b in boxes(init).map_err(|e| media(e.to_string()))? {
        match &b.kind {
            b"moov" => {
                moov = Some(
                    Moov::decode(&mut &init[b.start..b.end])
                        .map_err(|e| media(format!("reading a moov: {e}")))?,
                )
            }
            _ => out.extend_from_slice(&init[b.start..b.end]),
        }
    }
    let mut moov = moov.ok_or_else(|| media("the init segment has no moov".into()))?;
    let entry = moov
        .trak
        .first_mut()
        .and_then(|t| t.mdia.minf.stbl.stsd.codecs.first_mut());
    let Some(Codec::Avc1(avc1)) = entry else {
        return Err(media("the init segment is not H.264 (avc1)".into()));
    };
    for (sps, pps) in sets {
        avc1.avcc.sequence_parameter_sets.push(sps.to_vec());
        avc1.avcc.picture_parameter_sets.push(pps.to_vec());
    }
    let avcc = &avc1.avcc;
    if avcc.sequence_parameter_sets.len() > MAX_SPS || avcc.picture_parameter_sets.len() > MAX_PPS {
        return Err(media("more parameter sets than an avcC holds".into()));
    }
    moov.encode(&mut out)
        .map_err(|e| media(format!("writing the moov: {e}")))?;
    Ok(out)
}

/// The H.264 configuration of a video track, if it is H.264 with 4-byte NAL lengths (what a
/// precise edge can be spliced into).
pub fn spliceable(info: &TrackInfo) -> Result<&AvcConfig, ClipError> {
    match &info.codec {
        CodecConfig::Avc(avc) if avc.nalu_length_size == 4 => Ok(avc),
        CodecConfig::Avc(_) => Err(ClipError::Range(
            "a precise clip needs 4-byte NAL unit lengths in the stored H.264".into(),
        )),
        other => Err(ClipError::Range(format!(
            "a precise clip re-encodes H.264 only, not {}",
            other.name()
        ))),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::media::codec_test_data::AVC_RECORD_320X240;
    use crate::media::{Timestamp, TrackKind};

    fn frame(dts: i64, pts: i64) -> MediaFrame {
        MediaFrame {
            kind: TrackKind::Video,
            dts: Timestamp::new(dts, 90_000),
            pts: Timestamp::new(pts, 90_000),
            sync: dts == 0,
            segment_start: false,
            data: Bytes::from_static(&[0, 0, 0, 1, 0x65]),
        }
    }

    /// Six 25 fps frames with two B-frames (decode order I P B B P B), composition offset of
    /// two frames, ending at decode time 6 frames.
    fn gop() -> Vec<MediaFrame> {
        let f = 3600;
        [(0, 2), (1, 5), (2, 3), (3, 4), (4, 7), (5, 6)]
            .iter()
            .map(|&(d, p)| frame(d * f, p * f))
            .collect()
    }

    #[test]
    fn frames_are_shown_in_presentation_order_until_the_segment_ends() {
        let shown = shown(&gop(), 90_000, 6 * 3600);
        let order: Vec<usize> = shown.iter().map(|s| s.index).collect();
        assert_eq!(order, [0, 2, 3, 1, 5, 4]);
        assert!(shown.iter().all(|s| s.duration == 3600), "{shown:?}");
        assert_eq!(first_shown_secs(&gop()), Some(0.08));
    }

    #[test]
    fn a_frame_is_kept_when_the_middle_of_its_display_time_is_in_the_range() {
        let shown = shown(&gop(), 90_000, 6 * 3600);
        // frames show at 0.08, 0.12, 0.16, 0.20, 0.24, 0.28 s, each for 0.04 s
        let window = Window {
            from_secs: 0.135,
            to_secs: 0.215,
        };
        let kept: Vec<i64> = kept(&shown, 90_000, window).iter().map(|s| s.pts).collect();
        assert_eq!(kept, [3 * 3600, 4 * 3600]);
        let everything = Window {
            from_secs: 0.0,
            to_secs: 1.0,
        };
        assert_eq!(super::kept(&shown, 90_000, everything).len(), 6);
        let between = Window {
            from_secs: 0.141,
            to_secs: 0.179,
        };
        assert!(super::kept(&shown, 90_000, between).is_empty());
    }

    #[test]
    fn parameter_set_ids_are_read_and_free_ones_found() {
        let source = AvcConfig::parse(Bytes::from_static(AVC_RECORD_320X240)).unwrap();
        assert_eq!(sps_id_of(&source.sps[0]), Some(0));
        assert_eq!(pps_ids_of(&source.pps[0]), Some((0, 0)));
        assert_eq!(free_ids(&source, 2), Some(vec![1, 2]));
        assert_eq!(free_ids(&source, 32), None);
        // an avcC with room for fewer than two more sets, or with a set whose id does not
        // read, gets none
        let mut full = source.clone();
        full.sps = vec![source.sps[0].clone(); 30];
        assert_eq!(free_ids(&full, 2), None);
        let mut unreadable = source.clone();
        unreadable.pps.push(Bytes::from_static(&[0x68]));
        assert_eq!(free_ids(&unreadable, 2), None);
        // a PPS with pic id 2 (011), seq id 1 (010)
        assert_eq!(pps_ids_of(&[0x68, 0b0110_1000]), Some((2, 1)));
        // cut short or all zeros: no id, no panic
        for bad in [&[][..], &[0x67], &[0x67, 0, 0, 0, 0, 0, 0, 0]] {
            assert_eq!(sps_id_of(bad), None);
        }
    }

    #[test]
    fn a_clip_edge_process_output_is_taken_only_as_asked() {
        let source = AvcConfig::parse(Bytes::from_static(AVC_RECORD_320X240)).unwrap();
        // three 320x240 frames as a clip-edge process writes them (tests/fuzz_corpora.rs)
        let whole = std::fs::read(
            std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
                .join("tests/golden/clip_edge_three_frames.bin"),
        )
        .unwrap();
        let expected = [0, 3600, 7200];
        let (config, frames) = parse_edge(&whole, &expected, 1, &source).unwrap();
        assert_eq!(frames.len(), 3);
        // its sets go beside the source's in one avcC, which then parses with both
        let init = cmaf::init_segment(&CodecConfig::Avc(source.clone())).unwrap();
        let sets = [(config.sps[0].clone(), config.pps[0].clone())];
        let merged = with_parameter_sets(&init, &sets).unwrap();
        let mut demuxer = Fmp4Demuxer::new();
        let tracks = demuxer.init(&Bytes::from(merged)).unwrap();
        let Some(StreamEvent::Track(TrackInfo {
            codec: CodecConfig::Avc(both),
            ..
        })) = tracks.first()
        else {
            panic!("{tracks:?}")
        };
        assert_eq!((both.sps.len(), both.pps.len()), (2, 2));
        assert_eq!((both.width, both.height), (320, 240));
        // another id, other times, cut short, a frame missing or out of order: refused
        assert!(parse_edge(&whole, &expected, 2, &source).is_err());
        assert!(parse_edge(&whole, &[0, 3600, 7201], 1, &source).is_err());
        assert!(parse_edge(&whole[..whole.len() - 7], &expected, 1, &source).is_err());
        let mut input = &whole[..];
        let mut messages = Vec::new();
        while let Some(message) = wire::read_from_worker(&mut input).unwrap() {
            messages.push(wire::encode_from_worker(&message).unwrap());
        }
        assert_eq!(messages.len(), 4);
        for order in [[0, 1, 2].as_slice(), &[0, 2, 1, 3], &[0, 1, 3]] {
            let shuffled: Vec<u8> = order.iter().flat_map(|i| messages[*i].clone()).collect();
            assert!(
                parse_edge(&shuffled, &expected, 1, &source).is_err(),
                "{order:?}"
            );
        }
    }

    #[test]
    fn an_audio_edge_keeps_the_frames_in_the_range() {
        let frames: Vec<MediaFrame> = (0..10)
            .map(|i| MediaFrame {
                kind: TrackKind::Audio,
                dts: Timestamp::new(i * 1024, 48_000),
                pts: Timestamp::new(i * 1024, 48_000),
                sync: true,
                segment_start: false,
                data: Bytes::from_static(&[0x21, 0x10]),
            })
            .collect();
        // frames are 21.3 ms long: 30 ms to 110 ms keeps frames 1 to 4 (middles 32 to 96 ms)
        let window = Window {
            from_secs: 0.030,
            to_secs: 0.110,
        };
        let edge = audio_edge(&frames, 48_000, 10 * 1024, window, 7)
            .unwrap()
            .unwrap();
        assert_eq!((edge.start, edge.duration, edge.samples), (1024, 4096, 4));
        assert!((edge.skipped_secs - 1024.0 / 48_000.0).abs() < 1e-9);
        let (start, duration, samples) =
            super::super::mp4::segment_timing(&edge.segment, 0).unwrap();
        assert_eq!((start, duration, samples), (1024, 4096, 4));
        let outside = Window {
            from_secs: 5.0,
            to_secs: 6.0,
        };
        assert_eq!(
            audio_edge(&frames, 48_000, 10 * 1024, outside, 7).unwrap(),
            None
        );
    }
}
