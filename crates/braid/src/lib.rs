//! braid: many network links, one fast unbreakable connection.
//!
//! This crate is the tokio runtime over the pure state machines of [`braid_proto`]: it dials
//! and accepts links ([`transport`], from [`spec`] strings), secures each one with a Noise
//! handshake and authenticated encryption under a pre-shared key ([`secure`]), runs one thin
//! driver task per connection, and exposes each connection as a tokio byte stream
//! ([`Connection`]). Applications run as streams of one [`mux`] session inside a connection,
//! each naming its service in its first bytes ([`service`]), so one server port serves them
//! all.
//!
//! ```text
//!   app ──AsyncWrite──▶ Connection ──▶ driver task (braid_proto::agg engine)
//!                                        │ link 0: tcp://a?count=2 ─┐ Noise + TCP/Unix/exec
//!                                        │ link 1: tcp://b         ─┼──▶ server Listener
//!                                        │ link 2: exec:ssh ...    ─┘    (groups links by id)
//! ```
//!
//! ```no_run
//! # #[tokio::main] async fn main() -> Result<(), Box<dyn std::error::Error>> {
//! use braid::{client, server, secure::Key};
//! use tokio::io::{AsyncReadExt, AsyncWriteExt};
//!
//! let key = Key::generate();
//! let mut listener = server::Listener::bind(
//!     &["127.0.0.1:7700".parse()?],
//!     server::ServerConfig::new(key.clone()),
//! ).await?;
//! tokio::spawn(async move {
//!     while let Some(mut conn) = listener.accept().await {
//!         tokio::spawn(async move {
//!             let mut buf = Vec::new();
//!             conn.read_to_end(&mut buf).await.unwrap();
//!             conn.write_all(&buf).await.unwrap();
//!             conn.shutdown().await.unwrap();
//!         });
//!     }
//! });
//! let specs = ["tcp://127.0.0.1:7700?count=4".parse()?];
//! let mut conn = client::connect(&specs, client::ClientConfig::new(key)).await?;
//! conn.write_all(b"ping").await?;
//! conn.shutdown().await?;
//! let mut echo = Vec::new();
//! conn.read_to_end(&mut echo).await?;
//! assert_eq!(echo, b"ping");
//! # Ok(()) }
//! ```
#![warn(missing_docs)]

pub mod backoff;
pub mod client;
mod connection;
mod driver;
pub mod interfaces;
mod join;
pub mod mux;
pub mod secure;
pub mod server;
pub mod service;
pub mod spec;
pub mod transport;

pub use braid_proto as proto;
pub use connection::{
    Connection, ConnectionEvent, ConnectionHandle, ConnectionState, LinkError, LinkInfo, ReadHalf,
    WriteHalf,
};
pub use join::JoinError;
