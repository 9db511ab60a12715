//! The clip-edge process (`strata clip-edge`): re-encodes the kept frames of one edge segment of
//! a precise clip. The segment holds what a publisher sent (or a ladder made from it), so
//! decoding it is the same hostile work a ladder's worker does and runs in a child process
//! under the worker's limits plus a CPU-time limit (`precise::video_edge`).
//!
//! Input on stdin, in the worker's wire format (`transcode::worker::wire`, bounded and fuzzed):
//! the H.264 track, then the segment's frames in decode order (at most `MAX_EDGE_FRAMES`,
//! `MAX_EDGE_BYTES` in all). Every frame is decoded; those presented from `--first` to
//! `--last` (ticks of the track's clock, both kept) are encoded again with libx264 at the same
//! size, profile and level, with no B-frames (decode order is presentation order) and one IDR
//! at the start, its parameter sets numbered `--sps-id` so they can sit beside the source's in
//! one `avcC`.
//!
//! Output on stdout, in the worker's output wire format: the new track (its `avcC` holds the
//! new SPS and PPS), then every encoded frame, 4-byte length-prefixed, with its presentation
//! time. Exit status: 0; 3 when the input was malformed; 4 when FFmpeg or x264 cannot start or
//! the picture is not what x264 takes; 5 when the frames did not decode; 1 when stdout failed.

use std::io::{BufReader, Write};
use std::process::ExitCode;

use ffmpeg::format::Pixel;
use ffmpeg_next as ffmpeg;

use crate::media::{
    AvcConfig, CodecConfig, MediaFrame, RenditionEvent, StreamEvent, Timestamp, TrackId, TrackInfo,
    TrackKind,
};
use crate::transcode::worker::wire::{self, FromWorker, ToWorker};
use crate::transcode::{avc, ffi};

/// Frames one edge holds at most (a 10 s segment at 120 fps, and then some).
pub const MAX_EDGE_FRAMES: usize = 2048;
/// Coded bytes one edge holds at most (a stored segment is at most `clips::MAX_OBJECT_BYTES`).
pub const MAX_EDGE_BYTES: usize = 64 << 20;

/// Which frames to keep, in ticks of the track's clock.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Keep {
    pub first: i64,
    pub last: i64,
    pub sps_id: u8,
}

/// Runs the clip-edge process on this process's stdin and stdout.
pub fn main(label: &str, keep: Keep) -> ExitCode {
    let span = tracing::info_span!("clip_edge", clip = %label);
    let _entered = span.enter();
    if let Err(e) = crate::transcode::init() {
        tracing::error!(error = %e, "the clip-edge process cannot start FFmpeg");
        return ExitCode::from(4);
    }
    let (config, frames) = match read_input() {
        Ok(input) => input,
        Err(why) => {
            tracing::error!("the clip-edge process got malformed input: {why}");
            return ExitCode::from(3);
        }
    };
    let encoded = match reencode(&config, &frames, keep) {
        Ok(encoded) => encoded,
        Err((code, why)) => {
            tracing::warn!("a precise clip's edge was not re-encoded: {why}");
            return ExitCode::from(code);
        }
    };
    let mut out = std::io::stdout().lock();
    let written = encoded
        .iter()
        .try_for_each(|message| {
            let bytes = wire::encode_from_worker(message)
                .map_err(|e| std::io::Error::other(e.to_string()))?;
            out.write_all(&bytes)
        })
        .and_then(|()| out.flush());
    match written {
        Ok(()) => ExitCode::SUCCESS,
        Err(_) => ExitCode::from(1),
    }
}

/// The track and its frames, bounded.
fn read_input() -> Result<(AvcConfig, Vec<MediaFrame>), String> {
    let mut input = BufReader::with_capacity(1 << 16, std::io::stdin().lock());
    let config = match wire::read_to_worker(&mut input) {
        Ok(Some(ToWorker::Event(StreamEvent::Track(TrackInfo {
            kind: TrackKind::Video,
            codec: CodecConfig::Avc(avc),
        })))) => avc,
        Ok(_) => return Err("the first message was not an H.264 track".into()),
        Err(e) => return Err(e.to_string()),
    };
    let mut frames = Vec::new();
    let mut bytes = 0usize;
    loop {
        match wire::read_to_worker(&mut input) {
            Ok(Some(ToWorker::Event(StreamEvent::Frame(frame))))
                if frame.kind == TrackKind::Video =>
            {
                bytes += frame.data.len();
                if frames.len() == MAX_EDGE_FRAMES || bytes > MAX_EDGE_BYTES {
                    return Err("more frames than one edge holds".into());
                }
                frames.push(frame);
            }
            Ok(None) => return Ok((config, frames)),
            Ok(Some(_)) => return Err("expected the frames of one video segment".into()),
            Err(e) => return Err(e.to_string()),
        }
    }
}

type Failure = (u8, String);

/// Decodes `frames` and encodes the kept ones: the new track, then its frames.
fn reencode(
    config: &AvcConfig,
    frames: &[MediaFrame],
    keep: Keep,
) -> Result<Vec<FromWorker>, Failure> {
    let cannot = |what: &str, e: &dyn std::fmt::Display| (4, format!("{what}: {e}"));
    let source = CodecConfig::Avc(config.clone());
    let mut decoder = crate::transcode::open_decoder(&source, None)
        .map_err(|e| cannot("the decoder does not open", &e))?;
    let timescale = source.timescale();
    let fps = config.frame_rate.or_else(|| frame_rate(frames, timescale));
    let mut encoder =
        open_encoder(config, keep, fps).map_err(|e| cannot("x264 does not open", &e))?;
    let mut out = Vec::new();
    let mut kept = 0usize;
    let mut decoded = ffmpeg::frame::Video::empty();
    let mut take = |decoder: &mut ffmpeg::decoder::Video,
                    encoder: &mut ffmpeg::encoder::Video,
                    out: &mut Vec<FromWorker>|
     -> Result<(), Failure> {
        while decoder.receive_frame(&mut decoded).is_ok() {
            let Some(pts) = decoded.timestamp().or(decoded.pts()) else {
                continue;
            };
            if pts < keep.first || pts > keep.last {
                continue;
            }
            let picture = (decoded.format(), decoded.width(), decoded.height());
            if !matches!(picture.0, Pixel::YUV420P | Pixel::YUVJ420P)
                || (picture.1, picture.2) != (config.width, config.height)
            {
                return Err((
                    4,
                    format!("a {picture:?} picture is not what x264 takes here"),
                ));
            }
            let mut frame = ffi::share(&decoded).map_err(|e| cannot("a picture", &e))?;
            frame.set_pts(Some(pts));
            frame.set_kind(if kept == 0 {
                ffmpeg::picture::Type::I
            } else {
                ffmpeg::picture::Type::None
            });
            kept += 1;
            encoder
                .send_frame(&frame)
                .map_err(|e| cannot("x264 refused a picture", &e))?;
            drain(encoder, timescale, out);
        }
        Ok(())
    };
    for frame in frames {
        let mut packet = ffmpeg::Packet::copy(&frame.data);
        packet.set_pts(Some(frame.pts.rescale(timescale).ticks));
        packet.set_dts(Some(frame.dts.rescale(timescale).ticks));
        if frame.sync {
            packet.set_flags(ffmpeg::packet::Flags::KEY);
        }
        if let Err(e) = decoder.send_packet(&packet) {
            tracing::debug!(error = %e, "the decoder rejected a frame");
        }
        take(&mut decoder, &mut encoder, &mut out)?;
    }
    let _ = decoder.send_eof();
    take(&mut decoder, &mut encoder, &mut out)?;
    if out.is_empty() && kept == 0 {
        return Err((5, "no kept frame decoded".into()));
    }
    encoder
        .send_eof()
        .map_err(|e| cannot("x264 did not finish", &e))?;
    drain(&mut encoder, timescale, &mut out);
    let new = avc::config_from_annex_b(&ffi::extradata(&encoder))
        .map_err(|e| cannot("x264's parameter sets", &e))?;
    out.insert(
        0,
        FromWorker::Event(RenditionEvent::Track {
            id: TrackId::Video(0),
            name: "edge".into(),
            info: TrackInfo {
                kind: TrackKind::Video,
                codec: CodecConfig::Avc(new),
            },
        }),
    );
    Ok(out)
}

/// libx264 at the source's size, profile and level; no B-frames, no extra IDR.
fn open_encoder(
    config: &AvcConfig,
    keep: Keep,
    fps: Option<f64>,
) -> Result<ffmpeg::encoder::Video, ffmpeg::Error> {
    let codec = ffmpeg::encoder::find_by_name("libx264").ok_or(ffmpeg::Error::EncoderNotFound)?;
    let mut context = ffmpeg::codec::Context::new_with_codec(codec)
        .encoder()
        .video()?;
    context.set_width(config.width);
    context.set_height(config.height);
    context.set_format(Pixel::YUV420P);
    context.set_time_base(ffmpeg::Rational::new(1, 90_000));
    if let Some(fps) = fps.filter(|f| *f > 0.0 && *f <= 240.0) {
        context.set_frame_rate(Some(ffmpeg::Rational::from(fps)));
    }
    context.set_flags(ffmpeg::codec::Flags::GLOBAL_HEADER | ffmpeg::codec::Flags::CLOSED_GOP);
    context.set_gop(u32::MAX >> 1);
    let mut options = ffmpeg::Dictionary::new();
    options.set("preset", "veryfast");
    options.set("crf", "18");
    options.set("profile", profile_name(config.profile_idc));
    options.set("forced-idr", "1");
    // a short job beside live broadcasts: two threads, whatever the machine (and its address
    // space stays small)
    options.set("threads", "2");
    options.set(
        "x264-params",
        &format!(
            "bframes=0:scenecut=0:sps-id={}:level={}",
            keep.sps_id, config.level_idc
        ),
    );
    context.open_with(options)
}

/// The frame rate the frames' presentation times show (their median spacing), if they show one.
fn frame_rate(frames: &[MediaFrame], timescale: u32) -> Option<f64> {
    let mut times: Vec<i64> = frames
        .iter()
        .map(|f| f.pts.rescale(timescale).ticks)
        .collect();
    times.sort_unstable();
    let mut gaps: Vec<i64> = times
        .windows(2)
        .map(|w| w[1] - w[0])
        .filter(|g| *g > 0)
        .collect();
    gaps.sort_unstable();
    let gap = *gaps.get(gaps.len() / 2)?;
    Some(f64::from(timescale) / gap as f64)
}

/// x264's name for an H.264 profile: the same one, or a smaller one it can write.
fn profile_name(profile_idc: u8) -> &'static str {
    match profile_idc {
        66 => "baseline",
        77 | 88 => "main",
        _ => "high",
    }
}

/// Every packet x264 has ready, as frames of the output track.
fn drain(encoder: &mut ffmpeg::encoder::Video, timescale: u32, out: &mut Vec<FromWorker>) {
    let mut packet = ffmpeg::Packet::empty();
    while encoder.receive_packet(&mut packet).is_ok() {
        let (Some(pts), Some(data)) = (packet.pts(), packet.data()) else {
            continue;
        };
        out.push(FromWorker::Event(RenditionEvent::Frame {
            id: TrackId::Video(0),
            frame: MediaFrame {
                kind: TrackKind::Video,
                dts: Timestamp::new(packet.dts().unwrap_or(pts), timescale),
                pts: Timestamp::new(pts, timescale),
                sync: packet.is_key(),
                segment_start: false,
                data: avc::to_length_prefixed(data),
            },
        }));
    }
}
