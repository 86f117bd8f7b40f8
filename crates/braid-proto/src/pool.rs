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
    spent: VecDeque<BytesMut>,
}

impl BlockPool {
    /// A pool of blocks of `block` bytes that tracks at most `keep` spent blocks.
    pub fn new(block: usize, keep: usize) -> Self {
        BlockPool {
            block,
            keep: keep.max(1),
            spent: VecDeque::new(),
        }
    }

    /// The block size.
    pub fn block_size(&self) -> usize {
        self.block
    }

    /// An empty buffer with room for at least one block: the oldest spent block if nothing
    /// refers to it any more, else a new allocation.
    pub fn take(&mut self) -> BytesMut {
        let block = self.block;
        if self.spent.front_mut().is_some_and(|b| b.try_reclaim(block)) {
            let mut out = self.spent.pop_front().unwrap_or_default();
            // A burst is over when several spent blocks are free at once: hold on to one.
            while self.spent.len() >= 2
                && self.spent.iter_mut().take(2).all(|b| b.try_reclaim(block))
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
        if spent.capacity() > self.block {
            // Not one of ours (or grown): keep only standard blocks.
            return;
        }
        if self.spent.len() >= self.keep {
            self.spent.pop_front();
        }
        self.spent.push_back(spent);
    }

    /// Drops every spent block but `n` (call when a burst is over).
    pub fn trim(&mut self, n: usize) {
        while self.spent.len() > n {
            self.spent.pop_front();
        }
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
