//! The driver: one task per connection that moves bytes between the links and the engine.
//!
//! ```text
//!  link reader tasks ──feed the engine, wake the app's reader──▶ ┌──────────────┐
//!  (read, decrypt)       (under the engine lock)                 │ agg engine   │
//!  app write ──copy, then seal + write directly if a link's ───▶ │ (one lock)   │
//!              writer is idle (`direct_transmit`)                └──────────────┘
//!  driver task: timers, acknowledgements, events ──Write(buf)──▶ link writer tasks
//!               (woken by all of the above)        ◀─WriteDone── (seal, write_all)
//! ```
//!
//! The driver makes no protocol decision: it arms one timer from `poll_timeout`, hands each
//! link's writer the engine's frames when that writer is idle (at most [`MAX_QUEUED`] buffers
//! of [`BATCH`] bytes per link, so the engine, not a queue, decides where data goes), and
//! turns engine events into socket actions. Data takes the shortest path: the task that
//! produced it (the application's write, a link's reader) hands it on itself, on the same CPU,
//! while it is in that CPU's cache.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use tokio::sync::{mpsc, oneshot};
use tokio::task::JoinHandle;

use crate::connection::{ConnectionEvent, ConnectionState, Inner};
use crate::proto::Time;
use crate::proto::agg::{Event, LinkId};
use crate::secure::{LinkReader, LinkWriter, SecureLink};
use crate::spec::LinkSpec;

/// Most bytes the driver asks the engine for in one `poll_transmit` for one link (the
/// link's window still bounds it). Every batch costs a hop to the link's writer task and a
/// system call whatever its size: on loopback, 1 MiB batches instead of 256 KiB took
/// plaintext from 91% to 114-126% of raw TCP (which writes 256 KiB at a time), 4 links from
/// 85-89% to 100-107% (`benches/runtime.rs`).
pub(crate) const BATCH: usize = 1024 * 1024;
/// Most bytes an application's write hands straight to an idle link ([`direct_transmit`]):
/// the latency path, kept to the size the encrypting writer seals at once.
pub(crate) const DIRECT_BATCH: usize = 256 * 1024;
/// Most buffers handed to one link's writer and not yet written.
pub(crate) const MAX_QUEUED: usize = 2;
/// A link's writer that wrote no batch over [`SMALL_WRITE`] bytes for this long frees its
/// buffer of sealed messages (up to a megabyte on an encrypted link; it grows again with the
/// next large write).
const WRITER_IDLE: Duration = Duration::from_secs(1);
/// See [`WRITER_IDLE`].
const SMALL_WRITE: usize = 64 * 1024;
/// How long a link's tasks may take, once the link or its connection is over, to write their
/// last frames and read the peer's last bytes (so closing the socket resets nothing the peer
/// still sends); then they are stopped.
const LINK_DRAIN: Duration = Duration::from_secs(2);
/// How long a connection whose application let go of it may take to deliver what it has
/// and see the peer's end.
const LINGER: Duration = Duration::from_secs(30);

/// Why a link dialled from a spec ended (tells its dialling slot what to do).
#[derive(Debug)]
pub(crate) enum LinkEnd {
    /// Died, or the peer removed it (`LinkClose`): redial with backoff.
    Dead(String),
    /// Replaced after `recycle=` bytes: redial now.
    Recycled,
    /// Removed by the user: do not redial.
    Removed,
}

/// A link that finished both handshakes, ready to carry data.
pub(crate) struct NewLink {
    pub link: SecureLink,
    /// Bytes read past the braid handshake (the first engine frames).
    pub leftover: Bytes,
    pub spec: Option<LinkSpec>,
    pub ended: Option<oneshot::Sender<LinkEnd>>,
    /// Told the link's id once it is in the engine.
    pub added: Option<oneshot::Sender<LinkId>>,
}

/// The engine's name for a link's path (see [`crate::transport::RawLink::path`]).
fn path_id(path: &str) -> crate::proto::agg::PathId {
    use std::hash::{Hash, Hasher};
    let mut h = std::hash::DefaultHasher::new();
    path.hash(&mut h);
    crate::proto::agg::PathId(h.finish())
}

/// Messages to the driver task.
pub(crate) enum ToDriver {
    ReadEnd(LinkId, Option<String>),
    WriteDone(LinkId, Vec<Bytes>),
    WriteFailed(LinkId, String),
    Add(Box<NewLink>),
    /// Remove the links dialled for this spec, also one whose `Add` was already on its way
    /// when the spec's slots were stopped.
    RemoveSpec(LinkSpec),
}

pub(crate) enum WriterCmd {
    Write(Vec<Bytes>),
    /// Write what a direct write left pending.
    Flush,
    Close,
}

/// A link's writer, shared by its writer task and the application's direct writes
/// ([`direct_transmit`]): whoever takes it out writes, in the order the engine's frames were
/// polled (a taker takes it before polling them, under the engine lock).
pub(crate) struct WriterSlot {
    writer: std::sync::Mutex<Option<LinkWriter>>,
    back: tokio::sync::Notify,
    cmds: mpsc::UnboundedSender<WriterCmd>,
    /// `Write` commands sent to the writer task and not finished. A direct write may only
    /// take the writer when this is 0 (checked and raised under the engine lock): frames
    /// must reach a link in the order they were polled, or the peer's per-link frame count
    /// would acknowledge the wrong chunks.
    queued: std::sync::atomic::AtomicUsize,
    /// Direct writes allowed (not on links recycled after some bytes: the driver counts
    /// what those send).
    direct: bool,
    /// The socket took less than it was given and the writer waits for it to take more:
    /// the driver tells the engine the link is blocked (`Connection::link_blocked`).
    stuck: std::sync::atomic::AtomicBool,
}

impl WriterSlot {
    /// Runs a write of the link's writer; while it waits for the socket to take bytes, the
    /// link counts as stuck.
    async fn write<T>(&self, op: impl std::future::Future<Output = T>) -> T {
        let mut op = std::pin::pin!(op);
        if let std::task::Poll::Ready(r) = futures::poll!(op.as_mut()) {
            return r;
        }
        self.stuck.store(true, std::sync::atomic::Ordering::Release);
        let r = op.await;
        self.stuck
            .store(false, std::sync::atomic::Ordering::Release);
        r
    }

    fn try_take(&self) -> Option<LinkWriter> {
        self.writer.try_lock().ok()?.take()
    }

    fn put(&self, w: LinkWriter) {
        *self.writer.lock().unwrap_or_else(|p| p.into_inner()) = Some(w);
        self.back.notify_one();
    }

    async fn take(&self) -> LinkWriter {
        loop {
            if let Some(w) = self.writer.lock().unwrap_or_else(|p| p.into_inner()).take() {
                return w;
            }
            self.back.notified().await;
        }
    }
}

/// Called by the application's write, under the engine lock, right after it handed data to
/// the engine: takes the writer of every link whose writer is idle and polls that link's
/// frames. The caller releases the lock, then runs the jobs ([`DirectJob::run`]): the data
/// is sealed and written by the task that just copied it, while it is in this CPU's cache,
/// with no hop through the driver and the link's writer task.
///
/// Also says whether the driver must run: only if some link could take data (its writer was
/// busy, so the driver hands it over, or it was written here, and the driver re-arms its
/// timers). In a bulk transfer the windows are usually full when the application writes: the
/// data waits for acknowledgements, which wake the driver anyway, and waking it at every
/// write as well cost a driver step (a poll of every link) per write for nothing.
pub(crate) fn direct_transmit(
    s: &mut crate::connection::Shared,
    now: Time,
) -> (Vec<DirectJob>, bool) {
    let mut jobs = Vec::new();
    let mut wake_driver = false;
    for (&id, slot) in &s.direct {
        if !s.conn.can_send_data(id, now) {
            continue;
        }
        wake_driver = true;
        if !slot.direct || slot.queued.load(std::sync::atomic::Ordering::Acquire) > 0 {
            continue;
        }
        let Some(w) = slot.try_take() else {
            continue;
        };
        let mut segments = Vec::new();
        if s.conn
            .poll_transmit_vectored(id, now, DIRECT_BATCH, &mut segments)
            == 0
        {
            slot.put(w);
            continue;
        }
        jobs.push(DirectJob {
            slot: slot.clone(),
            writer: Some(w),
            segments,
        });
    }
    (jobs, wake_driver)
}

/// Frames polled for one link by [`direct_transmit`], with its writer.
pub(crate) struct DirectJob {
    slot: Arc<WriterSlot>,
    writer: Option<LinkWriter>,
    segments: Vec<Bytes>,
}

impl DirectJob {
    /// Writes what the socket takes now; the link's writer task finishes the rest (and
    /// reports a failure).
    pub(crate) fn run(mut self) {
        if let Some(mut w) = self.writer.take() {
            let done = matches!(
                w.try_write_records(&self.segments, &engine_frame_len),
                Ok(true)
            );
            self.slot.put(w);
            if !done {
                // The writer task flushes the rest and clears this once the socket took it.
                self.slot
                    .stuck
                    .store(true, std::sync::atomic::Ordering::Release);
                let _ = self.slot.cmds.send(WriterCmd::Flush);
            }
        }
    }
}

impl Drop for DirectJob {
    fn drop(&mut self) {
        // Not run: the frames were polled, so they must still go out, in order.
        if let Some(w) = self.writer.take() {
            self.slot
                .queued
                .fetch_add(1, std::sync::atomic::Ordering::AcqRel);
            self.slot.put(w);
            let segments = std::mem::take(&mut self.segments);
            let _ = self.slot.cmds.send(WriterCmd::Write(segments));
        }
    }
}

struct DriverLink {
    peer: String,
    writer: mpsc::UnboundedSender<WriterCmd>,
    slot: Arc<WriterSlot>,
    reader_task: JoinHandle<()>,
    writer_task: JoinHandle<()>,
    queued: usize,
    spare: Vec<Vec<Bytes>>,
    sent: u64,
    recycle: Option<u64>,
    ended: Option<oneshot::Sender<LinkEnd>>,
    leaving: bool,
    /// Ended by a clean close from the peer: not worth a warning.
    quiet: bool,
}

impl DriverLink {
    fn kill(&mut self) {
        self.reader_task.abort();
        self.writer_task.abort();
    }

    fn end(&mut self, why: LinkEnd) {
        if let Some(tx) = self.ended.take() {
            let _ = tx.send(why);
        }
    }
}

/// Reads a link and feeds the engine itself (under the engine lock), waking the application's
/// reader at once: the data is read, decrypted and handed on by one task, on one CPU. The
/// driver is told to run (acknowledgements, events); the end of the link goes to it.
async fn reader_task(id: LinkId, mut r: LinkReader, inner: Arc<Inner>) {
    let tx = inner.to_driver.clone();
    loop {
        let end = match r
            .read_records(crate::proto::agg::frame::whole_frames_len)
            .await
        {
            Ok(Some(b)) => {
                if tx.is_closed() {
                    break;
                }
                let mut s = inner.lock();
                if !s.links.contains_key(&id) {
                    // The link is gone from the connection.
                    break;
                }
                s.conn.handle_input_buf(id, b, inner.now());
                let reader = if s.conn.is_readable() {
                    s.read_waker.take()
                } else {
                    None
                };
                drop(s);
                if let Some(w) = reader {
                    w.wake();
                }
                inner.wake.notify_one();
                continue;
            }
            Ok(None) => ToDriver::ReadEnd(id, None),
            Err(e) => ToDriver::ReadEnd(id, Some(e.to_string())),
        };
        let _ = tx.send(end).await;
        break;
    }
    // The driver is gone or the link ended: read to the end for a moment so that closing the
    // socket does not reset what the peer still has in flight.
    let _ = tokio::time::timeout(LINK_DRAIN, async {
        while let Ok(Some(_)) = r.read().await {}
    })
    .await;
}

/// An engine frame's length from its first bytes (for aligning encrypted messages).
fn engine_frame_len(b: &[u8]) -> Option<usize> {
    crate::proto::agg::frame::frame_len(b).ok().flatten()
}

async fn writer_task(
    id: LinkId,
    slot: Arc<WriterSlot>,
    mut rx: mpsc::UnboundedReceiver<WriterCmd>,
    tx: mpsc::Sender<ToDriver>,
) {
    // The last time this link wrote a large batch: a link that has not for WRITER_IDLE (an
    // idle connection still sends keepalives) keeps no large buffer of sealed messages.
    let mut last_large = tokio::time::Instant::now();
    loop {
        let cmd = match tokio::time::timeout(WRITER_IDLE, rx.recv()).await {
            Ok(Some(cmd)) => cmd,
            Ok(None) => break,
            Err(_) => {
                let mut w = slot.take().await;
                w.shrink_buffer(SMALL_WRITE);
                slot.put(w);
                continue;
            }
        };
        let r = match &cmd {
            WriterCmd::Write(buf) => {
                let mut w = slot.take().await;
                let r = slot.write(w.write_records(buf, &engine_frame_len)).await;
                slot.queued
                    .fetch_sub(1, std::sync::atomic::Ordering::Release);
                if buf.iter().map(|b| b.len()).sum::<usize>() > SMALL_WRITE {
                    last_large = tokio::time::Instant::now();
                } else if last_large.elapsed() > WRITER_IDLE {
                    w.shrink_buffer(SMALL_WRITE);
                }
                slot.put(w);
                r
            }
            WriterCmd::Flush => {
                let mut w = slot.take().await;
                let r = slot.write(w.flush_pending()).await;
                // Set by the direct write that left these bytes, also when they went at once.
                slot.stuck
                    .store(false, std::sync::atomic::Ordering::Release);
                slot.put(w);
                r
            }
            WriterCmd::Close => break,
        };
        if let Err(e) = r {
            let _ = tx.send(ToDriver::WriteFailed(id, e.to_string())).await;
            return;
        }
        if let WriterCmd::Write(buf) = cmd {
            if tx.send(ToDriver::WriteDone(id, buf)).await.is_err() {
                break;
            }
        }
    }
    let mut w = slot.take().await;
    // Deliver whatever is still queued, then a clean end of the link.
    loop {
        match rx.try_recv() {
            Ok(WriterCmd::Write(buf)) => {
                if w.write_segments(&buf).await.is_err() {
                    return;
                }
            }
            Ok(WriterCmd::Flush) => {}
            _ => break,
        }
    }
    let _ = tokio::time::timeout(LINK_DRAIN, w.shutdown()).await;
}

/// Runs a connection until it is over.
pub(crate) async fn run(inner: Arc<Inner>, mut rx: mpsc::Receiver<ToDriver>) {
    let mut d = Driver {
        inner: inner.clone(),
        links: HashMap::new(),
        linger: None,
        closing: Vec::new(),
    };
    let sleep = tokio::time::sleep(Duration::from_secs(3600));
    tokio::pin!(sleep);
    let mut batch = Vec::with_capacity(64);
    loop {
        let (deadline, done) = d.step(&mut batch);
        if done {
            break;
        }
        let far = tokio::time::Instant::now() + Duration::from_secs(3600);
        let at = deadline
            .map(|t| {
                tokio::time::Instant::from_std(inner.epoch) + Duration::from_micros(t.as_micros())
            })
            .unwrap_or(far);
        let at = d.linger.map_or(at, |l| at.min(l));
        if sleep.deadline() != at {
            sleep.as_mut().reset(at);
        }
        tokio::select! {
            n = rx.recv_many(&mut batch, 64) => {
                if n == 0 {
                    break;
                }
                // Feed everything that already arrived before timers are looked at: after
                // the task was starved of CPU, acknowledgements waiting in the channel must
                // not count as silence (a false dead link).
                while batch.len() < 4096 {
                    match rx.try_recv() {
                        Ok(m) => batch.push(m),
                        Err(_) => break,
                    }
                }
            }
            _ = inner.wake.notified() => {}
            _ = &mut sleep => {}
        }
    }
    d.shutdown();
    // Let the writers deliver the last frames (acknowledgements of the peer's end) and close
    // their links cleanly, and the peer close its side, before the connection reports that it
    // is done. Then the link tasks go, whatever the peer does: one that keeps its socket
    // open and silent (or never reads) must not keep a socket and two tasks per finished
    // connection.
    let closing = std::mem::take(&mut d.closing);
    let aborts: Vec<_> = closing.iter().map(JoinHandle::abort_handle).collect();
    let _ = tokio::time::timeout(LINK_DRAIN, futures::future::join_all(closing)).await;
    for a in aborts {
        a.abort();
    }
    inner.driver_done.send_replace(true);
}

struct Driver {
    inner: Arc<Inner>,
    links: HashMap<LinkId, DriverLink>,
    linger: Option<tokio::time::Instant>,
    /// Writer tasks flushing their last bytes.
    closing: Vec<JoinHandle<()>>,
}

impl Driver {
    /// Feeds everything that happened to the engine and acts on what comes out. Returns the
    /// next timer deadline and whether the connection is over.
    fn step(&mut self, batch: &mut Vec<ToDriver>) -> (Option<crate::proto::Time>, bool) {
        let inner = self.inner.clone();
        let mut s = inner.lock();
        let now = inner.now();
        for msg in batch.drain(..) {
            match msg {
                ToDriver::ReadEnd(id, reason) => {
                    if let Some(l) = self.links.get_mut(&id) {
                        if !l.leaving && !s.conn.is_closed() {
                            match reason {
                                // A clean end: the peer closed the link on purpose (its side
                                // of the connection is over, or it removed the link).
                                None => {
                                    l.quiet = true;
                                    tracing::debug!(conn = %inner.id, link = %id, peer = %l.peer, "link closed by peer");
                                }
                                Some(why) => {
                                    tracing::warn!(conn = %inner.id, link = %id, peer = %l.peer, "link failed: {why}")
                                }
                            }
                            s.conn.link_failed(id, now);
                        }
                    }
                }
                ToDriver::WriteDone(id, mut buf) => {
                    if let Some(l) = self.links.get_mut(&id) {
                        l.queued = l.queued.saturating_sub(1);
                        buf.clear();
                        l.spare.push(buf);
                    }
                }
                ToDriver::WriteFailed(id, why) => {
                    // The writer task is gone, and its queue with it: what it held will never
                    // be reported written (the connection must still be able to finish).
                    if let Some(l) = self.links.get_mut(&id) {
                        l.queued = 0;
                    }
                    if s.conn.is_closed() {
                        continue;
                    }
                    if let Some(l) = self.links.get(&id) {
                        tracing::warn!(conn = %inner.id, link = %id, peer = %l.peer, "link write failed: {why}");
                        s.conn.link_failed(id, now);
                    }
                }
                ToDriver::Add(new) => {
                    let new = *new;
                    if new.ended.as_ref().is_some_and(oneshot::Sender::is_closed) {
                        // Dialled for a spec removed meanwhile (its slot is gone): the link
                        // would stay up, unremovable and unwatched.
                        tracing::debug!(conn = %inner.id, peer = %new.link.peer, "link dropped: its spec was removed");
                        continue;
                    }
                    if s.links.len() >= inner.settings.max_links || inner.is_over() {
                        tracing::warn!(conn = %inner.id, peer = %new.link.peer, "link dropped: link limit reached or connection over");
                        continue;
                    }
                    let id = match &new.link.path {
                        Some(path) => s.conn.add_link_on_path(now, path_id(path)),
                        None => s.conn.add_link(now),
                    };
                    if let Some(rtt) = new.link.rtt {
                        s.conn.handshake_rtt(id, rtt, now);
                    }
                    if let Some(tx) = new.added {
                        let _ = tx.send(id);
                    }
                    if !new.leftover.is_empty() {
                        s.conn.handle_input(id, &new.leftover, now);
                    }
                    let SecureLink {
                        reader,
                        writer,
                        peer,
                        ..
                    } = new.link;
                    let (wtx, wrx) = mpsc::unbounded_channel();
                    let recycle = new.spec.as_ref().and_then(|s| s.recycle());
                    let slot = Arc::new(WriterSlot {
                        writer: std::sync::Mutex::new(Some(writer)),
                        back: tokio::sync::Notify::new(),
                        cmds: wtx.clone(),
                        queued: Default::default(),
                        stuck: Default::default(),
                        direct: recycle.is_none(),
                    });
                    s.direct.insert(id, slot.clone());
                    let reader_task = tokio::spawn(reader_task(id, reader, inner.clone()));
                    let writer_task =
                        tokio::spawn(writer_task(id, slot.clone(), wrx, inner.to_driver.clone()));
                    tracing::info!(conn = %inner.id, link = %id, %peer, "link up");
                    let _ = inner.events.send(ConnectionEvent::LinkUp {
                        link: id,
                        peer: peer.clone(),
                    });
                    s.links.insert(id, (peer.clone(), new.spec.clone()));
                    self.links.insert(
                        id,
                        DriverLink {
                            peer,
                            writer: wtx,
                            slot,
                            reader_task,
                            writer_task,
                            queued: 0,
                            spare: Vec::new(),
                            sent: 0,
                            recycle,
                            ended: new.ended,
                            leaving: false,
                            quiet: false,
                        },
                    );
                }
                ToDriver::RemoveSpec(spec) => {
                    let ids: Vec<LinkId> = s
                        .links
                        .iter()
                        .filter(|(_, (_, sp))| sp.as_ref() == Some(&spec))
                        .map(|(&id, _)| id)
                        .collect();
                    for id in ids {
                        self.remove(&mut s, id, now);
                    }
                }
            }
        }
        for id in std::mem::take(&mut s.removing) {
            self.remove(&mut s, id, now);
        }

        if s.conn.poll_timeout().is_some_and(|t| t <= now) {
            s.conn.handle_timeout(now);
        }

        // The application let go of the connection: finish this side's stream, deliver what
        // was written, and discard what the peer still sends (like a socket shut down for
        // reading) until both ends are done or the linger time is over.
        if s.app_handles == 0 && !s.conn.is_closed() {
            if self.linger.is_none() {
                let _ = s.conn.finish();
                self.linger = Some(tokio::time::Instant::now() + LINGER);
            }
            while let Ok(crate::proto::agg::Read::Data(_)) = s.conn.read(1 << 20) {}
            if self
                .linger
                .is_some_and(|l| tokio::time::Instant::now() >= l)
            {
                s.conn.abort(0, now);
            }
        }

        self.events(&mut s);
        self.transmit(&mut s, now, MAX_QUEUED);
        self.events(&mut s);
        if s.conn.is_closed() {
            // The last acknowledgements must leave before the links close.
            self.transmit(&mut s, now, usize::MAX);
        }
        if s.conn.stats().send_buffered == 0 {
            // Everything written was acknowledged: the staging blocks held for the burst go.
            inner
                .stage
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .trim(1);
        }
        let deadline = s.conn.poll_timeout();
        let over = s.conn.is_closed() || inner.is_over();
        let flushed = self.links.values().all(|l| l.queued == 0);
        (deadline, over && flushed)
    }

    /// Starts removing link `id` gracefully (its slot is told not to redial).
    fn remove(&mut self, s: &mut crate::connection::Shared, id: LinkId, now: crate::proto::Time) {
        if let Some(l) = self.links.get_mut(&id) {
            if !l.leaving {
                tracing::info!(conn = %self.inner.id, link = %id, peer = %l.peer, "removing link");
                l.leaving = true;
                l.end(LinkEnd::Removed);
                s.conn.remove_link(id, now);
            }
        }
    }

    /// Hands each writer with fewer than `limit` buffers queued the engine's frames for it.
    fn transmit(
        &mut self,
        s: &mut crate::connection::Shared,
        now: crate::proto::Time,
        limit: usize,
    ) {
        let inner = &self.inner;
        // A link whose socket takes no more now: the other links of its path must not leave
        // data to it (see `Connection::link_blocked`). A full queue of batches is not that:
        // on a single-threaded runtime the writer has just not run yet since this step began.
        for (&id, l) in &self.links {
            let stuck = l.slot.stuck.load(std::sync::atomic::Ordering::Acquire);
            s.conn.link_blocked(id, stuck);
        }
        for (&id, l) in self.links.iter_mut() {
            // Most links of a path are idle while one carries the data: not polled at all.
            while l.queued < limit && s.conn.may_transmit(id, now) {
                let mut buf = l.spare.pop().unwrap_or_default();
                let n = s.conn.poll_transmit_vectored(id, now, BATCH, &mut buf);
                if n == 0 {
                    l.spare.push(buf);
                    break;
                }
                l.sent += n as u64;
                l.queued += 1;
                l.slot
                    .queued
                    .fetch_add(1, std::sync::atomic::Ordering::AcqRel);
                if l.writer.send(WriterCmd::Write(buf)).is_err() {
                    break;
                }
            }
            if let Some(limit) = l.recycle {
                if l.sent >= limit && !l.leaving {
                    tracing::debug!(conn = %inner.id, link = %id, "recycling link after {} bytes", l.sent);
                    l.leaving = true;
                    l.end(LinkEnd::Recycled);
                    s.conn.remove_link(id, now);
                }
            }
        }
    }

    fn events(&mut self, s: &mut crate::connection::Shared) {
        let inner = &self.inner;
        while let Some(ev) = s.conn.poll_event() {
            tracing::trace!(conn = %inner.id, "event {ev:?} (read waker: {})", s.read_waker.is_some());
            match ev {
                Event::LinkDead { link, reason } => {
                    s.direct.remove(&link);
                    let peer = s.links.remove(&link).map(|p| p.0).unwrap_or_default();
                    if let Some(mut l) = self.links.remove(&link) {
                        let why = format!("{reason:?}");
                        if s.conn.is_closed() || l.quiet {
                            tracing::debug!(conn = %inner.id, %link, %peer, "link gone: {why}");
                        } else {
                            tracing::warn!(conn = %inner.id, %link, %peer, "link dead: {why}");
                        }
                        l.kill();
                        l.end(LinkEnd::Dead(why.clone()));
                        let _ = inner.events.send(ConnectionEvent::LinkDown {
                            link,
                            peer,
                            reason: why,
                        });
                    }
                }
                Event::LinkClosed(link) => {
                    s.direct.remove(&link);
                    let peer = s.links.remove(&link).map(|p| p.0).unwrap_or_default();
                    if let Some(mut l) = self.links.remove(&link) {
                        tracing::debug!(conn = %inner.id, %link, %peer, "link closed");
                        // A link this side removed or recycled already told its slot; one the
                        // peer removed is redialled like one that died (the spec still asks
                        // for it; only removing the spec here stops that).
                        l.end(LinkEnd::Dead("closed by the peer".into()));
                        let _ = l.writer.send(WriterCmd::Close);
                        // The reader reads until the peer closes its socket too, but not
                        // for ever: a peer may leave it open and silent.
                        let reader = l.reader_task.abort_handle();
                        tokio::spawn(async move {
                            tokio::time::sleep(LINK_DRAIN + LINK_DRAIN).await;
                            reader.abort();
                        });
                        let _ = inner.events.send(ConnectionEvent::LinkDown {
                            link,
                            peer,
                            reason: "closed".into(),
                        });
                    }
                }
                Event::Readable => {
                    if let Some(w) = s.read_waker.take() {
                        w.wake();
                    }
                }
                Event::Writable => {
                    if let Some(w) = s.write_waker.take() {
                        w.wake();
                    }
                }
                Event::Closed => {
                    tracing::debug!(conn = %inner.id, "connection closed");
                    inner.state.send_replace(ConnectionState::Closed);
                    let _ = inner.events.send(ConnectionEvent::Closed);
                    wake_all(s);
                }
                Event::Failed(e) => {
                    tracing::warn!(conn = %inner.id, "connection failed: {e}");
                    inner.state.send_replace(ConnectionState::Failed(e.clone()));
                    let _ = inner.events.send(ConnectionEvent::Failed(e));
                    wake_all(s);
                }
                _ => {}
            }
        }
    }

    fn shutdown(&mut self) {
        let mut s = self.inner.lock();
        if *self.inner.state.borrow() == ConnectionState::Open {
            let e = crate::proto::agg::ConnectionError::LocalReset(0);
            self.inner.state.send_replace(ConnectionState::Failed(e));
        }
        s.direct.clear();
        s.links.clear();
        for (_, mut l) in self.links.drain() {
            l.end(LinkEnd::Removed);
            let _ = l.writer.send(WriterCmd::Close);
            self.closing.push(l.writer_task);
            // Readers drain until the peer closes too, so closing sends no reset.
            self.closing.push(l.reader_task);
        }
        wake_all(&mut s);
        for (_, slot) in self
            .inner
            .slots
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .drain(..)
        {
            slot.abort();
        }
    }
}

fn wake_all(s: &mut crate::connection::Shared) {
    if let Some(w) = s.read_waker.take() {
        w.wake();
    }
    if let Some(w) = s.write_waker.take() {
        w.wake();
    }
}
