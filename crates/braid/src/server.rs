//! Server side: accept links on several listeners and group them into connections.

use std::collections::HashMap;
use std::io;
use std::sync::{Arc, Mutex, Weak};
use std::time::Duration;

use tokio::sync::{Semaphore, mpsc};
use tokio::task::JoinHandle;

use crate::client::start_connection;
use crate::connection::{Connection, ConnectionHandle, Inner, LinkSettings, Side};
use crate::join::{admit, refuse, server_hello};
use crate::proto::agg::{self, ConnectionId, frame::RefuseCode};
use crate::secure::{Key, Security};
use crate::spec::ListenSpec;
use crate::transport::{LinkListener, RawLink};

/// Server settings, limits included: everything a hostile peer could exhaust is bounded.
///
/// ```
/// let mut c = braid::server::ServerConfig::new(braid::secure::Key::generate());
/// c.max_connections = 16;
/// ```
#[derive(Clone, Debug)]
#[non_exhaustive]
pub struct ServerConfig {
    /// The pre-shared key.
    pub key: Key,
    /// Encrypted (default) or authenticated plaintext.
    pub security: Security,
    /// Engine settings for each connection (CRC is turned on for plaintext automatically).
    pub engine: agg::Config,
    /// Time a new link has to finish its security and braid handshakes.
    pub handshake_timeout: Duration,
    /// Links in their handshake at once; more are dropped at once.
    pub max_pending_handshakes: usize,
    /// Connections at once.
    pub max_connections: usize,
    /// Links per connection.
    pub max_links_per_connection: usize,
    /// Connections accepted but not yet taken by [`Listener::accept`].
    pub accept_backlog: usize,
}

impl ServerConfig {
    /// Defaults with `key`.
    ///
    /// ```
    /// let c = braid::server::ServerConfig::new(braid::secure::Key::generate());
    /// assert!(c.max_pending_handshakes > 0);
    /// ```
    pub fn new(key: Key) -> Self {
        ServerConfig {
            key,
            security: Security::Encrypted,
            engine: agg::Config::default(),
            handshake_timeout: Duration::from_secs(5),
            max_pending_handshakes: 128,
            max_connections: 1024,
            max_links_per_connection: 64,
            accept_backlog: 64,
        }
    }

    fn settings(&self) -> LinkSettings {
        LinkSettings {
            key: self.key.clone(),
            security: self.security,
            handshake_timeout: self.handshake_timeout,
            dial_timeout: Duration::from_secs(10),
            redial_timeout: Duration::from_secs(1),
            backoff_initial: Duration::from_millis(100),
            backoff_cap: Duration::from_millis(500),
            max_links: self.max_links_per_connection,
            checksum: self.engine.crc,
        }
    }
}

struct ServerShared {
    config: ServerConfig,
    conns: Mutex<HashMap<ConnectionId, Weak<Inner>>>,
    pending: Arc<Semaphore>,
    accepted: mpsc::Sender<Connection>,
    locals: Mutex<Vec<ListenSpec>>,
    /// The accept loops; `None` once the [`Listener`] was dropped (and they were stopped).
    tasks: Mutex<Option<Vec<JoinHandle<()>>>>,
}

/// Accepts links on any number of TCP and Unix listeners and yields each new connection.
///
/// ```no_run
/// # #[tokio::main] async fn main() -> std::io::Result<()> {
/// use braid::server::{Listener, ServerConfig};
/// let key = braid::secure::Key::generate();
/// let specs = ["tcp://0.0.0.0:7700".parse().unwrap(), "unix:/run/braid.sock".parse().unwrap()];
/// let mut listener = Listener::bind(&specs, ServerConfig::new(key)).await?;
/// while let Some(mut conn) = listener.accept().await {
///     tokio::spawn(async move {
///         let (mut rd, mut wr) = tokio::io::split(&mut conn);
///         let _ = tokio::io::copy(&mut rd, &mut wr).await; // echo
///     });
/// }
/// # Ok(()) }
/// ```
pub struct Listener {
    control: ListenerControl,
    rx: mpsc::Receiver<Connection>,
}

impl std::fmt::Debug for Listener {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Listener")
            .field("locals", &self.local_specs())
            .finish()
    }
}

/// Manages a running [`Listener`] from other tasks (add listeners, list connections).
/// Cheap to clone.
///
/// ```no_run
/// # async fn f(l: &braid::server::Listener) -> std::io::Result<()> {
/// let control = l.control();
/// tokio::spawn(async move { control.add_listener(&"[::1]:7701".parse().unwrap()).await });
/// # Ok(()) }
/// ```
#[derive(Clone)]
pub struct ListenerControl {
    shared: Arc<ServerShared>,
}

impl std::fmt::Debug for ListenerControl {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ListenerControl").finish()
    }
}

impl ListenerControl {
    /// Starts accepting on one more spec; returns where it listens (the real port for 0).
    ///
    /// # Errors
    /// The bind error, or [`io::ErrorKind::NotConnected`] once the [`Listener`] was dropped
    /// (a loop started then would never be stopped).
    ///
    /// ```no_run
    /// # async fn f(c: braid::server::ListenerControl) -> std::io::Result<()> {
    /// c.add_listener(&"[::1]:7700".parse().unwrap()).await?;
    /// # Ok(()) }
    /// ```
    pub async fn add_listener(&self, spec: &ListenSpec) -> io::Result<ListenSpec> {
        let listener = LinkListener::bind(spec).await?;
        let local = listener.local_spec();
        let mut tasks = lock(&self.shared.tasks);
        let Some(tasks) = tasks.as_mut() else {
            return Err(io::Error::new(
                io::ErrorKind::NotConnected,
                "the listener was dropped",
            ));
        };
        tracing::info!("listening on {local}");
        lock(&self.shared.locals).push(local.clone());
        tasks.push(tokio::spawn(accept_loop(listener, self.shared.clone())));
        Ok(local)
    }

    /// Where the listener accepts links.
    ///
    /// ```no_run
    /// # fn f(c: &braid::server::ListenerControl) { for s in c.local_specs() { println!("{s}"); } }
    /// ```
    pub fn local_specs(&self) -> Vec<ListenSpec> {
        lock(&self.shared.locals).clone()
    }

    /// Handles of the live connections.
    ///
    /// ```no_run
    /// # fn f(c: &braid::server::ListenerControl) { println!("{} connections", c.connections().len()); }
    /// ```
    pub fn connections(&self) -> Vec<ConnectionHandle> {
        let mut map = lock(&self.shared.conns);
        map.retain(|_, w| w.strong_count() > 0);
        map.values()
            .filter_map(Weak::upgrade)
            .filter(|i| !i.is_over())
            .map(ConnectionHandle)
            .collect()
    }
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

impl Listener {
    /// Binds every spec and starts accepting links.
    ///
    /// # Errors
    /// The first bind error.
    ///
    /// ```no_run
    /// # #[tokio::main] async fn main() -> std::io::Result<()> {
    /// let key = braid::secure::Key::generate();
    /// let l = braid::server::Listener::bind(&["127.0.0.1:0".parse().unwrap()], braid::server::ServerConfig::new(key)).await?;
    /// println!("{:?}", l.local_specs());
    /// # Ok(()) }
    /// ```
    pub async fn bind(specs: &[ListenSpec], config: ServerConfig) -> io::Result<Listener> {
        let (tx, rx) = mpsc::channel(config.accept_backlog.max(1));
        let shared = Arc::new(ServerShared {
            pending: Arc::new(Semaphore::new(config.max_pending_handshakes.max(1))),
            config,
            conns: Mutex::new(HashMap::new()),
            accepted: tx,
            locals: Mutex::new(Vec::new()),
            tasks: Mutex::new(Some(Vec::new())),
        });
        let l = Listener {
            control: ListenerControl { shared },
            rx,
        };
        for spec in specs {
            l.control.add_listener(spec).await?;
        }
        Ok(l)
    }

    /// A handle to manage this listener from other tasks.
    ///
    /// ```no_run
    /// # fn f(l: &braid::server::Listener) { let _c = l.control(); }
    /// ```
    pub fn control(&self) -> ListenerControl {
        self.control.clone()
    }

    /// Starts accepting on one more spec; returns where it listens (the real port for 0).
    ///
    /// # Errors
    /// The bind error.
    ///
    /// ```no_run
    /// # async fn f(l: braid::server::Listener) -> std::io::Result<()> {
    /// l.add_listener(&"[::1]:7700".parse().unwrap()).await?;
    /// # Ok(()) }
    /// ```
    pub async fn add_listener(&self, spec: &ListenSpec) -> io::Result<ListenSpec> {
        self.control.add_listener(spec).await
    }

    /// Where this listener accepts links.
    ///
    /// ```no_run
    /// # fn f(l: &braid::server::Listener) { for s in l.local_specs() { println!("{s}"); } }
    /// ```
    pub fn local_specs(&self) -> Vec<ListenSpec> {
        self.control.local_specs()
    }

    /// The next new connection (its first link is up; more may join any time).
    /// `None` never happens while the listener lives.
    ///
    /// # Cancel safety
    /// Cancel safe.
    ///
    /// ```no_run
    /// # async fn f(mut l: braid::server::Listener) {
    /// while let Some(conn) = l.accept().await { println!("new connection {}", conn.id()); }
    /// # }
    /// ```
    pub async fn accept(&mut self) -> Option<Connection> {
        self.rx.recv().await
    }

    /// Handles of the live connections.
    ///
    /// ```no_run
    /// # fn f(l: &braid::server::Listener) { println!("{} connections", l.connections().len()); }
    /// ```
    pub fn connections(&self) -> Vec<ConnectionHandle> {
        self.control.connections()
    }
}

impl Drop for Listener {
    fn drop(&mut self) {
        for t in lock(&self.control.shared.tasks)
            .take()
            .into_iter()
            .flatten()
        {
            t.abort();
        }
    }
}

async fn accept_loop(listener: LinkListener, shared: Arc<ServerShared>) {
    loop {
        match listener.accept().await {
            Ok(raw) => match shared.pending.clone().try_acquire_owned() {
                Ok(permit) => {
                    let shared = shared.clone();
                    tokio::spawn(async move {
                        let peer = raw.peer.clone();
                        if let Err(e) = handle_link(raw, &shared, permit).await {
                            tracing::warn!(%peer, "link rejected: {e}");
                        }
                    });
                }
                Err(_) => tracing::warn!(
                    peer = %raw.peer,
                    "link rejected: too many pending handshakes ({})",
                    shared.config.max_pending_handshakes
                ),
            },
            Err(e) => {
                tracing::warn!("accept on {}: {e}", listener.local_spec());
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        }
    }
}

async fn handle_link(
    raw: RawLink,
    shared: &ServerShared,
    permit: tokio::sync::OwnedSemaphorePermit,
) -> Result<(), crate::join::JoinError> {
    let settings = shared.config.settings();
    let (mut link, hello, leftover) = server_hello(raw, &settings).await?;
    drop(permit);
    let peer = link.peer.clone();
    if hello.conn.is_new() {
        // Counted and registered under one lock: concurrent Hellos cannot overshoot the limit.
        let started = {
            let mut map = shared.conns.lock().unwrap_or_else(|p| p.into_inner());
            map.retain(|_, w| w.upgrade().is_some_and(|i| !i.is_over()));
            (map.len() < shared.config.max_connections).then(|| {
                let mut id = ConnectionId(rand::random());
                while id.is_new() || map.contains_key(&id) {
                    id = ConnectionId(rand::random());
                }
                // Chunks this way get a CRC if the client asked for them (or this server's
                // config).
                let mut engine = shared.config.engine.clone();
                engine.crc |= hello.crc;
                let conn = start_connection(id, Side::Server, settings, engine);
                map.insert(id, Arc::downgrade(&conn.handle().0));
                (id, conn)
            })
        };
        let Some((id, conn)) = started else {
            refuse(&mut link, RefuseCode::Limit).await;
            return Err(limit("connections", shared.config.max_connections));
        };
        let inner = conn.handle().0;
        admit(&inner, link, leftover, None, None).await?;
        tracing::info!(conn = %id, %peer, "new connection");
        if shared.accepted.try_send(conn).is_err() {
            tracing::warn!(conn = %id, %peer, "connection dropped: accept backlog full");
        }
        Ok(())
    } else {
        let inner = shared
            .conns
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .get(&hello.conn)
            .and_then(Weak::upgrade)
            .filter(|i| !i.is_over());
        match inner {
            Some(inner) => {
                if inner.lock().links.len() >= shared.config.max_links_per_connection {
                    refuse(&mut link, RefuseCode::Limit).await;
                    return Err(limit(
                        "links per connection",
                        shared.config.max_links_per_connection,
                    ));
                }
                admit(&inner, link, leftover, None, None).await
            }
            None => {
                refuse(&mut link, RefuseCode::UnknownConnection).await;
                Err(crate::join::JoinError::Handshake(
                    crate::proto::agg::handshake::HandshakeError::Refused(
                        RefuseCode::UnknownConnection,
                    ),
                ))
            }
        }
    }
}

fn limit(what: &'static str, n: usize) -> crate::join::JoinError {
    tracing::debug!("limit of {n} {what} reached");
    crate::join::JoinError::ConnectionOver
}
