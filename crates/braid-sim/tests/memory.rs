//! Issue 2, test 4: receive buffering never exceeds the window, sender buffering never
//! exceeds its limit, also when the fastest link dies; a reader that stops reading stops the
//! sender.

mod common;

#[test]
fn buffers_stay_within_limits_and_a_stopped_reader_stops_the_sender() {
    let s = common::scenario("memory.toml", 1);
    for r in common::run(&s) {
        // Includes recv peak <= window and send peak <= limit over the whole run, which
        // covers the death of the fastest link at 2 s.
        common::assert_exact(&r);
        let d = &r.directions[0];
        assert_eq!(d.recv_window, 2 << 20);
        assert_eq!(d.send_buffer, 4 << 20);
        assert_eq!(d.pauses.len(), 1, "the reader paused once");
        let p = &d.pauses[0];
        assert!(
            p.outstanding_max <= d.recv_window + d.send_buffer,
            "seed {}: the sender took {} bytes beyond what the reader read (window {} + send \
             buffer {})",
            r.seed,
            p.outstanding_max,
            d.recv_window,
            d.send_buffer
        );
        assert!(
            p.wire_bytes_second_half <= 64 * 1024,
            "seed {}: {} bytes still crossed the links in the second half of the pause",
            r.seed,
            p.wire_bytes_second_half
        );
    }
}

#[test]
fn slow_reader_throttles_the_sender() {
    let mut s = common::scenario("three-links.toml", 1);
    s.name = Some("slow-reader".into());
    s.seed = vec![1];
    s.transfer.size = braid_sim::units::ByteSize(if cfg!(debug_assertions) {
        3_000_000
    } else {
        10_000_000
    });
    s.transfer.read_rate = Some(braid_sim::units::BitRate::mbit(8.0));
    s.engine = braid_sim::scenario::EngineSpec {
        recv_window: Some(braid_sim::units::ByteSize(1 << 20)),
        send_buffer: Some(braid_sim::units::ByteSize(1 << 20)),
        ..Default::default()
    };
    for r in common::run(&s) {
        common::assert_exact(&r);
        let d = &r.directions[0];
        // The reader's 8 Mbit/s, not the links' 70, sets the pace: the transfer takes as
        // long as reading it does.
        let t = d.completion_secs.expect("completed");
        let rate = d.size as f64 * 8.0 / t / 1e6;
        assert!(
            (7.5..=8.5).contains(&rate),
            "seed {}: {rate:.2} Mbit/s",
            r.seed
        );
        // And the sender held no more than its limit while it waited.
        assert!(d.send_buffered_peak <= d.send_buffer);
    }
}
