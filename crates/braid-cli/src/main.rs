//! The `braid` command. Thin: all logic lives in the libraries.

use clap::{Parser, Subcommand};

/// `println!`, but it returns `anyhow::Result<()>`: a closed stdout is an error
/// ([`common::StdoutClosed`]) where `println!` panics.
macro_rules! outln {
    () => {
        $crate::common::write_stdout(format_args!("\n"))
    };
    ($($arg:tt)*) => {
        $crate::common::write_stdout(format_args!("{}\n", format_args!($($arg)*)))
    };
}

mod common;
mod connect;
mod control;
mod demo;
mod serve;
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
    /// A local demo: a server and a client over 4 rate-limited loopback links, one killed and
    /// restored mid-transfer.
    Demo(demo::DemoArgs),
    /// Run a link scenario in the simulator and print its figures.
    Sim(sim::SimArgs),
    /// Accept links; serve each connection's streams by service name on this one port
    /// (`forward`: each stream becomes a TCP connection to the --forward target).
    Serve(serve::ServeArgs),
    /// Bridge stdin/stdout over one aggregated connection, as one `forward` stream (e.g. as
    /// ssh ProxyCommand).
    Connect(connect::ConnectArgs),
    /// Write a new random key to FILE (mode 0600).
    Keygen {
        /// Where to write it (must not exist).
        file: std::path::PathBuf,
    },
    /// Add, list or remove links of a running `braid connect` or `braid serve`.
    Links(control::LinksArgs),
}

fn main() {
    let cli = Cli::parse();
    let result = match cli.command {
        Command::Demo(args) => demo::run(args),
        Command::Sim(args) => sim::run(args),
        Command::Serve(args) => serve::run(args),
        Command::Connect(args) => connect::run(args),
        Command::Keygen { file } => common::keygen(&file),
        Command::Links(args) => control::run(args),
    };
    if let Err(e) = result {
        if e.downcast_ref::<common::StdoutClosed>().is_some() {
            return;
        }
        common::write_stderr(format_args!("braid: {e:#}\n"));
        std::process::exit(1);
    }
}
