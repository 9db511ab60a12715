//! One rung's worker thread: scale the shared decoded frame to the rung's size (swscale; a rung
//! at the source's size and pixel format takes the decoded frame as is), encode it with
//! libx264, and hand length-prefixed access units to packaging.
//!
//! x264 settings that keep renditions aligned: closed GOPs (`CLOSED_GOP`; FFmpeg's wrapper
//! makes open GOPs otherwise), `scenecut=0`, `keyint` = the segment duration in frames, and an
//! IDR forced (`forced-idr`, picture type I) on exactly the frames the decode thread marks as
//! segment starts. Only those IDRs carry the `segment_start` mark the segmenter cuts at, so a
//! stray x264 keyframe (still a `sync` sample) can never cut one rendition where the others do
//! not. Rate control is ABR with
//! VBV (`vbv-maxrate`, `vbv-bufsize` from the ladder).

use std::collections::VecDeque;
use std::sync::mpsc as std_mpsc;
use std::sync::Arc;
use std::time::{Duration, Instant};

use ffmpeg::format::Pixel;
use ffmpeg::software::scaling;
use ffmpeg_next as ffmpeg;
use tokio::sync::mpsc;

use super::avc;
use super::ffi;
use super::plan::EncodeRung;
use super::TranscodeError;
use crate::hub::LiveStats;
use crate::media::{AvcConfig, MediaFrame, RenditionEvent, Timestamp, TrackId, TrackKind};

/// Decoded frames queued per rung. When a rung's queue is full the decode thread drops that
/// rung's frame (its frame rate falls), except segment starts, for which it waits.
pub const RUNG_QUEUE: usize = 8;
/// How often a rung reports its speed.
const REPORT_EVERY: Duration = Duration::from_secs(5);

/// What the decode thread sends a rung.
pub enum RungMessage {
    Frame(RungInput),
    /// The publisher was lost: hand packaging every frame the encoder holds, answer on the
    /// sender, and continue with a fresh encoder (what may follow starts with an IDR).
    Flush(std_mpsc::SyncSender<()>),
}

/// A decoded source frame for one rung.
pub struct RungInput {
    pub frame: Arc<ffmpeg::frame::Video>,
    /// In the source's clock, which is the encoder's time base.
    pub pts: i64,
    pub segment_start: bool,
}

/// An opened rung: the encoder and the configuration packaging announces.
pub struct RungEncoder {
    pub config: AvcConfig,
    encoder: ffmpeg::encoder::Video,
    rung: EncodeRung,
    keyint: u32,
    /// The encoder's time base, 1/`timescale`: the source video's clock.
    timescale: u32,
}

impl RungEncoder {
    /// Opens libx264 for `rung`; `keyint` is the segment duration in frames (0 for "only
    /// forced IDRs": when segment starts follow the source's keyframes). Its time base is
    /// `timescale`, the source video's clock: frames keep their source timestamps exactly.
    pub fn open(rung: &EncodeRung, keyint: u32, timescale: u32) -> Result<Self, TranscodeError> {
        let requested_keyint = keyint;
        let codec = ffmpeg::encoder::find_by_name("libx264").ok_or(TranscodeError::NoX264)?;
        let mut context = ffmpeg::codec::Context::new_with_codec(codec)
            .encoder()
            .video()
            .map_err(|e| TranscodeError::open(&rung.rung.name, e))?;
        context.set_width(rung.width);
        context.set_height(rung.height);
        context.set_format(Pixel::YUV420P);
        context.set_time_base(ffmpeg::Rational::new(
            1,
            timescale.clamp(1, i32::MAX as u32) as i32,
        ));
        context.set_frame_rate(Some(ffmpeg::Rational::from(rung.fps)));
        context.set_bit_rate(rung.rung.bitrate as usize);
        context.set_max_bit_rate(rung.rung.max_rate as usize);
        context.set_flags(ffmpeg::codec::Flags::GLOBAL_HEADER | ffmpeg::codec::Flags::CLOSED_GOP);
        let keyint = if keyint == 0 {
            // far beyond any segment: only the forced IDRs start GOPs
            (rung.fps * crate::package::segmenter::MAX_SEGMENT_SECS).ceil() as u32
        } else {
            keyint
        };
        context.set_gop(keyint);
        let mut options = ffmpeg::Dictionary::new();
        options.set("preset", &rung.rung.preset);
        options.set("profile", &rung.rung.profile);
        options.set("forced-idr", "1");
        if rung.rung.low_delay {
            // no B-frames, no lookahead, slice threads: a frame leaves as soon as it is coded
            options.set("tune", "zerolatency");
        }
        options.set(
            "x264-params",
            &format!(
                "scenecut=0:keyint={keyint}:min-keyint={keyint}:vbv-maxrate={}:vbv-bufsize={}:level={}",
                rung.rung.max_rate / 1000,
                rung.rung.buffer / 1000,
                rung.rung.level
            ),
        );
        let encoder = context
            .open_with(options)
            .map_err(|e| TranscodeError::open(&rung.rung.name, e))?;
        let config = avc::config_from_annex_b(&ffi::extradata(&encoder))
            .map_err(|e| TranscodeError::EncoderConfig(rung.rung.name.clone(), e.to_string()))?;
        Ok(Self {
            config,
            encoder,
            rung: rung.clone(),
            keyint: requested_keyint,
            timescale,
        })
    }

    /// The same encoder, opened anew (after a flush). x264 writes the same parameter sets for
    /// the same settings; if it did not, the rendition's announced configuration would be
    /// wrong, so that is an error.
    fn reopen(&self) -> Result<Self, TranscodeError> {
        let fresh = Self::open(&self.rung, self.keyint, self.timescale)?;
        if fresh.config != self.config {
            return Err(TranscodeError::EncoderConfig(
                self.rung.rung.name.clone(),
                "the reopened encoder announced other parameter sets".into(),
            ));
        }
        Ok(fresh)
    }
}

/// The worker: runs until its input closes (then flushes) or packaging goes away.
pub fn run(
    mut rung: RungEncoder,
    id: TrackId,
    input: std_mpsc::Receiver<RungMessage>,
    output: mpsc::Sender<RenditionEvent>,
    stats: Arc<LiveStats>,
) {
    let mut worker = Worker {
        id,
        name: rung.rung.rung.name.clone(),
        output,
        scaler: None,
        target: ffmpeg::frame::Video::new(Pixel::YUV420P, rung.rung.width, rung.rung.height),
        segment_starts: VecDeque::new(),
        speed: SpeedMeter::new(),
        stats,
    };
    let result = (|| {
        while let Ok(message) = input.recv() {
            match message {
                RungMessage::Frame(item) => {
                    let began = Instant::now();
                    worker.encode(&mut rung, item)?;
                    worker.speed.add_work(began.elapsed());
                    worker.report();
                }
                RungMessage::Flush(done) => {
                    rung.encoder
                        .send_eof()
                        .map_err(|e| TranscodeError::encode(&worker.name, e))?;
                    worker.drain(&mut rung)?;
                    worker.segment_starts.clear();
                    rung = rung.reopen()?;
                    // the decode thread waits for this; it is gone only if the broadcast ended
                    let _ = done.send(());
                }
            }
        }
        rung.encoder
            .send_eof()
            .map_err(|e| TranscodeError::encode(&worker.name, e))?;
        worker.drain(&mut rung)
    })();
    match result {
        Ok(()) | Err(TranscodeError::OutputClosed) => {}
        Err(e) => tracing::error!(rendition = %worker.name, error = %e, "rung stopped"),
    }
}

struct Worker {
    id: TrackId,
    name: String,
    output: mpsc::Sender<RenditionEvent>,
    scaler: Option<scaling::Context>,
    target: ffmpeg::frame::Video,
    /// Presentation times (encoder ticks) of forced IDRs not yet out of the encoder.
    segment_starts: VecDeque<i64>,
    speed: SpeedMeter,
    /// The broadcast's live statistics, where the rung reports its speed.
    stats: Arc<LiveStats>,
}

impl Worker {
    fn encode(&mut self, rung: &mut RungEncoder, item: RungInput) -> Result<(), TranscodeError> {
        let name = &rung.rung.rung.name;
        let source = &*item.frame;
        let same_picture = (source.format(), source.width(), source.height())
            == (Pixel::YUV420P, rung.rung.width, rung.rung.height);
        let mut shared;
        let frame = if same_picture {
            // a rung at the source's size: no scaling, no pixel copy
            shared = ffi::share(source).map_err(|e| TranscodeError::encode(name, e))?;
            &mut shared
        } else {
            self.scale(rung, source)?;
            &mut self.target
        };
        frame.set_pts(Some(item.pts));
        frame.set_kind(if item.segment_start {
            self.segment_starts.push_back(item.pts);
            ffmpeg::picture::Type::I
        } else {
            ffmpeg::picture::Type::None
        });
        rung.encoder
            .send_frame(frame)
            .map_err(|e| TranscodeError::encode(name, e))?;
        self.speed.add_media(
            Timestamp::new(item.pts, rung.timescale)
                .rescale(Timestamp::MILLIS)
                .ticks,
        );
        self.drain(rung)
    }

    /// Scales `source` into `self.target` at the rung's size.
    fn scale(
        &mut self,
        rung: &RungEncoder,
        source: &ffmpeg::frame::Video,
    ) -> Result<(), TranscodeError> {
        let name = &rung.rung.rung.name;
        let stale = self.scaler.as_ref().is_none_or(|s| {
            let input = s.input();
            (input.format, input.width, input.height)
                != (source.format(), source.width(), source.height())
        });
        if stale {
            // first frame, or the source changed size mid-stream: the rung keeps its size
            self.scaler = Some(
                scaling::Context::get(
                    source.format(),
                    source.width(),
                    source.height(),
                    Pixel::YUV420P,
                    rung.rung.width,
                    rung.rung.height,
                    scaling::Flags::BICUBIC,
                )
                .map_err(|e| TranscodeError::encode(name, e))?,
            );
        }
        ffi::make_writable(&mut self.target).map_err(|e| TranscodeError::encode(name, e))?;
        if let Some(scaler) = self.scaler.as_mut() {
            scaler
                .run(source, &mut self.target)
                .map_err(|e| TranscodeError::encode(name, e))?;
        }
        Ok(())
    }

    /// Hands every packet the encoder has ready to packaging.
    fn drain(&mut self, rung: &mut RungEncoder) -> Result<(), TranscodeError> {
        let mut packet = ffmpeg::Packet::empty();
        while rung.encoder.receive_packet(&mut packet).is_ok() {
            let (Some(pts), Some(data)) = (packet.pts(), packet.data()) else {
                continue;
            };
            let dts = packet.dts().unwrap_or(pts);
            let sync = packet.is_key();
            let mut segment_start = false;
            if sync && self.segment_starts.contains(&pts) {
                while self.segment_starts.pop_front_if(|p| *p <= pts).is_some() {}
                segment_start = true;
            }
            let frame = MediaFrame {
                kind: TrackKind::Video,
                dts: Timestamp::new(dts, rung.timescale),
                pts: Timestamp::new(pts, rung.timescale),
                sync,
                segment_start,
                data: avc::to_length_prefixed(data),
            };
            self.output
                .blocking_send(RenditionEvent::Frame { id: self.id, frame })
                .map_err(|_| TranscodeError::OutputClosed)?;
        }
        Ok(())
    }

    fn report(&mut self) {
        if let Some(speed) = self.speed.report() {
            self.stats.set_speed(&self.name, speed);
            if speed < 1.0 {
                tracing::warn!(
                    rendition = %self.name,
                    speed = format!("{speed:.2}"),
                    "this rung encodes slower than real time on this machine; its frames are \
                     dropped when it falls behind (segment starts never are)"
                );
            }
        }
    }
}

/// Media time encoded per second of work (scaling + encoding), over `REPORT_EVERY`: how many
/// times real time this rung could run with the CPU it gets.
pub struct SpeedMeter {
    since: Instant,
    work: Duration,
    first_ms: Option<i64>,
    last_ms: i64,
}

impl Default for SpeedMeter {
    fn default() -> Self {
        Self::new()
    }
}

impl SpeedMeter {
    pub fn new() -> Self {
        Self {
            since: Instant::now(),
            work: Duration::ZERO,
            first_ms: None,
            last_ms: 0,
        }
    }

    pub fn add_media(&mut self, pts_ms: i64) {
        self.first_ms.get_or_insert(pts_ms);
        self.last_ms = self.last_ms.max(pts_ms);
    }

    pub fn add_work(&mut self, work: Duration) {
        self.work += work;
    }

    /// The speed over the last period, once per `REPORT_EVERY`.
    pub fn report(&mut self) -> Option<f64> {
        if self.since.elapsed() < REPORT_EVERY {
            return None;
        }
        let media = (self.last_ms - self.first_ms?) as f64 / 1000.0;
        let work = self.work.as_secs_f64();
        *self = Self::new();
        (work > 0.0 && media > 0.0).then(|| media / work)
    }
}
