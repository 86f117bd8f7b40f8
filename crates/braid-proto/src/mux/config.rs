//! Session configuration.

use std::time::Duration;

/// The per-stream window every yamux peer starts with (the spec's 256 KiB).
pub const INITIAL_WINDOW: u32 = 256 * 1024;

/// Tuning and limits of a multiplexed session.
///
/// The defaults suit a LAN or WAN link; every field can be set directly.
///
/// ```
/// use braid_proto::mux::Config;
/// use std::time::Duration;
/// let mut config = Config::default();
/// config.max_streams = 20_000;
/// config.keepalive = Some(Duration::from_secs(10));
/// assert_eq!(config.max_frame_size, 64 * 1024);
/// ```
#[derive(Clone, Debug)]
#[non_exhaustive]
pub struct Config {
    /// The largest receive window one stream may grow to by auto-tuning (default 16 MiB).
    ///
    /// Windows start at [`INITIAL_WINDOW`] and double while the reader keeps up.
    pub max_stream_window: u32,
    /// Cap on the sum of all streams' receive windows, the session's memory bound for data the
    /// peer may send ahead of the readers (default 128 MiB, at least [`INITIAL_WINDOW`]).
    ///
    /// Every stream takes [`INITIAL_WINDOW`] of it from the start (yamux does not negotiate
    /// it), so it also bounds the number of streams: a stream whose initial window does not
    /// fit is refused like one beyond `max_streams` (512 streams by default). Windows grow
    /// beyond the initial one only while the initial windows of the streams `max_streams`
    /// still allows, or half of this cap if that is less, stay free: grown windows never lock
    /// new streams out.
    pub max_session_window: u64,
    /// Largest Data frame payload sent (default 64 KiB; at most 1 MiB, since peers such as
    /// rust-yamux drop the connection on larger frames). Smaller frames share the link more
    /// finely between streams.
    pub max_frame_size: u32,
    /// Bytes a stream's writer may queue ahead of the transmitter (default 1 MiB).
    pub send_buffer: u32,
    /// Bytes all streams together may queue ahead of the transmitter (default 4 MiB). With
    /// many busy streams this keeps the queued data few enough to still be in the CPU's cache
    /// when it is written to the connection; writers held back by it are woken together when
    /// half of it has drained.
    pub session_send_buffer: u64,
    /// Maximum concurrent streams, both directions (default 8192). A peer's SYN beyond it is
    /// answered with RST; the session survives. `max_session_window` may allow fewer.
    pub max_streams: usize,
    /// Maximum inbound streams not yet accepted (and so not yet ACKed) by the application
    /// (default 256). A peer's SYN beyond it is answered with RST.
    pub max_pending_accept: usize,
    /// Maximum outbound streams the peer has not yet ACKed (default 256); opening more waits.
    pub max_pending_open: usize,
    /// Interval between keepalive pings, `None` to send none (default 30 s).
    pub keepalive: Option<Duration>,
    /// How long a ping may stay unanswered before the session is closed (default 30 s).
    pub ping_timeout: Duration,
    /// RTT assumed until a ping has measured one (default 100 ms); drives window auto-tuning.
    pub initial_rtt: Duration,
    /// Send one ping when the session starts, so window auto-tuning works from a measured RTT
    /// instead of `initial_rtt` (default true).
    pub probe_rtt_at_start: bool,
    /// Receive window each stream gets as soon as it is opened or accepted (default
    /// [`INITIAL_WINDOW`], the spec's 256 KiB, which needs no grant). Larger values are granted
    /// at once with a window update, within `max_stream_window` and the room
    /// `max_session_window` leaves windows to grow: for transports whose round trip under load
    /// is long from the start (an aggregated braid connection), so a stream does not spend its
    /// first megabytes growing its window.
    pub initial_stream_window: u32,
}

impl Default for Config {
    fn default() -> Self {
        Config {
            max_stream_window: 16 * 1024 * 1024,
            max_session_window: 128 * 1024 * 1024,
            max_frame_size: 64 * 1024,
            send_buffer: 1024 * 1024,
            session_send_buffer: 4 * 1024 * 1024,
            max_streams: 8192,
            max_pending_accept: 256,
            max_pending_open: 256,
            keepalive: Some(Duration::from_secs(30)),
            ping_timeout: Duration::from_secs(30),
            initial_rtt: Duration::from_millis(100),
            probe_rtt_at_start: true,
            initial_stream_window: INITIAL_WINDOW,
        }
    }
}

impl Config {
    /// The frame size actually used: `max_frame_size` clamped to 1 KiB..=1 MiB.
    pub(crate) fn frame_size(&self) -> u32 {
        self.max_frame_size.clamp(1024, 1024 * 1024)
    }

    /// The stream window cap actually used: never below the initial window.
    pub(crate) fn stream_window_cap(&self) -> u32 {
        self.max_stream_window.max(INITIAL_WINDOW)
    }

    /// The session window cap actually used: never below one stream's initial window.
    pub(crate) fn session_window_cap(&self) -> u64 {
        self.max_session_window.max(u64::from(INITIAL_WINDOW))
    }
}
