//! Stream multiplexing: many independent byte streams over one connection, yamux on the wire.
//!
//! ```text
//!   Session (handle, Clone) ──open()/accept()──▶ Stream: AsyncRead + AsyncWrite
//!        │                                          │
//!        └──────── Arc<Mutex<braid_proto::mux::Connection>> ◀┘
//!                               ▲
//!                     driver task (spawned): reads the socket, feeds the state machine,
//!                     writes batched frames, fires timers, wakes streams
//! ```
//!
//! The transport and the frames waiting for it have their own lock. A large write goes from
//! the caller's buffer straight to the transport (`writev` of frame headers and the caller's
//! slices) when nothing waits before it; streams take turns at it as at a socket.
//!
//! A [`Session`] runs over any `AsyncRead + AsyncWrite` byte stream (TCP, TLS, a braid
//! connection). It drives itself from a spawned task: no polling loop in the application. Either
//! side opens streams; the wire format is hashicorp's yamux, so Go and rust-yamux peers
//! interoperate.
//!
//! Over TCP, set `TCP_NODELAY`: a session sends many small frames (window updates, pings,
//! short messages) that Nagle's algorithm would otherwise hold for a delayed ACK (~40 ms).
//!
//! ```no_run
//! use braid::mux::{Config, Session};
//! use tokio::io::{AsyncReadExt, AsyncWriteExt};
//!
//! # async fn run() -> Result<(), Box<dyn std::error::Error>> {
//! let tcp = tokio::net::TcpStream::connect("127.0.0.1:7000").await?;
//! tcp.set_nodelay(true)?;
//! let session = Session::client(tcp, Config::default());
//! let mut stream = session.open().await?;
//! stream.write_all(b"hello").await?;
//! stream.shutdown().await?; // FIN: the peer reads end of stream
//! let mut reply = Vec::new();
//! stream.read_to_end(&mut reply).await?;
//! # Ok(()) }
//! ```

mod driver;
mod pool;
mod session;
mod stream;

pub use braid_proto::mux::{Config, ConnectionError, GoAwayCode, StreamId};
pub use session::{Session, SessionError};
pub use stream::Stream;
