//! The byte protocol between the server and a broadcast's transcoding worker, over the
//! worker's stdin (server → worker: the job, then `StreamEvent`s) and stdout (worker → server:
//! `RenditionEvent`s, posters, per-rendition speeds and dropped-frame counts).
//!
//! Every message is `tag: u8`, `length: u32` (big-endian, of the payload), `payload`. The tag
//! says the direction too (server → worker tags are below 16, worker → server tags from 16
//! on), so a confused stream fails at its first message. Every limit is checked before anything
//! is allocated: the header's length against the tag's largest possible payload, then each
//! length inside the payload against its own limit (`MAX_FRAME_DATA`, `MAX_CONFIG`, `MAX_NAME`,
//! …) and against what is left of the payload. A payload must be used up exactly.
//!
//! Codec configurations travel as (codec tag, the record bytes) and are parsed again on the
//! receiving side with the same parsers ingest uses (`encode_codec` / `decode_codec`, the one
//! place that knows every `CodecConfig` variant); the track's kind follows from the codec.
//! Timestamps travel as (ticks `i64`, timescale `u32`), never rounded, with ticks within
//! ±`MAX_TICKS` and a non-zero timescale (the range the segmenter is fuzzed with).
//!
//! The worker decodes attacker-controlled video, so the server treats everything read here as
//! hostile: decoding never panics (the `worker_wire` fuzz target feeds it arbitrary bytes);
//! what the bytes *mean* (rendition names and indexes of this ladder) is checked by
//! `check::OutputCheck`.

use std::io::{self, Read};

use bytes::Bytes;

use crate::media::{
    AacConfig, Av1Config, AvcConfig, CodecConfig, CodecError, HevcConfig, MediaFrame, OpusConfig,
    RenditionEvent, StreamEvent, Timestamp, TrackId, TrackInfo, TrackKind, Vp8Config, Vp9Config,
};
use crate::transcode::ladder::{AudioRung, Ladder, Rung};

/// Bumped whenever a message changes; the worker refuses a job of another version (a server
/// and a worker binary from different builds).
pub const VERSION: u16 = 3;
/// Largest frame payload (one coded access unit or audio frame): RTMP's largest message
/// (`rtmp.max_message_size` ≤ 2^24 − 1 bytes) fits, so no frame ingest accepts is refused here.
pub const MAX_FRAME_DATA: usize = 16 << 20;
/// Largest codec configuration record.
pub const MAX_CONFIG: usize = 64 << 10;
/// Largest name (rendition, playback id, ladder).
pub const MAX_NAME: usize = 256;
/// Largest free text (a ladder's description).
pub const MAX_TEXT: usize = 4096;
/// Largest poster (a 480-wide JPEG is ≈ 40 kB).
pub const MAX_POSTER: usize = 1 << 20;
/// Largest job message.
pub const MAX_JOB: usize = 64 << 10;
/// Most rungs a job carries.
pub const MAX_RUNGS: usize = 64;
/// Most video renditions a worker may announce (every rung and the source).
pub const MAX_VIDEO_RENDITIONS: usize = MAX_RUNGS + 1;
/// Timestamps lie within ±2^40 ticks (141 days at 90 kHz).
pub const MAX_TICKS: i64 = 1 << 40;

const HEADER: usize = 5;

// server → worker
const JOB: u8 = 1;
const TRACK: u8 = 2;
const FRAME: u8 = 3;
const PAUSE: u8 = 4;
const END: u8 = 5;
// worker → server
const OUT_TRACK: u8 = 16;
const OUT_FRAME: u8 = 17;
const OUT_POSTER: u8 = 18;
const OUT_PAUSE: u8 = 19;
const OUT_END: u8 = 20;
const OUT_SPEED: u8 = 21;
const OUT_DROPPED: u8 = 22;

// codec tags
const CODEC_AVC: u8 = 1;
const CODEC_AAC: u8 = 2;
const CODEC_HEVC: u8 = 3;
const CODEC_AV1: u8 = 4;
const CODEC_VP9: u8 = 5;
const CODEC_VP8: u8 = 6;
const CODEC_OPUS: u8 = 7;

/// A frame's fixed fields: kind, dts, pts, flags, data length.
const FRAME_FIELDS: usize = 1 + 12 + 12 + 1 + 4;
/// A track id: kind + index.
const TRACK_ID: usize = 2;
const NAME_FIELD: usize = 2 + MAX_NAME;
const CODEC_FIELD: usize = 1 + 4 + MAX_CONFIG;

#[derive(Debug, thiserror::Error)]
pub enum WireError {
    #[error("the pipe failed: {0}")]
    Io(#[source] io::Error),
    #[error("the stream ended inside a message")]
    Truncated,
    #[error("unknown message tag {0}")]
    UnknownTag(u8),
    #[error("{what} of {len} bytes exceeds the limit of {max} bytes")]
    TooLong {
        what: &'static str,
        len: usize,
        max: usize,
    },
    #[error("message {tag}: {len} bytes left over after its fields")]
    Trailing { tag: u8, len: usize },
    #[error("{what}: {why}")]
    Invalid { what: &'static str, why: String },
    #[error("the codec configuration does not parse: {0}")]
    Codec(#[source] CodecError),
    #[error("protocol version {0}; this binary speaks version {VERSION}")]
    Version(u16),
}

impl WireError {
    fn invalid(what: &'static str, why: impl Into<String>) -> Self {
        Self::Invalid {
            what,
            why: why.into(),
        }
    }
}

/// What a worker transcodes: everything of `TranscodeJob` but the live statistics, which stay
/// in the server (the worker reports speeds to it instead).
#[derive(Debug, Clone, PartialEq)]
pub struct Job {
    pub playback_id: String,
    pub segment_duration: f64,
    pub ladder: Ladder,
}

/// Server → worker.
#[derive(Debug, Clone, PartialEq)]
pub enum ToWorker {
    /// The first message, exactly once.
    Job(Job),
    Event(StreamEvent),
}

/// Worker → server.
#[derive(Debug, Clone, PartialEq)]
pub enum FromWorker {
    Event(RenditionEvent),
    /// A rung's speed (media seconds per second of work), as the rung reported it.
    Speed {
        rendition: String,
        speed: f64,
    },
    /// Frames a rung skipped since the last report.
    Dropped {
        rendition: String,
        frames: u64,
    },
}

/// The largest payload a tag may carry, or `None` for an unknown tag.
fn max_payload(tag: u8) -> Option<usize> {
    Some(match tag {
        JOB => MAX_JOB,
        TRACK => CODEC_FIELD,
        FRAME => FRAME_FIELDS + MAX_FRAME_DATA,
        PAUSE | END | OUT_PAUSE | OUT_END => 0,
        OUT_TRACK => TRACK_ID + NAME_FIELD + CODEC_FIELD,
        OUT_FRAME => TRACK_ID + FRAME_FIELDS + MAX_FRAME_DATA,
        OUT_POSTER => 4 + MAX_POSTER,
        OUT_SPEED | OUT_DROPPED => NAME_FIELD + 8,
        _ => return None,
    })
}

// ---- encoding ----

/// One message being written: the header's length is filled in by `finish`.
struct Writer(Vec<u8>);

impl Writer {
    fn new(tag: u8) -> Self {
        let mut buf = Vec::with_capacity(64);
        buf.push(tag);
        buf.extend_from_slice(&[0; 4]);
        Self(buf)
    }

    fn u8(&mut self, v: u8) {
        self.0.push(v);
    }
    fn u16(&mut self, v: u16) {
        self.0.extend_from_slice(&v.to_be_bytes());
    }
    fn u32(&mut self, v: u32) {
        self.0.extend_from_slice(&v.to_be_bytes());
    }
    fn u64(&mut self, v: u64) {
        self.0.extend_from_slice(&v.to_be_bytes());
    }
    fn i64(&mut self, v: i64) {
        self.0.extend_from_slice(&v.to_be_bytes());
    }
    fn f64(&mut self, v: f64) {
        self.u64(v.to_bits());
    }

    fn str(&mut self, s: &str, max: usize, what: &'static str) -> Result<(), WireError> {
        if s.len() > max {
            return Err(WireError::TooLong {
                what,
                len: s.len(),
                max,
            });
        }
        self.u16(s.len() as u16);
        self.0.extend_from_slice(s.as_bytes());
        Ok(())
    }

    fn bytes(&mut self, b: &[u8], max: usize, what: &'static str) -> Result<(), WireError> {
        if b.len() > max {
            return Err(WireError::TooLong {
                what,
                len: b.len(),
                max,
            });
        }
        self.u32(b.len() as u32);
        self.0.extend_from_slice(b);
        Ok(())
    }

    fn timestamp(&mut self, t: Timestamp, what: &'static str) -> Result<(), WireError> {
        check_timestamp(t.ticks, t.timescale, what)?;
        self.i64(t.ticks);
        self.u32(t.timescale);
        Ok(())
    }

    fn frame(&mut self, f: &MediaFrame) -> Result<(), WireError> {
        self.u8(kind_byte(f.kind));
        self.timestamp(f.dts, "a frame's decode time")?;
        self.timestamp(f.pts, "a frame's presentation time")?;
        self.u8(u8::from(f.sync) | (u8::from(f.segment_start) << 1));
        self.bytes(&f.data, MAX_FRAME_DATA, "frame data")
    }

    fn track_id(&mut self, id: TrackId) -> Result<(), WireError> {
        match id {
            TrackId::Video(index) if index < MAX_VIDEO_RENDITIONS => {
                self.u8(0);
                self.u8(index as u8);
            }
            TrackId::Video(index) => {
                return Err(WireError::invalid(
                    "video rendition",
                    format!("index {index} is not below {MAX_VIDEO_RENDITIONS}"),
                ))
            }
            TrackId::Audio => {
                self.u8(1);
                self.u8(0);
            }
        }
        Ok(())
    }

    fn finish(mut self) -> Vec<u8> {
        let len = (self.0.len() - HEADER) as u32;
        self.0[1..HEADER].copy_from_slice(&len.to_be_bytes());
        self.0
    }
}

fn kind_byte(kind: TrackKind) -> u8 {
    match kind {
        TrackKind::Video => 0,
        TrackKind::Audio => 1,
    }
}

/// Writes a codec configuration as (codec tag, record). The one place, with `decode_codec`,
/// that lists every `CodecConfig` variant.
fn encode_codec(w: &mut Writer, codec: &CodecConfig) -> Result<(), WireError> {
    let (tag, record) = match codec {
        CodecConfig::Avc(avc) => (CODEC_AVC, avc.record.clone()),
        CodecConfig::Hevc(hevc) => (CODEC_HEVC, hevc.record.clone()),
        CodecConfig::Av1(av1) => (CODEC_AV1, av1.record.clone()),
        CodecConfig::Vp9(vp9) => (CODEC_VP9, vp9.record.clone()),
        CodecConfig::Vp8(vp8) => (CODEC_VP8, vp8.record()),
        CodecConfig::Aac(aac) => (CODEC_AAC, aac.asc.clone()),
        CodecConfig::Opus(opus) => (CODEC_OPUS, opus.head.clone()),
    };
    w.u8(tag);
    w.bytes(&record, MAX_CONFIG, "codec configuration")
}

/// Reads what `encode_codec` wrote and parses the record again with the parser ingest uses; the
/// track's kind follows from the codec.
fn decode_codec(r: &mut Reader) -> Result<TrackInfo, WireError> {
    let tag = r.u8()?;
    let record = r.bytes(MAX_CONFIG, "codec configuration")?;
    let (kind, codec) = match tag {
        CODEC_AVC => (
            TrackKind::Video,
            CodecConfig::Avc(AvcConfig::parse(record).map_err(WireError::Codec)?),
        ),
        CODEC_HEVC => (
            TrackKind::Video,
            CodecConfig::Hevc(HevcConfig::parse(record).map_err(WireError::Codec)?),
        ),
        CODEC_AV1 => (
            TrackKind::Video,
            CodecConfig::Av1(Av1Config::parse(record).map_err(WireError::Codec)?),
        ),
        CODEC_VP9 => (
            TrackKind::Video,
            CodecConfig::Vp9(Vp9Config::parse(record).map_err(WireError::Codec)?),
        ),
        CODEC_VP8 => (
            TrackKind::Video,
            CodecConfig::Vp8(Vp8Config::parse(&record).map_err(WireError::Codec)?),
        ),
        CODEC_AAC => (
            TrackKind::Audio,
            CodecConfig::Aac(AacConfig::parse(record).map_err(WireError::Codec)?),
        ),
        CODEC_OPUS => (
            TrackKind::Audio,
            CodecConfig::Opus(OpusConfig::parse(record).map_err(WireError::Codec)?),
        ),
        other => {
            return Err(WireError::invalid(
                "codec",
                format!("unknown codec tag {other}"),
            ))
        }
    };
    Ok(TrackInfo { kind, codec })
}

/// The bytes of one server → worker message.
pub fn encode_to_worker(message: &ToWorker) -> Result<Vec<u8>, WireError> {
    let w = match message {
        ToWorker::Job(job) => {
            let mut w = Writer::new(JOB);
            encode_job(&mut w, job)?;
            if w.0.len() - HEADER > MAX_JOB {
                return Err(WireError::TooLong {
                    what: "the job",
                    len: w.0.len() - HEADER,
                    max: MAX_JOB,
                });
            }
            w
        }
        ToWorker::Event(StreamEvent::Track(info)) => {
            let mut w = Writer::new(TRACK);
            encode_codec(&mut w, &info.codec)?;
            w
        }
        ToWorker::Event(StreamEvent::Frame(frame)) => {
            let mut w = Writer::new(FRAME);
            w.frame(frame)?;
            w
        }
        ToWorker::Event(StreamEvent::Pause) => Writer::new(PAUSE),
        ToWorker::Event(StreamEvent::End) => Writer::new(END),
    };
    Ok(w.finish())
}

/// The bytes of one worker → server message.
pub fn encode_from_worker(message: &FromWorker) -> Result<Vec<u8>, WireError> {
    let w = match message {
        FromWorker::Event(RenditionEvent::Track { id, name, info }) => {
            let mut w = Writer::new(OUT_TRACK);
            w.track_id(*id)?;
            w.str(name, MAX_NAME, "rendition name")?;
            encode_codec(&mut w, &info.codec)?;
            w
        }
        FromWorker::Event(RenditionEvent::Frame { id, frame }) => {
            let mut w = Writer::new(OUT_FRAME);
            w.track_id(*id)?;
            w.frame(frame)?;
            w
        }
        FromWorker::Event(RenditionEvent::Poster(jpeg)) => {
            let mut w = Writer::new(OUT_POSTER);
            w.bytes(jpeg, MAX_POSTER, "poster")?;
            w
        }
        FromWorker::Event(RenditionEvent::Pause) => Writer::new(OUT_PAUSE),
        FromWorker::Event(RenditionEvent::End) => Writer::new(OUT_END),
        FromWorker::Speed { rendition, speed } => {
            let mut w = Writer::new(OUT_SPEED);
            w.str(rendition, MAX_NAME, "rendition name")?;
            w.f64(*speed);
            w
        }
        FromWorker::Dropped { rendition, frames } => {
            let mut w = Writer::new(OUT_DROPPED);
            w.str(rendition, MAX_NAME, "rendition name")?;
            w.u64(*frames);
            w
        }
    };
    Ok(w.finish())
}

fn encode_job(w: &mut Writer, job: &Job) -> Result<(), WireError> {
    w.u16(VERSION);
    w.str(&job.playback_id, MAX_NAME, "playback id")?;
    w.f64(job.segment_duration);
    let ladder = &job.ladder;
    w.str(&ladder.name, MAX_NAME, "ladder name")?;
    w.str(&ladder.description, MAX_TEXT, "ladder description")?;
    w.u8(u8::from(ladder.source));
    if ladder.rungs.len() > MAX_RUNGS {
        return Err(WireError::TooLong {
            what: "the ladder's rung list",
            len: ladder.rungs.len(),
            max: MAX_RUNGS,
        });
    }
    w.u8(ladder.rungs.len() as u8);
    for rung in &ladder.rungs {
        w.str(&rung.name, MAX_NAME, "rung name")?;
        w.u32(rung.height);
        w.u64(rung.bitrate);
        w.u64(rung.max_rate);
        w.u64(rung.buffer);
        w.str(&rung.preset, MAX_NAME, "rung preset")?;
        w.str(&rung.profile, MAX_NAME, "rung profile")?;
        w.str(&rung.level, MAX_NAME, "rung level")?;
        w.f64(rung.max_fps);
        w.u8(u8::from(rung.low_delay));
    }
    w.u64(ladder.audio.bitrate);
    w.u8(ladder.audio.channels);
    w.u32(ladder.audio.sample_rate);
    Ok(())
}

// ---- decoding ----

/// The fields of one payload, every read bounded by what is left.
struct Reader {
    payload: Bytes,
    pos: usize,
}

impl Reader {
    fn take(&mut self, n: usize) -> Result<&[u8], WireError> {
        let end = self
            .pos
            .checked_add(n)
            .filter(|end| *end <= self.payload.len())
            .ok_or(WireError::Truncated)?;
        let field = &self.payload[self.pos..end];
        self.pos = end;
        Ok(field)
    }

    fn array<const N: usize>(&mut self) -> Result<[u8; N], WireError> {
        let mut out = [0; N];
        out.copy_from_slice(self.take(N)?);
        Ok(out)
    }

    fn u8(&mut self) -> Result<u8, WireError> {
        Ok(self.array::<1>()?[0])
    }
    fn u16(&mut self) -> Result<u16, WireError> {
        Ok(u16::from_be_bytes(self.array()?))
    }
    fn u32(&mut self) -> Result<u32, WireError> {
        Ok(u32::from_be_bytes(self.array()?))
    }
    fn u64(&mut self) -> Result<u64, WireError> {
        Ok(u64::from_be_bytes(self.array()?))
    }
    fn i64(&mut self) -> Result<i64, WireError> {
        Ok(i64::from_be_bytes(self.array()?))
    }
    fn f64(&mut self, what: &'static str) -> Result<f64, WireError> {
        let v = f64::from_bits(self.u64()?);
        if !v.is_finite() {
            return Err(WireError::invalid(
                what,
                format!("{v} is not a finite number"),
            ));
        }
        Ok(v)
    }

    fn str(&mut self, max: usize, what: &'static str) -> Result<String, WireError> {
        let len = usize::from(self.u16()?);
        if len > max {
            return Err(WireError::TooLong { what, len, max });
        }
        let raw = self.take(len)?;
        std::str::from_utf8(raw)
            .map(str::to_string)
            .map_err(|_| WireError::invalid(what, "not UTF-8"))
    }

    /// A length-prefixed byte field, sliced out of the payload without a copy.
    fn bytes(&mut self, max: usize, what: &'static str) -> Result<Bytes, WireError> {
        let len = self.u32()? as usize;
        if len > max {
            return Err(WireError::TooLong { what, len, max });
        }
        let start = self.pos;
        self.take(len)?;
        Ok(self.payload.slice(start..start + len))
    }

    fn timestamp(&mut self, what: &'static str) -> Result<Timestamp, WireError> {
        let ticks = self.i64()?;
        let timescale = self.u32()?;
        check_timestamp(ticks, timescale, what)?;
        Ok(Timestamp::new(ticks, timescale))
    }

    fn kind(&mut self) -> Result<TrackKind, WireError> {
        match self.u8()? {
            0 => Ok(TrackKind::Video),
            1 => Ok(TrackKind::Audio),
            other => Err(WireError::invalid("track kind", format!("{other}"))),
        }
    }

    fn frame(&mut self) -> Result<MediaFrame, WireError> {
        let kind = self.kind()?;
        let dts = self.timestamp("a frame's decode time")?;
        let pts = self.timestamp("a frame's presentation time")?;
        let flags = self.u8()?;
        if flags & !0b11 != 0 {
            return Err(WireError::invalid("frame flags", format!("{flags:#04x}")));
        }
        let data = self.bytes(MAX_FRAME_DATA, "frame data")?;
        Ok(MediaFrame {
            kind,
            dts,
            pts,
            sync: flags & 1 != 0,
            segment_start: flags & 2 != 0,
            data,
        })
    }

    fn track_id(&mut self) -> Result<TrackId, WireError> {
        let kind = self.kind()?;
        let index = usize::from(self.u8()?);
        match kind {
            TrackKind::Video if index < MAX_VIDEO_RENDITIONS => Ok(TrackId::Video(index)),
            TrackKind::Video => Err(WireError::invalid(
                "video rendition",
                format!("index {index} is not below {MAX_VIDEO_RENDITIONS}"),
            )),
            TrackKind::Audio if index == 0 => Ok(TrackId::Audio),
            TrackKind::Audio => Err(WireError::invalid(
                "audio rendition",
                format!("index {index}"),
            )),
        }
    }

    fn done(self, tag: u8) -> Result<(), WireError> {
        match self.payload.len() - self.pos {
            0 => Ok(()),
            len => Err(WireError::Trailing { tag, len }),
        }
    }
}

fn check_timestamp(ticks: i64, timescale: u32, what: &'static str) -> Result<(), WireError> {
    if timescale == 0 {
        return Err(WireError::invalid(what, "timescale 0"));
    }
    if !(-MAX_TICKS..=MAX_TICKS).contains(&ticks) {
        return Err(WireError::invalid(
            what,
            format!("{ticks} ticks is beyond ±{MAX_TICKS}"),
        ));
    }
    Ok(())
}

/// Reads one message's tag and payload; `Ok(None)` at a clean end of the stream (between
/// messages). The length is checked against the tag's limit before the payload is allocated.
fn read_message(
    input: &mut impl Read,
    server_side: bool,
) -> Result<Option<(u8, Reader)>, WireError> {
    let mut header = [0u8; HEADER];
    let mut filled = 0;
    while filled < HEADER {
        match input.read(&mut header[filled..]) {
            Ok(0) if filled == 0 => return Ok(None),
            Ok(0) => return Err(WireError::Truncated),
            Ok(n) => filled += n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(WireError::Io(e)),
        }
    }
    let tag = header[0];
    let len = u32::from_be_bytes([header[1], header[2], header[3], header[4]]) as usize;
    // each side reads only the other side's tags
    let ours = if server_side { tag >= 16 } else { tag < 16 };
    let max = max_payload(tag)
        .filter(|_| ours)
        .ok_or(WireError::UnknownTag(tag))?;
    if len > max {
        return Err(WireError::TooLong {
            what: "message payload",
            len,
            max,
        });
    }
    let mut payload = vec![0u8; len];
    input.read_exact(&mut payload).map_err(|e| match e.kind() {
        io::ErrorKind::UnexpectedEof => WireError::Truncated,
        _ => WireError::Io(e),
    })?;
    Ok(Some((
        tag,
        Reader {
            payload: Bytes::from(payload),
            pos: 0,
        },
    )))
}

/// Reads the next worker → server message (the server's side); `Ok(None)` when the worker
/// closed its output between messages.
pub fn read_from_worker(input: &mut impl Read) -> Result<Option<FromWorker>, WireError> {
    let Some((tag, mut r)) = read_message(input, true)? else {
        return Ok(None);
    };
    let message = match tag {
        OUT_TRACK => {
            let id = r.track_id()?;
            let name = r.str(MAX_NAME, "rendition name")?;
            let info = decode_codec(&mut r)?;
            FromWorker::Event(RenditionEvent::Track { id, name, info })
        }
        OUT_FRAME => {
            let id = r.track_id()?;
            let frame = r.frame()?;
            FromWorker::Event(RenditionEvent::Frame { id, frame })
        }
        OUT_POSTER => FromWorker::Event(RenditionEvent::Poster(r.bytes(MAX_POSTER, "poster")?)),
        OUT_PAUSE => FromWorker::Event(RenditionEvent::Pause),
        OUT_END => FromWorker::Event(RenditionEvent::End),
        OUT_SPEED => FromWorker::Speed {
            rendition: r.str(MAX_NAME, "rendition name")?,
            speed: r.f64("speed")?,
        },
        OUT_DROPPED => FromWorker::Dropped {
            rendition: r.str(MAX_NAME, "rendition name")?,
            frames: r.u64()?,
        },
        other => return Err(WireError::UnknownTag(other)),
    };
    r.done(tag)?;
    Ok(Some(message))
}

/// Reads the next server → worker message (the worker's side); `Ok(None)` when the server
/// closed the worker's input between messages.
pub fn read_to_worker(input: &mut impl Read) -> Result<Option<ToWorker>, WireError> {
    let Some((tag, mut r)) = read_message(input, false)? else {
        return Ok(None);
    };
    let message = match tag {
        JOB => ToWorker::Job(decode_job(&mut r)?),
        TRACK => ToWorker::Event(StreamEvent::Track(decode_codec(&mut r)?)),
        FRAME => ToWorker::Event(StreamEvent::Frame(r.frame()?)),
        PAUSE => ToWorker::Event(StreamEvent::Pause),
        END => ToWorker::Event(StreamEvent::End),
        other => return Err(WireError::UnknownTag(other)),
    };
    r.done(tag)?;
    Ok(Some(message))
}

fn decode_job(r: &mut Reader) -> Result<Job, WireError> {
    let version = r.u16()?;
    if version != VERSION {
        return Err(WireError::Version(version));
    }
    let playback_id = r.str(MAX_NAME, "playback id")?;
    let segment_duration = r.f64("segment duration")?;
    let name = r.str(MAX_NAME, "ladder name")?;
    let description = r.str(MAX_TEXT, "ladder description")?;
    let source = r.u8()? != 0;
    let count = usize::from(r.u8()?);
    if count > MAX_RUNGS {
        return Err(WireError::TooLong {
            what: "the ladder's rung list",
            len: count,
            max: MAX_RUNGS,
        });
    }
    let mut rungs = Vec::with_capacity(count);
    for _ in 0..count {
        rungs.push(Rung {
            name: r.str(MAX_NAME, "rung name")?,
            height: r.u32()?,
            bitrate: r.u64()?,
            max_rate: r.u64()?,
            buffer: r.u64()?,
            preset: r.str(MAX_NAME, "rung preset")?,
            profile: r.str(MAX_NAME, "rung profile")?,
            level: r.str(MAX_NAME, "rung level")?,
            max_fps: r.f64("rung max_fps")?,
            low_delay: r.u8()? != 0,
        });
    }
    let audio = AudioRung {
        bitrate: r.u64()?,
        channels: r.u8()?,
        sample_rate: r.u32()?,
    };
    Ok(Job {
        playback_id,
        segment_duration,
        ladder: Ladder {
            name,
            description,
            source,
            rungs,
            audio,
        },
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::media::codec_test_data::AVC_RECORD_320X240;
    use crate::transcode::Ladders;

    const ASC: &[u8] = &[0x11, 0x90];

    fn avc() -> TrackInfo {
        TrackInfo {
            kind: TrackKind::Video,
            codec: CodecConfig::Avc(
                AvcConfig::parse(Bytes::from_static(AVC_RECORD_320X240)).unwrap(),
            ),
        }
    }

    fn aac() -> TrackInfo {
        TrackInfo {
            kind: TrackKind::Audio,
            codec: CodecConfig::Aac(AacConfig::parse(Bytes::from_static(ASC)).unwrap()),
        }
    }

    fn frame(kind: TrackKind, len: usize) -> MediaFrame {
        MediaFrame {
            kind,
            dts: Timestamp::new(-3003, 90_000),
            pts: Timestamp::new(MAX_TICKS, 90_000),
            sync: true,
            segment_start: kind == TrackKind::Video,
            data: Bytes::from(vec![7u8; len]),
        }
    }

    fn job() -> Job {
        Job {
            playback_id: "pb_123".into(),
            segment_duration: 2.0,
            ladder: Ladders::shipped().get("default").unwrap().clone(),
        }
    }

    fn from_worker(bytes: &[u8]) -> Result<Option<FromWorker>, WireError> {
        read_from_worker(&mut &bytes[..])
    }

    fn to_worker(bytes: &[u8]) -> Result<Option<ToWorker>, WireError> {
        read_to_worker(&mut &bytes[..])
    }

    #[test]
    fn every_server_message_round_trips() {
        for message in [
            ToWorker::Job(job()),
            ToWorker::Event(StreamEvent::Track(avc())),
            ToWorker::Event(StreamEvent::Track(aac())),
            ToWorker::Event(StreamEvent::Frame(frame(TrackKind::Video, 1000))),
            ToWorker::Event(StreamEvent::Frame(frame(TrackKind::Audio, 0))),
            ToWorker::Event(StreamEvent::Pause),
            ToWorker::Event(StreamEvent::End),
        ] {
            let bytes = encode_to_worker(&message).unwrap();
            assert_eq!(to_worker(&bytes).unwrap(), Some(message));
        }
    }

    #[test]
    fn every_worker_message_round_trips_in_one_stream() {
        let messages = [
            FromWorker::Event(RenditionEvent::Track {
                id: TrackId::Video(2),
                name: "480p".into(),
                info: avc(),
            }),
            FromWorker::Event(RenditionEvent::Track {
                id: TrackId::Audio,
                name: "audio".into(),
                info: aac(),
            }),
            FromWorker::Event(RenditionEvent::Frame {
                id: TrackId::Video(2),
                frame: frame(TrackKind::Video, 5000),
            }),
            FromWorker::Event(RenditionEvent::Poster(Bytes::from_static(
                b"\xff\xd8\xff jpeg",
            ))),
            FromWorker::Event(RenditionEvent::Pause),
            FromWorker::Speed {
                rendition: "480p".into(),
                speed: 1.25,
            },
            FromWorker::Dropped {
                rendition: "480p".into(),
                frames: 12,
            },
            FromWorker::Event(RenditionEvent::End),
        ];
        let mut stream = Vec::new();
        for m in &messages {
            stream.extend(encode_from_worker(m).unwrap());
        }
        let mut input = &stream[..];
        for m in messages {
            assert_eq!(read_from_worker(&mut input).unwrap(), Some(m));
        }
        assert!(
            read_from_worker(&mut input).unwrap().is_none(),
            "a clean end"
        );
    }

    #[test]
    fn a_message_header_longer_than_its_tag_allows_is_refused_before_allocating() {
        // a frame claiming 4 GiB: refused from the header alone (the payload is not there)
        let mut bytes = vec![OUT_FRAME];
        bytes.extend_from_slice(&u32::MAX.to_be_bytes());
        let err = from_worker(&bytes).unwrap_err();
        assert!(
            matches!(err, WireError::TooLong { len, .. } if len == u32::MAX as usize),
            "{err}"
        );
        // an end carries nothing
        let err = from_worker(&[OUT_END, 0, 0, 0, 1, 0]).unwrap_err();
        assert!(matches!(err, WireError::TooLong { max: 0, .. }), "{err}");
    }

    #[test]
    fn frame_data_is_limited_to_8_mib() {
        let ok = FromWorker::Event(RenditionEvent::Frame {
            id: TrackId::Video(0),
            frame: frame(TrackKind::Video, MAX_FRAME_DATA),
        });
        let bytes = encode_from_worker(&ok).unwrap();
        assert_eq!(from_worker(&bytes).unwrap(), Some(ok.clone()));
        let big = FromWorker::Event(RenditionEvent::Frame {
            id: TrackId::Video(0),
            frame: frame(TrackKind::Video, MAX_FRAME_DATA + 1),
        });
        assert!(matches!(
            encode_from_worker(&big),
            Err(WireError::TooLong {
                what: "frame data",
                ..
            })
        ));
        // a hostile worker's frame field claiming more than the limit inside a legal payload
        let mut bytes = encode_from_worker(&ok).unwrap();
        let field = HEADER + TRACK_ID + FRAME_FIELDS - 4;
        bytes[field..field + 4].copy_from_slice(&((MAX_FRAME_DATA + 1) as u32).to_be_bytes());
        let err = from_worker(&bytes).unwrap_err();
        assert!(
            matches!(
                err,
                WireError::TooLong {
                    what: "frame data",
                    ..
                }
            ),
            "{err}"
        );
    }

    #[test]
    fn codec_configs_are_limited_to_64_kib_and_parsed_again() {
        let mut w = Writer::new(OUT_TRACK);
        w.track_id(TrackId::Video(0)).unwrap();
        w.str("720p", MAX_NAME, "n").unwrap();
        w.u8(CODEC_AVC);
        w.u32((MAX_CONFIG + 1) as u32);
        w.0.extend(std::iter::repeat_n(0, MAX_CONFIG + 1));
        // the whole message is larger than a track may be
        let err = from_worker(&w.finish()).unwrap_err();
        assert!(matches!(err, WireError::TooLong { .. }), "{err}");

        let mut w = Writer::new(OUT_TRACK);
        w.track_id(TrackId::Video(0)).unwrap();
        w.str("720p", MAX_NAME, "n").unwrap();
        w.u8(CODEC_AVC);
        w.u32((MAX_CONFIG + 1) as u32);
        let err = from_worker(&w.finish()).unwrap_err();
        assert!(
            matches!(
                err,
                WireError::TooLong {
                    what: "codec configuration",
                    ..
                }
            ),
            "{err}"
        );

        // a record the AVC parser refuses
        let mut w = Writer::new(OUT_TRACK);
        w.track_id(TrackId::Video(0)).unwrap();
        w.str("720p", MAX_NAME, "n").unwrap();
        w.u8(CODEC_AVC);
        w.bytes(&AVC_RECORD_320X240[..20], MAX_CONFIG, "c").unwrap();
        let err = from_worker(&w.finish()).unwrap_err();
        assert!(matches!(err, WireError::Codec(_)), "{err}");

        // an unknown codec
        let mut w = Writer::new(OUT_TRACK);
        w.track_id(TrackId::Audio).unwrap();
        w.str("audio", MAX_NAME, "n").unwrap();
        w.u8(99);
        w.bytes(ASC, MAX_CONFIG, "c").unwrap();
        assert!(matches!(
            from_worker(&w.finish()),
            Err(WireError::Invalid { what: "codec", .. })
        ));
    }

    #[test]
    fn names_are_limited_to_256_bytes() {
        let speed = |name: String| FromWorker::Speed {
            rendition: name,
            speed: 1.0,
        };
        let ok = speed("r".repeat(MAX_NAME));
        assert_eq!(
            from_worker(&encode_from_worker(&ok).unwrap()).unwrap(),
            Some(ok)
        );
        assert!(matches!(
            encode_from_worker(&speed("r".repeat(MAX_NAME + 1))),
            Err(WireError::TooLong {
                what: "rendition name",
                ..
            })
        ));
        let mut w = Writer::new(OUT_SPEED);
        w.u16((MAX_NAME + 1) as u16);
        w.0.extend(std::iter::repeat_n(b'r', MAX_NAME + 1));
        w.f64(1.0);
        // longer than a speed message may be at all
        assert!(matches!(
            from_worker(&w.finish()),
            Err(WireError::TooLong { .. })
        ));
        let mut w = Writer::new(OUT_SPEED);
        w.u16(1000);
        assert!(matches!(
            from_worker(&w.finish()),
            Err(WireError::TooLong {
                what: "rendition name",
                len: 1000,
                ..
            })
        ));
    }

    #[test]
    fn posters_are_limited_to_1_mib() {
        let big = FromWorker::Event(RenditionEvent::Poster(Bytes::from(vec![0; MAX_POSTER + 1])));
        assert!(matches!(
            encode_from_worker(&big),
            Err(WireError::TooLong { what: "poster", .. })
        ));
    }

    #[test]
    fn the_job_is_limited_to_64_kib() {
        let mut job = job();
        job.ladder.description = "d".repeat(MAX_TEXT + 1);
        assert!(matches!(
            encode_to_worker(&ToWorker::Job(job)),
            Err(WireError::TooLong {
                what: "ladder description",
                ..
            })
        ));
        let mut bytes = vec![JOB];
        bytes.extend_from_slice(&((MAX_JOB + 1) as u32).to_be_bytes());
        assert!(matches!(to_worker(&bytes), Err(WireError::TooLong { .. })));
    }

    #[test]
    fn malformed_streams_fail_with_a_precise_error() {
        let end = encode_from_worker(&FromWorker::Event(RenditionEvent::End)).unwrap();
        // cut inside the header, inside the payload
        let frame = encode_from_worker(&FromWorker::Event(RenditionEvent::Frame {
            id: TrackId::Audio,
            frame: frame(TrackKind::Audio, 10),
        }))
        .unwrap();
        assert!(matches!(from_worker(&end[..3]), Err(WireError::Truncated)));
        assert!(matches!(
            from_worker(&frame[..frame.len() - 1]),
            Err(WireError::Truncated)
        ));
        // a server → worker tag from the worker, and an unknown one
        let job = encode_to_worker(&ToWorker::Job(job())).unwrap();
        assert!(matches!(from_worker(&job), Err(WireError::UnknownTag(JOB))));
        assert!(matches!(
            to_worker(&end),
            Err(WireError::UnknownTag(OUT_END))
        ));
        assert!(matches!(
            from_worker(&[200, 0, 0, 0, 0]),
            Err(WireError::UnknownTag(200))
        ));
        // bytes left over after the fields
        let mut w = Writer::new(OUT_DROPPED);
        w.str("r", MAX_NAME, "n").unwrap();
        w.u64(1);
        w.u8(0);
        assert!(matches!(
            from_worker(&w.finish()),
            Err(WireError::Trailing {
                tag: OUT_DROPPED,
                len: 1
            })
        ));
        // timestamps: a zero timescale, ticks beyond the range
        for (ticks, timescale) in [(0, 0), (MAX_TICKS + 1, 90_000), (i64::MIN, 1000)] {
            let mut w = Writer::new(OUT_FRAME);
            w.track_id(TrackId::Audio).unwrap();
            w.u8(1);
            w.i64(ticks);
            w.u32(timescale);
            w.i64(0);
            w.u32(1000);
            w.u8(1);
            w.u32(0);
            let err = from_worker(&w.finish()).unwrap_err();
            assert!(matches!(err, WireError::Invalid { .. }), "{err}");
        }
        // a speed that is not a number, an index beyond every ladder
        let mut w = Writer::new(OUT_SPEED);
        w.str("r", MAX_NAME, "n").unwrap();
        w.f64(f64::NAN);
        assert!(matches!(
            from_worker(&w.finish()),
            Err(WireError::Invalid { what: "speed", .. })
        ));
        let mut w = Writer::new(OUT_PAUSE);
        w.0[0] = OUT_FRAME;
        w.u8(0);
        w.u8(200);
        assert!(matches!(
            from_worker(&w.finish()),
            Err(WireError::Invalid {
                what: "video rendition",
                ..
            })
        ));
    }

    #[test]
    fn a_job_of_another_version_is_refused() {
        let mut bytes = encode_to_worker(&ToWorker::Job(job())).unwrap();
        bytes[HEADER..HEADER + 2].copy_from_slice(&(VERSION + 1).to_be_bytes());
        assert!(matches!(to_worker(&bytes), Err(WireError::Version(v)) if v == VERSION + 1));
    }
}
