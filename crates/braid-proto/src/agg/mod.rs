//! The aggregation engine: one reliable, ordered, full-duplex byte stream over many links.
//!
//! ```text
//!   application bytes                                   application bytes
//!        │ write()                                              ▲ read()
//!  ┌─────▼──────────────┐   link 0 (Data, Ack, Ping...)   ┌─────┴──────────────┐
//!  │ SendBuffer         │ ──────────────────────────────▶ │ ReorderBuffer      │
//!  │ Scheduler          │   link 1                        │ acks, window       │
//!  │ LinkHealth per link│ ──────────────────────────────▶ │ LinkHealth         │
//!  └────────────────────┘   link N                        └────────────────────┘
//! ```
//!
//! [`Connection`] is a pure state machine. The caller (the tokio driver in `braid`, or the
//! simulator in `braid-sim`) owns the links (reliable ordered byte pipes such as TCP sockets)
//! and feeds it:
//!
//! 1. bytes read from a link: [`Connection::handle_input`];
//! 2. a link that failed loudly (EOF, error): [`Connection::link_failed`];
//! 3. expired timers: [`Connection::handle_timeout`] once `now >= poll_timeout()`.
//!
//! After any of these, and whenever a link can take more bytes, the caller drains
//! [`Connection::poll_transmit`] for each link, [`Connection::poll_event`] for events, and
//! re-arms its timer from [`Connection::poll_timeout`]. Application data goes in through
//! [`Connection::write`] and comes out through [`Connection::read`].

mod connection;
pub mod frame;
#[doc(hidden)]
pub mod fuzzing;
pub mod handshake;
mod link;
mod path;
mod recv;
mod scheduler;
mod send;
mod stats;

pub use connection::{Connection, Event, Read};
pub use frame::ConnectionId;
pub use link::{LinkDeath, LinkId, LinkState};
pub use path::PathId;
pub use stats::{ConnectionStats, LinkStats};

use std::time::Duration;

/// Engine settings. Both ends may use different values; nothing here must match.
#[derive(Clone, Debug)]
#[non_exhaustive]
pub struct Config {
    /// Chunk size (bytes) on links that send under this much per millisecond, and on a link
    /// whose rate is not known yet. Faster links get a millisecond of their rate per chunk,
    /// up to `max_chunk_size`. Smaller writes go out at once as smaller chunks.
    pub chunk_size: usize,
    /// Largest chunk (bytes), on fast links. Every chunk costs the sender the same
    /// scheduling and bookkeeping whatever its size: on loopback, 64 KiB chunks instead of
    /// 16 KiB took plaintext from 80% to 90% of raw TCP. Slow links keep small chunks, so
    /// their windows (two chunks at least) and queues stay short.
    pub max_chunk_size: usize,
    /// Receive window (bytes): the most this side buffers for the application, in order or
    /// not. The peer never sends beyond it.
    pub recv_window: u64,
    /// Send buffer limit (bytes): unsent plus unacknowledged data kept by the sender.
    pub send_buffer: u64,
    /// Unsent bytes the sender takes ahead of its links (like TCP's `TCP_NOTSENT_LOWAT`), or
    /// what all links together deliver in two of the slowest one's minimum round trips if
    /// that is more; writes beyond it wait until a link takes data. `send_buffer` still
    /// bounds what is in flight. Kept small, bytes are still in the CPU caches when they go
    /// out, and a message written behind a bulk transfer waits for a few round trips of data,
    /// not for a whole send buffer. On loopback (`benches/runtime.rs`, plaintext), 4 MiB gave
    /// 78% of raw TCP over 1 link where an unlimited one gave 73%; 1 MiB swung between 40%
    /// and 75%. Until 2026-11-22 (session 4) it counted per active link; with 4 links on
    /// loopback that made 16 MiB, and the copies went cold.
    pub unsent_limit: u64,
    /// In-flight bytes allowed on a link before its delivery rate is known.
    pub initial_link_window: u64,
    /// Shortest round trip a link's window is sized for (its window is twice its delivery
    /// rate times `max(min RTT, this)`). On loopback the idle round trip can be a few µs,
    /// far below how late acknowledgements come back in batches under load. Keep it small:
    /// a larger in-flight window on loopback costs more than it gains (the data falls out of
    /// the CPU caches: 1 ms halved plaintext throughput in `benches/runtime.rs`).
    pub window_rtt_floor: Duration,
    /// A link with outstanding data or pings that hears nothing for
    /// `max(link_timeout_floor, link_timeout_rtts × smoothed RTT)` is declared dead.
    pub link_timeout_floor: Duration,
    /// See `link_timeout_floor`.
    pub link_timeout_rtts: u32,
    /// A link sends a ping after this long without sending anything else.
    pub keepalive: Duration,
    /// How long a connection with no live link keeps its data and waits for a new link.
    pub grace: Duration,
    /// Checksum every chunk with CRC32C (for plaintext links).
    pub crc: bool,
}

impl Config {
    /// The largest chunk the sender cuts on any link.
    pub(crate) fn largest_chunk(&self) -> usize {
        self.chunk_size.max(self.max_chunk_size)
    }

    /// The shortest silence after which a link owing an answer counts as stalled (a third of
    /// `link_timeout_floor`): see `Link::stalled_at`.
    pub(crate) fn stall_floor(&self) -> Duration {
        self.link_timeout_floor / 3
    }
}

impl Default for Config {
    fn default() -> Self {
        Config {
            chunk_size: 16 * 1024,
            max_chunk_size: 64 * 1024,
            recv_window: 16 * 1024 * 1024,
            send_buffer: 16 * 1024 * 1024,
            unsent_limit: 4 * 1024 * 1024,
            initial_link_window: 160 * 1024,
            window_rtt_floor: Duration::from_micros(100),
            link_timeout_floor: Duration::from_millis(150),
            link_timeout_rtts: 4,
            keepalive: Duration::from_millis(100),
            grace: Duration::from_secs(30),
            crc: false,
        }
    }
}

/// Why the connection ended abnormally.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum ConnectionError {
    /// The peer aborted the connection.
    #[error("connection reset by peer (code {0})")]
    PeerReset(u32),
    /// This side aborted the connection.
    #[error("connection reset locally (code {0})")]
    LocalReset(u32),
    /// No link was alive for the configured grace time.
    #[error("no live link for {0:?}")]
    NoLinks(Duration),
}

/// Errors of [`Connection::write`] and [`Connection::finish`].
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum WriteError {
    /// `finish` was called already.
    #[error("stream already finished")]
    Finished,
    /// The connection is gone.
    #[error(transparent)]
    Closed(#[from] ConnectionError),
}

#[cfg(test)]
mod tests;
