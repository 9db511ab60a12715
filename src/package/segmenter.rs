//! The segmenter: `RenditionEvent`s in, CMAF init segments, parts and media segments out.
//! Sans-IO and clock-free.
//!
//! Rules it keeps:
//! - The track set is fixed at the first video keyframe: the video renditions are those whose
//!   configuration was announced by then; audio is included if its config arrived
//!   before that keyframe (ffmpeg and OBS send both first). Video frames before a rendition's
//!   first keyframe are dropped: a segment must start with a keyframe. Audio that arrives
//!   before the first keyframe (a video encoder's delay: a ladder's audio comes out first) is
//!   held, bounded (`EarlyAudio`), and what is presented from the keyframe on goes into the
//!   first segment, so it lasts as long in audio as in video.
//! - Media time 0 is the presentation time of the first keyframe. At every segment start a video
//!   rendition's decode times are shifted by that keyframe's decode delay (PTS − DTS), so each
//!   segment's first decode time equals its presentation time and B-frames show up as signed
//!   composition offsets (CMAF's `trun` v1), without an edit list. Renditions whose keyframes
//!   share presentation times therefore cut at identical media times, whatever their B-frame
//!   delay, even when an encoder's delay changes mid-stream.
//! - Where a segment is cut (`CutRule`): passthrough cuts at the first keyframe at least the
//!   target duration after the segment start; a transcoded ladder marks exactly the frames that
//!   start a segment as keyframes (the same presentation times in every rendition) and the
//!   segmenter cuts at each of them.
//! - Segment `n` is emitted once every video rendition has closed its `n`-th segment and audio
//!   has passed the cut (audio is cut at the same presentation time). Audio may lag video in
//!   the RTMP interleave; if it is more than two segments late, the segment is emitted with the
//!   audio that exists. A rendition more than `MAX_SEGMENTS_AHEAD` segments ahead of another is
//!   an error (the other one stalled), so memory stays bounded.
//! - Parts (LL-HLS partial segments, LL-DASH chunks): every track's segment is cut into CMAF
//!   chunks of at most `part_duration`, each emitted (`SegmenterOutput::Part`) as soon as its
//!   samples are known, and the segment is exactly its parts back to back (the first carries
//!   the `styp`). A video part ends before the frame that would make it longer than the target
//!   (that frame's duration is guessed from the last one, with `PART_JITTER` of slack for RTMP's
//!   millisecond rounding), so a part outlasts the target only when one frame does. An audio
//!   part holds as many whole AAC frames as fit, and is emitted once every video rendition has
//!   been presented past its end (a later video cut is presented after everything before it in
//!   decode order) or audio has passed the cut that ends its segment: audio parts never cross
//!   a segment boundary. A part is independent when its first sample is a sync sample.
//! - Video uses a 90 kHz timescale; audio uses its sample rate and counts 1024 samples per AAC
//!   frame, re-anchoring to the source clock only when it drifts by more than two frames.
//! - Decode times are kept strictly increasing (a broken encoder's repeated DTS is nudged by one
//!   tick) so the fragments stay valid.
//! - A segment that would grow past `MAX_SEGMENT_SECS` without a keyframe, or a codec change
//!   after the start, is an error: the caller ends the broadcast with that message.
//! - A pause (the publisher was lost and may come back) closes every open segment at once, so
//!   viewers and the recording get every frame up to the loss. What follows resumes the same
//!   timeline exactly where the paused segments ended: the first video keyframe after the pause
//!   is placed there (earlier video is dropped; audio waits for it like before the first
//!   keyframe), so segments stay contiguous, with no gap and no overlap, however the
//!   publisher's clock moved meanwhile.
//! - Memory is bounded in bytes and not only by the publisher's timestamps: the media held
//!   (open segments, closed segments waiting for other renditions or audio, queued audio) may
//!   not pass the byte budget (`with_budget`, default `DEFAULT_MAX_HELD_BYTES`); more than
//!   `MAX_FROZEN_FRAMES` video frames in a row whose decode time does not advance (a frozen or
//!   backward clock, which would otherwise pile frames into one segment that never reaches its
//!   duration), or audio running `MAX_AUDIO_WITHOUT_VIDEO_SECS` ahead of video, are errors too.

use std::collections::VecDeque;

use bytes::Bytes;

use crate::media::{
    CodecConfig, EarlyAudio, MediaFrame, RenditionEvent, Timestamp, TrackId, TrackInfo, TrackKind,
};
use crate::package::cmaf::{self, CmafError, Sample};

/// A segment longer than this without a keyframe ends the broadcast (memory bound, and the
/// player experience would be broken anyway).
pub const MAX_SEGMENT_SECS: f64 = 20.0;
/// How many closed segments may wait for late audio before they are emitted regardless.
const MAX_SEGMENTS_WAITING_FOR_AUDIO: usize = 2;
/// Video renditions one broadcast may announce.
const MAX_VIDEO_RENDITIONS: usize = 16;
/// How many closed segments one video rendition may hold while another has none.
const MAX_SEGMENTS_AHEAD: usize = 4;
/// Bytes of media one broadcast's segmenter may hold unless told otherwise.
pub const DEFAULT_MAX_HELD_BYTES: usize = 100 << 20;
/// Consecutive video frames whose decode time does not advance before the stream is refused.
pub const MAX_FROZEN_FRAMES: u32 = 120;
/// How far queued audio may run ahead of the video that cuts its segments.
pub const MAX_AUDIO_WITHOUT_VIDEO_SECS: f64 = 2.0 * MAX_SEGMENT_SECS;
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
        "the {0} configuration changed mid-stream ({1}); an untouched source rendition cannot \
         switch codec parameters inside one broadcast — reconnect the encoder to start a new one"
    )]
    ConfigChanged(&'static str, String),
    #[error(
        "the broadcast holds more than {limit} bytes of media that cannot be published yet \
         (segments without a keyframe, or timestamps that do not advance); lower the bitrate or \
         set the keyframe interval to the segment duration"
    )]
    OverBudget { limit: usize },
    #[error(
        "video timestamps stopped advancing ({0} frames in a row at or before the previous \
         one); the encoder's clock is broken or was reset — restart the stream"
    )]
    FrozenTimestamps(u32),
    #[error(
        "audio went on for {0:.0} s without video; the encoder stopped sending video — check \
         the video source"
    )]
    AudioWithoutVideo(f64),
    /// The codec can be decoded (a transcoding ladder) but not packaged as it is.
    #[error("{0}")]
    Unpackageable(String),
    #[error("rendition {0} stopped producing frames while the others went on")]
    RenditionStalled(String),
    #[error("video rendition {0} was not announced before the start (limit {1})")]
    UnknownRendition(usize, usize),
    #[error(transparent)]
    Cmaf(#[from] CmafError),
}

/// Where video segments are cut.
/// How far short of the target duration a keyframe may fall and still end a segment (10 ms in
/// 90 kHz ticks: less than a frame at 100 fps).
const CUT_TOLERANCE: i64 = 900;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CutRule {
    /// At the first keyframe at least the target duration after the segment start
    /// (passthrough: the encoder chose its keyframes).
    AfterTarget,
    /// At every frame marked `segment_start` (the ladder: the transcoder marks the IDRs it
    /// aligned across rungs; other sync samples do not cut).
    AtMarks,
}

impl CutRule {
    /// Whether `frame` may start a segment under this rule.
    fn starts_segment(self, frame: &MediaFrame) -> bool {
        match self {
            CutRule::AfterTarget => frame.sync,
            CutRule::AtMarks => frame.sync && frame.segment_start,
        }
    }
}

#[derive(Debug, Clone)]
pub struct SegmenterConfig {
    /// Target segment duration in seconds.
    pub target_duration: f64,
    /// Number given to the first segment (numbers never repeat for one stream).
    pub first_number: u64,
    pub cut: CutRule,
    /// Target part duration in seconds (LL-HLS `PART-TARGET`): no part lasts longer.
    pub part_duration: f64,
}

/// One track's part of a segment.
#[derive(Debug, Clone)]
pub struct TrackSegment {
    pub id: TrackId,
    /// Presentation time of the first sample (video: the keyframe; it is also the `tfdt` decode
    /// time unless the encoder's decode delay grew mid-stream), in `timescale` ticks since the
    /// broadcast's media time 0. Segment `n + 1` starts at `start + duration` of segment `n`.
    pub start: u64,
    pub duration: u64,
    pub timescale: u32,
    pub bytes: Bytes,
    pub samples: u32,
    pub starts_with_keyframe: bool,
    /// Its parts in order: `bytes` is their chunks back to back.
    pub parts: Vec<PartInfo>,
}

/// What a manifest says of one part.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PartInfo {
    /// In the track's timescale.
    pub duration: u64,
    /// Starts with a sync sample (LL-HLS `INDEPENDENT=YES`).
    pub independent: bool,
}

/// One CMAF chunk of a segment, emitted as soon as its samples are complete (a low-latency
/// part). A track's parts come in order, all before the `Segment` that holds them; parts of the
/// next segment may come before that `Segment` (it waits for the other tracks).
#[derive(Debug, Clone)]
pub struct Part {
    pub id: TrackId,
    /// The number of the segment it belongs to, and its index there (0 first).
    pub segment: u64,
    pub index: u32,
    /// Decode time of its first sample, in `timescale` ticks of media time.
    pub start: u64,
    pub timescale: u32,
    pub info: PartInfo,
    pub samples: u32,
    pub bytes: Bytes,
    /// The last part of its segment, known as it is emitted (the next frame starts the next
    /// segment); a part that only later turns out to be the last says false.
    pub ends_segment: bool,
}

impl TrackSegment {
    pub fn kind(&self) -> TrackKind {
        self.id.kind()
    }

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
    /// Video renditions in order, then audio (absent only when the audio track stalled).
    pub tracks: Vec<TrackSegment>,
}

impl Segment {
    pub fn track(&self, id: TrackId) -> Option<&TrackSegment> {
        self.tracks.iter().find(|t| t.id == id)
    }
}

/// One rendition's init segment.
#[derive(Debug, Clone)]
pub struct InitSegment {
    pub id: TrackId,
    pub name: String,
    pub info: TrackInfo,
    pub bytes: Vec<u8>,
}

#[derive(Debug, Clone)]
pub enum SegmenterOutput {
    /// The tracks are fixed: one init segment per track. Emitted once, before any segment.
    Init(Vec<InitSegment>),
    Part(Part),
    Segment(Segment),
}

#[derive(Debug, Clone)]
struct PendingVideo {
    dts: i64,
    pts: i64,
    sync: bool,
    data: Bytes,
}

#[derive(Debug, Clone)]
struct PendingAudio {
    /// In audio ticks.
    time: i64,
    data: Bytes,
}

/// The parts of one track's open segment.
#[derive(Debug, Default)]
struct OpenSegment {
    chunks: Vec<Bytes>,
    parts: Vec<PartInfo>,
    samples: u32,
    bytes: usize,
    /// Of the first sample: presentation time (90 kHz for video, audio ticks for audio) and
    /// decode time.
    first_pts: i64,
    first_dts: i64,
    /// mfhd sequence number of the next chunk.
    sequence: u32,
}

impl OpenSegment {
    /// Packages `samples` (decode start `start`) as the next part of segment `number`.
    fn add_part(
        &mut self,
        id: TrackId,
        number: u64,
        (start, first_pts): (i64, i64),
        timescale: u32,
        samples: &[Sample],
    ) -> Result<Part, CmafError> {
        let index = self.parts.len() as u32;
        if index == 0 {
            self.first_pts = first_pts;
            self.first_dts = start;
        }
        self.sequence = self.sequence.wrapping_add(1);
        let bytes: Bytes =
            cmaf::chunk(self.sequence, start.max(0) as u64, samples, index == 0)?.into();
        let info = PartInfo {
            duration: samples.iter().map(|s| u64::from(s.duration)).sum(),
            independent: samples.first().is_some_and(|s| s.sync),
        };
        self.chunks.push(bytes.clone());
        self.parts.push(info);
        self.samples += samples.len() as u32;
        self.bytes += bytes.len();
        Ok(Part {
            id,
            segment: number,
            index,
            start: start.max(0) as u64,
            timescale,
            info,
            samples: samples.len() as u32,
            bytes,
            ends_segment: false,
        })
    }

    /// The segment its parts make (`None` without parts): `duration` by presentation time.
    fn close(
        &mut self,
        id: TrackId,
        timescale: u32,
        duration: Option<u64>,
    ) -> Option<TrackSegment> {
        if self.parts.is_empty() {
            return None;
        }
        let sequence = self.sequence;
        let open = std::mem::take(self);
        self.sequence = sequence;
        let mut bytes = Vec::with_capacity(open.bytes);
        for chunk in &open.chunks {
            bytes.extend_from_slice(chunk);
        }
        let decode_span = open.parts.iter().map(|p| p.duration).sum();
        Some(TrackSegment {
            id,
            start: open.first_pts.max(0) as u64,
            duration: duration.unwrap_or(decode_span),
            timescale,
            bytes: bytes.into(),
            samples: open.samples,
            starts_with_keyframe: open.parts[0].independent,
            parts: open.parts,
        })
    }
}

/// How far audio may be cut into parts: to a video cut, or to the video presented so far (a
/// later cut is presented after all of it).
#[derive(Debug, Clone, Copy)]
enum AudioBound {
    Cut(i64),
    Frontier(i64),
}

/// A video segment that is closed but waits for the other renditions and for audio.
#[derive(Debug)]
struct ClosedVideo {
    segment: TrackSegment,
    number: u64,
    /// The cut, in 90 kHz ticks (presentation time of the keyframe that closed it).
    cut_pts: i64,
}

/// One video rendition's state.
#[derive(Debug, Default)]
struct VideoTrack {
    name: String,
    info: Option<TrackInfo>,
    /// Added to source decode times: makes the current segment's first decode time equal its
    /// keyframe's presentation time (90 kHz); `None` until the first keyframe arrived.
    dts_offset: Option<i64>,
    /// Frames of the open part.
    open: Vec<PendingVideo>,
    /// The open segment's closed parts.
    segment: OpenSegment,
    /// Parts closed and not yet handed out.
    ready_parts: Vec<Part>,
    /// The highest presentation time (90 kHz) since the last cut; `None` before the first.
    frontier: Option<i64>,
    /// Bytes of the open frames, parts and closed segments this rendition holds.
    held: usize,
    /// Consecutive frames whose decode time did not advance.
    frozen: u32,
    last_dts: Option<i64>,
    last_duration: i64,
    closed: VecDeque<ClosedVideo>,
    next_number: u64,
}

#[derive(Debug)]
pub struct Segmenter {
    config: SegmenterConfig,
    videos: Vec<VideoTrack>,
    audio_name: String,
    audio_config: Option<TrackInfo>,
    started: bool,
    /// Media time 0: the first keyframe's presentation time, on the source's clock.
    base: Timestamp,
    next_number: u64,
    audio_queue: VecDeque<PendingAudio>,
    /// The open audio segment's closed parts.
    audio_segment: OpenSegment,
    /// Bytes of `audio_queue` and `audio_segment`.
    audio_held: usize,
    max_held: usize,
    next_audio_time: Option<i64>,
    /// Audio frames older than this (in audio ticks) belong to segments already emitted.
    audio_emitted_until: i64,
    /// After a pause: where (90 kHz media ticks) the next video keyframe is placed.
    resume_at: Option<i64>,
    /// Audio that came before the first keyframe (a video encoder's delay), replayed at the
    /// start from the keyframe's presentation time on.
    early_audio: EarlyAudio,
}

impl Segmenter {
    pub fn new(config: SegmenterConfig) -> Self {
        Self {
            next_number: config.first_number,
            config,
            videos: Vec::new(),
            audio_name: String::new(),
            audio_config: None,
            started: false,
            base: Timestamp::new(0, VIDEO_TIMESCALE),
            audio_queue: VecDeque::new(),
            audio_segment: OpenSegment::default(),
            audio_held: 0,
            max_held: DEFAULT_MAX_HELD_BYTES,
            next_audio_time: None,
            audio_emitted_until: i64::MIN,
            resume_at: None,
            early_audio: EarlyAudio::default(),
        }
    }

    /// Limits the media held (see the module doc) to `max_held` bytes.
    pub fn with_budget(mut self, max_held: usize) -> Self {
        self.max_held = max_held;
        self
    }

    /// Bytes of media held now.
    pub fn held_bytes(&self) -> usize {
        self.videos.iter().map(|v| v.held).sum::<usize>()
            + self.audio_held
            + self.early_audio.bytes()
    }

    /// The number the next emitted segment will carry.
    pub fn next_number(&self) -> u64 {
        self.next_number
    }

    pub fn push(&mut self, event: RenditionEvent) -> Result<Vec<SegmenterOutput>, SegmenterError> {
        match event {
            RenditionEvent::Track { id, name, info } => self.on_track(id, name, info),
            RenditionEvent::Frame { id, frame } => self.on_frame(id, frame),
            // posters are not media: the pipeline stores them without packaging
            RenditionEvent::Poster(_) => Ok(Vec::new()),
            RenditionEvent::Pause => self.pause(),
            RenditionEvent::End => self.finish(),
        }
    }

    fn video_mut(&mut self, index: usize) -> Result<&mut VideoTrack, SegmenterError> {
        let count = self.videos.len();
        self.videos
            .get_mut(index)
            .ok_or(SegmenterError::UnknownRendition(index, count))
    }

    fn on_track(
        &mut self,
        id: TrackId,
        name: String,
        info: TrackInfo,
    ) -> Result<Vec<SegmenterOutput>, SegmenterError> {
        if let Some(reason) = info.codec.packaging_refusal() {
            return Err(SegmenterError::Unpackageable(reason));
        }
        let started = self.started;
        let slot = match id {
            TrackId::Video(index) => {
                if !started && index >= self.videos.len() {
                    if index >= MAX_VIDEO_RENDITIONS {
                        return Err(SegmenterError::UnknownRendition(
                            index,
                            MAX_VIDEO_RENDITIONS,
                        ));
                    }
                    let first_number = self.config.first_number;
                    self.videos.resize_with(index + 1, || VideoTrack {
                        next_number: first_number,
                        ..Default::default()
                    });
                }
                let track = self.video_mut(index)?;
                if !started {
                    track.name = name;
                }
                &mut track.info
            }
            TrackId::Audio => {
                if !started {
                    self.audio_name = name;
                }
                &mut self.audio_config
            }
        };
        if started {
            match slot {
                Some(current) if !current.codec.same_stream(&info.codec) => {
                    return Err(SegmenterError::ConfigChanged(
                        info.kind.as_str(),
                        describe_change(&current.codec, &info.codec),
                    ));
                }
                // Unchanged, or an audio track announced after the start: not added.
                _ => return Ok(Vec::new()),
            }
        }
        *slot = Some(info);
        Ok(Vec::new())
    }

    fn on_frame(
        &mut self,
        id: TrackId,
        frame: MediaFrame,
    ) -> Result<Vec<SegmenterOutput>, SegmenterError> {
        let mut out = Vec::new();
        if let Some(resume_at) = self.resume_at {
            // after a pause, everything waits for a video keyframe; audio is held for it (a
            // ladder's new encoders send their first video after the audio of that moment)
            if id == TrackId::Audio {
                self.hold_early_audio(frame);
                return Ok(out);
            }
            if !self.config.cut.starts_segment(&frame) {
                return Ok(out);
            }
            // media time 0 moves so that this keyframe lands at `resume_at`
            let resume = Timestamp::new(resume_at, VIDEO_TIMESCALE).rescale(frame.pts.timescale);
            self.base = Timestamp::new(frame.pts.ticks - resume.ticks, frame.pts.timescale);
            self.resume_at = None;
            self.replay_early_audio(frame.pts)?;
        }
        match id {
            TrackId::Video(index) => {
                if !self.started {
                    let all_configured = self.videos.iter().all(|v| v.info.is_some());
                    let starts = self.config.cut.starts_segment(&frame);
                    if !starts || !all_configured || index >= self.videos.len() {
                        return Ok(out);
                    }
                    out.push(self.start(&frame)?);
                    self.replay_early_audio(frame.pts)?;
                }
                self.on_video(index, frame)?;
            }
            TrackId::Audio => {
                // after the start, an audio config exists only if it was part of the start
                if self.started && self.audio_config.is_some() {
                    self.on_audio(frame)?;
                } else if !self.started {
                    self.hold_early_audio(frame);
                }
            }
        }
        self.emit_ready(false, &mut out)?;
        if self.held_bytes() > self.max_held {
            return Err(SegmenterError::OverBudget {
                limit: self.max_held,
            });
        }
        Ok(out)
    }

    /// Holds audio until the next keyframe (only audio of an announced track can be used).
    fn hold_early_audio(&mut self, frame: MediaFrame) {
        if self.audio_config.is_some() {
            self.early_audio.push(frame);
        }
    }

    /// At a (first or resumed) keyframe presented at `from`: the held audio from then on
    /// joins the timeline; the rest is dropped.
    fn replay_early_audio(&mut self, from: Timestamp) -> Result<(), SegmenterError> {
        for early in self.early_audio.take_from(from) {
            self.on_audio(early)?;
        }
        Ok(())
    }

    fn start(&mut self, keyframe: &MediaFrame) -> Result<SegmenterOutput, SegmenterError> {
        self.started = true;
        self.base = keyframe.pts;
        let mut inits = Vec::new();
        for (index, video) in self.videos.iter().enumerate() {
            if let Some(info) = &video.info {
                inits.push(InitSegment {
                    id: TrackId::Video(index),
                    name: video.name.clone(),
                    info: info.clone(),
                    bytes: cmaf::init_segment(&info.codec)?,
                });
            }
        }
        if let Some(info) = &self.audio_config {
            inits.push(InitSegment {
                id: TrackId::Audio,
                name: self.audio_name.clone(),
                info: info.clone(),
                bytes: cmaf::init_segment(&info.codec)?,
            });
        }
        Ok(SegmenterOutput::Init(inits))
    }

    /// `ts` on the broadcast's media timeline, in `timescale` ticks: exact when `ts` and the
    /// base share a clock (the source's), rounded once to the nearest tick otherwise.
    fn to_media_ticks(&self, ts: Timestamp, timescale: u32) -> i64 {
        ts.since(self.base, timescale)
    }

    fn on_video(&mut self, index: usize, frame: MediaFrame) -> Result<(), SegmenterError> {
        let raw_dts = self.to_media_ticks(frame.dts, VIDEO_TIMESCALE);
        let pts = self.to_media_ticks(frame.pts, VIDEO_TIMESCALE);
        let target = (self.config.target_duration * f64::from(VIDEO_TIMESCALE)) as i64;
        let part_ticks = (self.config.part_duration * f64::from(VIDEO_TIMESCALE)) as i64;
        let cut_rule = self.config.cut;
        let may_cut = cut_rule.starts_segment(&frame);
        let track = self.video_mut(index)?;
        let offset = match track.dts_offset {
            Some(offset) => offset,
            // a rendition starts at its first keyframe at or after media time 0
            None if may_cut && pts >= 0 => pts - raw_dts,
            None => return Ok(()),
        };
        let monotonic = |dts: i64, last: Option<i64>| last.map_or(dts, |l| dts.max(l + 1));
        let mut dts = monotonic(raw_dts + offset, track.last_dts);
        if track.last_dts.is_some_and(|last| raw_dts + offset <= last) {
            track.frozen += 1;
            if track.frozen > MAX_FROZEN_FRAMES {
                return Err(SegmenterError::FrozenTimestamps(track.frozen));
            }
        } else {
            track.frozen = 0;
        }
        let cut = match track.segment_start() {
            Some((first_dts, first_pts)) => {
                let elapsed = dts - first_dts;
                // measured in presentation time: an open-GOP keyframe (HEVC CRA, x264
                // --open-gop) decodes several frames before it is shown, so its decode time
                // falls short of the target while its presentation time is on it; and a
                // keyframe a millisecond short of it (RTMP rounds every timestamp to ms) is
                // the one the encoder meant
                let cut = may_cut
                    && match cut_rule {
                        CutRule::AfterTarget => pts - first_pts >= target - CUT_TOLERANCE,
                        CutRule::AtMarks => true,
                    };
                if !cut && elapsed as f64 > MAX_SEGMENT_SECS * f64::from(VIDEO_TIMESCALE) {
                    return Err(SegmenterError::NoKeyframe(
                        elapsed as f64 / f64::from(VIDEO_TIMESCALE),
                    ));
                }
                cut
            }
            None => true,
        };
        if cut {
            // Each segment's first decode time is its keyframe's presentation time, however
            // the encoder's decode delay moved (x264's DTS shifts when frames are skipped).
            track.dts_offset = Some(pts - raw_dts);
            dts = monotonic(pts, track.last_dts);
            track.close(TrackId::Video(index), dts, pts)?;
            track.frontier = None;
        } else if track.part_is_full(dts, part_ticks) {
            track.close_part(TrackId::Video(index), dts)?;
        }
        track.frontier = Some(track.frontier.map_or(pts, |f| f.max(pts)));
        if let Some(last) = track.last_dts {
            track.last_duration = dts - last;
        }
        track.last_dts = Some(dts);
        track.held += frame.data.len();
        track.open.push(PendingVideo {
            dts,
            pts,
            sync: frame.sync,
            data: frame.data,
        });
        Ok(())
    }

    fn audio_timescale(&self) -> u32 {
        self.audio_config
            .as_ref()
            .map_or(48_000, |a| a.codec.timescale())
    }

    fn on_audio(&mut self, frame: MediaFrame) -> Result<(), SegmenterError> {
        let scale = self.audio_timescale();
        let actual = self.to_media_ticks(frame.dts, scale);
        let time = match self.next_audio_time {
            Some(expected) if (actual - expected).abs() <= 2 * AAC_FRAME => expected,
            _ => actual,
        };
        if time < 0 || time < self.audio_emitted_until {
            return Ok(()); // before media time 0, or late for a segment already emitted
        }
        if let Some(oldest) = self.audio_queue.front() {
            let ahead = (time - oldest.time) as f64 / f64::from(scale);
            if ahead > MAX_AUDIO_WITHOUT_VIDEO_SECS {
                return Err(SegmenterError::AudioWithoutVideo(ahead));
            }
        }
        self.next_audio_time = Some(time + AAC_FRAME);
        self.audio_held += frame.data.len();
        self.audio_queue.push_back(PendingAudio {
            time,
            data: frame.data,
        });
        Ok(())
    }

    /// Emits segments every rendition has closed and whose audio is complete (or, when
    /// `flush`, everything closed).
    fn emit_ready(
        &mut self,
        flush: bool,
        out: &mut Vec<SegmenterOutput>,
    ) -> Result<(), SegmenterError> {
        let has_audio = self.audio_config.is_some();
        let audio_scale = self.audio_timescale();
        loop {
            for video in &mut self.videos {
                out.extend(video.ready_parts.drain(..).map(SegmenterOutput::Part));
            }
            if let Some(bound) = self.audio_bound().filter(|_| has_audio) {
                self.emit_audio_parts(bound, out)?;
            }
            let ready = self.videos.iter().filter(|v| !v.closed.is_empty()).count();
            if ready == 0 || (ready < self.videos.len() && !flush) {
                if let Some(ahead) = self
                    .videos
                    .iter()
                    .find(|v| v.closed.len() > MAX_SEGMENTS_AHEAD)
                {
                    let stalled = self.videos.iter().find(|v| v.closed.is_empty());
                    let name = stalled.map_or(&ahead.name, |v| &v.name);
                    return Err(SegmenterError::RenditionStalled(name.clone()));
                }
                return Ok(());
            }
            let (number, cut_pts, waiting) = self
                .videos
                .iter()
                .filter_map(|v| {
                    v.closed
                        .front()
                        .map(|c| (c.number, c.cut_pts, v.closed.len()))
                })
                .min()
                .unwrap_or_default();
            let cut = Timestamp::new(cut_pts, VIDEO_TIMESCALE)
                .rescale(audio_scale)
                .ticks;
            let audio_passed = self.audio_queue.back().is_some_and(|last| last.time >= cut);
            let give_up = waiting > MAX_SEGMENTS_WAITING_FOR_AUDIO;
            if has_audio && !audio_passed && !give_up && !flush {
                return Ok(());
            }
            let mut tracks = Vec::new();
            for video in &mut self.videos {
                if let Some(closed) = video.closed.pop_front_if(|c| c.number == number) {
                    video.held = video.held.saturating_sub(closed.segment.bytes.len());
                    tracks.push(closed.segment);
                }
            }
            if has_audio {
                tracks.extend(self.finish_audio_segment(cut, out)?);
                self.audio_emitted_until = self.audio_emitted_until.max(cut);
            }
            self.next_number = number + 1;
            out.push(SegmenterOutput::Segment(Segment { number, tracks }));
        }
    }

    /// How far audio may be cut into parts now (`None`: until video starts).
    fn audio_bound(&self) -> Option<AudioBound> {
        let scale = self.audio_timescale();
        let to_audio = |t: i64| Timestamp::new(t, VIDEO_TIMESCALE).rescale(scale).ticks;
        let next_cut = self
            .videos
            .iter()
            .filter_map(|v| v.closed.front().map(|c| (c.number, c.cut_pts)))
            .min();
        if let Some((_, cut)) = next_cut {
            return Some(AudioBound::Cut(to_audio(cut)));
        }
        let frontier = self
            .videos
            .iter()
            .map(|v| v.frontier)
            .collect::<Option<Vec<_>>>()?
            .into_iter()
            .min()?;
        Some(AudioBound::Frontier(to_audio(frontier)))
    }

    /// Whole audio frames in one part: as many as fit in the part duration.
    fn audio_frames_per_part(&self) -> usize {
        let ticks = self.config.part_duration * f64::from(self.audio_timescale());
        ((ticks / AAC_FRAME as f64) as usize).max(1)
    }

    /// Emits the audio parts that are complete within `bound`: full ones, and the last one
    /// before a cut once audio has passed it.
    fn emit_audio_parts(
        &mut self,
        bound: AudioBound,
        out: &mut Vec<SegmenterOutput>,
    ) -> Result<(), CmafError> {
        let per_part = self.audio_frames_per_part();
        let fits = |f: &PendingAudio| match bound {
            AudioBound::Cut(cut) => f.time < cut,
            AudioBound::Frontier(frontier) => f.time + AAC_FRAME <= frontier,
        };
        let passed_cut = matches!(bound, AudioBound::Cut(cut)
            if self.audio_queue.back().is_some_and(|last| last.time >= cut));
        loop {
            let count = self
                .audio_queue
                .iter()
                .take(per_part)
                .take_while(|f| fits(f))
                .count();
            if count == 0 || (count < per_part && !passed_cut) {
                return Ok(());
            }
            self.audio_part(count, out)?;
        }
    }

    /// The first `count` queued audio frames as the open audio segment's next part.
    fn audio_part(
        &mut self,
        count: usize,
        out: &mut Vec<SegmenterOutput>,
    ) -> Result<(), CmafError> {
        let frames: Vec<PendingAudio> = self.audio_queue.drain(..count).collect();
        let (Some(first), Some(last)) = (frames.first(), frames.last()) else {
            return Ok(());
        };
        let (start, end) = (first.time, last.time + 1);
        let frame_bytes: usize = frames.iter().map(|f| f.data.len()).sum();
        let samples: Vec<Sample> = frames
            .into_iter()
            .map(|f| Sample {
                duration: AAC_FRAME as u32,
                composition_offset: 0,
                sync: true,
                data: f.data,
            })
            .collect();
        let scale = self.audio_timescale();
        let part = self.audio_segment.add_part(
            TrackId::Audio,
            self.next_number,
            (start, start),
            scale,
            &samples,
        )?;
        self.audio_held = self.audio_held.saturating_sub(frame_bytes) + part.bytes.len();
        self.audio_emitted_until = self.audio_emitted_until.max(end);
        out.push(SegmenterOutput::Part(part));
        Ok(())
    }

    /// Closes the open audio segment at `cut`: what is queued before it becomes its last parts
    /// (audio that stopped waiting, or a flush); `None` when it has no audio at all.
    fn finish_audio_segment(
        &mut self,
        cut: i64,
        out: &mut Vec<SegmenterOutput>,
    ) -> Result<Option<TrackSegment>, CmafError> {
        let per_part = self.audio_frames_per_part();
        let mut last = None;
        loop {
            let count = self
                .audio_queue
                .iter()
                .take(per_part)
                .take_while(|f| f.time < cut)
                .count();
            if count == 0 {
                break;
            }
            self.audio_part(count, out)?;
            last = Some(out.len() - 1);
        }
        if let Some(SegmenterOutput::Part(part)) = last.and_then(|i| out.get_mut(i)) {
            part.ends_segment = true;
        }
        let segment = self
            .audio_segment
            .close(TrackId::Audio, self.audio_timescale(), None);
        if let Some(segment) = &segment {
            self.audio_held = self.audio_held.saturating_sub(segment.bytes.len());
        }
        Ok(segment)
    }

    /// The publisher was lost (see the module doc): every open segment is closed and emitted.
    fn pause(&mut self) -> Result<Vec<SegmenterOutput>, SegmenterError> {
        let mut out = Vec::new();
        if !self.started || self.resume_at.is_some() {
            return Ok(out);
        }
        // the resumed timeline is placed on the source's clock: the end is rounded up to one of
        // its ticks (a whole millisecond for RTMP; exact for a 90 kHz source)
        let tick = match self.base.timescale {
            0 => 1,
            scale if VIDEO_TIMESCALE.is_multiple_of(scale) => i64::from(VIDEO_TIMESCALE / scale),
            _ => 1,
        };
        let mut end = 0;
        for (index, video) in self.videos.iter_mut().enumerate() {
            if let Some(last) = video.last_dts {
                let next = (last + video.last_duration.max(1) + tick - 1).max(0) / tick * tick;
                video.close(TrackId::Video(index), next, next)?;
                end = end.max(next);
            }
            video.dts_offset = None;
            video.frontier = None;
        }
        self.emit_ready(true, &mut out)?;
        // audio past the video's end has no video to go with: the timeline resumes at `end`
        self.audio_queue.clear();
        // (parts of an audio segment that no video segment closed cannot be listed)
        let sequence = self.audio_segment.sequence;
        self.audio_segment = OpenSegment {
            sequence,
            ..OpenSegment::default()
        };
        self.audio_held = 0;
        self.next_audio_time = None;
        self.audio_emitted_until = Timestamp::new(end, VIDEO_TIMESCALE)
            .rescale(self.audio_timescale())
            .ticks;
        self.resume_at = Some(end);
        Ok(out)
    }

    /// End of stream: closes every open segment and emits everything still held.
    fn finish(&mut self) -> Result<Vec<SegmenterOutput>, SegmenterError> {
        let mut out = Vec::new();
        if !self.started {
            return Ok(out);
        }
        for (index, video) in self.videos.iter_mut().enumerate() {
            if let Some(last) = video.last_dts {
                let end = last + video.last_duration.max(1);
                video.close(TrackId::Video(index), end, i64::MAX)?;
            }
        }
        // Everything left belongs to the last segments: the final cut is "infinitely late".
        self.emit_ready(true, &mut out)?;
        Ok(out)
    }
}

/// Slack for the next frame's duration when deciding whether it still fits in a part: RTMP
/// rounds timestamps to milliseconds, so frame durations alternate (33, 33, 34 ms at 30 fps).
const PART_JITTER: i64 = 180;

impl VideoTrack {
    /// Decode and presentation time of the open segment's first frame.
    fn segment_start(&self) -> Option<(i64, i64)> {
        if !self.segment.parts.is_empty() {
            return Some((self.segment.first_dts, self.segment.first_pts));
        }
        self.open.first().map(|f| (f.dts, f.pts))
    }

    /// Whether a frame decoded at `dts` would make the open part longer than `part_ticks`
    /// (its duration is guessed from the last frame's).
    fn part_is_full(&self, dts: i64, part_ticks: i64) -> bool {
        self.open.first().is_some_and(|first| {
            dts + self.last_duration.max(1) + PART_JITTER - first.dts > part_ticks
        })
    }

    /// Closes the open part; `next_dts` is the decode time of the frame that follows.
    fn close_part(&mut self, id: TrackId, next_dts: i64) -> Result<(), SegmenterError> {
        let frames = std::mem::take(&mut self.open);
        let Some(first) = frames.first() else {
            return Ok(());
        };
        let samples: Vec<Sample> = frames
            .iter()
            .enumerate()
            .map(|(i, f)| {
                let next = frames.get(i + 1).map_or(next_dts, |n| n.dts);
                Sample {
                    duration: clamp_u32(next - f.dts),
                    composition_offset: (f.pts - f.dts).clamp(i32::MIN as i64, i32::MAX as i64)
                        as i32,
                    sync: f.sync,
                    data: f.data.clone(),
                }
            })
            .collect();
        let part = self.segment.add_part(
            id,
            self.next_number,
            (first.dts, first.pts),
            VIDEO_TIMESCALE,
            &samples,
        )?;
        let frame_bytes: usize = frames.iter().map(|f| f.data.len()).sum();
        self.held = self.held.saturating_sub(frame_bytes) + part.bytes.len();
        self.ready_parts.push(part);
        Ok(())
    }

    /// Closes the open segment (its last part first); `next_dts`/`cut_pts` are those of the
    /// frame that follows (`cut_pts` is `i64::MAX` at the end of the broadcast).
    fn close(&mut self, id: TrackId, next_dts: i64, cut_pts: i64) -> Result<(), SegmenterError> {
        let before = self.ready_parts.len();
        self.close_part(id, next_dts)?;
        if self.ready_parts.len() > before {
            if let Some(last) = self.ready_parts.last_mut() {
                last.ends_segment = true;
            }
        }
        // Manifests and players place segments by presentation time: the keyframe's, until
        // the next segment's keyframe; the last segment of a broadcast has no next one.
        let start = self.segment.first_pts.max(0);
        let duration = (cut_pts != i64::MAX).then(|| (cut_pts - start).max(0) as u64);
        let Some(segment) = self.segment.close(id, VIDEO_TIMESCALE, duration) else {
            return Ok(());
        };
        let number = self.next_number;
        self.next_number += 1;
        self.closed.push_back(ClosedVideo {
            segment,
            number,
            cut_pts,
        });
        Ok(())
    }
}

fn clamp_u32(v: i64) -> u32 {
    v.clamp(0, i64::from(u32::MAX)) as u32
}

fn describe_change(old: &CodecConfig, new: &CodecConfig) -> String {
    if let (Some((aw, ah)), Some((bw, bh))) = (old.video_size(), new.video_size()) {
        return format!(
            "{aw}x{ah} {} → {bw}x{bh} {}",
            old.codec_string(),
            new.codec_string()
        );
    }
    match (old, new) {
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
    use crate::media::{AacConfig, AvcConfig, StreamEvent};
    use mp4_atom::{Any, Decode, Moof};

    const FPS_MS: i64 = 40; // 25 fps keeps frame times whole milliseconds

    fn video_track() -> RenditionEvent {
        RenditionEvent::from(StreamEvent::Track(TrackInfo {
            kind: TrackKind::Video,
            codec: CodecConfig::Avc(
                AvcConfig::parse(Bytes::from_static(AVC_RECORD_320X240)).unwrap(),
            ),
        }))
    }

    fn audio_track() -> RenditionEvent {
        StreamEvent::Track(TrackInfo {
            kind: TrackKind::Audio,
            codec: CodecConfig::Aac(AacConfig::parse(Bytes::from_static(&[0x11, 0x90])).unwrap()),
        })
        .into()
    }

    fn video(dts: i64, pts: i64, key: bool) -> RenditionEvent {
        video_of(0, dts, pts, key)
    }

    fn video_of(rendition: usize, dts: i64, pts: i64, key: bool) -> RenditionEvent {
        RenditionEvent::Frame {
            id: TrackId::Video(rendition),
            frame: MediaFrame {
                kind: TrackKind::Video,
                dts: Timestamp::from_millis(dts),
                pts: Timestamp::from_millis(pts),
                sync: key,
                segment_start: key,
                data: Bytes::from_static(&[0, 0, 0, 1, 0x65]),
            },
        }
    }

    fn audio(ms: i64) -> RenditionEvent {
        RenditionEvent::from(StreamEvent::Frame(MediaFrame {
            kind: TrackKind::Audio,
            dts: Timestamp::from_millis(ms),
            pts: Timestamp::from_millis(ms),
            sync: true,
            segment_start: false,
            data: Bytes::from_static(&[0x21, 0x10]),
        }))
    }

    fn segmenter() -> Segmenter {
        Segmenter::new(SegmenterConfig {
            target_duration: 2.0,
            first_number: 100,
            cut: CutRule::AfterTarget,
            part_duration: 0.5,
        })
    }

    /// Announces the tracks, sends `frames` and ends.
    fn publish(seg: &mut Segmenter, start_ms: i64, seconds: i64, gop: i64) -> Vec<SegmenterOutput> {
        let mut out = Vec::new();
        out.extend(seg.push(video_track()).unwrap());
        out.extend(seg.push(audio_track()).unwrap());
        out.extend(frames(seg, start_ms, seconds, gop));
        out.extend(seg.push(RenditionEvent::End).unwrap());
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

    /// The `trun` entries of every chunk of a segment (`styp` first) or a part.
    fn entries(bytes: &[u8], with_styp: bool) -> Vec<mp4_atom::TrunEntry> {
        let mut cur = std::io::Cursor::new(bytes);
        if with_styp {
            assert!(matches!(Any::decode(&mut cur).unwrap(), Any::Styp(_)));
        }
        let mut entries = Vec::new();
        while (cur.position() as usize) < bytes.len() {
            let moof = Moof::decode(&mut cur).unwrap();
            entries.extend(moof.traf[0].trun[0].samples.iter());
            assert!(matches!(Any::decode(&mut cur).unwrap(), Any::Mdat(_)));
        }
        entries
    }

    fn first_sample_flags_and_cts(bytes: &[u8]) -> (u32, Vec<i64>) {
        let entries = entries(bytes, true);
        (
            entries[0].flags.unwrap(),
            entries.iter().map(|e| e.cts.unwrap()).collect(),
        )
    }

    fn parts(out: &[SegmenterOutput]) -> Vec<&Part> {
        out.iter()
            .filter_map(|o| match o {
                SegmenterOutput::Part(p) => Some(p),
                _ => None,
            })
            .collect()
    }

    #[test]
    fn every_segment_is_its_parts_back_to_back_and_no_part_outlasts_the_target() {
        let mut seg = segmenter();
        // 25 fps with B-frames, 48 kHz audio, a keyframe every 2 s
        let out = publish(&mut seg, 0, 8, 50);
        let segments = segments(&out);
        assert_eq!(segments.len(), 4);
        for segment in &segments {
            for track in &segment.tracks {
                let parts: Vec<&Part> = parts(&out)
                    .into_iter()
                    .filter(|p| p.id == track.id && p.segment == segment.number)
                    .collect();
                let joined: Vec<u8> = parts.iter().flat_map(|p| p.bytes.to_vec()).collect();
                assert_eq!(joined, track.bytes, "segment {}", segment.number);
                let indices: Vec<u32> = parts.iter().map(|p| p.index).collect();
                assert_eq!(indices, (0..parts.len() as u32).collect::<Vec<_>>());
                let target = u64::from(track.timescale) / 2;
                for (i, part) in parts.iter().enumerate() {
                    assert!(part.info.duration <= target, "{:?} part {i}", track.id);
                    if i + 1 < parts.len() {
                        // only the last part of a segment may be short (Apple: ≥ 85 %)
                        assert!(part.info.duration * 100 >= target * 85, "{:?}", part.info);
                    }
                    let samples = entries(&part.bytes, i == 0);
                    assert_eq!(samples.len() as u32, part.samples);
                    let sum: u64 = samples.iter().map(|e| u64::from(e.duration.unwrap())).sum();
                    assert_eq!(sum, part.info.duration);
                    // INDEPENDENT follows the bytes: sample_depends_on = 2 on the first sample
                    let sync = samples[0].flags.unwrap() >> 24 == 2;
                    assert_eq!(part.info.independent, sync);
                    assert_eq!(sync, track.kind() == TrackKind::Audio || i == 0);
                }
                let total: u64 = parts.iter().map(|p| p.info.duration).sum();
                assert_eq!(total, track.duration, "{:?} {}", track.id, segment.number);
                assert_eq!(track.parts.len(), parts.len());
                // a video segment's last part is known as the last when it is emitted (the
                // frame that cuts it is in hand), an audio one when it is emitted at the cut;
                // no other part says so
                let flagged: Vec<bool> = parts.iter().map(|p| p.ends_segment).collect();
                let mut expected = vec![false; parts.len()];
                if track.kind() == TrackKind::Video || flagged.iter().any(|f| *f) {
                    expected[parts.len() - 1] = true;
                }
                assert_eq!(flagged, expected, "{:?} {}", track.id, segment.number);
            }
        }
        assert_eq!(
            parts(&out)
                .iter()
                .filter(|p| p.id == TrackId::Video(0))
                .count(),
            4 * 4 + 4,
            "25 fps in 0.5 s parts: 12 frames (0.48 s) each, a segment of 50 frames makes 5"
        );
    }

    #[test]
    fn a_part_is_emitted_as_soon_as_the_frame_after_it_arrives() {
        let mut seg = segmenter();
        seg.push(video_track()).unwrap();
        seg.push(audio_track()).unwrap();
        let mut out = Vec::new();
        let mut first_video_part_at = None;
        let mut first_audio_part_at = None;
        let mut next_audio = 0.0;
        for i in 0..50 {
            let dts = i * FPS_MS;
            while next_audio <= dts as f64 {
                out.extend(seg.push(audio(next_audio.round() as i64)).unwrap());
                next_audio += 1024.0 / 48.0;
            }
            out.extend(seg.push(video(dts, dts, i == 0)).unwrap());
            for part in parts(&out) {
                let at = match part.id {
                    TrackId::Video(_) => &mut first_video_part_at,
                    TrackId::Audio => &mut first_audio_part_at,
                };
                at.get_or_insert(dts);
            }
        }
        // 12 frames fill a video part: it goes out with frame 12 (480 ms)
        assert_eq!(first_video_part_at, Some(480));
        // 23 AAC frames (490.7 ms) fill an audio part once video has been presented past it
        assert_eq!(first_audio_part_at, Some(520));
        assert!(segments(&out).is_empty(), "no segment is complete yet");
    }

    #[test]
    fn an_open_gop_keyframe_ends_the_segment_by_its_presentation_time() {
        // x265's CRA at 2 s decodes four frames early (its leading pictures follow it), and
        // RTMP's millisecond rounding puts it at 1.999 s after the first keyframe
        let mut seg = segmenter();
        seg.push(video_track()).unwrap();
        let mut out = Vec::new();
        out.extend(seg.push(video(0, 67, true)).unwrap());
        for i in 1..60 {
            out.extend(seg.push(video(i * 33, i * 33 + 67, false)).unwrap());
        }
        out.extend(seg.push(video(1933, 2066, true)).unwrap());
        out.extend(seg.push(video(1966, 1999, false)).unwrap());
        out.extend(seg.push(RenditionEvent::End).unwrap());
        let segs = segments(&out);
        assert_eq!(segs.len(), 2, "cut at the CRA, not 2 s later");
        let first = segs[0].track(TrackId::Video(0)).unwrap();
        assert_eq!(first.duration, 1999 * 90);
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
            let v = s.track(TrackId::Video(0)).unwrap();
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
            .map(|s| s.track(TrackId::Video(0)).unwrap().duration)
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
            let v = s.track(TrackId::Video(0)).unwrap();
            let a = s.track(TrackId::Audio).expect("every segment has audio");
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
            let a0 = w[0].track(TrackId::Audio).unwrap();
            let a1 = w[1].track(TrackId::Audio).unwrap();
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
        let out = seg.push(RenditionEvent::End).unwrap();
        let segs = segments(&out);
        let first = segs[0];
        let a = first.track(TrackId::Audio).unwrap();
        assert_eq!(first.track(TrackId::Video(0)).unwrap().start, 0);
        // the first audio frame kept is the one at 541 ms, i.e. 21 ms after media time 0
        assert_eq!(a.start, 21 * 48);
    }

    #[test]
    fn audio_that_arrives_before_the_keyframe_it_follows_starts_the_first_segment() {
        // a ladder: the audio encoder's output comes out before the delayed video encoders'
        let mut seg = segmenter();
        seg.push(video_track()).unwrap();
        seg.push(audio_track()).unwrap();
        let audio_ms = |i: i64| 1_000 + i * 1024 / 48;
        let early = 30; // ~640 ms of audio before the first video frame
        for i in 0..early {
            assert!(seg.push(audio(audio_ms(i))).unwrap().is_empty());
        }
        let mut outs = Vec::new();
        let mut next_audio = early;
        for f in 0..150 {
            let ms = 1_000 + f * FPS_MS;
            outs.extend(seg.push(video(ms, ms, f % 50 == 0)).unwrap());
            while audio_ms(next_audio) < ms + 640 {
                outs.extend(seg.push(audio(audio_ms(next_audio))).unwrap());
                next_audio += 1;
            }
        }
        outs.extend(seg.push(RenditionEvent::End).unwrap());
        let segs = segments(&outs);
        let first = segs[0];
        let a = first
            .track(TrackId::Audio)
            .expect("the first segment has audio");
        let v = first.track(TrackId::Video(0)).unwrap();
        assert_eq!(
            a.start, 0,
            "the first segment's audio starts with its video"
        );
        assert!(
            (a.duration_secs() - v.duration_secs()).abs() < 0.03,
            "first segment: audio {} s, video {} s",
            a.duration_secs(),
            v.duration_secs()
        );
    }

    #[test]
    fn flv_timestamps_across_the_32_bit_wrap_keep_segments_contiguous() {
        let mut demux = FlvDemuxer::new();
        let mut seg = segmenter();
        let mut header = vec![0x17, 0x00, 0, 0, 0];
        header.extend_from_slice(AVC_RECORD_320X240);
        let mut outs = Vec::new();
        if let Some(ev) = demux.video(Bytes::from(header), 0).unwrap() {
            outs.extend(seg.push(ev.into()).unwrap());
        }
        let start = u32::MAX - 3_000; // the RTMP clock wraps 3 s in
        for i in 0..250u32 {
            let ts = start.wrapping_add(i * 40);
            let first = if i % 50 == 0 { 0x17 } else { 0x27 };
            let tag = Bytes::from(vec![first, 1, 0, 0, 0, 0, 0, 0, 1, 0x65]);
            if let Some(ev) = demux.video(tag, ts).unwrap() {
                outs.extend(seg.push(ev.into()).unwrap());
            }
        }
        outs.extend(seg.push(RenditionEvent::End).unwrap());
        let segs = segments(&outs);
        assert_eq!(segs.len(), 5);
        for w in segs.windows(2) {
            let v0 = w[0].track(TrackId::Video(0)).unwrap();
            let v1 = w[1].track(TrackId::Video(0)).unwrap();
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
            .push(
                StreamEvent::Track(TrackInfo {
                    kind: TrackKind::Video,
                    codec: CodecConfig::Avc(changed),
                })
                .into(),
            )
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

    /// A ladder segmenter with renditions `r0` and `r1` announced.
    fn two_rendition_ladder(first_number: u64) -> Segmenter {
        let mut seg = Segmenter::new(SegmenterConfig {
            target_duration: 2.0,
            first_number,
            cut: CutRule::AtMarks,
            part_duration: 0.5,
        });
        for r in 0..2 {
            let RenditionEvent::Track { info, .. } = video_track() else {
                unreachable!()
            };
            seg.push(RenditionEvent::Track {
                id: TrackId::Video(r),
                name: format!("r{r}"),
                info,
            })
            .unwrap();
        }
        seg
    }

    /// Two renditions with different B-frame delays whose keyframes share presentation times,
    /// delivered out of step (one runs ahead, as separate encoder threads do).
    #[test]
    fn ladder_renditions_cut_at_the_same_media_times() {
        let mut seg = two_rendition_ladder(7);
        let frames = 250; // 10 s at 25 fps, a marked keyframe every 50 frames
        let mut events: Vec<RenditionEvent> = Vec::new();
        for i in 0..frames {
            let pts = 5_000 + i * FPS_MS;
            let key = i % 50 == 0;
            // a two-frame decode delay that drops to one frame for odd GOPs (as x264's does
            // when frames are skipped)
            let delay = if (i / 50) % 2 == 0 { 80 } else { 40 };
            events.push(video_of(0, pts - delay, pts, key));
            events.push(video_of(1, pts, pts, key)); // no B-frames
        }
        // rendition 1 runs 60 frames ahead of rendition 0
        let (r0, r1): (Vec<_>, Vec<_>) = events.into_iter().partition(|e| {
            matches!(
                e,
                RenditionEvent::Frame {
                    id: TrackId::Video(0),
                    ..
                }
            )
        });
        let mut out = Vec::new();
        for e in r1.iter().take(60).cloned() {
            out.extend(seg.push(e).unwrap());
        }
        for (a, b) in r0.into_iter().zip(
            r1.into_iter()
                .skip(60)
                .map(Some)
                .chain(std::iter::repeat(None)),
        ) {
            out.extend(seg.push(a).unwrap());
            if let Some(b) = b {
                out.extend(seg.push(b).unwrap());
            }
        }
        out.extend(seg.push(RenditionEvent::End).unwrap());
        let segs = segments(&out);
        assert_eq!(segs.len(), 5);
        for (i, s) in segs.iter().enumerate() {
            assert_eq!(s.number, 7 + i as u64);
            let a = s.track(TrackId::Video(0)).unwrap();
            let b = s.track(TrackId::Video(1)).unwrap();
            assert_eq!(a.start, i as u64 * 180_000, "segment {i}");
            assert_eq!(a.start, b.start, "segment {i} starts at the same time");
            assert_eq!(a.duration, b.duration);
            assert!(a.starts_with_keyframe && b.starts_with_keyframe);
        }
    }

    #[test]
    fn a_rendition_that_stops_is_reported_before_memory_grows() {
        let mut seg = two_rendition_ladder(0);
        seg.push(video_of(1, 0, 0, true)).unwrap();
        let mut result = Ok(Vec::new());
        for i in 1..1000 {
            result = seg.push(video_of(0, i * 40, i * 40, i % 50 == 0));
            if result.is_err() {
                break;
            }
        }
        match result {
            Err(SegmenterError::RenditionStalled(name)) => assert_eq!(name, "r1"),
            other => panic!("{other:?}"),
        }
    }

    fn big_video(dts: i64, key: bool, bytes: usize) -> RenditionEvent {
        RenditionEvent::Frame {
            id: TrackId::Video(0),
            frame: MediaFrame {
                kind: TrackKind::Video,
                dts: Timestamp::from_millis(dts),
                pts: Timestamp::from_millis(dts),
                sync: key,
                segment_start: key,
                data: Bytes::from(vec![0u8; bytes]),
            },
        }
    }

    #[test]
    fn frozen_timestamps_end_the_stream_before_frames_pile_up() {
        let mut seg = segmenter();
        seg.push(video_track()).unwrap();
        seg.push(video(0, 0, true)).unwrap();
        seg.push(video(40, 40, false)).unwrap();
        let mut result = Ok(Vec::new());
        let mut pushed = 0;
        while result.is_ok() && pushed < 10_000 {
            result = seg.push(video(40, 40, false));
            pushed += 1;
        }
        assert!(
            matches!(result, Err(SegmenterError::FrozenTimestamps(n)) if n == MAX_FROZEN_FRAMES + 1),
            "{result:?}"
        );
        assert_eq!(pushed, MAX_FROZEN_FRAMES + 1);
        // a clock that goes backwards is refused the same way
        let mut seg = segmenter();
        seg.push(video_track()).unwrap();
        seg.push(video(10_000, 10_000, true)).unwrap();
        let backwards = (0..=MAX_FROZEN_FRAMES as i64)
            .map(|i| seg.push(video(i * 40, i * 40, false)))
            .find_map(Result::err);
        assert!(matches!(
            backwards,
            Some(SegmenterError::FrozenTimestamps(_))
        ));
    }

    #[test]
    fn timestamps_that_advance_again_reset_the_frozen_count() {
        let mut seg = segmenter();
        seg.push(video_track()).unwrap();
        for i in 0..1_000i64 {
            // pairs of equal timestamps (a sloppy encoder) are nudged, never refused
            let ms = (i / 2) * 40;
            seg.push(video(ms, ms, i % 100 == 0)).unwrap();
        }
    }

    #[test]
    fn held_media_is_bounded_in_bytes() {
        let mut seg = segmenter().with_budget(1 << 20);
        seg.push(video_track()).unwrap();
        // 100 KiB frames, one keyframe only: the open segment grows until the budget
        let result = (0..100i64)
            .map(|i| seg.push(big_video(i * 40, i == 0, 100 << 10)))
            .find_map(Result::err);
        assert!(
            matches!(result, Some(SegmenterError::OverBudget { limit }) if limit == 1 << 20),
            "{result:?}"
        );
        // emitted segments no longer count
        let mut seg = segmenter().with_budget(1 << 20);
        seg.push(video_track()).unwrap();
        for i in 0..500i64 {
            seg.push(big_video(i * 40, i % 50 == 0, 10 << 10)).unwrap();
        }
        assert!(seg.held_bytes() < 1 << 20, "{}", seg.held_bytes());
        assert!(seg.held_bytes() > 0);
    }

    #[test]
    fn audio_without_video_is_refused_after_a_while() {
        let mut seg = segmenter();
        seg.push(video_track()).unwrap();
        seg.push(audio_track()).unwrap();
        seg.push(video(0, 0, true)).unwrap();
        let secs = MAX_AUDIO_WITHOUT_VIDEO_SECS as i64 + 2;
        // 48 kHz AAC: one frame every 21.33 ms
        let result = (0..secs * 1000 * 48 / 1024)
            .map(|i| seg.push(audio(i * 1024 / 48)))
            .find_map(Result::err);
        assert!(
            matches!(result, Some(SegmenterError::AudioWithoutVideo(_))),
            "{result:?}"
        );
    }

    /// `seconds` of 25 fps video (a keyframe every `gop` frames, IPBB-style B-frame
    /// reordering) interleaved with 48 kHz AAC, both from `start_ms`; no track announcements,
    /// no end.
    fn frames(seg: &mut Segmenter, start_ms: i64, seconds: i64, gop: i64) -> Vec<SegmenterOutput> {
        let mut out = Vec::new();
        let mut next_audio = start_ms as f64;
        for i in 0..seconds * 1000 / FPS_MS {
            let dts = start_ms + i * FPS_MS;
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
        out
    }

    #[test]
    fn a_pause_publishes_what_is_held_and_the_resumed_timeline_continues_without_gap_or_overlap() {
        let mut seg = segmenter();
        seg.push(video_track()).unwrap();
        seg.push(audio_track()).unwrap();
        // 5.2 s: two whole segments emitted, the third (from 4 s) held
        let before = frames(&mut seg, 1_000, 5, 50);
        assert_eq!(segments(&before).len(), 2);
        let paused = seg.push(RenditionEvent::Pause).unwrap();
        let held = segments(&paused);
        assert_eq!(held.len(), 1, "the held segment is published at once");
        let held_video = held[0].track(TrackId::Video(0)).unwrap();
        assert!(
            held_video.duration_secs() > 0.9,
            "{}",
            held_video.duration_secs()
        );
        // the publisher comes back 30 s later on its clock (a new connection's timestamps
        // continue 100 ms after the last ones), starting with a non-keyframe and some audio
        let resumed_at = 1_000 + 5_000 + 100;
        seg.push(video(resumed_at - 40, resumed_at - 40, false))
            .unwrap();
        let mut after = frames(&mut seg, resumed_at, 5, 50);
        after.extend(seg.push(RenditionEvent::End).unwrap());
        let mut all: Vec<&Segment> = segments(&before);
        all.extend(held);
        all.extend(segments(&after));
        let numbers: Vec<u64> = all.iter().map(|s| s.number).collect();
        assert_eq!(numbers, (100..100 + all.len() as u64).collect::<Vec<_>>());
        for kind in [TrackId::Video(0), TrackId::Audio] {
            let tracks: Vec<&TrackSegment> = all.iter().filter_map(|s| s.track(kind)).collect();
            for pair in tracks.windows(2) {
                let end = pair[0].start + pair[0].duration;
                let gap = pair[1].start as i64 - end as i64;
                // the lost publisher's audio may stop a little before its video did
                let allowed = match kind {
                    TrackId::Audio => -AAC_FRAME..=4_800,
                    TrackId::Video(_) => 0..=0,
                };
                assert!(
                    allowed.contains(&gap),
                    "{kind:?}: {} ends at {end}, the next starts at {}",
                    pair[0].start,
                    pair[1].start
                );
            }
            assert!(tracks.iter().all(|t| t.starts_with_keyframe));
        }
        let total: f64 = all
            .iter()
            .filter_map(|s| s.track(TrackId::Video(0)))
            .map(TrackSegment::duration_secs)
            .sum();
        assert!((total - 10.0).abs() < 0.1, "{total} s of 10 s");
    }
}
