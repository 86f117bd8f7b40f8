//! Errors, by who is to blame.

use thiserror::Error;

use super::frame::{FrameError, GoAwayCode, StreamId};

/// Why a session ended.
#[derive(Clone, Debug, PartialEq, Eq, Error)]
#[non_exhaustive]
pub enum ConnectionError {
    /// The peer broke the protocol; we sent GoAway(protocol error) and closed.
    #[error("peer misbehaved: {0}")]
    PeerMisbehaved(#[from] ProtocolError),
    /// A keepalive ping went unanswered for the configured timeout.
    #[error("keepalive ping timed out")]
    KeepaliveTimeout,
    /// The application closed the session with this code.
    #[error("session closed locally ({0:?})")]
    LocallyClosed(GoAwayCode),
    /// The peer closed the underlying connection (end of input).
    #[error("connection closed by the peer")]
    PeerClosed,
}

/// A protocol violation by the peer.
#[derive(Clone, Debug, PartialEq, Eq, Error)]
#[non_exhaustive]
pub enum ProtocolError {
    /// A header that does not decode.
    #[error("bad frame header: {0}")]
    Frame(#[from] FrameError),
    /// Data beyond the window we granted.
    #[error("stream {stream} sent {len} bytes with only {credit} bytes of window")]
    FlowControl {
        /// The stream.
        stream: StreamId,
        /// Payload length.
        len: u32,
        /// Window left.
        credit: u32,
    },
    /// SYN for a stream that already exists.
    #[error("SYN for existing stream {0}")]
    DuplicateStream(StreamId),
    /// SYN for a stream id the peer used before (its stream ended or was refused): yamux
    /// never reuses an id.
    #[error("SYN reuses stream id {0}")]
    ReusedStreamId(StreamId),
    /// SYN with a stream id the peer may not use (0 or our parity).
    #[error("SYN with invalid stream id {0}")]
    InvalidStreamId(StreamId),
    /// Data frame on stream 0.
    #[error("data on stream 0")]
    DataOnSessionStream,
    /// SYNs beyond the stream limits faster than their RSTs could be sent.
    #[error("flood of refused streams (more than 256 RSTs waiting to be sent)")]
    RefusalFlood,
}

/// Why a stream cannot be opened.
#[derive(Clone, Debug, PartialEq, Eq, Error)]
#[non_exhaustive]
pub enum OpenError {
    /// The peer has not ACKed `max_pending_open` streams yet: wait for [`super::Event::CanOpen`].
    #[error("too many streams awaiting the peer's ACK")]
    Blocked,
    /// `max_streams` are open, or the session window has no room for another stream's
    /// initial window (`max_session_window`).
    #[error("stream limit reached")]
    TooManyStreams,
    /// A GoAway was sent or received: no new streams.
    #[error("session is going away")]
    GoingAway,
    /// Stream ids are exhausted.
    #[error("stream ids exhausted")]
    IdsExhausted,
    /// The session is closed.
    #[error("session closed: {0}")]
    Closed(ConnectionError),
}

/// Why a stream read or write failed.
#[derive(Clone, Debug, PartialEq, Eq, Error)]
#[non_exhaustive]
pub enum StreamError {
    /// Nothing to read or no room to write now: wait for [`super::Event::Readable`] or
    /// [`super::Event::Writable`].
    #[error("stream would block")]
    Blocked,
    /// The peer reset the stream.
    #[error("stream reset by the peer")]
    ResetByPeer,
    /// This side reset the stream.
    #[error("stream reset locally")]
    ResetLocally,
    /// Writing after `finish`.
    #[error("stream already finished")]
    Finished,
    /// No such stream (released or never opened).
    #[error("unknown stream")]
    Unknown,
    /// The session is closed.
    #[error("session closed: {0}")]
    Closed(ConnectionError),
}
