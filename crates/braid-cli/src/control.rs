//! The local control socket: `braid links add|list|remove` talk to a running `connect`/`serve`.
//!
//! Protocol: one request line (`list`, `add SPEC`, `remove ID`), then the answer until EOF;
//! its first line is `ok` or `error: ...`.
//!
//! Only this user (and root) may use it: `add exec:COMMAND` runs a command. The socket is
//! mode 0600 in a 0700 directory by default, and whoever connects is checked by uid
//! (`SO_PEERCRED`) whatever the socket's mode (`--control PATH` in a shared directory, the
//! moment between bind and chmod).

use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};

use anyhow::Context as _;
use braid::ConnectionHandle;
use braid::proto::agg::LinkId;
use braid::server::ListenerControl;
use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::net::{UnixListener, UnixStream};

use crate::common::runtime_dir;

/// What a control socket manages.
pub enum Target {
    Client(ConnectionHandle),
    Server(ListenerControl),
}

/// Removes the socket file when the command ends.
pub struct ControlGuard(PathBuf, tokio::task::JoinHandle<()>);

impl Drop for ControlGuard {
    fn drop(&mut self) {
        self.1.abort();
        let _ = std::fs::remove_file(&self.0);
    }
}

pub async fn serve_control(
    path: Option<PathBuf>,
    kind: &str,
    target: Target,
) -> anyhow::Result<ControlGuard> {
    let path = match path {
        Some(p) => p,
        None => runtime_dir()?.join(format!("{kind}-{}.sock", std::process::id())),
    };
    // Never deletes a file that is not a stale socket, nor another braid's live one.
    braid::transport::free_unix_path(&path)
        .with_context(|| format!("control socket {}", path.display()))?;
    let uid = braid::transport::process_uid().context("finding this user's uid")?;
    let listener =
        UnixListener::bind(&path).with_context(|| format!("control socket {}", path.display()))?;
    if let Err(e) = std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o600)) {
        let _ = std::fs::remove_file(&path);
        return Err(e).with_context(|| format!("control socket {}", path.display()));
    }
    tracing::info!(
        "control socket: {} (braid links --control {} list)",
        path.display(),
        path.display()
    );
    let target = std::sync::Arc::new(target);
    let task = tokio::spawn(async move {
        while let Ok((sock, _)) = listener.accept().await {
            let target = target.clone();
            let refusal = match sock.peer_cred().map(|c| c.uid()) {
                Ok(peer) if peer == uid || peer == 0 => None,
                Ok(peer) => Some(format!("uid {peer}")),
                Err(_) => Some("an unknown uid".to_string()),
            }
            .map(|who| {
                tracing::warn!("control socket: refused {who}");
                format!("{who} may not use the control socket of uid {uid}")
            });
            tokio::spawn(async move {
                let _ = handle(sock, &target, refusal).await;
            });
        }
    });
    Ok(ControlGuard(path, task))
}

/// Reads one request and answers it, or with `refusal` when the peer may not ask.
async fn handle(sock: UnixStream, target: &Target, refusal: Option<String>) -> std::io::Result<()> {
    let (r, mut w) = sock.into_split();
    let mut line = String::new();
    BufReader::new(r.take(4096)).read_line(&mut line).await?;
    let answer = match refusal {
        Some(why) => format!("error: {why}\n"),
        None => match answer(line.trim(), target).await {
            Ok(text) => format!("ok\n{text}"),
            Err(e) => format!("error: {e:#}\n"),
        },
    };
    w.write_all(answer.as_bytes()).await?;
    w.shutdown().await
}

fn list_links(h: &ConnectionHandle, prefix: &str, out: &mut String) {
    let c = h.stats();
    tracing::debug!(
        "connection {}: written {} acked {} read {} send-buffered {} recv-buffered {} resent {}",
        h.id(),
        c.bytes_written,
        c.bytes_acked,
        c.bytes_read,
        c.send_buffered,
        c.recv_buffered,
        c.bytes_resent
    );
    for l in h.links() {
        let s = &l.stats;
        out.push_str(&format!(
            "{prefix}{:<4} {:<32} sent {:>12} recv {:>12} rate {:>8.2} MB/s rtt {:>7.2} ms (min {:.2}) in flight {:>9} {}\n",
            l.id.0,
            l.peer,
            s.bytes_sent,
            s.bytes_received,
            s.rate / 1e6,
            s.srtt.as_secs_f64() * 1e3,
            s.min_rtt.as_secs_f64() * 1e3,
            s.in_flight,
            l.spec.map(|s| s.to_string()).unwrap_or_default()
        ));
    }
}

fn parse_link(s: &str) -> anyhow::Result<LinkId> {
    let n = s.trim_start_matches("link#");
    Ok(LinkId(n.parse().context(
        "a link id is a number (see `braid links list`)",
    )?))
}

async fn answer(req: &str, target: &Target) -> anyhow::Result<String> {
    let (cmd, arg) = req.split_once(' ').unwrap_or((req, ""));
    let arg = arg.trim();
    let mut out = String::new();
    match (cmd, target) {
        ("list", Target::Client(h)) => list_links(h, "", &mut out),
        ("list", Target::Server(c)) => {
            for l in c.local_specs() {
                out.push_str(&format!("listening {l}\n"));
            }
            for h in c.connections() {
                list_links(&h, &format!("{}/", h.id()), &mut out);
            }
        }
        ("add", Target::Client(h)) => {
            h.add_link(arg.parse()?)?;
            out.push_str(&format!("dialling {arg}\n"));
        }
        ("add", Target::Server(c)) => {
            let local = c.add_listener(&arg.parse()?).await?;
            out.push_str(&format!("listening {local}\n"));
        }
        ("remove", Target::Client(h)) => {
            h.remove_link(parse_link(arg)?)?;
            out.push_str(&format!("removing {arg}\n"));
        }
        ("remove", Target::Server(c)) => {
            let (conn, link) = arg
                .split_once('/')
                .context("on a server a link is CONNECTION/LINK (see `braid links list`)")?;
            let link = parse_link(link)?;
            let h = c
                .connections()
                .into_iter()
                .find(|h| h.id().to_string() == conn)
                .context("no such connection")?;
            h.remove_link(link)?;
            out.push_str(&format!("removing {arg}\n"));
        }
        _ => anyhow::bail!("unknown request {req:?} (list, add SPEC, remove ID)"),
    }
    Ok(out)
}

/// Arguments of `braid links`.
#[derive(clap::Args, Debug)]
pub struct LinksArgs {
    /// Control socket of the running braid (default: the only one in the XDG runtime dir).
    #[arg(long, value_name = "PATH", global = true)]
    pub control: Option<PathBuf>,
    #[command(subcommand)]
    pub cmd: LinksCmd,
}

/// `braid links` subcommands.
#[derive(clap::Subcommand, Debug)]
pub enum LinksCmd {
    /// List links with their counters.
    List,
    /// Add a link (`braid connect`: a link spec to dial; `braid serve`: a listen spec).
    Add {
        /// The spec.
        spec: String,
    },
    /// Remove a link gracefully (`ID` from `list`; on a server `CONNECTION/ID`).
    Remove {
        /// The link.
        id: String,
    },
}

fn find_socket(dir: &Path) -> anyhow::Result<PathBuf> {
    let socks: Vec<PathBuf> = std::fs::read_dir(dir)
        .with_context(|| format!("no running braid ({} missing)", dir.display()))?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.extension().is_some_and(|e| e == "sock"))
        .collect();
    match socks.as_slice() {
        [one] => Ok(one.clone()),
        [] => anyhow::bail!("no running braid (no control socket in {})", dir.display()),
        many => anyhow::bail!(
            "several braids are running; pick one with --control: {}",
            many.iter()
                .map(|p| p.display().to_string())
                .collect::<Vec<_>>()
                .join(", ")
        ),
    }
}

pub fn run(args: LinksArgs) -> anyhow::Result<()> {
    let path = match args.control {
        Some(p) => p,
        None => find_socket(&runtime_dir()?)?,
    };
    let req = match &args.cmd {
        LinksCmd::List => "list".to_string(),
        LinksCmd::Add { spec } => format!("add {spec}"),
        LinksCmd::Remove { id } => format!("remove {id}"),
    };
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    let text = rt.block_on(async {
        let mut s = UnixStream::connect(&path)
            .await
            .with_context(|| format!("connecting to {}", path.display()))?;
        s.write_all(format!("{req}\n").as_bytes()).await?;
        let mut text = String::new();
        s.read_to_string(&mut text).await?;
        anyhow::Ok(text)
    })?;
    match text.strip_prefix("ok\n") {
        Some(rest) => crate::common::write_stdout(format_args!("{rest}")),
        None => anyhow::bail!("{}", text.trim().trim_start_matches("error: ")),
    }
}
