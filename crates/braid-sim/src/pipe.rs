//! One direction of a link: a FIFO byte pipe with a rate, a one-way delay and a send buffer.
//!
//! ```text
//!  writer ──▶ [ unsent queue ≤ buffer ] ──rate──▶ [ in flight, `delay` ] ──▶ reader
//! ```
//!
//! Bytes depart serially at the rate and arrive `delay` (plus jitter, order kept) later. The
//! writer may add bytes while fewer than `buffer` are unsent, like a socket with
//! `TCP_NOTSENT_LOWAT`. Bytes move in segments (at most `segment` bytes each), so the work is
//! per segment, never per byte.

use std::collections::VecDeque;

use braid_proto::Time;
use bytes::Bytes;

/// A piece of the byte stream moving through a pipe.
#[derive(Debug)]
pub(crate) struct Segment {
    /// Bytes (empty for `fin`).
    pub data: Bytes,
    /// The writer closed the link after the bytes before this one.
    pub fin: bool,
}

impl Segment {
    fn len(&self) -> u64 {
        self.data.len() as u64
    }
}

/// What the pipe's physical state is.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Flow {
    /// Bytes move.
    Moving,
    /// Blackholed: bytes are accepted until the buffer is full, nothing departs or arrives.
    Silent,
    /// Gone: nothing is accepted.
    Closed,
}

#[derive(Debug)]
pub(crate) struct Pipe {
    /// Bytes per second.
    rate: f64,
    delay_us: u64,
    jitter_us: u64,
    buffer: u64,
    segment: usize,
    flow: Flow,
    queue: VecDeque<Segment>,
    /// Bytes in `queue`, counting the head in full.
    queued: u64,
    /// Bytes of the head transmitted before `head_start`.
    head_sent: f64,
    head_start: Time,
    /// Bumped to invalidate scheduled departures (rate change, death).
    pub depart_gen: u64,
    in_flight: VecDeque<Segment>,
    last_arrival: Time,
    /// Bumped to invalidate scheduled arrivals (death).
    pub epoch: u64,
    /// Bytes that departed (were put on the wire) so far.
    pub departed: u64,
    /// Bytes that departed and have not arrived (nor vanished) yet.
    pub in_flight_bytes: u64,
}

impl Pipe {
    pub fn new(rate_bits: f64, delay_us: u64, jitter_us: u64, buffer: u64, segment: usize) -> Self {
        Pipe {
            rate: rate_bits / 8.0,
            delay_us,
            jitter_us,
            buffer,
            segment: segment.max(1),
            flow: Flow::Moving,
            queue: VecDeque::new(),
            queued: 0,
            head_sent: 0.0,
            head_start: Time::ZERO,
            depart_gen: 0,
            in_flight: VecDeque::new(),
            last_arrival: Time::ZERO,
            epoch: 0,
            departed: 0,
            in_flight_bytes: 0,
        }
    }

    fn head_transmitted(&self, now: Time) -> f64 {
        match (self.flow, self.queue.front()) {
            (Flow::Moving, Some(h)) => {
                let t = now.saturating_since(self.head_start).as_secs_f64();
                (self.head_sent + t * self.rate).min(h.len() as f64)
            }
            _ => self.head_sent,
        }
    }

    /// Bytes written but not yet departed.
    pub fn unsent(&self, now: Time) -> u64 {
        let sent = self.head_transmitted(now).floor() as u64;
        self.queued.saturating_sub(sent)
    }

    /// How many bytes the writer may add now (0 when closed).
    pub fn room(&self, now: Time) -> usize {
        if self.flow == Flow::Closed {
            return 0;
        }
        self.buffer.saturating_sub(self.unsent(now)) as usize
    }

    /// When the head segment finishes departing, if it is moving.
    pub fn next_departure(&self) -> Option<Time> {
        if self.flow != Flow::Moving {
            return None;
        }
        let h = self.queue.front()?;
        let left = (h.len() as f64 - self.head_sent).max(0.0);
        let us = (left / self.rate * 1e6).ceil() as u64;
        Some(Time::from_micros(self.head_start.as_micros() + us))
    }

    /// Appends bytes (cut into segments). Returns the head's departure time if the pipe was
    /// idle and must be scheduled.
    pub fn push(&mut self, now: Time, data: Bytes) -> Option<Time> {
        if self.flow == Flow::Closed || data.is_empty() {
            return None;
        }
        let was_idle = self.queue.is_empty();
        let mut rest = data;
        while !rest.is_empty() {
            let piece = rest.split_to(self.segment.min(rest.len()));
            self.queued += piece.len() as u64;
            self.queue.push_back(Segment {
                data: piece,
                fin: false,
            });
        }
        self.start_if_idle(now, was_idle)
    }

    /// Appends an end-of-stream marker (the writer closed its socket).
    pub fn push_fin(&mut self, now: Time) -> Option<Time> {
        if self.flow == Flow::Closed {
            return None;
        }
        let was_idle = self.queue.is_empty();
        self.queue.push_back(Segment {
            data: Bytes::new(),
            fin: true,
        });
        self.start_if_idle(now, was_idle)
    }

    fn start_if_idle(&mut self, now: Time, was_idle: bool) -> Option<Time> {
        if was_idle {
            self.head_start = now;
            self.head_sent = 0.0;
            self.next_departure()
        } else {
            None
        }
    }

    /// The head departs now: it moves in flight. Returns its arrival time and the next
    /// departure time, if any.
    pub fn depart(
        &mut self,
        now: Time,
        jitter: impl FnOnce(u64) -> u64,
    ) -> (Option<Time>, Option<Time>) {
        let Some(seg) = self.queue.pop_front() else {
            return (None, None);
        };
        self.queued -= seg.len();
        self.departed += seg.len();
        let extra = if self.jitter_us > 0 {
            jitter(self.jitter_us)
        } else {
            0
        };
        let arrival =
            Time::from_micros(now.as_micros() + self.delay_us + extra).max(self.last_arrival);
        self.last_arrival = arrival;
        self.in_flight_bytes += seg.len();
        self.in_flight.push_back(seg);
        self.head_start = now;
        self.head_sent = 0.0;
        (Some(arrival), self.next_departure())
    }

    /// The next segment arriving (call when its arrival event fires with a current epoch).
    pub fn arrive(&mut self) -> Option<Segment> {
        let seg = self.in_flight.pop_front()?;
        self.in_flight_bytes -= seg.len();
        Some(seg)
    }

    /// Changes the rate from now on; returns the new departure time of the head.
    pub fn set_rate(&mut self, now: Time, rate_bits: f64) -> Option<Time> {
        self.head_sent = self.head_transmitted(now);
        self.head_start = now;
        self.rate = rate_bits / 8.0;
        self.depart_gen += 1;
        self.next_departure()
    }

    /// Changes the one-way delay for bytes departing from now on.
    pub fn set_delay(&mut self, delay_us: u64) {
        self.delay_us = delay_us;
    }

    /// Silent death: what is in flight vanishes; what is written later never departs.
    pub fn blackhole(&mut self, now: Time) {
        self.head_sent = self.head_transmitted(now);
        self.flow = Flow::Silent;
        self.in_flight.clear();
        self.in_flight_bytes = 0;
        self.epoch += 1;
        self.depart_gen += 1;
    }

    /// Loud death: everything is dropped and nothing more is accepted.
    pub fn close(&mut self) {
        self.flow = Flow::Closed;
        self.queue.clear();
        self.queued = 0;
        self.in_flight.clear();
        self.in_flight_bytes = 0;
        self.epoch += 1;
        self.depart_gen += 1;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn t(us: u64) -> Time {
        Time::from_micros(us)
    }

    #[test]
    fn departs_at_rate_and_arrives_after_delay() {
        // 8 Mbit/s = 1 byte/us; 1000 us delay; 64 KiB buffer; 1000-byte segments.
        let mut p = Pipe::new(8e6, 1000, 0, 65536, 1000);
        let first = p.push(t(0), Bytes::from(vec![1; 2500]));
        assert_eq!(first, Some(t(1000)));
        assert_eq!(p.unsent(t(0)), 2500);
        assert_eq!(p.unsent(t(500)), 2000);
        assert_eq!(p.room(t(500)), 65536 - 2000);
        let (arr, next) = p.depart(t(1000), |_| 0);
        assert_eq!(arr, Some(t(2000)));
        assert_eq!(next, Some(t(2000)));
        let (_, next) = p.depart(t(2000), |_| 0);
        assert_eq!(next, Some(t(2500)));
        let (arr, next) = p.depart(t(2500), |_| 0);
        assert_eq!((arr, next), (Some(t(3500)), None));
        assert_eq!(p.arrive().unwrap().data.len(), 1000);
        assert_eq!(p.departed, 2500);
    }

    #[test]
    fn rate_change_midway_keeps_progress() {
        let mut p = Pipe::new(8e6, 0, 0, 65536, 1000);
        p.push(t(0), Bytes::from(vec![0; 1000]));
        // Half sent at 1 byte/us, then the rate halves: 500 bytes at 0.5 byte/us = 1000 us.
        assert_eq!(p.set_rate(t(500), 4e6), Some(t(1500)));
    }

    #[test]
    fn blackhole_fills_the_buffer_and_stops() {
        let mut p = Pipe::new(8e6, 0, 0, 3000, 1000);
        p.push(t(0), Bytes::from(vec![0; 1000]));
        p.blackhole(t(0));
        assert_eq!(p.next_departure(), None);
        p.push(t(10), Bytes::from(vec![0; 2000]));
        assert_eq!(p.room(t(1_000_000)), 0);
    }
}
