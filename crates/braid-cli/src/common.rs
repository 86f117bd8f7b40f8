//! What several commands share: keys, logging, the tokio runtime.

use std::path::{Path, PathBuf};

use anyhow::Context as _;
use braid::secure::{Key, Security};

/// Key and security flags of `serve` and `connect`.
#[derive(clap::Args, Debug, Clone)]
pub struct SecurityArgs {
    /// File holding the shared key (make one with `braid keygen FILE`). Without it the
    /// BRAID_KEY environment variable (64 hex digits) is used.
    #[arg(long, value_name = "FILE")]
    pub key_file: Option<PathBuf>,
    /// Send link traffic unencrypted (each link is still authenticated by the key).
    #[arg(long)]
    pub insecure_plaintext: bool,
    /// With --insecure-plaintext: CRC32C every chunk, both ways (for paths that may corrupt
    /// data past TCP's checksum; encrypted links authenticate every message anyway).
    #[arg(long, requires = "insecure_plaintext")]
    pub checksum: bool,
}

impl SecurityArgs {
    pub fn security(&self) -> Security {
        if self.insecure_plaintext {
            Security::Plaintext
        } else {
            Security::Encrypted
        }
    }

    /// Flag, then environment, then the default key file; `create` makes the default one.
    pub fn key(&self, create: bool) -> anyhow::Result<Key> {
        if let Some(f) = &self.key_file {
            return Ok(Key::read_file(f)?);
        }
        if let Ok(hex) = std::env::var("BRAID_KEY") {
            return Key::from_hex(&hex).context("BRAID_KEY");
        }
        let path = default_key_path();
        if path.exists() {
            return Ok(Key::read_file(&path)?);
        }
        if create {
            let key = Key::generate();
            key.write_new(&path)?;
            write_stderr(format_args!(
                "braid: created a new key in {p}\n\
                 braid: clients need it too: copy that file and run `braid connect --key-file FILE ...`,\n\
                 braid: or set BRAID_KEY=$(cat {p}) in their environment\n",
                p = path.display()
            ));
            return Ok(key);
        }
        anyhow::bail!(
            "no key: pass --key-file FILE or set BRAID_KEY (make a key with `braid keygen FILE`; \
             `braid serve` creates {} when run without one)",
            path.display()
        )
    }
}

/// `$XDG_CONFIG_HOME/braid/key`, or `~/.config/braid/key`.
pub fn default_key_path() -> PathBuf {
    config_dir().join("braid").join("key")
}

fn config_dir() -> PathBuf {
    if let Some(d) = std::env::var_os("XDG_CONFIG_HOME").filter(|d| !d.is_empty()) {
        return PathBuf::from(d);
    }
    let home = std::env::var_os("HOME").unwrap_or_else(|| "/".into());
    PathBuf::from(home).join(".config")
}

/// `$XDG_RUNTIME_DIR/braid`, or `braid-UID` under the temp dir: made if missing, and refused
/// unless it is a directory only this user can use (in a shared /tmp, another user could
/// have made it first, to hijack or spoof the control sockets in it).
pub fn runtime_dir() -> anyhow::Result<PathBuf> {
    let dir = match std::env::var_os("XDG_RUNTIME_DIR").filter(|d| !d.is_empty()) {
        Some(d) => PathBuf::from(d).join("braid"),
        None => {
            let uid = braid::transport::process_uid().context("finding this user's uid")?;
            std::env::temp_dir().join(format!("braid-{uid}"))
        }
    };
    braid::transport::private_dir(&dir).with_context(|| {
        format!(
            "control socket directory {} (set XDG_RUNTIME_DIR or pass --control PATH)",
            dir.display()
        )
    })?;
    Ok(dir)
}

/// The reader of stdout went away (`braid demo | head -1`): the command stops there, and
/// `main` exits 0 without a word, as `head` asked for no more.
#[derive(Debug)]
pub struct StdoutClosed;

impl std::fmt::Display for StdoutClosed {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("stdout closed")
    }
}

impl std::error::Error for StdoutClosed {}

/// Writes to stdout and flushes, what `print!` does, but a closed stdout is [`StdoutClosed`]
/// rather than a panic (use `outln!`).
pub fn write_stdout(text: std::fmt::Arguments<'_>) -> anyhow::Result<()> {
    use std::io::Write as _;
    let mut out = std::io::stdout().lock();
    match out.write_fmt(text).and_then(|()| out.flush()) {
        Err(e) if e.kind() == std::io::ErrorKind::BrokenPipe => Err(StdoutClosed.into()),
        r => r.context("writing to stdout"),
    }
}

/// Writes a message to stderr; one nobody can read (stderr a closed pipe) is dropped, where
/// `eprintln!` panics.
pub fn write_stderr(text: std::fmt::Arguments<'_>) {
    use std::io::Write as _;
    let _ = std::io::stderr().lock().write_fmt(text);
}

pub fn keygen(file: &Path) -> anyhow::Result<()> {
    Key::generate().write_new(file)?;
    write_stderr(format_args!(
        "braid: wrote a new key to {}\n",
        file.display()
    ));
    Ok(())
}

/// Logs to stderr; `RUST_LOG` overrides `default`.
pub fn init_logging(default: &str) {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(default));
    let _ = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .try_init();
}

pub fn runtime() -> anyhow::Result<tokio::runtime::Runtime> {
    Ok(tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?)
}

/// Completes when the process is asked to stop (SIGINT or SIGTERM), so that a command can end
/// like it does on its own: its control socket removed, its connections told.
pub async fn terminated() {
    use tokio::signal::unix::{SignalKind, signal};
    let (Ok(mut int), Ok(mut term)) = (
        signal(SignalKind::interrupt()),
        signal(SignalKind::terminate()),
    ) else {
        return std::future::pending().await;
    };
    tokio::select! {
        _ = int.recv() => {}
        _ = term.recv() => {}
    }
}
