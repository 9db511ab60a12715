//! The segmenter: `StreamEvent`s in, CMAF init and media segments out. Sans-IO and clock-free.
//!
//! Rules it keeps:
//! - The track set is fixed at the first video keyframe (a video config is required; audio is
//!   included if its config arrived before that keyframe — ffmpeg and OBS send both first).
//!   Frames before that keyframe are dropped: a segment must start with a keyframe.
//! - A segment is cut at the first video keyframe whose decode time is at least the target
//!   duration after the segment start. Audio is cut at the same presentation time (the keyframe's
//!   PTS), so segment `n` of every track covers the same interval. A closed segment waits until
//!   audio has passed the cut (audio may lag video in the RTMP interleave); if audio is more than
//!   two segments late, the segment is emitted with the audio that exists.
//! - Timestamps are rebased so the first keyframe is media time 0. Video uses a 90 kHz
//!   timescale; audio uses its sample rate and counts 1024 samples per AAC frame, re-anchoring
//!   to the RTMP clock only when it drifts by more than two frames (a real gap).
//! - Decode times are kept strictly increasing (a broken encoder's repeated DTS is nudged by one
//!   tick) so the fragments stay valid.
//! - A segment that would grow past `MAX_SEGMENT_SECS` without a keyframe, or a codec change
//!   after the start, is an error: the caller ends the broadcast with that message.

use std::collections::VecDeque;

use bytes::Bytes;

use crate::media::{CodecConfig, MediaFrame, StreamEvent, Timestamp, TrackInfo, TrackKind};
use crate::package::cmaf::{self, CmafError, Sample};

/// A segment longer than this without a keyframe ends the broadcast (memory bound, and the
/// player experience would be broken anyway).
pub const MAX_SEGMENT_SECS: f64 = 20.0;
/// How many closed segments may wait for late audio before they are emitted regardless.
const MAX_SEGMENTS_WAITING_FOR_AUDIO: usize = 2;
const VIDEO_TIMESCALE: u32 = 90_000;
const AAC_FRAME: i64 = crate::media::AAC_FRAME_SAMPLES as i64;

#[derive(Debug, thiserror::Error)]
pub enum SegmenterError {
    #[error(
        "no video keyframe for {0:.1} s; set the encoder's keyframe interval to the segment \
         duration (OBS: Output → Keyframe Interval = 2 s)"
    )]
    NoKeyframe(f64),
    #[error(
        "the {0} configuration changed mid-stream ({1}); passthrough cannot switch codec \
         parameters inside one broadcast — reconnect the encoder to start a new one"
    )]
    ConfigChanged(&'static str, String),
    #[error(transparent)]
    Cmaf(#[from] CmafError),
}

#[derive(Debug, Clone)]
pub struct SegmenterConfig {
    /// Target segment duration in seconds.
    pub target_duration: f64,
    /// Number given to the first segment (numbers never repeat for one stream).
    pub first_number: u64,
}

/// One track's part of a segment.
#[derive(Debug, Clone)]
pub struct TrackSegment {
    pub kind: TrackKind,
    /// Decode time of the first sample, in `timescale` ticks since the broadcast's media time 0.
    pub start: u64,
    pub duration: u64,
    pub timescale: u32,
    pub bytes: Bytes,
    pub samples: u32,
    pub starts_with_keyframe: bool,
}

impl TrackSegment {
    pub fn start_secs(&self) -> f64 {
        self.start as f64 / f64::from(self.timescale)
    }

    pub fn duration_secs(&self) -> f64 {
        self.duration as f64 / f64::from(self.timescale)
    }
}

#[derive(Debug, Clone)]
pub struct Segment {
    pub number: u64,
    /// Video first; audio absent only when the audio track stalled.
    pub tracks: Vec<TrackSegment>,
}

impl Segment {
    pub fn track(&self, kind: TrackKind) -> Option<&TrackSegment> {
        self.tracks.iter().find(|t| t.kind == kind)
    }
}

#[derive(Debug, Clone)]
pub enum SegmenterOutput {
    /// The tracks are fixed: one init segment per track. Emitted once, before any segment.
    Init(Vec<(TrackInfo, Vec<u8>)>),
    Segment(Segment),
}

#[derive(Debug, Clone)]
struct PendingVideo {
    dts: i64,
    pts: i64,
    keyframe: bool,
    data: Bytes,
}

#[derive(Debug, Clone)]
struct PendingAudio {
    /// In audio ticks.
    time: i64,
    data: Bytes,
}

/// Video part of a segment that is closed but waits for audio to pass its cut.
#[derive(Debug)]
struct ClosedSegment {
    number: u64,
    video: TrackSegment,
    /// The cut, in 90 kHz ticks (presentation time of the keyframe that closed it).
    cut_pts: i64,
}

#[derive(Debug)]
pub struct Segmenter {
    config: SegmenterConfig,
    video_config: Option<TrackInfo>,
    audio_config: Option<TrackInfo>,
    started: bool,
    /// Media time 0, in RTMP milliseconds.
    base_ms: i64,
    next_number: u64,
    open_video: Vec<PendingVideo>,
    last_video_dts: Option<i64>,
    last_video_duration: i64,
    audio_queue: VecDeque<PendingAudio>,
    next_audio_time: Option<i64>,
    /// Audio frames older than this (in audio ticks) belong to segments already emitted.
    audio_emitted_until: i64,
    waiting: VecDeque<ClosedSegment>,
}

impl Segmenter {
    pub fn new(config: SegmenterConfig) -> Self {
        Self {
            next_number: config.first_number,
            config,
            video_config: None,
            audio_config: None,
            started: false,
            base_ms: 0,
            open_video: Vec::new(),
            last_video_dts: None,
            last_video_duration: 0,
            audio_queue: VecDeque::new(),
            next_audio_time: None,
            audio_emitted_until: i64::MIN,
            waiting: VecDeque::new(),
        }
    }

    /// The number the next emitted segment will carry.
    pub fn next_number(&self) -> u64 {
        self.next_number
    }

    pub fn push(&mut self, event: StreamEvent) -> Result<Vec<SegmenterOutput>, SegmenterError> {
        match event {
            StreamEvent::Track(info) => self.on_track(info),
            StreamEvent::Frame(frame) => self.on_frame(frame),
            StreamEvent::End => self.finish(),
        }
    }

    fn on_track(&mut self, info: TrackInfo) -> Result<Vec<SegmenterOutput>, SegmenterError> {
        if self.started {
            let current = match info.kind {
                TrackKind::Video => &self.video_config,
                TrackKind::Audio => &self.audio_config,
            };
            match current {
                Some(current) if current.codec != info.codec => {
                    return Err(SegmenterError::ConfigChanged(
                        info.kind.as_str(),
                        describe_change(&current.codec, &info.codec),
                    ));
                }
                Some(_) => return Ok(Vec::new()),
                // An audio track announced after the start is not added to this broadcast.
                None => return Ok(Vec::new()),
            }
        }
        match info.kind {
            TrackKind::Video => self.video_config = Some(info),
            TrackKind::Audio => self.audio_config = Some(info),
        }
        Ok(Vec::new())
    }

    fn on_frame(&mut self, frame: MediaFrame) -> Result<Vec<SegmenterOutput>, SegmenterError> {
        let mut out = Vec::new();
        match frame.kind {
            TrackKind::Video => {
                if !self.started {
                    if !frame.keyframe || self.video_config.is_none() {
                        return Ok(out);
                    }
                    out.push(self.start(&frame)?);
                }
                self.on_video(frame)?;
            }
            TrackKind::Audio => {
                // after the start, an audio config exists only if it was part of the start
                if self.started && self.audio_config.is_some() {
                    self.on_audio(frame);
                }
            }
        }
        self.emit_ready(false, &mut out)?;
        Ok(out)
    }

    fn start(&mut self, keyframe: &MediaFrame) -> Result<SegmenterOutput, SegmenterError> {
        self.started = true;
        self.base_ms = keyframe.dts.rescale(Timestamp::MILLIS).ticks;
        let mut inits = Vec::new();
        for info in [&self.video_config, &self.audio_config]
            .into_iter()
            .flatten()
        {
            inits.push((info.clone(), cmaf::init_segment(&info.codec)?));
        }
        Ok(SegmenterOutput::Init(inits))
    }

    fn to_media_ticks(&self, ts: Timestamp, timescale: u32) -> i64 {
        let ms = ts.rescale(Timestamp::MILLIS).ticks - self.base_ms;
        Timestamp::from_millis(ms).rescale(timescale).ticks
    }

    fn on_video(&mut self, frame: MediaFrame) -> Result<(), SegmenterError> {
        let mut dts = self.to_media_ticks(frame.dts, VIDEO_TIMESCALE);
        let pts = self.to_media_ticks(frame.pts, VIDEO_TIMESCALE);
        if let Some(last) = self.last_video_dts {
            if dts <= last {
                dts = last + 1;
            }
        }
        if let Some(first) = self.open_video.first() {
            let elapsed = dts - first.dts;
            let target = (self.config.target_duration * f64::from(VIDEO_TIMESCALE)) as i64;
            if frame.keyframe && elapsed >= target {
                self.close_video(dts, pts)?;
            } else if elapsed as f64 > MAX_SEGMENT_SECS * f64::from(VIDEO_TIMESCALE) {
                return Err(SegmenterError::NoKeyframe(
                    elapsed as f64 / f64::from(VIDEO_TIMESCALE),
                ));
            }
        }
        if let Some(last) = self.last_video_dts {
            self.last_video_duration = dts - last;
        }
        self.last_video_dts = Some(dts);
        self.open_video.push(PendingVideo {
            dts,
            pts,
            keyframe: frame.keyframe,
            data: frame.data,
        });
        Ok(())
    }

    /// Closes the open video segment; `next_dts`/`cut_pts` are those of the frame that follows.
    fn close_video(&mut self, next_dts: i64, cut_pts: i64) -> Result<(), SegmenterError> {
        let frames = std::mem::take(&mut self.open_video);
        let Some(first) = frames.first() else {
            return Ok(());
        };
        let start = first.dts;
        let starts_with_keyframe = first.keyframe;
        let samples: Vec<Sample> = frames
            .iter()
            .enumerate()
            .map(|(i, f)| {
                let next = frames.get(i + 1).map_or(next_dts, |n| n.dts);
                Sample {
                    duration: clamp_u32(next - f.dts),
                    composition_offset: (f.pts - f.dts).clamp(i32::MIN as i64, i32::MAX as i64)
                        as i32,
                    sync: f.keyframe,
                    data: f.data.clone(),
                }
            })
            .collect();
        let duration: u64 = samples.iter().map(|s| u64::from(s.duration)).sum();
        let number = self.next_number;
        self.next_number += 1;
        let bytes =
            cmaf::media_segment(clamp_u32(number as i64), start.max(0) as u64, &samples)?.into();
        self.waiting.push_back(ClosedSegment {
            number,
            video: TrackSegment {
                kind: TrackKind::Video,
                start: start.max(0) as u64,
                duration,
                timescale: VIDEO_TIMESCALE,
                bytes,
                samples: samples.len() as u32,
                starts_with_keyframe,
            },
            cut_pts,
        });
        Ok(())
    }

    fn audio_timescale(&self) -> u32 {
        self.audio_config
            .as_ref()
            .map_or(48_000, |a| a.codec.timescale())
    }

    fn on_audio(&mut self, frame: MediaFrame) {
        let actual = self.to_media_ticks(frame.dts, self.audio_timescale());
        let time = match self.next_audio_time {
            Some(expected) if (actual - expected).abs() <= 2 * AAC_FRAME => expected,
            _ => actual,
        };
        if time < 0 || time < self.audio_emitted_until {
            return; // before media time 0, or late for a segment already emitted
        }
        self.next_audio_time = Some(time + AAC_FRAME);
        self.audio_queue.push_back(PendingAudio {
            time,
            data: frame.data,
        });
    }

    /// Emits closed segments whose audio is complete (or all of them when `flush`).
    fn emit_ready(
        &mut self,
        flush: bool,
        out: &mut Vec<SegmenterOutput>,
    ) -> Result<(), SegmenterError> {
        let has_audio = self.audio_config.is_some();
        let audio_scale = self.audio_timescale();
        while let Some(front) = self.waiting.front() {
            let cut = Timestamp::new(front.cut_pts, VIDEO_TIMESCALE)
                .rescale(audio_scale)
                .ticks;
            let audio_passed = self.audio_queue.back().is_some_and(|last| last.time >= cut);
            let give_up = self.waiting.len() > MAX_SEGMENTS_WAITING_FOR_AUDIO;
            if has_audio && !audio_passed && !give_up && !flush {
                break;
            }
            let Some(closed) = self.waiting.pop_front() else {
                break;
            };
            let mut tracks = vec![closed.video];
            if has_audio {
                tracks.extend(self.take_audio(closed.number, cut)?);
                self.audio_emitted_until = cut;
            }
            out.push(SegmenterOutput::Segment(Segment {
                number: closed.number,
                tracks,
            }));
        }
        Ok(())
    }

    /// Audio frames before `cut` as one fragment (`None` when there are none).
    fn take_audio(&mut self, number: u64, cut: i64) -> Result<Option<TrackSegment>, CmafError> {
        let mut samples = Vec::new();
        let mut start = None;
        while let Some(frame) = self.audio_queue.pop_front_if(|f| f.time < cut) {
            start.get_or_insert(frame.time);
            samples.push(Sample {
                duration: AAC_FRAME as u32,
                composition_offset: 0,
                sync: true,
                data: frame.data,
            });
        }
        let Some(start) = start else {
            return Ok(None);
        };
        let start = start.max(0) as u64;
        let bytes = cmaf::media_segment(clamp_u32(number as i64), start, &samples)?;
        Ok(Some(TrackSegment {
            kind: TrackKind::Audio,
            start,
            duration: samples.len() as u64 * AAC_FRAME as u64,
            timescale: self.audio_timescale(),
            bytes: bytes.into(),
            samples: samples.len() as u32,
            starts_with_keyframe: true,
        }))
    }

    /// End of stream: closes the open segment and emits everything still held.
    fn finish(&mut self) -> Result<Vec<SegmenterOutput>, SegmenterError> {
        let mut out = Vec::new();
        if !self.started {
            return Ok(out);
        }
        if let Some(last) = self.last_video_dts {
            let duration = self.last_video_duration.max(1);
            let end = last + duration;
            if !self.open_video.is_empty() {
                self.close_video(end, i64::MAX)?;
            }
        }
        // Everything left belongs to the last segment: the final cut is "infinitely late".
        self.emit_ready(true, &mut out)?;
        Ok(out)
    }
}

fn clamp_u32(v: i64) -> u32 {
    v.clamp(0, i64::from(u32::MAX)) as u32
}

fn describe_change(old: &CodecConfig, new: &CodecConfig) -> String {
    match (old, new) {
        (CodecConfig::Avc(a), CodecConfig::Avc(b)) => format!(
            "{}x{} {} → {}x{} {}",
            a.width,
            a.height,
            a.codec_string(),
            b.width,
            b.height,
            b.codec_string()
        ),
        (CodecConfig::Aac(a), CodecConfig::Aac(b)) => format!(
            "{} Hz {} ch → {} Hz {} ch",
            a.sample_rate, a.channels, b.sample_rate, b.channels
        ),
        _ => format!("{} → {}", old.codec_string(), new.codec_string()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ingest::flv::FlvDemuxer;
    use crate::media::codec_test_data::AVC_RECORD_320X240;
    use crate::media::{AacConfig, AvcConfig};
    use mp4_atom::{Any, Decode, Moof};

    const FPS_MS: i64 = 40; // 25 fps keeps frame times whole milliseconds

    fn video_track() -> StreamEvent {
        StreamEvent::Track(TrackInfo {
            kind: TrackKind::Video,
            codec: CodecConfig::Avc(
                AvcConfig::parse(Bytes::from_static(AVC_RECORD_320X240)).unwrap(),
            ),
        })
    }

    fn audio_track() -> StreamEvent {
        StreamEvent::Track(TrackInfo {
            kind: TrackKind::Audio,
            codec: CodecConfig::Aac(AacConfig::parse(Bytes::from_static(&[0x11, 0x90])).unwrap()),
        })
    }

    fn video(dts: i64, pts: i64, key: bool) -> StreamEvent {
        StreamEvent::Frame(MediaFrame {
            kind: TrackKind::Video,
            dts: Timestamp::from_millis(dts),
            pts: Timestamp::from_millis(pts),
            keyframe: key,
            data: Bytes::from_static(&[0, 0, 0, 1, 0x65]),
        })
    }

    fn audio(ms: i64) -> StreamEvent {
        StreamEvent::Frame(MediaFrame {
            kind: TrackKind::Audio,
            dts: Timestamp::from_millis(ms),
            pts: Timestamp::from_millis(ms),
            keyframe: true,
            data: Bytes::from_static(&[0x21, 0x10]),
        })
    }

    fn segmenter() -> Segmenter {
        Segmenter::new(SegmenterConfig {
            target_duration: 2.0,
            first_number: 100,
        })
    }

    /// Interleaves 25 fps video (GOP of `gop` frames, IPBB-style B-frame reordering) with
    /// 48 kHz AAC, both starting at `start_ms`, for `seconds`.
    fn publish(seg: &mut Segmenter, start_ms: i64, seconds: i64, gop: i64) -> Vec<SegmenterOutput> {
        let mut out = Vec::new();
        out.extend(seg.push(video_track()).unwrap());
        out.extend(seg.push(audio_track()).unwrap());
        let frames = seconds * 1000 / FPS_MS;
        let mut next_audio = start_ms as f64;
        for i in 0..frames {
            let dts = start_ms + i * FPS_MS;
            // decode order I P B B: P is shown after the two Bs
            let pos = i % gop;
            let pts = match pos {
                0 => dts + FPS_MS,
                p if p % 3 == 1 => dts + 3 * FPS_MS,
                _ => dts,
            };
            while next_audio <= dts as f64 {
                out.extend(seg.push(audio(next_audio.round() as i64)).unwrap());
                next_audio += 1024.0 / 48.0;
            }
            out.extend(seg.push(video(dts, pts, pos == 0)).unwrap());
        }
        out.extend(seg.push(StreamEvent::End).unwrap());
        out
    }

    fn segments(out: &[SegmenterOutput]) -> Vec<&Segment> {
        out.iter()
            .filter_map(|o| match o {
                SegmenterOutput::Segment(s) => Some(s),
                _ => None,
            })
            .collect()
    }

    fn first_sample_flags_and_cts(bytes: &[u8]) -> (u32, Vec<i64>) {
        let mut cur = std::io::Cursor::new(bytes);
        assert!(matches!(Any::decode(&mut cur).unwrap(), Any::Styp(_)));
        let moof = Moof::decode(&mut cur).unwrap();
        let entries: Vec<_> = moof.traf[0].trun[0].samples.iter().collect();
        (
            entries[0].flags.unwrap(),
            entries.iter().map(|e| e.cts.unwrap()).collect(),
        )
    }

    #[test]
    fn b_frame_stream_cuts_on_keyframes_with_signed_offsets() {
        let mut seg = segmenter();
        let out = publish(&mut seg, 1_000, 12, 50); // keyframe every 2 s
        assert!(matches!(out[0], SegmenterOutput::Init(ref t) if t.len() == 2));
        let segs = segments(&out);
        assert_eq!(segs.len(), 6);
        let mut expected_start = 0;
        for (i, s) in segs.iter().enumerate() {
            assert_eq!(s.number, 100 + i as u64);
            let v = s.track(TrackKind::Video).unwrap();
            assert!(v.starts_with_keyframe);
            assert_eq!(v.start, expected_start, "segment {i} video start");
            assert_eq!(v.duration, 180_000, "segment {i} is 2 s");
            expected_start += v.duration;
            let (flags, cts) = first_sample_flags_and_cts(&v.bytes);
            assert_eq!(flags, 0x0200_0000, "first sample is a sync sample");
            assert!(cts.iter().any(|c| *c > 0));
        }
        // video adds up to exactly 12 s
        let total: u64 = segs
            .iter()
            .map(|s| s.track(TrackKind::Video).unwrap().duration)
            .sum();
        assert_eq!(total, 12 * 90_000);
    }

    #[test]
    fn audio_is_cut_at_the_same_times_as_video() {
        let mut seg = segmenter();
        let out = publish(&mut seg, 0, 12, 50);
        let segs = segments(&out);
        let mut audio_total = 0;
        for s in &segs {
            let v = s.track(TrackKind::Video).unwrap();
            let a = s.track(TrackKind::Audio).expect("every segment has audio");
            let frame = 1024.0 / 48_000.0;
            assert!(
                (a.start_secs() - v.start_secs()).abs() <= frame + 0.041,
                "segment {} audio starts at {} but video at {}",
                s.number,
                a.start_secs(),
                v.start_secs()
            );
            audio_total += a.duration;
        }
        let audio_secs = audio_total as f64 / 48_000.0;
        assert!(
            (audio_secs - 12.0).abs() < 0.1,
            "audio adds up to {audio_secs}"
        );
        // audio segments are contiguous
        for w in segs.windows(2) {
            let a0 = w[0].track(TrackKind::Audio).unwrap();
            let a1 = w[1].track(TrackKind::Audio).unwrap();
            assert_eq!(a0.start + a0.duration, a1.start);
        }
    }

    #[test]
    fn audio_before_the_first_keyframe_is_dropped() {
        let mut seg = segmenter();
        seg.push(video_track()).unwrap();
        seg.push(audio_track()).unwrap();
        for ms in (0..500).step_by(21) {
            assert!(seg.push(audio(ms)).unwrap().is_empty());
        }
        // a non-key frame before the first keyframe is dropped too
        assert!(seg.push(video(480, 480, false)).unwrap().is_empty());
        let out = seg.push(video(520, 520, true)).unwrap();
        assert!(matches!(out[0], SegmenterOutput::Init(_)));
        for i in 1..60 {
            seg.push(audio(520 + i * 21)).unwrap();
            seg.push(video(520 + i * 40, 520 + i * 40, i == 50))
                .unwrap();
        }
        let out = seg.push(StreamEvent::End).unwrap();
        let segs = segments(&out);
        let first = segs[0];
        let a = first.track(TrackKind::Audio).unwrap();
        assert_eq!(first.track(TrackKind::Video).unwrap().start, 0);
        // the first audio frame kept is the one at 541 ms, i.e. 21 ms after media time 0
        assert_eq!(a.start, 21 * 48);
    }

    #[test]
    fn flv_timestamps_across_the_32_bit_wrap_keep_segments_contiguous() {
        let mut demux = FlvDemuxer::new();
        let mut seg = segmenter();
        let mut header = vec![0x17, 0x00, 0, 0, 0];
        header.extend_from_slice(AVC_RECORD_320X240);
        let mut outs = Vec::new();
        if let Some(ev) = demux.video(Bytes::from(header), 0).unwrap() {
            outs.extend(seg.push(ev).unwrap());
        }
        let start = u32::MAX - 3_000; // the RTMP clock wraps 3 s in
        for i in 0..250u32 {
            let ts = start.wrapping_add(i * 40);
            let first = if i % 50 == 0 { 0x17 } else { 0x27 };
            let tag = Bytes::from(vec![first, 1, 0, 0, 0, 0, 0, 0, 1, 0x65]);
            if let Some(ev) = demux.video(tag, ts).unwrap() {
                outs.extend(seg.push(ev).unwrap());
            }
        }
        outs.extend(seg.push(StreamEvent::End).unwrap());
        let segs = segments(&outs);
        assert_eq!(segs.len(), 5);
        for w in segs.windows(2) {
            let v0 = w[0].track(TrackKind::Video).unwrap();
            let v1 = w[1].track(TrackKind::Video).unwrap();
            assert_eq!(v0.start + v0.duration, v1.start);
            assert_eq!(v0.duration, 180_000);
        }
    }

    #[test]
    fn a_codec_change_after_the_start_is_an_error() {
        let mut seg = segmenter();
        seg.push(video_track()).unwrap();
        seg.push(video(0, 0, true)).unwrap();
        let mut changed = AvcConfig::parse(Bytes::from_static(AVC_RECORD_320X240)).unwrap();
        changed.width = 640;
        let err = seg
            .push(StreamEvent::Track(TrackInfo {
                kind: TrackKind::Video,
                codec: CodecConfig::Avc(changed),
            }))
            .unwrap_err();
        assert!(err.to_string().contains("320x240"), "{err}");
    }

    #[test]
    fn a_stream_without_keyframes_is_stopped_before_memory_grows() {
        let mut seg = segmenter();
        seg.push(video_track()).unwrap();
        seg.push(video(0, 0, true)).unwrap();
        let mut result = Ok(Vec::new());
        for i in 1..1000 {
            result = seg.push(video(i * 40, i * 40, false));
            if result.is_err() {
                break;
            }
        }
        assert!(matches!(result, Err(SegmenterError::NoKeyframe(_))));
    }

    #[test]
    fn video_only_streams_emit_without_waiting_for_audio() {
        let mut seg = segmenter();
        seg.push(video_track()).unwrap();
        let mut segs = 0;
        for i in 0..110 {
            for o in seg.push(video(i * 40, i * 40, i % 50 == 0)).unwrap() {
                if let SegmenterOutput::Segment(s) = o {
                    assert_eq!(s.tracks.len(), 1);
                    segs += 1;
                }
            }
        }
        assert_eq!(
            segs, 2,
            "two segments are emitted live, without waiting for the end"
        );
    }
}
