//! One multiplexed stream: `AsyncRead + AsyncWrite` over the shared state machine.

use std::io;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use braid_proto::mux::StreamError;
use bytes::Bytes;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};

use super::StreamId;
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
}

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
        st.wakers.remove(&self.id);
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
