//! Capped, jittered exponential backoff for redialling links.

use std::time::Duration;

/// Delays between redial attempts: doubling from `initial` up to `cap`, each drawn uniformly
/// from its upper half so that many links do not redial in lockstep.
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
    /// A backoff starting at `initial`, never above `cap`.
    ///
    /// ```
    /// let _ = braid::backoff::Backoff::new(std::time::Duration::from_millis(10), std::time::Duration::from_secs(1));
    /// ```
    pub fn new(initial: Duration, cap: Duration) -> Self {
        Backoff {
            initial,
            cap,
            current: initial.min(cap),
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
        self.current = (self.current * 2).min(self.cap);
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
        self.current = self.initial.min(self.cap);
    }
}
