//! `braid sim`: run a scenario file in the simulator.

/// Arguments of `braid sim`.
#[derive(clap::Args, Debug)]
pub struct SimArgs {
    /// Scenario file (TOML).
    pub scenario: std::path::PathBuf,
    /// Print the figures as JSON instead of a table.
    #[arg(long)]
    pub json: bool,
}

/// Runs `braid sim`.
pub fn run(_args: SimArgs) -> anyhow::Result<()> {
    anyhow::bail!("the simulator is not built yet")
}

/// Runs the built-in demo scenario.
pub fn demo() -> anyhow::Result<()> {
    anyhow::bail!("the demo is not built yet")
}
