//! [`Endpoint`]: the sans-I/O calls the simulator makes on each side.
//!
//! [`braid_proto::agg::Connection`] implements it; the trait exists so the event loop can also
//! drive other state machines with the same contract (and a small fake in the unit tests).

use braid_proto::Time;
use braid_proto::agg::{
    Connection, ConnectionError, ConnectionStats, Event, LinkId, LinkStats, Read, WriteError,
};

/// One side of a simulated connection: the call contract of [`Connection`].
pub trait Endpoint {
    /// See [`Connection::add_link`].
    fn add_link(&mut self, now: Time) -> LinkId;
    /// See [`Connection::remove_link`].
    fn remove_link(&mut self, link: LinkId, now: Time);
    /// See [`Connection::link_failed`].
    fn link_failed(&mut self, link: LinkId, now: Time);
    /// See [`Connection::handle_input`].
    fn handle_input(&mut self, link: LinkId, data: &[u8], now: Time);
    /// See [`Connection::poll_transmit`].
    fn poll_transmit(&mut self, link: LinkId, now: Time, max: usize, out: &mut Vec<u8>) -> usize;
    /// See [`Connection::handle_timeout`].
    fn handle_timeout(&mut self, now: Time);
    /// See [`Connection::poll_timeout`].
    fn poll_timeout(&self) -> Option<Time>;
    /// See [`Connection::poll_event`].
    fn poll_event(&mut self) -> Option<Event>;
    /// See [`Connection::write`].
    ///
    /// # Errors
    /// As [`Connection::write`].
    fn write(&mut self, data: &[u8]) -> Result<usize, WriteError>;
    /// See [`Connection::finish`].
    ///
    /// # Errors
    /// As [`Connection::finish`].
    fn finish(&mut self) -> Result<(), WriteError>;
    /// See [`Connection::read`].
    ///
    /// # Errors
    /// As [`Connection::read`].
    fn read(&mut self, max: usize) -> Result<Read, ConnectionError>;
    /// See [`Connection::stats`].
    fn stats(&self) -> ConnectionStats;
    /// See [`Connection::link_stats`].
    fn link_stats(&self, link: LinkId) -> Option<LinkStats>;
}

impl Endpoint for Connection {
    fn add_link(&mut self, now: Time) -> LinkId {
        Connection::add_link(self, now)
    }
    fn remove_link(&mut self, link: LinkId, now: Time) {
        Connection::remove_link(self, link, now)
    }
    fn link_failed(&mut self, link: LinkId, now: Time) {
        Connection::link_failed(self, link, now)
    }
    fn handle_input(&mut self, link: LinkId, data: &[u8], now: Time) {
        Connection::handle_input(self, link, data, now)
    }
    fn poll_transmit(&mut self, link: LinkId, now: Time, max: usize, out: &mut Vec<u8>) -> usize {
        Connection::poll_transmit(self, link, now, max, out)
    }
    fn handle_timeout(&mut self, now: Time) {
        Connection::handle_timeout(self, now)
    }
    fn poll_timeout(&self) -> Option<Time> {
        Connection::poll_timeout(self)
    }
    fn poll_event(&mut self) -> Option<Event> {
        Connection::poll_event(self)
    }
    fn write(&mut self, data: &[u8]) -> Result<usize, WriteError> {
        Connection::write(self, data)
    }
    fn finish(&mut self) -> Result<(), WriteError> {
        Connection::finish(self)
    }
    fn read(&mut self, max: usize) -> Result<Read, ConnectionError> {
        Connection::read(self, max)
    }
    fn stats(&self) -> ConnectionStats {
        Connection::stats(self)
    }
    fn link_stats(&self, link: LinkId) -> Option<LinkStats> {
        Connection::link_stats(self, link)
    }
}
