//! `braid connect`: stdin/stdout over one stream of the `forward` service, in a mux session
//! inside one aggregated connection.

use std::time::Duration;

use anyhow::Context as _;
use braid::client::{ClientConfig, connect, connect_accepting};
use braid::mux::Session;
use braid::service;
use braid::spec::{LinkSpec, ListenSpec};
use braid::transport::LinkListener;
use tokio::io::AsyncWriteExt;

use crate::common::{SecurityArgs, init_logging, runtime};

/// Arguments of `braid connect`.
#[derive(clap::Args, Debug)]
pub struct ConnectArgs {
    /// Links to dial: `tcp://HOST:PORT?bind=IP&dev=IFACE&count=N&recycle=BYTES&cc=NAME`,
    /// `unix:PATH`, `exec:COMMAND ARGS`. A lone `HOST:PORT` means one link per local
    /// interface address (rescanned every 2 s).
    #[arg(value_name = "SPEC", value_parser = parse_spec)]
    pub links: Vec<(String, LinkSpec)>,
    /// Accept links here instead of (or besides) dialling; this side still plays client.
    #[arg(long, value_name = "SPEC")]
    pub listen: Vec<ListenSpec>,
    #[command(flatten)]
    pub security: SecurityArgs,
    /// Control socket (default: in the XDG runtime dir).
    #[arg(long, value_name = "PATH")]
    pub control: Option<std::path::PathBuf>,
}

pub fn run(args: ConnectArgs) -> anyhow::Result<()> {
    init_logging("braid=warn,braid_cli=warn");
    if args.links.is_empty() && args.listen.is_empty() {
        anyhow::bail!("give link specs to dial or --listen SPEC");
    }
    let key = args.security.key(false)?;
    let mut config = ClientConfig::new(key);
    config.security = args.security.security();
    config.engine.crc = args.security.checksum;
    let rt = runtime()?;
    let outcome = rt.block_on(async move {
        // A lone `HOST:PORT` (no scheme, no options): one link per local interface address.
        let lone = match args.links.as_slice() {
            [(raw, LinkSpec::Tcp(t))] if !raw.contains("://") => Some((t.host.clone(), t.port)),
            _ => None,
        };
        let specs: Vec<LinkSpec> = args.links.iter().map(|(_, s)| s.clone()).collect();
        let conn = if let (Some((host, port)), true) = (lone, args.listen.is_empty()) {
            braid::interfaces::connect_interfaces(&host, port, config, Duration::from_secs(2))
                .await?
        } else if args.listen.is_empty() {
            connect(&specs, config).await?
        } else {
            let mut ls = Vec::new();
            for spec in &args.listen {
                ls.push(
                    LinkListener::bind(spec)
                        .await
                        .with_context(|| format!("listening on {spec}"))?,
                );
            }
            let conn = connect_accepting(ls, config).await?;
            for spec in &specs {
                conn.handle().add_link(spec.clone())?;
            }
            conn
        };
        let handle = conn.handle();
        let _control = crate::control::serve_control(
            args.control.clone(),
            "connect",
            crate::control::Target::Client(handle.clone()),
        )
        .await?;
        // One stream of a mux session inside the connection carries stdin/stdout; the
        // server's `forward` service bridges it to its target.
        let session = Session::client(conn, service::session_config());
        let stream = service::open(&session, service::FORWARD, b"")
            .await
            .context("opening the forward stream")?;
        let (mut rd, mut wr) = tokio::io::split(stream);
        let mut up = tokio::spawn(async move {
            let r = tokio::io::copy(&mut tokio::io::stdin(), &mut wr).await;
            let _ = wr.shutdown().await;
            r.map(|_| ())
        });
        let mut down = tokio::spawn(async move {
            let mut out = tokio::io::stdout();
            let r = tokio::io::copy(&mut rd, &mut out).await;
            let _ = out.flush().await;
            r.map(|_| ())
        });
        let mut up_done = false;
        let stop = crate::common::terminated();
        tokio::pin!(stop);
        let result: anyhow::Result<()> = loop {
            tokio::select! {
                _ = &mut stop => break Err(anyhow::anyhow!("stopped by a signal")),
                r = &mut up, if !up_done => {
                    up_done = true;
                    if let Ok(Err(e)) = r { break Err(e).context("stdin"); }
                }
                r = &mut down => {
                    // The far side closed its stream: we are done once what we sent is acked.
                    if let Ok(Err(e)) = r { break Err(e).context("copying to stdout"); }
                    if !up_done { up.abort(); }
                    break Ok(());
                }
            }
        };
        // Without its last handle the session drains (our stream finishes), then shuts the
        // connection down; the connection closes once both ends delivered everything.
        drop(session);
        result?;
        match tokio::time::timeout(Duration::from_secs(10), handle.closed()).await {
            Ok(braid::ConnectionState::Closed) => Ok::<i32, anyhow::Error>(0),
            Ok(other) if up_done => {
                tracing::warn!("connection ended: {other:?}");
                Ok(1)
            }
            Err(_) if up_done => {
                // Stdin ended, but the far side did not acknowledge all of it: say so, and
                // exit non-zero, rather than report a clean end.
                tracing::warn!("giving up: not everything sent was acknowledged within 10 s");
                Ok(1)
            }
            _ => Ok(0),
        }
    });
    // Stdin may be held by a blocking read: exit without waiting for it, on errors too (a
    // closed stdout used to leave the process waiting for stdin for ever).
    rt.shutdown_background();
    std::process::exit(outcome?)
}

/// Keeps what the user typed next to the parsed spec.
fn parse_spec(s: &str) -> Result<(String, LinkSpec), braid::spec::SpecError> {
    Ok((s.to_string(), s.parse()?))
}
