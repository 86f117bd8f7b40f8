//! Shared helpers of the simulator tests: scenario loading, the figures table, random
//! schedules.
#![allow(dead_code)]

use std::io::Write as _;
use std::path::PathBuf;
use std::time::Duration;

use braid_sim::scenario::{Direction, EventKind, EventSpec, LinkRef, LinkSpec, TransferSpec};
use braid_sim::units::{BitRate, ByteSize, Span};
use braid_sim::{Report, Scenario};
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;

/// A scenario from the repository's `scenarios/` directory. Debug builds divide the transfer
/// size by `debug_divisor` to keep `cargo test` quick; CI runs in release at full size.
pub fn scenario(name: &str, debug_divisor: u64) -> Scenario {
    let path = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("../../scenarios")
        .join(name);
    let mut s = Scenario::from_file(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    if cfg!(debug_assertions) {
        s.transfer.size = ByteSize(s.transfer.size.0 / debug_divisor);
    }
    s
}

/// Runs every seed of `s` and prints the figures table on stderr (written to the stream
/// directly, so it shows with or without `--nocapture`).
pub fn run(s: &Scenario) -> Vec<Report> {
    let reports = braid_sim::run_all(s).expect("valid scenario");
    show(&reports);
    reports
}

/// Prints the table on stderr, bypassing the test harness's capture.
pub fn show(reports: &[Report]) {
    let mut err = std::io::stderr().lock();
    let _ = writeln!(err, "\n{}", braid_sim::table(reports));
}

/// Proptest settings for simulator properties: `cases` cases from a fixed RNG seed, so CI
/// runs the same random schedules every time (no flaky failures); set `PROPTEST_RNG_SEED=<n>`
/// to explore others.
pub fn proptest_config(cases: u32) -> proptest::test_runner::Config {
    let d = proptest::test_runner::Config::default();
    let rng_seed = if std::env::var_os("PROPTEST_RNG_SEED").is_some() {
        d.rng_seed
    } else {
        proptest::test_runner::RngSeed::Fixed(0x00b2_a1d5)
    };
    proptest::test_runner::Config {
        cases,
        rng_seed,
        ..d
    }
}

/// The same scenario with `jitter` on every link, run for `seeds` (the seed drives the
/// jitter, so each seed is a different run).
pub fn with_jitter(mut s: Scenario, jitter: Duration, seeds: &[u64]) -> Scenario {
    for l in &mut s.link {
        l.jitter = Some(Span(jitter));
    }
    s.seed = seeds.to_vec();
    s.name = Some(format!("{}+jitter", s.display_name()));
    s
}

/// Every byte arrived once, in order, and the buffers kept to their limits.
pub fn assert_exact(r: &Report) {
    assert!(r.ok, "{} seed {}: {:?}", r.scenario, r.seed, r.violations);
    for d in &r.directions {
        assert_eq!(
            d.delivered, d.size,
            "{} seed {} {}",
            r.scenario, r.seed, d.direction
        );
        assert!(
            d.recv_buffered_peak <= d.recv_window,
            "{} seed {} {}: receiver held {} bytes, window {}",
            r.scenario,
            r.seed,
            d.direction,
            d.recv_buffered_peak,
            d.recv_window
        );
        assert!(
            d.send_buffered_peak <= d.send_buffer,
            "{} seed {} {}: sender held {} bytes, limit {}",
            r.scenario,
            r.seed,
            d.direction,
            d.send_buffered_peak,
            d.send_buffer
        );
    }
}

fn rate(rng: &mut ChaCha8Rng, lo: f64, hi: f64) -> BitRate {
    // Log-uniform, rounded to 0.1 Mbit/s.
    let v = (lo.ln() + rng.random::<f64>() * (hi.ln() - lo.ln())).exp();
    BitRate::mbit((v * 10.0).round().max(1.0) / 10.0)
}

fn ms(rng: &mut ChaCha8Rng, lo: u64, hi: u64) -> Duration {
    Duration::from_millis(rng.random_range(lo..=hi))
}

/// A random schedule: 2 to 5 links of 1 to 50 Mbit/s and 1 to 80 ms (some asymmetric, some
/// jittery, some joining late), and up to 10 events among deaths (loud and silent), returns,
/// rate and delay changes, both directions at once. Link 0 never dies, so the transfer can
/// always finish.
pub fn random_schedule(seed: u64, size: u64) -> Scenario {
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    let n = rng.random_range(2..=5usize);
    let mut links = Vec::new();
    for i in 0..n {
        let mut l = LinkSpec::new(rate(&mut rng, 1.0, 50.0), ms(&mut rng, 1, 80));
        if rng.random_bool(0.3) {
            l.rate_back = Some(rate(&mut rng, 1.0, 50.0));
        }
        if rng.random_bool(0.2) {
            l.delay_back = Some(Span(ms(&mut rng, 1, 80)));
        }
        if rng.random_bool(0.3) {
            l.jitter = Some(Span(ms(&mut rng, 1, 10)));
        }
        l.buffer = ByteSize(rng.random_range(16..=256u64) * 1024);
        if i > 0 && rng.random_bool(0.2) {
            l.join = Some(Span(ms(&mut rng, 100, 2000)));
        }
        links.push(l);
    }
    let mut events = Vec::new();
    let mut dead = vec![false; n];
    let mut t = 0u64;
    for _ in 0..rng.random_range(0..=10) {
        t += rng.random_range(50..=700);
        let link = rng.random_range(0..n);
        let at = Duration::from_millis(t);
        let lr = Some(LinkRef::Index(link));
        let e = match rng.random_range(0..5) {
            0 | 1 if link > 0 && !dead[link] => {
                dead[link] = true;
                let kind = if rng.random_bool(0.5) {
                    EventKind::SilentDeath
                } else {
                    EventKind::LoudDeath
                };
                EventSpec::new(at, kind, lr)
            }
            _ if dead[link] => {
                dead[link] = false;
                let mut e = EventSpec::new(at, EventKind::Return, lr);
                if rng.random_bool(0.5) {
                    e.rate = Some(rate(&mut rng, 1.0, 50.0));
                }
                e
            }
            2 | 3 => {
                let mut e = EventSpec::new(at, EventKind::Rate, lr);
                e.rate = Some(rate(&mut rng, 0.5, 50.0));
                if rng.random_bool(0.3) {
                    e.rate_back = Some(rate(&mut rng, 0.5, 50.0));
                }
                e
            }
            _ => {
                let mut e = EventSpec::new(at, EventKind::Delay, lr);
                e.delay = Some(Span(ms(&mut rng, 1, 120)));
                e
            }
        };
        events.push(e);
    }
    Scenario {
        name: Some(format!("random-{seed}")),
        description: None,
        seed: vec![seed],
        max_time: Span::secs(300),
        stall_limit: Span::secs(30),
        measure_from: Span::secs(1),
        segment: ByteSize(16 * 1024),
        engine: Default::default(),
        engine_b: None,
        transfer: TransferSpec {
            size: ByteSize(size),
            direction: Direction::Both,
            read_rate: None,
        },
        link: links,
        event: events,
    }
}
