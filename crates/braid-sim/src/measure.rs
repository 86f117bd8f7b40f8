//! Turning a finished run into figures: goodput against capacity, stalls, recovery.

use std::time::Duration;

use braid_proto::Time;
use braid_proto::agg::frame::{DATA_HEADER_CRC_LEN, DATA_HEADER_LEN};

use crate::endpoint::Endpoint;
use crate::report::{
    DeathRecovery, DirectionReport, EngineCounters, LinkReport, PauseReport, Report, SimSpeed,
};
use crate::runner::Simulation;
use crate::scenario::EventKind;

/// Sum of usable link rates over time (bit/s), piecewise constant.
#[derive(Clone, Debug, Default)]
pub(crate) struct Capacity {
    steps: Vec<(Time, f64)>,
}

impl Capacity {
    pub fn set(&mut self, now: Time, bits: f64) {
        match self.steps.last_mut() {
            Some(&mut (_, v)) if v == bits => {}
            Some((t, v)) if *t == now => *v = bits,
            _ => self.steps.push((now, bits)),
        }
    }

    /// Bits the links could carry in `[t0, t1]`.
    pub fn integral(&self, t0: Time, t1: Time) -> f64 {
        let mut sum = 0.0;
        for (i, &(start, bits)) in self.steps.iter().enumerate() {
            let end = self
                .steps
                .get(i + 1)
                .map_or(Time::from_micros(u64::MAX), |s| s.0);
            let a = start.max(t0);
            let b = end.min(t1);
            if b > a {
                sum += bits * (b - a).as_secs_f64();
            }
        }
        sum
    }
}

/// Cumulative in-order bytes delivered over time, and samples of the backlog: bytes that
/// crossed (or are crossing) the links but were not delivered yet.
#[derive(Clone, Debug, Default)]
pub(crate) struct Deliveries {
    samples: Vec<(Time, u64)>,
    /// (time, bytes the receiver holds, wire bytes in flight towards it).
    backlog: Vec<(Time, u64, u64)>,
}

impl Deliveries {
    pub fn record(&mut self, now: Time, total: u64) {
        match self.samples.last_mut() {
            Some((t, v)) if *t == now => *v = total,
            _ => self.samples.push((now, total)),
        }
    }

    pub fn sample_backlog(&mut self, now: Time, held: u64, in_flight: u64) {
        self.backlog.push((now, held, in_flight));
    }

    /// Payload bytes that had crossed, or were crossing, the links at the last sample at or
    /// before `t` without being delivered: what the receiver held plus the wire bytes in
    /// flight (scaled by the framing efficiency).
    pub fn backlog(&self, t: Time, eff: f64) -> f64 {
        let i = self.backlog.partition_point(|s| s.0 <= t);
        if i == 0 {
            0.0
        } else {
            let (_, held, flying) = self.backlog[i - 1];
            held as f64 + flying as f64 * eff
        }
    }

    /// Payload bytes that crossed the links in `(t0, t1]`: deliveries, corrected for the
    /// backlog at both ends (bytes that crossed before `t0` but were delivered after it
    /// do not count; bytes that crossed but wait in the reorder buffer at `t1` do).
    pub fn crossed(&self, t0: Time, t1: Time, eff: f64) -> f64 {
        let delivered = (self.at(t1) - self.at(t0)) as f64;
        (delivered + self.backlog(t1, eff) - self.backlog(t0, eff)).max(0.0)
    }

    /// Bytes delivered by `t` (inclusive).
    pub fn at(&self, t: Time) -> u64 {
        let i = self.samples.partition_point(|s| s.0 <= t);
        if i == 0 { 0 } else { self.samples[i - 1].1 }
    }
}

/// A delivery gap shorter than this after a death is not a stall: with the remaining links
/// busy, gaps of a few chunk times are normal.
const STALL_MIN: Duration = Duration::from_millis(50);

fn secs(t: Time) -> f64 {
    t.as_secs_f64()
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1e3
}

/// After a death at `at`: the stall, the time until in-order delivery resumed, and the time
/// until goodput over a 200 ms window starting after the resumption reached 90% of the
/// capacity left.
fn recovery(
    del: &Deliveries,
    cap: &Capacity,
    eff: f64,
    at: Time,
    t_end: Time,
) -> (Option<Duration>, Option<Duration>, Option<Duration>) {
    let samples = &del.samples;
    let horizon = at + Duration::from_secs(1);
    let mut best: Option<(Duration, Time)> = None;
    for w in samples.windows(2) {
        if w[1].0 > at && w[0].0 < horizon {
            let gap = w[1].0 - w[0].0.max(at);
            if best.is_none_or(|(g, _)| gap > g) {
                best = Some((gap, w[1].0));
            }
        }
    }
    let first_after = samples.iter().find(|s| s.0 > at).map(|s| s.0);
    let (stall, resumed) = match (best, first_after) {
        (Some((gap, end)), _) if gap >= STALL_MIN => (Some(gap), Some(end - at)),
        // No gap worth the name: delivery never really stopped.
        (_, Some(first)) => (Some(best.map_or(first - at, |(g, _)| g)), Some(first - at)),
        (_, None) => (None, None),
    };
    // Windows start once delivery has resumed, so the burst that releases the reorder
    // buffer at that instant does not count: the remaining links must sustain the rate.
    let w = Duration::from_millis(200);
    let start = at + resumed.unwrap_or(Duration::ZERO);
    let mut t = start + w;
    let last = t_end.min(at + Duration::from_secs(10));
    let mut recovered = None;
    while t <= last {
        let w0 = Time::from_micros(t.as_micros() - w.as_micros() as u64);
        let got = (del.at(t) - del.at(w0)) as f64 * 8.0;
        let can = cap.integral(w0, t) * eff;
        if can > 0.0 && got >= 0.9 * can {
            recovered = Some(t - at);
            break;
        }
        t += Duration::from_millis(1);
    }
    (stall, resumed, recovered)
}

/// The report of a finished simulation.
pub(crate) fn report<E: Endpoint>(sim: &Simulation<E>) -> Report {
    let mut directions = Vec::new();
    let measure_from = Time::ZERO + sim.scenario.measure_from.0;
    for dir in 0..2 {
        let (writer, reader) = (dir, 1 - dir);
        let Some((size, received, done, del)) = sim.reader(reader) else {
            continue;
        };
        let config = &sim.configs[writer];
        let header = if config.crc {
            DATA_HEADER_CRC_LEN
        } else {
            DATA_HEADER_LEN
        };
        let eff = config.chunk_size as f64 / (config.chunk_size + header) as f64;
        let cap = &sim.capacity[dir];
        let t_end = done.unwrap_or(sim.now);
        let t0 = if t_end > measure_from {
            measure_from
        } else {
            Time::ZERO
        };
        let span = (t_end - t0).as_secs_f64();
        // At completion nothing is left in flight, so only the backlog at t0 matters.
        let bytes = if done.is_some() {
            (del.at(t_end) - del.at(t0)) as f64 - del.backlog(t0, eff)
        } else {
            del.crossed(t0, t_end, eff)
        };
        let goodput = if span > 0.0 {
            bytes.max(0.0) * 8.0 / span
        } else {
            0.0
        };
        let capacity = if span > 0.0 {
            cap.integral(t0, t_end) * eff / span
        } else {
            0.0
        };
        let ratio = if capacity > 0.0 {
            goodput / capacity
        } else {
            0.0
        };

        // 1 s windows on a 10 ms grid.
        let (mut min_g, mut min_r) = (None::<f64>, None::<f64>);
        let window = Duration::from_secs(1);
        let mut t = t0 + window;
        while t <= t_end {
            let w0 = Time::from_micros(t.as_micros() - window.as_micros() as u64);
            let g = del.crossed(w0, t, eff) * 8.0;
            let c = cap.integral(w0, t) * eff;
            min_g = Some(min_g.map_or(g, |m: f64| m.min(g)));
            if c > 0.0 {
                let r = g / c;
                min_r = Some(min_r.map_or(r, |m: f64| m.min(r)));
            }
            t += Duration::from_millis(10);
        }

        let samples = &del.samples;
        let (mut stall, mut stall_at) = (Duration::ZERO, Time::ZERO);
        for w in samples.windows(2) {
            let gap = w[1].0 - w[0].0;
            if gap > stall {
                stall = gap;
                stall_at = w[0].0;
            }
        }

        let mut deaths = Vec::new();
        for d in &sim.deaths {
            let mut rec = DeathRecovery {
                link: d.link.clone(),
                kind: match d.kind {
                    EventKind::LoudDeath => "loud-death".into(),
                    _ => "silent-death".into(),
                },
                at_secs: secs(d.at),
                stall_ms: None,
                resumed_ms: None,
                recovered_90_ms: None,
            };
            if t_end > d.at && del.at(t_end) > del.at(d.at) {
                let (stall, resumed, recovered) = recovery(del, cap, eff, d.at, t_end);
                rec.stall_ms = stall.map(ms);
                rec.resumed_ms = resumed.map(ms);
                rec.recovered_90_ms = recovered.map(ms);
            }
            deaths.push(rec);
        }

        let pauses = sim
            .pauses
            .iter()
            .filter(|p| p.reader_side == reader)
            .map(|p| PauseReport {
                from_secs: secs(p.from),
                to_secs: secs(p.to.unwrap_or(sim.now)),
                written_while_stopped: p.written_at_end - p.written_at_start,
                outstanding_max: p.written_at_end.saturating_sub(p.read_at_start),
                wire_bytes_second_half: p
                    .wire_at_end
                    .saturating_sub(p.wire_at_mid.unwrap_or(p.wire_at_end)),
            })
            .collect();

        let rs = sim.stats(reader);
        let ws = sim.stats(writer);
        directions.push(DirectionReport {
            direction: ["a-to-b", "b-to-a"][dir].into(),
            size,
            delivered: received,
            completed: done.is_some() && received == size,
            completion_secs: done.map(secs),
            first_byte_secs: samples.first().map(|s| secs(s.0)),
            measured_from_secs: secs(t0),
            measured_to_secs: secs(t_end),
            goodput_mbit: goodput / 1e6,
            capacity_mbit: capacity / 1e6,
            goodput_ratio: ratio,
            framing_efficiency: eff,
            min_1s_goodput_mbit: min_g.map(|g| g / 1e6),
            min_1s_ratio: min_r,
            longest_stall_ms: ms(stall),
            longest_stall_at_secs: secs(stall_at),
            deaths,
            pauses,
            recv_buffered_peak: rs.recv_buffered_peak,
            recv_window: sim.configs[reader].recv_window,
            send_buffered_peak: ws.send_buffered_peak,
            send_buffer: config.send_buffer,
            bytes_resent: ws.bytes_resent,
        });
    }

    let totals = [0, 1].map(|d| sim.links.iter().map(|l| l.pipes[d].departed).sum::<u64>());
    let links = sim
        .links
        .iter()
        .map(|l| {
            let wire = [l.pipes[0].departed, l.pipes[1].departed];
            LinkReport {
                name: l.params.name.clone(),
                rate_mbit: [l.params.rate[0].0 / 1e6, l.params.rate[1].0 / 1e6],
                wire_bytes: wire,
                share: [0, 1].map(|d| {
                    if totals[d] > 0 {
                        wire[d] as f64 / totals[d] as f64
                    } else {
                        0.0
                    }
                }),
                joined_secs: l.joined.map(secs),
                ended: l.ended.clone(),
            }
        })
        .collect();

    let mut violations = sim.violations.clone();
    for d in &directions {
        if !d.completed
            && !violations
                .iter()
                .any(|v| v.contains("not complete") || v.contains("stuck"))
        {
            violations.push(format!(
                "{}: {} of {} bytes delivered",
                d.direction, d.delivered, d.size
            ));
        }
    }
    Report {
        scenario: sim.scenario.display_name().to_string(),
        seed: sim.seed,
        ok: violations.is_empty() && directions.iter().all(|d| d.completed),
        violations,
        directions,
        links,
        false_deaths: sim.false_deaths,
        engines: [0, 1]
            .map(|side| {
                let s = sim.stats(side);
                EngineCounters {
                    bytes_written: s.bytes_written,
                    bytes_acked: s.bytes_acked,
                    bytes_resent: s.bytes_resent,
                    bytes_read: s.bytes_read,
                    bytes_duplicate: s.bytes_duplicate,
                    send_buffered: s.send_buffered,
                    recv_buffered: s.recv_buffered,
                    links_died: s.links_died,
                }
            })
            .to_vec(),
        sim: SimSpeed {
            events: sim.events,
            virtual_secs: secs(sim.now),
            wall_secs: sim.wall.as_secs_f64(),
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn capacity_integral() {
        let mut c = Capacity::default();
        c.set(Time::ZERO, 10.0);
        c.set(Time::from_micros(1_000_000), 4.0);
        let i = c.integral(Time::from_micros(500_000), Time::from_micros(2_000_000));
        assert!((i - (5.0 + 4.0)).abs() < 1e-9, "{i}");
    }

    #[test]
    fn recovery_after_a_death() {
        let us = Time::from_micros;
        // 1 byte/us until the death at 1 s, then capacity 0.5 byte/us (4 Mbit/s): deliveries
        // go on 20 ms, stop 230 ms, then run at the new capacity.
        let mut cap = Capacity::default();
        cap.set(us(0), 8e6);
        cap.set(us(1_000_000), 4e6);
        let mut del = Deliveries::default();
        let mut total = 0;
        for t in (0..=1_020_000).step_by(1000) {
            total = t;
            del.record(us(t), total);
        }
        for t in (1_250_000..=3_000_000).step_by(1000) {
            total += 500;
            del.record(us(t), total);
        }
        let (stall, resumed, rec) = recovery(&del, &cap, 1.0, us(1_000_000), us(3_000_000));
        assert_eq!(stall, Some(Duration::from_millis(230)));
        assert_eq!(resumed, Some(Duration::from_millis(250)));
        // Windows start when delivery resumed (1.25 s), without the delivery at that instant;
        // the first, (1.25, 1.45], holds 200 deliveries of 500 bytes: 100% of 4 Mbit/s.
        assert_eq!(rec, Some(Duration::from_millis(450)));

        // No stall at all: small gaps only, resumption is the first delivery after the death.
        let mut del = Deliveries::default();
        for t in (0..=3_000_000).step_by(5000) {
            del.record(us(t), t / 2);
        }
        let (stall, resumed, _) = recovery(&del, &cap, 1.0, us(1_002_000), us(3_000_000));
        assert_eq!(stall, Some(Duration::from_millis(5)));
        assert_eq!(resumed, Some(Duration::from_millis(3)));
    }

    #[test]
    fn deliveries_step_function() {
        let mut d = Deliveries::default();
        d.record(Time::from_micros(10), 5);
        d.record(Time::from_micros(10), 7);
        d.record(Time::from_micros(20), 9);
        assert_eq!(d.at(Time::from_micros(5)), 0);
        assert_eq!(d.at(Time::from_micros(10)), 7);
        assert_eq!(d.at(Time::from_micros(15)), 7);
        assert_eq!(d.at(Time::from_micros(25)), 9);
    }
}
