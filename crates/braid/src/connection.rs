//! [`Connection`]: one aggregated connection as a tokio byte stream.

use std::io;
use std::pin::Pin;
use std::sync::{Arc, Mutex, MutexGuard};
use std::task::{Context, Poll, Waker};
use std::time::Instant;

use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::sync::{Notify, broadcast, mpsc, watch};

use crate::proto::Time;
use crate::proto::agg::{self, ConnectionError, ConnectionId, LinkId, LinkStats, Read, WriteError};
use crate::proto::pool::Stager;
use crate::secure::{Key, Security};
use crate::spec::LinkSpec;
use crate::transport::RawLink;

/// Something that happened to a connection, for monitors and logs.
///
/// A receiver that falls more than 256 events behind skips the oldest (`Lagged`) and goes on;
/// the channel ends (`Closed`) with the connection.
///
/// ```
/// # async fn f(h: braid::ConnectionHandle) {
/// use tokio::sync::broadcast::error::RecvError;
/// let mut events = h.events();
/// loop {
///     match events.recv().await {
///         Ok(braid::ConnectionEvent::LinkDown { peer, reason, .. }) => {
///             eprintln!("link to {peer} down: {reason}")
///         }
///         Ok(_) => {}
///         Err(RecvError::Lagged(n)) => eprintln!("{n} events missed"),
///         Err(RecvError::Closed) => break,
///     }
/// }
/// # }
/// ```
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum ConnectionEvent {
    /// A link joined the connection.
    LinkUp {
        /// Its id.
        link: LinkId,
        /// Its peer.
        peer: String,
    },
    /// A link left, died or was removed; its data is resent on the others.
    LinkDown {
        /// Its id.
        link: LinkId,
        /// Its peer.
        peer: String,
        /// Why.
        reason: String,
    },
    /// Both directions finished and everything was acknowledged.
    Closed,
    /// The connection failed.
    Failed(ConnectionError),
}

/// Where a connection is in its life.
///
/// ```
/// # fn f(h: braid::ConnectionHandle) {
/// if h.state() == braid::ConnectionState::Open { println!("still running"); }
/// # }
/// ```
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum ConnectionState {
    /// Carrying data.
    Open,
    /// Ended cleanly.
    Closed,
    /// Ended with an error.
    Failed(ConnectionError),
}

/// A link of a connection, as listed by [`ConnectionHandle::links`].
///
/// ```
/// # fn f(h: braid::ConnectionHandle) {
/// for l in h.links() { println!("{} {} {} bytes sent", l.id, l.peer, l.stats.bytes_sent); }
/// # }
/// ```
#[derive(Clone, Debug)]
#[non_exhaustive]
pub struct LinkInfo {
    /// The engine's id of the link.
    pub id: LinkId,
    /// The peer (`tcp://addr`, `unix:path`, `exec:cmd`).
    pub peer: String,
    /// The spec it was dialled from, if this side dialled it.
    pub spec: Option<LinkSpec>,
    /// Its counters and estimates.
    pub stats: LinkStats,
}

/// Errors of link management ([`ConnectionHandle::add_link`], [`ConnectionHandle::remove_link`]).
///
/// ```
/// # fn f(h: braid::ConnectionHandle) {
/// match h.remove_link(braid::proto::agg::LinkId(99)) {
///     Err(braid::LinkError::NoSuchLink(id)) => eprintln!("no {id}"),
///     _ => {}
/// }
/// # }
/// ```
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum LinkError {
    /// The connection ended.
    #[error("connection is closed")]
    Closed,
    /// No such link.
    #[error("no link {0}")]
    NoSuchLink(LinkId),
    /// The per-connection link limit is reached.
    #[error("link limit reached")]
    Limit,
}

/// Which braid role this end plays (independent of who dialled each socket).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Side {
    Client,
    Server,
}

/// Settings a connection keeps for links it adds later.
#[derive(Clone, Debug)]
pub(crate) struct LinkSettings {
    pub key: Key,
    pub security: Security,
    pub handshake_timeout: std::time::Duration,
    pub dial_timeout: std::time::Duration,
    pub redial_timeout: std::time::Duration,
    pub backoff_initial: std::time::Duration,
    pub backoff_cap: std::time::Duration,
    pub max_links: usize,
    /// Plaintext links: ask for CRC32C on every chunk (client side; see `agg::Config::crc`).
    pub checksum: bool,
}

pub(crate) struct Shared {
    pub conn: agg::Connection,
    pub read_waker: Option<Waker>,
    pub write_waker: Option<Waker>,
    pub app_handles: usize,
    pub read_finished: bool,
    pub links: std::collections::BTreeMap<LinkId, (String, Option<LinkSpec>)>,
    /// Each live link's writer, for the application's direct writes.
    pub direct: std::collections::BTreeMap<LinkId, Arc<crate::driver::WriterSlot>>,
    /// Links the application asked to remove ([`ConnectionHandle::remove_link`]), for the
    /// driver: a set, not a bounded channel, so that no request is lost or refused however
    /// many come before the driver runs.
    pub removing: std::collections::BTreeSet<LinkId>,
}

/// State shared by the driver task, the application handles and the link tasks.
pub(crate) struct Inner {
    pub id: ConnectionId,
    pub side: Side,
    pub epoch: Instant,
    pub shared: Mutex<Shared>,
    pub wake: Notify,
    pub to_driver: mpsc::Sender<crate::driver::ToDriver>,
    pub events: broadcast::Sender<ConnectionEvent>,
    pub state: watch::Sender<ConnectionState>,
    /// Set once the driver task flushed its links and ended.
    pub driver_done: watch::Sender<bool>,
    pub settings: LinkSettings,
    pub slots: Mutex<Vec<(String, tokio::task::AbortHandle)>>,
    /// Where large writes are copied, outside the engine's lock (only the writing half uses
    /// it, so it is never contended).
    pub stage: Mutex<Stager>,
}

/// Writes of at least this many bytes are copied outside the engine lock and handed over as
/// whole buffers; smaller ones are packed into the engine's own blocks.
const STAGE_MIN: usize = 16 * 1024;
/// Block size of the write staging area.
pub(crate) const STAGE_BLOCK: usize = 256 * 1024;
/// Spent staging blocks tracked for reuse: a 16 MiB send buffer's worth.
pub(crate) const STAGE_BLOCKS_TRACKED: usize = 68;
/// Unused staging blocks held during a transfer (2 MiB), and freed by the driver once all
/// written data was acknowledged (one is kept). One spare made two of three blocks fresh
/// allocations on loopback.
pub(crate) const STAGE_SPARE: usize = 8;

impl Inner {
    pub fn now(&self) -> Time {
        Time::from_micros(self.epoch.elapsed().as_micros() as u64)
    }

    pub fn lock(&self) -> MutexGuard<'_, Shared> {
        self.shared.lock().unwrap_or_else(|p| p.into_inner())
    }

    pub fn is_over(&self) -> bool {
        *self.state.borrow() != ConnectionState::Open
    }
}

/// Keeps `app_handles` counted; the driver finishes or aborts the connection when the last
/// application handle goes.
struct AppRef(Arc<Inner>);

impl AppRef {
    fn new(inner: Arc<Inner>) -> Self {
        inner.lock().app_handles += 1;
        AppRef(inner)
    }
}

impl Drop for AppRef {
    fn drop(&mut self) {
        self.0.lock().app_handles -= 1;
        self.0.wake.notify_one();
    }
}

fn conn_err(e: ConnectionError) -> io::Error {
    let kind = match e {
        ConnectionError::PeerReset(_) => io::ErrorKind::ConnectionReset,
        ConnectionError::LocalReset(_) => io::ErrorKind::ConnectionAborted,
        _ => io::ErrorKind::TimedOut,
    };
    io::Error::new(kind, e)
}

fn poll_read_inner(
    inner: &Inner,
    cx: &mut Context<'_>,
    buf: &mut ReadBuf<'_>,
) -> Poll<io::Result<()>> {
    if buf.remaining() == 0 {
        return Poll::Ready(Ok(()));
    }
    // The copy happens outside the engine lock: the driver is not held up by it.
    match poll_read_chunk_inner(inner, cx, buf.remaining()) {
        Poll::Ready(Ok(Some(b))) => {
            buf.put_slice(&b);
            Poll::Ready(Ok(()))
        }
        Poll::Ready(Ok(None)) => Poll::Ready(Ok(())),
        Poll::Ready(Err(e)) => Poll::Ready(Err(e)),
        Poll::Pending => Poll::Pending,
    }
}

fn poll_write_inner(inner: &Inner, cx: &mut Context<'_>, data: &[u8]) -> Poll<io::Result<usize>> {
    if data.is_empty() {
        return Poll::Ready(Ok(0));
    }
    let mut s = inner.lock();
    let room = s.conn.send_capacity() as usize;
    let r = if data.len() < STAGE_MIN || room == 0 {
        s.conn.write(data)
    } else {
        // A large write: copy it outside the lock (the driver keeps running meanwhile), then
        // hand the copy over. Only this half writes, so the room can only have grown unless
        // the engine lowered its unsent limit; whatever it does not take is not reported
        // written.
        drop(s);
        let pieces = stage_copy(inner, &data[..room.min(data.len())]);
        s = inner.lock();
        let mut r = Ok(0);
        for piece in pieces {
            let len = piece.len();
            match s.conn.write_bytes(piece) {
                Ok(n) => {
                    r = Ok(r.unwrap_or(0) + n);
                    if n < len {
                        break;
                    }
                }
                Err(e) if r == Ok(0) => {
                    r = Err(e);
                    break;
                }
                Err(_) => break,
            }
        }
        r
    };
    wrote(inner, s, cx, r)
}

/// Copies all of `data` into staging blocks: one piece, or two where it straddles the end
/// of a block (more only if it is larger than a block).
///
/// Copying only what the current block has room for would make the application's next
/// write start mid-block too: after one write cut short by the room left, every later
/// write of a block's size would be split in two (twice the writes, locks and polls; half
/// of a bulk transfer's writes were such halves in `benches/runtime.rs`).
fn stage_copy(inner: &Inner, mut data: &[u8]) -> Vec<bytes::Bytes> {
    let mut stage = inner.stage.lock().unwrap_or_else(|p| p.into_inner());
    let mut pieces = Vec::with_capacity(2);
    while !data.is_empty() {
        let piece = stage.copy(data);
        data = &data[piece.len()..];
        pieces.push(piece);
    }
    pieces
}

/// What the engine's `write`/`write_bytes` returned, for `poll_write`: after data was taken,
/// the frames go out from this task where links are idle (`driver::direct_transmit`); with
/// no room, the task waits to be woken.
fn wrote(
    inner: &Inner,
    mut s: MutexGuard<'_, Shared>,
    cx: &mut Context<'_>,
    r: Result<usize, WriteError>,
) -> Poll<io::Result<usize>> {
    match r {
        Ok(0) => {
            if let ConnectionState::Failed(e) = &*inner.state.borrow() {
                return Poll::Ready(Err(conn_err(e.clone())));
            }
            s.write_waker = Some(cx.waker().clone());
            Poll::Pending
        }
        Ok(n) => {
            let (jobs, wake_driver) = crate::driver::direct_transmit(&mut s, inner.now());
            drop(s);
            for job in jobs {
                job.run();
            }
            // Timers and links whose writer was busy are the driver's.
            if wake_driver {
                inner.wake.notify_one();
            }
            Poll::Ready(Ok(n))
        }
        Err(WriteError::Finished) => Poll::Ready(Err(io::Error::new(
            io::ErrorKind::BrokenPipe,
            "write after shutdown",
        ))),
        Err(WriteError::Closed(e)) => Poll::Ready(Err(conn_err(e))),
        Err(e) => Poll::Ready(Err(io::Error::other(e))),
    }
}

fn poll_shutdown_inner(inner: &Inner) -> Poll<io::Result<()>> {
    let r = inner.lock().conn.finish();
    inner.wake.notify_one();
    match r {
        Ok(()) | Err(WriteError::Finished) => Poll::Ready(Ok(())),
        Err(WriteError::Closed(e)) => Poll::Ready(Err(conn_err(e))),
        Err(e) => Poll::Ready(Err(io::Error::other(e))),
    }
}

/// Like `poll_read_inner`, but hands out the received bytes themselves (no copy).
fn poll_read_chunk_inner(
    inner: &Inner,
    cx: &mut Context<'_>,
    max: usize,
) -> Poll<io::Result<Option<bytes::Bytes>>> {
    let mut s = inner.lock();
    if s.read_finished {
        return Poll::Ready(Ok(None));
    }
    match s.conn.read(max.max(1)) {
        Ok(Read::Data(b)) => {
            // Only a window worth advertising needs the driver.
            let wake = s.conn.window_update_due();
            drop(s);
            if wake {
                inner.wake.notify_one();
            }
            Poll::Ready(Ok(Some(b)))
        }
        Ok(Read::Finished) => {
            s.read_finished = true;
            Poll::Ready(Ok(None))
        }
        Ok(Read::Blocked) => {
            if let ConnectionState::Failed(e) = &*inner.state.borrow() {
                return Poll::Ready(Err(conn_err(e.clone())));
            }
            s.read_waker = Some(cx.waker().clone());
            Poll::Pending
        }
        Err(e) => Poll::Ready(Err(conn_err(e))),
    }
}

/// Hands `data` (or what fits of it) to the engine without copying; the rest stays in
/// `data`. Ready once something was taken.
fn poll_write_chunk_inner(
    inner: &Inner,
    cx: &mut Context<'_>,
    data: &mut bytes::Bytes,
) -> Poll<io::Result<()>> {
    if data.is_empty() {
        return Poll::Ready(Ok(()));
    }
    let mut s = inner.lock();
    // Takes what fits (and asks to be told when there is room if that is nothing).
    let r = s.conn.write_bytes(data.clone());
    wrote(inner, s, cx, r).map_ok(|n| bytes::Buf::advance(data, n))
}

/// One aggregated connection: a reliable, ordered, full-duplex byte stream over many links.
///
/// Implements tokio's [`AsyncRead`] and [`AsyncWrite`]; [`Connection::into_split`] gives two
/// halves that can move to different tasks. `shutdown` half-closes: the peer reads the end of
/// the stream after everything written, and this side can still read. Dropping every handle
/// of a connection finishes it: what was written is still delivered, and what the peer
/// still sends is discarded until both ends are done (or 30 s pass, then it is aborted).
///
/// Get one from [`crate::client::connect`] or [`crate::server::Listener::accept`].
///
/// ```no_run
/// # #[tokio::main] async fn main() -> Result<(), Box<dyn std::error::Error>> {
/// use braid::client::{connect, ClientConfig};
/// use braid::secure::Key;
/// use tokio::io::{AsyncReadExt, AsyncWriteExt};
///
/// let key = Key::read_file("braid.key".as_ref())?;
/// let specs = ["tcp://server:7700?count=4".parse()?];
/// let mut conn = connect(&specs, ClientConfig::new(key)).await?;
/// conn.write_all(b"hello").await?;
/// conn.shutdown().await?;
/// let mut reply = Vec::new();
/// conn.read_to_end(&mut reply).await?;
/// # Ok(()) }
/// ```
pub struct Connection {
    app: AppRef,
}

impl std::fmt::Debug for Connection {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Connection")
            .field("id", &self.app.0.id)
            .finish()
    }
}

impl Connection {
    pub(crate) fn new(inner: Arc<Inner>) -> Self {
        Connection {
            app: AppRef::new(inner),
        }
    }

    /// A handle for managing links, stats and events; it does not keep the connection open.
    ///
    /// ```no_run
    /// # async fn f(conn: braid::Connection) {
    /// let handle = conn.handle();
    /// for link in handle.links() { println!("{} {}", link.id, link.peer); }
    /// # }
    /// ```
    pub fn handle(&self) -> ConnectionHandle {
        ConnectionHandle(self.app.0.clone())
    }

    /// Splits into a read half and a write half that can be used from different tasks.
    ///
    /// ```no_run
    /// # async fn f(conn: braid::Connection) -> std::io::Result<()> {
    /// let (mut rd, mut wr) = conn.into_split();
    /// tokio::spawn(async move { tokio::io::copy(&mut tokio::io::stdin(), &mut wr).await });
    /// tokio::io::copy(&mut rd, &mut tokio::io::stdout()).await?;
    /// # Ok(()) }
    /// ```
    pub fn into_split(self) -> (ReadHalf, WriteHalf) {
        let inner = self.app.0.clone();
        (
            ReadHalf {
                app: AppRef::new(inner.clone()),
            },
            WriteHalf {
                app: AppRef::new(inner),
            },
        )
    }

    /// Reads the next received bytes, at most `max`, without copying them; `None` once the
    /// peer finished and everything was read. The zero-copy counterpart of `read`.
    ///
    /// # Errors
    /// The connection failed (see [`ConnectionState`]).
    ///
    /// ```no_run
    /// # async fn f(mut conn: braid::Connection) -> std::io::Result<()> {
    /// while let Some(bytes) = conn.read_chunk(1 << 20).await? {
    ///     println!("{} bytes", bytes.len());
    /// }
    /// # Ok(()) }
    /// ```
    pub async fn read_chunk(&mut self, max: usize) -> io::Result<Option<bytes::Bytes>> {
        std::future::poll_fn(|cx| poll_read_chunk_inner(&self.app.0, cx, max)).await
    }

    /// Writes all of `data` without copying it (the engine keeps the buffer until the peer
    /// acknowledged it); waits for room in the send buffer. The zero-copy counterpart of
    /// `write_all`.
    ///
    /// # Errors
    /// The connection failed, or this side already shut down writing.
    ///
    /// ```no_run
    /// # async fn f(mut conn: braid::Connection) -> std::io::Result<()> {
    /// conn.write_chunk(bytes::Bytes::from(vec![0u8; 1 << 20])).await?;
    /// # Ok(()) }
    /// ```
    pub async fn write_chunk(&mut self, mut data: bytes::Bytes) -> io::Result<()> {
        while !data.is_empty() {
            std::future::poll_fn(|cx| poll_write_chunk_inner(&self.app.0, cx, &mut data)).await?;
        }
        Ok(())
    }

    /// The connection's id (the same on both ends).
    ///
    /// ```no_run
    /// # fn f(conn: braid::Connection) { println!("connection {}", conn.id()); }
    /// ```
    pub fn id(&self) -> ConnectionId {
        self.app.0.id
    }
}

impl AsyncRead for Connection {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        poll_read_inner(&self.app.0, cx, buf)
    }
}

impl AsyncWrite for Connection {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        poll_write_inner(&self.app.0, cx, buf)
    }

    fn poll_flush(self: Pin<&mut Self>, _cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Poll::Ready(Ok(()))
    }

    fn poll_shutdown(self: Pin<&mut Self>, _cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        poll_shutdown_inner(&self.app.0)
    }
}

/// The reading half of a [`Connection`] (from [`Connection::into_split`]).
///
/// ```no_run
/// # async fn f(conn: braid::Connection) -> std::io::Result<()> {
/// use tokio::io::AsyncReadExt;
/// let (mut rd, _wr) = conn.into_split();
/// let mut buf = Vec::new();
/// rd.read_to_end(&mut buf).await?;
/// # Ok(()) }
/// ```
pub struct ReadHalf {
    app: AppRef,
}

impl std::fmt::Debug for ReadHalf {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ReadHalf")
            .field("id", &self.app.0.id)
            .finish()
    }
}

impl ReadHalf {
    /// [`Connection::read_chunk`] on this half.
    ///
    /// # Errors
    /// The connection failed.
    ///
    /// ```no_run
    /// # async fn f(mut rd: braid::ReadHalf) -> std::io::Result<()> {
    /// let first = rd.read_chunk(64 * 1024).await?;
    /// # Ok(()) }
    /// ```
    pub async fn read_chunk(&mut self, max: usize) -> io::Result<Option<bytes::Bytes>> {
        std::future::poll_fn(|cx| poll_read_chunk_inner(&self.app.0, cx, max)).await
    }

    /// A handle for managing links, stats and events.
    ///
    /// ```no_run
    /// # fn f(rd: braid::ReadHalf) { let _h = rd.handle(); }
    /// ```
    pub fn handle(&self) -> ConnectionHandle {
        ConnectionHandle(self.app.0.clone())
    }
}

impl AsyncRead for ReadHalf {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        poll_read_inner(&self.app.0, cx, buf)
    }
}

/// The writing half of a [`Connection`] (from [`Connection::into_split`]).
///
/// ```no_run
/// # async fn f(conn: braid::Connection) -> std::io::Result<()> {
/// use tokio::io::AsyncWriteExt;
/// let (_rd, mut wr) = conn.into_split();
/// wr.write_all(b"bye").await?;
/// wr.shutdown().await?;
/// # Ok(()) }
/// ```
pub struct WriteHalf {
    app: AppRef,
}

impl std::fmt::Debug for WriteHalf {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("WriteHalf")
            .field("id", &self.app.0.id)
            .finish()
    }
}

impl WriteHalf {
    /// [`Connection::write_chunk`] on this half.
    ///
    /// # Errors
    /// The connection failed, or this side already shut down writing.
    ///
    /// ```no_run
    /// # async fn f(mut wr: braid::WriteHalf) -> std::io::Result<()> {
    /// wr.write_chunk(bytes::Bytes::from_static(b"hello")).await?;
    /// # Ok(()) }
    /// ```
    pub async fn write_chunk(&mut self, mut data: bytes::Bytes) -> io::Result<()> {
        while !data.is_empty() {
            std::future::poll_fn(|cx| poll_write_chunk_inner(&self.app.0, cx, &mut data)).await?;
        }
        Ok(())
    }

    /// A handle for managing links, stats and events.
    ///
    /// ```no_run
    /// # fn f(wr: braid::WriteHalf) { let _h = wr.handle(); }
    /// ```
    pub fn handle(&self) -> ConnectionHandle {
        ConnectionHandle(self.app.0.clone())
    }
}

impl AsyncWrite for WriteHalf {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        poll_write_inner(&self.app.0, cx, buf)
    }

    fn poll_flush(self: Pin<&mut Self>, _cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Poll::Ready(Ok(()))
    }

    fn poll_shutdown(self: Pin<&mut Self>, _cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        poll_shutdown_inner(&self.app.0)
    }
}

/// Manages a connection's links and watches it, without keeping it open. Cheap to clone.
///
/// ```no_run
/// # async fn f(conn: braid::Connection) -> Result<(), braid::LinkError> {
/// let h = conn.handle();
/// h.add_link("tcp://server:7700".parse().unwrap())?;
/// let mut events = h.events();
/// loop {
///     match events.recv().await {
///         Ok(ev) => println!("{ev:?}"),
///         Err(tokio::sync::broadcast::error::RecvError::Lagged(_)) => continue,
///         Err(_) => break, // the connection is over
///     }
/// }
/// # Ok(()) }
/// ```
#[derive(Clone)]
pub struct ConnectionHandle(pub(crate) Arc<Inner>);

impl std::fmt::Debug for ConnectionHandle {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ConnectionHandle")
            .field("id", &self.0.id)
            .finish()
    }
}

impl ConnectionHandle {
    /// The connection's id.
    ///
    /// ```no_run
    /// # fn f(h: braid::ConnectionHandle) { println!("{}", h.id()); }
    /// ```
    pub fn id(&self) -> ConnectionId {
        self.0.id
    }

    /// Dials `spec` (`count` sockets) and keeps its links up, redialling with backoff, while
    /// the connection lives. On a server connection the dialled links join as if the client
    /// had dialled them.
    ///
    /// # Errors
    /// [`LinkError::Closed`] when the connection is over.
    ///
    /// ```no_run
    /// # fn f(h: braid::ConnectionHandle) -> Result<(), braid::LinkError> {
    /// h.add_link("tcp://server:7700?bind=192.0.2.7".parse().unwrap())?;
    /// # Ok(()) }
    /// ```
    pub fn add_link(&self, spec: LinkSpec) -> Result<(), LinkError> {
        if self.0.is_over() {
            return Err(LinkError::Closed);
        }
        for _ in 0..spec.count() {
            crate::client::spawn_slot(self.0.clone(), spec.clone(), None);
        }
        Ok(())
    }

    /// Joins an already connected byte pipe (made by socat, a pipe, anything) as a link.
    ///
    /// # Errors
    /// [`LinkError::Closed`] when the connection is over.
    ///
    /// ```no_run
    /// # async fn f(h: braid::ConnectionHandle) -> Result<(), Box<dyn std::error::Error>> {
    /// let sock = tokio::net::TcpStream::connect("127.0.0.1:7700").await?;
    /// h.add_raw_link(braid::transport::RawLink::from_tcp(sock))?;
    /// # Ok(()) }
    /// ```
    pub fn add_raw_link(&self, link: RawLink) -> Result<(), LinkError> {
        if self.0.is_over() {
            return Err(LinkError::Closed);
        }
        let inner = self.0.clone();
        tokio::spawn(async move {
            let peer = link.peer.clone();
            if let Err(e) = crate::join::join_existing(&inner, link, None).await {
                tracing::warn!(%peer, "link not added: {e}");
            }
        });
        Ok(())
    }

    /// Removes a link gracefully: no new data goes on it, it closes once its data is
    /// acknowledged. A link this side dialled from a spec is not redialled; one the peer
    /// dialled from a spec is redialled by the peer, with backoff, like any link that drops
    /// (only removing the spec on the peer stops that).
    ///
    /// Calling it again while the link drains does nothing more.
    ///
    /// # Errors
    /// [`LinkError::Closed`] when the connection is over, [`LinkError::NoSuchLink`] when
    /// `link` is not a live link of this connection.
    ///
    /// ```no_run
    /// # fn f(h: braid::ConnectionHandle) -> Result<(), braid::LinkError> {
    /// if let Some(l) = h.links().first() { h.remove_link(l.id)?; }
    /// # Ok(()) }
    /// ```
    pub fn remove_link(&self, link: LinkId) -> Result<(), LinkError> {
        let mut s = self.0.lock();
        if self.0.is_over() {
            return Err(LinkError::Closed);
        }
        if !s.links.contains_key(&link) {
            return Err(LinkError::NoSuchLink(link));
        }
        s.removing.insert(link);
        drop(s);
        self.0.wake.notify_one();
        Ok(())
    }

    /// Stops keeping links of `spec` up and removes its links gracefully (the inverse of
    /// [`ConnectionHandle::add_link`]). Returns how many links were removed.
    ///
    /// ```no_run
    /// # fn f(h: braid::ConnectionHandle) {
    /// let n = h.remove_spec(&"tcp://server:7700?bind=192.0.2.7".parse().unwrap());
    /// # }
    /// ```
    pub fn remove_spec(&self, spec: &LinkSpec) -> usize {
        let label = spec.to_string();
        self.0
            .slots
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .retain(|(l, task)| {
                if *l == label {
                    task.abort();
                }
                *l != label
            });
        let ids: Vec<LinkId> = self
            .links()
            .into_iter()
            .filter(|l| l.spec.as_ref() == Some(spec))
            .map(|l| l.id)
            .collect();
        // The driver removes them, and also a link of the spec whose `Add` it has not handled
        // yet (a stopped slot's link, already dialled): this comes after that `Add` on the
        // same channel.
        let to_driver = &self.0.to_driver;
        if let Err(tokio::sync::mpsc::error::TrySendError::Full(m)) =
            to_driver.try_send(crate::driver::ToDriver::RemoveSpec(spec.clone()))
        {
            if let Ok(rt) = tokio::runtime::Handle::try_current() {
                let to_driver = to_driver.clone();
                rt.spawn(async move { to_driver.send(m).await });
            }
        }
        ids.len()
    }

    /// The live links with their counters.
    ///
    /// ```no_run
    /// # fn f(h: braid::ConnectionHandle) {
    /// for l in h.links() { println!("{} {} {:.1} MB/s", l.id, l.peer, l.stats.rate / 1e6); }
    /// # }
    /// ```
    pub fn links(&self) -> Vec<LinkInfo> {
        let s = self.0.lock();
        s.links
            .iter()
            .map(|(id, (peer, spec))| LinkInfo {
                id: *id,
                peer: peer.clone(),
                spec: spec.clone(),
                stats: s.conn.link_stats(*id).unwrap_or_default(),
            })
            .collect()
    }

    /// Counters of one link (also of a dead one, while the engine remembers it).
    ///
    /// ```no_run
    /// # fn f(h: braid::ConnectionHandle, id: braid::proto::agg::LinkId) {
    /// if let Some(s) = h.link_stats(id) { println!("{} bytes sent", s.bytes_sent); }
    /// # }
    /// ```
    pub fn link_stats(&self, link: LinkId) -> Option<LinkStats> {
        self.0.lock().conn.link_stats(link)
    }

    /// Connection-wide counters.
    ///
    /// ```no_run
    /// # fn f(h: braid::ConnectionHandle) { println!("{} bytes read", h.stats().bytes_read); }
    /// ```
    pub fn stats(&self) -> agg::ConnectionStats {
        self.0.lock().conn.stats()
    }

    /// Subscribes to the connection's events (from now on).
    ///
    /// ```no_run
    /// # async fn f(h: braid::ConnectionHandle) {
    /// let mut ev = h.events();
    /// if let Ok(e) = ev.recv().await { println!("{e:?}"); }
    /// # }
    /// ```
    pub fn events(&self) -> broadcast::Receiver<ConnectionEvent> {
        self.0.events.subscribe()
    }

    /// The connection's state now.
    ///
    /// ```no_run
    /// # fn f(h: braid::ConnectionHandle) { println!("{:?}", h.state()); }
    /// ```
    pub fn state(&self) -> ConnectionState {
        self.0.state.borrow().clone()
    }

    /// Waits until the connection is over (closed cleanly or failed) and its links have
    /// delivered their last frames, and says how it ended.
    ///
    /// # Cancel safety
    /// Cancel safe.
    ///
    /// ```no_run
    /// # async fn f(h: braid::ConnectionHandle) {
    /// match h.closed().await {
    ///     braid::ConnectionState::Closed => println!("all data delivered"),
    ///     other => println!("ended: {other:?}"),
    /// }
    /// # }
    /// ```
    pub async fn closed(&self) -> ConnectionState {
        let mut rx = self.0.driver_done.subscribe();
        let _ = rx.wait_for(|done| *done).await;
        self.state()
    }

    /// Aborts the connection at once; the peer sees a reset with `code`.
    ///
    /// ```no_run
    /// # fn f(h: braid::ConnectionHandle) { h.abort(1); }
    /// ```
    pub fn abort(&self, code: u32) {
        let now = self.0.now();
        self.0.lock().conn.abort(code, now);
        self.0.wake.notify_one();
    }
}
