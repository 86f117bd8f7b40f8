//! The sender's buffer: unsent application bytes, chunks in flight, and chunks to resend.

use std::collections::{BTreeMap, BTreeSet, VecDeque};

use bytes::{Bytes, BytesMut};

use super::link::LinkId;
use crate::Time;
use crate::pool::BlockPool;

/// A chunk sent at least once and not yet acknowledged.
#[derive(Debug)]
pub(crate) struct SentChunk {
    pub data: Bytes,
    pub fin: bool,
    /// Links this chunk is in flight on (usually one; two after a resend).
    pub links: Vec<LinkId>,
    /// When the scheduler expected the latest transmission to arrive.
    pub expected_arrival: Time,
    /// Already resent opportunistically once (never twice).
    pub opportunistic: bool,
    /// Was at the head of the line while every link it is on stalled (see
    /// [`Link::stalled_at`](super::link::Link::stalled_at)); those links' chunks were queued
    /// to be resent on others then.
    pub stalled: bool,
}

/// Size of the blocks application bytes are copied into. Chunks are cut from these blocks
/// without copying; a full block is never grown (growing a buffer that sent chunks still
/// share would copy everything unsent into a new one), a new block is started instead.
const BLOCK: usize = 256 * 1024;

/// Everything the sender holds. Its size (unsent + unacknowledged) is bounded by
/// `Config::send_buffer`, its unsent part by `Config::unsent_limit`: [`SendBuffer::write`]
/// takes only what fits.
#[derive(Debug)]
pub(crate) struct SendBuffer {
    limit: u64,
    unsent_limit: u64,
    /// Unsent bytes in full blocks, oldest first, then those in `tail`.
    unsent: VecDeque<Bytes>,
    /// The block being filled (its spare capacity takes the next writes); `None` before the
    /// first write.
    tail: Option<BytesMut>,
    blocks: BlockPool,
    unsent_len: u64,
    /// Stream offset of the first unsent byte.
    next_seq: u64,
    /// Everything below this was acknowledged.
    acked_below: u64,
    chunks: BTreeMap<u64, SentChunk>,
    unacked_bytes: u64,
    /// Chunks whose link died before they were acknowledged, by offset.
    resend: BTreeSet<u64>,
    /// Final offset once the application finished.
    fin_at: Option<u64>,
    fin_sent: bool,
    pub peak: u64,
}

impl SendBuffer {
    pub fn new(limit: u64, unsent_limit: u64) -> Self {
        SendBuffer {
            limit,
            unsent_limit,
            unsent: VecDeque::new(),
            tail: None,
            // Enough to track every block the limit lets live at once.
            blocks: BlockPool::new(BLOCK, (limit / BLOCK as u64).min(4096) as usize + 4),
            unsent_len: 0,
            next_seq: 0,
            acked_below: 0,
            chunks: BTreeMap::new(),
            unacked_bytes: 0,
            resend: BTreeSet::new(),
            fin_at: None,
            fin_sent: false,
            peak: 0,
        }
    }

    /// Whether a writer waiting for room should be woken: a quarter of the smaller limit is
    /// free. Waking at the first free byte would have it write (and the links send) a
    /// trickle of tiny pieces, like TCP's silly window syndrome: a 1 MiB unsent limit then
    /// halved loopback throughput.
    pub fn writable(&self) -> bool {
        self.room() >= (self.limit.min(self.unsent_limit) / 4).max(1)
    }

    /// Sets the most unsent bytes [`SendBuffer::write`] lets accumulate.
    pub fn set_unsent_limit(&mut self, n: u64) {
        self.unsent_limit = n;
    }

    /// Unsent plus unacknowledged bytes.
    pub fn buffered(&self) -> u64 {
        self.unsent_len + self.unacked_bytes
    }

    pub fn room(&self) -> u64 {
        self.room_under(self.unsent_limit)
    }

    /// The room there would be under another unsent limit.
    pub fn room_under(&self, unsent_limit: u64) -> u64 {
        self.limit
            .saturating_sub(self.buffered())
            .min(unsent_limit.saturating_sub(self.unsent_len))
    }

    pub fn write(&mut self, data: &[u8]) -> usize {
        let n = (self.room() as usize).min(data.len());
        let mut rest = &data[..n];
        while !rest.is_empty() {
            let tail = match &mut self.tail {
                Some(t) if t.capacity() > t.len() => t,
                _ => {
                    let fresh = self.blocks.take();
                    if let Some(mut full) = self.tail.replace(fresh) {
                        if !full.is_empty() {
                            self.unsent.push_back(full.split().freeze());
                        }
                        self.blocks.give(full);
                    }
                    self.tail.get_or_insert_with(BytesMut::new)
                }
            };
            let k = (tail.capacity() - tail.len()).min(rest.len());
            tail.extend_from_slice(&rest[..k]);
            rest = &rest[k..];
        }
        self.unsent_len += n as u64;
        self.peak = self.peak.max(self.buffered());
        n
    }

    /// Appends `data` without copying it, after everything written before; takes only what
    /// fits (returns how much).
    pub fn write_bytes(&mut self, mut data: Bytes) -> usize {
        let n = (self.room() as usize).min(data.len());
        data.truncate(n);
        if n == 0 {
            return 0;
        }
        if let Some(t) = self.tail.as_mut().filter(|t| !t.is_empty()) {
            self.unsent.push_back(t.split().freeze());
        }
        self.unsent.push_back(data);
        self.unsent_len += n as u64;
        self.peak = self.peak.max(self.buffered());
        n
    }

    pub fn finish(&mut self) {
        if self.fin_at.is_none() {
            self.fin_at = Some(self.next_seq + self.unsent_len);
        }
    }

    pub fn is_finished(&self) -> bool {
        self.fin_at.is_some()
    }

    /// Everything, including the end of stream, was acknowledged.
    pub fn all_acked(&self) -> bool {
        self.fin_sent && self.chunks.is_empty() && self.unsent_len == 0
    }

    pub fn next_seq(&self) -> u64 {
        self.next_seq
    }

    pub fn unsent_len(&self) -> u64 {
        self.unsent_len
    }

    /// Whether a new chunk (or the bare end-of-stream marker) is waiting to be sent.
    pub fn has_new(&self) -> bool {
        self.unsent_len > 0 || (self.fin_at.is_some() && !self.fin_sent)
    }

    /// Bytes of new data that may be sent below `window_end`.
    pub fn sendable(&self, window_end: u64) -> u64 {
        self.unsent_len
            .min(window_end.saturating_sub(self.next_seq))
    }

    /// Cuts the next chunk of at most `max` bytes that fits below `window_end` (and within
    /// one block, so it is never copied).
    /// Returns `(seq, data, fin)`; `None` when nothing may be sent.
    pub fn cut(&mut self, max: usize, window_end: u64) -> Option<(u64, Bytes, bool)> {
        let len = (self.sendable(window_end) as usize).min(max);
        let ends_stream = |end: u64| self.fin_at == Some(end);
        if len == 0 {
            // The bare end-of-stream marker needs no window.
            if self.unsent_len == 0 && ends_stream(self.next_seq) && !self.fin_sent {
                self.fin_sent = true;
                return Some((self.next_seq, Bytes::new(), true));
            }
            return None;
        }
        let seq = self.next_seq;
        let data = match self.unsent.front_mut() {
            Some(block) => {
                let data = block.split_to(len.min(block.len()));
                if block.is_empty() {
                    self.unsent.pop_front();
                }
                data
            }
            None => match &mut self.tail {
                Some(t) => t.split_to(len.min(t.len())).freeze(),
                None => Bytes::new(),
            },
        };
        let len = data.len();
        self.unsent_len -= len as u64;
        self.next_seq += len as u64;
        self.unacked_bytes += len as u64;
        let fin = ends_stream(self.next_seq);
        if fin {
            self.fin_sent = true;
        }
        Some((seq, data, fin))
    }

    /// Records a chunk just sent for the first time.
    pub fn insert(&mut self, seq: u64, data: Bytes, fin: bool, link: LinkId, arrival: Time) {
        self.chunks.insert(
            seq,
            SentChunk {
                data,
                fin,
                links: vec![link],
                expected_arrival: arrival,
                opportunistic: false,
                stalled: false,
            },
        );
    }

    pub fn chunk(&self, seq: u64) -> Option<&SentChunk> {
        self.chunks.get(&seq)
    }

    pub fn chunk_mut(&mut self, seq: u64) -> Option<&mut SentChunk> {
        self.chunks.get_mut(&seq)
    }

    /// The oldest unacknowledged chunk: the one the peer's reorder buffer waits for.
    pub fn head_of_line(&self) -> Option<(u64, &SentChunk)> {
        self.chunks.iter().next().map(|(s, c)| (*s, c))
    }

    /// The chunk at `seq` was received by the peer. Returns its length if it was still held.
    pub fn ack(&mut self, seq: u64) -> Option<u64> {
        let c = self.chunks.remove(&seq)?;
        self.resend.remove(&seq);
        let len = c.data.len() as u64;
        self.unacked_bytes -= len;
        drop(c);
        if self.unacked_bytes == 0 && self.unsent_len == 0 {
            self.on_idle();
        }
        Some(len)
    }

    /// Everything written was acknowledged: keep at most one block for the next burst.
    fn on_idle(&mut self) {
        if self.tail.as_ref().is_some_and(|t| t.is_empty()) {
            if let Some(t) = self.tail.take() {
                self.blocks.give(t);
            }
        }
        self.blocks.trim(1);
    }

    /// The peer has every byte below `cumulative`. Returns bytes newly freed.
    pub fn ack_cumulative(&mut self, cumulative: u64) -> u64 {
        if cumulative <= self.acked_below {
            return 0;
        }
        self.acked_below = cumulative;
        let mut freed = 0;
        while let Some(entry) = self.chunks.first_entry() {
            let seq = *entry.key();
            let c = entry.get();
            let end = seq + c.data.len() as u64;
            // A zero-length end-of-stream marker at `cumulative` is not covered by it.
            if end > cumulative || (c.data.is_empty() && seq >= cumulative) {
                break;
            }
            freed += self.ack(seq).unwrap_or(0);
        }
        freed
    }

    /// A transmission of `seq` on `link` is gone (link dead): resend unless another copy is
    /// still in flight.
    pub fn lost_on(&mut self, seq: u64, link: LinkId) {
        if let Some(c) = self.chunks.get_mut(&seq) {
            c.links.retain(|l| *l != link);
            if c.links.is_empty() {
                self.resend.insert(seq);
            }
        }
    }

    /// `seq`, still in flight on a link that stalled, is resent on another link (once: not if
    /// it was resent already).
    pub fn stuck(&mut self, seq: u64) {
        if self.chunks.get(&seq).is_some_and(|c| c.links.len() == 1) {
            self.resend.insert(seq);
        }
    }

    /// Whether any chunk waits to be resent.
    pub fn has_resend(&self) -> bool {
        !self.resend.is_empty()
    }

    /// The first chunk waiting to be resent that is not already in flight on `link`.
    pub fn next_resend(&self, link: LinkId) -> Option<u64> {
        self.resend
            .iter()
            .copied()
            .find(|s| self.chunks.get(s).is_some_and(|c| !c.links.contains(&link)))
    }

    /// `seq` is being resent on `link` now.
    pub fn resent(&mut self, seq: u64, link: LinkId, arrival: Time) {
        self.resend.remove(&seq);
        if let Some(c) = self.chunks.get_mut(&seq) {
            c.links.push(link);
            c.expected_arrival = arrival;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn limit_bounds_unsent_plus_unacked() {
        let mut s = SendBuffer::new(100, u64::MAX);
        assert_eq!(s.write(&[1; 60]), 60);
        assert_eq!(s.write(&[2; 60]), 40);
        let (seq, d, fin) = s.cut(30, u64::MAX).unwrap();
        assert_eq!((seq, d.len(), fin), (0, 30, false));
        s.insert(seq, d, fin, LinkId(0), Time::ZERO);
        assert_eq!(s.write(&[3; 10]), 0, "sent but unacked still counts");
        assert_eq!(s.ack(0), Some(30));
        assert_eq!(s.write(&[3; 10]), 10);
    }

    #[test]
    fn unsent_limit_bounds_unsent_only() {
        let mut s = SendBuffer::new(1000, 100);
        assert_eq!(s.write(&[1; 150]), 100);
        assert_eq!(s.write_bytes(Bytes::from_static(&[2; 10])), 0);
        let (seq, d, fin) = s.cut(30, u64::MAX).unwrap();
        s.insert(seq, d, fin, LinkId(0), Time::ZERO);
        // Sent but unacknowledged data does not count against the unsent limit.
        assert_eq!(s.room(), 30);
        assert_eq!(s.write(&[3; 50]), 30);
        assert_eq!(s.buffered(), 130);
    }

    #[test]
    fn blocks_keep_order_and_never_copy_unsent_bytes() {
        let mut s = SendBuffer::new(u64::MAX, u64::MAX);
        let data: Vec<u8> = (0..3 * BLOCK + 1000).map(|i| (i % 251) as u8).collect();
        // Writes of odd sizes, interleaved with cuts, across block boundaries.
        let mut written = 0;
        let mut out = Vec::new();
        while written < data.len() || s.unsent_len() > 0 {
            let w = (data.len() - written).min(70_001);
            written += s.write(&data[written..written + w]);
            while let Some((seq, d, _)) = s.cut(16 * 1024, u64::MAX) {
                assert_eq!(seq as usize, out.len());
                assert!(d.len() <= 16 * 1024);
                out.extend_from_slice(&d);
                if out.len() % 3 == 0 {
                    break;
                }
            }
        }
        assert_eq!(out, data);
        assert_eq!(s.buffered(), data.len() as u64, "nothing acknowledged yet");
    }

    #[test]
    fn write_bytes_keeps_order_with_copied_writes() {
        let mut s = SendBuffer::new(100, u64::MAX);
        s.write(b"ab");
        assert_eq!(s.write_bytes(Bytes::from_static(b"cd")), 2);
        s.write(b"ef");
        assert_eq!(
            s.write_bytes(Bytes::from(vec![b'g'; 200])),
            94,
            "only what fits"
        );
        let mut out = Vec::new();
        while let Some((_, d, _)) = s.cut(1000, u64::MAX) {
            out.extend_from_slice(&d);
        }
        assert_eq!(&out[..6], b"abcdef");
        assert_eq!(out.len(), 100);
    }

    #[test]
    fn window_limits_cut_and_fin_marks_last_chunk() {
        let mut s = SendBuffer::new(1000, u64::MAX);
        s.write(&[0; 50]);
        s.finish();
        assert!(s.cut(100, 20).is_some_and(|(_, d, f)| d.len() == 20 && !f));
        assert!(s.cut(100, 20).is_none());
        let (seq, d, fin) = s.cut(100, 1000).unwrap();
        assert_eq!((seq, d.len(), fin), (20, 30, true));
        assert!(s.cut(100, 1000).is_none());
    }

    #[test]
    fn bare_fin_after_everything_sent() {
        let mut s = SendBuffer::new(1000, u64::MAX);
        s.write(&[0; 10]);
        let (_, d, fin) = s.cut(100, 1000).unwrap();
        assert!(!fin && d.len() == 10);
        s.finish();
        assert_eq!(s.cut(100, 0), Some((10, Bytes::new(), true)));
    }

    #[test]
    fn cumulative_ack_keeps_fin_marker_at_boundary() {
        let mut s = SendBuffer::new(1000, u64::MAX);
        s.write(&[0; 10]);
        let (q, d, f) = s.cut(100, 1000).unwrap();
        s.insert(q, d, f, LinkId(0), Time::ZERO);
        s.finish();
        let (q, d, f) = s.cut(100, 1000).unwrap();
        s.insert(q, d, f, LinkId(0), Time::ZERO);
        assert_eq!(s.ack_cumulative(10), 10);
        assert!(!s.all_acked());
        assert_eq!(s.ack(10), Some(0));
        assert!(s.all_acked());
    }

    #[test]
    fn lost_chunk_is_resent_unless_another_copy_flies() {
        let mut s = SendBuffer::new(1000, u64::MAX);
        s.write(&[0; 10]);
        let (q, d, f) = s.cut(100, 1000).unwrap();
        s.insert(q, d, f, LinkId(0), Time::ZERO);
        s.resent(0, LinkId(1), Time::ZERO);
        s.lost_on(0, LinkId(0));
        assert_eq!(s.next_resend(LinkId(2)), None);
        s.lost_on(0, LinkId(1));
        assert_eq!(s.next_resend(LinkId(2)), Some(0));
    }
}
