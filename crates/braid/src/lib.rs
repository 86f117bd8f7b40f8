//! braid: many network links, one fast unbreakable connection, many streams inside it.
//!
//! This crate is the tokio driver and public API over the state machines of `braid-proto`.
#![warn(missing_docs)]

pub mod mux;

pub use braid_proto as proto;
