//! Client side: dial link specs into one connection and keep its links up.

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use tokio::sync::{Notify, broadcast, mpsc, oneshot, watch};

use crate::backoff::Backoff;
use crate::connection::{
    Connection, ConnectionEvent, ConnectionState, Inner, LinkSettings, Shared, Side,
};
use crate::driver::LinkEnd;
use crate::join::{JoinError, client_join, join_existing};
use crate::proto::agg::frame::RefuseCode;
use crate::proto::agg::handshake::HandshakeError;
use crate::proto::agg::{self, ConnectionId};
use crate::secure::{Key, Security};
use crate::spec::LinkSpec;
use crate::transport::{LinkListener, dial};

/// Settings of a client (also used for links a server dials).
///
/// ```
/// let mut c = braid::client::ClientConfig::new(braid::secure::Key::generate());
/// c.dial_timeout = std::time::Duration::from_secs(3);
/// ```
#[derive(Clone, Debug)]
#[non_exhaustive]
pub struct ClientConfig {
    /// The pre-shared key.
    pub key: Key,
    /// Encrypted (default) or authenticated plaintext.
    pub security: Security,
    /// Engine settings. `engine.crc` asks for a CRC32C on every chunk, both ways, on
    /// plaintext links (off by default, like MPTCP's data checksum: TCP's own checksum covers
    /// each link, and encrypted links authenticate every message anyway). Turn it on for paths
    /// that may corrupt data past TCP's checksum.
    pub engine: agg::Config,
    /// Time allowed to open one socket or start one command.
    pub dial_timeout: Duration,
    /// Time allowed for one redial attempt of a link that dropped (short, so that a path
    /// that comes back is used again quickly).
    pub redial_timeout: Duration,
    /// Time allowed for a link's security and braid handshakes.
    pub handshake_timeout: Duration,
    /// First redial delay after a link drops.
    pub backoff_initial: Duration,
    /// Longest redial delay (default 500 ms: with the 1 s redial timeout, a path that comes
    /// back is redialled within about 1.5 s).
    pub backoff_cap: Duration,
    /// Most links the connection carries at once. A slot with no room, under this limit or
    /// the peer's, waits for a link of the connection to go instead of redialling.
    pub max_links: usize,
}

impl ClientConfig {
    /// Defaults with `key`.
    ///
    /// ```
    /// let c = braid::client::ClientConfig::new(braid::secure::Key::generate());
    /// assert_eq!(c.security, braid::secure::Security::Encrypted);
    /// ```
    pub fn new(key: Key) -> Self {
        ClientConfig {
            key,
            security: Security::Encrypted,
            engine: agg::Config::default(),
            dial_timeout: Duration::from_secs(10),
            redial_timeout: Duration::from_secs(1),
            handshake_timeout: Duration::from_secs(10),
            backoff_initial: Duration::from_millis(100),
            backoff_cap: Duration::from_millis(500),
            max_links: 64,
        }
    }

    pub(crate) fn settings(&self) -> LinkSettings {
        LinkSettings {
            key: self.key.clone(),
            security: self.security,
            handshake_timeout: self.handshake_timeout,
            dial_timeout: self.dial_timeout,
            redial_timeout: self.redial_timeout,
            backoff_initial: self.backoff_initial,
            backoff_cap: self.backoff_cap,
            max_links: self.max_links,
            checksum: self.engine.crc,
        }
    }
}

/// Why [`connect`] failed.
///
/// ```
/// # #[tokio::main(flavor = "current_thread")] async fn main() {
/// let key = braid::secure::Key::generate();
/// let r = braid::client::connect(&[], braid::client::ClientConfig::new(key)).await;
/// assert!(matches!(r, Err(braid::client::ConnectError::NoSpecs)));
/// # }
/// ```
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ConnectError {
    /// No spec was given.
    #[error("no link spec given")]
    NoSpecs,
    /// No link could be set up; the last failure.
    #[error("no link could be established: {0}")]
    NoLink(#[source] JoinError),
    /// Accepting links failed.
    #[error("accepting links: {0}")]
    Accept(#[from] std::io::Error),
}

/// Creates the shared state of a connection and starts its driver.
pub(crate) fn start_connection(
    id: ConnectionId,
    side: Side,
    settings: LinkSettings,
    mut engine: agg::Config,
) -> Connection {
    // Checksums only where nothing else guards the bytes.
    engine.crc &= settings.security == Security::Plaintext;
    let epoch = Instant::now();
    let (tx, rx) = mpsc::channel(256);
    let inner = Arc::new(Inner {
        id,
        side,
        epoch,
        shared: Mutex::new(Shared {
            conn: agg::Connection::new(engine, crate::proto::Time::ZERO),
            read_waker: None,
            write_waker: None,
            app_handles: 0,
            read_finished: false,
            links: Default::default(),
            direct: Default::default(),
            removing: Default::default(),
        }),
        wake: Notify::new(),
        to_driver: tx,
        events: broadcast::channel(256).0,
        state: watch::channel(ConnectionState::Open).0,
        driver_done: watch::channel(false).0,
        settings,
        slots: Mutex::new(Vec::new()),
        stage: Mutex::new(
            crate::proto::pool::Stager::new(
                crate::connection::STAGE_BLOCK,
                crate::connection::STAGE_BLOCKS_TRACKED,
            )
            .with_spare(crate::connection::STAGE_SPARE),
        ),
    });
    let conn = Connection::new(inner.clone());
    tokio::spawn(crate::driver::run(inner, rx));
    conn
}

/// Connects over `specs`: dials one link to create the connection, then every other link
/// (`count=N` sockets per TCP spec), and keeps them all up, redialling dropped links with
/// capped jittered backoff, while the connection lives.
///
/// # Errors
/// [`ConnectError::NoLink`] when not a single link could be set up (one attempt per spec).
///
/// ```no_run
/// # #[tokio::main] async fn main() -> Result<(), Box<dyn std::error::Error>> {
/// use braid::client::{connect, ClientConfig};
/// let key = braid::secure::Key::from_hex(&std::env::var("BRAID_KEY")?)?;
/// let specs = vec![
///     "tcp://server:7700?dev=eth0".parse()?,
///     "tcp://server:7700?dev=wlan0&count=2".parse()?,
/// ];
/// let conn = connect(&specs, ClientConfig::new(key)).await?;
/// println!("connected: {}", conn.id());
/// # Ok(()) }
/// ```
pub async fn connect(specs: &[LinkSpec], config: ClientConfig) -> Result<Connection, ConnectError> {
    let settings = config.settings();
    let mut last = None;
    for (i, spec) in specs.iter().enumerate() {
        let attempt = async {
            let raw = dial(spec, settings.dial_timeout).await?;
            client_join(raw, ConnectionId::NEW, &settings).await
        };
        match attempt.await {
            Ok((link, id, leftover)) => {
                let conn = start_connection(id, Side::Client, settings, config.engine.clone());
                let inner = conn.handle().0;
                let (end_tx, end_rx) = oneshot::channel();
                crate::join::admit(&inner, link, leftover, Some(spec.clone()), Some(end_tx))
                    .await
                    .map_err(ConnectError::NoLink)?;
                spawn_slot(inner.clone(), spec.clone(), Some(end_rx));
                for _ in 1..spec.count() {
                    spawn_slot(inner.clone(), spec.clone(), None);
                }
                for other in &specs[i + 1..] {
                    for _ in 0..other.count() {
                        spawn_slot(inner.clone(), other.clone(), None);
                    }
                }
                return Ok(conn);
            }
            Err(e) => {
                tracing::warn!(%spec, "link failed: {e}");
                last = Some(e);
            }
        }
    }
    Err(last.map_or(ConnectError::NoSpecs, ConnectError::NoLink))
}

/// Creates a connection over one link the caller already opened (a socket made by other
/// means, an in-process pipe); add more with [`crate::ConnectionHandle::add_raw_link`] or
/// [`crate::ConnectionHandle::add_link`].
///
/// # Errors
/// [`ConnectError::NoLink`] when the handshakes fail.
///
/// ```no_run
/// # #[tokio::main] async fn main() -> Result<(), Box<dyn std::error::Error>> {
/// let sock = tokio::net::TcpStream::connect("127.0.0.1:7700").await?;
/// let raw = braid::transport::RawLink::from_tcp(sock);
/// let key = braid::secure::Key::generate();
/// let conn = braid::client::connect_link(raw, braid::client::ClientConfig::new(key)).await?;
/// # drop(conn); Ok(()) }
/// ```
pub async fn connect_link(
    raw: crate::transport::RawLink,
    config: ClientConfig,
) -> Result<Connection, ConnectError> {
    let settings = config.settings();
    let (link, id, leftover) = client_join(raw, ConnectionId::NEW, &settings)
        .await
        .map_err(ConnectError::NoLink)?;
    let conn = start_connection(id, Side::Client, settings, config.engine.clone());
    crate::join::admit(&conn.handle().0, link, leftover, None, None)
        .await
        .map_err(ConnectError::NoLink)?;
    Ok(conn)
}

/// Like [`connect`], but accepts the links on `listeners` (made by socat, ssh, anything)
/// instead of dialling; this side still plays the braid client. Waits for the first link;
/// links accepted after it join the connection while it lives.
///
/// # Errors
/// [`ConnectError::NoLink`] when the first link that finished its handshakes could not be
/// admitted (`max_links` of 0); [`ConnectError::Accept`] when no listener was given. The
/// listeners are closed then.
///
/// # Cancel safety
/// Dropping the future closes the listeners; links accepted and not yet joined are dropped.
///
/// ```no_run
/// # #[tokio::main] async fn main() -> Result<(), Box<dyn std::error::Error>> {
/// use braid::transport::LinkListener;
/// let l = LinkListener::bind(&"unix:/tmp/braid-links.sock".parse()?).await?;
/// let key = braid::secure::Key::generate();
/// let conn = braid::client::connect_accepting(vec![l], braid::client::ClientConfig::new(key)).await?;
/// # drop(conn); Ok(()) }
/// ```
pub async fn connect_accepting(
    listeners: Vec<LinkListener>,
    config: ClientConfig,
) -> Result<Connection, ConnectError> {
    let settings = config.settings();
    let labels: Vec<String> = listeners
        .iter()
        .map(|l| format!("accepting on {}", l.local_spec()))
        .collect();
    let (accepted_tx, mut accepted) = mpsc::channel(16);
    // Aborted when dropped: if this future fails or is dropped, the listeners close with it.
    let mut acceptors = tokio::task::JoinSet::new();
    for l in listeners {
        acceptors.spawn(accept_links(l, accepted_tx.clone()));
    }
    drop(accepted_tx);
    let conn = loop {
        let Some(raw) = accepted.recv().await else {
            return Err(ConnectError::Accept(std::io::Error::other(
                "listeners closed",
            )));
        };
        let peer = raw.peer.clone();
        match client_join(raw, ConnectionId::NEW, &settings).await {
            Ok((link, id, leftover)) => {
                let conn =
                    start_connection(id, Side::Client, settings.clone(), config.engine.clone());
                let inner = conn.handle().0;
                if let Err(e) = crate::join::admit(&inner, link, leftover, None, None).await {
                    // Nothing will ever use it: no 30 s linger.
                    conn.handle().abort(0);
                    return Err(ConnectError::NoLink(e));
                }
                break conn;
            }
            Err(e) => tracing::warn!(%peer, "link rejected: {e}"),
        }
    };
    // The same accept tasks go on (a link accepted with the first is not lost); what they
    // accept now joins the connection. One task owns them, stopped with the connection.
    let inner = conn.handle().0;
    let inner2 = inner.clone();
    let task = tokio::spawn(async move {
        let _acceptors = acceptors;
        while let Some(raw) = accepted.recv().await {
            let inner = inner2.clone();
            tokio::spawn(async move {
                let peer = raw.peer.clone();
                if let Err(e) = join_existing(&inner, raw, None).await {
                    tracing::warn!(%peer, "link rejected: {e}");
                }
            });
        }
    });
    inner
        .slots
        .lock()
        .unwrap_or_else(|p| p.into_inner())
        .push((labels.join(", "), task.abort_handle()));
    Ok(conn)
}

/// Accepts links on `l` and hands them to `to` until `to` is closed.
async fn accept_links(l: LinkListener, to: mpsc::Sender<crate::transport::RawLink>) {
    loop {
        match l.accept().await {
            Ok(raw) => {
                if to.send(raw).await.is_err() {
                    return;
                }
            }
            Err(e) => {
                tracing::warn!("accept on {}: {e}", l.local_spec());
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        }
    }
}

/// A link up this long counts as stable: when it dies, redialling starts over at the first
/// backoff delay.
const STABLE_LINK: Duration = Duration::from_secs(10);

/// The longest a slot refused for the link limit waits for a link of the connection to go
/// before it tries again anyway, first and at most (doubling in between): the limit does not
/// lift by itself, so a handshake every backoff cap would be wasted, but a peer's count may
/// drop without this side seeing a link go (a link it admitted and this side refused).
const FULL_WAIT_INITIAL: Duration = Duration::from_secs(5);
/// See [`FULL_WAIT_INITIAL`].
const FULL_WAIT_CAP: Duration = Duration::from_secs(60);

/// Whether `e` says the connection has no room for another link (this side's limit or the
/// peer's `Refuse(Limit)`), rather than that the path failed.
fn is_limit(e: &JoinError) -> bool {
    matches!(
        e,
        JoinError::ConnectionOver
            | JoinError::Handshake(HandshakeError::Refused(RefuseCode::Limit))
    )
}

/// Waits until a link of the connection goes (there may be room for another), the
/// connection ends, or `most` passes.
async fn wait_for_room(events: &mut broadcast::Receiver<ConnectionEvent>, most: Duration) {
    let _ = tokio::time::timeout(most, async {
        // Any other event, a lag (events missed) or the end of the connection: look again.
        while let Ok(ConnectionEvent::LinkUp { .. }) = events.recv().await {}
    })
    .await;
}

/// Keeps one link of `spec` up while the connection lives. `first` is the end notice of a
/// link this slot already has.
pub(crate) fn spawn_slot(
    inner: Arc<Inner>,
    spec: LinkSpec,
    first: Option<oneshot::Receiver<LinkEnd>>,
) {
    let s = inner.settings.clone();
    let inner2 = inner.clone();
    let spec2 = spec.clone();
    let task = tokio::spawn(async move {
        let inner = inner2;
        let spec = spec2;
        let mut backoff = Backoff::new(s.backoff_initial, s.backoff_cap);
        let mut full_wait = Backoff::new(FULL_WAIT_INITIAL, FULL_WAIT_CAP);
        let mut current = first;
        let mut failures = 0u32;
        let mut up_since = tokio::time::Instant::now();
        loop {
            if let Some(rx) = current.take() {
                match rx.await {
                    Ok(LinkEnd::Recycled) => backoff.reset(),
                    Ok(LinkEnd::Dead(why)) => {
                        // Backoff starts over only after a link that stayed up: one that
                        // dies as soon as it joins must not be redialled at the first delay
                        // for ever.
                        if up_since.elapsed() >= STABLE_LINK {
                            backoff.reset();
                        }
                        tracing::debug!(%spec, "link died ({why}); redialling");
                        tokio::time::sleep(backoff.next_delay()).await
                    }
                    Ok(LinkEnd::Removed) | Err(_) => return,
                }
            }
            if inner.is_over() {
                return;
            }
            // Subscribed before the link count is looked at and the link dialled: a link
            // that goes meanwhile still counts as room.
            let mut events = inner.events.subscribe();
            let attempt = async {
                if inner.lock().links.len() >= s.max_links {
                    return Err(JoinError::ConnectionOver);
                }
                let raw = dial(&spec, s.redial_timeout).await?;
                let (tx, rx) = oneshot::channel();
                join_existing(&inner, raw, Some((spec.clone(), tx))).await?;
                Ok::<_, JoinError>(rx)
            };
            match attempt.await {
                Ok(rx) => {
                    failures = 0;
                    full_wait.reset();
                    up_since = tokio::time::Instant::now();
                    current = Some(rx);
                }
                Err(e) if is_limit(&e) => {
                    if inner.is_over() {
                        return;
                    }
                    tracing::debug!(%spec, "no room for the link ({e}); waiting for a link to go");
                    wait_for_room(&mut events, full_wait.next_delay()).await;
                    // The peer may see the link go a little after this side did.
                    tokio::time::sleep(backoff.next_delay()).await;
                }
                Err(JoinError::Handshake(HandshakeError::Refused(
                    RefuseCode::UnknownConnection,
                ))) => {
                    tracing::warn!(%spec, "server no longer knows this connection; not redialling");
                    return;
                }
                Err(e) => {
                    if failures == 0 {
                        tracing::warn!(%spec, "link failed: {e}; redialling with backoff");
                    } else {
                        tracing::debug!(%spec, "redial failed: {e}");
                    }
                    failures += 1;
                    tokio::time::sleep(backoff.next_delay()).await;
                }
            }
        }
    });
    let mut slots = inner.slots.lock().unwrap_or_else(|p| p.into_inner());
    // Slots end (their spec removed, the server forgot the connection): a connection whose
    // links come and go for months keeps only the live ones.
    slots.retain(|(_, task)| !task.is_finished());
    slots.push((spec.to_string(), task.abort_handle()));
}
