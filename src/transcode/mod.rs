//! Transcoding: decode the source once, encode every rung of a ladder on its own thread, with
//! IDRs at the same presentation times in every rendition.
//!
//! - `ladder`: ladder files (`ladders/*.toml`) and their validation.
//! - `plan` (pure): which renditions a ladder yields for one source.
//! - `cadence` (pure): segment starts (forced IDRs) and per-rung frame-rate caps.
//! - `avc` (pure): x264's Annex-B output → CMAF's length-prefixed samples and `avcC`.
//! - `transcoder`: the decode thread that owns one broadcast's ladder; `rung` and `audio` are
//!   its worker threads; `ffi` holds the audited `unsafe` for what ffmpeg-next does not wrap.
//! - `worker`: the same transcoder in a child process per broadcast (`strata worker`), its
//!   byte protocol (`worker::wire`) and its limits; the server runs every ladder that way.
//!
//! Nothing here runs on the async runtime: the threads talk to ingest and packaging through
//! bounded tokio channels (`blocking_recv`/`blocking_send`) and to each other through bounded
//! std channels. `transcoder`'s doc says what each queue does when full.

mod audio;
pub mod avc;
pub mod cadence;
pub(crate) mod ffi;
pub mod ladder;
pub mod plan;
mod poster;
mod rung;
mod transcoder;
pub mod worker;

pub use ladder::{Ladder, LadderError, Ladders};
pub use plan::{Plan, PlannedVideo, Source};
pub(crate) use transcoder::open_decoder;
pub use transcoder::{spawn, TranscodeJob, OUTPUT_QUEUE};
pub use worker::WorkerLimits;

#[derive(Debug, thiserror::Error)]
pub enum TranscodeError {
    #[error("this FFmpeg has no libx264 encoder (install Debian's libavcodec with x264)")]
    NoX264,
    #[error("this FFmpeg has no AAC codec")]
    NoAac,
    #[error("this FFmpeg has no {0} decoder")]
    NoDecoder(&'static str),
    #[error(
        "the {0} source's picture size is in neither its configuration nor its first keyframe"
    )]
    UnknownSize(&'static str),
    #[error("cannot open {0}: {1}")]
    Open(String, ffmpeg_next::Error),
    #[error("{0}: {1}")]
    Codec(String, ffmpeg_next::Error),
    #[error("{0}: the encoder's configuration is unusable: {1}")]
    EncoderConfig(String, String),
    #[error("the ladder's audio sample rate {0} Hz has no AAC frequency index")]
    AudioFormat(u32),
    #[error(
        "the source is {0}x{1}, larger than the 4096x2304 the transcoder decodes; lower the \
         encoder's output resolution or give the stream the passthrough ladder"
    )]
    SourceTooLarge(u32, u32),
    #[error("the {0} worker thread ended unexpectedly")]
    WorkerGone(String),
    #[error("cannot start a transcoding thread: {0}")]
    Thread(std::io::Error),
    /// Packaging stopped listening (the broadcast ended): not an error to report.
    #[error("packaging stopped")]
    OutputClosed,
}

impl TranscodeError {
    fn open(what: &str, e: ffmpeg_next::Error) -> Self {
        Self::Open(what.to_string(), e)
    }

    fn encode(what: &str, e: ffmpeg_next::Error) -> Self {
        Self::Codec(what.to_string(), e)
    }
}

/// Initialises FFmpeg once per process and keeps its own logging to errors (x264 prints
/// statistics at every encoder close otherwise).
pub fn init() -> Result<(), TranscodeError> {
    ffmpeg_next::init().map_err(|e| TranscodeError::Open("FFmpeg".into(), e))?;
    ffmpeg_next::util::log::set_level(ffmpeg_next::util::log::Level::Error);
    Ok(())
}
