//! `braid sim`: run a scenario file in the simulator and print its figures.

use anyhow::Context as _;
use braid_sim::{Report, Scenario};

/// The scenario `braid demo` runs until the real runtime demo exists.
const DEMO: &str = include_str!("../../../scenarios/demo.toml");

/// Arguments of `braid sim`.
#[derive(clap::Args, Debug)]
pub struct SimArgs {
    /// Scenario file (TOML, see docs/SIMULATOR.md); without it, the built-in demo scenario
    /// (three links, the fastest dies silently and returns).
    pub scenario: Option<std::path::PathBuf>,
    /// Print the figures as JSON instead of a table.
    #[arg(long)]
    pub json: bool,
    /// Run these seeds instead of the file's (repeatable).
    #[arg(long = "seed", value_name = "N")]
    pub seeds: Vec<u64>,
}

/// Runs `braid sim`.
pub fn run(args: SimArgs) -> anyhow::Result<()> {
    let mut scenario = match &args.scenario {
        Some(path) => {
            Scenario::from_file(path).with_context(|| format!("scenario {}", path.display()))?
        }
        None => builtin()?,
    };
    if !args.seeds.is_empty() {
        scenario.seed = args.seeds;
    }
    let reports = braid_sim::run_all(&scenario)?;
    print(&reports, args.json)
}

/// Runs the built-in demo scenario (three links, the fastest dies and returns).
#[allow(
    dead_code,
    reason = "`braid demo` until the live demo replaces it; `braid sim` without a file stays"
)]
pub fn demo() -> anyhow::Result<()> {
    run(SimArgs {
        scenario: None,
        json: false,
        seeds: Vec::new(),
    })
}

fn builtin() -> anyhow::Result<Scenario> {
    let mut scenario = Scenario::from_toml(DEMO).context("built-in demo scenario")?;
    scenario.name.get_or_insert_with(|| "demo".into());
    crate::common::write_stderr(format_args!(
        "braid: simulating the built-in scenario: {}\n",
        scenario.description.as_deref().unwrap_or("demo")
    ));
    Ok(scenario)
}

fn print(reports: &[Report], json: bool) -> anyhow::Result<()> {
    let text = if json {
        serde_json::to_string_pretty(reports)? + "\n"
    } else {
        braid_sim::table(reports)
    };
    crate::common::write_stdout(format_args!("{text}"))?;
    let failed = reports.iter().filter(|r| !r.ok).count();
    if failed > 0 {
        anyhow::bail!(
            "{failed} of {} run(s) did not deliver every byte correctly",
            reports.len()
        );
    }
    Ok(())
}
