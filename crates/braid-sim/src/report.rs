//! Figures of a run, and the human table.

use std::fmt::Write as _;

use serde::Serialize;

/// Everything measured in one run (one scenario, one seed).
#[derive(Clone, Debug, Serialize)]
#[non_exhaustive]
pub struct Report {
    /// Scenario name.
    pub scenario: String,
    /// Seed of this run.
    pub seed: u64,
    /// Every transfer completed, verified, and nothing went wrong.
    pub ok: bool,
    /// What went wrong (corrupt data, timeouts, failed connections, stuck runs).
    pub violations: Vec<String>,
    /// One entry per data direction.
    pub directions: Vec<DirectionReport>,
    /// One entry per link incarnation (a returned link is a new entry).
    pub links: Vec<LinkReport>,
    /// Links the engine declared dead although they still worked.
    pub false_deaths: u64,
    /// Each side's engine counters at the end of the run (A, then B).
    pub engines: Vec<EngineCounters>,
    /// How the simulator itself did.
    pub sim: SimSpeed,
}

/// Figures of one data direction.
#[derive(Clone, Debug, Serialize)]
#[non_exhaustive]
pub struct DirectionReport {
    /// `a-to-b` or `b-to-a`.
    pub direction: String,
    /// Bytes to transfer.
    pub size: u64,
    /// Bytes delivered in order and verified.
    pub delivered: u64,
    /// Whether the reader saw the end of the stream after every byte.
    pub completed: bool,
    /// Virtual time when the reader saw the end of the stream.
    pub completion_secs: Option<f64>,
    /// Virtual time of the first delivered byte.
    pub first_byte_secs: Option<f64>,
    /// Start of the goodput measurement.
    pub measured_from_secs: f64,
    /// End of the goodput measurement (completion, or the end of the run).
    pub measured_to_secs: f64,
    /// Goodput over the measurement, Mbit/s (10^6 bit/s) of application bytes. Bytes that
    /// had already crossed the links when the measurement started (the receiver's backlog
    /// and the bytes in flight) do not count.
    pub goodput_mbit: f64,
    /// What the links could carry over the measurement after framing, Mbit/s.
    pub capacity_mbit: f64,
    /// `goodput_mbit / capacity_mbit`.
    pub goodput_ratio: f64,
    /// Framing efficiency used for the capacity: chunk / (chunk + data header).
    pub framing_efficiency: f64,
    /// Lowest goodput over any 1 s window inside the measurement (on a 10 ms grid), Mbit/s:
    /// application bytes that crossed the links in the window (deliveries corrected for the
    /// backlog at both ends, so a reorder buffer filling or emptying does not distort it).
    pub min_1s_goodput_mbit: Option<f64>,
    /// Lowest ratio of that goodput to the window's capacity.
    pub min_1s_ratio: Option<f64>,
    /// Longest time without in-order delivery between the first and the last byte, ms.
    pub longest_stall_ms: f64,
    /// When that stall started.
    pub longest_stall_at_secs: f64,
    /// Recovery after each scripted death.
    pub deaths: Vec<DeathRecovery>,
    /// Reader pauses (`stop-reading` … `resume-reading`).
    pub pauses: Vec<PauseReport>,
    /// Peak bytes the receiver held (engine stats).
    pub recv_buffered_peak: u64,
    /// The receiver's window.
    pub recv_window: u64,
    /// Peak bytes the sender held (engine stats).
    pub send_buffered_peak: u64,
    /// The sender's limit.
    pub send_buffer: u64,
    /// Payload bytes the sender sent more than once.
    pub bytes_resent: u64,
}

/// How delivery recovered after a scripted link death.
#[derive(Clone, Debug, Serialize)]
#[non_exhaustive]
pub struct DeathRecovery {
    /// The link that died.
    pub link: String,
    /// `silent-death` or `loud-death`.
    pub kind: String,
    /// When.
    pub at_secs: f64,
    /// Longest gap in in-order delivery overlapping the 1 s after the death (counted from the
    /// death if it began before), ms.
    pub stall_ms: Option<f64>,
    /// Time from the death until in-order delivery resumed, ms: the end of that gap, or, if
    /// it is shorter than 50 ms (no real stall), the first delivery after the death.
    pub resumed_ms: Option<f64>,
    /// Time from the death until goodput over a 200 ms window first reaches 90% of the
    /// remaining links' capacity, ms. Windows start after delivery resumed, so the burst
    /// that empties the reorder buffer at that instant does not count.
    pub recovered_90_ms: Option<f64>,
}

/// What happened while a reader did not read.
#[derive(Clone, Debug, Serialize)]
#[non_exhaustive]
pub struct PauseReport {
    /// When the reader stopped.
    pub from_secs: f64,
    /// When it resumed (or the run ended).
    pub to_secs: f64,
    /// Application bytes the sender's engine accepted during the pause.
    pub written_while_stopped: u64,
    /// Most bytes written but not yet read during the pause (the engine's two buffers and
    /// the links' must hold them).
    pub outstanding_max: u64,
    /// Bytes that crossed the links in the data direction during the second half of the pause.
    pub wire_bytes_second_half: u64,
}

/// One link incarnation.
#[derive(Clone, Debug, Serialize)]
#[non_exhaustive]
pub struct LinkReport {
    /// Name.
    pub name: String,
    /// Rates A→B, B→A at the end, Mbit/s.
    pub rate_mbit: [f64; 2],
    /// Bytes put on the wire A→B, B→A.
    pub wire_bytes: [u64; 2],
    /// Share of each direction's wire bytes over all links.
    pub share: [f64; 2],
    /// When it joined.
    pub joined_secs: Option<f64>,
    /// When and how it ended, if it did.
    pub ended: Option<String>,
}

/// One side's engine counters at the end of a run (from `ConnectionStats`).
#[derive(Clone, Debug, Serialize)]
#[non_exhaustive]
pub struct EngineCounters {
    /// Application bytes written.
    pub bytes_written: u64,
    /// Application bytes acknowledged by the peer.
    pub bytes_acked: u64,
    /// Payload bytes sent more than once.
    pub bytes_resent: u64,
    /// Application bytes delivered to the reader.
    pub bytes_read: u64,
    /// Duplicate payload bytes received and dropped.
    pub bytes_duplicate: u64,
    /// Bytes the sender still holds.
    pub send_buffered: u64,
    /// Bytes the receiver still holds.
    pub recv_buffered: u64,
    /// Links that died.
    pub links_died: u64,
}

/// Speed of the simulator for this run.
#[derive(Clone, Debug, Serialize)]
#[non_exhaustive]
pub struct SimSpeed {
    /// Events processed.
    pub events: u64,
    /// Virtual time simulated, s.
    pub virtual_secs: f64,
    /// Wall time, s.
    pub wall_secs: f64,
}

impl Report {
    /// The direction report for `a-to-b` or `b-to-a`.
    pub fn direction(&self, name: &str) -> Option<&DirectionReport> {
        self.directions.iter().find(|d| d.direction == name)
    }
}

fn ms(v: Option<f64>) -> String {
    v.map_or("-".to_string(), |v| format!("{v:.0}"))
}

fn size(b: u64) -> String {
    if b >= 10_000_000 {
        format!("{:.0}M", b as f64 / 1e6)
    } else if b >= 10_000 {
        format!("{:.0}k", b as f64 / 1e3)
    } else {
        format!("{b}")
    }
}

/// The human table: one row per run and direction.
pub fn table(reports: &[Report]) -> String {
    let headers = [
        "scenario",
        "seed",
        "dir",
        "ok",
        "done s",
        "goodput",
        "ratio",
        "min1s",
        "stall ms",
        "death→resume ms",
        "→90% ms",
        "recv peak",
        "send peak",
        "resent",
        "link shares %",
        "wall s",
    ];
    let mut rows: Vec<Vec<String>> = Vec::new();
    for r in reports {
        for (i, d) in r.directions.iter().enumerate() {
            let dir_index = usize::from(d.direction == "b-to-a");
            let shares: Vec<String> = r
                .links
                .iter()
                .take(8)
                .map(|l| format!("{:.0}", l.share[dir_index] * 100.0))
                .collect();
            let mut shares = shares.join("/");
            if r.links.len() > 8 {
                shares.push_str("/…");
            }
            let resume = if d.deaths.is_empty() {
                "-".to_string()
            } else {
                d.deaths
                    .iter()
                    .map(|x| ms(x.resumed_ms))
                    .collect::<Vec<_>>()
                    .join(",")
            };
            let rec = if d.deaths.is_empty() {
                "-".to_string()
            } else {
                d.deaths
                    .iter()
                    .map(|x| ms(x.recovered_90_ms))
                    .collect::<Vec<_>>()
                    .join(",")
            };
            rows.push(vec![
                if i == 0 {
                    r.scenario.clone()
                } else {
                    String::new()
                },
                r.seed.to_string(),
                match d.direction.as_str() {
                    "a-to-b" => "a→b".into(),
                    _ => "b→a".into(),
                },
                if r.ok { "ok".into() } else { "FAIL".into() },
                d.completion_secs.map_or("-".into(), |t| format!("{t:.2}")),
                format!("{:.1}", d.goodput_mbit),
                format!("{:.3}", d.goodput_ratio),
                d.min_1s_ratio.map_or("-".into(), |v| format!("{v:.3}")),
                format!("{:.0}", d.longest_stall_ms),
                resume,
                rec,
                format!("{}/{}", size(d.recv_buffered_peak), size(d.recv_window)),
                format!("{}/{}", size(d.send_buffered_peak), size(d.send_buffer)),
                size(d.bytes_resent),
                shares,
                format!("{:.2}", r.sim.wall_secs),
            ]);
        }
        if r.directions.is_empty() {
            let mut row = vec![
                r.scenario.clone(),
                r.seed.to_string(),
                "-".into(),
                "FAIL".into(),
            ];
            row.resize(headers.len(), "-".into());
            rows.push(row);
        }
    }
    let mut widths: Vec<usize> = headers.iter().map(|h| h.chars().count()).collect();
    for row in &rows {
        for (w, c) in widths.iter_mut().zip(row) {
            *w = (*w).max(c.chars().count());
        }
    }
    let mut out = String::new();
    let line = |out: &mut String, cells: &[String]| {
        for (i, (c, w)) in cells.iter().zip(&widths).enumerate() {
            let pad = w - c.chars().count();
            if i > 0 {
                out.push_str("  ");
            }
            if i < 4 || i == 14 {
                out.push_str(c);
                out.push_str(&" ".repeat(pad));
            } else {
                out.push_str(&" ".repeat(pad));
                out.push_str(c);
            }
        }
        while out.ends_with(' ') {
            out.pop();
        }
        out.push('\n');
    };
    line(&mut out, &headers.map(String::from));
    for row in &rows {
        line(&mut out, row);
    }
    for r in reports {
        for v in &r.violations {
            let _ = writeln!(out, "{} seed {}: {v}", r.scenario, r.seed);
        }
        if r.false_deaths > 0 {
            let _ = writeln!(
                out,
                "{} seed {}: {} working link(s) declared dead by the engine",
                r.scenario, r.seed, r.false_deaths
            );
        }
    }
    out
}
