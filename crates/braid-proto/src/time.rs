//! Virtual time: the state machines never read a clock, the caller passes `now` in.

use std::ops::{Add, AddAssign, Sub};
use std::time::Duration;

/// A point in time, in microseconds since an epoch the caller chooses.
///
/// The runtime maps its monotonic clock onto this; the simulator runs a virtual clock.
/// Only differences between two `Time`s are meaningful.
///
/// ```
/// use braid_proto::Time;
/// use std::time::Duration;
/// let t = Time::from_micros(1_000);
/// assert_eq!(t + Duration::from_millis(1), Time::from_micros(2_000));
/// assert_eq!((t + Duration::from_millis(1)) - t, Duration::from_millis(1));
/// ```
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Time(u64);

impl Time {
    /// The epoch.
    pub const ZERO: Time = Time(0);

    /// A time `us` microseconds after the epoch.
    pub const fn from_micros(us: u64) -> Self {
        Time(us)
    }

    /// Microseconds since the epoch.
    pub const fn as_micros(self) -> u64 {
        self.0
    }

    /// Seconds since the epoch, as a float (for reports).
    pub fn as_secs_f64(self) -> f64 {
        self.0 as f64 / 1e6
    }

    /// `self - earlier`, or zero if `earlier` is later.
    pub fn saturating_since(self, earlier: Time) -> Duration {
        Duration::from_micros(self.0.saturating_sub(earlier.0))
    }
}

impl Add<Duration> for Time {
    type Output = Time;
    fn add(self, d: Duration) -> Time {
        Time(
            self.0
                .saturating_add(d.as_micros().min(u64::MAX as u128) as u64),
        )
    }
}

impl AddAssign<Duration> for Time {
    fn add_assign(&mut self, d: Duration) {
        *self = *self + d;
    }
}

impl Sub<Time> for Time {
    type Output = Duration;
    /// Saturates at zero.
    fn sub(self, earlier: Time) -> Duration {
        self.saturating_since(earlier)
    }
}
