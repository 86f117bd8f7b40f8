//! Recycling of the byte blocks that buffers are cut from.
//!
//! Senders and receivers fill a block, cut it into pieces ([`Bytes`]) that live on in other
//! queues (chunks awaiting acknowledgement, received chunks awaiting the application), and
//! move on to a fresh block. Allocating each fresh block anew costs page faults and zeroing in
//! the kernel at every block on a fast path (a fifth of the CPU time on loopback); a
//! [`BlockPool`] hands back a block once every piece cut from it has been dropped.

use std::collections::VecDeque;

use bytes::{Bytes, BytesMut};

/// A FIFO of spent blocks, reused once nothing refers to them any more.
///
/// Pieces are usually dropped in the order they were cut (acknowledgements and reads are in
/// order), so only the oldest spent blocks are checked. Idle memory is bounded: at most
/// `keep` blocks are tracked, and of those no more than two unused ones are held.
///
/// ```
/// use braid_proto::pool::BlockPool;
///
/// let mut pool = BlockPool::new(1024, 8);
/// let mut block = pool.take();
/// block.extend_from_slice(&[7; 1024]);
/// let piece = block.split().freeze(); // lives on elsewhere
/// pool.give(block);
/// drop(piece);
/// let again = pool.take(); // the same memory, with nothing copied
/// assert!(again.capacity() >= 1024 && again.is_empty());
/// ```
#[derive(Debug)]
pub struct BlockPool {
    block: usize,
    keep: usize,
    /// Unused blocks held when a burst is over (see [`with_spare`](Self::with_spare)).
    spare: usize,
    /// Spent blocks checked for reuse by `take` (see [`with_scan`](Self::with_scan)).
    scan: usize,
    spent: VecDeque<BytesMut>,
}

impl BlockPool {
    /// A pool of blocks of `block` bytes that tracks at most `keep` spent blocks.
    pub fn new(block: usize, keep: usize) -> Self {
        BlockPool {
            block,
            keep: keep.max(1),
            spare: 1,
            scan: 1,
            spent: VecDeque::new(),
        }
    }

    /// Lets `take` reuse any of the `scan` oldest spent blocks that is free, not only the
    /// oldest one.
    ///
    /// For receivers whose pieces are dropped out of order: a block cut into the payloads of
    /// many streams is free only once the slowest of their readers has read, and meanwhile
    /// the blocks after it may already be free. Checking one is an atomic load.
    ///
    /// ```
    /// use braid_proto::pool::BlockPool;
    ///
    /// let mut pool = BlockPool::new(1024, 64).with_scan(16);
    /// let mut a = pool.take();
    /// a.extend_from_slice(&[1; 1024]);
    /// let slow = a.split().freeze(); // still being read
    /// pool.give(a);
    /// let mut b = pool.take();
    /// let ptr = b.as_ptr();
    /// b.extend_from_slice(&[2; 1024]);
    /// drop(b.split().freeze()); // read at once
    /// pool.give(b);
    /// assert_eq!(pool.take().as_ptr(), ptr, "the second block is reused");
    /// # drop(slow);
    /// ```
    pub fn with_scan(mut self, scan: usize) -> Self {
        self.scan = scan.max(1);
        self
    }

    /// Holds up to `spare` unused blocks after a burst instead of one (bounded by `keep`).
    ///
    /// A receiver whose application drains several blocks at once frees them together; with
    /// one held, the next blocks are fresh allocations again (page faults, zeroing in the
    /// kernel). Idle memory is then up to `spare` blocks.
    ///
    /// ```
    /// use braid_proto::pool::BlockPool;
    ///
    /// let pool = BlockPool::new(1024, 64).with_spare(8);
    /// assert_eq!(pool.block_size(), 1024);
    /// ```
    pub fn with_spare(mut self, spare: usize) -> Self {
        self.spare = spare.max(1);
        self
    }

    /// The block size.
    pub fn block_size(&self) -> usize {
        self.block
    }

    /// An empty buffer with room for at least one block: the oldest spent block nothing
    /// refers to any more (of the first [`with_scan`](Self::with_scan) ones, default one),
    /// else a new allocation.
    pub fn take(&mut self) -> BytesMut {
        let block = self.block;
        let free = self
            .spent
            .iter_mut()
            .take(self.scan)
            .position(|b| b.try_reclaim(block));
        if let Some(i) = free {
            let mut out = self.spent.remove(i).unwrap_or_default();
            // A burst is over when several spent blocks are free at once: hold on to `spare`.
            let spare = self.spare;
            while self.spent.len() > spare
                && self
                    .spent
                    .iter_mut()
                    .take(spare + 1)
                    .all(|b| b.try_reclaim(block))
            {
                self.spent.pop_front();
            }
            out.clear();
            return out;
        }
        BytesMut::with_capacity(self.block)
    }

    /// Hands back the handle of a block whose bytes were all split off (the pieces may still
    /// be alive). Any bytes still in `spent` are discarded.
    pub fn give(&mut self, mut spent: BytesMut) {
        spent.clear();
        if spent.capacity() == 0 && spent.as_ptr() == std::ptr::NonNull::<u8>::dangling().as_ptr() {
            // Never allocated (`BytesMut::new()`, e.g. a buffer's initial value handed over by
            // `refill`): it can never be reclaimed, and at the front of the queue it would
            // keep every block behind it from being reused.
            return;
        }
        if spent.capacity() > self.block {
            // Not one of ours (or grown): keep only standard blocks.
            return;
        }
        if self.spent.len() >= self.keep {
            self.spent.pop_front();
        }
        self.spent.push_back(spent);
    }

    /// Makes room for at least `min` more bytes at the end of `buf`, never by `reserve` on a
    /// block whose earlier pieces are still alive (that allocates anew and copies whatever is
    /// still in it): the bytes still in `buf` (usually a partial frame header) move to a block
    /// from the pool, and the spent handle is given back. Requests larger than a block fall
    /// back to `reserve`.
    ///
    /// ```
    /// use braid_proto::pool::BlockPool;
    ///
    /// let mut pool = BlockPool::new(1024, 8);
    /// let mut buf = pool.take();
    /// buf.extend_from_slice(&[1; 1000]);
    /// let piece = buf.split_to(990).freeze(); // lives on elsewhere
    /// pool.refill(&mut buf, 256);
    /// assert_eq!(&buf[..], &[1; 10]);
    /// assert!(buf.capacity() - buf.len() >= 256);
    /// # drop(piece);
    /// ```
    pub fn refill(&mut self, buf: &mut BytesMut, min: usize) {
        if buf.capacity() - buf.len() >= min {
            return;
        }
        if buf.len() + min > self.block {
            buf.reserve(min);
            return;
        }
        let mut fresh = self.take();
        fresh.extend_from_slice(buf);
        let old = std::mem::replace(buf, fresh);
        self.give(old);
    }

    /// Drops every spent block but `n` (call when a burst is over).
    pub fn trim(&mut self, n: usize) {
        while self.spent.len() > n {
            self.spent.pop_front();
        }
    }

    /// Frees the unused spent blocks beyond the first `spare` unused ones, keeping the ones
    /// still in use tracked; returns how many were freed.
    ///
    /// For owners that trim on a timer instead of at every [`take`](Self::take) (with a large
    /// [`with_spare`](Self::with_spare)): a receiver whose readers free many blocks at once
    /// would otherwise drop them at the next `take` and allocate them anew a moment later.
    ///
    /// ```
    /// use braid_proto::pool::BlockPool;
    ///
    /// let mut pool = BlockPool::new(1024, 64).with_spare(64);
    /// let mut blocks: Vec<_> = (0..10).map(|_| pool.take()).collect();
    /// blocks[0].extend_from_slice(&[1; 1024]);
    /// let busy = blocks[0].split().freeze();
    /// for b in blocks {
    ///     pool.give(b);
    /// }
    /// assert_eq!(pool.trim_unused(2), 7); // 9 unused, 2 kept; the busy one stays tracked
    /// # drop(busy);
    /// ```
    pub fn trim_unused(&mut self, spare: usize) -> usize {
        let block = self.block;
        let mut unused = 0;
        let before = self.spent.len();
        self.spent.retain_mut(|b| {
            if b.try_reclaim(block) {
                unused += 1;
                unused <= spare
            } else {
                true
            }
        });
        before - self.spent.len()
    }

    /// Copies `data` into a fresh block (or as many blocks as needed) and returns it frozen.
    pub fn copy(&mut self, data: &[u8]) -> Bytes {
        if data.len() > self.block {
            return Bytes::copy_from_slice(data);
        }
        let mut b = self.take();
        b.extend_from_slice(data);
        let out = b.split().freeze();
        self.give(b);
        out
    }
}

/// Copies bytes into pooled blocks and hands each copy out as a piece: the way to take an
/// application's `&[u8]` as [`Bytes`] with one copy and no allocation per write.
///
/// ```
/// use braid_proto::pool::Stager;
///
/// let mut s = Stager::new(64 * 1024, 8);
/// let piece = s.copy(b"hello");
/// assert_eq!(&piece[..], b"hello");
/// ```
#[derive(Debug)]
pub struct Stager {
    current: Option<BytesMut>,
    pool: BlockPool,
}

impl Stager {
    /// Blocks of `block` bytes, at most `keep` spent ones tracked (see [`BlockPool::new`]).
    pub fn new(block: usize, keep: usize) -> Self {
        Stager {
            current: None,
            pool: BlockPool::new(block, keep),
        }
    }

    /// Holds up to `spare` unused blocks between bursts of frees (see
    /// [`BlockPool::with_spare`]); call [`Stager::trim`] when the copies are all dropped.
    ///
    /// A sender's blocks are freed as acknowledgements come, several at once, while the
    /// application writes into new ones in between: with one spare, two of three blocks on
    /// a loopback bulk transfer were fresh allocations (cold memory, page faults).
    ///
    /// ```
    /// use braid_proto::pool::Stager;
    ///
    /// let mut s = Stager::new(1024, 8).with_spare(4);
    /// let pieces: Vec<_> = (0..6).map(|_| s.copy(&[1; 1024])).collect();
    /// drop(pieces);
    /// s.trim(1);
    /// ```
    pub fn with_spare(mut self, spare: usize) -> Self {
        self.pool = self.pool.with_spare(spare);
        self
    }

    /// Frees the unused blocks beyond `spare` (when a burst is over).
    pub fn trim(&mut self, spare: usize) {
        self.pool.trim_unused(spare);
    }

    /// Copies as much of `data` as the current block has room for (starting a new block if
    /// it is full) and returns the copy; it may be shorter than `data`, never empty unless
    /// `data` is.
    pub fn copy(&mut self, data: &[u8]) -> Bytes {
        if data.is_empty() {
            return Bytes::new();
        }
        let block = match &mut self.current {
            Some(b) if b.capacity() > b.len() => b,
            _ => {
                if let Some(spent) = self.current.take() {
                    self.pool.give(spent);
                }
                self.current.insert(self.pool.take())
            }
        };
        let n = (block.capacity() - block.len()).min(data.len());
        block.extend_from_slice(&data[..n]);
        block.split().freeze()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reuses_a_block_once_its_pieces_are_dropped() {
        let mut pool = BlockPool::new(4096, 4);
        let mut b = pool.take();
        let ptr = b.as_ptr();
        b.extend_from_slice(&[1; 4096]);
        let piece = b.split_to(100).freeze();
        let rest = b.split().freeze();
        pool.give(b);
        // Still referenced: a new block.
        let other = pool.take();
        assert_ne!(other.as_ptr(), ptr);
        drop(piece);
        drop(rest);
        let again = pool.take();
        assert_eq!(again.as_ptr(), ptr, "same memory reused");
        assert!(again.capacity() >= 4096 && again.is_empty());
    }

    #[test]
    fn stager_fills_blocks_then_moves_on() {
        let mut s = Stager::new(100, 4);
        let a = s.copy(&[1; 60]);
        let b = s.copy(&[2; 60]);
        assert_eq!((a.len(), b.len()), (60, 40), "the rest of the block");
        let c = s.copy(&[3; 60]);
        assert_eq!(c.len(), 60);
        assert_eq!(b.as_ptr() as usize, a.as_ptr() as usize + 60, "same block");
        drop((a, b));
        let d = s.copy(&[4; 60]);
        let e = s.copy(&[5; 60]);
        assert_eq!((d.len(), e.len()), (40, 60));
        assert!(c.iter().all(|&x| x == 3) && e.iter().all(|&x| x == 5));
    }

    #[test]
    fn an_unallocated_buffer_does_not_block_reuse() {
        let mut pool = BlockPool::new(4096, 8);
        let mut buf = BytesMut::new();
        for _ in 0..100 {
            pool.refill(&mut buf, 1024);
            // Every spent block was reclaimed by the next `take`.
            assert!(pool.spent.len() <= 1, "{} blocks in use", pool.spent.len());
            let n = buf.capacity() - buf.len();
            buf.extend_from_slice(&vec![0; n]);
            drop(buf.split_to(n - 3).freeze());
        }
    }

    #[test]
    fn idle_memory_is_bounded() {
        let mut pool = BlockPool::new(1024, 100);
        let blocks: Vec<BytesMut> = (0..50).map(|_| pool.take()).collect();
        for b in blocks {
            pool.give(b);
        }
        assert_eq!(pool.spent.len(), 50);
        let _ = pool.take();
        assert!(
            pool.spent.len() <= 2,
            "{} unused blocks held",
            pool.spent.len()
        );
    }

    #[test]
    fn keep_caps_tracked_blocks() {
        let mut pool = BlockPool::new(1024, 3);
        let mut pieces = Vec::new();
        for _ in 0..10 {
            let mut b = pool.take();
            b.extend_from_slice(&[0; 1024]);
            pieces.push(b.split().freeze());
            pool.give(b);
        }
        assert_eq!(pool.spent.len(), 3);
    }
}
