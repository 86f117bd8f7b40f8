//! Per-link state: liveness, RTT, delivery rate, in-flight chunks.

/// A link's local identifier within one [`Connection`](super::Connection). Never reused.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct LinkId(pub u64);

impl std::fmt::Display for LinkId {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "link#{}", self.0)
    }
}

/// Where a link is in its life.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum LinkState {
    /// Carrying data.
    Active,
    /// Leaving gracefully: no new data, waiting for acknowledgements.
    Draining,
    /// Left gracefully.
    Closed,
    /// Dead (timeout, failure, protocol error).
    Dead,
}

/// Why a link died.
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum LinkDeath {
    /// Nothing was heard from it for the liveness timeout.
    Timeout,
    /// The driver reported an error or EOF.
    Failed,
    /// The peer sent something invalid on it.
    Protocol(String),
}
