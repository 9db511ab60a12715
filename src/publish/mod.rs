//! Publishing one broadcast through `object_store`: one ordered writer per stream.
//!
//! Order per segment: every rendition's `{n}.m4s` (and its recording copy), then the media
//! playlists, then the multivariant playlist and the MPD — a manifest never names an object
//! that is not fully stored. A segment whose upload fails is left out of every manifest.
//!
//! Retention: a segment that leaves the live window is deleted only after a grace period
//! (its duration plus the playlist's, doubled), so players and CDNs that fetched the previous
//! playlist can still get it. Each segment is also copied (a hard link on local disk, a
//! server-side copy on S3) under `vod/{recording_id}/`, where the finished broadcast stays as a
//! VOD with its own manifests.

pub mod store;

use std::collections::VecDeque;
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use chrono::{DateTime, Utc};
use futures::TryStreamExt;
use object_store::path::Path;
use object_store::{ObjectStore, ObjectStoreExt, PutPayload};

use crate::manifest::{dash, hls, Presentation, PresentationKind, SegmentEntry, Timeline};
use crate::media::TrackId;
use crate::package::{InitSegment, Segment};
use store::Root;

#[derive(Debug, thiserror::Error)]
pub enum PublishError {
    #[error("storage write {path}: {source}")]
    Write {
        path: String,
        source: object_store::Error,
    },
    #[error("segment {0} arrived before the init segments")]
    NotStarted(u64),
}

/// What one broadcast publishes, and where.
#[derive(Debug, Clone)]
pub struct BroadcastPlan {
    pub playback_id: String,
    pub recording_id: String,
    pub segment_duration: f64,
    pub window: usize,
    /// Absolute URL of the origin's time endpoint (DASH `UTCTiming`).
    pub utc_timing_url: String,
    /// Keep the broadcast as a recording under `vod/{recording_id}/`.
    pub record: bool,
}

/// The ordered writer of one broadcast.
pub struct Publisher {
    store: Arc<dyn ObjectStore>,
    plan: BroadcastPlan,
    live_root: Root,
    /// Where the recording goes (none when the stream does not record).
    vod_root: Option<Root>,
    /// The broadcast so far (its live manifests list the window; the recording lists all).
    presentation: Option<Presentation>,
    /// Objects to delete once their instant has passed.
    retention: VecDeque<(Instant, Path)>,
    /// BANDWIDTH last written into the multivariant playlist.
    master_bandwidth: u64,
}

impl Publisher {
    pub fn new(store: Arc<dyn ObjectStore>, plan: BroadcastPlan) -> Self {
        Self {
            store,
            live_root: Root::live(&plan.playback_id),
            vod_root: plan.record.then(|| Root::vod(&plan.recording_id)),
            plan,
            presentation: None,
            retention: VecDeque::new(),
            master_bandwidth: 0,
        }
    }

    fn grace(&self) -> Duration {
        let window = self.plan.segment_duration * (self.plan.window as f64 + 1.0);
        Duration::from_secs_f64(2.0 * window)
    }

    async fn put(&self, path: &Path, bytes: impl Into<Bytes>) -> Result<(), PublishError> {
        self.store
            .put(path, PutPayload::from_bytes(bytes.into()))
            .await
            .map(|_| ())
            .map_err(|source| PublishError::Write {
                path: path.to_string(),
                source,
            })
    }

    async fn copy(&self, from: &Path, to: &Path) -> Result<(), PublishError> {
        self.store
            .copy(from, to)
            .await
            .map_err(|source| PublishError::Write {
                path: to.to_string(),
                source,
            })
    }

    /// Starts the broadcast: schedules leftovers of an earlier broadcast of this stream for
    /// deletion, then writes the init segments. `media_zero` is the wall clock of media time 0.
    pub async fn start(
        &mut self,
        inits: Vec<InitSegment>,
        media_zero: DateTime<Utc>,
    ) -> Result<(), PublishError> {
        self.schedule_leftovers().await;
        let mut videos = Vec::new();
        let mut audio = None;
        for init in inits {
            let bytes = Bytes::from(init.bytes);
            let live = self
                .live_root
                .rendition_file(&init.name, store::INIT_SEGMENT);
            self.put(&live, bytes.clone()).await?;
            if let Some(vod) = &self.vod_root {
                let path = vod.rendition_file(&init.name, store::INIT_SEGMENT);
                self.put(&path, bytes).await?;
            }
            let timeline = Timeline::new(init.name, init.info.kind, init.info.codec);
            match init.id {
                TrackId::Video(_) => videos.push(timeline),
                TrackId::Audio => audio = Some(timeline),
            }
        }
        if videos.is_empty() {
            return Ok(());
        }
        self.presentation = Some(Presentation {
            kind: PresentationKind::Live {
                window: self.plan.window,
            },
            availability_start: media_zero,
            target_duration: self.plan.segment_duration.ceil() as u64,
            segment_duration: self.plan.segment_duration,
            videos,
            audio,
            ended: false,
        });
        Ok(())
    }

    /// Replaces the stream's poster (`live/{playback_id}/poster.jpg`).
    pub async fn publish_poster(&self, jpeg: Bytes) -> Result<(), PublishError> {
        self.put(&self.live_root.file(store::POSTER), jpeg).await
    }

    /// Objects under this stream's live prefix from an earlier broadcast (its last window):
    /// deleted after the grace period, like any segment leaving a window.
    async fn schedule_leftovers(&mut self) {
        let prefix = self.live_root.prefix();
        let listed: Result<Vec<_>, _> = self.store.list(Some(&prefix)).try_collect().await;
        let deadline = Instant::now() + self.grace();
        match listed {
            Ok(objects) => {
                for meta in objects {
                    if meta.location.as_ref().ends_with(".m4s") {
                        self.retention.push_back((deadline, meta.location));
                    }
                }
            }
            Err(e) => {
                tracing::warn!(error = %e, "could not list leftovers of an earlier broadcast")
            }
        }
    }

    /// Stores one segment of every rendition, then rewrites the manifests.
    pub async fn publish_segment(
        &mut self,
        segment: Segment,
        media_zero: DateTime<Utc>,
    ) -> Result<(), PublishError> {
        if self.presentation.is_none() {
            return Err(PublishError::NotStarted(segment.number));
        }
        let mut entries = Vec::new();
        for track in &segment.tracks {
            let Some(name) = self.rendition_name(track.id) else {
                continue;
            };
            let live_path = self.live_root.segment(&name, segment.number);
            let size = track.bytes.len() as u64;
            let stored = async {
                self.put(&live_path, track.bytes.clone()).await?;
                // the recording keeps the same object (a hard link / server-side copy)
                match &self.vod_root {
                    Some(vod) => {
                        self.copy(&live_path, &vod.segment(&name, segment.number))
                            .await
                    }
                    None => Ok(()),
                }
            }
            .await;
            if let Err(e) = stored {
                tracing::error!(segment = segment.number, error = %e, "segment left out of the manifests");
                return Ok(());
            }
            let offset_ms = (track.start_secs() * 1000.0).round() as i64;
            entries.push((
                track.id,
                SegmentEntry {
                    number: segment.number,
                    start: track.start,
                    duration: track.duration,
                    wall_clock: media_zero + chrono::Duration::milliseconds(offset_ms),
                    bytes: size,
                    samples: track.samples,
                },
            ));
        }
        let window = self.plan.window;
        let deadline = Instant::now() + self.grace();
        if let Some(p) = self.presentation.as_mut() {
            for (id, entry) in entries {
                let Some(timeline) = p.timeline_mut(id) else {
                    continue;
                };
                timeline.push(entry);
                if let Some(old) = timeline.left_window(window) {
                    let path = self.live_root.segment(&timeline.name, old.number);
                    self.retention.push_back((deadline, path));
                }
            }
        }
        self.write_live_manifests(false).await
    }

    async fn write_live_manifests(&mut self, force_master: bool) -> Result<(), PublishError> {
        let Some(p) = self.presentation.as_mut() else {
            return Ok(());
        };
        if p.fit_target_duration() {
            tracing::warn!(
                target_duration = p.target_duration,
                "a segment ran longer than the target duration; raising EXT-X-TARGETDURATION \
                 (set the encoder's keyframe interval to the segment duration)"
            );
        }
        let bandwidth = p.timelines().map(|t| t.peak_bps).sum::<u64>();
        // The multivariant playlist is written first with the first segment's rate, then again
        // only when the measured peak grew by 10 % (players read it once).
        let write_master = force_master || bandwidth * 10 > self.master_bandwidth * 11;
        if let Some(p) = &self.presentation {
            self.write_manifests(&self.live_root, p, write_master)
                .await?;
        }
        if write_master {
            self.master_bandwidth = bandwidth;
        }
        Ok(())
    }

    /// The manifests of `p` under `root`, in order: every media playlist, then (when asked)
    /// the multivariant playlist, then the MPD. Objects are already stored.
    async fn write_manifests(
        &self,
        root: &Root,
        p: &Presentation,
        write_master: bool,
    ) -> Result<(), PublishError> {
        for timeline in p.timelines() {
            self.put(
                &root.rendition_file(&timeline.name, store::MEDIA_PLAYLIST),
                hls::media_playlist(p, timeline),
            )
            .await?;
        }
        if write_master {
            self.put(&root.file(store::MASTER_PLAYLIST), hls::master_playlist(p))
                .await?;
        }
        self.put(
            &root.file(store::MPD),
            dash::mpd(p, &self.plan.utc_timing_url, Utc::now()),
        )
        .await
    }

    /// The broadcast ended: live manifests get ENDLIST / a static MPD, and the recording (if
    /// kept) gets its VOD manifests. Returns the broadcast's duration in seconds.
    pub async fn finish(&mut self) -> Result<f64, PublishError> {
        let Some(p) = self.presentation.as_mut() else {
            return Ok(0.0);
        };
        p.ended = true;
        self.write_live_manifests(true).await?;
        let Some(p) = &self.presentation else {
            return Ok(0.0);
        };
        let vod = Presentation {
            kind: PresentationKind::Vod,
            ..p.clone()
        };
        if let Some(root) = &self.vod_root {
            self.write_manifests(root, &vod, true).await?;
        }
        Ok(vod.duration_secs())
    }

    fn rendition_name(&self, id: TrackId) -> Option<String> {
        let p = self.presentation.as_ref()?;
        match id {
            TrackId::Video(index) => p.videos.get(index),
            TrackId::Audio => p.audio.as_ref(),
        }
        .map(|t| t.name.clone())
    }

    /// When the next deletion is due.
    pub fn next_deletion(&self) -> Option<Instant> {
        self.retention.front().map(|(at, _)| *at)
    }

    /// Deletes every object whose grace period has passed.
    pub async fn delete_due(&mut self, now: Instant) {
        while let Some((at, _)) = self.retention.front() {
            if *at > now {
                break;
            }
            let Some((_, path)) = self.retention.pop_front() else {
                break;
            };
            if let Err(e) = self.store.delete(&path).await {
                if !matches!(e, object_store::Error::NotFound { .. }) {
                    tracing::warn!(object = %path, error = %e, "retention delete failed");
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::media::codec_test_data::AVC_RECORD_320X240;
    use crate::media::{AvcConfig, CodecConfig, TrackInfo, TrackKind};
    use crate::package::TrackSegment;
    use object_store::memory::InMemory;

    fn plan() -> BroadcastPlan {
        BroadcastPlan {
            playback_id: "aaaaaaaaaaaaaaaa".into(),
            recording_id: "rrrrrrrrrrrrrrrr".into(),
            segment_duration: 2.0,
            window: 3,
            utc_timing_url: "http://localhost/time".into(),
            record: true,
        }
    }

    fn segment(number: u64) -> Segment {
        Segment {
            number,
            tracks: vec![TrackSegment {
                id: TrackId::Video(0),
                start: number * 180_000,
                duration: 180_000,
                timescale: 90_000,
                bytes: Bytes::from(vec![number as u8; 100]),
                samples: 50,
                starts_with_keyframe: true,
            }],
        }
    }

    async fn text(store: &Arc<dyn ObjectStore>, path: &str) -> String {
        let bytes = store
            .get(&Path::from(path))
            .await
            .unwrap()
            .bytes()
            .await
            .unwrap();
        String::from_utf8(bytes.to_vec()).unwrap()
    }

    fn video_init() -> InitSegment {
        let codec =
            CodecConfig::Avc(AvcConfig::parse(Bytes::from_static(AVC_RECORD_320X240)).unwrap());
        InitSegment {
            id: TrackId::Video(0),
            name: "source".into(),
            bytes: crate::package::cmaf::init_segment(&codec).unwrap(),
            info: TrackInfo {
                kind: TrackKind::Video,
                codec,
            },
        }
    }

    #[tokio::test]
    async fn a_stream_that_does_not_record_writes_nothing_under_vod() {
        let store: Arc<dyn ObjectStore> = Arc::new(InMemory::new());
        let plan = BroadcastPlan {
            record: false,
            ..plan()
        };
        let mut publisher = Publisher::new(store.clone(), plan);
        let zero = Utc::now();
        publisher.start(vec![video_init()], zero).await.unwrap();
        for n in 0..3 {
            publisher.publish_segment(segment(n), zero).await.unwrap();
        }
        assert_eq!(publisher.finish().await.unwrap(), 6.0);
        let ended = text(&store, "live/aaaaaaaaaaaaaaaa/source/index.m3u8").await;
        assert!(ended.contains("#EXT-X-ENDLIST"));
        let vod: Vec<_> =
            futures::StreamExt::collect::<Vec<_>>(store.list(Some(&Path::from("vod")))).await;
        assert!(vod.is_empty(), "{vod:?}");
    }

    #[tokio::test]
    async fn window_slides_retention_waits_and_the_recording_keeps_everything() {
        let store: Arc<dyn ObjectStore> = Arc::new(InMemory::new());
        let mut publisher = Publisher::new(store.clone(), plan());
        let zero = Utc::now();
        publisher.start(vec![video_init()], zero).await.unwrap();
        for n in 10..16 {
            publisher.publish_segment(segment(n), zero).await.unwrap();
        }
        let playlist = text(&store, "live/aaaaaaaaaaaaaaaa/source/index.m3u8").await;
        assert!(playlist.contains("#EXT-X-MEDIA-SEQUENCE:13"), "{playlist}");
        assert!(!playlist.contains("12.m4s"));
        // segments that left the window are still there during the grace period …
        publisher.delete_due(Instant::now()).await;
        assert!(store
            .head(&Path::from("live/aaaaaaaaaaaaaaaa/source/10.m4s"))
            .await
            .is_ok());
        // … and gone after it
        publisher
            .delete_due(Instant::now() + Duration::from_secs(3600))
            .await;
        assert!(store
            .head(&Path::from("live/aaaaaaaaaaaaaaaa/source/10.m4s"))
            .await
            .is_err());
        assert!(store
            .head(&Path::from("live/aaaaaaaaaaaaaaaa/source/15.m4s"))
            .await
            .is_ok());

        let duration = publisher.finish().await.unwrap();
        assert_eq!(duration, 12.0);
        let ended = text(&store, "live/aaaaaaaaaaaaaaaa/source/index.m3u8").await;
        assert!(ended.contains("#EXT-X-ENDLIST"));
        assert!(text(&store, "live/aaaaaaaaaaaaaaaa/manifest.mpd")
            .await
            .contains("type=\"static\""));
        let vod = text(&store, "vod/rrrrrrrrrrrrrrrr/source/index.m3u8").await;
        for n in 10..16 {
            assert!(vod.contains(&format!("{n}.m4s")), "{vod}");
            assert!(store
                .head(&Path::from(format!("vod/rrrrrrrrrrrrrrrr/source/{n}.m4s")))
                .await
                .is_ok());
        }
        assert!(text(&store, "vod/rrrrrrrrrrrrrrrr/master.m3u8")
            .await
            .contains("source/index.m3u8"));
    }
}
