//! The `braid` command. Thin: all logic lives in the libraries.

use clap::{Parser, Subcommand};

mod sim;

/// braid: many network links, one fast unbreakable connection.
#[derive(Parser, Debug)]
#[command(name = "braid", version, about)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand, Debug)]
enum Command {
    /// A local demo over several links.
    Demo,
    /// Run a link scenario in the simulator and print its figures.
    Sim(sim::SimArgs),
}

fn main() {
    let cli = Cli::parse();
    let result = match cli.command {
        Command::Demo => sim::demo(),
        Command::Sim(args) => sim::run(args),
    };
    if let Err(e) = result {
        eprintln!("braid: {e:#}");
        std::process::exit(1);
    }
}
