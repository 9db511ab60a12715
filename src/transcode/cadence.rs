//! Where the ladder puts its IDRs, and which frames a rung keeps (pure).
//!
//! Every rung gets an IDR at exactly the same presentation times, so every rendition cuts its
//! segments at the same media times. Those times are:
//! - with the untouched source in the ladder, the source's own keyframes, at most one per
//!   target duration (the same rule the passthrough segmenter uses), because the source
//!   rendition can only be cut there;
//! - otherwise a fixed clock: the first decoded frame, then the first frame at or after every
//!   further multiple of the target duration.
//!
//! A rung whose frame-rate cap is below the source's keeps frames on a grid of its own frame
//! interval, and always keeps segment-start frames.

use std::collections::VecDeque;
use std::time::Instant;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Cadence {
    Clock,
    SourceKeyframes,
}

/// Decides segment starts for a ladder, on the source timeline (milliseconds).
#[derive(Debug)]
pub struct SegmentCadence {
    cadence: Cadence,
    target_ms: i64,
    /// Clock: the next multiple of the target duration.
    next_ms: Option<i64>,
    /// Source keyframes: decode time of the last one chosen.
    last_chosen_dts: Option<i64>,
    /// Source keyframes chosen in decode order, waiting for their decoded frame.
    chosen_pts: VecDeque<i64>,
}

impl SegmentCadence {
    pub fn new(cadence: Cadence, target_secs: f64) -> Self {
        Self {
            cadence,
            target_ms: (target_secs * 1000.0).round().max(1.0) as i64,
            next_ms: None,
            last_chosen_dts: None,
            chosen_pts: VecDeque::new(),
        }
    }

    /// The cadence a ladder needs: the source's keyframes when the source is one of its
    /// renditions (it can only be cut there), else the clock.
    pub fn for_ladder(ladder: &super::Ladder, target_secs: f64) -> Self {
        let cadence = if ladder.source {
            Cadence::SourceKeyframes
        } else {
            Cadence::Clock
        };
        Self::new(cadence, target_secs)
    }

    pub fn kind(&self) -> Cadence {
        self.cadence
    }

    /// After a pause: the next frame (clock) or the next source keyframe starts a segment.
    pub fn restart(&mut self) {
        self.next_ms = None;
        self.last_chosen_dts = None;
        self.chosen_pts.clear();
    }

    /// A source packet, in decode order. Returns whether it starts a segment (only ever true
    /// when following the source's keyframes).
    pub fn on_packet(&mut self, dts_ms: i64, pts_ms: i64, keyframe: bool) -> bool {
        if self.cadence != Cadence::SourceKeyframes || !keyframe {
            return false;
        }
        let due = self
            .last_chosen_dts
            .is_none_or(|last| dts_ms - last >= self.target_ms);
        if due {
            self.last_chosen_dts = Some(dts_ms);
            self.chosen_pts.push_back(pts_ms);
        }
        due
    }

    /// A decoded frame, in presentation order. Returns whether every rung makes it an IDR.
    pub fn on_decoded(&mut self, pts_ms: i64) -> bool {
        match self.cadence {
            Cadence::SourceKeyframes => {
                while self.chosen_pts.pop_front_if(|p| *p < pts_ms).is_some() {}
                self.chosen_pts.pop_front_if(|p| *p == pts_ms).is_some()
            }
            Cadence::Clock => match self.next_ms {
                None => {
                    self.next_ms = Some(pts_ms + self.target_ms);
                    true
                }
                Some(next) if pts_ms >= next => {
                    let mut next = next;
                    while next <= pts_ms {
                        next += self.target_ms;
                    }
                    self.next_ms = Some(next);
                    true
                }
                Some(_) => false,
            },
        }
    }
}

/// Keeps a rung at or below its frame-rate cap by dropping frames (never segment starts).
#[derive(Debug)]
pub struct FrameRateCap {
    interval_ms: f64,
    next_ms: Option<f64>,
}

impl FrameRateCap {
    /// `source_fps` is the source's rate when known; a cap at or above it keeps every frame.
    pub fn new(max_fps: f64, source_fps: Option<f64>) -> Self {
        let keeps_all = source_fps.is_some_and(|s| s <= max_fps * 1.01);
        Self {
            interval_ms: if keeps_all { 0.0 } else { 1000.0 / max_fps },
            next_ms: None,
        }
    }

    pub fn keep(&mut self, pts_ms: i64, segment_start: bool) -> bool {
        let pts = pts_ms as f64;
        let tolerance = self.interval_ms / 4.0;
        let keep = segment_start || self.next_ms.is_none_or(|next| pts + tolerance >= next);
        if keep {
            let next = match self.next_ms {
                Some(next) if !segment_start && pts < next + self.interval_ms => next,
                _ => pts,
            };
            self.next_ms = Some(next + self.interval_ms);
        }
        keep
    }
}

/// How far the ladder's media clock has fallen behind the wall clock since the first frame.
/// A source pushed faster than real time (a file) is never "behind". Input that stops for
/// `INPUT_STALL` (a publisher reconnecting, a network stall) restarts the measure: the media
/// time that never arrived is not the ladder's delay.
#[derive(Debug, Default)]
pub struct RealTimeLag {
    origin: Option<(Instant, i64)>,
    last_frame: Option<Instant>,
}

/// A gap between two frames this long restarts the lag measure.
pub const INPUT_STALL: std::time::Duration = std::time::Duration::from_secs(1);

impl RealTimeLag {
    /// Seconds behind real time at `now` for a frame at `pts_ms` (negative: ahead).
    pub fn behind(&mut self, pts_ms: i64, now: Instant) -> f64 {
        let stalled = self
            .last_frame
            .replace(now)
            .is_some_and(|last| now.saturating_duration_since(last) >= INPUT_STALL);
        if stalled {
            self.origin = None;
        }
        let (wall0, media0) = *self.origin.get_or_insert((now, pts_ms));
        let wall = now.saturating_duration_since(wall0).as_secs_f64();
        let media = (pts_ms - media0) as f64 / 1000.0;
        wall - media
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[test]
    fn lag_is_wall_time_minus_media_time() {
        let mut lag = RealTimeLag::default();
        let t0 = Instant::now();
        let at = |ms: u64| t0 + Duration::from_millis(ms);
        assert_eq!(lag.behind(5_000, at(0)), 0.0);
        // real time: not behind
        assert!(lag.behind(5_500, at(500)).abs() < 1e-9);
        // a slow ladder: a frame of 100 ms media every 300 ms of wall time
        let mut behind = 0.0;
        for i in 1..=10 {
            behind = lag.behind(5_500 + i * 100, at(500 + i as u64 * 300));
        }
        assert!((behind - 2.0).abs() < 1e-9, "{behind}");
        // a file pushed faster than real time is ahead
        assert!(lag.behind(60_000, at(3_600)) < 0.0);
    }

    #[test]
    fn input_that_stops_and_resumes_is_not_counted_as_lag() {
        let mut lag = RealTimeLag::default();
        let t0 = Instant::now();
        let at = |secs: f64| t0 + Duration::from_secs_f64(secs);
        assert_eq!(lag.behind(0, at(0.0)), 0.0);
        assert!(lag.behind(900, at(0.9)).abs() < 1e-9);
        // the publisher is away 5 s; its media continues where it stopped
        assert_eq!(lag.behind(1_000, at(5.9)), 0.0);
        assert!(lag.behind(1_500, at(6.4)).abs() < 1e-9);
        // a slow ladder is still seen: frames keep coming, media falls behind
        assert!((lag.behind(1_600, at(6.9)) - 0.4).abs() < 1e-9);
    }

    #[test]
    fn the_clock_cadence_starts_a_segment_every_target_duration() {
        let mut c = SegmentCadence::new(Cadence::Clock, 2.0);
        let starts: Vec<i64> = (0..300)
            .map(|i| 1_000 + i * 1000 / 30) // 30 fps in whole milliseconds
            .filter(|pts| c.on_decoded(*pts))
            .collect();
        assert_eq!(starts, [1_000, 3_000, 5_000, 7_000, 9_000]);
    }

    #[test]
    fn the_clock_cadence_skips_over_a_gap() {
        let mut c = SegmentCadence::new(Cadence::Clock, 2.0);
        assert!(c.on_decoded(0));
        assert!(c.on_decoded(7_100)); // a 7 s gap: one start, then back on the grid
        assert!(!c.on_decoded(7_900));
        assert!(c.on_decoded(8_000));
    }

    #[test]
    fn source_keyframes_are_followed_at_most_once_per_target() {
        let mut c = SegmentCadence::new(Cadence::SourceKeyframes, 2.0);
        // keyframes every second, B-frames: decode order differs from presentation order
        let mut chosen = Vec::new();
        for i in 0..120 {
            let dts = i * 40;
            let pts = dts + 80;
            if c.on_packet(dts, pts, i % 25 == 0) {
                chosen.push(pts);
            }
        }
        assert_eq!(chosen, [80, 2_080, 4_080]);
        // decoded frames arrive in presentation order; only the chosen ones are IDRs
        let idrs: Vec<i64> = (0..120)
            .map(|i| 80 + i * 40)
            .filter(|pts| c.on_decoded(*pts))
            .collect();
        assert_eq!(idrs, chosen);
    }

    #[test]
    fn a_30_fps_cap_halves_a_60_fps_source_and_keeps_segment_starts() {
        let mut cap = FrameRateCap::new(30.0, Some(60.0));
        let kept: Vec<i64> = (0..12)
            .map(|i| i * 1000 / 60)
            .filter(|pts| cap.keep(*pts, *pts == 50))
            .collect();
        assert_eq!(kept, [0, 33, 50, 83, 116, 150, 183]);
        let mut all = FrameRateCap::new(30.0, Some(30.0));
        assert!((0..30).all(|i| all.keep(i * 33, false)));
    }
}
