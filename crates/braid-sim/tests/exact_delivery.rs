//! Issue 2, test 1: exact delivery, both directions at once, across random schedules of
//! joins, deaths, returns and rate changes: every byte arrives once, in order.

mod common;

use proptest::prelude::*;

#[test]
fn chaos_scenario_delivers_every_byte() {
    let s = common::scenario("chaos.toml", 1);
    for r in common::run(&s) {
        common::assert_exact(&r);
    }
}

#[test]
fn random_schedules_with_fixed_seeds() {
    let size = if cfg!(debug_assertions) {
        1_000_000
    } else {
        4_000_000
    };
    let reports: Vec<_> = (1..=8)
        .map(|seed| braid_sim::run(&common::random_schedule(seed, size), seed).expect("valid"))
        .collect();
    common::show(&reports);
    for r in &reports {
        common::assert_exact(r);
    }
}

proptest! {
    #![proptest_config(common::proptest_config(12))]

    #[test]
    fn random_schedules(seed in any::<u64>(), size in 100_000u64..2_000_000) {
        let s = common::random_schedule(seed, size);
        let r = braid_sim::run(&s, seed).expect("valid");
        if !r.ok {
            common::show(std::slice::from_ref(&r));
        }
        common::assert_exact(&r);
    }
}
