//! Applications over streams: one braid connection carries one mux [`Session`], and every
//! application (the stdio bridge, TCP forwarding, later files, tunnels, speed tests) runs as
//! streams of it, so one server port serves all of them.
//!
//! ```text
//!   client                                              server (one port)
//!   open(session, "forward") ──▶ Request{ "forward" } ──▶ Services: "forward" → handler
//!                            ◀── Reply{ OK | code+msg } ◀─┘ (unknown name → UNKNOWN_SERVICE)
//!   ...the service's own bytes both ways, half-close and reset as any mux stream...
//! ```
//!
//! The opener writes a [`Request`] (version, service name, arguments) as the stream's first
//! bytes and waits for the acceptor's [`Reply`]: [`Status::OK`] and the stream belongs to the
//! service; any other [`Status`] comes with a message, then the acceptor ends the stream. The
//! wire format is in `docs/PROTOCOL.md`, "Applications over streams".
//!
//! ```no_run
//! # async fn run(conn: braid::Connection, server_conn: braid::Connection) -> Result<(), Box<dyn std::error::Error>> {
//! use std::sync::Arc;
//! use braid::mux::Session;
//! use braid::service::{self, Services};
//!
//! // Server: every accepted connection serves the registered services.
//! let services = Arc::new(Services::new().with("forward", service::forward("127.0.0.1:22")));
//! tokio::spawn(service::serve_connection(server_conn, services));
//!
//! // Client: one session per connection, one stream per use.
//! let session = Session::client(conn, service::session_config());
//! let stream = service::open(&session, "forward", b"").await?;
//! # Ok(()) }
//! ```

mod forward;
mod header;

use std::collections::BTreeMap;
use std::future::Future;
use std::io;
use std::sync::Arc;
use std::time::Duration;

use futures::future::BoxFuture;
use tokio::io::AsyncWriteExt;

use crate::Connection;
use crate::mux::{Config, ConnectionError, Session, SessionError, Stream};

pub use braid_proto::service::{
    Decoded, HeaderError, MAX_ARGS, MAX_MESSAGE, MAX_NAME, Reply, Request, Status, VERSION,
};
pub use forward::{FORWARD, bridge, forward};
pub use header::{ReadError, read_reply, read_request};

/// How long an acceptor waits for a new stream's [`Request`] before resetting it.
pub const HEADER_TIMEOUT: Duration = Duration::from_secs(10);

/// The mux settings for a session inside a braid connection: no keepalive pings, since the
/// aggregated connection watches its links itself and survives link outages that a ping
/// timeout would turn into a dead session.
///
/// ```
/// assert!(braid::service::session_config().keepalive.is_none());
/// ```
pub fn session_config() -> Config {
    let mut c = Config::default();
    c.keepalive = None;
    // The aggregated connection buffers deeply (its send buffer and reorder window), so the
    // round trip a stream sees under load is long from the first byte: start each stream
    // with a window that covers it instead of growing from 256 KiB (on the 40/20/10 Mbit/s
    // testbed, growing from 256 KiB cost 12-17% of the links' sum).
    c.initial_stream_window = 4 * 1024 * 1024;
    c
}

/// Why [`open`] failed.
///
/// ```no_run
/// # async fn run(session: braid::mux::Session) {
/// match braid::service::open(&session, "file", b"").await {
///     Err(braid::service::OpenError::Refused(reply)) => eprintln!("{}: {}", reply.status, reply.message),
///     Err(e) => eprintln!("{e}"),
///     Ok(_stream) => {}
/// }
/// # }
/// ```
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum OpenError {
    /// The session could not open a stream.
    #[error("opening a stream: {0}")]
    Session(#[from] SessionError),
    /// The request was invalid locally (bad name, arguments too long).
    #[error("invalid request: {0}")]
    Request(HeaderError),
    /// The stream failed before the reply arrived, or the reply was malformed.
    #[error("waiting for the server's reply: {0}")]
    Reply(ReadError),
    /// The peer refused the request.
    #[error("the server refused: {} ({})", .0.message, .0.status)]
    Refused(Reply),
}

/// Opens a stream to `service` on the peer: writes the [`Request`], waits for the [`Reply`]
/// (one round trip), and returns the stream ready for the service's bytes.
///
/// # Errors
/// See [`OpenError`]; on a refusal the stream is reset.
///
/// # Cancel safety
/// Not cancel safe: a cancelled call leaves a half-opened stream, which is dropped.
///
/// ```no_run
/// # async fn run(session: braid::mux::Session) -> Result<(), braid::service::OpenError> {
/// use tokio::io::AsyncWriteExt;
/// let mut stream = braid::service::open(&session, braid::service::FORWARD, b"").await?;
/// stream.write_all(b"hello").await.ok();
/// # Ok(()) }
/// ```
pub async fn open(session: &Session, service: &str, args: &[u8]) -> Result<Stream, OpenError> {
    let req = Request::new(service, args).map_err(OpenError::Request)?;
    let mut stream = session.open().await?;
    stream
        .write_all(&req.encode())
        .await
        .map_err(|e| OpenError::Reply(e.into()))?;
    let reply = read_reply(&mut stream).await.map_err(OpenError::Reply)?;
    if reply.status.is_ok() {
        Ok(stream)
    } else {
        stream.reset();
        Err(OpenError::Refused(reply))
    }
}

/// A stream whose [`Request`] was read, handed to its service, which must
/// [`accept`](Incoming::accept) or [`refuse`](Incoming::refuse) it.
///
/// ```no_run
/// # async fn handle(inc: braid::service::Incoming) -> std::io::Result<()> {
/// use braid::service::Status;
/// if inc.request().args().is_empty() {
///     let _stream = inc.accept().await?;
/// } else {
///     inc.refuse(Status::REFUSED, "no arguments expected").await?;
/// }
/// # Ok(()) }
/// ```
#[derive(Debug)]
pub struct Incoming {
    stream: Stream,
    request: Request,
    peer: Arc<str>,
}

impl Incoming {
    /// What the opener asked for.
    ///
    /// ```no_run
    /// # fn f(inc: &braid::service::Incoming) { println!("{}", inc.request().service()); }
    /// ```
    pub fn request(&self) -> &Request {
        &self.request
    }

    /// Where the connection comes from (the peer address of one of its links), for logs.
    ///
    /// ```no_run
    /// # fn f(inc: &braid::service::Incoming) { println!("stream from {}", inc.peer()); }
    /// ```
    pub fn peer(&self) -> &str {
        &self.peer
    }

    /// Answers [`Status::OK`] and returns the stream for the service's bytes.
    ///
    /// # Errors
    /// The stream failed.
    ///
    /// ```no_run
    /// # async fn f(inc: braid::service::Incoming) -> std::io::Result<()> {
    /// let stream = inc.accept().await?;
    /// # Ok(()) }
    /// ```
    pub async fn accept(mut self) -> io::Result<Stream> {
        self.stream
            .write_all(&Reply::new(Status::OK, "").encode())
            .await?;
        Ok(self.stream)
    }

    /// Answers `status` (not [`Status::OK`]) with `message`, then ends the stream.
    ///
    /// # Errors
    /// The stream failed.
    ///
    /// ```no_run
    /// # async fn f(inc: braid::service::Incoming) -> std::io::Result<()> {
    /// inc.refuse(braid::service::Status::UNAVAILABLE, "target unreachable").await?;
    /// # Ok(()) }
    /// ```
    pub async fn refuse(mut self, status: Status, message: &str) -> io::Result<()> {
        self.stream
            .write_all(&Reply::new(status, message).encode())
            .await?;
        // FIN after the reply; dropping the stream discards whatever the opener still sends.
        self.stream.shutdown().await
    }
}

type Handler = Arc<dyn Fn(Incoming) -> BoxFuture<'static, ()> + Send + Sync>;

/// The services a server offers, by name.
///
/// ```
/// use braid::service::{Services, forward};
/// let services = Services::new().with("forward", forward("127.0.0.1:22"));
/// assert_eq!(services.names().collect::<Vec<_>>(), ["forward"]);
/// ```
#[derive(Clone, Default)]
pub struct Services {
    handlers: BTreeMap<String, Handler>,
    /// How long a new stream has to send its [`Request`] (default [`HEADER_TIMEOUT`]).
    pub header_timeout: Duration,
}

impl std::fmt::Debug for Services {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Services")
            .field("names", &self.handlers.keys().collect::<Vec<_>>())
            .field("header_timeout", &self.header_timeout)
            .finish()
    }
}

impl Services {
    /// No services yet.
    ///
    /// ```
    /// assert_eq!(braid::service::Services::new().names().count(), 0);
    /// ```
    pub fn new() -> Self {
        Services {
            handlers: BTreeMap::new(),
            header_timeout: HEADER_TIMEOUT,
        }
    }

    /// Adds (or replaces) the service `name`, run for each stream that asks for it in its own
    /// task.
    ///
    /// # Panics
    /// If `name` is not a valid service name (1 to 32 bytes of `[a-z0-9._-]`).
    ///
    /// ```
    /// use braid::service::{Incoming, Services};
    /// let services = Services::new().with("hello", |inc: Incoming| async move {
    ///     use tokio::io::AsyncWriteExt;
    ///     if let Ok(mut s) = inc.accept().await {
    ///         let _ = s.write_all(b"hello\n").await;
    ///     }
    /// });
    /// ```
    pub fn with<F, Fut>(mut self, name: &str, handler: F) -> Self
    where
        F: Fn(Incoming) -> Fut + Send + Sync + 'static,
        Fut: Future<Output = ()> + Send + 'static,
    {
        assert!(
            Request::new(name, b"").is_ok(),
            "invalid service name {name:?}"
        );
        let h: Handler = Arc::new(move |inc| Box::pin(handler(inc)));
        self.handlers.insert(name.to_string(), h);
        self
    }

    /// The registered names, sorted.
    ///
    /// ```
    /// let s = braid::service::Services::new().with("b", |_| async {}).with("a", |_| async {});
    /// assert_eq!(s.names().collect::<Vec<_>>(), ["a", "b"]);
    /// ```
    pub fn names(&self) -> impl Iterator<Item = &str> {
        self.handlers.keys().map(String::as_str)
    }

    /// Reads the request of an accepted stream and runs its service; unknown names and bad
    /// headers are answered with an error [`Status`] and logged with `peer`.
    ///
    /// ```no_run
    /// # async fn f(services: braid::service::Services, session: braid::mux::Session) {
    /// while let Some(stream) = session.accept().await {
    ///     let s = services.clone();
    ///     tokio::spawn(async move { s.dispatch(stream, "tcp://192.0.2.1:5555".into()).await });
    /// }
    /// # }
    /// ```
    pub async fn dispatch(&self, mut stream: Stream, peer: Arc<str>) {
        let id = stream.id();
        let req = match tokio::time::timeout(self.header_timeout, read_request(&mut stream)).await {
            Ok(Ok(req)) => req,
            Ok(Err(ReadError::Io(e))) => {
                tracing::debug!(%peer, stream = id, "stream ended before its header: {e}");
                return;
            }
            Ok(Err(e)) => {
                tracing::warn!(%peer, stream = id, "bad stream header: {e}");
                let _ = stream
                    .write_all(&Reply::new(Status::BAD_REQUEST, &e.to_string()).encode())
                    .await;
                let _ = stream.shutdown().await;
                return;
            }
            Err(_) => {
                tracing::warn!(%peer, stream = id, "no stream header within {:?}: reset", self.header_timeout);
                stream.reset();
                return;
            }
        };
        let Some(handler) = self.handlers.get(req.service()) else {
            let names: Vec<&str> = self.names().collect();
            let msg = format!(
                "unknown service {:?} (this server offers: {})",
                req.service(),
                names.join(", ")
            );
            tracing::warn!(%peer, stream = id, "{msg}");
            let inc = Incoming {
                stream,
                request: req,
                peer,
            };
            let _ = inc.refuse(Status::UNKNOWN_SERVICE, &msg).await;
            return;
        };
        tracing::debug!(%peer, stream = id, service = req.service(), "stream");
        handler(Incoming {
            stream,
            request: req,
            peer,
        })
        .await;
    }
}

/// Serves `services` on one accepted braid connection: runs the server side of a mux session
/// over it ([`session_config`]), dispatches every stream the client opens, and returns once the
/// session and then the connection have ended.
///
/// ```no_run
/// # async fn run(mut listener: braid::server::Listener) {
/// use std::sync::Arc;
/// use braid::service::{self, Services};
/// let services = Arc::new(Services::new().with("forward", service::forward("127.0.0.1:22")));
/// while let Some(conn) = listener.accept().await {
///     tokio::spawn(service::serve_connection(conn, services.clone()));
/// }
/// # }
/// ```
pub async fn serve_connection(conn: Connection, services: Arc<Services>) {
    let handle = conn.handle();
    let peer: Arc<str> = handle
        .links()
        .first()
        .map(|l| l.peer.clone())
        .unwrap_or_else(|| "?".into())
        .into();
    let session = Session::server(conn, session_config());
    while let Some(stream) = session.accept().await {
        let (s, p) = (services.clone(), peer.clone());
        tokio::spawn(async move { s.dispatch(stream, p).await });
    }
    // The client went away (or the session failed): streams finish, the session shuts the
    // connection down, the connection delivers its last bytes.
    session.go_away();
    match session.closed().await {
        e @ (SessionError::Closed(ConnectionError::PeerMisbehaved(_)) | SessionError::Io(_)) => {
            tracing::warn!(conn = %handle.id(), %peer, "stream session failed: {e}");
        }
        e => tracing::debug!(conn = %handle.id(), %peer, "stream session ended: {e}"),
    }
    drop(session);
    let state = handle.closed().await;
    tracing::debug!(conn = %handle.id(), %peer, "connection ended: {state:?}");
}
