//! The receiver: reassembles chunks in order, drops duplicates, enforces the window.

use std::collections::{BTreeMap, VecDeque};

use bytes::{Bytes, BytesMut};

/// Why the peer's data is unacceptable (the link it came on is dropped).
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum RecvViolation {
    /// Bytes beyond the advertised window.
    BeyondWindow,
    /// Two different ends of stream, or data past the end.
    BadFin,
    /// More out-of-order chunks than [`MAX_PENDING_CHUNKS`] waiting at once.
    TooFragmented,
}

impl std::fmt::Display for RecvViolation {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            RecvViolation::BeyondWindow => "data beyond the receive window",
            RecvViolation::BadFin => "inconsistent end of stream",
            RecvViolation::TooFragmented => "too many out-of-order chunks waiting",
        })
    }
}

/// Most out-of-order chunks held at once. The window bounds their bytes, not their number:
/// a peer sending 1-byte chunks around gaps would otherwise cost a map entry (about 100
/// bytes) per byte of window. Bulk transfers hold about window / chunk size (1,024 with the
/// defaults); small chunks come from small writes sent at once, of which few are in flight.
pub(crate) const MAX_PENDING_CHUNKS: usize = 65_536;

/// Chunks smaller than this are copied when stored (see [`ReorderBuffer::insert`]).
const UNPIN_BELOW: usize = 4096;

/// In-order delivery over out-of-order arrival. Holds at most `window` bytes: in-order but
/// unread (`ready`) plus out-of-order (`pending`).
#[derive(Debug)]
pub(crate) struct ReorderBuffer {
    window: u64,
    /// Next offset expected in order; everything below arrived.
    next: u64,
    /// Offset of the first byte the application has not read.
    read: u64,
    ready: VecDeque<Bytes>,
    /// Small in-order chunks gathered into one buffer, after everything in `ready`: a peer
    /// sending tiny chunks the application does not read yet costs bytes, not an entry each.
    small: BytesMut,
    pending: BTreeMap<u64, Bytes>,
    buffered: u64,
    pub peak: u64,
    fin_at: Option<u64>,
    pub duplicate_bytes: u64,
}

/// What [`ReorderBuffer::insert`] did.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum Inserted {
    /// New in-order data (or the end of stream) became readable.
    Readable,
    /// Stored out of order, or a duplicate: nothing new to read.
    Nothing,
}

impl ReorderBuffer {
    pub fn new(window: u64) -> Self {
        ReorderBuffer {
            window,
            next: 0,
            read: 0,
            ready: VecDeque::new(),
            small: BytesMut::new(),
            pending: BTreeMap::new(),
            buffered: 0,
            peak: 0,
            fin_at: None,
            duplicate_bytes: 0,
        }
    }

    /// Everything below this was received (plus one once the end of stream is in order,
    /// like TCP's FIN): the cumulative acknowledgement.
    pub fn cumulative(&self) -> u64 {
        self.next + u64::from(self.fin_received())
    }

    /// The peer may send below this.
    pub fn window_end(&self) -> u64 {
        self.read + self.window
    }

    pub fn buffered(&self) -> u64 {
        self.buffered
    }

    /// All data up to the end of stream arrived in order.
    pub fn fin_received(&self) -> bool {
        self.fin_at == Some(self.next)
    }

    pub fn has_readable(&self) -> bool {
        !self.ready.is_empty() || !self.small.is_empty() || self.fin_received()
    }

    pub fn insert(&mut self, seq: u64, data: Bytes, fin: bool) -> Result<Inserted, RecvViolation> {
        let end = seq + data.len() as u64;
        let was_readable = self.has_readable();
        // The end of stream counts only once the chunk carrying it is accepted (one beyond
        // the window must not leave it set for the chunks that follow).
        let fin_at = match (fin, self.fin_at) {
            (true, Some(f)) if f != end => return Err(RecvViolation::BadFin),
            (true, _) if end < self.next => return Err(RecvViolation::BadFin),
            (true, _) => Some(end),
            (false, f) => f,
        };
        if fin_at.is_some_and(|f| end > f) {
            return Err(RecvViolation::BadFin);
        }
        if end <= self.next || self.pending.contains_key(&seq) {
            self.duplicate_bytes += data.len() as u64;
        } else {
            if end > self.window_end() || self.buffered + data.len() as u64 > self.window {
                return Err(RecvViolation::BeyondWindow);
            }
            if seq > self.next && self.pending.len() >= MAX_PENDING_CHUNKS {
                return Err(RecvViolation::TooFragmented);
            }
            self.buffered += data.len() as u64;
            self.peak = self.peak.max(self.buffered);
            // A small chunk handed over without copying would keep its whole receive block
            // (up to 256 KiB) alive while it waits: a peer sending tiny chunks could pin far
            // more memory than the window. Small ones are copied out.
            let data = if data.len() < UNPIN_BELOW {
                Bytes::copy_from_slice(&data)
            } else {
                data
            };
            self.pending.insert(seq, data);
        }
        self.fin_at = fin_at;
        self.advance();
        Ok(if !was_readable && self.has_readable() {
            Inserted::Readable
        } else {
            Inserted::Nothing
        })
    }

    /// Moves what became contiguous from `pending` to `ready`.
    fn advance(&mut self) {
        while let Some(entry) = self.pending.first_entry() {
            let seq = *entry.key();
            if seq > self.next {
                break;
            }
            let mut data = entry.remove();
            let end = seq + data.len() as u64;
            if end <= self.next {
                // Entirely covered by what came before (only from a misbehaving peer).
                self.buffered -= data.len() as u64;
                self.duplicate_bytes += data.len() as u64;
                continue;
            }
            let skip = (self.next - seq) as usize;
            if skip > 0 {
                self.buffered -= skip as u64;
                self.duplicate_bytes += skip as u64;
                data = data.slice(skip..);
            }
            self.next = end;
            if data.len() < UNPIN_BELOW {
                self.small.extend_from_slice(&data);
            } else {
                if !self.small.is_empty() {
                    self.ready.push_back(self.small.split().freeze());
                }
                self.ready.push_back(data);
            }
        }
    }

    /// Up to `max` bytes in order, or `None` when nothing is readable now.
    pub fn read(&mut self, max: usize) -> Option<Bytes> {
        let data = match self.ready.front_mut() {
            Some(front) if front.len() <= max => self.ready.pop_front().expect("front exists"),
            Some(front) => front.split_to(max),
            None if !self.small.is_empty() => {
                let n = max.min(self.small.len());
                self.small.split_to(n).freeze()
            }
            None => return None,
        };
        self.read += data.len() as u64;
        self.buffered -= data.len() as u64;
        Some(data)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn b(n: usize, v: u8) -> Bytes {
        Bytes::from(vec![v; n])
    }

    #[test]
    fn reorders_and_drops_duplicates() {
        let mut r = ReorderBuffer::new(100);
        assert_eq!(r.insert(10, b(10, 2), false), Ok(Inserted::Nothing));
        assert_eq!(r.insert(10, b(10, 2), false), Ok(Inserted::Nothing));
        assert_eq!(r.duplicate_bytes, 10);
        assert_eq!(r.insert(0, b(10, 1), false), Ok(Inserted::Readable));
        assert_eq!(r.cumulative(), 20);
        // Small chunks are read as one stream of bytes.
        let mut first = b(10, 1).to_vec();
        first.extend_from_slice(&[2; 5]);
        assert_eq!(r.read(15).unwrap(), first);
        assert_eq!(r.read(15).unwrap(), b(5, 2));
        assert_eq!(r.read(15), None);
        assert_eq!(r.insert(0, b(10, 1), false), Ok(Inserted::Nothing));
    }

    #[test]
    fn small_chunks_do_not_keep_their_receive_block() {
        let block = Bytes::from(vec![7u8; 256 * 1024]);
        let mut r = ReorderBuffer::new(1 << 20);
        r.insert(10, block.slice(0..10), false).unwrap();
        r.insert(0, block.slice(100..110), false).unwrap();
        r.insert(20, block.slice(4096..8192 + 4096), false).unwrap();
        // Only the large chunk still refers to the block.
        let big = r
            .pending
            .values()
            .chain(r.ready.iter())
            .filter(|d| d.len() >= 4096)
            .count();
        assert_eq!(big, 1);
        let block_ptr = block.as_ptr() as usize;
        for d in r.ready.iter().filter(|d| d.len() < 4096) {
            let p = d.as_ptr() as usize;
            assert!(
                p < block_ptr || p >= block_ptr + block.len(),
                "small chunk still in the block"
            );
        }
        // The two small in-order chunks were gathered (no entry each), in order.
        assert_eq!(r.read(100).unwrap().len(), 20);
        assert_eq!(r.read(1 << 20).unwrap().len(), 8192);
    }

    #[test]
    fn a_flood_of_tiny_out_of_order_chunks_is_refused() {
        let mut r = ReorderBuffer::new(1 << 20);
        // 1-byte chunks at every other offset: each one a gap, each one a map entry.
        for i in 0..MAX_PENDING_CHUNKS as u64 {
            r.insert(2 + 2 * i, b(1, 1), false).unwrap();
        }
        assert_eq!(
            r.insert(2 + 2 * MAX_PENDING_CHUNKS as u64, b(1, 1), false),
            Err(RecvViolation::TooFragmented)
        );
        // In-order data is still taken (it drains the pending chunks).
        assert!(r.insert(0, b(2, 0), false).is_ok());
    }

    #[test]
    fn tiny_in_order_chunks_cost_no_entry_each() {
        let mut r = ReorderBuffer::new(1 << 20);
        for i in 0..10_000u64 {
            r.insert(i, b(1, (i % 7) as u8), false).unwrap();
        }
        assert!(r.ready.is_empty(), "{} entries", r.ready.len());
        r.insert(10_000, b(5000, 9), false).unwrap();
        r.insert(15_000, b(3, 8), false).unwrap();
        let mut got = Vec::new();
        while let Some(d) = r.read(4096) {
            got.extend_from_slice(&d);
        }
        assert_eq!(got.len(), 15_003);
        assert!(
            got[..10_000]
                .iter()
                .enumerate()
                .all(|(i, &v)| v == (i % 7) as u8)
        );
        assert!(got[10_000..15_000].iter().all(|&v| v == 9));
        assert_eq!(&got[15_000..], &[8, 8, 8]);
        assert_eq!(r.buffered(), 0);
    }

    #[test]
    fn window_is_enforced() {
        let mut r = ReorderBuffer::new(20);
        assert_eq!(
            r.insert(10, b(11, 0), false),
            Err(RecvViolation::BeyondWindow)
        );
        r.insert(0, b(20, 0), false).unwrap();
        assert_eq!(
            r.insert(20, b(1, 0), false),
            Err(RecvViolation::BeyondWindow)
        );
        r.read(5).unwrap();
        assert!(r.insert(20, b(5, 0), false).is_ok());
        assert!(r.buffered() <= 20);
    }

    #[test]
    fn an_end_of_stream_beyond_the_window_is_not_recorded() {
        // A chunk with FIN that is rejected (beyond the window) kills its link; the end of
        // stream it named must not stand against the real one coming on another link.
        let mut r = ReorderBuffer::new(20);
        assert_eq!(
            r.insert(30, b(5, 0), true),
            Err(RecvViolation::BeyondWindow)
        );
        r.insert(0, b(20, 0), false).unwrap();
        r.read(20).unwrap();
        assert!(r.insert(20, b(3, 0), true).is_ok());
        assert_eq!(r.read(10), Some(b(3, 0)));
        assert!(r.fin_received());
    }

    #[test]
    fn overlapping_chunks_from_a_bad_peer_are_trimmed_and_bounded() {
        let mut r = ReorderBuffer::new(30);
        r.insert(5, b(10, 1), false).unwrap();
        r.insert(3, b(10, 1), false).unwrap();
        assert_eq!(
            r.insert(1, b(12, 1), false),
            Err(RecvViolation::BeyondWindow)
        );
        r.insert(0, b(4, 1), false).unwrap();
        assert_eq!(r.cumulative(), 15);
        let mut total = 0;
        while let Some(d) = r.read(100) {
            total += d.len();
        }
        assert_eq!(total, 15);
        assert_eq!(r.buffered(), 0);
    }

    /// Regression: a bare end-of-stream marker (zero-length FIN chunk) after all data was
    /// read makes the stream readable (it reads as finished).
    #[test]
    fn lone_fin_is_readable() {
        let mut r = ReorderBuffer::new(100);
        r.insert(0, b(5, 0), false).unwrap();
        r.read(10).unwrap();
        assert!(!r.has_readable());
        assert_eq!(r.insert(5, Bytes::new(), true), Ok(Inserted::Readable));
        assert!(r.fin_received());
        assert_eq!(
            r.insert(5, Bytes::new(), true),
            Ok(Inserted::Nothing),
            "a resent FIN is a duplicate"
        );
    }

    #[test]
    fn fin_is_consistent() {
        let mut r = ReorderBuffer::new(100);
        r.insert(5, b(5, 0), true).unwrap();
        assert_eq!(r.insert(10, b(1, 0), false), Err(RecvViolation::BadFin));
        assert_eq!(r.insert(0, b(3, 0), true), Err(RecvViolation::BadFin));
        assert!(!r.fin_received());
        r.insert(0, b(5, 0), false).unwrap();
        assert!(r.fin_received());
        assert_eq!(r.cumulative(), 11);
        while r.read(100).is_some() {}
        assert!(r.fin_received() && r.read(1).is_none());
    }
}
