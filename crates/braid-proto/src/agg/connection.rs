//! [`Connection`]: the engine's public face.

use bytes::Bytes;

use super::link::{LinkDeath, LinkId};
use super::stats::{ConnectionStats, LinkStats};
use super::{Config, ConnectionError, WriteError};
use crate::Time;

/// Something the application or driver should know about.
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum Event {
    /// A link was declared dead or failed; its unacknowledged data is being resent on others.
    /// The driver should close its socket (and may redial).
    LinkDead {
        /// Which link.
        link: LinkId,
        /// Why.
        reason: LinkDeath,
    },
    /// A link finished its graceful leave; the driver closes its socket after flushing.
    LinkClosed(LinkId),
    /// Data (or the end of the stream) can be read.
    Readable,
    /// Send buffer space opened up.
    Writable,
    /// Both directions finished and everything sent was acknowledged.
    Closed,
    /// The connection failed.
    Failed(ConnectionError),
}

/// The result of [`Connection::read`].
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Read {
    /// The next bytes of the peer's stream.
    Data(Bytes),
    /// Nothing to read now; [`Event::Readable`] follows when there is.
    Blocked,
    /// The peer finished its stream; everything it sent was read.
    Finished,
}

/// One end of an aggregated connection. See the [module docs](super) for the call order.
#[derive(Debug)]
pub struct Connection {
    _private: (),
}

#[allow(clippy::todo, unused_variables)]
impl Connection {
    /// A connection with no links yet.
    pub fn new(config: Config, now: Time) -> Self {
        todo!()
    }

    /// Admits a new link (after its handshake) and returns its local id.
    pub fn add_link(&mut self, now: Time) -> LinkId {
        todo!()
    }

    /// Starts a graceful leave of `link`: no new data is scheduled on it; once its data is
    /// acknowledged a `LinkClose` is sent and [`Event::LinkClosed`] follows.
    pub fn remove_link(&mut self, link: LinkId, now: Time) {
        todo!()
    }

    /// The link failed loudly (EOF, I/O error): it is dead, its data is resent on others.
    pub fn link_failed(&mut self, link: LinkId, now: Time) {
        todo!()
    }

    /// Bytes read from `link`. A protocol violation kills that link only (see
    /// [`Event::LinkDead`]).
    pub fn handle_input(&mut self, link: LinkId, data: &[u8], now: Time) {
        todo!()
    }

    /// Appends frames for `link` to `out`, at most about `max` bytes (a frame is never split,
    /// so it may exceed `max` by less than one chunk plus header). Returns the bytes appended;
    /// 0 means the engine has nothing for this link now.
    pub fn poll_transmit(
        &mut self,
        link: LinkId,
        now: Time,
        max: usize,
        out: &mut Vec<u8>,
    ) -> usize {
        todo!()
    }

    /// Processes expired timers (liveness, keepalive, grace).
    pub fn handle_timeout(&mut self, now: Time) {
        todo!()
    }

    /// The next time [`Connection::handle_timeout`] must be called, if any.
    pub fn poll_timeout(&self) -> Option<Time> {
        todo!()
    }

    /// The next event, if any.
    pub fn poll_event(&mut self) -> Option<Event> {
        todo!()
    }

    /// Queues application bytes; returns how many were taken (0 when the send buffer is full:
    /// [`Event::Writable`] follows when it has room).
    pub fn write(&mut self, data: &[u8]) -> Result<usize, WriteError> {
        todo!()
    }

    /// Ends this side's stream after what was written (half-close).
    pub fn finish(&mut self) -> Result<(), WriteError> {
        todo!()
    }

    /// Reads up to `max` bytes of the peer's stream.
    pub fn read(&mut self, max: usize) -> Result<Read, ConnectionError> {
        todo!()
    }

    /// Aborts the connection; the peer sees [`ConnectionError::PeerReset`] with `code`.
    pub fn abort(&mut self, code: u32, now: Time) {
        todo!()
    }

    /// Live (not dead or closed) links.
    pub fn links(&self) -> Vec<LinkId> {
        todo!()
    }

    /// Whether the connection ended (gracefully or not).
    pub fn is_closed(&self) -> bool {
        todo!()
    }

    /// Connection-wide counters.
    pub fn stats(&self) -> ConnectionStats {
        todo!()
    }

    /// Counters of one link (also of dead links, until they are forgotten).
    pub fn link_stats(&self, link: LinkId) -> Option<LinkStats> {
        todo!()
    }
}
