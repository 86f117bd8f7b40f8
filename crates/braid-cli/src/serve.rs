//! `braid serve`: accept links, bridge each connection to `--forward HOST:PORT`.

use anyhow::Context as _;
use braid::server::{Listener, ServerConfig};
use braid::spec::ListenSpec;
use tokio::io::AsyncWriteExt;
use tokio::net::TcpStream;

use crate::common::{SecurityArgs, init_logging, runtime};

/// Arguments of `braid serve`.
#[derive(clap::Args, Debug)]
pub struct ServeArgs {
    /// Where to accept links: `tcp://IP:PORT`, `IP:PORT` or `unix:PATH` (repeatable).
    #[arg(long, short, required = true, value_name = "SPEC")]
    pub listen: Vec<ListenSpec>,
    /// Bridge every connection to this TCP target.
    #[arg(long, short, value_name = "HOST:PORT")]
    pub forward: String,
    #[command(flatten)]
    pub security: SecurityArgs,
    /// Seconds a new link has to finish its handshakes.
    #[arg(long, default_value_t = 5)]
    pub handshake_timeout: u64,
    /// Links in their handshake at once.
    #[arg(long, default_value_t = 128)]
    pub max_pending: usize,
    /// Connections at once.
    #[arg(long, default_value_t = 1024)]
    pub max_connections: usize,
    /// Links per connection.
    #[arg(long, default_value_t = 64)]
    pub max_links: usize,
    /// Control socket (default: in the XDG runtime dir).
    #[arg(long, value_name = "PATH")]
    pub control: Option<std::path::PathBuf>,
}

pub fn run(args: ServeArgs) -> anyhow::Result<()> {
    init_logging("braid=info,braid_cli=info");
    let key = args.security.key(true)?;
    let mut config = ServerConfig::new(key);
    config.security = args.security.security();
    config.handshake_timeout = std::time::Duration::from_secs(args.handshake_timeout);
    config.max_pending_handshakes = args.max_pending;
    config.max_connections = args.max_connections;
    config.max_links_per_connection = args.max_links;
    runtime()?.block_on(async move {
        let mut listener = Listener::bind(&args.listen, config)
            .await
            .context("binding listeners")?;
        let _control = crate::control::serve_control(
            args.control.clone(),
            "serve",
            crate::control::Target::Server(listener.control()),
        )
        .await?;
        loop {
            let Some(conn) = listener.accept().await else {
                break;
            };
            let forward = args.forward.clone();
            tokio::spawn(async move {
                let id = conn.id();
                if let Err(e) = bridge(conn, &forward).await {
                    tracing::warn!(conn = %id, "forward to {forward}: {e:#}");
                }
            });
        }
        Ok(())
    })
}

async fn bridge(conn: braid::Connection, forward: &str) -> anyhow::Result<()> {
    let handle = conn.handle();
    let target = match TcpStream::connect(forward).await {
        Ok(t) => t,
        Err(e) => {
            handle.abort(1);
            return Err(e).context("connecting");
        }
    };
    let _ = target.set_nodelay(true);
    let (mut tr, mut tw) = target.into_split();
    let (mut cr, mut cw) = conn.into_split();
    let down = async {
        let r = tokio::io::copy(&mut cr, &mut tw).await;
        let _ = tw.shutdown().await;
        r
    };
    let up = async {
        let r = tokio::io::copy(&mut tr, &mut cw).await;
        let _ = cw.shutdown().await;
        r
    };
    let (a, b) = tokio::join!(down, up);
    tracing::info!(conn = %handle.id(), "bridged {} bytes in, {} out", a.as_ref().unwrap_or(&0), b.as_ref().unwrap_or(&0));
    a?;
    b?;
    let _ = tokio::time::timeout(std::time::Duration::from_secs(10), handle.closed()).await;
    Ok(())
}
