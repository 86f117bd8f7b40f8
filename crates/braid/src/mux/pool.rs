//! Recycled blocks for the payload of large writes.
//!
//! `Stream::poll_write` copies a large write into 64 KiB blocks outside the session's lock; the
//! blocks travel as `Bytes` through the stream's send buffer to the driver's `writev`, and come
//! back here when the last reference is dropped. Reusing them keeps the copy's destination warm
//! in the cache and spares the allocator: fresh 256 KiB buffers per write cost page faults
//! (the allocator hands memory back to the kernel and takes it again), a tenth of the CPU time
//! with 100 bulk streams.

use std::sync::{Arc, Mutex};

use bytes::Bytes;

/// Size of one block: the default frame size, so a frame is one block.
pub(crate) const BLOCK: usize = 64 * 1024;
/// Free blocks kept per session (4 MiB); more are freed.
const MAX_FREE: usize = 64;

#[derive(Default)]
pub(crate) struct BlockPool {
    free: Mutex<Vec<Vec<u8>>>,
}

impl BlockPool {
    /// Copies `data` into pooled blocks, appending one `Bytes` per block to `out`.
    pub(crate) fn copy(self: &Arc<Self>, data: &[u8], out: &mut Vec<Bytes>) {
        let mut pieces = data.chunks(BLOCK);
        let mut free = Vec::new();
        {
            let mut pool = self.free.lock().unwrap_or_else(|e| e.into_inner());
            let k = pieces.len().min(pool.len());
            let at = pool.len() - k;
            free.extend(pool.drain(at..));
        }
        for piece in pieces.by_ref() {
            let mut buf = free.pop().unwrap_or_else(|| Vec::with_capacity(BLOCK));
            buf.extend_from_slice(piece);
            out.push(Bytes::from_owner(Block {
                buf,
                pool: self.clone(),
            }));
        }
    }
}

struct Block {
    buf: Vec<u8>,
    pool: Arc<BlockPool>,
}

impl AsRef<[u8]> for Block {
    fn as_ref(&self) -> &[u8] {
        &self.buf
    }
}

impl Drop for Block {
    fn drop(&mut self) {
        let mut buf = std::mem::take(&mut self.buf);
        buf.clear();
        let mut pool = self.pool.free.lock().unwrap_or_else(|e| e.into_inner());
        if pool.len() < MAX_FREE {
            pool.push(buf);
        }
    }
}
