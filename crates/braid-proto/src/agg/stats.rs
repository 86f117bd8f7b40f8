//! Counters and estimates for reports and monitors.

use std::time::Duration;

use super::link::LinkState;

/// Per-link counters and estimates.
#[derive(Clone, Debug, Default, PartialEq)]
#[non_exhaustive]
pub struct LinkStats {
    /// Payload bytes sent on this link (first transmissions and resends).
    pub bytes_sent: u64,
    /// Payload bytes the peer acknowledged on this link.
    pub bytes_acked: u64,
    /// Payload bytes resent on this link (for other links or opportunistically).
    pub bytes_resent: u64,
    /// Payload bytes received on this link.
    pub bytes_received: u64,
    /// Estimated delivery rate, bytes per second.
    pub rate: f64,
    /// Smoothed RTT.
    pub srtt: Duration,
    /// Minimum RTT seen.
    pub min_rtt: Duration,
    /// Bytes in flight.
    pub in_flight: u64,
    /// Current state.
    pub state: Option<LinkState>,
}

/// Connection-wide counters.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct ConnectionStats {
    /// Application bytes written.
    pub bytes_written: u64,
    /// Application bytes acknowledged by the peer.
    pub bytes_acked: u64,
    /// Payload bytes sent more than once.
    pub bytes_resent: u64,
    /// Application bytes delivered to the local reader.
    pub bytes_read: u64,
    /// Duplicate payload bytes received and dropped.
    pub bytes_duplicate: u64,
    /// Bytes currently held by the sender (unsent + unacknowledged).
    pub send_buffered: u64,
    /// Peak of `send_buffered`.
    pub send_buffered_peak: u64,
    /// Bytes currently held by the receiver (in order but unread, and out of order).
    pub recv_buffered: u64,
    /// Peak of `recv_buffered`.
    pub recv_buffered_peak: u64,
    /// Links that died.
    pub links_died: u64,
}
