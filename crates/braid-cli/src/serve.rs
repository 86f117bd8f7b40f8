//! `braid serve`: accept links; each connection's streams reach their service, `forward`
//! bridging each stream to `--forward HOST:PORT`.

use std::sync::Arc;

use anyhow::Context as _;
use braid::server::{Listener, ServerConfig};
use braid::service::{FORWARD, Services, forward, serve_connection};
use braid::spec::{HostPort, ListenSpec};

use crate::common::{SecurityArgs, init_logging, runtime};

/// Arguments of `braid serve`.
#[derive(clap::Args, Debug)]
pub struct ServeArgs {
    /// Where to accept links: `tcp://IP:PORT`, `IP:PORT` or `unix:PATH` (repeatable).
    #[arg(long, short, required = true, value_name = "SPEC")]
    pub listen: Vec<ListenSpec>,
    /// The `forward` service's target: each forwarded stream (e.g. each `braid connect`)
    /// becomes one TCP connection to it. The name is resolved on each connection.
    #[arg(long, short, value_name = "HOST:PORT")]
    pub forward: HostPort,
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
    config.engine.crc = args.security.checksum;
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
        // One port, every application: each connection carries a mux session whose streams
        // name their service.
        let services = Arc::new(Services::new().with(FORWARD, forward(args.forward.to_string())));
        let stop = crate::common::terminated();
        tokio::pin!(stop);
        loop {
            tokio::select! {
                conn = listener.accept() => match conn {
                    Some(conn) => {
                        tokio::spawn(serve_connection(conn, services.clone()));
                    }
                    None => break,
                },
                _ = &mut stop => {
                    tracing::info!("stopping (signal)");
                    break;
                }
            }
        }
        Ok(())
    })
}
