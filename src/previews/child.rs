//! The previews process (`strata previews`): decodes the keyframes of one sprite sheet and
//! writes the sheet as a JPEG. The keyframes come from stored segments, which hold what a
//! publisher sent, so decoding them is the same hostile work a ladder's worker does and runs
//! in a child process of its own under the worker's limits plus a CPU-time limit
//! (`previews::run_sheet`).
//!
//! Input on stdin, in the worker's wire format (`transcode::worker::wire`, bounded and
//! fuzzed): the video track, then at most `TILES_PER_SHEET` keyframes, each decoded on its own
//! (it is an IDR), scaled to a thumbnail and put in its place; a keyframe that does not decode
//! leaves its place black. Output on stdout: `SheetHeader` (four big-endian u32: thumbnail
//! width and height, thumbnails placed, keyframes read) and the JPEG.
//!
//! Exit status: 0 with a sheet; 3 when the input was malformed; 4 when FFmpeg cannot start or
//! the track has no decoder; 5 when no keyframe decoded; 1 when stdout failed.

use std::io::{BufReader, Read, Write};
use std::process::ExitCode;

use ffmpeg::format::Pixel;
use ffmpeg::software::scaling;
use ffmpeg_next as ffmpeg;

use super::layout::{self, TILES_PER_SHEET};
use crate::media::{StreamEvent, TrackKind};
use crate::transcode::worker::wire::{self, ToWorker};

/// Bits per sheet pixel the JPEG encoder aims at (at its nominal 25 fps): small files that
/// still show what a picture is.
const BITS_PER_PIXEL: f64 = 1.2;

/// Runs the previews process on this process's stdin and stdout.
pub fn main(label: &str) -> ExitCode {
    let span = tracing::info_span!("previews", vod = %label);
    let _entered = span.enter();
    if let Err(e) = crate::transcode::init() {
        tracing::error!(error = %e, "the previews process cannot start FFmpeg");
        return ExitCode::from(4);
    }
    let mut input = BufReader::with_capacity(1 << 16, std::io::stdin().lock());
    ExitCode::from(make_sheet(&mut input, &mut std::io::stdout().lock()))
}

/// Reads one sheet's input from `input`, writes the sheet to `out`, and returns the exit
/// status (see the module doc). FFmpeg is initialised.
pub fn make_sheet(input: &mut impl Read, out: &mut impl Write) -> u8 {
    let track = match wire::read_to_worker(input) {
        Ok(Some(ToWorker::Event(StreamEvent::Track(info)))) if info.kind == TrackKind::Video => {
            info
        }
        Ok(_) => return refuse("the first message was not a video track"),
        Err(e) => return refuse(&e.to_string()),
    };
    let mut decoder = match crate::transcode::open_decoder(&track.codec, None) {
        Ok(d) => d,
        Err(e) => {
            tracing::warn!(error = %e, "no previews: the video cannot be decoded");
            return 4;
        }
    };
    let mut tiles = Tiles::default();
    let mut read = 0usize;
    loop {
        match wire::read_to_worker(input) {
            Ok(Some(ToWorker::Event(StreamEvent::Frame(frame))))
                if frame.kind == TrackKind::Video && read < TILES_PER_SHEET =>
            {
                let mut packet = ffmpeg::Packet::copy(&frame.data);
                packet.set_pts(Some(read as i64));
                packet.set_dts(Some(read as i64));
                packet.set_flags(ffmpeg::packet::Flags::KEY);
                if let Err(e) = decoder.send_packet(&packet) {
                    tracing::debug!(error = %e, "a keyframe did not decode");
                }
                read += 1;
                tiles.take(&mut decoder);
            }
            Ok(None) => break,
            Ok(Some(_)) => return refuse("expected at most one sheet of video keyframes"),
            Err(e) => return refuse(&e.to_string()),
        }
    }
    let _ = decoder.send_eof();
    tiles.take(&mut decoder);
    let Some(mut sheet) = tiles.sheet(read) else {
        tracing::warn!(keyframes = read, "no previews: no keyframe decoded");
        return 5;
    };
    let jpeg = match sheet.jpeg() {
        Ok(jpeg) => jpeg,
        Err(e) => {
            tracing::warn!(error = %e, "no previews: the sheet could not be encoded");
            return 4;
        }
    };
    let header = [sheet.tile.0, sheet.tile.1, sheet.placed, read as u32];
    let written = header
        .iter()
        .try_for_each(|v| out.write_all(&v.to_be_bytes()))
        .and_then(|()| out.write_all(&jpeg))
        .and_then(|()| out.flush());
    match written {
        Ok(()) => 0,
        Err(_) => 1,
    }
}

fn refuse(why: &str) -> u8 {
    tracing::error!("the previews process got malformed input: {why}");
    3
}

/// Decoded keyframes, scaled to thumbnails, by their place in the sheet.
#[derive(Default)]
struct Tiles {
    /// The thumbnail size, fixed by the first picture (later ones of another size are scaled
    /// to it).
    size: Option<(u32, u32)>,
    scaler: Option<((Pixel, u32, u32), scaling::Context)>,
    placed: Vec<(usize, ffmpeg::frame::Video)>,
}

impl Tiles {
    /// Takes every picture the decoder has ready.
    fn take(&mut self, decoder: &mut ffmpeg::decoder::Video) {
        let mut picture = ffmpeg::frame::Video::empty();
        while decoder.receive_frame(&mut picture).is_ok() {
            let index = picture.pts().and_then(|p| usize::try_from(p).ok());
            let Some(index) = index.filter(|i| *i < TILES_PER_SHEET) else {
                continue;
            };
            match self.scale(&picture) {
                Ok(tile) => self.placed.push((index, tile)),
                Err(e) => tracing::debug!(error = %e, "a picture could not be scaled"),
            }
        }
    }

    fn scale(
        &mut self,
        picture: &ffmpeg::frame::Video,
    ) -> Result<ffmpeg::frame::Video, ffmpeg::Error> {
        let (w, h) = *self
            .size
            .get_or_insert_with(|| layout::tile_size(picture.width(), picture.height()));
        let input = (picture.format(), picture.width(), picture.height());
        if self.scaler.as_ref().is_none_or(|(i, _)| *i != input) {
            let scaler = scaling::Context::get(
                input.0,
                input.1,
                input.2,
                Pixel::YUVJ420P,
                w,
                h,
                scaling::Flags::BILINEAR,
            )?;
            self.scaler = Some((input, scaler));
        }
        let mut tile = ffmpeg::frame::Video::empty();
        if let Some((_, scaler)) = self.scaler.as_mut() {
            scaler.run(picture, &mut tile)?;
        }
        Ok(tile)
    }

    /// The sheet for `count` places, black where nothing decoded.
    fn sheet(self, count: usize) -> Option<Sheet> {
        let (w, h) = self.size?;
        if self.placed.is_empty() {
            return None;
        }
        let (width, height) = layout::sheet_size(count, w, h);
        let mut frame = ffmpeg::frame::Video::new(Pixel::YUVJ420P, width, height);
        for plane in 0..3 {
            let fill = if plane == 0 { 0 } else { 128 };
            frame.data_mut(plane).fill(fill);
        }
        let mut placed = 0;
        for (index, tile) in &self.placed {
            if *index >= count || (tile.width(), tile.height()) != (w, h) {
                continue;
            }
            let (x, y) = layout::region(*index, w, h);
            for plane in 0..3 {
                // 4:2:0: chroma planes are half as wide and half as tall
                let shift = u32::from(plane > 0);
                let (px, py, pw, ph) = (x >> shift, y >> shift, w >> shift, h >> shift);
                let (src_stride, dst_stride) = (tile.stride(plane), frame.stride(plane));
                let source = tile.data(plane);
                let target = frame.data_mut(plane);
                for row in 0..ph as usize {
                    let from = row * src_stride;
                    let to = (py as usize + row) * dst_stride + px as usize;
                    target[to..to + pw as usize].copy_from_slice(&source[from..from + pw as usize]);
                }
            }
            placed += 1;
        }
        Some(Sheet {
            frame,
            tile: (w, h),
            placed,
        })
    }
}

/// A composed sheet.
struct Sheet {
    frame: ffmpeg::frame::Video,
    tile: (u32, u32),
    placed: u32,
}

impl Sheet {
    fn jpeg(&mut self) -> Result<Vec<u8>, ffmpeg::Error> {
        let codec = ffmpeg::encoder::find(ffmpeg::codec::Id::MJPEG)
            .ok_or(ffmpeg::Error::EncoderNotFound)?;
        let mut context = ffmpeg::codec::Context::new_with_codec(codec)
            .encoder()
            .video()?;
        let (width, height) = (self.frame.width(), self.frame.height());
        context.set_width(width);
        context.set_height(height);
        context.set_format(Pixel::YUVJ420P);
        context.set_time_base(ffmpeg::Rational::new(1, 25));
        context
            .set_bit_rate((f64::from(width) * f64::from(height) * 25.0 * BITS_PER_PIXEL) as usize);
        let mut encoder = context.open_as(codec)?;
        self.frame.set_pts(Some(0));
        encoder.send_frame(&self.frame)?;
        encoder.send_eof()?;
        let mut packet = ffmpeg::Packet::empty();
        encoder.receive_packet(&mut packet)?;
        Ok(packet.data().unwrap_or_default().to_vec())
    }
}
