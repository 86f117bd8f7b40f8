//! One multiplexed stream: `AsyncRead + AsyncWrite` over the shared state machine.

use std::io::{self, IoSlice};
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use braid_proto::mux::frame::HEADER_LEN;
use braid_proto::mux::{FrameSink, StreamError};
use bytes::Bytes;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};

use super::StreamId;
use super::driver::{Output, Wire};
use super::session::Shared;

/// A bidirectional byte stream inside a [`Session`](super::Session).
///
/// `shutdown` (from `AsyncWriteExt`) sends FIN: the peer reads end of stream while this side
/// can still read. [`reset`](Stream::reset) aborts both directions. Dropping a stream finishes
/// its write side after the queued data and discards whatever else the peer sends.
///
/// ```no_run
/// use tokio::io::{AsyncReadExt, AsyncWriteExt};
/// # async fn run(session: braid::mux::Session) -> std::io::Result<()> {
/// let mut stream = session.open().await.map_err(std::io::Error::other)?;
/// stream.write_all(b"GET /\n").await?;
/// stream.shutdown().await?;
/// let mut answer = String::new();
/// stream.read_to_string(&mut answer).await?;
/// # Ok(()) }
/// ```
pub struct Stream {
    shared: Arc<Shared>,
    id: StreamId,
    /// Chunks `poll_read` takes under the lock and copies out after releasing it, and
    /// `poll_write` copies into outside the lock.
    chunks: Vec<Bytes>,
    /// Frame headers of a direct write (kept: no allocation per write).
    headers: Vec<[u8; HEADER_LEN]>,
    /// Bytes written directly since this stream's task last yielded to the others.
    direct_run: usize,
}

/// Bytes a stream writes directly before its task yields once, when other streams exist: a
/// writer whose direct writes all succeed would otherwise run on for its whole task budget
/// (tens of MiB) while the others wait, since the socket on loopback rarely pushes back.
const DIRECT_QUANTUM: usize = 512 * 1024;

/// Most bytes one direct write takes (more would only wait in the socket's buffer).
const DIRECT_MAX: usize = 1024 * 1024;
/// Most bytes one direct write takes while other streams wait for the transport.
const DIRECT_TURN: usize = braid_proto::mux::INITIAL_WINDOW as usize / 2;
/// Frames per `writev` of a direct write (two slices each).
const DIRECT_FRAMES: usize = 32;

/// Reads and writes at least this large are copied outside the session's lock (smaller ones
/// are copied under it: cheaper than locking twice, and no chunk list is kept).
const COPY_OUTSIDE_LOCK: usize = 16 * 1024;

fn to_io(e: StreamError) -> io::Error {
    match e {
        StreamError::ResetByPeer => io::Error::new(io::ErrorKind::ConnectionReset, e),
        StreamError::ResetLocally => io::Error::new(io::ErrorKind::ConnectionAborted, e),
        StreamError::Finished => io::Error::new(io::ErrorKind::BrokenPipe, e),
        other => io::Error::new(io::ErrorKind::ConnectionAborted, other),
    }
}

impl Stream {
    pub(crate) fn new(shared: Arc<Shared>, id: StreamId) -> Self {
        Stream {
            shared,
            id,
            chunks: Vec::new(),
            headers: Vec::new(),
            direct_run: 0,
        }
    }

    /// The yamux stream id (odd: opened by the client, even: by the server).
    ///
    /// ```no_run
    /// # async fn run(session: braid::mux::Session) {
    /// let stream = session.open().await.unwrap();
    /// assert_eq!(stream.id() % 2, 1); // a client's stream
    /// # }
    /// ```
    pub fn id(&self) -> StreamId {
        self.id
    }

    /// Resets the stream: queued data is dropped, the peer gets RST, reads and writes fail.
    ///
    /// ```no_run
    /// # async fn run(session: braid::mux::Session) {
    /// let stream = session.open().await.unwrap();
    /// stream.reset();
    /// # }
    /// ```
    pub fn reset(&self) {
        let mut st = self.shared.lock();
        let _ = st.conn.reset(self.id);
        st.wake_driver_if_needed();
        if let Some(w) = st.wakers.get_mut(&self.id) {
            if let Some(r) = w.read.take() {
                r.wake();
            }
            if let Some(wr) = w.write.take() {
                wr.wake();
            }
        }
    }

    /// Reads the next chunk of up to `max` bytes without copying; `None` at end of stream.
    ///
    /// # Errors
    /// The stream was reset or the session ended.
    ///
    /// # Cancel safety
    /// Cancel safe: no data is taken unless returned.
    ///
    /// ```no_run
    /// # async fn run(mut stream: braid::mux::Stream) -> std::io::Result<()> {
    /// while let Some(chunk) = stream.read_chunk(64 * 1024).await? {
    ///     println!("{} bytes", chunk.len());
    /// }
    /// # Ok(()) }
    /// ```
    pub async fn read_chunk(&mut self, max: usize) -> io::Result<Option<Bytes>> {
        std::future::poll_fn(|cx| {
            let mut st = self.shared.lock();
            let now = self.shared.now();
            match st.conn.read_chunk(now, self.id, max) {
                Ok(c) => {
                    st.wake_driver_if_needed();
                    Poll::Ready(Ok(c))
                }
                Err(StreamError::Blocked) => {
                    st.wakers.entry(self.id).or_default().read = Some(cx.waker().clone());
                    Poll::Pending
                }
                Err(e) => Poll::Ready(Err(to_io(e))),
            }
        })
        .await
    }
}

impl Stream {
    /// Writes all of `data` without copying it: the payload goes to the socket from these very
    /// bytes (with vectored writes). Pairs with [`read_chunk`](Stream::read_chunk) for
    /// copy-free bulk transfers.
    ///
    /// # Errors
    /// The stream was reset or finished, or the session ended.
    ///
    /// # Cancel safety
    /// Not cancel safe: if cancelled, an unknown prefix of `data` has been queued.
    ///
    /// ```no_run
    /// # async fn run(mut stream: braid::mux::Stream) -> std::io::Result<()> {
    /// let block = bytes::Bytes::from(vec![0u8; 1 << 20]);
    /// stream.write_chunk(block.clone()).await?; // a clone is a reference count, not a copy
    /// # Ok(()) }
    /// ```
    pub async fn write_chunk(&mut self, mut data: Bytes) -> io::Result<()> {
        std::future::poll_fn(|cx| {
            let mut st = self.shared.lock();
            while !data.is_empty() {
                match st.conn.write_chunk(self.id, &mut data) {
                    Ok(_) => {}
                    Err(StreamError::Blocked) => {
                        st.wake_driver_if_needed();
                        let w = st.wakers.entry(self.id).or_default();
                        if !w.write.as_ref().is_some_and(|r| r.will_wake(cx.waker())) {
                            w.write = Some(cx.waker().clone());
                        }
                        return Poll::Pending;
                    }
                    Err(e) => return Poll::Ready(Err(to_io(e))),
                }
            }
            st.wake_driver_if_needed();
            Poll::Ready(Ok(()))
        })
        .await
    }
}

impl Stream {
    /// Writes the frames of a direct write (`self.headers`, each followed by its piece of
    /// `data`) to the transport without waiting; whatever it does not take now is queued in
    /// `wire.out` (the payload copied into pooled blocks) for the driver. Returns whether
    /// everything went out (otherwise the driver must be woken: it writes the rest and
    /// takes the transport's write readiness back, which this write's no-op waker replaced).
    fn send_direct(&mut self, wire: &mut Wire, data: &[u8]) -> bool {
        let mut cx = Context::from_waker(std::task::Waker::noop());
        let frame = |i: usize| {
            let h = &self.headers[i];
            u32::from_be_bytes([h[8], h[9], h[10], h[11]]) as usize
        };
        let mut i = 0;
        let mut at = 0;
        // Bytes of frame `i` (header first) already written.
        let mut done = 0;
        let mut ok = true;
        while i < self.headers.len() {
            let mut slices = [IoSlice::new(&[]); 2 * DIRECT_FRAMES];
            let mut k = 0;
            let mut total = 0;
            let mut p = at;
            for j in i..self.headers.len().min(i + DIRECT_FRAMES) {
                let len = frame(j);
                slices[k] = IoSlice::new(&self.headers[j]);
                slices[k + 1] = IoSlice::new(&data[p..p + len]);
                k += 2;
                total += HEADER_LEN + len;
                p += len;
            }
            let n = match wire.io.as_mut().poll_write_vectored(&mut cx, &slices[..k]) {
                Poll::Ready(Ok(n)) => n,
                _ => 0,
            };
            wire.needs_flush |= n > 0;
            // Advance past what was written.
            let mut left = n;
            while left > 0 {
                let whole = HEADER_LEN + frame(i) - done;
                if left >= whole {
                    left -= whole;
                    at += frame(i);
                    i += 1;
                    done = 0;
                } else {
                    done += left;
                    left = 0;
                }
            }
            if n < total {
                ok = false;
                break;
            }
        }
        if !ok {
            // The rest, in order, for the driver.
            let Output::Vectored(out) = &mut wire.out else {
                unreachable!("direct writes need a vectored transport")
            };
            while i < self.headers.len() {
                let len = frame(i);
                let h = self.headers[i];
                let mut payload = &data[at..at + len];
                if done < HEADER_LEN {
                    if done == 0 {
                        out.put_header(&h);
                    } else {
                        out.put_bytes(Bytes::copy_from_slice(&h[done..]));
                    }
                } else {
                    payload = &payload[done - HEADER_LEN..];
                }
                self.shared.blocks.copy(payload, &mut self.chunks);
                for b in self.chunks.drain(..) {
                    out.put_bytes(b);
                }
                at += len;
                i += 1;
                done = 0;
            }
            out.finish();
            wire.needs_flush = true;
            return false;
        }
        if wire.needs_flush {
            match wire.io.as_mut().poll_flush(&mut cx) {
                Poll::Ready(Ok(())) => wire.needs_flush = false,
                _ => return false,
            }
        }
        true
    }
}

impl AsyncRead for Stream {
    /// Large reads take the buffered payload chunks under the session's lock and copy them into
    /// `buf` after releasing it, so the copy runs in parallel with the driver.
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        {
            let mut st = this.shared.lock();
            let now = this.shared.now();
            let res = if buf.remaining() < COPY_OUTSIDE_LOCK {
                // Small reads copy under the lock: no chunk list kept per stream.
                st.conn
                    .read(now, this.id, buf.initialize_unfilled())
                    .map(|n| buf.advance(n))
            } else {
                st.conn
                    .read_chunks(now, this.id, buf.remaining(), &mut this.chunks)
                    .map(drop)
            };
            match res {
                Ok(()) => st.wake_driver_if_needed(),
                Err(StreamError::Blocked) => {
                    let w = st.wakers.entry(this.id).or_default();
                    if !w.read.as_ref().is_some_and(|r| r.will_wake(cx.waker())) {
                        w.read = Some(cx.waker().clone());
                    }
                    return Poll::Pending;
                }
                Err(e) => return Poll::Ready(Err(to_io(e))),
            }
        }
        for chunk in this.chunks.drain(..) {
            buf.put_slice(&chunk);
        }
        Poll::Ready(Ok(()))
    }
}

impl AsyncWrite for Stream {
    /// Small writes are copied into the stream's send buffer under the session's lock. Large
    /// ones are copied outside it (into pooled blocks the payload then goes to the socket from), so
    /// the copy runs in parallel with the driver and the other streams.
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        let this = self.get_mut();
        let mut st = this.shared.lock();
        if this.direct_run >= DIRECT_QUANTUM {
            this.direct_run = 0;
            if st.conn.stream_count() > 1 {
                drop(st);
                cx.waker().wake_by_ref();
                return Poll::Pending;
            }
        }
        if buf.len() >= COPY_OUTSIDE_LOCK && this.shared.vectored {
            // Straight to the transport: no copy into the send buffer, no hop through the
            // driver task. Streams take turns at it, as at a socket: one that finds it taken
            // (or frames still waiting for it) waits in line and is woken when it is free.
            // Never waits for the transport's lock while holding the state's (the driver
            // takes them the other way round).
            let pass = st.wakers.get_mut(&this.id).is_some_and(|w| {
                let p = w.wire_pass;
                w.wire_pass = false;
                p
            });
            let shared = this.shared.clone();
            let wire = if pass || st.wire_waiters.is_empty() {
                shared.try_wire()
            } else {
                None
            };
            match wire {
                Some(w) if w.closed => {
                    drop(w);
                    if pass {
                        st.wake_wire_waiters();
                    }
                }
                Some(mut wire) if wire.out.is_empty() => {
                    this.headers.clear();
                    // While others wait, a turn is half the initial window: every stream
                    // then has credit left for its next turn, whatever its window grew to
                    // (a stream that used its whole window in one turn would miss the next
                    // waiting for the window update, and get half the share of the others).
                    let turn = if st.wire_waiters.is_empty() {
                        DIRECT_MAX
                    } else {
                        DIRECT_TURN
                    };
                    match st
                        .conn
                        .write_direct(this.id, buf.len().min(turn), &mut this.headers)
                    {
                        Ok(0) => {
                            // Data queued before (a small write, say) goes first, and the
                            // driver sends it: wait for that instead of queueing more behind
                            // it, or the stream would stay on the copying path for as long as
                            // its writer keeps ahead of the driver (100 bulk streams with each
                            // end on its own thread sent a third to all of their bytes that way).
                            drop(wire);
                            st.wait_for_wire(this.id, cx, pass);
                            st.wake_driver_if_needed();
                            return Poll::Pending;
                        }
                        Ok(n) => {
                            drop(st);
                            this.direct_run += n;
                            let all = this.send_direct(&mut wire, &buf[..n]);
                            drop(wire);
                            let mut st = this.shared.lock();
                            if all {
                                st.wake_wire_waiters();
                            } else if let Some(w) = st.driver.take() {
                                // It writes the rest, then wakes the waiters.
                                w.wake();
                            }
                            return Poll::Ready(Ok(n));
                        }
                        Err(StreamError::Blocked) => {
                            drop(wire);
                            if pass {
                                st.wake_wire_waiters();
                                st.wakers.entry(this.id).or_default().wire_owed = true;
                            }
                            let w = st.wakers.entry(this.id).or_default();
                            if !w.write.as_ref().is_some_and(|r| r.will_wake(cx.waker())) {
                                w.write = Some(cx.waker().clone());
                            }
                            return Poll::Pending;
                        }
                        Err(e) => return Poll::Ready(Err(to_io(e))),
                    }
                }
                _ => {
                    if st.conn.write_room(this.id).is_ok() {
                        let owed = st
                            .wakers
                            .get_mut(&this.id)
                            .is_some_and(|w| std::mem::take(&mut w.wire_owed));
                        st.wait_for_wire(this.id, cx, pass || owed);
                        return Poll::Pending;
                    }
                    // No room (the waker is registered for it below) or an error: the turn
                    // goes on to the next in line, and this stream is owed one.
                    if pass {
                        st.wake_wire_waiters();
                        st.wakers.entry(this.id).or_default().wire_owed = true;
                    }
                }
            }
        }
        let res = if buf.len() < COPY_OUTSIDE_LOCK {
            st.conn.write(this.id, buf)
        } else {
            match st.conn.write_room(this.id) {
                Ok(room) => {
                    drop(st);
                    let n = room.min(buf.len());
                    this.shared.blocks.copy(&buf[..n], &mut this.chunks);
                    st = this.shared.lock();
                    // Usually all of it is taken; less if other streams queued data meanwhile
                    // (a smaller share each) or the stream failed: report what was taken.
                    let mut res = Ok(0);
                    for mut block in this.chunks.drain(..) {
                        match st.conn.write_chunk(this.id, &mut block) {
                            Ok(k) => {
                                res = Ok(res.unwrap_or(0) + k);
                                if !block.is_empty() {
                                    break;
                                }
                            }
                            Err(e) => {
                                if res == Ok(0) {
                                    res = Err(e);
                                }
                                break;
                            }
                        }
                    }
                    res
                }
                Err(e) => Err(e),
            }
        };
        match res {
            Ok(n) => {
                st.wake_driver_if_needed();
                Poll::Ready(Ok(n))
            }
            Err(StreamError::Blocked) => {
                let w = st.wakers.entry(this.id).or_default();
                if !w.write.as_ref().is_some_and(|r| r.will_wake(cx.waker())) {
                    w.write = Some(cx.waker().clone());
                }
                Poll::Pending
            }
            Err(e) => Poll::Ready(Err(to_io(e))),
        }
    }

    /// Data is handed to the session's driver as soon as it is written; flushing has nothing
    /// to wait for.
    fn poll_flush(self: Pin<&mut Self>, _cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Poll::Ready(Ok(()))
    }

    /// Sends FIN after the queued data. Reading goes on.
    fn poll_shutdown(self: Pin<&mut Self>, _cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let mut st = self.shared.lock();
        let res = st.conn.finish(self.id).map_err(to_io);
        st.wake_driver_if_needed();
        Poll::Ready(res)
    }
}

impl Drop for Stream {
    fn drop(&mut self) {
        let mut st = self.shared.lock();
        if st.wakers.remove(&self.id).is_some_and(|w| w.wire_pass) {
            st.wake_wire_waiters();
        }
        st.conn.release(self.id);
        // Always: the last stream gone may let a draining session end.
        if let Some(w) = st.driver.take() {
            w.wake();
        }
    }
}

impl std::fmt::Debug for Stream {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let st = self.shared.lock();
        f.debug_struct("Stream")
            .field("id", &self.id)
            .field("state", &st.conn.stream_state(self.id))
            .finish()
    }
}
