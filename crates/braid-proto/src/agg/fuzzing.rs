//! A byte-driven interpreter of engine operations, shared by the cargo-fuzz target
//! (`fuzz/fuzz_targets/agg_engine.rs`) and an in-tree property test. Not a stable API.
//!
//! Two connections A and B are joined by links whose bytes queue in memory; every input byte
//! picks the next operation (write, copied or handed over as a buffer, read, finish, deliver
//! some bytes of a link, add, fail or drain a link, block or unblock a link's transport, time
//! a link's handshake, advance time, abort). After every step the invariants hold:
//! nothing panics, B reads exactly a prefix of what A wrote, in order, and both buffers stay
//! within their limits.

use std::collections::VecDeque;
use std::time::Duration;

use super::{Config, Connection, LinkId, Read};
use crate::Time;

struct Link {
    ids: [LinkId; 2],
    /// End `i`'s transport takes no bytes (its driver polls nothing and says so, see
    /// `Connection::link_blocked`).
    blocked: [bool; 2],
    /// Bytes in flight from end `i` to the other end.
    wires: [VecDeque<u8>; 2],
}

fn pattern(i: u64) -> u8 {
    (i.wrapping_mul(0x9E37_79B9_7F4A_7C15) >> 56) as u8
}

/// Runs the operations encoded in `input`, panicking if an invariant breaks.
pub fn run_ops(input: &[u8]) {
    let config = Config {
        chunk_size: 512,
        recv_window: 4096,
        send_buffer: 8192,
        unsent_limit: 3000,
        initial_link_window: 2048,
        ..Config::default()
    };
    let mut now = Time::ZERO;
    let mut ends = [
        Connection::new(config.clone(), now),
        Connection::new(config.clone(), now),
    ];
    let mut links: Vec<Link> = Vec::new();
    let (mut written, mut read) = ([0u64; 2], [0u64; 2]);
    let mut finished_reading = [false; 2];
    let mut bytes = input.iter().copied();
    let mut next = move || bytes.next();
    let mut scratch = vec![0u8; 4096];
    while let Some(op) = next() {
        let arg = next().unwrap_or(0);
        let side = usize::from(op & 1);
        match op >> 1 {
            0 | 1 => {
                let n = usize::from(arg) * 16;
                for (i, b) in scratch[..n].iter_mut().enumerate() {
                    *b = pattern(written[side] + i as u64);
                }
                let r = if op >> 1 == 0 {
                    ends[side].write(&scratch[..n])
                } else {
                    ends[side].write_bytes(bytes::Bytes::copy_from_slice(&scratch[..n]))
                };
                if let Ok(k) = r {
                    written[side] += k as u64;
                }
            }
            2 | 3 => loop {
                match ends[side].read(usize::from(arg) * 8 + 1) {
                    Ok(Read::Data(d)) => {
                        for (i, b) in d.iter().enumerate() {
                            assert_eq!(*b, pattern(read[side] + i as u64), "out of order");
                        }
                        read[side] += d.len() as u64;
                        assert!(read[side] <= written[1 - side], "read more than written");
                    }
                    Ok(Read::Finished) => {
                        finished_reading[side] = true;
                        assert_eq!(read[side], written[1 - side], "finished early");
                        break;
                    }
                    Ok(Read::Blocked) | Err(_) => break,
                }
            },
            4 => {
                let _ = ends[side].finish();
            }
            5 if links.len() < 8 => {
                // A link of its own, or on one of two shared paths (their windows coupled).
                let add = |end: &mut Connection| match arg % 3 {
                    0 => end.add_link(now),
                    p => end.add_link_on_path(now, super::PathId(u64::from(p))),
                };
                let ids = [add(&mut ends[0]), add(&mut ends[1])];
                links.push(Link {
                    ids,
                    blocked: [false; 2],
                    wires: [VecDeque::new(), VecDeque::new()],
                });
            }
            6..=9 if !links.is_empty() => {
                // Deliver up to `arg * 8` bytes of one direction of one link.
                let i = usize::from(arg) % links.len();
                let l = &mut links[i];
                let n = (usize::from(arg) * 8 + 1).min(l.wires[side].len());
                let chunk: Vec<u8> = l.wires[side].drain(..n).collect();
                ends[1 - side].handle_input(l.ids[1 - side], &chunk, now);
            }
            10 if !links.is_empty() => {
                // Corrupt a byte in flight (only legal with checksums; the engine must
                // never deliver wrong data silently otherwise either, but plaintext TCP
                // guarantees it, so corrupt only the framing-neutral case: drop the link).
                let i = usize::from(arg) % links.len();
                let l = links.remove(i);
                ends[0].link_failed(l.ids[0], now);
                ends[1].link_failed(l.ids[1], now);
            }
            11 if !links.is_empty() => {
                let i = usize::from(arg) % links.len();
                ends[side].remove_link(links[i].ids[side], now);
            }
            12 => {
                now += Duration::from_millis(u64::from(arg) * 4);
                for e in &mut ends {
                    if e.poll_timeout().is_some_and(|t| t <= now) {
                        e.handle_timeout(now);
                    }
                }
            }
            13 if arg == 0xAB => ends[side].abort(7, now),
            14 if !links.is_empty() => {
                // A link's socket fills up, or takes bytes again.
                let i = usize::from(arg) % links.len();
                let l = &mut links[i];
                l.blocked[side] = !l.blocked[side];
                ends[side].link_blocked(l.ids[side], l.blocked[side]);
            }
            15 if !links.is_empty() => {
                // The driver timed the handshake that joined a link.
                let i = usize::from(arg) % links.len();
                let rtt = Duration::from_micros(u64::from(arg) * 250);
                ends[side].handshake_rtt(links[i].ids[side], rtt, now);
            }
            _ => {}
        }
        // Drain transmissions and events after every step, as a driver does.
        for l in &mut links {
            for (i, end) in ends.iter_mut().enumerate() {
                if l.blocked[i] {
                    continue;
                }
                let mut out = Vec::new();
                let can_send_data = end.can_send_data(l.ids[i], now);
                let may_transmit = end.may_transmit(l.ids[i], now);
                while end.poll_transmit(l.ids[i], now, 4096, &mut out) > 0 && out.len() < 1 << 16 {}
                assert!(
                    may_transmit || out.is_empty(),
                    "may_transmit said no, poll_transmit sent frames"
                );
                assert!(
                    can_send_data || !carries_data(&out),
                    "can_send_data said no, poll_transmit sent data"
                );
                l.wires[i].extend(out);
            }
        }
        for end in &mut ends {
            while end.poll_event().is_some() {}
            end.check_invariants();
            let s = end.stats();
            assert!(
                s.recv_buffered <= config.recv_window,
                "receive buffer over window"
            );
            assert!(
                s.send_buffered <= config.send_buffer,
                "send buffer over limit"
            );
        }
    }
    let _ = finished_reading;
}

/// Whether `wire` (whole frames) holds a `Data` frame.
pub(crate) fn carries_data(wire: &[u8]) -> bool {
    let mut buf = bytes::BytesMut::from(wire);
    while let Ok(Some(f)) = super::frame::Frame::decode(&mut buf) {
        if matches!(
            f,
            super::frame::DecodeOutcome::Frame(super::frame::Frame::Data { .. })
        ) {
            return true;
        }
    }
    false
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(512))]
        #[test]
        fn random_operations_keep_invariants(input in proptest::collection::vec(any::<u8>(), 0..600)) {
            super::run_ops(&input);
        }
    }
}
