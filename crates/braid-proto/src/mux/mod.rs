//! The yamux stream multiplexer as a state machine: many independent byte streams over one
//! ordered connection, either side opening.
//!
//! ```text
//!   application            Connection (this module)               wire
//!   open/accept ──────────▶ streams ─┐
//!   write/finish/reset ───▶ send buffers ─▶ poll_transmit ──▶ frames out (control first,
//!   read ◀───────────────── recv buffers ◀─ handle_input ◀──  then data round-robin)
//!   poll_event ◀────────── events          poll_timeout/handle_timeout (keepalive)
//! ```
//!
//! The wire format is hashicorp's yamux (`docs/PROTOCOL.md`): a 12-byte header
//! ([`frame::Header`]), four frame types, SYN/ACK/FIN/RST flags, per-stream windows starting at
//! 256 KiB. This implementation auto-tunes each receive window up to
//! [`Config::max_stream_window`] while the reader keeps up, caps the sum of windows (initial
//! ones included) at [`Config::max_session_window`], shares [`Config::session_send_buffer`] among busy writers,
//! cuts writes into frames of at most
//! [`Config::max_frame_size`], serves streams round-robin with control frames first, and
//! refuses (RST) inbound streams beyond [`Config::max_streams`], the session window or
//! [`Config::max_pending_accept`] without ending the session.
//!
//! `braid::mux::Session` drives it over a tokio byte stream.

mod config;
mod connection;
mod error;
pub mod frame;
mod peer_ids;
mod stream;
mod transmit;

#[cfg(any(test, feature = "arbitrary"))]
#[doc(hidden)]
pub mod sim;

pub use config::{Config, INITIAL_WINDOW};
pub use connection::{Connection, Event, Side};
pub use error::{ConnectionError, OpenError, ProtocolError, StreamError};
pub use frame::{GoAwayCode, StreamId};
pub use stream::{ResetBy, StreamState};
pub use transmit::{Chunks, FrameSink};

#[cfg(test)]
mod tests;
