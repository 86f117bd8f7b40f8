//! Engine tests on a minimal in-file pair of endpoints joined by rate-limited FIFO links.
//! The full simulator (scenarios, figures, random schedules) is the `braid-sim` crate.

use std::collections::VecDeque;
use std::time::Duration;

use super::*;
use crate::Time;

/// One direction of a link: bytes depart at `rate` and arrive `delay` later.
struct Pipe {
    rate: f64,
    delay: Duration,
    buffer: usize,
    busy_until: Time,
    /// (departure end, bytes) not yet departed or arrived.
    queue: VecDeque<(Time, Vec<u8>)>,
    alive: bool,
}

impl Pipe {
    fn unsent(&self, now: Time) -> usize {
        self.queue
            .iter()
            .filter(|(t, _)| *t > now)
            .map(|(_, b)| b.len())
            .sum()
    }
    fn push(&mut self, now: Time, bytes: Vec<u8>) {
        let start = self.busy_until.max(now);
        let end = start + Duration::from_secs_f64(bytes.len() as f64 / self.rate);
        self.busy_until = end;
        self.queue.push_back((end, bytes));
    }
    fn next_event(&self) -> Option<Time> {
        self.queue.front().map(|(t, _)| *t + self.delay)
    }
}

struct Pair {
    ends: [Connection; 2],
    /// links[i] = (id at end 0, id at end 1, pipe 0→1, pipe 1→0)
    links: Vec<(LinkId, LinkId, Pipe, Pipe)>,
    now: Time,
}

impl Pair {
    fn new(config: Config) -> Self {
        Pair {
            ends: [
                Connection::new(config.clone(), Time::ZERO),
                Connection::new(config, Time::ZERO),
            ],
            links: Vec::new(),
            now: Time::ZERO,
        }
    }

    fn add_link(&mut self, mbit: f64, delay_ms: u64) {
        let pipe = || Pipe {
            rate: mbit * 1e6 / 8.0,
            delay: Duration::from_millis(delay_ms),
            buffer: 32 * 1024,
            busy_until: Time::ZERO,
            queue: VecDeque::new(),
            alive: true,
        };
        let a = self.ends[0].add_link(self.now);
        let b = self.ends[1].add_link(self.now);
        self.links.push((a, b, pipe(), pipe()));
    }

    fn pump(&mut self) {
        let now = self.now;
        for (a, b, p01, p10) in &mut self.links {
            for (end, id, pipe) in [(0, *a, &mut *p01), (1, *b, &mut *p10)] {
                loop {
                    let room = pipe.buffer.saturating_sub(pipe.unsent(now));
                    if room == 0 {
                        break;
                    }
                    let mut out = Vec::new();
                    if self.ends[end].poll_transmit(id, now, room, &mut out) == 0 {
                        break;
                    }
                    if pipe.alive {
                        pipe.push(now, out);
                    }
                }
            }
        }
    }

    /// Advances to the next event; returns false when nothing is left to happen.
    fn step(&mut self, deadline: Time) -> bool {
        self.pump();
        let now = self.now;
        let pipes = self.links.iter().flat_map(|(_, _, p, q)| [p, q]);
        let arrivals = pipes.clone().filter_map(Pipe::next_event);
        // Departures free buffer room (a reason to poll again).
        let departures = pipes.flat_map(|p| p.queue.iter().map(|(t, _)| *t).find(|t| *t > now));
        // A timer already due but not cleared (say, a keepalive on a full link) is retried
        // a millisecond later rather than spun on.
        let timers = self
            .ends
            .iter()
            .filter_map(|e| e.poll_timeout())
            .map(|t| t.max(now + Duration::from_millis(1)));
        let next = arrivals.chain(departures).chain(timers).min();
        let Some(next) = next else { return false };
        if next > deadline {
            return false;
        }
        self.now = self.now.max(next);
        let now = self.now;
        for (a, b, p01, p10) in &mut self.links {
            for (end, id, pipe) in [(1, *b, &mut *p01), (0, *a, &mut *p10)] {
                while pipe
                    .queue
                    .front()
                    .is_some_and(|(t, _)| *t + pipe.delay <= now)
                {
                    let (_, bytes) = pipe.queue.pop_front().expect("front");
                    self.ends[end].handle_input(id, &bytes, now);
                }
            }
        }
        for e in &mut self.ends {
            if e.poll_timeout().is_some_and(|t| t <= now) {
                e.handle_timeout(now);
            }
        }
        true
    }
}

fn pattern(i: u64) -> u8 {
    (i.wrapping_mul(0x9E37_79B9_7F4A_7C15) >> 56) as u8
}

/// Sends `size` bytes 0→1, reads them all, checks order; returns (completion time, pair).
fn transfer(pair: &mut Pair, size: u64, limit: Duration, at: impl FnMut(&mut Pair)) -> Time {
    transfer_gaps(pair, size, limit, at).0
}

/// Like [`transfer`], also returning the longest gap in in-order delivery after 0.5 s.
fn transfer_gaps(
    pair: &mut Pair,
    size: u64,
    limit: Duration,
    mut at: impl FnMut(&mut Pair),
) -> (Time, Duration) {
    let (mut written, mut read) = (0u64, 0u64);
    let (mut last_progress, mut gap) = (Time::ZERO, Duration::ZERO);
    let mut buf = vec![0u8; 64 * 1024];
    let deadline = Time::ZERO + limit;
    loop {
        while written < size {
            let n = (size - written).min(buf.len() as u64) as usize;
            for (i, b) in buf[..n].iter_mut().enumerate() {
                *b = pattern(written + i as u64);
            }
            let took = pair.ends[0].write(&buf[..n]).unwrap();
            written += took as u64;
            if took < n {
                break;
            }
        }
        if written == size {
            let _ = pair.ends[0].finish();
        }
        loop {
            match pair.ends[1].read(usize::MAX).unwrap() {
                Read::Data(d) => {
                    for (i, b) in d.iter().enumerate() {
                        assert_eq!(
                            *b,
                            pattern(read + i as u64),
                            "byte {} wrong",
                            read + i as u64
                        );
                    }
                    read += d.len() as u64;
                    if pair.now > Time::from_micros(500_000) {
                        gap = gap.max(pair.now - last_progress);
                    }
                    last_progress = pair.now;
                }
                Read::Finished => {
                    assert_eq!(read, size);
                    return (pair.now, gap);
                }
                Read::Blocked => break,
            }
        }
        at(pair);
        assert!(
            pair.step(deadline),
            "stalled at {:?} with {read}/{size} read",
            pair.now
        );
    }
}

#[test]
fn single_link_delivers_everything_in_order() {
    let mut p = Pair::new(Config::default());
    p.add_link(100.0, 5);
    let t = transfer(&mut p, 3_000_000, Duration::from_secs(30), |_| {});
    assert!(t.as_secs_f64() < 1.0, "{t:?}");
}

#[test]
fn three_links_reach_their_sum() {
    let mut p = Pair::new(Config::default());
    p.add_link(40.0, 5);
    p.add_link(20.0, 15);
    p.add_link(10.0, 40);
    let size = 40_000_000u64;
    let t = transfer(&mut p, size, Duration::from_secs(60), |_| {});
    let goodput = size as f64 * 8.0 / t.as_secs_f64() / 1e6;
    for (a, _, _, _) in &p.links {
        eprintln!("{:?}", p.ends[0].link_stats(*a).unwrap());
    }
    eprintln!(
        "goodput {goodput:.1} Mbit/s in {t:?}, {:?}",
        p.ends[0].stats()
    );
    assert!(goodput > 0.9 * 70.0, "goodput {goodput:.1}");
}

#[test]
fn silent_death_loses_nothing() {
    let mut p = Pair::new(Config::default());
    p.add_link(40.0, 5);
    p.add_link(20.0, 15);
    let mut killed = false;
    let (t, gap) = transfer_gaps(&mut p, 20_000_000, Duration::from_secs(60), |p| {
        if !killed && p.now >= Time::from_micros(1_000_000) {
            killed = true;
            p.links[0].2.alive = false;
            p.links[0].3.alive = false;
            p.links[0].2.queue.clear();
            p.links[0].3.queue.clear();
        }
    });
    assert!(killed);
    eprintln!(
        "done at {t:?}, longest stall {gap:?}, {:?}",
        p.ends[0].stats()
    );
    assert!(gap < Duration::from_millis(300), "stall {gap:?}");
}
