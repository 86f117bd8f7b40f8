//! The simulator's speed: a simulated 1 GB transfer over 8 links must take at most 10 s of
//! wall time in release. Run with `cargo bench -p braid-sim`; exits non-zero over budget.

use std::time::{Duration, Instant};

const SCENARIO: &str = include_str!("../../../scenarios/bench-1gb.toml");
const BUDGET: Duration = Duration::from_secs(10);

fn main() {
    // `cargo test --benches` runs this too; a quick pass is enough there.
    let quick = std::env::args().all(|a| a != "--bench");
    let mut scenario = braid_sim::Scenario::from_toml(SCENARIO).expect("bench scenario");
    if quick {
        scenario.transfer.size = braid_sim::units::ByteSize(10_000_000);
    }
    let started = Instant::now();
    let reports = braid_sim::run_all(&scenario).expect("valid scenario");
    let wall = started.elapsed();
    eprint!("{}", braid_sim::table(&reports));
    let r = &reports[0];
    let mb = r.directions[0].size as f64 / 1e6;
    println!(
        "sim_speed: {mb:.0} MB over {} links in {:.2} s wall ({:.0} simulated MB/s, {} events, \
         {:.1} s virtual)",
        r.links.len(),
        wall.as_secs_f64(),
        mb / wall.as_secs_f64(),
        r.sim.events,
        r.sim.virtual_secs
    );
    if !r.ok {
        eprintln!("sim_speed: the run failed: {:?}", r.violations);
        std::process::exit(1);
    }
    if !quick && wall > BUDGET {
        eprintln!("sim_speed: over the {BUDGET:?} budget");
        std::process::exit(1);
    }
}
