//! Sequences of operations on two connected state machines (open, accept, read, write,
//! finish, reset, release, ping, go-away, partial delivery, time, garbage): invariants and the
//! integrity of every byte are checked after each step (`braid_proto::mux::sim`).
//!
//! `cargo fuzz run mux_session`
#![no_main]

use braid_proto::mux::Config;
use braid_proto::mux::sim::{Op, Pair};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|ops: Vec<Op>| {
    let mut config = Config::default();
    config.max_frame_size = 4096;
    config.max_streams = 16;
    config.max_pending_accept = 4;
    config.max_pending_open = 4;
    let mut pair = Pair::new(config);
    for op in ops.into_iter().take(2000) {
        pair.apply(op);
    }
    pair.settle();
});
