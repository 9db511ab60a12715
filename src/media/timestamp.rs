//! Typed media time: `i64` ticks with an explicit timescale, and the unwrapping of RTMP's 32-bit
//! millisecond clock into it.

use std::fmt;

/// A point in media time: `ticks / timescale` seconds. Ticks are signed so composition offsets
/// and pre-roll can be negative.
#[derive(Clone, Copy, PartialEq, Eq, Hash)]
pub struct Timestamp {
    pub ticks: i64,
    pub timescale: u32,
}

impl Timestamp {
    pub const MILLIS: u32 = 1000;

    pub const fn new(ticks: i64, timescale: u32) -> Self {
        Self { ticks, timescale }
    }

    pub const fn from_millis(ms: i64) -> Self {
        Self::new(ms, Self::MILLIS)
    }

    /// The same instant in another timescale, rounded to the nearest tick (ties away from zero).
    /// Computed in i128 so no realistic value can overflow.
    pub fn rescale(self, timescale: u32) -> Self {
        if timescale == self.timescale || self.timescale == 0 {
            return Self::new(self.ticks, timescale);
        }
        let num = i128::from(self.ticks) * i128::from(timescale);
        let den = i128::from(self.timescale);
        let half = den / 2;
        let rounded = if num >= 0 {
            (num + half) / den
        } else {
            (num - half) / den
        };
        Self::new(
            rounded.clamp(i64::MIN as i128, i64::MAX as i128) as i64,
            timescale,
        )
    }

    pub fn as_secs_f64(self) -> f64 {
        if self.timescale == 0 {
            return 0.0;
        }
        self.ticks as f64 / f64::from(self.timescale)
    }
}

impl fmt::Debug for Timestamp {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.ticks, self.timescale)
    }
}

/// Turns a 32-bit wrapping millisecond clock (RTMP) into a monotonic-ish i64 timeline.
///
/// Each new value is taken as the nearest neighbour of the previous one modulo 2^32: a forward
/// step of less than 2^31 ms counts forward (this is how a stream crosses the 49.7-day wrap), and
/// a smaller backwards step counts backwards (encoders do jitter by a few ms). One unwrapper per
/// track, because audio and video clocks wrap at slightly different moments.
#[derive(Debug, Default, Clone)]
pub struct TimestampUnwrapper {
    last: Option<(u32, i64)>,
}

impl TimestampUnwrapper {
    pub fn new() -> Self {
        Self::default()
    }

    pub fn unwrap(&mut self, raw: u32) -> i64 {
        let value = match self.last {
            None => i64::from(raw),
            Some((last_raw, last_value)) => {
                let delta = raw.wrapping_sub(last_raw) as i32;
                last_value + i64::from(delta)
            }
        };
        self.last = Some((raw, value));
        value
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rescale_rounds_to_nearest() {
        assert_eq!(Timestamp::from_millis(1).rescale(90_000).ticks, 90);
        assert_eq!(Timestamp::from_millis(21).rescale(48_000).ticks, 1008);
        assert_eq!(Timestamp::new(1024, 48_000).rescale(1000).ticks, 21);
        assert_eq!(Timestamp::from_millis(-3).rescale(90_000).ticks, -270);
    }

    #[test]
    fn unwrapper_crosses_the_32_bit_wrap() {
        let mut u = TimestampUnwrapper::new();
        assert_eq!(u.unwrap(u32::MAX - 20), i64::from(u32::MAX - 20));
        assert_eq!(u.unwrap(u32::MAX), i64::from(u32::MAX));
        assert_eq!(u.unwrap(12), i64::from(u32::MAX) + 13);
        assert_eq!(u.unwrap(45), i64::from(u32::MAX) + 46);
    }

    #[test]
    fn unwrapper_allows_small_backward_jitter() {
        let mut u = TimestampUnwrapper::new();
        u.unwrap(1000);
        assert_eq!(u.unwrap(990), 990);
        assert_eq!(u.unwrap(1010), 1010);
    }

    #[test]
    fn unwrapper_handles_backward_step_across_wrap() {
        let mut u = TimestampUnwrapper::new();
        u.unwrap(5);
        assert_eq!(u.unwrap(u32::MAX - 4), -5);
    }
}
