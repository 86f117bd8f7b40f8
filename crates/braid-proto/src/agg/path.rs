//! Links that share a path share one in-flight window (coupled windows, as MPTCP couples its
//! subflows' congestion windows).
//!
//! Each link's own window is twice its bandwidth-delay product (see `Link::window`), from the
//! windowed maximum of its per-acknowledgement rate samples and its minimum round trip. That is
//! right for a link alone on its path. Several links on one path (`count=N` sockets between the
//! same two addresses, Unix sockets on one host) share its bottleneck, and their windows added
//! up overstate what the path holds:
//!
//! - each link's maximum catches its own bursts of acknowledgements, so the links' rates add up
//!   to more than the path delivers: on loopback with four links, 7-11 GB/s of link rates
//!   against 5-6 GB/s delivered;
//! - where the sender itself is the bottleneck (loopback), a link's batch waits while the
//!   others are written, and its minimum round trip grows with the number of links
//!   (100-600 µs with four links against 50-70 µs for one).
//!
//! With four loopback links that made 2.2-4.4 MB in flight where one link keeps 1.4 MB, and the
//! data fell out of the CPU caches between the application's copy and the socket's
//! (docs/BENCHMARKS.md, session 5). So the links of a path also share a window: twice the
//! *path's* delivery rate (measured over several round trips, [`PathRate`]) times the *path's*
//! round trip (the shortest of its links' minimum round trips), plus two chunks. Where the
//! links' own estimates are right (a path that throttles each TCP connection, a long fat
//! pipe), the shared window is about their windows added up and changes nothing.
//!
//! Only the driver knows which links share a path: it names one with a [`PathId`] when it adds
//! the link ([`Connection::add_link_on_path`](super::Connection::add_link_on_path)). A link
//! added with [`Connection::add_link`](super::Connection::add_link) has a path of its own.

use std::time::Duration;

use super::link::MaxFilter;
use crate::Time;

/// A network path that several links may share (chosen by the driver: for TCP, the same local
/// and remote address; for Unix sockets, the host).
///
/// ```
/// use braid_proto::agg::{Config, Connection, PathId};
/// use braid_proto::Time;
///
/// let mut c = Connection::new(Config::default(), Time::ZERO);
/// let a = c.add_link_on_path(Time::ZERO, PathId(7));
/// let b = c.add_link_on_path(Time::ZERO, PathId(7));
/// assert_ne!(a, b);
/// ```
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct PathId(pub u64);

/// Shortest interval [`PathRate`] samples over (longer where round trips are longer).
const PATH_RATE_INTERVAL: Duration = Duration::from_millis(4);

/// Samples without a quarter's growth after which a path's rate counts as known (like BBR's
/// "full pipe"): while its links ramp up, a rate averaged over the last interval lags.
///
/// One is enough: 4 links of 100 Mbit/s 50 ms away ramp up as fast as links on their own
/// paths (`links_on_one_path_ramp_up_as_fast_as_alone`). Three (BBR's count) kept loopback
/// links on their own windows for the first 40-70 ms, a third of a 1000 MB transfer in
/// `benches/runtime.rs`, which then spread a quarter of its bytes over the other links
/// instead of a few percent.
const FULL_PATH_SAMPLES: u8 = 1;

/// What a path delivers (bytes/s, over all its links): acknowledged bytes over intervals of a
/// few round trips, max-filtered like a link's rate.
///
/// A link's rate samples are per acknowledgement, so where acknowledgements come in bursts
/// each link's windowed maximum catches its own bursts. An interval of several round trips
/// averages the bursts out.
#[derive(Debug, Clone, Default)]
pub(crate) struct PathRate {
    delivered: u64,
    /// Start of the current sample: when, and `delivered` then.
    mark: Option<(Time, u64)>,
    /// The last acknowledgement.
    last: Time,
    rate: MaxFilter,
    /// Ramp-up: the rate and the number of samples since it last grew by a quarter, until
    /// that number reaches [`FULL_PATH_SAMPLES`].
    growth: (f64, u8),
    /// The sender ran out of data for the path's links during the current sample.
    app_limited: bool,
}

impl PathRate {
    /// The path's delivery rate (bytes/s), once sampled and no longer growing (see
    /// [`FULL_PATH_SAMPLES`]).
    pub fn get(&self) -> Option<f64> {
        let r = self.rate.get();
        (r > 0.0 && self.growth.1 >= FULL_PATH_SAMPLES).then_some(r)
    }

    /// A link of the path had room but the sender had nothing for it: the current sample
    /// measures the application, not the path.
    pub fn app_limited(&mut self) {
        self.app_limited = true;
    }

    /// `bytes` were acknowledged at `now`; `rtt` is the longest smoothed round trip among the
    /// path's links.
    ///
    /// A sample spans at least two such round trips (and [`PATH_RATE_INTERVAL`]). One with a
    /// silence that long in it is dropped: the path was idle, and the next sample starts at
    /// the acknowledgement that ended the silence.
    ///
    /// A sample during which the sender ran out of data ([`app_limited`](Self::app_limited))
    /// counts only if it raises the rate, and never as the end of the ramp-up, as in BBR: a
    /// rate learned while the application trickled would otherwise cap the start of the next
    /// bulk transfer (4 links of 100 Mbit/s 50 ms away took 1.29 s for 30 MB after a trickle,
    /// against 0.86 s on their own paths).
    pub fn on_acked(&mut self, now: Time, bytes: u64, rtt: Duration) {
        let interval = (2 * rtt).max(PATH_RATE_INTERVAL);
        let idle = now.saturating_since(self.last) >= interval;
        self.last = now;
        self.delivered += bytes;
        match self.mark {
            Some((at, then)) if !idle => {
                let span = now.saturating_since(at);
                if span >= interval {
                    let sample = (self.delivered - then) as f64 / span.as_secs_f64();
                    let window =
                        (rtt * 10).clamp(Duration::from_millis(500), Duration::from_secs(5));
                    let app_limited = std::mem::take(&mut self.app_limited);
                    if !app_limited || sample > self.rate.get() {
                        self.rate.update(now, sample, window);
                    }
                    let (base, flat) = &mut self.growth;
                    if *flat < FULL_PATH_SAMPLES && !app_limited {
                        if sample >= *base * 1.25 {
                            (*base, *flat) = (sample, 0);
                        } else {
                            *flat += 1;
                        }
                    }
                    self.mark = Some((now, self.delivered));
                }
            }
            _ => {
                self.mark = Some((now, self.delivered));
                self.app_limited = false;
            }
        }
    }
}

/// The longest minimum round trip of a link that shares the window of a path whose shortest
/// one is `shortest`: twice that, and a millisecond.
///
/// Links through one bottleneck see about the same round trip. Links to the same address that
/// see very different ones take different routes: local forwarders (`ssh -L`) each over its own
/// uplink, or links that reach a server through one proxy or NAT. Their windows stay their own:
/// a window sized by the shortest round trip would starve the farther links. (Loopback links'
/// minimum round trips, 50-600 µs, all stay within it.)
pub(crate) fn near_rtt(shortest: Duration) -> Duration {
    2 * shortest + Duration::from_millis(1)
}

/// The window shared by a path's `links` active links: `2 × rate × rtt + 2 × chunk × links`,
/// from the path's delivery rate, its round trip and its links' largest chunk.
///
/// Two chunks per link, as each link's own window has, so that the shared window is never
/// under the links' own windows where their estimates are right. (Where links are slow, the
/// round trip already includes a chunk's transmission time, so `2 × rate × rtt` alone covers
/// two chunks per link; the slack matters on fast paths.) On loopback the slack per link made
/// no difference (4 links: 106-109% of raw TCP either way, `benches/runtime.rs`).
pub(crate) fn shared_window(rate: f64, rtt: Duration, chunk: u64, links: u64) -> u64 {
    let bdp = rate * rtt.as_secs_f64();
    (2.0 * bdp).min(u64::MAX as f64 / 4.0) as u64 + 2 * chunk * links
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn path_rate_averages_bursts_and_restarts_after_idle() {
        let us = Time::from_micros;
        let rtt = Duration::from_micros(200);
        let mut p = PathRate::default();
        assert_eq!(p.get(), None);
        // 1 GB/s delivered as one 1 MB burst of acknowledgements every millisecond (each
        // burst alone would look like an unbounded rate).
        for ms in 0..50u64 {
            for k in 0..4 {
                p.on_acked(us(ms * 1000 + k), 250_000, rtt);
            }
        }
        let r = p.get().expect("sampled");
        assert!((r - 1e9).abs() / 1e9 < 0.1, "rate {r}");
        // Idle for two seconds (the maximum expires), then 0.5 GB/s in steady 50 kB
        // acknowledgements: the first sample starts after the silence, not before it.
        for k in 0..100u64 {
            p.on_acked(us(2_050_000 + k * 100), 50_000, rtt);
        }
        let after = p.get().expect("sampled");
        assert!(
            (after - 0.5e9).abs() / 0.5e9 < 0.1,
            "rate {after} after idle"
        );
    }

    #[test]
    fn path_rate_is_unknown_while_it_grows() {
        let rtt = Duration::from_millis(10);
        let mut p = PathRate::default();
        // Doubling every 20 ms (a sample), from 1 MB/s to 64 MB/s: still ramping up.
        let mut t = Time::ZERO;
        for k in 0..7 {
            for _ in 0..20 {
                t += Duration::from_millis(1);
                p.on_acked(t, 1000 << k, rtt);
            }
        }
        assert_eq!(p.get(), None);
        // Then steady: known after a sample that grows less than a quarter.
        for _ in 0..80 {
            t += Duration::from_millis(1);
            p.on_acked(t, 64_000, rtt);
        }
        let r = p.get().expect("known");
        assert!((r - 64e6).abs() / 64e6 < 0.1, "rate {r}");
    }

    #[test]
    fn shared_window_is_twice_the_bdp_plus_two_chunks() {
        let ms = Duration::from_millis;
        // 10 MB/s over 20 ms: 200 kB in the pipe.
        assert_eq!(shared_window(1e7, ms(20), 1000, 1), 402_000);
        assert_eq!(shared_window(1e7, ms(20), 1000, 3), 406_000);
    }
}
