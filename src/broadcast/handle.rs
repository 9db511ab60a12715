//! A live broadcast as its ingest connection sees it: where its media goes, what cancels it,
//! and a clock that keeps its timeline continuous across the connections that carry it.

use std::sync::Arc;

use metrics::Counter;
use tokio_util::sync::CancellationToken;

use super::Protocol;
use crate::hub::LiveStats;
use crate::media::{queue, MediaFrame, StreamEvent, Timestamp, TrackKind};

/// The first timestamp after a reconnect follows the last one before it by this much (in
/// seconds): more than any composition offset, so no frame of the new connection is presented
/// before one of the old.
pub const RESUME_STEP: f64 = 0.1;

/// A broadcast the server accepted. Outlives its connection while the broadcast waits for a
/// reconnect (see `reconnect`).
pub struct Broadcast {
    /// Identifies the broadcast (its playback id labels log lines) and counts its input.
    pub stats: Arc<LiveStats>,
    events: queue::Sender,
    pub cancel: CancellationToken,
    pub(super) clock: ResumableClock,
    /// The protocol of the connection carrying it now.
    protocol: Protocol,
    /// Its pipeline decodes the input (a ladder), so any codec a ladder decodes may continue it.
    pub(super) transcodes: bool,
    /// `strata_ingest_*{stream, protocol}`: what the current connection brought in.
    ingest: IngestCounters,
}

/// A broadcast's ingest series, labelled with its stream and the protocol carrying it (a
/// reconnect over another protocol counts in that protocol's series from then on).
struct IngestCounters {
    bytes: Counter,
    video_frames: Counter,
    audio_frames: Counter,
}

impl IngestCounters {
    fn new(playback_id: &str, protocol: Protocol) -> Self {
        let (stream, protocol) = (playback_id.to_string(), protocol.label());
        let frames = |kind: &'static str| metrics::counter!(crate::telemetry::INGEST_FRAMES, "stream" => stream.clone(), "protocol" => protocol, "kind" => kind);
        Self {
            video_frames: frames("video"),
            audio_frames: frames("audio"),
            bytes: metrics::counter!(crate::telemetry::INGEST_BYTES, "stream" => stream.clone(), "protocol" => protocol),
        }
    }
}

impl Broadcast {
    pub(super) fn new(
        stats: Arc<LiveStats>,
        events: queue::Sender,
        cancel: CancellationToken,
        protocol: Protocol,
        transcodes: bool,
    ) -> Self {
        Self {
            ingest: IngestCounters::new(&stats.id.playback_id, protocol),
            stats,
            events,
            cancel,
            clock: ResumableClock::default(),
            protocol,
            transcodes,
        }
    }

    /// A reconnect over `protocol` carries the broadcast from now on.
    pub(super) fn set_protocol(&mut self, protocol: Protocol) {
        self.protocol = protocol;
        self.ingest = IngestCounters::new(&self.stats.id.playback_id, protocol);
    }

    pub fn playback_id(&self) -> &str {
        &self.stats.id.playback_id
    }

    pub fn protocol(&self) -> Protocol {
        self.protocol
    }

    /// Hands one event from the ingest's demuxer to the pipeline, waiting while its queue is
    /// full (the connection stops reading: back-pressure on this one publisher). Frames are put
    /// on the broadcast's timeline first. Fails once the pipeline has stopped.
    pub async fn send(&mut self, event: StreamEvent) -> Result<(), queue::Closed> {
        let event = match event {
            StreamEvent::Track(info) => {
                self.stats.set_track(&info);
                StreamEvent::Track(info)
            }
            StreamEvent::Frame(frame) => {
                let video = frame.kind == TrackKind::Video;
                self.stats.add_input(frame.data.len(), video);
                self.ingest.bytes.increment(frame.data.len() as u64);
                if video {
                    self.ingest.video_frames.increment(1);
                } else {
                    self.ingest.audio_frames.increment(1);
                }
                StreamEvent::Frame(self.clock.map(frame))
            }
            // the lifecycle is this handle's and the core's, never a demuxer's
            StreamEvent::Pause | StreamEvent::End => return Ok(()),
        };
        self.events.send(event).await
    }

    /// The ingest skipped media it will not get (a pushed segment that never came): what is
    /// held is published, as when a publisher is lost, and the frames that follow continue the
    /// timeline `RESUME_STEP` after the last one, as after a reconnect. They must start with a
    /// video keyframe. Fails once the pipeline has stopped.
    pub async fn discontinuity(&mut self) -> Result<(), queue::Closed> {
        self.events.send(StreamEvent::Pause).await?;
        self.clock.resume();
        Ok(())
    }

    /// The publisher was lost: the pipeline publishes what it holds now (the broadcast may
    /// continue when the publisher comes back).
    pub(super) async fn pause(&self) {
        // Fails only when the pipeline already ended; the grace then ends nothing.
        let _ = self.events.send(StreamEvent::Pause).await;
    }

    /// Ends the broadcast: its pipeline finishes the manifests and the recording.
    pub(super) async fn end(self) {
        // Fails only when the pipeline already ended; nothing more to tell it then.
        let _ = self.events.send(StreamEvent::End).await;
    }
}

/// The timestamps of one broadcast across its connections: each connection's clock starts
/// anew, so after a reconnect its frames are shifted to continue `RESUME_STEP` after the latest
/// decode time seen. Works on each frame's own clock (ticks and timescale), so nothing is
/// rounded: a resumed connection's offset is computed once, in its own timescale.
#[derive(Debug, Default)]
pub struct ResumableClock {
    /// Added to the current connection's ticks (in `offset.timescale`).
    offset: Option<Timestamp>,
    /// The latest decode time handed out, on the broadcast's timeline.
    last: Option<Timestamp>,
    rebase_next: bool,
}

impl ResumableClock {
    /// The frame on the broadcast's timeline.
    pub fn map(&mut self, mut frame: MediaFrame) -> MediaFrame {
        let scale = frame.dts.timescale;
        if self.rebase_next {
            self.rebase_next = false;
            self.offset = self.last.map(|last| {
                let step = (RESUME_STEP * f64::from(scale)).round() as i64;
                let continue_at =
                    Timestamp::new(last.since(Timestamp::new(0, scale), scale), scale);
                Timestamp::new(continue_at.ticks + step - frame.dts.ticks, scale)
            });
        }
        if let Some(offset) = self.offset {
            let shift = if offset.timescale == scale {
                offset.ticks
            } else {
                offset.rescale(scale).ticks
            };
            frame.dts.ticks += shift;
            frame.pts.ticks += shift;
        }
        if self.last.is_none_or(|last| last.precedes(frame.dts)) {
            self.last = Some(frame.dts);
        }
        frame
    }

    /// A new connection continues the broadcast: rebase at its first frame.
    pub fn resume(&mut self) {
        self.rebase_next = true;
    }
}

#[cfg(test)]
mod tests {
    use bytes::Bytes;

    use super::*;

    fn frame(ticks: i64, timescale: u32) -> MediaFrame {
        let ts = Timestamp::new(ticks, timescale);
        MediaFrame {
            kind: TrackKind::Video,
            dts: ts,
            pts: ts,
            sync: true,
            segment_start: false,
            data: Bytes::new(),
        }
    }

    fn dts(clock: &mut ResumableClock, ticks: i64, timescale: u32) -> i64 {
        clock.map(frame(ticks, timescale)).dts.ticks
    }

    #[test]
    fn a_resumed_connection_continues_after_the_last_timestamp() {
        let mut clock = ResumableClock::default();
        assert_eq!(dts(&mut clock, 1_000, 1000), 1_000);
        assert_eq!(dts(&mut clock, 5_000, 1000), 5_000);
        assert_eq!(dts(&mut clock, 4_990, 1000), 4_990); // audio slightly behind video
        clock.resume();
        assert_eq!(dts(&mut clock, 0, 1000), 5_100);
        assert_eq!(dts(&mut clock, 33, 1000), 5_133);
        clock.resume();
        // the new connection's clock starts anywhere: still continues
        assert_eq!(dts(&mut clock, 4_000_000_000, 1000), 5_233);
        assert_eq!(dts(&mut clock, 4_000_000_031, 1000), 5_264);
    }

    #[test]
    fn a_connection_on_another_clock_continues_on_its_own_ticks() {
        let mut clock = ResumableClock::default();
        assert_eq!(dts(&mut clock, 2_000, 1000), 2_000);
        clock.resume();
        // an SRT (90 kHz) publisher continues an RTMP (1 kHz) broadcast: 2.1 s in 90 kHz ticks
        assert_eq!(dts(&mut clock, 900_000, 90_000), 189_000);
        assert_eq!(dts(&mut clock, 903_003, 90_000), 192_003);
    }

    #[test]
    fn a_clock_that_was_never_resumed_passes_timestamps_through() {
        let mut clock = ResumableClock::default();
        assert_eq!(
            dts(&mut clock, i64::from(u32::MAX) + 5, 1000),
            i64::from(u32::MAX) + 5
        );
        assert_eq!(dts(&mut clock, 7, 90_000), 7);
    }
}
