//! braid's protocols as pure state machines, without I/O, tokio or clocks.
//!
//! - [`agg`]: the aggregation engine, which carries one ordered byte stream over many links.
//! - [`mux`]: the yamux stream multiplexer, many streams over one ordered byte stream.
//! - [`service`]: the header that opens each application stream, naming its service.
//!
//! Time is passed in as [`Time`]; nothing here reads a clock or touches a socket, so the same
//! inputs always give the same outputs. That is what lets `braid-sim` run thousands of link
//! scenarios in virtual time and the fuzzers drive the real engine.
#![warn(missing_docs)]

pub mod agg;
pub mod mux;
pub mod pool;
pub mod service;
mod time;

pub use time::Time;
