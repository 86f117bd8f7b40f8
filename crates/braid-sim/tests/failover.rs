//! Issue 2, test 3: the 40 Mbit/s link dies silently mid-transfer. Nothing is lost, in-order
//! delivery resumes within 300 ms of the death, and goodput reaches 90% of the remaining
//! links' capacity within 1 s.

mod common;

use std::time::Duration;

use braid_sim::Report;
use proptest::prelude::*;

fn assert_recovers(r: &Report) {
    common::assert_exact(r);
    let d = &r.directions[0];
    assert_eq!(d.deaths.len(), 1);
    let death = &d.deaths[0];
    let resumed = death.resumed_ms.expect("delivery after the death");
    assert!(
        resumed <= 300.0,
        "{} seed {}: in-order delivery resumed {resumed:.0} ms after the death (stall {:.0} ms)",
        r.scenario,
        r.seed,
        death.stall_ms.unwrap_or(0.0)
    );
    let recovered = death.recovered_90_ms;
    assert!(
        recovered.is_some_and(|ms| ms <= 1000.0),
        "{} seed {}: goodput reached 90% of the remaining capacity after {recovered:?} ms",
        r.scenario,
        r.seed
    );
}

#[test]
fn silent_death_of_the_fastest_link() {
    let s = common::scenario("failover.toml", 1);
    let jittery = common::with_jitter(s.clone(), Duration::from_millis(2), &[1, 2, 3]);
    for r in common::run(&s).into_iter().chain(common::run(&jittery)) {
        assert_recovers(&r);
    }
}

proptest! {
    #![proptest_config(common::proptest_config(6))]

    /// Any seed, any jitter up to 4 ms, the death anywhere from 1.5 s to 5 s.
    #[test]
    fn silent_death_at_random_times(seed in any::<u64>(), jitter_us in 0u64..4000, death_ms in 1500u64..5000) {
        let mut s = common::with_jitter(common::scenario("failover.toml", 1), Duration::from_micros(jitter_us), &[seed]);
        s.event[0].at = braid_sim::units::Span(Duration::from_millis(death_ms));
        let r = braid_sim::run(&s, seed).expect("valid");
        common::show(std::slice::from_ref(&r));
        assert_recovers(&r);
    }
}

#[test]
fn loud_death_of_the_fastest_link() {
    let mut s = common::scenario("failover.toml", 1);
    s.name = Some("failover-loud".into());
    s.event[0].kind = braid_sim::scenario::EventKind::LoudDeath;
    for r in common::run(&s) {
        common::assert_exact(&r);
        let death = &r.directions[0].deaths[0];
        let resumed = death.resumed_ms.expect("delivery after the death");
        assert!(
            resumed <= 300.0,
            "seed {}: resumed after {resumed:.0} ms",
            r.seed
        );
    }
}
