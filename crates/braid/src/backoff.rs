//! Capped, jittered exponential backoff for redialling links.

use std::time::Duration;

/// The shortest first delay: an `initial` of zero would never grow, and a link that fails at
/// once (a command that exits, a refused port) would be redialled in a busy loop.
///
/// ```
/// assert!(braid::backoff::MIN_BACKOFF > std::time::Duration::ZERO);
/// ```
pub const MIN_BACKOFF: Duration = Duration::from_millis(10);

/// Delays between redial attempts: doubling from `initial` (at least [`MIN_BACKOFF`]) up to
/// `cap`, each drawn uniformly from its upper half so that many links do not redial in
/// lockstep.
///
/// ```
/// use std::time::Duration;
/// let mut b = braid::backoff::Backoff::new(Duration::from_millis(100), Duration::from_secs(5));
/// let first = b.next_delay();
/// assert!(first >= Duration::from_millis(50) && first <= Duration::from_millis(100));
/// for _ in 0..20 { assert!(b.next_delay() <= Duration::from_secs(5)); }
/// b.reset();
/// assert!(b.next_delay() <= Duration::from_millis(100));
/// ```
#[derive(Debug, Clone)]
pub struct Backoff {
    initial: Duration,
    cap: Duration,
    current: Duration,
}

impl Backoff {
    /// A backoff starting at `initial` (at least [`MIN_BACKOFF`]), never above `cap` (or
    /// `initial`, if that is more).
    ///
    /// ```
    /// let _ = braid::backoff::Backoff::new(std::time::Duration::from_millis(10), std::time::Duration::from_secs(1));
    /// ```
    pub fn new(initial: Duration, cap: Duration) -> Self {
        let initial = initial.max(MIN_BACKOFF);
        let cap = cap.max(initial);
        Backoff {
            initial,
            cap,
            current: initial,
        }
    }

    /// The delay before the next attempt; doubles the following one.
    ///
    /// ```
    /// let mut b = braid::backoff::Backoff::new(std::time::Duration::from_millis(10), std::time::Duration::from_secs(1));
    /// assert!(b.next_delay() <= std::time::Duration::from_millis(10));
    /// ```
    pub fn next_delay(&mut self) -> Duration {
        let d = self.current;
        self.current = self.current.saturating_mul(2).min(self.cap);
        let half = d / 2;
        half + half.mul_f64(rand::random::<f64>())
    }

    /// Starts over (after a link came up).
    ///
    /// ```
    /// let mut b = braid::backoff::Backoff::new(std::time::Duration::from_millis(10), std::time::Duration::from_secs(1));
    /// b.next_delay();
    /// b.reset();
    /// ```
    pub fn reset(&mut self) {
        self.current = self.initial;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_zero_initial_delay_still_backs_off() {
        let mut b = Backoff::new(Duration::ZERO, Duration::from_secs(1));
        let total: Duration = (0..20).map(|_| b.next_delay()).sum();
        assert!(
            total >= Duration::from_secs(5),
            "20 delays add up to {total:?}"
        );
    }

    #[test]
    fn huge_delays_do_not_overflow() {
        let mut b = Backoff::new(Duration::MAX / 2, Duration::MAX);
        for _ in 0..4 {
            assert!(b.next_delay() >= Duration::MAX / 4);
        }
    }
}
