//! The session state machine: frames in, frames out, events for the application.

use std::collections::{HashMap, VecDeque};
use std::time::Duration;

use bytes::Bytes;

use super::config::{Config, INITIAL_WINDOW};
use super::error::{ConnectionError, OpenError, StreamError};
use super::frame::{Flags, GoAwayCode, HEADER_LEN, Header, StreamId};
use super::peer_ids::PeerIds;
use super::stream::{ResetBy, SendBuffer, Stream, StreamState};
use crate::Time;

mod input;
mod output;

/// Which end of the underlying connection this is; decides stream id parity.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Side {
    /// Opens odd stream ids.
    Client,
    /// Opens even stream ids.
    Server,
}

/// Something the application should know; drained with [`Connection::poll_event`].
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum Event {
    /// A new inbound stream can be taken with [`Connection::accept`].
    Incoming,
    /// A stream that returned [`StreamError::Blocked`] from a read can be read again
    /// (data, FIN or RST arrived).
    Readable(StreamId),
    /// A stream that returned [`StreamError::Blocked`] from a write can be written again.
    Writable(StreamId),
    /// [`Connection::open`] returned [`OpenError::Blocked`] and may now succeed.
    CanOpen,
    /// A ping was answered.
    Pong {
        /// The ping's opaque value, as returned by [`Connection::ping`].
        id: u32,
        /// Round-trip time of that ping.
        rtt: Duration,
    },
    /// The peer sent GoAway: it opens and accepts no new streams.
    PeerGoAway(GoAwayCode),
    /// The session is closed; nothing more will happen.
    Closed(ConnectionError),
}

/// Data frame payload still to come in the input.
#[derive(Clone, Copy, Debug)]
struct PartialData {
    stream: StreamId,
    remaining: u32,
    /// Deliver to the stream (false: discard).
    deliver: bool,
    flags: Flags,
}

const MAX_QUEUED_PONGS: usize = 64;
/// Most RSTs for refused SYNs queued at once (one per stream id). A peer that opens streams
/// beyond the limits faster than the RSTs leave (say, while it does not read) is flooding:
/// the session fails with [`ProtocolError::RefusalFlood`] instead of growing the queue.
const MAX_QUEUED_REFUSALS: usize = 256;
const MAX_OUTSTANDING_PINGS: usize = 16;

/// A yamux session without I/O.
///
/// Call order, as with quinn-proto's `Connection`:
/// 1. feed received bytes with [`handle_input`](Self::handle_input) (complete frames are
///    consumed, a partial one stays in the buffer; Data payloads are split off without copying);
/// 2. drain [`poll_event`](Self::poll_event) and wake whoever waits;
/// 3. fill an output buffer with [`poll_transmit`](Self::poll_transmit) and write it out;
/// 4. arm a timer for [`poll_timeout`](Self::poll_timeout) and call
///    [`handle_timeout`](Self::handle_timeout) when it fires.
///
/// Application calls ([`open`](Self::open), [`accept`](Self::accept), [`read`](Self::read),
/// [`write`](Self::write), [`finish`](Self::finish), [`reset`](Self::reset)) may come at any time
/// in between; after one, transmit again.
///
/// ```
/// use braid_proto::mux::{Config, Connection, Side, Event};
/// use braid_proto::Time;
/// use bytes::BytesMut;
///
/// let now = Time::ZERO;
/// let mut client = Connection::new(Side::Client, Config::default(), now);
/// let mut server = Connection::new(Side::Server, Config::default(), now);
/// let id = client.open().unwrap();
/// client.write(id, b"hello").unwrap();
/// client.finish(id).unwrap();
///
/// let mut wire = BytesMut::new();
/// client.poll_transmit(now, &mut wire, 1 << 20);
/// server.handle_input(now, &mut wire).unwrap();
/// assert_eq!(server.poll_event(), Some(Event::Incoming));
/// let sid = server.accept().unwrap();
/// let mut buf = [0u8; 16];
/// let n = server.read(now, sid, &mut buf).unwrap();
/// assert_eq!(&buf[..n], b"hello");
/// assert_eq!(server.read(now, sid, &mut buf), Ok(0)); // FIN: end of stream
/// ```
#[derive(Debug)]
pub struct Connection {
    side: Side,
    config: Config,
    streams: HashMap<StreamId, Stream>,
    next_id: u32,
    /// Ids the peer opened streams with (or tried to): never taken for a new stream again.
    peer_ids: PeerIds,
    /// Inbound streams not yet accepted.
    accept_queue: VecDeque<StreamId>,
    /// Outbound streams not yet ACKed.
    pending_open: usize,
    open_waiting: bool,
    accept_waiting: bool,
    /// Session-level frames to send first (pongs, pings, GoAway, RSTs of unknown streams).
    ctrl: VecDeque<Header>,
    queued_pongs: usize,
    /// RSTs for refused SYNs in `ctrl`.
    queued_refusals: usize,
    /// Streams with a control frame due (SYN, ACK, window update, RST).
    ctrl_streams: VecDeque<StreamId>,
    /// Streams with data or FIN to send, served round-robin.
    send_queue: VecDeque<StreamId>,
    partial: Option<PartialData>,
    events: VecDeque<Event>,
    /// Sum of all streams' receive windows.
    session_window: u64,
    /// The largest receive window a stream has grown to at its own pace: a stream whose
    /// reader keeps up catches up to it (see `consumed`).
    largest_window: u32,
    local_go_away: bool,
    remote_go_away: bool,
    /// GoAway code to send before closing.
    closing: Option<GoAwayCode>,
    error: Option<ConnectionError>,
    pings: VecDeque<(u32, Time)>,
    next_ping_id: u32,
    next_keepalive: Option<Time>,
    rtt: Option<Duration>,
    /// Smallest RTT seen: the path's delay without queueing, used for auto-tuning.
    min_rtt: Option<Duration>,
}

impl Connection {
    /// A new session; `now` starts the keepalive clock.
    pub fn new(side: Side, config: Config, now: Time) -> Self {
        let next_keepalive = config.keepalive.map(|k| now + k);
        let mut conn = Connection {
            side,
            next_id: match side {
                Side::Client => 1,
                Side::Server => 2,
            },
            config,
            streams: HashMap::new(),
            peer_ids: PeerIds::default(),
            accept_queue: VecDeque::new(),
            pending_open: 0,
            open_waiting: false,
            accept_waiting: false,
            ctrl: VecDeque::new(),
            queued_pongs: 0,
            queued_refusals: 0,
            ctrl_streams: VecDeque::new(),
            send_queue: VecDeque::new(),
            partial: None,
            events: VecDeque::new(),
            session_window: 0,
            largest_window: INITIAL_WINDOW,
            local_go_away: false,
            remote_go_away: false,
            closing: None,
            error: None,
            pings: VecDeque::new(),
            next_ping_id: 1,
            next_keepalive,
            rtt: None,
            min_rtt: None,
        };
        if conn.config.probe_rtt_at_start {
            let _ = conn.ping(now);
        }
        conn
    }

    /// This end's side.
    pub fn side(&self) -> Side {
        self.side
    }

    /// The configuration.
    pub fn config(&self) -> &Config {
        &self.config
    }

    /// Why the session ended, once it has.
    pub fn error(&self) -> Option<&ConnectionError> {
        self.error.as_ref()
    }

    /// Whether the session has ended and everything due has been transmitted.
    pub fn is_closed(&self) -> bool {
        self.error.is_some() && self.closing.is_none()
    }

    /// Whether a GoAway was sent and no stream is left: the connection can be shut down.
    pub fn is_drained(&self) -> bool {
        self.local_go_away && self.streams.is_empty() && self.ctrl.is_empty()
    }

    /// Whether [`poll_transmit`](Self::poll_transmit) has frames to emit.
    pub fn wants_transmit(&self) -> bool {
        self.closing.is_some()
            || (self.error.is_none()
                && !(self.ctrl.is_empty()
                    && self.ctrl_streams.is_empty()
                    && self.send_queue.is_empty()))
    }

    /// Whether the peer sent GoAway (it opens no more streams).
    pub fn peer_went_away(&self) -> bool {
        self.remote_go_away
    }

    /// Number of live streams (including released ones still finishing).
    pub fn stream_count(&self) -> usize {
        self.streams.len()
    }

    /// Last measured round-trip time.
    pub fn rtt(&self) -> Option<Duration> {
        self.rtt
    }

    /// The state of a stream, `None` once it is forgotten.
    pub fn stream_state(&self, id: StreamId) -> Option<StreamState> {
        self.streams.get(&id).map(Stream::state)
    }

    /// The current receive window of a stream (grows by auto-tuning).
    pub fn stream_recv_window(&self, id: StreamId) -> Option<u32> {
        self.streams.get(&id).map(|s| s.recv_window)
    }

    /// Bytes buffered for reading on a stream.
    pub fn stream_readable(&self, id: StreamId) -> usize {
        self.streams
            .get(&id)
            .map_or(0, |s| s.recv_buffered as usize)
    }

    /// The next event, if any.
    pub fn poll_event(&mut self) -> Option<Event> {
        self.events.pop_front()
    }

    // ---------------------------------------------------------------- application calls

    /// Opens a stream. The SYN goes with its first frame (data, or an empty window update at
    /// the next transmit).
    ///
    /// # Errors
    /// [`OpenError::Blocked`] while `max_pending_open` streams await the peer's ACK (an
    /// [`Event::CanOpen`] follows); the others are final.
    pub fn open(&mut self) -> Result<StreamId, OpenError> {
        if let Some(e) = &self.error {
            return Err(OpenError::Closed(e.clone()));
        }
        if self.local_go_away || self.remote_go_away {
            return Err(OpenError::GoingAway);
        }
        if self.streams.len() >= self.config.max_streams || !self.has_room_for_stream() {
            return Err(OpenError::TooManyStreams);
        }
        if self.pending_open >= self.config.max_pending_open {
            self.open_waiting = true;
            return Err(OpenError::Blocked);
        }
        let id = self.next_id;
        if id == 0 || id > u32::MAX - 2 {
            return Err(OpenError::IdsExhausted);
        }
        self.next_id += 2;
        self.streams.insert(id, Stream::new(true, Time::ZERO));
        self.session_window += u64::from(INITIAL_WINDOW);
        self.pending_open += 1;
        self.grant_initial_window(id);
        self.queue_ctrl(id);
        Ok(id)
    }

    /// Takes the next inbound stream; it is ACKed with its next frame.
    ///
    /// `None` when there is none yet (an [`Event::Incoming`] follows when one arrives).
    pub fn accept(&mut self) -> Option<StreamId> {
        match self.accept_queue.pop_front() {
            Some(id) => {
                if let Some(s) = self.streams.get_mut(&id) {
                    s.accepted = true;
                    if s.reset.is_none() {
                        s.ack_pending = true;
                        self.grant_initial_window(id);
                        self.queue_ctrl(id);
                    }
                }
                Some(id)
            }
            None => {
                self.accept_waiting = true;
                None
            }
        }
    }

    /// Refuses every inbound stream still waiting for [`accept`](Self::accept): each is
    /// reset (the peer reads an RST) and forgotten. For an application that will accept no
    /// more streams, say one that let go of the session: without this, those streams would
    /// wait forever for an ACK, and the session would never drain.
    pub fn refuse_pending(&mut self) {
        while let Some(id) = self.accept_queue.pop_front() {
            let _ = self.reset(id);
            self.release(id);
        }
    }

    /// Number of inbound streams waiting for [`accept`](Self::accept).
    pub fn pending_accept(&self) -> usize {
        self.accept_queue.len()
    }

    fn stream_error(&self, s: &Stream) -> Option<StreamError> {
        match s.reset {
            Some(ResetBy::Remote) => Some(StreamError::ResetByPeer),
            Some(ResetBy::Local) => Some(StreamError::ResetLocally),
            None => self.error.clone().map(StreamError::Closed),
        }
    }

    /// Reads into `buf`; `Ok(0)` is the end of the stream (the peer's FIN).
    ///
    /// # Errors
    /// [`StreamError::Blocked`] when nothing is buffered yet (an [`Event::Readable`] follows);
    /// reset, closed and unknown streams.
    pub fn read(&mut self, now: Time, id: StreamId, buf: &mut [u8]) -> Result<usize, StreamError> {
        let s = self.streams.get(&id).ok_or(StreamError::Unknown)?;
        if s.recv_buffered == 0 {
            if let Some(e) = self.stream_error(s) {
                return Err(e);
            }
        }
        let Some(s) = self.streams.get_mut(&id) else {
            return Err(StreamError::Unknown);
        };
        if buf.is_empty() {
            return Ok(0);
        }
        if s.recv_buffered == 0 {
            if s.fin_received {
                return Ok(0);
            }
            s.read_waiting = true;
            return Err(StreamError::Blocked);
        }
        let n = s.read_into(buf);
        self.consumed(now, id, n as u32);
        Ok(n)
    }

    /// Takes up to `max` buffered bytes without copying; `Ok(None)` is the end of the stream.
    ///
    /// # Errors
    /// As [`read`](Self::read).
    pub fn read_chunk(
        &mut self,
        now: Time,
        id: StreamId,
        max: usize,
    ) -> Result<Option<Bytes>, StreamError> {
        let s = self.streams.get(&id).ok_or(StreamError::Unknown)?;
        if s.recv_buffered == 0 {
            if let Some(e) = self.stream_error(s) {
                return Err(e);
            }
        }
        let Some(s) = self.streams.get_mut(&id) else {
            return Err(StreamError::Unknown);
        };
        match s.read_chunk(max.max(1)) {
            Some(chunk) => {
                self.consumed(now, id, chunk.len() as u32);
                Ok(Some(chunk))
            }
            None if s.fin_received => Ok(None),
            None => {
                s.read_waiting = true;
                Err(StreamError::Blocked)
            }
        }
    }

    /// Takes buffered chunks without copying until `max` bytes are taken or none is left,
    /// appending them to `out`; returns the bytes taken, `Ok(0)` at the end of the stream.
    ///
    /// One call grants the window back once for all chunks, and the caller can copy them out
    /// of the session's lock.
    ///
    /// # Errors
    /// As [`read`](Self::read).
    pub fn read_chunks(
        &mut self,
        now: Time,
        id: StreamId,
        max: usize,
        out: &mut Vec<Bytes>,
    ) -> Result<usize, StreamError> {
        let s = self.streams.get(&id).ok_or(StreamError::Unknown)?;
        if s.recv_buffered == 0 {
            if let Some(e) = self.stream_error(s) {
                return Err(e);
            }
        }
        let Some(s) = self.streams.get_mut(&id) else {
            return Err(StreamError::Unknown);
        };
        if max == 0 {
            return Ok(0);
        }
        if s.recv_buffered == 0 {
            if s.fin_received {
                return Ok(0);
            }
            s.read_waiting = true;
            return Err(StreamError::Blocked);
        }
        let mut n = 0;
        while n < max {
            let Some(chunk) = s.read_chunk(max - n) else {
                break;
            };
            n += chunk.len();
            out.push(chunk);
        }
        self.consumed(now, id, n as u32);
        Ok(n)
    }

    /// Whether one more stream's initial window fits in the session window.
    pub(super) fn has_room_for_stream(&self) -> bool {
        self.session_window + u64::from(INITIAL_WINDOW) <= self.config.session_window_cap()
    }

    /// How many bytes receive windows may grow by, in all: the session window less the room
    /// kept for the initial windows of the streams `max_streams` still allows (rust-yamux
    /// keeps that much too), or for half the session window if that is less. Grown windows
    /// then never lock new streams out, and an over-large `max_streams` does not stop
    /// auto-tuning.
    fn growth_room(&self) -> u64 {
        let cap = self.config.session_window_cap();
        let more_streams = self.config.max_streams.saturating_sub(self.streams.len()) as u64;
        let reserve = more_streams
            .saturating_mul(u64::from(INITIAL_WINDOW))
            .min(cap / 2);
        cap.saturating_sub(reserve)
            .saturating_sub(self.session_window)
    }

    /// Raises a new stream's window to `Config::initial_stream_window` (granted with the
    /// stream's next control frame), within the stream cap and the session's growth room.
    fn grant_initial_window(&mut self, id: StreamId) {
        let target = self
            .config
            .initial_stream_window
            .min(self.config.stream_window_cap());
        let room = self.growth_room();
        let Some(s) = self.streams.get_mut(&id) else {
            return;
        };
        if target <= s.recv_window {
            return;
        }
        let growth = target - s.recv_window;
        if u64::from(growth) > room {
            return;
        }
        s.recv_window = target;
        s.recv_consumed += growth;
        s.grant_pending = true;
        self.session_window += u64::from(growth);
    }

    /// The application consumed `n` bytes of stream `id`: grant them back, growing the window
    /// while the reader keeps up.
    fn consumed(&mut self, now: Time, id: StreamId, n: u32) {
        // The round trip the window must cover is the one data sees now, queues included
        // (over a deep-buffered transport such as an aggregated braid connection it can be
        // many times the idle minimum), so the latest sample counts, never less than the
        // minimum.
        let rtt = self
            .rtt
            .max(self.min_rtt)
            .unwrap_or(self.config.initial_rtt);
        let cap = self.config.stream_window_cap();
        let room = self.growth_room();
        let Some(s) = self.streams.get_mut(&id) else {
            return;
        };
        s.recv_consumed += n;
        if s.fin_received || s.reset.is_some() || s.grant_pending {
            return;
        }
        if s.recv_consumed < s.recv_window / 2 {
            return;
        }
        // Auto-tuning: half a window consumed within two RTTs with the reader keeping up
        // means the window, not the reader, limits the stream. A stream whose reader keeps
        // up also catches up to the largest window another stream grew to at its own pace:
        // streams sharing the session would otherwise keep whatever windows the timing of
        // their first grants gave them (100 bulk streams, each end on its own thread: most
        // at 1-2 MiB, a few at 512 KiB, short of credit for their turns, with two thirds of
        // the others' share).
        let paced = now.saturating_since(s.last_grant) < rtt * 2;
        let catch_up = s.recv_window < self.largest_window;
        if s.recv_buffered == 0 && s.recv_window < cap && (paced || catch_up) {
            let new = s.recv_window.saturating_mul(2).min(cap);
            let growth = new - s.recv_window;
            if u64::from(growth) <= room {
                s.recv_window = new;
                if paced {
                    // Catching up sets no new mark, or windows would ratchet each other up.
                    self.largest_window = self.largest_window.max(new);
                }
                // Granted with the next update, like consumed bytes.
                s.recv_consumed += growth;
                self.session_window += u64::from(growth);
            }
        }
        let tuning = s.recv_window < cap;
        s.last_grant = now;
        s.grant_pending = true;
        self.queue_ctrl(id);
        // Keep the RTT current while a window is still growing: one probe in flight at most.
        if tuning && self.pings.is_empty() {
            let _ = self.ping(now);
        }
    }

    /// How many bytes [`write`](Self::write) or [`write_chunk`](Self::write_chunk) would take
    /// now: the stream's room within the peer's window and its share of the send buffers
    /// ([`Config::send_buffer`], [`Config::session_send_buffer`]). A caller can prepare that
    /// many bytes (copy them outside a lock) and hand them over with `write_chunk`; if other
    /// streams queued data meanwhile, the share may have shrunk and `write_chunk` takes less.
    ///
    /// # Errors
    /// [`StreamError::Blocked`] when there is no room (an [`Event::Writable`] follows); as
    /// [`write`](Self::write) otherwise.
    pub fn write_room(&mut self, id: StreamId) -> Result<usize, StreamError> {
        self.check_writable(id)?;
        let limit = self.stream_send_limit();
        let Some(s) = self.streams.get_mut(&id) else {
            return Err(StreamError::Unknown);
        };
        let room = (s.send_credit as usize)
            .min(limit)
            .saturating_sub(s.send_buf.len());
        if room == 0 {
            s.write_waiting = true;
            return Err(StreamError::Blocked);
        }
        Ok(room)
    }

    /// What one stream may queue: [`Config::send_buffer`], or its share of
    /// [`Config::session_send_buffer`] among the streams with data queued, if smaller (but at
    /// least a frame).
    pub(crate) fn stream_send_limit(&self) -> usize {
        let share = self.config.session_send_buffer / self.send_queue.len().max(1) as u64;
        (self.config.send_buffer as usize)
            .min(share.max(u64::from(self.config.frame_size())) as usize)
    }

    /// Queues bytes for sending; returns how many were taken (at most the peer's window, the
    /// configured send buffer and the session's).
    ///
    /// # Errors
    /// [`StreamError::Blocked`] when none fits (an [`Event::Writable`] follows); finished,
    /// reset, closed and unknown streams.
    pub fn write(&mut self, id: StreamId, data: &[u8]) -> Result<usize, StreamError> {
        if data.is_empty() {
            return self.check_writable(id).map(|()| 0);
        }
        let n = self.write_room(id)?.min(data.len());
        self.queue_data(id, |buf| buf.extend_from_slice(&data[..n]));
        Ok(n)
    }

    /// Queues the front of `data` without copying it; returns how many bytes were taken (and
    /// removed from `data`), as [`write`](Self::write).
    ///
    /// # Errors
    /// As [`write`](Self::write).
    pub fn write_chunk(&mut self, id: StreamId, data: &mut Bytes) -> Result<usize, StreamError> {
        if data.is_empty() {
            return self.check_writable(id).map(|()| 0);
        }
        let n = self.write_room(id)?.min(data.len());
        self.queue_data(id, |buf| buf.push_chunk(data.split_to(n)));
        Ok(n)
    }

    /// Takes up to `len` bytes of stream `id` that the caller puts on the wire itself, now,
    /// without queueing them: appends the header of each Data frame (one per
    /// `max_frame_size` piece, in order) to `headers` and returns the bytes taken, at most
    /// the peer's window. The caller must write each header followed by its piece of the
    /// payload before any frame that [`poll_transmit`](Self::poll_transmit) emits later.
    ///
    /// Only a stream with nothing queued can do so (its data would be reordered otherwise),
    /// and only while no other stream waits in the send queue (they came first and are
    /// served in turn; a stream that could jump the queue would get more than its share):
    /// `Ok(0)` then, and the caller falls back to [`write`](Self::write).
    ///
    /// # Errors
    /// As [`write`](Self::write).
    ///
    /// ```
    /// use braid_proto::mux::{Config, Connection, Side};
    /// use braid_proto::Time;
    /// use bytes::BytesMut;
    ///
    /// let now = Time::ZERO;
    /// let mut client = Connection::new(Side::Client, Config::default(), now);
    /// let mut server = Connection::new(Side::Server, Config::default(), now);
    /// let id = client.open().unwrap();
    /// let data = vec![7u8; 100_000];
    /// let mut headers = Vec::new();
    /// let n = client.write_direct(id, data.len(), &mut headers).unwrap();
    /// assert_eq!((n, headers.len()), (100_000, 2)); // two frames of at most 64 KiB
    /// let mut wire = BytesMut::new();
    /// client.poll_transmit(now, &mut wire, 1 << 20); // frames polled before: none here
    /// let mut at = 0;
    /// for h in &headers {
    ///     let len = u32::from_be_bytes([h[8], h[9], h[10], h[11]]) as usize;
    ///     wire.extend_from_slice(h);
    ///     wire.extend_from_slice(&data[at..at + len]);
    ///     at += len;
    /// }
    /// server.handle_input(now, &mut wire).unwrap();
    /// let sid = server.accept().unwrap();
    /// let mut buf = vec![0u8; 200_000];
    /// assert_eq!(server.read(now, sid, &mut buf), Ok(100_000));
    /// ```
    pub fn write_direct(
        &mut self,
        id: StreamId,
        len: usize,
        headers: &mut Vec<[u8; HEADER_LEN]>,
    ) -> Result<usize, StreamError> {
        self.check_writable(id)?;
        let frame_size = self.config.frame_size() as usize;
        let queued = !self.send_queue.is_empty();
        let Some(s) = self.streams.get_mut(&id) else {
            return Err(StreamError::Unknown);
        };
        if queued || !s.send_buf.is_empty() {
            return Ok(0);
        }
        let n = len.min(s.send_credit as usize);
        if n == 0 {
            if len > 0 {
                s.write_waiting = true;
                return Err(StreamError::Blocked);
            }
            return Ok(0);
        }
        let mut left = n;
        while left > 0 {
            let k = left.min(frame_size);
            let flags = s.take_open_flags();
            headers.push(Header::data(id, flags, k as u32).encode());
            left -= k;
        }
        s.send_credit -= n as u32;
        Ok(n)
    }

    /// Errors of [`write`](Self::write) other than [`StreamError::Blocked`].
    fn check_writable(&self, id: StreamId) -> Result<(), StreamError> {
        let s = self.streams.get(&id).ok_or(StreamError::Unknown)?;
        if let Some(e) = self.stream_error(s) {
            return Err(e);
        }
        if s.fin_requested {
            return Err(StreamError::Finished);
        }
        Ok(())
    }

    fn queue_data(&mut self, id: StreamId, put: impl FnOnce(&mut SendBuffer)) {
        let Some(s) = self.streams.get_mut(&id) else {
            return;
        };
        put(&mut s.send_buf);
        if !s.in_send_queue {
            s.in_send_queue = true;
            self.send_queue.push_back(id);
        }
    }

    /// Half-closes the stream: FIN goes after the queued data.
    ///
    /// # Errors
    /// Reset, closed and unknown streams. Finishing twice is not an error.
    pub fn finish(&mut self, id: StreamId) -> Result<(), StreamError> {
        let s = self.streams.get(&id).ok_or(StreamError::Unknown)?;
        if let Some(e) = self.stream_error(s) {
            return Err(e);
        }
        let Some(s) = self.streams.get_mut(&id) else {
            return Err(StreamError::Unknown);
        };
        if !s.fin_requested {
            s.fin_requested = true;
            if !s.in_send_queue {
                s.in_send_queue = true;
                self.send_queue.push_back(id);
            }
        }
        Ok(())
    }

    /// Resets the stream: queued data is dropped and the peer gets RST.
    ///
    /// # Errors
    /// Unknown streams. Resetting a reset stream is not an error.
    pub fn reset(&mut self, id: StreamId) -> Result<(), StreamError> {
        let s = self.streams.get_mut(&id).ok_or(StreamError::Unknown)?;
        if s.reset.is_some() || self.error.is_some() {
            return Ok(());
        }
        s.reset = Some(ResetBy::Local);
        s.send_buf.clear();
        s.recv_buf.clear();
        s.recv_buffered = 0;
        if s.syn_pending {
            // The peer never heard of it: nothing to send.
            s.syn_pending = false;
        } else {
            s.rst_pending = true;
        }
        self.queue_ctrl(id);
        Ok(())
    }

    /// The application dropped its handle: finish the write side (after queued data), discard
    /// further input (still granting window so the peer is not stalled), and forget the
    /// stream once both sides are done.
    pub fn release(&mut self, id: StreamId) {
        let Some(s) = self.streams.get_mut(&id) else {
            return;
        };
        s.released = true;
        s.read_waiting = false;
        s.write_waiting = false;
        if s.reset.is_none() && self.error.is_none() {
            if !s.fin_requested {
                s.fin_requested = true;
                if !s.in_send_queue {
                    s.in_send_queue = true;
                    self.send_queue.push_back(id);
                }
            }
            // Unread data is dropped and granted back.
            let dropped = s.recv_buffered;
            s.recv_buf.clear();
            s.recv_buffered = 0;
            if dropped > 0 {
                s.recv_consumed += dropped;
                if !s.fin_received {
                    s.grant_pending = true;
                    self.queue_ctrl(id);
                }
            }
        }
        self.maybe_remove(id);
    }

    /// Sends a ping; its RTT comes back as [`Event::Pong`] with the returned id. `None` when
    /// the session is closed or too many pings are outstanding.
    pub fn ping(&mut self, now: Time) -> Option<u32> {
        if self.error.is_some() || self.pings.len() >= MAX_OUTSTANDING_PINGS {
            return None;
        }
        let id = self.next_ping_id;
        self.next_ping_id = self.next_ping_id.wrapping_add(1);
        self.pings.push_back((id, now));
        self.ctrl.push_back(Header::ping(Flags::SYN, id));
        Some(id)
    }

    /// Graceful go-away: tell the peer we open and accept no new streams; existing streams
    /// finish. [`is_drained`](Self::is_drained) turns true when the last one is gone.
    pub fn go_away(&mut self) {
        if self.local_go_away || self.error.is_some() {
            return;
        }
        self.local_go_away = true;
        self.ctrl.push_back(Header::go_away(GoAwayCode::Normal));
    }

    /// Closes the session now with `code`: a GoAway is transmitted, then every stream fails.
    pub fn close(&mut self, code: GoAwayCode) {
        if self.error.is_some() {
            return;
        }
        self.fail(ConnectionError::LocallyClosed(code), Some(code));
    }

    /// The underlying connection ended (end of input or an I/O error).
    pub fn handle_eof(&mut self) {
        if self.error.is_none() {
            self.fail(ConnectionError::PeerClosed, None);
        }
    }

    fn fail(&mut self, err: ConnectionError, go_away: Option<GoAwayCode>) {
        self.error = Some(err.clone());
        self.ctrl.clear();
        self.ctrl_streams.clear();
        self.send_queue.clear();
        self.queued_pongs = 0;
        self.queued_refusals = 0;
        self.closing = go_away;
        if go_away.is_some() {
            self.local_go_away = true;
        }
        for (&id, s) in self.streams.iter_mut() {
            s.in_ctrl_queue = false;
            s.in_send_queue = false;
            s.rst_pending = false;
            if s.read_waiting {
                s.read_waiting = false;
                self.events.push_back(Event::Readable(id));
            }
            if s.write_waiting {
                s.write_waiting = false;
                self.events.push_back(Event::Writable(id));
            }
        }
        self.events.push_back(Event::Closed(err));
    }

    // ---------------------------------------------------------------- timers

    /// The next time [`handle_timeout`](Self::handle_timeout) must be called.
    pub fn poll_timeout(&self) -> Option<Time> {
        if self.error.is_some() {
            return None;
        }
        let ping_deadline = self
            .pings
            .front()
            .map(|&(_, sent)| sent + self.config.ping_timeout);
        match (self.next_keepalive, ping_deadline) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        }
    }

    /// Timers: sends keepalive pings and closes the session when one goes unanswered.
    pub fn handle_timeout(&mut self, now: Time) {
        if self.error.is_some() {
            return;
        }
        if let Some(&(_, sent)) = self.pings.front() {
            if now.saturating_since(sent) >= self.config.ping_timeout {
                self.fail(
                    ConnectionError::KeepaliveTimeout,
                    Some(GoAwayCode::InternalError),
                );
                return;
            }
        }
        if let (Some(at), Some(interval)) = (self.next_keepalive, self.config.keepalive) {
            if now >= at {
                self.next_keepalive = Some(now + interval);
                if self.pings.is_empty() {
                    let _ = self.ping(now);
                }
            }
        }
    }

    /// Checks internal invariants (for tests and the fuzzer); panics on a violation.
    #[doc(hidden)]
    pub fn check_invariants(&self) {
        let mut window_sum = 0u64;
        let mut unacked = 0usize;
        for (&id, s) in &self.streams {
            assert_ne!(id, 0);
            let in_flight = match self.partial {
                Some(p) if p.stream == id && p.deliver => u64::from(p.remaining),
                _ => 0,
            };
            let total = u64::from(s.recv_credit)
                + u64::from(s.recv_buffered)
                + u64::from(s.recv_consumed)
                + in_flight;
            if s.reset.is_none() && !s.fin_received && !s.released {
                assert_eq!(total, u64::from(s.recv_window), "window accounting of {id}");
            }
            assert!(s.recv_window <= self.config.stream_window_cap().max(INITIAL_WINDOW));
            assert_eq!(
                s.recv_buffered as usize,
                s.recv_buf.iter().map(Bytes::len).sum::<usize>()
            );
            assert!(s.send_buf.len() <= s.send_credit as usize);
            assert!(
                s.send_buf.len() <= self.config.send_buffer.max(self.config.frame_size()) as usize
            );
            if s.has_sendable() && self.error.is_none() {
                assert!(
                    s.in_send_queue || s.send_credit == 0,
                    "stream {id} has data but is not queued"
                );
            }
            if !s.outbound {
                assert!(
                    self.peer_ids.is_taken(id),
                    "inbound stream {id} has a fresh id"
                );
            }
            window_sum += u64::from(s.recv_window);
            if s.outbound && !s.acked {
                unacked += 1;
            }
        }
        assert_eq!(window_sum, self.session_window);
        assert!(
            self.session_window <= self.config.session_window_cap(),
            "session window {} over the cap",
            self.session_window
        );
        assert_eq!(unacked, self.pending_open);
        assert!(self.accept_queue.len() <= self.config.max_pending_accept);
        assert!(self.queued_pongs <= MAX_QUEUED_PONGS);
        assert!(self.queued_refusals <= MAX_QUEUED_REFUSALS);
        let refusals = self
            .ctrl
            .iter()
            .filter(|h| {
                h.ty == super::frame::FrameType::WindowUpdate && h.flags.contains(Flags::RST)
            })
            .count();
        assert_eq!(refusals, self.queued_refusals);
    }
}
