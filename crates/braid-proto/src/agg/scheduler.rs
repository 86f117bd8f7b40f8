//! Where each chunk goes: earliest expected delivery, with ECF's wait-for-the-fast-link rule
//! and opportunistic retransmission.
//!
//! Every link is modelled as `queued / rate + one-way delay`: a chunk handed to link `l` now
//! arrives at `edt(l) = now + (queued(l) + len) / rate(l) + min_rtt(l) / 2`, where
//! `queued(l)` is what is in flight beyond the path's own bandwidth-delay product. MPTCP's
//! minRTT, BLEST and ECF schedulers, and Linux's "linger time" are all this estimate in
//! disguise.
//!
//! A link asking for data gets a new chunk unless links that deliver sooner could carry the
//! whole sendable backlog before this link would deliver the chunk (ECF, Lim et al. 2017):
//! then the chunk waits for them, and the slow link only gets data that would otherwise
//! queue. With a large backlog every link is used, in proportion to its rate; with a short
//! one (interactive traffic, the end of a transfer) only the fastest.

use std::collections::BTreeMap;

use super::Config;
use super::link::{Link, LinkId, LinkState};
use super::send::SendBuffer;
use crate::Time;

/// Active and not closed by the peer: may take new chunks.
pub(crate) fn usable(l: &Link) -> bool {
    l.state == LinkState::Active && !l.close_received
}

/// Under its own window.
pub(crate) fn has_room(l: &Link, now: Time, c: &Config) -> bool {
    l.in_flight_bytes < l.window(now, c)
}

/// The usable link with room, other than those in `on` (where a chunk already is), whose
/// delivery of `len` bytes is expected first.
pub(crate) fn best_with_room(
    links: &BTreeMap<LinkId, Link>,
    on: &[LinkId],
    now: Time,
    len: u64,
    c: &Config,
) -> Option<LinkId> {
    links
        .values()
        .filter(|l| usable(l) && has_room(l, now, c) && !on.contains(&l.id))
        .min_by_key(|l| l.expected_delivery(now, len, c.initial_link_window))
        .map(|l| l.id)
}

/// Whether to put a new chunk of `len` bytes on `id` now, with `backlog` bytes sendable.
pub(crate) fn worth_sending(
    links: &BTreeMap<LinkId, Link>,
    id: LinkId,
    len: u64,
    backlog: u64,
    c: &Config,
) -> bool {
    let init = c.initial_link_window;
    let mine = links[&id].delivery_secs(len, init);
    // Links that would deliver this chunk sooner: when would they have delivered the whole
    // backlog between them? Link `m` delivers `rate_m × (t − start_m)` bytes by `t`, so
    // together they finish at `t = (backlog + Σ rate_m·start_m) / Σ rate_m`.
    //
    // "Sooner" compares like with like (each link's delivery of the same chunk), a strict
    // order: the link that would deliver it first never waits, so links can't all wait for
    // each other. (Times are in seconds from now.)
    let (mut rate_sum, mut weighted) = (0.0f64, 0.0f64);
    for l in links.values().filter(|l| l.id != id && usable(l)) {
        let r = l.rate(init);
        let start = l.delivery_secs(0, init);
        if start + len as f64 / r < mine {
            rate_sum += r;
            weighted += r * start;
        }
    }
    if rate_sum == 0.0 {
        return true;
    }
    let faster_done = (backlog as f64 + weighted) / rate_sum;
    faster_done > mine
}

/// The window is blocked: the oldest unacknowledged chunk that `id` would deliver well
/// before its current copy is expected, if any (each chunk is resent this way once).
pub(crate) fn opportunistic(
    send: &SendBuffer,
    links: &BTreeMap<LinkId, Link>,
    id: LinkId,
    now: Time,
    c: &Config,
) -> Option<u64> {
    let (seq, chunk) = send.head_of_line()?;
    if chunk.opportunistic || chunk.links.contains(&id) || chunk.links.is_empty() {
        return None;
    }
    let l = &links[&id];
    let here = l.expected_delivery(now, chunk.data.len() as u64, c.initial_link_window);
    // Only worth it if it saves more than a round trip on this link.
    (chunk.expected_arrival > here + l.srtt()).then_some(seq)
}
