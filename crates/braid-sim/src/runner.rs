//! The event loop: two endpoints, the links between them, the script, the application.
//!
//! Virtual time only moves forward through a queue of events ordered by (time, sequence
//! number), so a run is a pure function of the scenario and the seed.

use std::cmp::Ordering;
use std::collections::{BinaryHeap, HashMap};
use std::time::{Duration, Instant};

use braid_proto::Time;
use braid_proto::agg::{Config, Event, LinkId, Read};
use bytes::Bytes;
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;

use crate::endpoint::Endpoint;
use crate::measure::{Capacity, Deliveries};
use crate::pattern;
use crate::pipe::Pipe;
use crate::scenario::{Direction, EventKind, LinkParams, Scenario, ScenarioError, Side};

/// The application writes in blocks of this size.
const WRITE_BLOCK: usize = 256 * 1024;
/// A reader with a rate limit reads on a tick of this period.
const READ_TICK: Duration = Duration::from_millis(5);
/// Events at one virtual instant beyond this mean the endpoints spin without progress.
const LIVELOCK_EVENTS: u64 = 1_000_000;
/// Period of the backlog samples used by the goodput figures.
pub(crate) const SAMPLE_PERIOD: Duration = Duration::from_millis(10);
/// A timer deadline still due after firing is retried after this long.
const TIMER_RETRY: Duration = Duration::from_millis(1);

#[derive(Debug)]
enum Ev {
    Depart {
        link: usize,
        dir: usize,
        generation: u64,
    },
    Arrive {
        link: usize,
        dir: usize,
        epoch: u64,
    },
    Timer {
        side: usize,
        at: Time,
    },
    Script(usize),
    Join(usize),
    /// Sample the receivers' backlog for the goodput figures.
    Sample,
    ReadTick {
        side: usize,
    },
    PauseMid(usize),
}

#[derive(Debug)]
struct Queued {
    at: Time,
    seq: u64,
    ev: Ev,
}

impl PartialEq for Queued {
    fn eq(&self, o: &Self) -> bool {
        (self.at, self.seq) == (o.at, o.seq)
    }
}
impl Eq for Queued {}
impl PartialOrd for Queued {
    fn partial_cmp(&self, o: &Self) -> Option<Ordering> {
        Some(self.cmp(o))
    }
}
impl Ord for Queued {
    fn cmp(&self, o: &Self) -> Ordering {
        // Reversed: BinaryHeap is a max-heap, we want the earliest first.
        (o.at, o.seq).cmp(&(self.at, self.seq))
    }
}

/// Physical state of a link.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Phys {
    Pending,
    Up,
    Silent,
    Failed,
}

#[derive(Debug)]
pub(crate) struct SimLink {
    pub params: LinkParams,
    pub pipes: [Pipe; 2],
    pub ids: [Option<LinkId>; 2],
    /// The side still uses the link (added, not dead, not closed).
    pub open: [bool; 2],
    phys: Phys,
    leaving: bool,
    scripted_death: bool,
    pub joined: Option<Time>,
    pub ended: Option<String>,
}

impl SimLink {
    fn new(params: LinkParams, segment: usize) -> Self {
        let pipe = |d: usize| {
            Pipe::new(
                params.rate[d].0,
                params.delay[d].as_micros() as u64,
                params.jitter.as_micros() as u64,
                params.buffer,
                segment,
            )
        };
        SimLink {
            pipes: [pipe(0), pipe(1)],
            params,
            ids: [None; 2],
            open: [false; 2],
            phys: Phys::Pending,
            leaving: false,
            scripted_death: false,
            joined: None,
            ended: None,
        }
    }

    /// Counts toward capacity: physically up and used by both sides.
    fn usable(&self) -> bool {
        self.phys == Phys::Up && self.open[0] && self.open[1] && !self.leaving
    }
}

struct Writer {
    key: u64,
    size: u64,
    /// Bytes the engine accepted.
    written: u64,
    buf: Vec<u8>,
    pos: usize,
    finished: bool,
}

struct Reader {
    key: u64,
    size: u64,
    received: u64,
    done: Option<Time>,
    paused: bool,
    /// Bytes per second, if limited.
    rate: Option<f64>,
    tokens: f64,
    tick_armed: bool,
    deliveries: Deliveries,
}

struct SideState<E> {
    ep: E,
    timer: Option<Time>,
    /// The deadline the timer last fired for.
    fired: Option<Time>,
    ids: HashMap<LinkId, usize>,
    /// Links this side polls, in join order.
    open: Vec<usize>,
    writer: Option<Writer>,
    reader: Option<Reader>,
}

/// A pause of a reader, recorded for the report.
pub(crate) struct Pause {
    pub reader_side: usize,
    pub from: Time,
    pub to: Option<Time>,
    pub written_at_start: u64,
    pub read_at_start: u64,
    pub written_at_end: u64,
    pub wire_at_mid: Option<u64>,
    pub wire_at_end: u64,
}

/// A scripted death, recorded for the report.
pub(crate) struct Death {
    pub at: Time,
    pub link: String,
    pub kind: EventKind,
}

/// A simulation in progress. Build with [`Simulation::new`], run with [`Simulation::run`].
pub(crate) struct Simulation<E> {
    pub scenario: Scenario,
    pub seed: u64,
    base_links: Vec<LinkParams>,
    /// Current incarnation of each base link.
    current: Vec<usize>,
    pub links: Vec<SimLink>,
    sides: [SideState<E>; 2],
    pub configs: [Config; 2],
    queue: BinaryHeap<Queued>,
    seq: u64,
    pub now: Time,
    rng: ChaCha8Rng,
    pub capacity: [Capacity; 2],
    pub violations: Vec<String>,
    pub false_deaths: u64,
    pub deaths: Vec<Death>,
    pub pauses: Vec<Pause>,
    pub events: u64,
    same_instant: u64,
    /// Last time anything was written or delivered.
    last_progress: Time,
    stuck: bool,
    pub wall: Duration,
    out: Vec<u8>,
}

/// The stream key of direction `dir` (0 = A→B) for `seed`.
fn stream_key(seed: u64, dir: usize) -> u64 {
    seed.wrapping_mul(0x2545_F491_4F6C_DD1D) ^ (dir as u64 + 1).wrapping_mul(0x9E37_79B9_7F4A_7C15)
}

impl<E: Endpoint> Simulation<E> {
    pub fn new(
        scenario: &Scenario,
        seed: u64,
        mut make: impl FnMut(Side, Config, Time) -> E,
    ) -> Result<Self, ScenarioError> {
        scenario.validate()?;
        let base_links = scenario.links();
        let config_a = scenario.engine.config();
        let mut config_b = config_a.clone();
        if let Some(b) = &scenario.engine_b {
            b.apply(&mut config_b);
        }
        let size = scenario.transfer.size.0;
        let writer = |dir: usize| Writer {
            key: stream_key(seed, dir),
            size,
            written: 0,
            buf: Vec::new(),
            pos: 0,
            finished: false,
        };
        let reader = |dir: usize| Reader {
            key: stream_key(seed, dir),
            size,
            received: 0,
            done: None,
            paused: false,
            rate: scenario.transfer.read_rate.map(|r| r.bytes_per_sec()),
            tokens: 0.0,
            tick_armed: false,
            deliveries: Deliveries::default(),
        };
        let (ab, ba) = match scenario.transfer.direction {
            Direction::AToB => (true, false),
            Direction::BToA => (false, true),
            Direction::Both => (true, true),
        };
        let side = |ep: E, w: Option<Writer>, r: Option<Reader>| SideState {
            ep,
            timer: None,
            fired: None,
            ids: HashMap::new(),
            open: Vec::new(),
            writer: w,
            reader: r,
        };
        let a = make(Side::A, config_a.clone(), Time::ZERO);
        let b = make(Side::B, config_b.clone(), Time::ZERO);
        let sides = [
            side(a, ab.then(|| writer(0)), ba.then(|| reader(1))),
            side(b, ba.then(|| writer(1)), ab.then(|| reader(0))),
        ];
        let mut sim = Simulation {
            scenario: scenario.clone(),
            seed,
            current: (0..base_links.len()).collect(),
            links: Vec::new(),
            base_links,
            sides,
            configs: [config_a, config_b],
            queue: BinaryHeap::new(),
            seq: 0,
            now: Time::ZERO,
            rng: ChaCha8Rng::seed_from_u64(seed),
            capacity: [Capacity::default(), Capacity::default()],
            violations: Vec::new(),
            false_deaths: 0,
            deaths: Vec::new(),
            pauses: Vec::new(),
            events: 0,
            same_instant: 0,
            last_progress: Time::ZERO,
            stuck: false,
            wall: Duration::ZERO,
            out: Vec::new(),
        };
        let segment = scenario.segment.0 as usize;
        for (i, p) in sim.base_links.clone().into_iter().enumerate() {
            let join = Time::ZERO + p.join;
            sim.links.push(SimLink::new(p, segment));
            sim.push(join, Ev::Join(i));
        }
        let mut order: Vec<usize> = (0..scenario.event.len()).collect();
        order.sort_by_key(|&i| scenario.event[i].at);
        for i in order {
            sim.push(Time::ZERO + scenario.event[i].at.0, Ev::Script(i));
        }
        sim.push(Time::ZERO, Ev::Sample);
        Ok(sim)
    }

    fn push(&mut self, at: Time, ev: Ev) {
        self.seq += 1;
        self.queue.push(Queued {
            at,
            seq: self.seq,
            ev,
        });
    }

    fn all_done(&self) -> bool {
        self.sides
            .iter()
            .all(|s| s.reader.as_ref().is_none_or(|r| r.done.is_some()))
    }

    /// Runs until every transfer completed, nothing is left to do, or `max_time`.
    pub fn run(&mut self) {
        let started = Instant::now();
        // The application starts writing at time zero, before any link exists.
        for side in 0..2 {
            self.settle(side);
            self.arm_read_tick(side);
        }
        let max = Time::ZERO + self.scenario.max_time.0;
        while !self.all_done() {
            let Some(q) = self.queue.pop() else {
                self.violations.push(format!(
                    "stuck at {:.3}s: no event left and the transfer is not complete",
                    self.now.as_secs_f64()
                ));
                break;
            };
            if q.at > max {
                self.now = max;
                self.violations.push(format!(
                    "not complete at max_time {:.1}s",
                    max.as_secs_f64()
                ));
                break;
            }
            if q.at == self.now {
                self.same_instant += 1;
                if self.same_instant > LIVELOCK_EVENTS {
                    self.violations.push(format!(
                        "livelock: over {LIVELOCK_EVENTS} events at {:.6}s",
                        self.now.as_secs_f64()
                    ));
                    break;
                }
            } else {
                self.same_instant = 0;
            }
            self.now = self.now.max(q.at);
            self.events += 1;
            self.dispatch(q.ev);
            if self.violations.len() > 100 || self.stuck {
                break;
            }
        }
        let now = self.now;
        let written: [u64; 2] =
            [0, 1].map(|s| self.sides[s].writer.as_ref().map_or(0, |w| w.written));
        let wire = [self.wire_bytes(0), self.wire_bytes(1)];
        for p in self.pauses.iter_mut().filter(|p| p.to.is_none()) {
            p.to = Some(now);
            p.written_at_end = written[1 - p.reader_side];
            p.wire_at_end = wire[1 - p.reader_side];
        }
        self.wall = started.elapsed();
    }

    fn dispatch(&mut self, ev: Ev) {
        match ev {
            Ev::Depart {
                link,
                dir,
                generation,
            } => self.on_depart(link, dir, generation),
            Ev::Arrive { link, dir, epoch } => self.on_arrive(link, dir, epoch),
            Ev::Timer { side, at } => {
                if self.sides[side].timer == Some(at) {
                    self.sides[side].timer = None;
                    self.sides[side].fired = Some(at);
                    let now = self.now;
                    self.sides[side].ep.handle_timeout(now);
                    self.settle(side);
                }
            }
            Ev::Script(i) => self.on_script(i),
            Ev::PauseMid(i) => {
                let side = 1 - self.pauses[i].reader_side;
                let wire = self.wire_bytes(side);
                self.pauses[i].wire_at_mid = Some(wire);
            }
            Ev::Join(l) => self.join(l),
            Ev::Sample => {
                let now = self.now;
                for dir in 0..2 {
                    let reader = 1 - dir;
                    if self.sides[reader].reader.is_none() {
                        continue;
                    }
                    let held = self.sides[reader].ep.stats().recv_buffered;
                    let flying: u64 = self
                        .links
                        .iter()
                        .map(|l| l.pipes[dir].in_flight_bytes)
                        .sum();
                    if let Some(r) = self.sides[reader].reader.as_mut() {
                        r.deliveries.sample_backlog(now, held, flying);
                    }
                }
                let paused = self
                    .sides
                    .iter()
                    .any(|s| s.reader.as_ref().is_some_and(|r| r.paused));
                if paused {
                    self.last_progress = now;
                } else if now - self.last_progress > self.scenario.stall_limit.0 {
                    self.violations.push(format!(
                        "stuck: nothing written or delivered since {:.3}s (stall_limit {})",
                        self.last_progress.as_secs_f64(),
                        self.scenario.stall_limit
                    ));
                    self.stuck = true;
                }
                // Nothing else pending means the run is stuck: let the loop see it.
                if !self.queue.is_empty() {
                    let at = now + SAMPLE_PERIOD;
                    self.push(at, Ev::Sample);
                }
            }
            Ev::ReadTick { side } => {
                let period = READ_TICK.as_secs_f64();
                if let Some(r) = self.sides[side].reader.as_mut() {
                    r.tick_armed = false;
                    if r.done.is_some() || r.paused {
                        return;
                    }
                    let rate = r.rate.unwrap_or(0.0);
                    r.tokens = (r.tokens + rate * period).min(2.0 * rate * period);
                }
                self.settle(side);
                self.arm_read_tick(side);
            }
        }
    }

    fn arm_read_tick(&mut self, side: usize) {
        let Some(r) = self.sides[side].reader.as_mut() else {
            return;
        };
        if r.rate.is_some() && !r.tick_armed && r.done.is_none() && !r.paused {
            r.tick_armed = true;
            let at = self.now + READ_TICK;
            self.push(at, Ev::ReadTick { side });
        }
    }

    fn schedule_departure(&mut self, link: usize, dir: usize, at: Option<Time>) {
        if let Some(at) = at {
            let generation = self.links[link].pipes[dir].depart_gen;
            self.push(
                at,
                Ev::Depart {
                    link,
                    dir,
                    generation,
                },
            );
        }
    }

    fn on_depart(&mut self, link: usize, dir: usize, generation: u64) {
        let now = self.now;
        let rng = &mut self.rng;
        let pipe = &mut self.links[link].pipes[dir];
        if pipe.depart_gen != generation {
            return;
        }
        let epoch = pipe.epoch;
        let (arrival, next) = pipe.depart(now, |max| rng.random_range(0..=max));
        if let Some(at) = arrival {
            self.push(at, Ev::Arrive { link, dir, epoch });
        }
        self.schedule_departure(link, dir, next);
        // The writer side has room again on this link.
        // Sending changes nothing the application waits for, so unless the engine has
        // events, polling this link and re-arming the timer is enough.
        if self.links[link].open[dir] {
            if self.transmit(dir, link) && self.drain_events(dir) {
                self.settle(dir);
            } else {
                self.rearm(dir);
            }
        }
    }

    fn on_arrive(&mut self, link: usize, dir: usize, epoch: u64) {
        let pipe = &mut self.links[link].pipes[dir];
        if pipe.epoch != epoch {
            return;
        }
        let Some(seg) = pipe.arrive() else { return };
        let side = 1 - dir;
        if !self.links[link].open[side] {
            return;
        }
        let Some(id) = self.links[link].ids[side] else {
            return;
        };
        let now = self.now;
        if seg.fin {
            // The peer closed its socket: EOF.
            self.close_link(side, link, "closed by peer");
            self.sides[side].ep.link_failed(id, now);
        } else {
            self.sides[side].ep.handle_input(id, &seg.data, now);
        }
        self.settle(side);
    }

    fn join(&mut self, link: usize) {
        let now = self.now;
        let l = &mut self.links[link];
        l.phys = Phys::Up;
        l.joined = Some(now);
        for side in 0..2 {
            let id = self.sides[side].ep.add_link(now);
            self.links[link].ids[side] = Some(id);
            self.links[link].open[side] = true;
            self.sides[side].ids.insert(id, link);
            self.sides[side].open.push(link);
        }
        self.update_capacity();
        self.settle(0);
        self.settle(1);
    }

    /// The side stops using the link (its engine declared it dead or closed, or EOF).
    fn close_link(&mut self, side: usize, link: usize, why: &str) {
        let now = self.now;
        let l = &mut self.links[link];
        if !l.open[side] {
            return;
        }
        l.open[side] = false;
        if l.ended.is_none() {
            l.ended = Some(format!(
                "{why} at {:.3}s (side {})",
                now.as_secs_f64(),
                ["A", "B"][side]
            ));
        }
        let at = l.pipes[side].push_fin(now);
        self.schedule_departure(link, side, at);
        self.sides[side].open.retain(|&k| k != link);
        self.update_capacity();
    }

    fn on_script(&mut self, i: usize) {
        let e = self.scenario.event[i].clone();
        let now = self.now;
        let targets: Vec<usize> = match &e.link {
            Some(r) => match self.scenario.resolve(&self.base_links, i, r) {
                Ok(v) => v,
                Err(err) => {
                    self.violations.push(err.to_string());
                    return;
                }
            },
            None => Vec::new(),
        };
        match e.kind {
            EventKind::StopReading | EventKind::ResumeReading => {
                let sides: Vec<usize> = match e.side {
                    Some(s) => vec![s.index()],
                    None => vec![0, 1],
                };
                for side in sides {
                    let stop = e.kind == EventKind::StopReading;
                    let Some(r) = self.sides[side].reader.as_mut() else {
                        continue;
                    };
                    if r.paused == stop {
                        continue;
                    }
                    r.paused = stop;
                    let read = r.received;
                    let writer_side = 1 - side;
                    let written = self.sides[writer_side]
                        .writer
                        .as_ref()
                        .map_or(0, |w| w.written);
                    let wire = self.wire_bytes(writer_side);
                    if stop {
                        // Snapshot the wire halfway to the matching resume (or to max_time).
                        let resume = self
                            .scenario
                            .event
                            .iter()
                            .filter(|x| {
                                x.kind == EventKind::ResumeReading
                                    && x.side.is_none_or(|s| s.index() == side)
                                    && x.at.0 > e.at.0
                            })
                            .map(|x| x.at.0)
                            .min()
                            .unwrap_or(self.scenario.max_time.0);
                        let mid = Time::ZERO + e.at.0 + (resume.saturating_sub(e.at.0)) / 2;
                        self.pauses.push(Pause {
                            reader_side: side,
                            from: now,
                            to: None,
                            written_at_start: written,
                            read_at_start: read,
                            written_at_end: written,
                            wire_at_mid: None,
                            wire_at_end: wire,
                        });
                        let index = self.pauses.len() - 1;
                        self.push(mid, Ev::PauseMid(index));
                    } else {
                        if let Some(p) = self
                            .pauses
                            .iter_mut()
                            .rev()
                            .find(|p| p.reader_side == side && p.to.is_none())
                        {
                            p.to = Some(now);
                            p.wire_at_end = wire;
                            p.written_at_end = written;
                        }
                        self.settle(side);
                        self.arm_read_tick(side);
                    }
                }
            }
            _ => {
                for base in targets {
                    self.link_event(base, &e, now);
                }
            }
        }
    }

    fn link_event(&mut self, base: usize, e: &crate::scenario::EventSpec, now: Time) {
        let link = self.current[base];
        match e.kind {
            EventKind::SilentDeath | EventKind::LoudDeath => {
                let l = &mut self.links[link];
                if l.phys != Phys::Up {
                    return;
                }
                l.scripted_death = true;
                let name = l.params.name.clone();
                if e.kind == EventKind::SilentDeath {
                    l.phys = Phys::Silent;
                    l.ended = Some(format!("silent death at {:.3}s", now.as_secs_f64()));
                    l.pipes[0].blackhole(now);
                    l.pipes[1].blackhole(now);
                    self.update_capacity();
                } else {
                    l.phys = Phys::Failed;
                    l.ended = Some(format!("loud death at {:.3}s", now.as_secs_f64()));
                    l.pipes[0].close();
                    l.pipes[1].close();
                    for side in 0..2 {
                        if self.links[link].open[side] {
                            self.links[link].open[side] = false;
                            self.sides[side].open.retain(|&k| k != link);
                            if let Some(id) = self.links[link].ids[side] {
                                self.sides[side].ep.link_failed(id, now);
                            }
                        }
                    }
                    self.update_capacity();
                }
                self.deaths.push(Death {
                    at: now,
                    link: name,
                    kind: e.kind,
                });
                self.settle(0);
                self.settle(1);
            }
            EventKind::Return => {
                let mut p = self.links[link].params.clone();
                if let Some(r) = e.rate {
                    p.rate = [r, e.rate_back.unwrap_or(r)];
                }
                if let Some(d) = e.delay {
                    p.delay = [d.0, e.delay_back.unwrap_or(d).0];
                }
                if let Some(b) = e.buffer {
                    p.buffer = b.0;
                }
                let new = self.links.len();
                self.links
                    .push(SimLink::new(p, self.scenario.segment.0 as usize));
                self.current[base] = new;
                self.join(new);
            }
            EventKind::Rate => {
                let Some(r) = e.rate else { return };
                let rates = [r, e.rate_back.unwrap_or(r)];
                self.links[link].params.rate = rates;
                for (dir, rate) in rates.iter().enumerate() {
                    let at = self.links[link].pipes[dir].set_rate(now, rate.0);
                    self.schedule_departure(link, dir, at);
                }
                self.update_capacity();
            }
            EventKind::Delay => {
                let Some(d) = e.delay else { return };
                let delays = [d.0, e.delay_back.unwrap_or(d).0];
                self.links[link].params.delay = delays;
                for (dir, d) in delays.iter().enumerate() {
                    self.links[link].pipes[dir].set_delay(d.as_micros() as u64);
                }
            }
            EventKind::Leave => {
                if self.links[link].open[0] {
                    if let Some(id) = self.links[link].ids[0] {
                        self.links[link].leaving = true;
                        self.sides[0].ep.remove_link(id, now);
                        self.update_capacity();
                        self.settle(0);
                    }
                }
            }
            EventKind::StopReading | EventKind::ResumeReading => {}
        }
    }

    /// Wire bytes departed so far in the direction written by `side`.
    fn wire_bytes(&self, side: usize) -> u64 {
        self.links.iter().map(|l| l.pipes[side].departed).sum()
    }

    fn update_capacity(&mut self) {
        let now = self.now;
        for dir in 0..2 {
            let cap: f64 = self
                .links
                .iter()
                .filter(|l| l.usable())
                .map(|l| l.params.rate[dir].0)
                .sum();
            self.capacity[dir].set(now, cap);
        }
    }

    /// Polls one link of `side` while it has room. Returns whether bytes were sent.
    fn transmit(&mut self, side: usize, link: usize) -> bool {
        let now = self.now;
        let Some(id) = self.links[link].ids[side] else {
            return false;
        };
        let mut room = self.links[link].pipes[side].room(now);
        if room == 0 {
            return false;
        }
        let mut out = std::mem::take(&mut self.out);
        out.clear();
        let ep = &mut self.sides[side].ep;
        loop {
            let n = ep.poll_transmit(id, now, room, &mut out);
            if n == 0 {
                break;
            }
            room = room.saturating_sub(n);
            if room == 0 {
                break;
            }
        }
        if out.is_empty() {
            self.out = out;
            return false;
        }
        let at = self.links[link].pipes[side].push(now, Bytes::from(out));
        self.schedule_departure(link, side, at);
        true
    }

    fn transmit_all(&mut self, side: usize) -> bool {
        let mut any = false;
        for k in 0..self.sides[side].open.len() {
            let link = self.sides[side].open[k];
            any |= self.transmit(side, link);
        }
        any
    }

    /// Drains the side's events. Returns whether there were any.
    fn drain_events(&mut self, side: usize) -> bool {
        let mut any = false;
        while let Some(ev) = self.sides[side].ep.poll_event() {
            any = true;
            match ev {
                Event::LinkDead { link, reason } => {
                    if let Some(&k) = self.sides[side].ids.get(&link) {
                        let l = &self.links[k];
                        if l.phys == Phys::Up && !l.scripted_death && l.open[side] && !l.leaving {
                            self.false_deaths += 1;
                        }
                        self.close_link(side, k, &format!("declared dead ({reason:?})"));
                    }
                }
                Event::LinkClosed(link) => {
                    if let Some(&k) = self.sides[side].ids.get(&link) {
                        self.close_link(side, k, "left");
                    }
                }
                Event::Failed(e) => {
                    self.violations.push(format!(
                        "side {} failed at {:.3}s: {e}",
                        ["A", "B"][side],
                        self.now.as_secs_f64()
                    ));
                }
                _ => {}
            }
        }
        any
    }

    /// The application writes what it can. Returns whether it made progress.
    fn app_write(&mut self, side: usize) -> bool {
        let s = &mut self.sides[side];
        let Some(w) = s.writer.as_mut() else {
            return false;
        };
        let mut progress = false;
        loop {
            if w.written == w.size {
                if !w.finished {
                    w.finished = true;
                    if let Err(e) = s.ep.finish() {
                        self.violations
                            .push(format!("finish on side {}: {e}", ["A", "B"][side]));
                    }
                    progress = true;
                }
                return progress;
            }
            if w.pos == w.buf.len() {
                let n = (w.size - w.written).min(WRITE_BLOCK as u64) as usize;
                w.buf.resize(n, 0);
                pattern::fill(w.key, w.written, &mut w.buf);
                w.pos = 0;
            }
            match s.ep.write(&w.buf[w.pos..]) {
                Ok(0) => return progress,
                Ok(n) => {
                    w.pos += n;
                    w.written += n as u64;
                    progress = true;
                    self.last_progress = self.now;
                }
                Err(e) => {
                    self.violations
                        .push(format!("write on side {}: {e}", ["A", "B"][side]));
                    w.written = w.size;
                    w.finished = true;
                    return progress;
                }
            }
        }
    }

    /// The application reads what it may. Returns whether it made progress.
    fn app_read(&mut self, side: usize) -> bool {
        let now = self.now;
        let s = &mut self.sides[side];
        let Some(r) = s.reader.as_mut() else {
            return false;
        };
        if r.done.is_some() || r.paused {
            return false;
        }
        let mut progress = false;
        loop {
            let max = match r.rate {
                Some(_) if r.tokens < 1.0 => break,
                Some(_) => r.tokens as usize,
                None => 1 << 22,
            };
            match s.ep.read(max) {
                Ok(Read::Data(b)) => {
                    if b.is_empty() {
                        break;
                    }
                    progress = true;
                    if let Some(bad) = pattern::check(r.key, r.received, &b) {
                        self.violations.push(format!(
                            "{}: wrong byte at offset {bad} (read at {:.3}s)",
                            ["b-to-a", "a-to-b"][side],
                            now.as_secs_f64()
                        ));
                    }
                    if r.received + b.len() as u64 > r.size {
                        self.violations.push(format!(
                            "{}: {} bytes delivered, more than the {} sent",
                            ["b-to-a", "a-to-b"][side],
                            r.received + b.len() as u64,
                            r.size
                        ));
                    }
                    r.received += b.len() as u64;
                    r.deliveries.record(now, r.received);
                    self.last_progress = now;
                    if r.rate.is_some() {
                        r.tokens -= b.len() as f64;
                    }
                }
                Ok(Read::Blocked) => break,
                Ok(Read::Finished) => {
                    progress = true;
                    r.done = Some(now);
                    if r.received != r.size {
                        self.violations.push(format!(
                            "{}: stream ended after {} of {} bytes",
                            ["b-to-a", "a-to-b"][side],
                            r.received,
                            r.size
                        ));
                    }
                    break;
                }
                Err(e) => {
                    self.violations
                        .push(format!("read on side {}: {e}", ["A", "B"][side]));
                    r.done = Some(now);
                    break;
                }
            }
        }
        progress
    }

    /// After anything happened on `side`: events, application, transmits, timer.
    fn settle(&mut self, side: usize) {
        // Events first (they may close links), then the application (writes add data, reads
        // open the window), then every link with room. Transmits rarely raise events; only
        // then is another round needed.
        self.drain_events(side);
        for _ in 0..10_000 {
            self.app_write(side);
            self.app_read(side);
            self.transmit_all(side);
            if !self.drain_events(side) {
                self.rearm(side);
                return;
            }
        }
        self.violations.push(format!(
            "livelock on side {} at {:.6}s: events and progress without end",
            ["A", "B"][side],
            self.now.as_secs_f64()
        ));
        self.rearm(side);
    }

    fn rearm(&mut self, side: usize) {
        let t = self.sides[side].ep.poll_timeout();
        if t != self.sides[side].timer {
            self.sides[side].timer = t;
            if let Some(t) = t {
                // A deadline in the past that equals the one that just fired (input can
                // bring one back: a pong arriving after the keepalive interval makes the next
                // ping due at once) is retried a millisecond later rather than spun on.
                let at = if t <= self.now && self.sides[side].fired == Some(t) {
                    self.now + TIMER_RETRY
                } else {
                    t.max(self.now)
                };
                // The event carries the deadline the engine asked for, to match it on firing.
                self.seq += 1;
                self.queue.push(Queued {
                    at,
                    seq: self.seq,
                    ev: Ev::Timer { side, at: t },
                });
            }
        }
    }

    /// Engine stats of `side`.
    pub fn stats(&self, side: usize) -> braid_proto::agg::ConnectionStats {
        self.sides[side].ep.stats()
    }

    /// The reader of `side`, if it reads: (size, received, done, deliveries).
    pub(crate) fn reader(&self, side: usize) -> Option<(u64, u64, Option<Time>, &Deliveries)> {
        self.sides[side]
            .reader
            .as_ref()
            .map(|r| (r.size, r.received, r.done, &r.deliveries))
    }
}
