//! Per-link state: liveness, RTT, delivery rate, in-flight chunks.

/// A link's local identifier within one [`Connection`](super::Connection). Never reused.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct LinkId(pub u64);

impl std::fmt::Display for LinkId {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "link#{}", self.0)
    }
}

/// Where a link is in its life.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum LinkState {
    /// Carrying data.
    Active,
    /// Leaving gracefully: no new data, waiting for acknowledgements.
    Draining,
    /// Left gracefully.
    Closed,
    /// Dead (timeout, failure, protocol error).
    Dead,
}

/// Why a link died.
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum LinkDeath {
    /// Nothing was heard from it for the liveness timeout.
    Timeout,
    /// The driver reported an error or EOF.
    Failed,
    /// The peer sent something invalid on it.
    Protocol(String),
}

use std::collections::VecDeque;
use std::time::Duration;

use bytes::BytesMut;

use crate::Time;

/// RTT assumed before the first sample (RFC 6298's spirit: be patient with a new path).
const INITIAL_RTT: Duration = Duration::from_millis(250);

/// How long a link takes to send one chunk at most, where chunks are larger than
/// `Config::chunk_size` (see [`Link::chunk_size`]): a millisecond adds little to a chunk's
/// delivery time, and at 512 Mbit/s and up the chunk is `Config::max_chunk_size` (64 KiB).
pub const CHUNK_TIME: Duration = Duration::from_millis(1);

/// One transmission of a chunk on a link, in send order (links are FIFO, so the peer's
/// per-link frame count acknowledges exactly a prefix of these).
#[derive(Debug, Clone)]
pub(crate) struct Transmission {
    pub seq: u64,
    pub len: u64,
    pub sent_at: Time,
    /// Link's delivered bytes when this was sent (delivery-rate sampling, as in BBR).
    delivered: u64,
    delivered_time: Time,
    first_sent_time: Time,
}

/// Windowed maximum over time (Kathleen Nichols' three-sample algorithm, as used by BBR):
/// the best of the samples seen in the last `window`.
#[derive(Debug, Clone, Default)]
pub(crate) struct MaxFilter {
    s: [(Time, f64); 3],
}

impl MaxFilter {
    pub fn get(&self) -> f64 {
        self.s[0].1
    }

    pub fn update(&mut self, now: Time, v: f64, window: Duration) {
        if v >= self.s[0].1 || now.saturating_since(self.s[2].0) > window {
            self.s = [(now, v); 3];
            return;
        }
        if v >= self.s[1].1 {
            self.s[1] = (now, v);
            self.s[2] = (now, v);
        } else if v >= self.s[2].1 {
            self.s[2] = (now, v);
        }
        let dt = now.saturating_since(self.s[0].0);
        if dt > window {
            self.s[0] = self.s[1];
            self.s[1] = self.s[2];
            self.s[2] = (now, v);
            if now.saturating_since(self.s[0].0) > window {
                self.s[0] = self.s[1];
                self.s[1] = self.s[2];
            }
        } else if self.s[1].0 == self.s[0].0 && dt > window / 4 {
            self.s[1] = (now, v);
            self.s[2] = (now, v);
        } else if self.s[2].0 == self.s[1].0 && dt > window / 2 {
            self.s[2] = (now, v);
        }
    }
}

/// Per-link state of a [`Connection`](super::Connection).
#[derive(Debug)]
pub(crate) struct Link {
    pub id: LinkId,
    /// The path it shares with other links, if any (see [`super::path`]).
    pub path: Option<PathId>,
    pub state: LinkState,
    /// Undecoded bytes (at most one partial frame).
    pub input: BytesMut,

    // Sending data.
    pub in_flight: VecDeque<Transmission>,
    pub in_flight_bytes: u64,
    pub frames_sent: u64,
    pub frames_acked: u64,
    delivered: u64,
    delivered_time: Time,
    first_sent_time: Time,
    rate: MaxFilter,
    /// Halved window until then (penalty for holding up the peer's reorder buffer).
    pub penalized_until: Time,
    /// Its transport cannot take more bytes now (see `Connection::link_blocked`).
    pub blocked: bool,

    // Round trip.
    pub srtt: Option<Duration>,
    rttvar: Duration,
    min_rtt: Option<(Duration, Time)>,

    // Receiving.
    pub frames_received: u64,
    pub ack_pending: bool,
    pub pongs_pending: Vec<u64>,

    /// The handshake's round trip, until it seeds the minimum (see
    /// `Connection::handshake_rtt`).
    pub handshake_rtt: Option<Duration>,

    // Liveness.
    pub last_recv: Time,
    /// The last acknowledgement of our frames or answer to our ping on it (see
    /// [`Link::unanswered_since`]).
    pub last_answer: Time,
    pub last_ping_sent: Time,
    pub ping_outstanding: Option<(u64, Time)>,
    /// The keepalive timer fired: send a ping at the next transmit opportunity.
    pub ping_requested: bool,

    // Graceful leave.
    pub close_sent: bool,
    pub close_received: bool,

    pub stats: LinkStats,
}

use super::Config;
use super::path::PathId;
use super::stats::LinkStats;

impl Link {
    pub fn new(id: LinkId, now: Time) -> Self {
        Link {
            id,
            path: None,
            state: LinkState::Active,
            input: BytesMut::new(),
            in_flight: VecDeque::new(),
            in_flight_bytes: 0,
            frames_sent: 0,
            frames_acked: 0,
            delivered: 0,
            delivered_time: now,
            first_sent_time: now,
            rate: MaxFilter::default(),
            penalized_until: Time::ZERO,
            blocked: false,
            srtt: None,
            rttvar: Duration::ZERO,
            min_rtt: None,
            frames_received: 0,
            ack_pending: false,
            pongs_pending: Vec::new(),
            handshake_rtt: None,
            last_recv: now,
            last_answer: now,
            last_ping_sent: Time::ZERO,
            ping_outstanding: None,
            ping_requested: false,
            close_sent: false,
            close_received: false,
            stats: LinkStats::default(),
        }
    }

    pub fn is_live(&self) -> bool {
        matches!(self.state, LinkState::Active | LinkState::Draining)
    }

    pub fn srtt(&self) -> Duration {
        self.srtt.unwrap_or(INITIAL_RTT)
    }

    pub fn min_rtt(&self) -> Duration {
        self.min_rtt.map_or(INITIAL_RTT, |(d, _)| d)
    }

    /// Estimated one-way delay.
    pub fn owd(&self) -> Duration {
        self.min_rtt() / 2
    }

    /// Delivery rate estimate (bytes/s); before any sample, a guess from the initial window.
    pub fn rate(&self, initial_window: u64) -> f64 {
        let r = self.rate.get();
        if r > 0.0 {
            r
        } else {
            initial_window as f64 / self.srtt().as_secs_f64()
        }
    }

    pub fn has_rate_sample(&self) -> bool {
        self.rate.get() > 0.0
    }

    /// In-flight bytes allowed: twice the bandwidth-delay product plus two chunks, like BBR's
    /// cap, so the link stays busy while its queue (and so the peer's reorder spread) stays
    /// short. Halved while penalized.
    ///
    /// The delay is at least `c.window_rtt_floor`, so a few-µs idle round trip on loopback
    /// does not size the window below what batched acknowledgements need.
    pub fn window(&self, now: Time, c: &Config) -> u64 {
        let w = self.unpenalized_window(c);
        if now < self.penalized_until {
            (w / 2).max(2 * self.chunk_size(c) as u64)
        } else {
            w
        }
    }

    /// [`Link::window`] without its penalty.
    pub fn unpenalized_window(&self, c: &Config) -> u64 {
        let chunk = self.chunk_size(c) as u64;
        let w = if self.has_rate_sample() {
            let rtt = self.min_rtt().max(c.window_rtt_floor);
            let bdp = self.rate.get() * rtt.as_secs_f64();
            (2.0 * bdp) as u64 + 2 * chunk
        } else {
            c.initial_link_window
        };
        w.max(2 * chunk)
    }

    /// The chunk size for this link: what it sends in [`CHUNK_TIME`] at its delivery rate,
    /// between `c.chunk_size` and `c.max_chunk_size` (`c.chunk_size` until the rate is known).
    pub fn chunk_size(&self, c: &Config) -> usize {
        let min = c.chunk_size;
        if !self.has_rate_sample() {
            return min;
        }
        let n = (self.rate.get() * CHUNK_TIME.as_secs_f64()).min(usize::MAX as f64 / 2.0);
        (n as usize).clamp(min, c.largest_chunk())
    }

    /// Bytes queued ahead of a new chunk (in flight beyond what the path itself holds).
    pub fn queued(&self, initial_window: u64) -> f64 {
        let pipe = self.rate(initial_window) * self.min_rtt().as_secs_f64();
        (self.in_flight_bytes as f64 - pipe).max(0.0)
    }

    /// When a chunk of `len` bytes handed to this link now would arrive at the peer.
    pub fn expected_delivery(&self, now: Time, len: u64, initial_window: u64) -> Time {
        now + Duration::from_secs_f64(self.delivery_secs(len, initial_window))
    }

    /// [`Link::expected_delivery`] in seconds from now (capped at an hour), without the
    /// conversions: the scheduler compares every link's for every chunk.
    pub fn delivery_secs(&self, len: u64, initial_window: u64) -> f64 {
        let rate = self.rate(initial_window);
        let secs = (self.queued(initial_window) + len as f64) / rate;
        secs.min(3600.0) + self.owd().as_secs_f64()
    }

    /// Liveness timeout: `max(floor, rtts × srtt)`.
    pub fn timeout(&self, floor: Duration, rtts: u32) -> Duration {
        (self.srtt() * rtts + self.rttvar).max(floor)
    }

    /// Whether this link should send a ping now: one was asked for, or it has none
    /// outstanding and sent none for `keepalive` (never after its `LinkClose`).
    pub fn ping_due(&self, now: Time, keepalive: Duration) -> bool {
        !self.close_sent
            && (self.ping_requested
                || (self.ping_outstanding.is_none() && now >= self.last_ping_sent + keepalive))
    }

    /// When this link counts as stalled on a chunk it was expected to deliver at `expected`,
    /// if it stays silent: it owes an answer and had none (see [`Link::unanswered_since`])
    /// for about a retransmission timeout (`srtt + 4 × rttvar`, at least `1.25 × srtt` and
    /// `floor`), and the chunk's acknowledgement is overdue by `4 × rttvar` (at least
    /// `floor`). The second condition keeps a link whose queue just grew (its smoothed round
    /// trip lagging behind) from counting as stalled: the scheduler's expectation includes
    /// the queue the chunk was sent behind.
    ///
    /// A TCP connection that lost a segment and waits out its retransmission timeout (which
    /// doubles at each try) holds everything behind that segment, and the link is silent
    /// meanwhile. The link is not dead, and its timeout (`Link::timeout`, several round trips
    /// that a slow path's queues make long) is still far: what the peer waits for is resent on
    /// other links once the link stalls.
    pub fn stalled_at(&self, expected: Time, floor: Duration) -> Option<Time> {
        let srtt = self.srtt();
        let rto = (srtt + 4 * self.rttvar).max(srtt * 5 / 4).max(floor);
        let overdue = expected + self.owd() + (4 * self.rttvar).max(floor);
        Some((self.unanswered_since()? + rto).max(overdue))
    }

    /// Since when this link owes us an answer (oldest unanswered data or ping, but not
    /// before the last thing we heard on it), if it owes one: its liveness timeout runs from
    /// there (a link that brings anything is alive).
    pub fn awaiting_since(&self) -> Option<Time> {
        Some(self.oldest_unanswered()?.max(self.last_recv))
    }

    /// Since when this link owes us an answer, not counting what we heard that answers
    /// nothing (see [`Link::stalled_at`]): a link stalled our way only still brings the
    /// peer's data, whose frames acknowledge nothing new of ours. Only an acknowledgement or a
    /// pong restarts it.
    pub fn unanswered_since(&self) -> Option<Time> {
        Some(self.oldest_unanswered()?.max(self.last_answer))
    }

    /// When the oldest unanswered chunk or ping on this link was sent.
    fn oldest_unanswered(&self) -> Option<Time> {
        match (self.in_flight.front(), self.ping_outstanding) {
            (Some(t), Some((_, p))) => Some(t.sent_at.min(p)),
            (Some(t), None) => Some(t.sent_at),
            (None, Some((_, p))) => Some(p),
            (None, None) => None,
        }
    }

    /// Whether a round trip was measured (by an acknowledgement, a pong, or the handshake).
    pub fn has_rtt_sample(&self) -> bool {
        self.min_rtt.is_some()
    }

    /// A round trip measured before the link carried anything (its handshake): the minimum
    /// round trip until a smaller one is seen (see `Connection::handshake_rtt`). The smoothed
    /// round trip (so the liveness and stall timeouts) still starts from the first
    /// acknowledgement: a slow link's first acknowledgement comes a whole chunk's
    /// transmission later than its handshake's answer.
    pub fn seed_min_rtt(&mut self, now: Time, rtt: Duration) {
        if self.min_rtt.is_none() {
            self.min_rtt = Some((rtt, now));
            self.stats.min_rtt = rtt;
        }
    }

    pub fn rtt_sample(&mut self, now: Time, rtt: Duration) {
        match self.srtt {
            None => {
                self.srtt = Some(rtt);
                self.rttvar = rtt / 2;
            }
            Some(srtt) => {
                let diff = srtt.abs_diff(rtt);
                self.rttvar = (self.rttvar * 3 + diff) / 4;
                self.srtt = Some((srtt * 7 + rtt) / 8);
            }
        }
        let expired = self
            .min_rtt
            .is_none_or(|(m, at)| rtt <= m || now.saturating_since(at) > Duration::from_secs(10));
        if expired {
            self.min_rtt = Some((rtt, now));
        }
        self.stats.srtt = self.srtt();
        self.stats.min_rtt = self.min_rtt();
    }

    /// Records a chunk handed to this link.
    pub fn on_send(&mut self, seq: u64, len: u64, now: Time) {
        if self.in_flight.is_empty() {
            // Idle restart: don't count the idle time in the next rate sample.
            self.delivered_time = now;
            self.first_sent_time = now;
        }
        self.in_flight.push_back(Transmission {
            seq,
            len,
            sent_at: now,
            delivered: self.delivered,
            delivered_time: self.delivered_time,
            first_sent_time: self.first_sent_time,
        });
        self.in_flight_bytes += len;
        self.frames_sent += 1;
        self.stats.bytes_sent += len;
        self.stats.in_flight = self.in_flight_bytes;
    }

    /// The peer received the oldest transmission: update RTT and delivery rate, return it.
    pub fn on_acked(&mut self, now: Time) -> Option<Transmission> {
        let t = self.in_flight.pop_front()?;
        self.last_answer = now;
        self.frames_acked += 1;
        self.in_flight_bytes -= t.len;
        self.delivered += t.len;
        self.delivered_time = now;
        self.first_sent_time = t.sent_at;
        self.stats.bytes_acked += t.len;
        self.stats.in_flight = self.in_flight_bytes;
        self.rtt_sample(now, now.saturating_since(t.sent_at));
        let interval = t
            .sent_at
            .saturating_since(t.first_sent_time)
            .max(now.saturating_since(t.delivered_time));
        if interval > Duration::ZERO {
            let sample = (self.delivered - t.delivered) as f64 / interval.as_secs_f64();
            let window =
                (self.srtt() * 10).clamp(Duration::from_millis(500), Duration::from_secs(5));
            self.rate.update(now, sample, window);
            self.stats.rate = self.rate.get();
        }
        Some(t)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn max_filter_keeps_best_recent() {
        let mut f = MaxFilter::default();
        let w = Duration::from_secs(1);
        f.update(Time::from_micros(0), 10.0, w);
        f.update(Time::from_micros(100_000), 5.0, w);
        assert_eq!(f.get(), 10.0);
        f.update(Time::from_micros(1_200_000), 4.0, w);
        assert!(f.get() < 10.0, "old maximum expires");
    }

    /// A link stalled our way still brings the peer's data: hearing it is no answer to what
    /// we sent, so the wait counts from our oldest unanswered chunk; an acknowledgement
    /// (or a pong) restarts it.
    #[test]
    fn only_an_answer_ends_the_wait_for_one() {
        let ms = |m: u64| Time::from_micros(m * 1000);
        let mut l = Link::new(LinkId(0), Time::ZERO);
        l.on_send(0, 1000, ms(10));
        l.on_send(1000, 1000, ms(20));
        l.last_recv = ms(500);
        assert_eq!(l.unanswered_since(), Some(ms(10)));
        // It is alive, though: its liveness timeout runs from what it brought.
        assert_eq!(l.awaiting_since(), Some(ms(500)));
        l.on_acked(ms(600));
        assert_eq!(l.unanswered_since(), Some(ms(600)));
        l.on_acked(ms(700));
        assert_eq!(l.unanswered_since(), None);
    }

    #[test]
    fn rate_sample_tracks_delivery() {
        let mut l = Link::new(LinkId(0), Time::ZERO);
        // One 10 kB chunk a millisecond, each acknowledged 20 ms later: 10 MB/s.
        let ms = |m: u64| Time::from_micros(m * 1000);
        for t in 0..200u64 {
            l.on_send(t * 10_000, 10_000, ms(t));
            if t >= 20 {
                l.on_acked(ms(t));
            }
        }
        let r = l.rate(0);
        assert!((r - 10_000_000.0).abs() / 10_000_000.0 < 0.1, "rate {r}");
        assert_eq!(l.min_rtt(), Duration::from_millis(20));
    }
}
