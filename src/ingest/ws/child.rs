//! The demuxer process (`strata demux CONTAINER PLAYBACK_ID`): reads one browser recording
//! (WebM/Matroska or MP4, as `MediaRecorder` writes it) from stdin with libavformat, and writes
//! its tracks and frames to stdout as `StreamEvent`s in the worker protocol
//! (`transcode::worker::wire`, server → worker messages). The server parses none of the
//! container: every byte of it is read here, in a process of its own with the worker's limits,
//! so a demuxer bug ends one publisher's connection, never the server. Codec configurations
//! are parsed again by the server with ingest's parsers when it reads them.
//!
//! libavformat is told exactly one demuxer (`format_whitelist`) and one protocol
//! (`protocol_whitelist=pipe`), so a recording cannot make it open a playlist, a file or a URL.
//! Stream probing is capped (`probesize`, `analyzeduration`) so a broadcast starts within
//! about a second of its first bytes.
//!
//! Output: `Track` for the best video and audio streams (VP8, VP9, H.264, Opus, AAC; a VP8
//! track is announced at its first keyframe, whose header carries its size), then `Frame`s in
//! the streams' own clocks (a `1/den` time base is kept as it is; another is rescaled to
//! 90 kHz for video and 48 kHz for audio). Frames before the first video keyframe are dropped.
//!
//! Exit status: 0 at the end of the recording (stdin closed), 1 when stdout failed (the server
//! is gone), 3 when the recording cannot be read, 5 when its codecs are not ones Strata
//! decodes (`EXIT_UNREADABLE`, `EXIT_UNSUPPORTED`: the server tells the publisher which).

use std::io::{BufWriter, Write};
use std::process::ExitCode;

use bytes::Bytes;
use ffmpeg::media::Type;
use ffmpeg_next as ffmpeg;

use super::messages::Container;
use crate::media::{
    AacConfig, AvcConfig, CodecConfig, MediaFrame, OpusConfig, StreamEvent, Timestamp, TrackInfo,
    TrackKind, Vp8Config, Vp9Config,
};
use crate::transcode::worker::wire::{self, ToWorker, MAX_FRAME_DATA};

/// The recording could not be read as its container.
pub const EXIT_UNREADABLE: u8 = 3;
/// The recording holds no codec Strata decodes.
pub const EXIT_UNSUPPORTED: u8 = 5;

/// Why the demuxer stopped early.
#[derive(Debug, thiserror::Error)]
enum DemuxError {
    #[error("the recording cannot be read: {0}")]
    Unreadable(String),
    #[error("{0}")]
    Unsupported(String),
    #[error("the server stopped reading: {0}")]
    Output(std::io::Error),
}

impl DemuxError {
    fn exit_code(&self) -> ExitCode {
        ExitCode::from(match self {
            DemuxError::Unreadable(_) => EXIT_UNREADABLE,
            DemuxError::Unsupported(_) => EXIT_UNSUPPORTED,
            DemuxError::Output(_) => 1,
        })
    }
}

/// Runs the demuxer on this process's stdin and stdout.
pub fn main(container: &str, playback_id: &str) -> ExitCode {
    let span = tracing::info_span!("demux", playback_id = %playback_id);
    let _entered = span.enter();
    let Some(container) = Container::from_name(container) else {
        tracing::error!(container, "the demuxer was given an unknown container");
        return ExitCode::from(EXIT_UNREADABLE);
    };
    match demux(container) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            if !matches!(e, DemuxError::Output(_)) {
                tracing::warn!("browser recording: {e}");
            }
            e.exit_code()
        }
    }
}

/// One output track: its index in the container and how its timestamps are read.
struct Track {
    index: usize,
    kind: TrackKind,
    time_base: ffmpeg::Rational,
    /// The codec, once known (VP8: at the first keyframe).
    codec: Option<CodecConfig>,
    vp8: bool,
}

impl Track {
    /// `ticks` of the stream's time base on a clock Strata keeps: `1/den` as it is.
    fn timestamp(&self, ticks: i64) -> Timestamp {
        let (num, den) = (self.time_base.numerator(), self.time_base.denominator());
        if num == 1 && den > 0 {
            return Timestamp::new(ticks, den as u32);
        }
        let scale: u32 = match self.kind {
            TrackKind::Video => 90_000,
            TrackKind::Audio => crate::media::OPUS_SAMPLE_RATE,
        };
        let rescaled =
            i128::from(ticks) * i128::from(num) * i128::from(scale) / i128::from(den.max(1));
        Timestamp::new(
            rescaled.clamp(i64::MIN.into(), i64::MAX.into()) as i64,
            scale,
        )
    }
}

fn demux(container: Container) -> Result<(), DemuxError> {
    // FFmpeg's own log at `error` only: a hostile recording must not flood the server's log
    crate::transcode::init().map_err(|e| DemuxError::Unreadable(e.to_string()))?;
    let demuxer = match container {
        Container::Matroska => "matroska",
        Container::Mp4 => "mov",
    };
    let mut options = ffmpeg::Dictionary::new();
    options.set("format_whitelist", demuxer);
    options.set("protocol_whitelist", "pipe");
    options.set("probesize", "262144");
    options.set("analyzeduration", "1000000");
    options.set("fpsprobesize", "0");
    let mut input = open(demuxer, options)?;
    let mut tracks = Vec::new();
    for kind in [Type::Video, Type::Audio] {
        if let Some(stream) = input.streams().best(kind) {
            tracks.push(track_of(&stream)?);
        }
    }
    if !tracks.iter().any(|t| t.kind == TrackKind::Video) {
        // a broadcast's ladder starts at its first video keyframe
        return Err(DemuxError::Unsupported(
            "the recording has no video track".into(),
        ));
    }
    let mut out = BufWriter::new(std::io::stdout().lock());
    for track in &tracks {
        if let Some(codec) = &track.codec {
            send(&mut out, StreamEvent::Track(track_info(track.kind, codec)))?;
        }
    }
    out.flush().map_err(DemuxError::Output)?;
    let has_video = tracks.iter().any(|t| t.kind == TrackKind::Video);
    let mut keyframe_seen = !has_video;
    let mut packet = ffmpeg::Packet::empty();
    loop {
        match packet.read(&mut input) {
            Ok(()) => {}
            Err(ffmpeg::Error::Eof) => break,
            Err(e) => return Err(DemuxError::Unreadable(e.to_string())),
        }
        let Some(track) = tracks.iter_mut().find(|t| t.index == packet.stream()) else {
            continue;
        };
        let (Some(data), Some(pts)) = (packet.data(), packet.pts().or(packet.dts())) else {
            continue;
        };
        if data.len() > MAX_FRAME_DATA {
            return Err(DemuxError::Unreadable(format!(
                "a frame of {} bytes (at most {MAX_FRAME_DATA})",
                data.len()
            )));
        }
        let sync = track.kind == TrackKind::Audio || packet.is_key();
        if track.kind == TrackKind::Video {
            if !keyframe_seen && !sync {
                continue;
            }
            keyframe_seen = true;
            if track.vp8 && sync {
                announce_vp8(&mut out, track, data)?;
            }
        }
        let dts = packet.dts().unwrap_or(pts);
        let frame = MediaFrame {
            kind: track.kind,
            dts: track.timestamp(dts),
            pts: track.timestamp(pts),
            sync,
            segment_start: false,
            data: Bytes::copy_from_slice(data),
        };
        send(&mut out, StreamEvent::Frame(frame))?;
        // a browser sends a slice every few hundred ms: each frame goes out as soon as read
        out.flush().map_err(DemuxError::Output)?;
    }
    out.flush().map_err(DemuxError::Output)
}

/// Opens stdin as `demuxer`'s container, with no probing: bytes that are not that container
/// fail at once rather than wait for more.
fn open(
    demuxer: &str,
    options: ffmpeg::Dictionary,
) -> Result<ffmpeg::format::context::Input, DemuxError> {
    let name = std::ffi::CString::new(demuxer)
        .map_err(|_| DemuxError::Unreadable("a demuxer name with a NUL".into()))?;
    // SAFETY: a lookup by a NUL-terminated name in FFmpeg's static table of demuxers.
    let format = unsafe { ffmpeg::ffi::av_find_input_format(name.as_ptr()) };
    if format.is_null() {
        return Err(DemuxError::Unreadable(format!(
            "this FFmpeg has no {demuxer} demuxer"
        )));
    }
    // SAFETY: `format` points into that static table, valid for the process's life.
    let format = unsafe { ffmpeg::format::format::Input::wrap(format as *mut _) };
    match ffmpeg::format::open_with(
        &"pipe:0",
        &ffmpeg::format::format::Format::Input(format),
        options,
    ) {
        Ok(ffmpeg::format::context::Context::Input(input)) => Ok(input),
        Ok(_) => Err(DemuxError::Unreadable("not an input".into())),
        Err(e) => Err(DemuxError::Unreadable(e.to_string())),
    }
}

/// A VP8 keyframe: the track is (re)announced when its size is new.
fn announce_vp8(
    out: &mut impl Write,
    track: &mut Track,
    keyframe: &[u8],
) -> Result<(), DemuxError> {
    let config =
        Vp8Config::from_keyframe(keyframe).map_err(|e| DemuxError::Unreadable(e.to_string()))?;
    let codec = CodecConfig::Vp8(config);
    if track.codec.as_ref() != Some(&codec) {
        send(
            out,
            StreamEvent::Track(track_info(TrackKind::Video, &codec)),
        )?;
        track.codec = Some(codec);
    }
    Ok(())
}

fn track_info(kind: TrackKind, codec: &CodecConfig) -> TrackInfo {
    TrackInfo {
        kind,
        codec: codec.clone(),
    }
}

fn send(out: &mut impl Write, event: StreamEvent) -> Result<(), DemuxError> {
    let bytes = wire::encode_to_worker(&ToWorker::Event(event))
        .map_err(|e| DemuxError::Unreadable(e.to_string()))?;
    out.write_all(&bytes).map_err(DemuxError::Output)
}

/// The output track of a container stream, with its configuration when the container gives it.
fn track_of(stream: &ffmpeg::format::stream::Stream) -> Result<Track, DemuxError> {
    let parameters = stream.parameters();
    let id = parameters.id();
    // SAFETY: `parameters` borrows the stream's AVCodecParameters, alive while `stream` is;
    // extradata is `extradata_size` bytes when not null (libavformat's invariant).
    let (extradata, profile, channels) = unsafe {
        let p = &*parameters.as_ptr();
        let extradata = if p.extradata.is_null() || p.extradata_size <= 0 {
            Bytes::new()
        } else {
            Bytes::copy_from_slice(std::slice::from_raw_parts(
                p.extradata,
                p.extradata_size as usize,
            ))
        };
        (extradata, p.profile, p.ch_layout.nb_channels)
    };
    let bad = |e: crate::media::CodecError| DemuxError::Unsupported(e.to_string());
    use ffmpeg::codec::Id;
    let (kind, codec) = match id {
        Id::VP8 => (TrackKind::Video, None),
        Id::VP9 => (
            TrackKind::Video,
            Some(CodecConfig::Vp9(vp9_config(profile).map_err(bad)?)),
        ),
        Id::H264 => (
            TrackKind::Video,
            Some(CodecConfig::Avc(AvcConfig::parse(extradata).map_err(bad)?)),
        ),
        Id::OPUS => {
            let opus = if extradata.is_empty() {
                OpusConfig::for_channels(channels.clamp(0, 2) as u8)
            } else {
                OpusConfig::parse(extradata)
            };
            (
                TrackKind::Audio,
                Some(CodecConfig::Opus(opus.map_err(bad)?)),
            )
        }
        Id::AAC => (
            TrackKind::Audio,
            Some(CodecConfig::Aac(AacConfig::parse(extradata).map_err(bad)?)),
        ),
        other => {
            return Err(DemuxError::Unsupported(format!(
                "the recording's {other:?} is not a codec Strata decodes (VP8, VP9 or H.264 \
                 video; Opus or AAC audio)"
            )))
        }
    };
    Ok(Track {
        index: stream.index(),
        kind,
        time_base: stream.time_base(),
        codec,
        vp8: id == Id::VP8,
    })
}

/// A `vpcC` for a WebM VP9 track, which carries none: the profile libavformat read, level
/// "unknown", and 8 bits (10 for profiles 2 and 3); the decoder reads the real values from the
/// frames.
fn vp9_config(profile: i32) -> Result<Vp9Config, crate::media::CodecError> {
    let profile = profile.clamp(0, 3) as u8;
    let bit_depth: u8 = if profile >= 2 { 10 } else { 8 };
    let record = [profile, 0, bit_depth << 4 | 1 << 1, 2, 2, 2, 0, 0];
    Vp9Config::parse(Bytes::copy_from_slice(&record))
}
