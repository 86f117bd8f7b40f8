//! Issue 2, test 2: bandwidth. Goodput against what the links can carry after framing,
//! measured from the second second on.

mod common;

use std::time::Duration;

/// The run is exact and its goodput at least 97% of what the links carry after framing.
fn assert_97_percent(r: &braid_sim::Report) {
    common::assert_exact(r);
    let d = &r.directions[0];
    assert!(
        d.goodput_ratio >= 0.97,
        "seed {}: goodput {:.2} Mbit/s is {:.1}% of {:.2} Mbit/s",
        r.seed,
        d.goodput_mbit,
        d.goodput_ratio * 100.0,
        d.capacity_mbit
    );
}

#[test]
fn three_links_reach_97_percent() {
    let s = common::scenario("three-links.toml", 1);
    let jittery = common::with_jitter(s.clone(), Duration::from_millis(2), &[1, 2, 3]);
    for r in common::run(&s).into_iter().chain(common::run(&jittery)) {
        assert_97_percent(&r);
    }
}

#[test]
fn eight_mixed_links_reach_97_percent() {
    let s = common::scenario("eight-mixed.toml", 1);
    for r in common::run(&s) {
        assert_97_percent(&r);
    }
}

#[test]
fn slow_link_never_pulls_below_the_fast_one_alone() {
    let s = common::scenario("fast-slow.toml", 1);
    for r in common::run(&s) {
        common::assert_exact(&r);
        let d = &r.directions[0];
        // What the 50 Mbit/s link carries alone after framing.
        let fast_alone = 50.0 * d.framing_efficiency;
        assert!(
            d.goodput_mbit >= fast_alone,
            "seed {}: goodput {:.2} Mbit/s below the fast link alone ({fast_alone:.2})",
            r.seed,
            d.goodput_mbit
        );
        // Never: no 1 s window below what the fast link alone would give at the issue's
        // 97% standard.
        let min = d.min_1s_goodput_mbit.expect("transfer longer than 1 s");
        assert!(
            min >= 0.97 * fast_alone,
            "seed {}: a 1 s window fell to {min:.2} Mbit/s (fast link alone: {fast_alone:.2})",
            r.seed
        );
    }
}

/// A small unsent limit (the application held to 64 KiB ahead of each link) still uses every
/// link: the engine keeps two round trips of all links' delivery unsent, the backlog ECF
/// needs to see before it hands slow links data (without that floor: 74% of the capacity).
#[test]
fn eight_mixed_links_reach_97_percent_under_a_small_unsent_limit() {
    let mut s = common::scenario("eight-mixed.toml", 1);
    s.engine.unsent_limit = Some(braid_sim::units::ByteSize(64 * 1024));
    for r in common::run(&s) {
        assert_97_percent(&r);
    }
}

/// Bulk both ways at once, one link 16 times slower back than forth: acknowledgements wait
/// behind the peer's data, so a round trip under load is several times the idle one. Links
/// that sized their windows from the idle round trip (their handshake's) carried 13% less
/// one of the ways (52 against 60 Mbit/s); they keep their own samples unless they share a
/// path (see `Connection::handshake_rtt`).
#[test]
fn both_ways_over_an_asymmetric_link_keep_their_pace() {
    let s = common::scenario("both-ways-asymmetric.toml", 1);
    for r in common::run(&s) {
        common::assert_exact(&r);
        let ratios: Vec<f64> = r.directions.iter().map(|d| d.goodput_ratio).collect();
        assert_eq!(ratios.len(), 2, "both ways");
        // a→b's acknowledgements come back over the 1 Mbit/s side: 83% before and after.
        assert!(ratios[0] >= 0.80, "seed {}: {ratios:?}", r.seed);
        assert!(ratios[1] >= 0.97, "seed {}: {ratios:?}", r.seed);
    }
}

/// Regression (found in review): a link whose answers to us wait behind the peer's deep
/// queue (uploading over a 1 Mbit/s side with a 256 KiB socket buffer) still brings the
/// peer's data, so it is alive. When the liveness timeout ran from the last *answer* instead
/// of the last byte heard, the only link was declared dead at 1.1 s and the transfer stuck.
#[test]
fn a_link_that_brings_data_is_not_declared_dead() {
    let s = common::scenario("upload-over-adsl.toml", 1);
    for r in common::run(&s) {
        assert_eq!(
            r.false_deaths, 0,
            "seed {}: a live link was declared dead",
            r.seed
        );
        common::assert_exact(&r);
    }
}
