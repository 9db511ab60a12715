//! What the server accepts from a worker beyond well-formed bytes (pure): the worker decodes
//! attacker-controlled video, so a message that parses may still be a lie. Rendition names end
//! up in object keys and metric labels, so they must be the ladder's own (a rung's name,
//! `source` when the ladder offers it, `audio`), each index keeping the name it was first
//! announced with; a frame's kind must be its track's; a poster must look like a JPEG and may
//! come at most once per `MIN_POSTER_GAP` (a worker cannot make the server write the store in a
//! loop); speeds and drop counts name rungs.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use super::wire::{FromWorker, WireError};
use crate::media::{RenditionEvent, TrackId, AUDIO_RENDITION, SOURCE_RENDITION};
use crate::transcode::Ladder;

/// Posters closer together than this are skipped (the transcoder makes one per 10 s of media).
pub const MIN_POSTER_GAP: Duration = Duration::from_secs(2);
/// Fastest speed a rung may claim (media seconds per second of work).
const MAX_SPEED: f64 = 1e6;

/// What to do with one accepted message.
#[derive(Debug, PartialEq)]
pub enum Accepted {
    /// Hand it to packaging.
    Forward(RenditionEvent),
    /// A rung's speed for the broadcast's statistics.
    Speed(String, f64),
    /// Frames a rung skipped, for the dropped-frames counter.
    Dropped(String, u64),
    /// Well-formed but not wanted now (a poster too soon after the last).
    Skip,
}

/// The checks for one broadcast's worker.
pub struct OutputCheck {
    rungs: Vec<String>,
    source: bool,
    /// The name each video index was announced with.
    announced: BTreeMap<usize, String>,
    last_poster: Option<Instant>,
}

impl OutputCheck {
    pub fn new(ladder: &Ladder) -> Self {
        Self {
            rungs: ladder.rungs.iter().map(|r| r.name.clone()).collect(),
            source: ladder.source,
            announced: BTreeMap::new(),
            last_poster: None,
        }
    }

    /// Accepts `message` (received at `now`) or says what is wrong with it.
    pub fn check(&mut self, message: FromWorker, now: Instant) -> Result<Accepted, WireError> {
        let invalid = |what, why: String| Err(WireError::Invalid { what, why });
        match message {
            FromWorker::Event(RenditionEvent::Track { id, name, info }) => {
                if info.kind != id.kind() {
                    return invalid(
                        "track",
                        format!("{id:?} announced as {}", info.kind.as_str()),
                    );
                }
                match id {
                    TrackId::Audio if name == AUDIO_RENDITION => {}
                    TrackId::Audio => return invalid("audio rendition", format!("named {name:?}")),
                    TrackId::Video(index) => {
                        let known =
                            self.rungs.contains(&name) || (self.source && name == SOURCE_RENDITION);
                        if !known {
                            return invalid(
                                "video rendition",
                                format!("{name:?} is not a rendition of this ladder"),
                            );
                        }
                        let max = self.rungs.len() + usize::from(self.source);
                        if index >= max {
                            return invalid(
                                "video rendition",
                                format!("index {index}; this ladder has {max}"),
                            );
                        }
                        if let Some(before) = self.announced.get(&index) {
                            if *before != name {
                                return invalid(
                                    "video rendition",
                                    format!("index {index} was {before:?}, now {name:?}"),
                                );
                            }
                        } else if self.announced.values().any(|n| *n == name) {
                            return invalid(
                                "video rendition",
                                format!("{name:?} announced at two indexes"),
                            );
                        }
                        self.announced.insert(index, name.clone());
                    }
                }
                Ok(Accepted::Forward(RenditionEvent::Track { id, name, info }))
            }
            FromWorker::Event(RenditionEvent::Frame { id, frame }) => {
                if frame.kind != id.kind() {
                    return invalid(
                        "frame",
                        format!("a {} frame on {id:?}", frame.kind.as_str()),
                    );
                }
                Ok(Accepted::Forward(RenditionEvent::Frame { id, frame }))
            }
            FromWorker::Event(RenditionEvent::Poster(jpeg)) => {
                if !jpeg.starts_with(&[0xFF, 0xD8, 0xFF]) {
                    return invalid("poster", "not a JPEG".into());
                }
                if self
                    .last_poster
                    .is_some_and(|last| now.saturating_duration_since(last) < MIN_POSTER_GAP)
                {
                    return Ok(Accepted::Skip);
                }
                self.last_poster = Some(now);
                Ok(Accepted::Forward(RenditionEvent::Poster(jpeg)))
            }
            FromWorker::Event(event @ (RenditionEvent::Pause | RenditionEvent::End)) => {
                Ok(Accepted::Forward(event))
            }
            FromWorker::Speed { rendition, speed } => {
                self.rung("speed", &rendition)?;
                if !(0.0..=MAX_SPEED).contains(&speed) {
                    return invalid("speed", format!("{speed} for {rendition:?}"));
                }
                Ok(Accepted::Speed(rendition, speed))
            }
            FromWorker::Dropped { rendition, frames } => {
                self.rung("dropped frames", &rendition)?;
                Ok(Accepted::Dropped(rendition, frames))
            }
        }
    }

    fn rung(&self, what: &'static str, name: &str) -> Result<(), WireError> {
        if self.rungs.iter().any(|r| r == name) {
            return Ok(());
        }
        Err(WireError::Invalid {
            what,
            why: format!("{name:?} is not a rung of this ladder"),
        })
    }
}

#[cfg(test)]
mod tests {
    use bytes::Bytes;

    use super::*;
    use crate::media::{AacConfig, CodecConfig, MediaFrame, Timestamp, TrackInfo, TrackKind};
    use crate::transcode::Ladders;

    fn audio_info() -> TrackInfo {
        TrackInfo {
            kind: TrackKind::Audio,
            codec: CodecConfig::Aac(AacConfig::parse(Bytes::from_static(&[0x11, 0x90])).unwrap()),
        }
    }

    fn check() -> OutputCheck {
        OutputCheck::new(Ladders::shipped().get("default").unwrap())
    }

    #[test]
    fn names_must_be_this_ladders() {
        let mut check = check();
        let now = Instant::now();
        let track = |id, name: &str, info| {
            FromWorker::Event(RenditionEvent::Track {
                id,
                name: name.into(),
                info,
            })
        };
        assert!(check
            .check(track(TrackId::Audio, "audio", audio_info()), now)
            .is_ok());
        for bad in [
            track(TrackId::Audio, "../x", audio_info()),
            // a video index announcing audio
            track(TrackId::Video(0), "720p", audio_info()),
        ] {
            assert!(check.check(bad, now).is_err());
        }
        let speed = |name: &str| FromWorker::Speed {
            rendition: name.into(),
            speed: 1.0,
        };
        assert_eq!(
            check.check(speed("720p"), now).unwrap(),
            Accepted::Speed("720p".into(), 1.0)
        );
        assert!(check.check(speed("source"), now).is_err());
        assert!(check.check(speed("x{a=\"b\"}"), now).is_err());
    }

    #[test]
    fn frames_keep_their_tracks_kind_and_posters_are_rate_limited_jpegs() {
        let mut check = check();
        let now = Instant::now();
        let frame = FromWorker::Event(RenditionEvent::Frame {
            id: TrackId::Video(0),
            frame: MediaFrame {
                kind: TrackKind::Audio,
                dts: Timestamp::from_millis(0),
                pts: Timestamp::from_millis(0),
                sync: true,
                segment_start: false,
                data: Bytes::new(),
            },
        });
        assert!(check.check(frame, now).is_err());
        let poster =
            |b: &'static [u8]| FromWorker::Event(RenditionEvent::Poster(Bytes::from_static(b)));
        assert!(check.check(poster(b"<html>"), now).is_err());
        assert!(matches!(
            check.check(poster(b"\xff\xd8\xff\xe0"), now).unwrap(),
            Accepted::Forward(_)
        ));
        assert_eq!(
            check.check(poster(b"\xff\xd8\xff\xe0"), now).unwrap(),
            Accepted::Skip
        );
        assert!(matches!(
            check
                .check(poster(b"\xff\xd8\xff\xe0"), now + MIN_POSTER_GAP)
                .unwrap(),
            Accepted::Forward(_)
        ));
    }
}
