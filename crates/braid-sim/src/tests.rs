//! The simulator tested on its own, with the fake engine of `fake.rs`.

use crate::fake::Fake;
use crate::report::Report;
use crate::scenario::Scenario;

fn run_fake(toml: &str, seed: u64) -> Report {
    let s = Scenario::from_toml(toml).expect("scenario");
    crate::run_with(&s, seed, |_, c, _| Fake::new(c)).expect("run")
}

const ONE_LINK: &str = r#"
    measure_from = "0s"
    [transfer]
    size = "1MB"
    [[link]]
    rate = "8Mbit"
    delay = "10ms"
"#;

#[test]
fn one_link_runs_at_its_rate() {
    let r = run_fake(ONE_LINK, 1);
    eprint!("{}", crate::table(std::slice::from_ref(&r)));
    assert!(r.ok, "{:?}", r.violations);
    let d = &r.directions[0];
    // 1 MB plus 13-byte headers per 16 KiB at 1 byte/us, plus 10 ms, plus one segment.
    let t = d.completion_secs.unwrap();
    let wire = 1e6 * (1.0 + 13.0 / 16384.0) / 1e6;
    assert!(t > wire + 0.010 && t < wire + 0.010 + 0.020, "{t}");
    assert!(
        d.goodput_ratio > 0.97 && d.goodput_ratio <= 1.0,
        "{}",
        d.goodput_ratio
    );
    assert_eq!(r.links[0].share[0], 1.0);
}

#[test]
fn three_links_add_up() {
    let r = run_fake(
        r#"
        [transfer]
        size = "60MB"
        [[link]]
        rate = "40Mbit"
        delay = "5ms"
        [[link]]
        rate = "20Mbit"
        delay = "15ms"
        [[link]]
        rate = "10Mbit"
        delay = "40ms"
        "#,
        1,
    );
    eprint!("{}", crate::table(std::slice::from_ref(&r)));
    assert!(r.ok, "{:?}", r.violations);
    let d = &r.directions[0];
    // Every link stays busy until the data runs out; only the tail (the last bytes on the
    // slow 40 ms link) is lost.
    assert!(
        d.goodput_ratio > 0.98 && d.goodput_ratio < 1.0,
        "{}",
        d.goodput_ratio
    );
    assert!((d.capacity_mbit - 70.0 * d.framing_efficiency).abs() < 1e-6);
    let share = r.links[0].share[0];
    assert!((share - 4.0 / 7.0).abs() < 0.02, "{share}");
}

#[test]
fn both_directions_with_jitter_are_exact_and_deterministic() {
    let toml = r#"
        seed = [3]
        [transfer]
        size = "3MB"
        direction = "both"
        [[link]]
        rate = "20Mbit"
        rate_back = "10Mbit"
        delay = "5ms"
        jitter = "3ms"
        count = 3
    "#;
    let a = run_fake(toml, 3);
    let b = run_fake(toml, 3);
    assert!(a.ok, "{:?}", a.violations);
    assert_eq!(a.directions.len(), 2);
    let key = |r: &Report| {
        let mut v = serde_json::to_value(r).unwrap();
        v["sim"]["wall_secs"] = 0.into();
        v
    };
    assert_eq!(key(&a), key(&b));
    let c = run_fake(toml, 4);
    assert_ne!(key(&a)["directions"], key(&c)["directions"]);
}

#[test]
fn rate_change_slows_the_link() {
    let r = run_fake(
        &format!(
            "{ONE_LINK}
            [[event]]
            at = \"500ms\"
            kind = \"rate\"
            link = 0
            rate = \"4Mbit\"
            "
        ),
        1,
    );
    assert!(r.ok, "{:?}", r.violations);
    let t = r.directions[0].completion_secs.unwrap();
    // 0.5 MB in the first 0.5 s, the rest at 0.5 byte/us.
    assert!(t > 1.5 && t < 1.56, "{t}");
    assert!(
        r.directions[0].goodput_ratio > 0.97,
        "{}",
        r.directions[0].goodput_ratio
    );
}

#[test]
fn lost_data_is_reported_not_hidden() {
    // The fake never resends, so a silent death loses data: the run must say so.
    let r = run_fake(
        &format!(
            "{ONE_LINK}
            max_time = \"5s\"
            [[link]]
            rate = \"8Mbit\"
            delay = \"10ms\"
            [[event]]
            at = \"300ms\"
            kind = \"silent-death\"
            link = 1
            "
        )
        .replacen(
            "measure_from = \"0s\"",
            "measure_from = \"0s\"\nmax_time = \"5s\"",
            1,
        )
        .replacen("\n            max_time = \"5s\"\n", "\n", 1),
        1,
    );
    assert!(!r.ok);
    assert!(!r.violations.is_empty());
}

#[test]
fn corruption_is_caught() {
    let s = Scenario::from_toml(ONE_LINK).unwrap();
    let r = crate::run_with(&s, 1, |side, c, _| {
        let mut f = Fake::new(c);
        if side == crate::Side::A {
            f.corrupt_at = Some(123_457);
        }
        f
    })
    .unwrap();
    assert!(!r.ok);
    assert!(
        r.violations[0].contains("wrong byte at offset 123457"),
        "{:?}",
        r.violations
    );
}

#[test]
fn reader_limits_and_pauses() {
    let r = run_fake(
        &format!(
            "{}
            [[event]]
            at = \"1s\"
            kind = \"stop-reading\"
            [[event]]
            at = \"1.5s\"
            kind = \"resume-reading\"
            ",
            ONE_LINK.replace("size = \"1MB\"", "size = \"1MB\"\nread_rate = \"4Mbit\"")
        ),
        1,
    );
    assert!(r.ok, "{:?}", r.violations);
    let d = &r.directions[0];
    // 1 MB at 4 Mbit/s is 2 s, plus the 0.5 s pause.
    let t = d.completion_secs.unwrap();
    assert!(t > 2.45 && t < 2.6, "{t}");
    assert!(d.longest_stall_ms >= 500.0, "{}", d.longest_stall_ms);
    assert_eq!(d.pauses.len(), 1);
}

#[test]
fn loud_death_and_return_are_scripted() {
    // Loud death with the fake loses what was in flight: the run reports it; the link
    // report shows the death and the returned incarnation.
    let r = run_fake(
        &format!(
            "{ONE_LINK}
            max_time = \"10s\"
            [[event]]
            at = \"200ms\"
            kind = \"loud-death\"
            link = 0
            [[event]]
            at = \"400ms\"
            kind = \"return\"
            link = 0
            rate = \"16Mbit\"
            "
        )
        .replacen(
            "measure_from = \"0s\"",
            "measure_from = \"0s\"\nmax_time = \"10s\"",
            1,
        )
        .replacen("\n            max_time = \"10s\"\n", "\n", 1),
        1,
    );
    assert_eq!(r.links.len(), 2);
    assert!(
        r.links[0]
            .ended
            .as_deref()
            .unwrap_or("")
            .contains("loud death")
    );
    assert_eq!(r.links[1].rate_mbit, [16.0, 16.0]);
    assert!(r.links[1].wire_bytes[0] > 0);
}
