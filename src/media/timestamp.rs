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

    /// The time from `origin` to `self`, in `timescale` ticks, rounded once to the nearest tick
    /// (ties away from zero): exact when the two share a clock that `timescale` divides, and
    /// without drift however long the stream, since every value is computed from its own
    /// timestamp rather than summed from rounded steps.
    pub fn since(self, origin: Timestamp, timescale: u32) -> i64 {
        if self.timescale == 0 || origin.timescale == 0 {
            return 0;
        }
        let (a, b) = (i128::from(self.timescale), i128::from(origin.timescale));
        // (self − origin) in 1/(a·b) s, then in 1/timescale s
        let num =
            (i128::from(self.ticks) * b - i128::from(origin.ticks) * a) * i128::from(timescale);
        let den = a * b;
        let half = den / 2;
        let rounded = if num >= 0 {
            (num + half) / den
        } else {
            (num - half) / den
        };
        rounded.clamp(i64::MIN as i128, i64::MAX as i128) as i64
    }

    /// Whether `self` is strictly earlier than `other`, compared exactly across timescales.
    pub fn precedes(self, other: Timestamp) -> bool {
        i128::from(self.ticks) * i128::from(other.timescale)
            < i128::from(other.ticks) * i128::from(self.timescale)
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
    fn since_is_exact_on_a_shared_clock_and_rounds_once_across_clocks() {
        let origin = Timestamp::new(900_000, 90_000);
        // 29.97 fps on a 90 kHz clock: 3003 ticks a frame, 10 minutes in
        let frame = Timestamp::new(900_000 + 17_982 * 3003, 90_000);
        assert_eq!(frame.since(origin, 90_000), 17_982 * 3003);
        assert_eq!(
            Timestamp::from_millis(1_500).since(origin, 90_000),
            -765_000
        );
        // 1024 samples at 44.1 kHz on a 90 kHz clock rounds to the nearest tick
        let audio = Timestamp::new(1024, 44_100);
        assert_eq!(audio.since(Timestamp::new(0, 90_000), 90_000), 2090);
        assert_eq!(
            Timestamp::new(-3, 1000).since(Timestamp::new(0, 1), 90_000),
            -270
        );
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
