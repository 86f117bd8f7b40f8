//! A deterministic, seedable, virtual-time network simulator for braid's aggregation engine.
//!
//! ```text
//!          side A                       links                      side B
//!  ┌───────────────────┐   ┌───────────────────────────────┐   ┌───────────────────┐
//!  │ writer (pattern)  │   │ A→B: buffer ▸ rate ▸ delay    │   │ reader (verifies) │
//!  │ Connection        │◀─▶│ B→A: buffer ▸ rate ▸ delay    │◀─▶│ Connection        │
//!  │ reader (verifies) │   │ … joins, deaths, rate changes │   │ writer (pattern)  │
//!  └───────────────────┘   └───────────────────────────────┘   └───────────────────┘
//! ```
//!
//! A [`Scenario`] (a small TOML file, see `docs/SIMULATOR.md`) describes the links, timed
//! events, engine settings and the transfer; [`run`] plays it for one seed in virtual time
//! and returns a [`Report`]: goodput against what the links could carry, stalls, recovery
//! after link deaths, peak buffers, resent bytes, per-link shares. [`table`] prints reports
//! as a human table; `Report` serializes to JSON.
//!
//! Every byte the reader gets is checked against the writer's deterministic pattern, so a
//! run also proves exact delivery: nothing lost, duplicated or reordered.
//!
//! ```no_run
//! let scenario = braid_sim::Scenario::from_toml(r#"
//!     [transfer]
//!     size = "10MB"
//!     [[link]]
//!     rate = "40Mbit"
//!     delay = "5ms"
//!     [[link]]
//!     rate = "10Mbit"
//!     delay = "40ms"
//! "#)?;
//! let reports = braid_sim::run_all(&scenario)?;
//! print!("{}", braid_sim::table(&reports));
//! # Ok::<(), braid_sim::ScenarioError>(())
//! ```
#![warn(missing_docs)]

mod endpoint;
mod measure;
mod pattern;
mod pipe;
mod report;
mod runner;
pub mod scenario;
pub mod units;

#[cfg(test)]
mod fake;
#[cfg(test)]
mod tests;

pub use endpoint::Endpoint;
pub use report::{
    DeathRecovery, DirectionReport, EngineCounters, LinkReport, PauseReport, Report, SimSpeed,
    table,
};
pub use scenario::{Scenario, ScenarioError, Side};

use braid_proto::Time;
use braid_proto::agg::{Config, Connection};

/// Runs `scenario` once with `seed` on braid's engine.
///
/// # Errors
/// [`ScenarioError::Invalid`] if the scenario does not validate.
pub fn run(scenario: &Scenario, seed: u64) -> Result<Report, ScenarioError> {
    run_with(scenario, seed, |_, config, now| {
        Connection::new(config, now)
    })
}

/// Runs `scenario` once for each of its seeds.
///
/// # Errors
/// As [`run`].
pub fn run_all(scenario: &Scenario) -> Result<Vec<Report>, ScenarioError> {
    scenario.seed.iter().map(|&s| run(scenario, s)).collect()
}

/// Runs `scenario` with `seed` on any [`Endpoint`], made by `make` for each side.
///
/// # Errors
/// As [`run`].
pub fn run_with<E: Endpoint>(
    scenario: &Scenario,
    seed: u64,
    make: impl FnMut(Side, Config, Time) -> E,
) -> Result<Report, ScenarioError> {
    let mut sim = runner::Simulation::new(scenario, seed, make)?;
    sim.run();
    Ok(measure::report(&sim))
}
