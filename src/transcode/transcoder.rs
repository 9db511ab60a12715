//! The decode thread of one broadcast: it owns the ingest queue, makes the plan when the first
//! keyframe arrives, decodes the source video once, decides the segment starts, and fans the
//! decoded frames out to one encoder thread per rung; source audio goes to the audio thread.
//!
//! Order on the output queue: every rendition's `Track` first (before any frame), then frames
//! from all threads, then `End` once every thread has flushed. A `Pause` (the publisher was
//! lost) flushes the decoder and every rung's encoder first and waits for them, so the frames
//! up to the loss reach packaging before the `Pause` does; new ones take what follows (the
//! audio worker's too). Queues:
//! - ingest → here: `pipeline::EVENT_QUEUE` events; when full, ingest waits (TCP back-pressure
//!   on that one publisher).
//! - here → each rung: `RUNG_QUEUE` decoded frames; when full, the decode thread waits — unless
//!   the ladder has fallen more than `MAX_LAG_SECS` behind real time, in which case a full
//!   rung skips that frame (its frame rate drops; a warning and a counter say so). Segment
//!   starts are never skipped. So a file pushed faster than real time is transcoded completely,
//!   and a live source on a machine too slow for its ladder loses frames on the slow rungs
//!   instead of growing latency and memory.
//! - here → audio: `AUDIO_QUEUE` frames; when full, the decode thread waits.
//! - here → posters: `POSTER_QUEUE` frame every `POSTER_EVERY_MS`; when full, that poster is
//!   skipped.
//! - all threads → packaging: `OUTPUT_QUEUE` events; when full, they wait.

use std::sync::mpsc as std_mpsc;
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use ffmpeg_next as ffmpeg;
use tokio::sync::mpsc;

use super::audio::{self, AudioInput, AUDIO_QUEUE};
use super::cadence::{Cadence, FrameRateCap, RealTimeLag, SegmentCadence};
use super::ffi;
use super::ladder::Ladder;
use super::plan::{Plan, PlannedVideo, Source};
use super::poster::{self, PosterClock, POSTER_QUEUE};
use super::rung::{self, RungEncoder, RungInput, RungMessage, RUNG_QUEUE};
use super::TranscodeError;
use crate::hub::LiveStats;
use crate::media::queue;
use crate::media::{
    vp9_keyframe_size, CodecConfig, MediaFrame, RenditionEvent, StreamEvent, Timestamp, TrackId,
    TrackInfo, TrackKind, AUDIO_RENDITION, SOURCE_RENDITION,
};

/// Events buffered between the encoder threads and packaging.
pub const OUTPUT_QUEUE: usize = 256;
/// Largest source picture decoded (4096x2304): a hostile SPS could declare 16384x16384 and make
/// the decoder allocate gigabytes. Bigger sources can use the passthrough ladder.
const MAX_SOURCE_PIXELS: u64 = 4096 * 2304;
/// Slice threads of the source decoder.
const DECODER_THREADS: usize = 2;
/// Behind real time by more than this, a full rung queue skips frames instead of waiting.
const MAX_LAG_SECS: f64 = 1.0;
/// How often dropped-frame counts are logged.
const DROP_REPORT_EVERY: Duration = Duration::from_secs(5);

/// What a broadcast's transcoder needs to know.
#[derive(Debug, Clone)]
pub struct TranscodeJob {
    pub ladder: Ladder,
    pub segment_duration: f64,
    /// The broadcast's live statistics: rungs report their speed there, and its playback id
    /// labels metrics.
    pub stats: Arc<LiveStats>,
}

/// Starts the decode thread; it reads `input` and writes `output` until the broadcast ends.
pub fn spawn(
    job: TranscodeJob,
    input: queue::Receiver,
    output: mpsc::Sender<RenditionEvent>,
) -> std::io::Result<JoinHandle<()>> {
    spawn_in_span("strata-decode".into(), move || {
        let mut transcoder = Transcoder::new(job, output);
        let result = transcoder.run(input);
        if let Err(e) = &result {
            if !matches!(e, TranscodeError::OutputClosed) {
                tracing::error!(error = %e, "transcoding stopped; ending the broadcast");
            }
        }
        transcoder.finish();
    })
}

/// A named thread that logs within the caller's span (the broadcast's).
fn spawn_in_span(
    name: String,
    work: impl FnOnce() + Send + 'static,
) -> std::io::Result<JoinHandle<()>> {
    let span = tracing::Span::current();
    std::thread::Builder::new().name(name).spawn(move || {
        let _entered = span.enter();
        work()
    })
}

struct RungLane {
    name: String,
    queue: Option<std_mpsc::SyncSender<RungMessage>>,
    thread: Option<JoinHandle<()>>,
    cap: FrameRateCap,
    dropped: u64,
}

struct Transcoder {
    job: TranscodeJob,
    output: mpsc::Sender<RenditionEvent>,
    /// The source's video configuration: H.264, HEVC, AV1, VP9 or VP8.
    source_video: Option<CodecConfig>,
    /// The source's audio configuration: AAC or Opus.
    source_audio: Option<CodecConfig>,
    /// The plan is made and every rendition announced (at the first keyframe).
    started: bool,
    /// After a pause the decoder is new: frames wait for a keyframe.
    awaiting_keyframe: bool,
    decoder: Option<ffmpeg::decoder::Video>,
    cadence: SegmentCadence,
    lanes: Vec<RungLane>,
    /// Index of the untouched source among the video renditions.
    source_rendition: Option<usize>,
    audio: Option<(std_mpsc::SyncSender<AudioInput>, JoinHandle<()>)>,
    /// Audio that arrived before the first keyframe (an encoder's video delay sends it first).
    early_audio: crate::media::EarlyAudio,
    posters: Option<(
        std_mpsc::SyncSender<Arc<ffmpeg::frame::Video>>,
        JoinHandle<()>,
    )>,
    poster_clock: PosterClock,
    /// The source video's timescale (1 kHz for RTMP, 90 kHz for MPEG-TS), set at the first
    /// keyframe: the decoder and every rung's encoder count in it, so no timestamp is rounded
    /// on its way through the ladder. Decisions (cadence, caps, lag, posters) are taken in
    /// milliseconds derived from it, consistently for a packet and its decoded picture.
    clock: u32,
    lag: RealTimeLag,
    last_drop_report: Instant,
}

impl Transcoder {
    fn new(job: TranscodeJob, output: mpsc::Sender<RenditionEvent>) -> Self {
        Self {
            cadence: SegmentCadence::for_ladder(&job.ladder, job.segment_duration),
            job,
            output,
            source_video: None,
            source_audio: None,
            started: false,
            awaiting_keyframe: false,
            decoder: None,
            lanes: Vec::new(),
            source_rendition: None,
            audio: None,
            early_audio: crate::media::EarlyAudio::default(),
            posters: None,
            poster_clock: PosterClock::default(),
            clock: Timestamp::MILLIS,
            lag: RealTimeLag::default(),
            last_drop_report: Instant::now(),
        }
    }

    fn run(&mut self, mut input: queue::Receiver) -> Result<(), TranscodeError> {
        while let Some(event) = input.blocking_recv() {
            match event {
                StreamEvent::Track(info) => self.on_track(info)?,
                StreamEvent::Frame(frame) => match frame.kind {
                    TrackKind::Video => self.on_video(frame)?,
                    TrackKind::Audio => self.on_audio(frame)?,
                },
                StreamEvent::Pause => self.pause()?,
                StreamEvent::End => break,
            }
        }
        self.drain_decoder()
    }

    fn emit(&self, event: RenditionEvent) -> Result<(), TranscodeError> {
        self.output
            .blocking_send(event)
            .map_err(|_| TranscodeError::OutputClosed)
    }

    fn on_track(&mut self, info: TrackInfo) -> Result<(), TranscodeError> {
        match info.codec {
            video @ (CodecConfig::Avc(_)
            | CodecConfig::Hevc(_)
            | CodecConfig::Av1(_)
            | CodecConfig::Vp9(_)
            | CodecConfig::Vp8(_)) => {
                let changed = self.source_video.as_ref().is_some_and(|old| *old != video);
                self.source_video = Some(video.clone());
                if !self.started {
                    return Ok(());
                }
                if let Some(index) = self.source_rendition {
                    // the untouched rendition cannot change mid-broadcast: packaging ends it
                    return self.emit(RenditionEvent::Track {
                        id: TrackId::Video(index),
                        name: SOURCE_RENDITION.into(),
                        info: video_track(video),
                    });
                }
                if changed {
                    tracing::info!(
                        codec = %video.codec_string(),
                        "the source changed its video configuration; decoding it, every \
                         rendition keeps its size"
                    );
                    self.drain_decoder()?;
                    self.decoder = Some(open_decoder(&video, None)?);
                }
            }
            audio @ (CodecConfig::Aac(_) | CodecConfig::Opus(_)) => {
                if self.source_audio.as_ref() == Some(&audio) {
                    return Ok(()); // repeated, unchanged
                }
                self.source_audio = Some(audio.clone());
                if let Some((queue, _)) = &self.audio {
                    queue
                        .send(AudioInput::Config(audio))
                        .map_err(|_| TranscodeError::WorkerGone("audio".into()))?;
                }
            }
        }
        Ok(())
    }

    /// The first keyframe: plan the ladder, open every encoder, announce every rendition.
    /// Only an H.264 source is offered untouched beside the H.264 rungs (a player switching
    /// between renditions expects one codec); another codec's source-height rung is encoded.
    fn start(&mut self, source: &CodecConfig, keyframe: &MediaFrame) -> Result<(), TranscodeError> {
        let (width, height) = source_size(source, keyframe)
            .ok_or_else(|| TranscodeError::UnknownSize(source.name()))?;
        let mut ladder = self.job.ladder.clone();
        if ladder.source && !matches!(source, CodecConfig::Avc(_)) {
            tracing::info!(
                codec = source.name(),
                "the ladder offers the source as it is, but the source is not H.264: \
                 encoding its size instead"
            );
            ladder.source = false;
        }
        let plan = Plan::new(
            &ladder,
            Source {
                width,
                height,
                fps: source.frame_rate(),
            },
        );
        tracing::info!(ladder = %self.job.ladder.name, codec = source.name(), "{plan}");
        if plan.encodes().next().is_some() {
            // before any encoder opens: a source too large to decode is refused right here
            self.decoder = Some(open_decoder(source, Some((width, height)))?);
        }
        let cadence = self.cadence.kind();
        let segment_duration = self.job.segment_duration;
        let keyint = |fps: f64| match cadence {
            Cadence::Clock => (fps * segment_duration).round().max(1.0) as u32,
            Cadence::SourceKeyframes => 0,
        };
        let mut tracks = Vec::new();
        let mut encoders = Vec::new();
        for (index, video) in plan.video.iter().enumerate() {
            let id = TrackId::Video(index);
            match video {
                PlannedVideo::Source => {
                    self.source_rendition = Some(index);
                    tracks.push(RenditionEvent::Track {
                        id,
                        name: SOURCE_RENDITION.into(),
                        info: video_track(source.clone()),
                    });
                }
                PlannedVideo::Encode(rung) => {
                    let encoder =
                        RungEncoder::open(rung, keyint(rung.fps), keyframe.pts.timescale)?;
                    tracks.push(RenditionEvent::Track {
                        id,
                        name: rung.rung.name.clone(),
                        info: video_track(CodecConfig::Avc(encoder.config.clone())),
                    });
                    encoders.push((index, rung.clone(), encoder));
                }
            }
        }
        if let Some(source_audio) = self.source_audio.clone() {
            let config = audio::output_config(&plan.audio)?;
            tracks.push(RenditionEvent::Track {
                id: TrackId::Audio,
                name: AUDIO_RENDITION.into(),
                info: audio::track(config),
            });
            let (queue, receiver) = std_mpsc::sync_channel(AUDIO_QUEUE);
            let output = self.output.clone();
            let settings = plan.audio.clone();
            let thread = spawn_in_span("strata-audio".into(), move || {
                audio::run(settings, receiver, output)
            })
            .map_err(TranscodeError::Thread)?;
            queue
                .send(AudioInput::Config(source_audio))
                .map_err(|_| TranscodeError::WorkerGone("audio".into()))?;
            self.audio = Some((queue, thread));
        }
        for track in tracks {
            self.emit(track)?;
        }
        if self.decoder.is_some() {
            let (queue, receiver) = std_mpsc::sync_channel(POSTER_QUEUE);
            let output = self.output.clone();
            let thread = spawn_in_span("strata-poster".into(), move || {
                poster::run(receiver, output)
            })
            .map_err(TranscodeError::Thread)?;
            self.posters = Some((queue, thread));
        }
        for (index, rung, encoder) in encoders {
            let (queue, receiver) = std_mpsc::sync_channel(RUNG_QUEUE);
            let output = self.output.clone();
            let stats = self.job.stats.clone();
            let thread = spawn_in_span(format!("strata-{}", rung.rung.name), move || {
                rung::run(encoder, TrackId::Video(index), receiver, output, stats)
            })
            .map_err(TranscodeError::Thread)?;
            self.lanes.push(RungLane {
                name: rung.rung.name.clone(),
                queue: Some(queue),
                thread: Some(thread),
                cap: FrameRateCap::new(rung.fps, source.frame_rate()),
                dropped: 0,
            });
        }
        self.started = true;
        Ok(())
    }

    fn on_video(&mut self, frame: MediaFrame) -> Result<(), TranscodeError> {
        if !self.started {
            let Some(source) = self.source_video.clone() else {
                return Ok(());
            };
            if !frame.sync {
                return Ok(()); // nothing decodes before the first keyframe
            }
            self.clock = frame.pts.timescale;
            self.start(&source, &frame)?;
            // the renditions start at this keyframe: audio from its decode time on joins them
            for early in self.early_audio.take_from(frame.dts) {
                self.on_audio(early)?;
            }
        } else if self.awaiting_keyframe {
            if !frame.sync {
                return Ok(()); // the new decoder starts at a keyframe
            }
            self.awaiting_keyframe = false;
        }
        // the same clock throughout (a resumed publisher may come back on another protocol)
        let dts = frame.dts.rescale(self.clock).ticks;
        let pts = frame.pts.rescale(self.clock).ticks;
        let starts_segment = self
            .cadence
            .on_packet(self.millis(dts), self.millis(pts), frame.sync);
        if let Some(index) = self.source_rendition {
            self.emit(RenditionEvent::Frame {
                id: TrackId::Video(index),
                frame: MediaFrame {
                    segment_start: starts_segment,
                    ..frame.clone()
                },
            })?;
        }
        let Some(decoder) = self.decoder.as_mut() else {
            return Ok(());
        };
        let mut packet = ffmpeg::Packet::copy(&frame.data);
        packet.set_pts(Some(pts));
        packet.set_dts(Some(dts));
        if frame.sync {
            packet.set_flags(ffmpeg::packet::Flags::KEY);
        }
        if let Err(e) = decoder.send_packet(&packet) {
            // a corrupt access unit: the decoder conceals it; the broadcast goes on
            tracing::debug!(error = %e, "the decoder rejected a video frame");
        }
        self.receive_decoded()
    }

    /// The publisher was lost (it may come back): every frame the decoder and the encoders
    /// hold is encoded and handed to packaging before the pause itself, so packaging publishes
    /// everything up to the loss at once. A new decoder and new encoders take what follows,
    /// which starts a segment at its first keyframe.
    fn pause(&mut self) -> Result<(), TranscodeError> {
        if !self.started {
            return Ok(());
        }
        if self.decoder.is_some() {
            self.drain_decoder()?;
            if let Some(source) = &self.source_video {
                self.decoder = Some(open_decoder(source, None)?);
            }
            self.awaiting_keyframe = true;
        }
        let mut flushed = Vec::new();
        for lane in &self.lanes {
            let Some(queue) = &lane.queue else { continue };
            let (done, answer) = std_mpsc::sync_channel(1);
            queue
                .send(RungMessage::Flush(done))
                .map_err(|_| TranscodeError::WorkerGone(lane.name.clone()))?;
            flushed.push((lane.name.clone(), answer));
        }
        if let Some((queue, _)) = &self.audio {
            let (done, answer) = std_mpsc::sync_channel(1);
            queue
                .send(AudioInput::Flush(done))
                .map_err(|_| TranscodeError::WorkerGone("audio".into()))?;
            flushed.push(("audio".into(), answer));
        }
        // every rung's and the audio's last frames reach packaging before the pause does
        for (name, answer) in flushed {
            answer
                .recv()
                .map_err(|_| TranscodeError::WorkerGone(name))?;
        }
        self.cadence.restart();
        self.emit(RenditionEvent::Pause)
    }

    fn drain_decoder(&mut self) -> Result<(), TranscodeError> {
        if let Some(decoder) = self.decoder.as_mut() {
            let _ = decoder.send_eof();
            self.receive_decoded()?;
        }
        Ok(())
    }

    /// Fans every frame the decoder has ready out to the rungs.
    fn receive_decoded(&mut self) -> Result<(), TranscodeError> {
        loop {
            let mut decoded = ffmpeg::frame::Video::empty();
            let Some(decoder) = self.decoder.as_mut() else {
                return Ok(());
            };
            if decoder.receive_frame(&mut decoded).is_err() {
                return Ok(());
            }
            let Some(pts) = decoded.timestamp().or(decoded.pts()) else {
                continue;
            };
            let pts_ms = self.millis(pts);
            let segment_start = self.cadence.on_decoded(pts_ms);
            let may_skip = !segment_start && self.lag.behind(pts_ms, Instant::now()) > MAX_LAG_SECS;
            let frame = Arc::new(decoded);
            if let Some((queue, _)) = &self.posters {
                if self.poster_clock.due(pts_ms, segment_start) {
                    // full: the poster thread is busy with the last one; skip this one
                    let _ = queue.try_send(frame.clone());
                }
            }
            for lane in &mut self.lanes {
                if !lane.cap.keep(pts_ms, segment_start) {
                    continue;
                }
                let Some(queue) = &lane.queue else { continue };
                let item = RungMessage::Frame(RungInput {
                    frame: frame.clone(),
                    pts,
                    segment_start,
                });
                let sent = if !may_skip {
                    queue.send(item).map_err(|_| ())
                } else {
                    match queue.try_send(item) {
                        Err(std_mpsc::TrySendError::Full(_)) => {
                            lane.dropped += 1;
                            Ok(())
                        }
                        other => other.map_err(|_| ()),
                    }
                };
                if sent.is_err() {
                    return Err(TranscodeError::WorkerGone(lane.name.clone()));
                }
            }
            self.report_drops();
        }
    }

    /// `ticks` of the source clock in milliseconds, for decisions only.
    fn millis(&self, ticks: i64) -> i64 {
        Timestamp::new(ticks, self.clock)
            .rescale(Timestamp::MILLIS)
            .ticks
    }

    fn report_drops(&mut self) {
        if self.last_drop_report.elapsed() < DROP_REPORT_EVERY {
            return;
        }
        self.report_drops_now();
    }

    /// Counts and logs the frames skipped since the last report (also at the end, so the
    /// counter holds every skipped frame of the broadcast).
    fn report_drops_now(&mut self) {
        self.last_drop_report = Instant::now();
        for lane in &mut self.lanes {
            if lane.dropped > 0 {
                metrics::counter!(
                    crate::telemetry::TRANSCODE_DROPPED,
                    "stream" => self.job.stats.id.playback_id.clone(),
                    "rendition" => lane.name.clone()
                )
                .increment(lane.dropped);
                tracing::warn!(
                    rendition = %lane.name,
                    dropped = lane.dropped,
                    "rung cannot keep up with real time: frames skipped (lower frame rate; \
                     segment starts are kept). Use a faster preset or fewer rungs"
                );
                lane.dropped = 0;
            }
        }
    }

    fn on_audio(&mut self, frame: MediaFrame) -> Result<(), TranscodeError> {
        // before the plan, audio waits for the first keyframe (its rendition starts with the
        // video)
        let Some((queue, _)) = &self.audio else {
            if !self.started {
                self.early_audio.push(frame);
            }
            return Ok(());
        };
        queue
            .send(AudioInput::Frame(frame))
            .map_err(|_| TranscodeError::WorkerGone("audio".into()))
    }

    /// Closes every worker queue, waits for each thread to flush, then ends the output.
    fn finish(&mut self) {
        self.report_drops_now();
        for lane in &mut self.lanes {
            lane.queue = None;
        }
        if let Some((queue, thread)) = self.audio.take() {
            drop(queue);
            let _ = thread.join();
        }
        if let Some((queue, thread)) = self.posters.take() {
            drop(queue);
            let _ = thread.join();
        }
        for lane in &mut self.lanes {
            if let Some(thread) = lane.thread.take() {
                let _ = thread.join();
            }
        }
        let _ = self.output.blocking_send(RenditionEvent::End);
    }
}

fn video_track(codec: CodecConfig) -> TrackInfo {
    TrackInfo {
        kind: TrackKind::Video,
        codec,
    }
}

/// The source's picture size: from its configuration, else (VP9, AV1 without a sequence
/// header in its record) from the first keyframe.
fn source_size(source: &CodecConfig, keyframe: &MediaFrame) -> Option<(u32, u32)> {
    source.video_size().or_else(|| match source {
        CodecConfig::Vp9(_) => vp9_keyframe_size(&keyframe.data),
        CodecConfig::Av1(_) => crate::media::av1_sequence_header_size(&keyframe.data),
        _ => None,
    })
}

/// A decoder for `config`; refuses pictures above `MAX_SOURCE_PIXELS`, at the start or after a
/// mid-stream change alike (`size`, when known), and (through FFmpeg's `max_pixels`) when a
/// parameter set inside the stream asks for more. It decodes on `DECODER_THREADS` slice
/// threads: frame threads would add a frame of delay and a picture buffer per thread. AV1 is
/// decoded by libdav1d (FFmpeg 5.1's own AV1 decoder needs a hardware accelerator).
pub(crate) fn open_decoder(
    config: &CodecConfig,
    size: Option<(u32, u32)>,
) -> Result<ffmpeg::decoder::Video, TranscodeError> {
    if let Some((width, height)) = size.or_else(|| config.video_size()) {
        if u64::from(width) * u64::from(height) > MAX_SOURCE_PIXELS {
            return Err(TranscodeError::SourceTooLarge(width, height));
        }
    }
    let (codec, extradata) = match config {
        CodecConfig::Avc(avc) => (
            ffmpeg::decoder::find(ffmpeg::codec::Id::H264),
            Some(&avc.record),
        ),
        CodecConfig::Hevc(hevc) => (
            ffmpeg::decoder::find(ffmpeg::codec::Id::HEVC),
            Some(&hevc.record),
        ),
        CodecConfig::Av1(av1) => (
            ffmpeg::decoder::find_by_name("libdav1d")
                .or_else(|| ffmpeg::decoder::find(ffmpeg::codec::Id::AV1)),
            Some(&av1.record),
        ),
        CodecConfig::Vp9(_) => (ffmpeg::decoder::find(ffmpeg::codec::Id::VP9), None),
        CodecConfig::Vp8(_) => (ffmpeg::decoder::find(ffmpeg::codec::Id::VP8), None),
        CodecConfig::Aac(_) | CodecConfig::Opus(_) => (None, None),
    };
    let codec = codec.ok_or(TranscodeError::NoDecoder(config.name()))?;
    let mut context = ffmpeg::codec::Context::new_with_codec(codec);
    if let Some(extradata) = extradata {
        ffi::set_extradata(&mut context, extradata)
            .map_err(|e| TranscodeError::open("video decoder", e))?;
    }
    ffi::set_max_pixels(&mut context, MAX_SOURCE_PIXELS);
    context.set_threading(ffmpeg::codec::threading::Config {
        kind: ffmpeg::codec::threading::Type::Slice,
        count: DECODER_THREADS,
        ..Default::default()
    });
    context
        .decoder()
        .video()
        .map_err(|e| TranscodeError::open("video decoder", e))
}
