//! Posters: a small JPEG of the live picture, refreshed every `POSTER_EVERY_MS` of media time,
//! for the streams page's cards (`live/{playback_id}/poster.jpg`). Only ladders that decode the
//! source make posters; passthrough has no decoded picture to take one from.
//!
//! A thread of its own scales the frame and encodes it with FFmpeg's MJPEG encoder. Its queue
//! holds `POSTER_QUEUE` frame: when a poster is still being made as the next is due, the new
//! one is skipped, and when packaging's queue is full the finished poster is dropped — a poster
//! never holds up the ladder.

use std::sync::mpsc as std_mpsc;
use std::sync::Arc;

use bytes::Bytes;
use ffmpeg::format::Pixel;
use ffmpeg::software::scaling;
use ffmpeg_next as ffmpeg;
use tokio::sync::mpsc;

use super::TranscodeError;
use crate::media::RenditionEvent;

/// Decoded frames waiting for the poster thread.
pub const POSTER_QUEUE: usize = 1;
/// Media time between posters.
pub const POSTER_EVERY_MS: i64 = 10_000;
/// Posters are at most this wide (and as tall as the picture's aspect makes them).
const POSTER_WIDTH: u32 = 480;
/// MJPEG bit rate at the encoder's nominal 25 fps: ≈ 40 kB per poster, enough for a clean
/// 480×270 picture.
const POSTER_BIT_RATE: usize = 8_000_000;

/// When the next poster is due, in media milliseconds.
#[derive(Debug, Default)]
pub struct PosterClock {
    next_ms: Option<i64>,
}

impl PosterClock {
    /// Whether a frame at `pts_ms` that starts a segment should become a poster. The first
    /// segment start always does, so a card has a picture as soon as the stream is ready.
    pub fn due(&mut self, pts_ms: i64, segment_start: bool) -> bool {
        if !segment_start || self.next_ms.is_some_and(|next| pts_ms < next) {
            return false;
        }
        self.next_ms = Some(pts_ms + POSTER_EVERY_MS);
        true
    }
}

/// The size a `width`×`height` picture's poster gets: even sides, at most `POSTER_WIDTH` wide.
pub fn poster_size(width: u32, height: u32) -> (u32, u32) {
    let even = |v: u32| (v & !1).max(2);
    let w = even(width.min(POSTER_WIDTH));
    let h = even((u64::from(w) * u64::from(height) / u64::from(width.max(1))) as u32);
    (w, h)
}

/// Scaler and encoder for one input format and size (reopened when the source changes).
struct Maker {
    input: (Pixel, u32, u32),
    scaler: scaling::Context,
    encoder: ffmpeg::encoder::Video,
    picture: ffmpeg::frame::Video,
    pts: i64,
}

impl Maker {
    fn open(source: &ffmpeg::frame::Video) -> Result<Self, TranscodeError> {
        let (w, h) = poster_size(source.width(), source.height());
        let name = "poster";
        let codec = ffmpeg::encoder::find(ffmpeg::codec::Id::MJPEG)
            .ok_or_else(|| TranscodeError::EncoderConfig(name.into(), "no MJPEG encoder".into()))?;
        let mut context = ffmpeg::codec::Context::new_with_codec(codec)
            .encoder()
            .video()
            .map_err(|e| TranscodeError::Open(name.into(), e))?;
        context.set_width(w);
        context.set_height(h);
        context.set_format(Pixel::YUVJ420P);
        context.set_time_base(ffmpeg::Rational::new(1, 25));
        context.set_bit_rate(POSTER_BIT_RATE);
        let encoder = context
            .open_as(codec)
            .map_err(|e| TranscodeError::Open(name.into(), e))?;
        let scaler = scaling::Context::get(
            source.format(),
            source.width(),
            source.height(),
            Pixel::YUVJ420P,
            w,
            h,
            scaling::Flags::BILINEAR,
        )
        .map_err(|e| TranscodeError::Codec(name.into(), e))?;
        Ok(Self {
            input: (source.format(), source.width(), source.height()),
            scaler,
            encoder,
            picture: ffmpeg::frame::Video::empty(),
            pts: 0,
        })
    }

    fn jpeg(&mut self, source: &ffmpeg::frame::Video) -> Result<Bytes, ffmpeg::Error> {
        self.scaler.run(source, &mut self.picture)?;
        self.picture.set_pts(Some(self.pts));
        self.pts += 1;
        self.encoder.send_frame(&self.picture)?;
        let mut packet = ffmpeg::Packet::empty();
        self.encoder.receive_packet(&mut packet)?;
        Ok(Bytes::copy_from_slice(packet.data().unwrap_or_default()))
    }
}

/// The poster thread: one JPEG per frame it receives, until the queue closes.
pub fn run(
    frames: std_mpsc::Receiver<Arc<ffmpeg::frame::Video>>,
    output: mpsc::Sender<RenditionEvent>,
) {
    let mut maker: Option<Maker> = None;
    for frame in frames {
        let input = (frame.format(), frame.width(), frame.height());
        if maker.as_ref().is_none_or(|m| m.input != input) {
            maker = match Maker::open(&frame) {
                Ok(m) => Some(m),
                Err(e) => {
                    tracing::warn!(error = %e, "cannot make posters for this stream");
                    return;
                }
            };
        }
        let Some(m) = maker.as_mut() else { return };
        match m.jpeg(&frame) {
            Ok(jpeg) if !jpeg.is_empty() => {
                if let Err(mpsc::error::TrySendError::Closed(_)) =
                    output.try_send(RenditionEvent::Poster(jpeg))
                {
                    return;
                }
            }
            Ok(_) => {}
            Err(e) => tracing::debug!(error = %e, "could not encode a poster"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn posters_come_at_the_first_segment_start_and_then_every_ten_seconds() {
        let mut clock = PosterClock::default();
        assert!(!clock.due(0, false), "only segment starts");
        assert!(clock.due(40, true));
        assert!(!clock.due(2_040, true));
        assert!(!clock.due(10_000, true));
        assert!(clock.due(10_040, true));
        assert!(!clock.due(12_040, true));
    }

    #[test]
    fn poster_sizes_keep_the_aspect_with_even_sides() {
        assert_eq!(poster_size(1280, 720), (480, 270));
        assert_eq!(poster_size(1920, 1080), (480, 270));
        assert_eq!(poster_size(320, 240), (320, 240));
        assert_eq!(poster_size(720, 1280), (480, 852));
        assert_eq!(poster_size(1, 1), (2, 2));
    }
}
