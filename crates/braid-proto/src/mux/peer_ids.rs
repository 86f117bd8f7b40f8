//! The stream ids the peer has used: yamux never reuses one, so a SYN for an id the peer
//! already opened (and we may have forgotten since) is a protocol violation, not a new stream.
//!
//! Openers allocate ids in increasing order, but their SYNs may arrive out of order: a
//! rust-yamux stream sends its SYN with its first frame, whenever the application writes;
//! hashicorp's `OpenStream` takes an id and sends the SYN in two steps, so concurrent opens
//! race; braid's own `write_direct` puts a new stream's SYN on the wire ahead of older
//! streams' queued SYNs. So a fresh id may be below the highest one seen, and this set is
//! exact for the last [`ID_WINDOW`] ids below it, like IPsec's anti-replay window: one bit
//! per id, a fixed 8 KiB whatever the peer does.
//!
//! ```text
//!   ids of the peer's parity, by index (id / 2):
//!   ... too old | <------------- ID_WINDOW bits -------------> | unused
//!               lowest tracked                          highest used
//! ```

use super::frame::StreamId;

/// How many ids of the peer's parity below the highest one it used are tracked exactly. An
/// older id cannot be told from a reused one: its SYN is refused (RST), not taken as a new
/// stream. A conforming peer would need as many streams opened and still silent to get there.
pub(crate) const ID_WINDOW: u32 = 65_536;

const WORDS: usize = ID_WINDOW as usize / 64;

/// What a SYN's id is, as far as [`PeerIds::record`] can tell.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum IdUse {
    /// Never used before (now recorded as used).
    Fresh,
    /// Used before: the peer reuses it.
    Reused,
    /// Older than the tracked window: fresh or reused, no one can tell.
    TooOld,
}

/// The set of stream ids the peer has opened (sent a SYN for), over a sliding window.
#[derive(Debug)]
pub(crate) struct PeerIds {
    /// Index (`id / 2`) of the highest id used; 0 before any (with every bit clear, so id 1,
    /// whose index is 0, is still fresh).
    highest: u32,
    /// Bit `index % ID_WINDOW` is set when that id was used, for indices in
    /// `(highest - ID_WINDOW, highest]`.
    used: Box<[u64; WORDS]>,
}

impl Default for PeerIds {
    fn default() -> Self {
        PeerIds {
            highest: 0,
            used: Box::new([0; WORDS]),
        }
    }
}

impl PeerIds {
    /// Records a SYN for `id` (of the peer's parity, not 0) and says whether it was fresh.
    pub(crate) fn record(&mut self, id: StreamId) -> IdUse {
        let index = id / 2;
        if index > self.highest {
            // The ids between become trackable as unused (bits dropped from the window).
            self.clear(self.highest + 1, index - self.highest);
            self.highest = index;
        } else if self.highest - index >= ID_WINDOW {
            return IdUse::TooOld;
        } else if self.bit(index) {
            return IdUse::Reused;
        }
        let i = (index % ID_WINDOW) as usize;
        self.used[i / 64] |= 1 << (i % 64);
        IdUse::Fresh
    }

    /// Whether a SYN for `id` would not be taken as fresh (used, or older than the window).
    pub(crate) fn is_taken(&self, id: StreamId) -> bool {
        let index = id / 2;
        index <= self.highest && (self.highest - index >= ID_WINDOW || self.bit(index))
    }

    fn bit(&self, index: u32) -> bool {
        let i = (index % ID_WINDOW) as usize;
        self.used[i / 64] & (1 << (i % 64)) != 0
    }

    /// Clears `count` bits from index `from` on, a word at a time.
    fn clear(&mut self, from: u32, count: u32) {
        if count >= ID_WINDOW {
            self.used.fill(0);
            return;
        }
        let mut i = (from % ID_WINDOW) as usize;
        let mut left = count as usize;
        while left > 0 {
            let bit = i % 64;
            let k = (64 - bit).min(left);
            let mask = if k == 64 {
                u64::MAX
            } else {
                ((1u64 << k) - 1) << bit
            };
            self.used[i / 64] &= !mask;
            left -= k;
            i = (i + k) % ID_WINDOW as usize;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fresh_ids_in_any_order_then_reused() {
        let mut ids = PeerIds::default();
        assert_eq!(ids.record(5), IdUse::Fresh);
        assert_eq!(ids.record(1), IdUse::Fresh);
        assert_eq!(ids.record(3), IdUse::Fresh);
        for id in [1, 3, 5] {
            assert!(ids.is_taken(id));
            assert_eq!(ids.record(id), IdUse::Reused);
        }
        assert!(!ids.is_taken(7));
    }

    #[test]
    fn the_window_slides_with_the_highest_id() {
        let mut ids = PeerIds::default();
        assert_eq!(ids.record(2), IdUse::Fresh);
        assert_eq!(ids.record(4), IdUse::Fresh);
        // A jump of less than the window keeps what is below and frees what it passes.
        let top = 2 * (ID_WINDOW + 1);
        assert_eq!(ids.record(top), IdUse::Fresh);
        assert_eq!(ids.record(2), IdUse::TooOld, "index 1 left the window");
        assert_eq!(
            ids.record(4),
            IdUse::Reused,
            "index 2 is the oldest tracked"
        );
        assert_eq!(ids.record(6), IdUse::Fresh);
        assert_eq!(ids.record(top - 2), IdUse::Fresh);
        // A jump beyond the window forgets everything below it.
        let far = top + 2 * 3 * ID_WINDOW + 2 * 70;
        assert_eq!(ids.record(far), IdUse::Fresh);
        assert_eq!(ids.record(top), IdUse::TooOld);
        assert_eq!(ids.record(far - 2), IdUse::Fresh);
        assert_eq!(ids.record(far - 2 * (ID_WINDOW - 1)), IdUse::Fresh);
        assert_eq!(ids.record(far - 2 * ID_WINDOW), IdUse::TooOld);
    }

    #[test]
    fn partial_words_are_cleared_exactly() {
        // Reuse of every index around a word boundary, after the window wrapped over it.
        let mut ids = PeerIds::default();
        for index in 1..200 {
            assert_eq!(ids.record(2 * index), IdUse::Fresh);
        }
        let base = ID_WINDOW + 100; // indices 101..=ID_WINDOW+100 tracked
        assert_eq!(ids.record(2 * base), IdUse::Fresh);
        for index in 101..200 {
            assert_eq!(ids.record(2 * index), IdUse::Reused, "index {index}");
        }
        for index in [1, 64, 100] {
            assert_eq!(ids.record(2 * index), IdUse::TooOld, "index {index}");
        }
        for index in 200..260 {
            assert_eq!(ids.record(2 * index), IdUse::Fresh, "index {index}");
        }
        for index in ID_WINDOW + 1..ID_WINDOW + 100 {
            assert_eq!(ids.record(2 * index), IdUse::Fresh, "index {index}");
        }
    }
}
