//! The `braid` command.

fn main() {
    eprintln!("braid: nothing here yet");
    std::process::exit(2);
}
