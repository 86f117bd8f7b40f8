//! The one task per session that moves bytes between the socket and the state machine.
//!
//! Each poll: read whatever the socket has (always, even while writes are blocked, so pings
//! are answered and window updates arrive), feed it to the state machine, fire timers, fill
//! one output buffer with a batch of frames and write it with as few calls as the socket
//! allows. Nothing is decided here that the state machine could decide.
//!
//! Socket reads go into pooled blocks (payloads are cut out of them without copying and the
//! block is reused once all were read). Large stream writes bypass the driver: see
//! `Stream::poll_write`; the driver writes what they leave over first, and wakes the streams
//! waiting for the transport when its output is empty.

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use std::io::IoSlice;

use braid_proto::mux::{Chunks, FrameSink};
use braid_proto::pool::BlockPool;
use bytes::{Buf, BytesMut};
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::time::Sleep;
use tokio_util::io::poll_read_buf;

use super::session::Shared;

/// Read buffer size: large reads amortise syscalls; Data payloads are split out of it.
const READ_CHUNK: usize = 256 * 1024;
/// Spent read blocks tracked for reuse: their payload pieces wait in the streams' receive
/// buffers until read, up to the session's window (128 MiB by default, 512 blocks).
const READ_BLOCKS_TRACKED: usize = 512;
/// Unused read blocks kept when the pool is trimmed (4 MiB).
const READ_SPARE: usize = 4 * 4;
/// Unused read blocks are trimmed this long after a read, not at every block taken: readers
/// free many blocks at once (a whole window's worth when one catches up), and blocks dropped
/// then would be allocated anew a moment later (page faults, zeroing in the kernel).
const READ_TRIM_AFTER: std::time::Duration = std::time::Duration::from_millis(250);
/// Spent read blocks checked for reuse: a block holds the payloads of several streams and is
/// free once the slowest of their readers has read; later ones often are free before it.
const READ_SCAN: usize = 64;
/// While streams wait for the transport, the driver's turns come at least this often (each
/// wakes the next waiting stream).
const WIRE_RECHECK: std::time::Duration = std::time::Duration::from_millis(5);
/// Bytes of frames gathered before a write.
const WRITE_BATCH: usize = 256 * 1024;
/// How long a closed session keeps reading for the peer's FIN.
const LINGER: std::time::Duration = std::time::Duration::from_secs(2);
/// Slices per vectored write.
const MAX_IOV: usize = 64;
/// Loop turns before yielding to the runtime.
const MAX_TURNS: usize = 16;

/// The transport as a trait object, so streams (not generic over it) can write to it.
pub(crate) trait Transport: AsyncRead + AsyncWrite + Send {}
impl<T: AsyncRead + AsyncWrite + Send> Transport for T {}

/// The transport and the frames waiting to be written to it, behind their own lock (taken
/// before the state's when both are held). The driver reads and writes through it; a
/// stream's large write goes to it directly when nothing else is waiting (see
/// `Stream::poll_write`), sparing the copy into the stream's send buffer.
pub(crate) struct Wire {
    pub(crate) io: Pin<Box<dyn Transport>>,
    /// Frames produced by the state machine (or left over from a direct write) not yet
    /// written: everything else goes after them.
    pub(crate) out: Output,
    pub(crate) needs_flush: bool,
    /// The transport failed or was shut down: no more direct writes.
    pub(crate) closed: bool,
}

impl Wire {
    /// Whether frames go out with vectored writes (and so large writes can go directly).
    pub(crate) fn is_vectored(&self) -> bool {
        matches!(self.out, Output::Vectored(_))
    }

    pub(crate) fn new<T: AsyncRead + AsyncWrite + Send + 'static>(io: T) -> Self {
        let vectored = io.is_write_vectored();
        Wire {
            io: Box::pin(io),
            out: if vectored {
                Output::Vectored(Chunks::default())
            } else {
                Output::Flat(BytesMut::with_capacity(WRITE_BATCH + 64 * 1024))
            },
            needs_flush: false,
            closed: false,
        }
    }
}

/// Frames waiting to be written.
pub(crate) enum Output {
    /// One buffer (for transports without efficient vectored writes).
    Flat(BytesMut),
    /// Chunks for `writev`: Data payloads are not copied.
    Vectored(Chunks),
}

impl Output {
    pub(crate) fn is_empty(&self) -> bool {
        match self {
            Output::Flat(b) => b.is_empty(),
            Output::Vectored(c) => FrameSink::is_empty(c),
        }
    }

    fn advance(&mut self, n: usize) {
        match self {
            Output::Flat(b) => b.advance(n),
            Output::Vectored(c) => c.advance(n),
        }
    }

    fn clear(&mut self) {
        let n = match self {
            Output::Flat(b) => b.len(),
            Output::Vectored(c) => FrameSink::len(c),
        };
        self.advance(n);
    }
}

pub(crate) struct Driver {
    shared: Arc<Shared>,
    read_buf: BytesMut,
    /// Blocks the socket is read into: Data payloads are cut out of them and live on in the
    /// streams' receive buffers; a block is reused once all its pieces were read.
    read_blocks: BlockPool,
    /// When unused read blocks are trimmed next (armed by a read).
    trim_at: Option<braid_proto::Time>,
    read_closed: bool,
    timer: Pin<Box<Sleep>>,
    timer_at: Option<braid_proto::Time>,
    shutting_down: bool,
    linger_until: Option<tokio::time::Instant>,
}

impl Driver {
    pub(crate) fn new(shared: Arc<Shared>) -> Self {
        Driver {
            shared,
            read_buf: BytesMut::new(),
            read_blocks: BlockPool::new(READ_CHUNK, READ_BLOCKS_TRACKED)
                .with_spare(READ_BLOCKS_TRACKED)
                .with_scan(READ_SCAN),
            trim_at: None,
            read_closed: false,
            timer: Box::pin(tokio::time::sleep(std::time::Duration::from_secs(3600))),
            timer_at: None,
            shutting_down: false,
            linger_until: None,
        }
    }

    fn fail_io(&mut self, wire: &mut Wire, e: std::io::Error) {
        wire.out.clear();
        wire.closed = true;
        let mut st = self.shared.lock();
        if st.io_error.is_none() && st.conn.error().is_none() {
            st.io_error = Some(Arc::new(e));
        }
        st.conn.handle_eof();
        st.dispatch_events();
        st.wake_everyone();
        self.read_closed = true;
    }

    /// One turn; returns whether anything happened.
    fn turn(&mut self, cx: &mut Context<'_>) -> bool {
        let mut progress = false;
        let shared = self.shared.clone();

        // Read: never gated on the write side.
        if !self.read_closed {
            self.read_blocks.refill(&mut self.read_buf, READ_CHUNK / 4);
            let mut wire = shared.wire();
            match poll_read_buf(wire.io.as_mut(), cx, &mut self.read_buf) {
                Poll::Ready(Ok(0)) => {
                    drop(wire);
                    self.read_closed = true;
                    let mut st = self.shared.lock();
                    st.conn.handle_eof();
                    st.dispatch_events();
                    progress = true;
                }
                Poll::Ready(Ok(_)) => {
                    progress = true;
                    if self.trim_at.is_none() {
                        self.trim_at = Some(self.shared.now() + READ_TRIM_AFTER);
                    }
                }
                Poll::Ready(Err(e)) => {
                    self.fail_io(&mut wire, e);
                    return true;
                }
                Poll::Pending => {}
            }
        }

        // Lock order: the wire, then the state.
        let mut wire_guard = shared.wire();
        let wire = &mut *wire_guard;
        let mut st = self.shared.lock();
        if !st.driver.as_ref().is_some_and(|w| w.will_wake(cx.waker())) {
            st.driver = Some(cx.waker().clone());
        }
        let now = self.shared.now();
        if !self.read_buf.is_empty() {
            let _ = st.conn.handle_input(now, &mut self.read_buf);
        }
        if st.conn.poll_timeout().is_some_and(|t| t <= now) {
            st.conn.handle_timeout(now);
        }
        if wire.out.is_empty() {
            match &mut wire.out {
                Output::Flat(b) => {
                    st.conn.poll_transmit(now, b, WRITE_BATCH);
                }
                Output::Vectored(c) => {
                    st.conn.poll_transmit(now, c, WRITE_BATCH);
                    c.finish();
                }
            }
        }
        st.dispatch_events();
        let mut deadline = st.conn.poll_timeout();
        let done = (st.conn.is_closed() || st.conn.is_drained() || self.read_closed)
            && !st.conn.wants_transmit();
        drop(st);

        // Write the batch.
        while !wire.out.is_empty() {
            let res = match &wire.out {
                Output::Flat(b) => wire.io.as_mut().poll_write(cx, b),
                Output::Vectored(c) => {
                    let mut slices = [IoSlice::new(&[]); MAX_IOV];
                    let mut k = 0;
                    for chunk in c.chunks().iter().take(MAX_IOV) {
                        slices[k] = IoSlice::new(chunk);
                        k += 1;
                    }
                    wire.io.as_mut().poll_write_vectored(cx, &slices[..k])
                }
            };
            match res {
                Poll::Ready(Ok(0)) => {
                    self.fail_io(wire, std::io::ErrorKind::WriteZero.into());
                    return true;
                }
                Poll::Ready(Ok(n)) => {
                    wire.out.advance(n);
                    wire.needs_flush = true;
                    progress = true;
                }
                Poll::Ready(Err(e)) => {
                    self.fail_io(wire, e);
                    return true;
                }
                Poll::Pending => break,
            }
        }
        if wire.out.is_empty() && wire.needs_flush {
            match wire.io.as_mut().poll_flush(cx) {
                Poll::Ready(Ok(())) => wire.needs_flush = false,
                Poll::Ready(Err(e)) => {
                    self.fail_io(wire, e);
                    return true;
                }
                Poll::Pending => {}
            }
        }
        let wire_idle = wire.out.is_empty() && !wire.needs_flush;
        let out_empty = wire.out.is_empty();
        if done {
            wire.closed = true;
        }
        drop(wire_guard);
        if out_empty {
            let mut st = self.shared.lock();
            if !st.wire_waiters.is_empty() {
                st.wake_wire_waiters();
                // Come back soon even if nothing else happens: a woken stream whose task no
                // longer polls would hold up the others.
                let t = now + WIRE_RECHECK;
                deadline = Some(deadline.map_or(t, |d| d.min(t)));
            }
        }

        // Timer.
        if let Some(t) = self.trim_at {
            if t <= now {
                self.trim_at = None;
                self.read_blocks.trim_unused(READ_SPARE);
            } else {
                deadline = Some(deadline.map_or(t, |d| d.min(t)));
            }
        }
        if deadline != self.timer_at {
            self.timer_at = deadline;
            if let Some(t) = deadline {
                self.timer
                    .as_mut()
                    .reset(tokio::time::Instant::from_std(self.shared.instant(t)));
            }
        }
        if self.timer_at.is_some() && self.timer.as_mut().poll(cx).is_ready() {
            self.timer_at = None;
            progress = true;
        }

        if done && wire_idle {
            self.shutting_down = true;
        }
        progress
    }
}

impl Future for Driver {
    type Output = ();

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<()> {
        let this = self.get_mut();
        if !this.shutting_down {
            let mut turns = 0;
            while this.turn(cx) && !this.shutting_down {
                turns += 1;
                if turns >= MAX_TURNS {
                    cx.waker().wake_by_ref();
                    return Poll::Pending;
                }
            }
            if !this.shutting_down {
                return Poll::Pending;
            }
        }
        if this.linger_until.is_none() {
            // Best effort: the session is over either way.
            let shared = this.shared.clone();
            let mut wire = shared.wire();
            wire.closed = true;
            if wire.io.as_mut().poll_shutdown(cx).is_pending() {
                return Poll::Pending;
            }
            drop(wire);
            let mut st = this.shared.lock();
            if st.conn.error().is_none() {
                st.conn.close(braid_proto::mux::GoAwayCode::Normal);
            }
            st.driver_done = true;
            st.dispatch_events();
            st.wake_everyone();
            drop(st);
            // Lingering close: our FIN is sent; read (and drop) what the peer still sends until
            // its FIN, so frames it had in flight (a pong, a window update) do not meet a reset.
            let until = tokio::time::Instant::now() + LINGER;
            this.linger_until = Some(until);
            this.timer.as_mut().reset(until);
        }
        if this.read_closed || this.timer.as_mut().poll(cx).is_ready() {
            return Poll::Ready(());
        }
        let shared = this.shared.clone();
        let mut wire = shared.wire();
        for _ in 0..MAX_TURNS {
            this.read_buf.clear();
            if this.read_buf.capacity() < 64 * 1024 {
                this.read_buf.reserve(64 * 1024);
            }
            match poll_read_buf(wire.io.as_mut(), cx, &mut this.read_buf) {
                Poll::Ready(Ok(0)) | Poll::Ready(Err(_)) => return Poll::Ready(()),
                Poll::Ready(Ok(_)) => {}
                Poll::Pending => return Poll::Pending,
            }
        }
        cx.waker().wake_by_ref();
        Poll::Pending
    }
}
