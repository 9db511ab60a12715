//! Audio that arrives before the video it will be packaged with. A rendition starts at the
//! first video keyframe, but the audio of that moment often comes first: a publisher's encoder
//! delays video, and in a ladder the video encoders do (their first output trails the audio
//! encoder's by their lookahead). Dropping that audio made the first segment's audio half a
//! second shorter than its video; holding it (bounded) and replaying what is not older than the
//! keyframe keeps every rendition's first segment the same length.

use std::collections::VecDeque;

use super::{MediaFrame, Timestamp};

/// Held frames beyond this many bytes (about a minute of 128 kb/s AAC) push the oldest out.
pub const EARLY_AUDIO_BYTES: usize = 1 << 20;
/// Held frames beyond this many (10 s of 48 kHz AAC) push the oldest out.
pub const EARLY_AUDIO_FRAMES: usize = 480;

/// Audio frames held until the first keyframe, oldest first, bounded in bytes and frames: a
/// publisher that sends audio and never a keyframe only ever costs the newest frames.
#[derive(Debug, Default)]
pub struct EarlyAudio {
    frames: VecDeque<MediaFrame>,
    bytes: usize,
}

impl EarlyAudio {
    pub fn push(&mut self, frame: MediaFrame) {
        self.bytes += frame.data.len();
        self.frames.push_back(frame);
        while self.bytes > EARLY_AUDIO_BYTES || self.frames.len() > EARLY_AUDIO_FRAMES {
            let Some(old) = self.frames.pop_front() else {
                break;
            };
            self.bytes -= old.data.len();
        }
    }

    /// Bytes held.
    pub fn bytes(&self) -> usize {
        self.bytes
    }

    /// Every held frame presented at or after `start`, oldest first; the rest is dropped.
    pub fn take_from(&mut self, start: Timestamp) -> Vec<MediaFrame> {
        self.bytes = 0;
        std::mem::take(&mut self.frames)
            .into_iter()
            .filter(|f| !f.pts.precedes(start))
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use bytes::Bytes;

    use super::*;
    use crate::media::TrackKind;

    fn frame(ms: i64, size: usize) -> MediaFrame {
        let ts = Timestamp::from_millis(ms);
        MediaFrame {
            kind: TrackKind::Audio,
            dts: ts,
            pts: ts,
            sync: true,
            segment_start: false,
            data: Bytes::from(vec![0; size]),
        }
    }

    #[test]
    fn frames_from_the_keyframe_on_are_replayed_in_order() {
        let mut early = EarlyAudio::default();
        for ms in [-21, 0, 21, 43] {
            early.push(frame(ms, 10));
        }
        let kept: Vec<i64> = early
            .take_from(Timestamp::from_millis(0))
            .iter()
            .map(|f| f.pts.ticks)
            .collect();
        assert_eq!(kept, [0, 21, 43]);
        assert_eq!(early.bytes(), 0);
        assert!(early.take_from(Timestamp::from_millis(0)).is_empty());
    }

    #[test]
    fn what_is_held_stays_within_its_bounds() {
        let mut early = EarlyAudio::default();
        for i in 0..10_000 {
            early.push(frame(i, 1000));
        }
        assert!(early.bytes() <= EARLY_AUDIO_BYTES);
        let kept = early.take_from(Timestamp::from_millis(0));
        assert!(kept.len() <= EARLY_AUDIO_FRAMES);
        // the newest stay
        assert_eq!(kept.last().map(|f| f.pts.ticks), Some(9_999));
        let mut huge = EarlyAudio::default();
        huge.push(frame(0, 4 << 20));
        assert_eq!(huge.bytes(), 0, "one frame over the budget is not kept");
    }
}
