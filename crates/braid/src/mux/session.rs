//! The session handle and the state it shares with streams and the driver.

use std::collections::{HashMap, VecDeque};
use std::future::poll_fn;
use std::sync::{Arc, Mutex, MutexGuard};
use std::task::{Context, Poll, Waker};
use std::time::{Duration, Instant};

use braid_proto::Time;
use braid_proto::mux::{Config, Connection, ConnectionError, Event, GoAwayCode, OpenError, Side};
use thiserror::Error;
use tokio::io::{AsyncRead, AsyncWrite};

use super::StreamId;
use super::driver::{Driver, Wire};
use super::pool::BlockPool;
use super::stream::Stream;

/// Why a session operation failed.
#[derive(Clone, Debug, Error)]
#[non_exhaustive]
pub enum SessionError {
    /// The session ended.
    #[error("session closed: {0}")]
    Closed(ConnectionError),
    /// The underlying connection failed.
    #[error("I/O error: {0}")]
    Io(Arc<std::io::Error>),
    /// A GoAway was sent or received: no new streams.
    #[error("session is going away")]
    GoingAway,
    /// The configured maximum number of streams is open (`max_streams`, or as many as
    /// `max_session_window` holds initial windows).
    #[error("too many streams")]
    TooManyStreams,
    /// Stream ids are exhausted; open a new session.
    #[error("stream ids exhausted")]
    IdsExhausted,
}

#[derive(Default)]
pub(crate) struct StreamWakers {
    pub(crate) read: Option<Waker>,
    pub(crate) write: Option<Waker>,
    /// In `State::wire_waiters`.
    pub(crate) wire_queued: bool,
    /// Woken from `wire_waiters`: may write directly although others still wait.
    pub(crate) wire_pass: bool,
    /// Had its turn at the transport but no flow-control credit to use it: it queues at the
    /// front once credit comes (a stream whose window update came late would otherwise
    /// lose a whole round, and get two thirds of the others' share).
    pub(crate) wire_owed: bool,
}

/// Everything behind the lock.
pub(crate) struct State {
    pub(crate) conn: Connection,
    pub(crate) wakers: HashMap<StreamId, StreamWakers>,
    pub(crate) driver: Option<Waker>,
    /// Streams waiting to write directly to the transport, in order (see `Stream::poll_write`).
    pub(crate) wire_waiters: VecDeque<StreamId>,
    accept_wakers: Vec<Waker>,
    open_wakers: Vec<Waker>,
    ping_wakers: Vec<Waker>,
    closed_wakers: Vec<Waker>,
    /// Recently answered pings: (id, rtt).
    pongs: VecDeque<(u32, Duration)>,
    /// Live `Session` handles.
    handles: usize,
    pub(crate) io_error: Option<Arc<std::io::Error>>,
    pub(crate) driver_done: bool,
}

impl State {
    /// Wakes the driver if the state machine has something to send.
    pub(crate) fn wake_driver_if_needed(&mut self) {
        if self.conn.wants_transmit() {
            if let Some(w) = self.driver.take() {
                w.wake();
            }
        }
    }

    /// Dispatches the state machine's events to whoever waits.
    pub(crate) fn dispatch_events(&mut self) {
        while let Some(ev) = self.conn.poll_event() {
            match ev {
                Event::Incoming | Event::PeerGoAway(_) => wake_all(&mut self.accept_wakers),
                Event::Readable(id) => {
                    if let Some(w) = self.wakers.get_mut(&id).and_then(|w| w.read.take()) {
                        w.wake();
                    }
                }
                Event::Writable(id) => {
                    if let Some(w) = self.wakers.get_mut(&id).and_then(|w| w.write.take()) {
                        w.wake();
                    }
                }
                Event::CanOpen => wake_all(&mut self.open_wakers),
                Event::Pong { id, rtt } => {
                    if self.pongs.len() >= 64 {
                        self.pongs.pop_front();
                    }
                    self.pongs.push_back((id, rtt));
                    wake_all(&mut self.ping_wakers);
                }
                Event::Closed(_) => self.wake_everyone(),
                _ => {}
            }
        }
    }

    /// The transport is free: wakes the next stream waiting to write to it directly. A woken
    /// stream that does not write hands the turn on; one whose task stopped polling (a write
    /// cancelled right then) holds the others up until the driver's next turn, which comes
    /// within `WIRE_RECHECK` while streams wait.
    pub(crate) fn wake_wire_waiters(&mut self) {
        let mut woken = 0;
        while woken < 1 {
            let Some(id) = self.wire_waiters.pop_front() else {
                return;
            };
            let Some(w) = self.wakers.get_mut(&id) else {
                continue;
            };
            if !w.wire_queued {
                continue;
            }
            w.wire_queued = false;
            // Its task may have been woken already (credit came, say) and not have polled
            // yet: it still gets the pass, or it would find others waiting when it polls
            // and go to the back of the line, a whole round lost. (A woken stream that never
            // polls is covered by the driver's `WIRE_RECHECK`.)
            w.wire_pass = true;
            if let Some(waker) = w.write.take() {
                waker.wake();
            }
            woken += 1;
        }
    }

    /// Queues stream `id` to write directly once the transport is free, woken through `cx`;
    /// at the front if it was woken from the queue and found the transport taken again (it
    /// keeps its place in line).
    pub(crate) fn wait_for_wire(&mut self, id: StreamId, cx: &Context<'_>, front: bool) {
        let w = self.wakers.entry(id).or_default();
        if !w.write.as_ref().is_some_and(|r| r.will_wake(cx.waker())) {
            w.write = Some(cx.waker().clone());
        }
        if !w.wire_queued {
            w.wire_queued = true;
            if front {
                self.wire_waiters.push_front(id);
            } else {
                self.wire_waiters.push_back(id);
            }
        }
    }

    pub(crate) fn wake_everyone(&mut self) {
        wake_all(&mut self.accept_wakers);
        wake_all(&mut self.open_wakers);
        wake_all(&mut self.ping_wakers);
        wake_all(&mut self.closed_wakers);
        for w in self.wakers.values_mut() {
            if let Some(r) = w.read.take() {
                r.wake();
            }
            if let Some(wr) = w.write.take() {
                wr.wake();
            }
        }
    }

    /// The error to report once the session is over.
    pub(crate) fn closed_error(&self) -> Option<SessionError> {
        if let Some(e) = &self.io_error {
            return Some(SessionError::Io(e.clone()));
        }
        self.conn.error().cloned().map(SessionError::Closed)
    }
}

fn wake_all(wakers: &mut Vec<Waker>) {
    for w in wakers.drain(..) {
        w.wake();
    }
}

fn register(wakers: &mut Vec<Waker>, cx: &Context<'_>) {
    if !wakers.iter().any(|w| w.will_wake(cx.waker())) {
        wakers.push(cx.waker().clone());
    }
}

pub(crate) struct Shared {
    state: Mutex<State>,
    /// The transport and the frames waiting for it; locked before `state` when both are.
    wire: Mutex<Wire>,
    epoch: Instant,
    /// Blocks that large writes are copied into.
    pub(crate) blocks: Arc<BlockPool>,
    /// The transport writes vectored: large writes go to it directly.
    pub(crate) vectored: bool,
}

impl Shared {
    pub(crate) fn lock(&self) -> MutexGuard<'_, State> {
        // A panic while holding the lock cannot leave the state machine half-updated in a way
        // that matters more than losing the session; keep going with the inner value.
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Locks the transport (before the state if both are needed).
    pub(crate) fn wire(&self) -> MutexGuard<'_, Wire> {
        self.wire.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// The transport if nobody holds it: for callers holding the state's lock.
    pub(crate) fn try_wire(&self) -> Option<MutexGuard<'_, Wire>> {
        match self.wire.try_lock() {
            Ok(w) => Some(w),
            Err(std::sync::TryLockError::Poisoned(e)) => Some(e.into_inner()),
            Err(std::sync::TryLockError::WouldBlock) => None,
        }
    }

    pub(crate) fn now(&self) -> Time {
        Time::from_micros(self.epoch.elapsed().as_micros() as u64)
    }

    pub(crate) fn instant(&self, t: Time) -> Instant {
        self.epoch + Duration::from_micros(t.as_micros())
    }
}

/// A multiplexed session over one connection; cheap to clone.
///
/// Created with [`Session::client`] or [`Session::server`], which spawn the task that drives
/// the connection. Both sides can [`open`](Session::open) and [`accept`](Session::accept)
/// streams. When the last `Session` handle is dropped the session goes away gracefully: no new
/// streams, existing [`Stream`]s finish, then the connection is shut down.
///
/// ```no_run
/// use braid::mux::{Config, Session};
///
/// # async fn run() -> std::io::Result<()> {
/// let listener = tokio::net::TcpListener::bind("127.0.0.1:7000").await?;
/// let (tcp, _) = listener.accept().await?;
/// let session = Session::server(tcp, Config::default());
/// while let Some(mut stream) = session.accept().await {
///     tokio::spawn(async move {
///         let (mut r, mut w) = tokio::io::split(&mut stream);
///         let _ = tokio::io::copy(&mut r, &mut w).await; // echo
///     });
/// }
/// # Ok(()) }
/// ```
pub struct Session {
    shared: Arc<Shared>,
}

impl Session {
    /// Starts the client side of a session over `io` (opens odd stream ids).
    ///
    /// # Panics
    /// Outside a tokio runtime (the driver task is spawned on the current one).
    ///
    /// ```no_run
    /// # async fn run() -> std::io::Result<()> {
    /// let tcp = tokio::net::TcpStream::connect("127.0.0.1:7000").await?;
    /// let session = braid::mux::Session::client(tcp, braid::mux::Config::default());
    /// # Ok(()) }
    /// ```
    pub fn client<T>(io: T, config: Config) -> Session
    where
        T: AsyncRead + AsyncWrite + Send + 'static,
    {
        Self::new(io, config, Side::Client)
    }

    /// Starts the server side of a session over `io` (opens even stream ids).
    ///
    /// # Panics
    /// Outside a tokio runtime (the driver task is spawned on the current one).
    ///
    /// ```no_run
    /// # async fn run() -> std::io::Result<()> {
    /// let listener = tokio::net::TcpListener::bind("127.0.0.1:7000").await?;
    /// let (tcp, _) = listener.accept().await?;
    /// let session = braid::mux::Session::server(tcp, braid::mux::Config::default());
    /// # Ok(()) }
    /// ```
    pub fn server<T>(io: T, config: Config) -> Session
    where
        T: AsyncRead + AsyncWrite + Send + 'static,
    {
        Self::new(io, config, Side::Server)
    }

    fn new<T>(io: T, config: Config, side: Side) -> Session
    where
        T: AsyncRead + AsyncWrite + Send + 'static,
    {
        let epoch = Instant::now();
        let wire = Wire::new(io);
        let conn = Connection::new(side, config, Time::ZERO);
        let shared = Arc::new(Shared {
            state: Mutex::new(State {
                conn,
                wakers: HashMap::new(),
                driver: None,
                wire_waiters: VecDeque::new(),
                accept_wakers: Vec::new(),
                open_wakers: Vec::new(),
                ping_wakers: Vec::new(),
                closed_wakers: Vec::new(),
                pongs: VecDeque::new(),
                handles: 1,
                io_error: None,
                driver_done: false,
            }),
            vectored: wire.is_vectored(),
            wire: Mutex::new(wire),
            epoch,
            blocks: Arc::default(),
        });
        tokio::spawn(Driver::new(shared.clone()));
        Session { shared }
    }

    /// Opens a new stream. The peer learns of it with the stream's first frame, sent at once.
    ///
    /// # Errors
    /// [`SessionError::GoingAway`] after a GoAway either way, [`SessionError::TooManyStreams`]
    /// at the stream limit, [`SessionError::Closed`]/[`SessionError::Io`] once the session
    /// ended.
    ///
    /// # Cancel safety
    /// Cancel safe: a cancelled `open` opens nothing.
    ///
    /// ```no_run
    /// # async fn run(session: braid::mux::Session) -> Result<(), braid::mux::SessionError> {
    /// let stream = session.open().await?;
    /// println!("opened stream {}", stream.id());
    /// # Ok(()) }
    /// ```
    pub async fn open(&self) -> Result<Stream, SessionError> {
        poll_fn(|cx| self.poll_open(cx)).await
    }

    fn poll_open(&self, cx: &Context<'_>) -> Poll<Result<Stream, SessionError>> {
        let mut st = self.shared.lock();
        if let Some(e) = st.closed_error() {
            return Poll::Ready(Err(e));
        }
        match st.conn.open() {
            Ok(id) => {
                st.wake_driver_if_needed();
                Poll::Ready(Ok(Stream::new(self.shared.clone(), id)))
            }
            Err(OpenError::Blocked) => {
                register(&mut st.open_wakers, cx);
                Poll::Pending
            }
            Err(OpenError::GoingAway) => Poll::Ready(Err(SessionError::GoingAway)),
            Err(OpenError::TooManyStreams) => Poll::Ready(Err(SessionError::TooManyStreams)),
            Err(OpenError::Closed(e)) => Poll::Ready(Err(SessionError::Closed(e))),
            Err(_) => Poll::Ready(Err(SessionError::IdsExhausted)),
        }
    }

    /// Waits for the next stream the peer opens; `None` once the session has ended or the
    /// peer went away and every stream it opened has been accepted. The stream is ACKed now.
    ///
    /// # Cancel safety
    /// Cancel safe: a stream is only taken when this returns it.
    ///
    /// ```no_run
    /// # async fn run(session: braid::mux::Session) {
    /// while let Some(stream) = session.accept().await {
    ///     println!("peer opened stream {}", stream.id());
    /// }
    /// # }
    /// ```
    pub async fn accept(&self) -> Option<Stream> {
        poll_fn(|cx| self.poll_accept(cx)).await
    }

    /// Polls for the next inbound stream, as [`accept`](Self::accept) does; for adapters such
    /// as a listener type that a server framework polls.
    ///
    /// ```no_run
    /// # async fn run(session: braid::mux::Session) {
    /// let next = std::future::poll_fn(|cx| session.poll_accept(cx)).await;
    /// # }
    /// ```
    pub fn poll_accept(&self, cx: &mut Context<'_>) -> Poll<Option<Stream>> {
        let mut st = self.shared.lock();
        if let Some(id) = st.conn.accept() {
            st.wake_driver_if_needed();
            return Poll::Ready(Some(Stream::new(self.shared.clone(), id)));
        }
        if st.closed_error().is_some() || st.driver_done || st.conn.peer_went_away() {
            return Poll::Ready(None);
        }
        register(&mut st.accept_wakers, cx);
        Poll::Pending
    }

    /// Sends a ping and waits for the answer; returns the round-trip time.
    ///
    /// # Errors
    /// [`SessionError::Closed`]/[`SessionError::Io`] if the session ends first.
    ///
    /// # Cancel safety
    /// Cancel safe; the answer to a cancelled ping still updates [`rtt`](Self::rtt).
    ///
    /// ```no_run
    /// # async fn run(session: braid::mux::Session) -> Result<(), braid::mux::SessionError> {
    /// let rtt = session.ping().await?;
    /// println!("rtt {rtt:?}");
    /// # Ok(()) }
    /// ```
    pub async fn ping(&self) -> Result<Duration, SessionError> {
        let mut target: Option<u32> = None;
        poll_fn(|cx| {
            let mut st = self.shared.lock();
            if let Some(id) = target {
                if let Some(&(_, rtt)) = st.pongs.iter().find(|(p, _)| *p == id) {
                    return Poll::Ready(Ok(rtt));
                }
            }
            if let Some(e) = st.closed_error() {
                return Poll::Ready(Err(e));
            }
            if target.is_none() {
                // `None` while too many pings are outstanding: retry on the next pong.
                let now = self.shared.now();
                target = st.conn.ping(now);
                if let Some(w) = st.driver.take() {
                    w.wake();
                }
            }
            register(&mut st.ping_wakers, cx);
            Poll::Pending
        })
        .await
    }

    /// The last round-trip time measured by a ping (keepalive or [`ping`](Self::ping)).
    ///
    /// ```no_run
    /// # fn f(session: braid::mux::Session) {
    /// if let Some(rtt) = session.rtt() { println!("{rtt:?}"); }
    /// # }
    /// ```
    pub fn rtt(&self) -> Option<Duration> {
        self.shared.lock().conn.rtt()
    }

    /// Graceful go-away: tells the peer we open and accept no more streams (GoAway code 0);
    /// existing streams finish, then the connection is shut down.
    ///
    /// ```no_run
    /// # fn f(session: braid::mux::Session) {
    /// session.go_away();
    /// # }
    /// ```
    pub fn go_away(&self) {
        let mut st = self.shared.lock();
        st.conn.go_away();
        st.wake_driver_if_needed();
        if let Some(w) = st.driver.take() {
            w.wake();
        }
    }

    /// Closes the session now, telling the peer `code`; every stream fails.
    ///
    /// ```no_run
    /// # fn f(session: braid::mux::Session) {
    /// session.close(braid::mux::GoAwayCode::InternalError);
    /// # }
    /// ```
    pub fn close(&self, code: GoAwayCode) {
        let mut st = self.shared.lock();
        st.conn.close(code);
        st.wake_everyone();
        if let Some(w) = st.driver.take() {
            w.wake();
        }
    }

    /// Waits until the session has ended and returns why.
    ///
    /// # Cancel safety
    /// Cancel safe.
    ///
    /// ```no_run
    /// # async fn run(session: braid::mux::Session) {
    /// let why = session.closed().await;
    /// eprintln!("session ended: {why}");
    /// # }
    /// ```
    pub async fn closed(&self) -> SessionError {
        poll_fn(|cx| {
            let mut st = self.shared.lock();
            if st.driver_done {
                let e = st.closed_error().unwrap_or(SessionError::Closed(
                    ConnectionError::LocallyClosed(GoAwayCode::Normal),
                ));
                return Poll::Ready(e);
            }
            register(&mut st.closed_wakers, cx);
            Poll::Pending
        })
        .await
    }

    /// Number of streams alive (including dropped ones still finishing).
    ///
    /// ```no_run
    /// # fn f(session: braid::mux::Session) {
    /// println!("{} streams", session.stream_count());
    /// # }
    /// ```
    pub fn stream_count(&self) -> usize {
        self.shared.lock().conn.stream_count()
    }
}

impl Clone for Session {
    fn clone(&self) -> Self {
        self.shared.lock().handles += 1;
        Session {
            shared: self.shared.clone(),
        }
    }
}

impl Drop for Session {
    fn drop(&mut self) {
        let mut st = self.shared.lock();
        st.handles -= 1;
        if st.handles == 0 {
            // Nobody can accept any more: refuse the streams still waiting (they would
            // wait for an ACK forever, and the session never drain).
            st.conn.go_away();
            st.conn.refuse_pending();
            if let Some(w) = st.driver.take() {
                w.wake();
            }
        }
    }
}

impl std::fmt::Debug for Session {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let st = self.shared.lock();
        f.debug_struct("Session")
            .field("side", &st.conn.side())
            .field("streams", &st.conn.stream_count())
            .field("error", &st.conn.error())
            .finish()
    }
}
