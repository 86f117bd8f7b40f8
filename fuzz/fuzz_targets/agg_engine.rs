//! Sequences of engine operations (writes, reads, partial deliveries, link joins, failures,
//! drains, time, aborts) applied to two real engines, invariants checked after each step.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    braid_proto::agg::fuzzing::run_ops(data);
});
