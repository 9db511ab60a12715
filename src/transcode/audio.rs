//! The audio worker thread: decode the source audio (AAC, or a browser's Opus) once, resample (swresample) to the ladder's
//! rate and channel count, and encode one AAC-LC rendition (FFmpeg's native `aac` encoder) that
//! every video rendition shares.
//!
//! The encoder takes exactly 1024-sample frames, so resampled audio goes through a small FIFO.
//! Output times count samples from the first input frame and re-anchor to the source clock
//! when it jumps by more than 100 ms (a gap in the source), so audio stays on video's timeline.
//! A new source config (another sample rate or channel count) reopens the decoder; the output
//! keeps its format.

use std::sync::mpsc as std_mpsc;

use bytes::Bytes;
use ffmpeg::format::Sample;
use ffmpeg::ChannelLayout;
use ffmpeg_next as ffmpeg;
use tokio::sync::mpsc;

use super::ffi;
use super::ladder::AudioRung;
use super::TranscodeError;
use crate::media::{
    AacConfig, CodecConfig, MediaFrame, RenditionEvent, Timestamp, TrackId, TrackInfo, TrackKind,
    AAC_FRAME_SAMPLES,
};

/// Source audio frames queued for the worker (about 1.4 s at 48 kHz). When full, the decode
/// thread waits.
pub const AUDIO_QUEUE: usize = 64;

const PLANAR_FLOAT: Sample = Sample::F32(ffmpeg::format::sample::Type::Planar);
const FRAME: usize = AAC_FRAME_SAMPLES as usize;

/// What the decode thread sends the audio worker.
pub enum AudioInput {
    /// The source's audio configuration: AAC or Opus.
    Config(CodecConfig),
    Frame(MediaFrame),
    /// The publisher was lost: hand packaging every frame the encoder holds, answer on the
    /// sender, and continue with a fresh encoder.
    Flush(std_mpsc::SyncSender<()>),
}

/// The AAC-LC configuration the worker produces (known before it starts, so packaging can
/// announce it with the video renditions).
pub fn output_config(audio: &AudioRung) -> Result<AacConfig, TranscodeError> {
    const RATES: [u32; 13] = [
        96_000, 88_200, 64_000, 48_000, 44_100, 32_000, 24_000, 22_050, 16_000, 12_000, 11_025,
        8_000, 7_350,
    ];
    let index = RATES
        .iter()
        .position(|r| *r == audio.sample_rate)
        .ok_or(TranscodeError::AudioFormat(audio.sample_rate))? as u16;
    // AudioSpecificConfig: object type 2 (LC, 5 bits), frequency index (4), channels (4)
    let asc = (2u16 << 11) | (index << 7) | (u16::from(audio.channels) << 3);
    AacConfig::parse(Bytes::copy_from_slice(&asc.to_be_bytes()))
        .map_err(|e| TranscodeError::EncoderConfig("audio".into(), e.to_string()))
}

pub fn track(config: AacConfig) -> TrackInfo {
    TrackInfo {
        kind: TrackKind::Audio,
        codec: CodecConfig::Aac(config),
    }
}

/// The worker: runs until its input closes (then flushes) or packaging goes away.
pub fn run(
    audio: AudioRung,
    input: std_mpsc::Receiver<AudioInput>,
    output: mpsc::Sender<RenditionEvent>,
) {
    let result = (|| {
        let mut worker = Worker::new(audio, output)?;
        while let Ok(item) = input.recv() {
            match item {
                AudioInput::Config(config) => worker.configure(&config)?,
                AudioInput::Frame(frame) => worker.decode(&frame)?,
                AudioInput::Flush(done) => {
                    worker.flush()?;
                    // the decode thread waits for this; it is gone only if the broadcast ended
                    let _ = done.send(());
                }
            }
        }
        worker.finish()
    })();
    match result {
        Ok(()) | Err(TranscodeError::OutputClosed) => {}
        Err(e) => tracing::error!(error = %e, "audio transcoding stopped"),
    }
}

struct Worker {
    audio: AudioRung,
    layout: ChannelLayout,
    output: mpsc::Sender<RenditionEvent>,
    decoder: Option<ffmpeg::decoder::Audio>,
    resampler: Option<ffmpeg::software::resampling::Context>,
    encoder: ffmpeg::encoder::Audio,
    /// Planar samples waiting for a full encoder frame, one Vec per channel.
    fifo: Vec<Vec<f32>>,
    /// Output-rate sample time of the first sample in `fifo`; `None` before the first frame.
    fifo_start: Option<i64>,
    /// The clock of the source's audio timestamps (1 kHz RTMP, 90 kHz MPEG-TS): the decoder's
    /// packets carry them unrounded.
    source_timescale: u32,
}

impl Worker {
    fn new(audio: AudioRung, output: mpsc::Sender<RenditionEvent>) -> Result<Self, TranscodeError> {
        let layout = ChannelLayout::default(i32::from(audio.channels));
        Ok(Self {
            fifo: vec![Vec::new(); usize::from(audio.channels)],
            encoder: open_encoder(&audio, layout)?,
            audio,
            layout,
            output,
            decoder: None,
            resampler: None,
            fifo_start: None,
            source_timescale: Timestamp::MILLIS,
        })
    }

    /// Encodes what the encoder holds, then starts a fresh encoder; samples short of a whole
    /// frame (under 21 ms) are dropped, and the next frame sets the output clock again.
    fn flush(&mut self) -> Result<(), TranscodeError> {
        self.encoder
            .send_eof()
            .map_err(|e| TranscodeError::encode("audio", e))?;
        self.send_packets()?;
        self.encoder = open_encoder(&self.audio, self.layout)?;
        self.fifo.iter_mut().for_each(Vec::clear);
        self.fifo_start = None;
        Ok(())
    }

    fn configure(&mut self, config: &CodecConfig) -> Result<(), TranscodeError> {
        if self.decoder.is_some() {
            tracing::info!(
                codec = config.name(),
                "the source changed its audio configuration; decoding it, the audio rendition \
                 keeps its format"
            );
            self.flush_decoder()?;
        }
        let (id, extradata) = match config {
            CodecConfig::Aac(aac) => (ffmpeg::codec::Id::AAC, &aac.asc),
            CodecConfig::Opus(opus) => (ffmpeg::codec::Id::OPUS, &opus.head),
            video => return Err(TranscodeError::NoDecoder(video.name())),
        };
        let codec = ffmpeg::decoder::find(id).ok_or(TranscodeError::NoDecoder(config.name()))?;
        let mut context = ffmpeg::codec::Context::new_with_codec(codec);
        ffi::set_extradata(&mut context, extradata)
            .map_err(|e| TranscodeError::open("audio decoder", e))?;
        self.decoder = Some(
            context
                .decoder()
                .audio()
                .map_err(|e| TranscodeError::open("audio decoder", e))?,
        );
        Ok(())
    }

    fn decode(&mut self, frame: &MediaFrame) -> Result<(), TranscodeError> {
        let Some(decoder) = self.decoder.as_mut() else {
            return Ok(()); // no config yet: nothing can decode this
        };
        // the decoder counts in the source's clock, so no timestamp is rounded on the way
        let mut packet = ffmpeg::Packet::copy(&frame.data);
        self.source_timescale = frame.pts.timescale;
        packet.set_pts(Some(frame.pts.ticks));
        packet.set_dts(Some(frame.pts.ticks));
        if let Err(e) = decoder.send_packet(&packet) {
            // one corrupt AAC frame is a 21 ms click, not the end of the broadcast
            tracing::debug!(error = %e, "dropped an undecodable audio frame");
            return Ok(());
        }
        self.receive_decoded(Some(frame.pts.ticks))
    }

    fn flush_decoder(&mut self) -> Result<(), TranscodeError> {
        if let Some(decoder) = self.decoder.as_mut() {
            let _ = decoder.send_eof();
        }
        self.receive_decoded(None)
    }

    /// Resamples every frame the decoder has ready into the FIFO, then encodes full frames.
    /// `source_pts` is in the source's ticks (`source_timescale`).
    fn receive_decoded(&mut self, source_pts: Option<i64>) -> Result<(), TranscodeError> {
        let mut decoded = ffmpeg::frame::Audio::empty();
        while let Some(decoder) = self.decoder.as_mut() {
            if decoder.receive_frame(&mut decoded).is_err() {
                break;
            }
            let in_layout = if decoded.channel_layout().is_empty() {
                ChannelLayout::default(i32::from(decoded.channels()))
            } else {
                decoded.channel_layout()
            };
            decoded.set_channel_layout(in_layout);
            let stale = self.resampler.as_ref().is_none_or(|r| {
                let i = r.input();
                (i.format, i.channel_layout, i.rate)
                    != (decoded.format(), in_layout, decoded.rate())
            });
            if stale {
                self.resampler = Some(
                    ffmpeg::software::resampling::Context::get(
                        decoded.format(),
                        in_layout,
                        decoded.rate(),
                        PLANAR_FLOAT,
                        self.layout,
                        self.audio.sample_rate,
                    )
                    .map_err(|e| TranscodeError::open("audio resampler", e))?,
                );
            }
            // room for everything this frame yields plus what the resampler held back
            let capacity = decoded.samples() * self.audio.sample_rate as usize
                / decoded.rate().max(1) as usize
                + 256;
            let mut resampled = ffmpeg::frame::Audio::new(PLANAR_FLOAT, capacity, self.layout);
            if let Some(resampler) = self.resampler.as_mut() {
                resampler
                    .run(&decoded, &mut resampled)
                    .map_err(|e| TranscodeError::encode("audio", e))?;
            }
            let time = source_pts.or(decoded.timestamp()).map(|ticks| {
                Timestamp::new(ticks, self.source_timescale)
                    .rescale(self.audio.sample_rate)
                    .ticks
            });
            self.push_fifo(&resampled, time);
            self.encode_full_frames()?;
        }
        Ok(())
    }

    fn push_fifo(&mut self, frame: &ffmpeg::frame::Audio, source_time: Option<i64>) {
        let queued = self.fifo[0].len() as i64;
        match (self.fifo_start, source_time) {
            (None, Some(t)) => self.fifo_start = Some(t),
            (Some(start), Some(t))
                if (start + queued - t).abs() > i64::from(self.audio.sample_rate) / 10 =>
            {
                self.fifo_start = Some(t - queued); // a gap in the source: follow its clock
            }
            _ => {}
        }
        for (channel, buffer) in self.fifo.iter_mut().enumerate() {
            let plane: &[f32] = frame.plane(channel);
            buffer.extend_from_slice(&plane[..frame.samples().min(plane.len())]);
        }
    }

    fn encode_full_frames(&mut self) -> Result<(), TranscodeError> {
        while self.fifo[0].len() >= FRAME {
            let mut frame = ffmpeg::frame::Audio::new(PLANAR_FLOAT, FRAME, self.layout);
            frame.set_rate(self.audio.sample_rate);
            for (channel, buffer) in self.fifo.iter_mut().enumerate() {
                frame.plane_mut::<f32>(channel)[..FRAME].copy_from_slice(&buffer[..FRAME]);
                buffer.drain(..FRAME);
            }
            let start = self.fifo_start.unwrap_or(0);
            frame.set_pts(Some(start));
            self.fifo_start = Some(start + FRAME as i64);
            self.encoder
                .send_frame(&frame)
                .map_err(|e| TranscodeError::encode("audio", e))?;
            self.send_packets()?;
        }
        Ok(())
    }

    fn send_packets(&mut self) -> Result<(), TranscodeError> {
        let mut packet = ffmpeg::Packet::empty();
        while self.encoder.receive_packet(&mut packet).is_ok() {
            let (Some(pts), Some(data)) = (packet.pts(), packet.data()) else {
                continue;
            };
            let time = Timestamp::new(pts, self.audio.sample_rate);
            let frame = MediaFrame {
                kind: TrackKind::Audio,
                dts: time,
                pts: time,
                sync: true,
                segment_start: false,
                data: Bytes::copy_from_slice(data),
            };
            self.output
                .blocking_send(RenditionEvent::Frame {
                    id: TrackId::Audio,
                    frame,
                })
                .map_err(|_| TranscodeError::OutputClosed)?;
        }
        Ok(())
    }

    fn finish(&mut self) -> Result<(), TranscodeError> {
        self.flush_decoder()?;
        self.encoder
            .send_eof()
            .map_err(|e| TranscodeError::encode("audio", e))?;
        self.send_packets()
    }
}

/// FFmpeg's AAC-LC encoder for `audio`.
fn open_encoder(
    audio: &AudioRung,
    layout: ChannelLayout,
) -> Result<ffmpeg::encoder::Audio, TranscodeError> {
    let codec = ffmpeg::encoder::find_by_name("aac").ok_or(TranscodeError::NoAac)?;
    let mut context = ffmpeg::codec::Context::new_with_codec(codec)
        .encoder()
        .audio()
        .map_err(|e| TranscodeError::open("audio", e))?;
    context.set_rate(audio.sample_rate as i32);
    context.set_channel_layout(layout);
    context.set_channels(i32::from(audio.channels));
    context.set_format(PLANAR_FLOAT);
    context.set_bit_rate(audio.bitrate as usize);
    context.set_time_base(ffmpeg::Rational::new(1, audio.sample_rate as i32));
    context.set_flags(ffmpeg::codec::Flags::GLOBAL_HEADER);
    context.open().map_err(|e| TranscodeError::open("audio", e))
}
