//! Per-stream state: handshake flags, send buffer and credit, receive buffer and window.
//!
//! A stream's life, as this side sees it (h2-style; each half closes on its own):
//!
//! ```text
//!                  open()                         peer SYN
//!                    |                                |
//!                    v                                v
//!             +-------------+                  +-------------+
//!             |   Opening   | -- peer ACK -->  |    Open     | <-- accept() (we send ACK)
//!             | (SYN sent)  |   (or any frame) |             |
//!             +-------------+                  +-------------+
//!                          finish(): FIN sent /         \ peer FIN
//!                                            v           v
//!                               +------------------+  +-------------------+
//!                               | HalfClosedLocal  |  | HalfClosedRemote  |
//!                               +------------------+  +-------------------+
//!                                   peer FIN \             / finish(): FIN sent
//!                                             v           v
//!                                           +---------------+
//!                                           |    Closed     |
//!                                           +---------------+
//!        reset() or peer RST, from any state: --> Reset (buffers dropped at once)
//! ```

use std::collections::VecDeque;

use bytes::{Buf, Bytes, BytesMut};

use super::transmit::FrameSink;

use super::config::INITIAL_WINDOW;
use crate::Time;

/// Who reset a stream.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ResetBy {
    /// This side.
    Local,
    /// The peer.
    Remote,
}

/// The state of a stream, derived from its halves (see the diagram in the module docs).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum StreamState {
    /// Outbound, not yet ACKed by the peer.
    Opening,
    /// Both directions open.
    Open,
    /// We sent FIN; the peer may still send.
    HalfClosedLocal,
    /// The peer sent FIN; we may still send.
    HalfClosedRemote,
    /// Both FINs exchanged.
    Closed,
    /// Reset by one side.
    Reset(ResetBy),
}

#[derive(Debug)]
pub(crate) struct Stream {
    pub(crate) outbound: bool,
    /// Outbound: SYN not yet sent.
    pub(crate) syn_pending: bool,
    /// Inbound: accepted, ACK not yet sent.
    pub(crate) ack_pending: bool,
    /// Outbound: the peer ACKed (or answered on) the stream.
    pub(crate) acked: bool,
    /// Inbound: handed to the application.
    pub(crate) accepted: bool,

    /// Bytes the peer allows us to send (and not yet sent).
    pub(crate) send_credit: u32,
    pub(crate) send_buf: SendBuffer,
    pub(crate) fin_requested: bool,
    pub(crate) fin_sent: bool,
    pub(crate) write_waiting: bool,

    pub(crate) recv_buf: VecDeque<Bytes>,
    pub(crate) recv_buffered: u32,
    /// Bytes the peer may still send.
    pub(crate) recv_credit: u32,
    /// Target receive window (auto-tuned).
    pub(crate) recv_window: u32,
    /// Bytes read by the application and not yet granted back.
    pub(crate) recv_consumed: u32,
    /// A window update is due.
    pub(crate) grant_pending: bool,
    pub(crate) last_grant: Time,
    pub(crate) fin_received: bool,
    pub(crate) read_waiting: bool,

    pub(crate) reset: Option<ResetBy>,
    pub(crate) rst_pending: bool,
    /// The application dropped its handle.
    pub(crate) released: bool,

    pub(crate) in_send_queue: bool,
    pub(crate) in_ctrl_queue: bool,
}

impl Stream {
    pub(crate) fn new(outbound: bool, now: Time) -> Self {
        Stream {
            outbound,
            syn_pending: outbound,
            ack_pending: false,
            acked: !outbound,
            accepted: false,
            send_credit: INITIAL_WINDOW,
            send_buf: SendBuffer::default(),
            fin_requested: false,
            fin_sent: false,
            write_waiting: false,
            recv_buf: VecDeque::new(),
            recv_buffered: 0,
            recv_credit: INITIAL_WINDOW,
            recv_window: INITIAL_WINDOW,
            recv_consumed: 0,
            grant_pending: false,
            last_grant: now,
            fin_received: false,
            read_waiting: false,
            reset: None,
            rst_pending: false,
            released: false,
            in_send_queue: false,
            in_ctrl_queue: false,
        }
    }

    /// The SYN and ACK this stream still owes the peer, marked sent: they ride on the next
    /// frame of the stream, whichever it is.
    pub(crate) fn take_open_flags(&mut self) -> super::frame::Flags {
        let mut flags = super::frame::Flags::NONE;
        if std::mem::take(&mut self.syn_pending) {
            flags |= super::frame::Flags::SYN;
        }
        if std::mem::take(&mut self.ack_pending) {
            flags |= super::frame::Flags::ACK;
        }
        flags
    }

    pub(crate) fn state(&self) -> StreamState {
        if let Some(by) = self.reset {
            return StreamState::Reset(by);
        }
        match (self.fin_sent, self.fin_received) {
            (true, true) => StreamState::Closed,
            (true, false) => StreamState::HalfClosedLocal,
            (false, true) => StreamState::HalfClosedRemote,
            (false, false) if self.outbound && !self.acked => StreamState::Opening,
            (false, false) => StreamState::Open,
        }
    }

    /// Copies buffered data into `out`; returns the bytes copied.
    pub(crate) fn read_into(&mut self, out: &mut [u8]) -> usize {
        let mut n = 0;
        while n < out.len() {
            let Some(front) = self.recv_buf.front_mut() else {
                break;
            };
            let take = front.len().min(out.len() - n);
            out[n..n + take].copy_from_slice(&front[..take]);
            front.advance(take);
            n += take;
            if front.is_empty() {
                self.recv_buf.pop_front();
            }
        }
        self.recv_buffered -= n as u32;
        n
    }

    /// Takes up to `max` bytes of buffered data without copying.
    pub(crate) fn read_chunk(&mut self, max: usize) -> Option<Bytes> {
        let front = self.recv_buf.front_mut()?;
        let chunk = if front.len() <= max {
            self.recv_buf.pop_front()?
        } else {
            front.split_to(max)
        };
        self.recv_buffered -= chunk.len() as u32;
        Some(chunk)
    }

    /// Whether the data transmitter has something to send for this stream.
    pub(crate) fn has_sendable(&self) -> bool {
        self.reset.is_none()
            && (!self.send_buf.is_empty() || (self.fin_requested && !self.fin_sent))
    }

    /// Whether nothing more can happen on this stream and it can be forgotten.
    pub(crate) fn is_finished(&self) -> bool {
        if self.rst_pending || self.in_ctrl_queue {
            return false;
        }
        let done = self.reset.is_some() || (self.fin_sent && self.fin_received);
        done && self.released
    }
}

/// Data queued by the application: chunks handed over without copying ([`Bytes`]), then a tail
/// that `write(&[u8])` copies into.
#[derive(Debug, Default)]
pub(crate) struct SendBuffer {
    chunks: VecDeque<Bytes>,
    tail: BytesMut,
    len: usize,
}

impl SendBuffer {
    pub(crate) fn len(&self) -> usize {
        self.len
    }

    pub(crate) fn is_empty(&self) -> bool {
        self.len == 0
    }

    pub(crate) fn extend_from_slice(&mut self, data: &[u8]) {
        self.tail.extend_from_slice(data);
        self.len += data.len();
    }

    pub(crate) fn push_chunk(&mut self, b: Bytes) {
        if !self.tail.is_empty() {
            self.chunks.push_back(self.tail.split().freeze());
        }
        self.len += b.len();
        self.chunks.push_back(b);
    }

    pub(crate) fn clear(&mut self) {
        *self = SendBuffer::default();
    }

    /// Moves the first `n` bytes (at most `len`) into `out`.
    pub(crate) fn take_into<S: FrameSink>(&mut self, out: &mut S, n: usize) {
        let mut n = n.min(self.len);
        self.len -= n;
        while n > 0 {
            match self.chunks.front_mut() {
                Some(front) if front.len() <= n => {
                    n -= front.len();
                    if let Some(b) = self.chunks.pop_front() {
                        out.put_bytes(b);
                    }
                }
                Some(front) => {
                    out.put_bytes(front.split_to(n));
                    n = 0;
                }
                None => {
                    let k = n.min(self.tail.len());
                    out.put_data(&mut self.tail, k);
                    n = 0;
                }
            }
        }
    }
}
