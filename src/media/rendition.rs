//! Renditions: the tracks a broadcast publishes after transcoding. Video renditions are numbered
//! in ladder order (highest first); there is at most one audio rendition, shared by every video
//! rendition. A passthrough broadcast is the special case of one video rendition (`source`) and
//! the source audio.

use super::{MediaFrame, StreamEvent, TrackInfo, TrackKind};

/// Name of the untouched source rendition (a path component and manifest id).
pub const SOURCE_RENDITION: &str = "source";
/// Name of the audio rendition.
pub const AUDIO_RENDITION: &str = "audio";

/// Which published track a config or frame belongs to.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum TrackId {
    /// Index into the ladder's video renditions, highest first.
    Video(usize),
    Audio,
}

impl TrackId {
    pub fn kind(self) -> TrackKind {
        match self {
            TrackId::Video(_) => TrackKind::Video,
            TrackId::Audio => TrackKind::Audio,
        }
    }
}

/// What packaging consumes: the stream after the ladder (or straight from ingest in passthrough).
#[derive(Debug, Clone, PartialEq)]
pub enum RenditionEvent {
    /// A rendition's name and configuration, before its first frame.
    Track {
        id: TrackId,
        name: String,
        info: TrackInfo,
    },
    Frame {
        id: TrackId,
        frame: MediaFrame,
    },
    /// A new poster (JPEG) of the live picture; not part of any rendition.
    Poster(bytes::Bytes),
    /// See `StreamEvent::Pause`.
    Pause,
    /// Nothing follows.
    End,
}

/// Passthrough: the source video is rendition 0 and the source audio is the audio rendition.
impl From<StreamEvent> for RenditionEvent {
    fn from(event: StreamEvent) -> Self {
        let id = |kind| match kind {
            TrackKind::Video => TrackId::Video(0),
            TrackKind::Audio => TrackId::Audio,
        };
        match event {
            StreamEvent::Track(info) => RenditionEvent::Track {
                id: id(info.kind),
                name: match info.kind {
                    TrackKind::Video => SOURCE_RENDITION,
                    TrackKind::Audio => AUDIO_RENDITION,
                }
                .to_string(),
                info,
            },
            StreamEvent::Frame(frame) => RenditionEvent::Frame {
                id: id(frame.kind),
                frame,
            },
            StreamEvent::Pause => RenditionEvent::Pause,
            StreamEvent::End => RenditionEvent::End,
        }
    }
}
