//! Where [`Connection::poll_transmit`](super::Connection::poll_transmit) puts frames: a flat
//! buffer (one copy of the data) or a list of chunks for vectored writes (no copy: large Data
//! payloads are split out of the stream's send buffer as `Bytes`).

use std::collections::VecDeque;

use bytes::{Buf, BufMut, Bytes, BytesMut};

use super::frame::HEADER_LEN;

/// Payloads below this are copied next to their header instead of becoming their own chunk.
const COPY_BELOW: usize = 4096;

/// A destination for encoded frames.
pub trait FrameSink {
    /// Bytes appended so far.
    fn len(&self) -> usize;
    /// Whether nothing was appended.
    fn is_empty(&self) -> bool {
        self.len() == 0
    }
    /// Appends an encoded header.
    fn put_header(&mut self, header: &[u8; HEADER_LEN]);
    /// Appends the first `n` bytes of `src` and removes them from it.
    fn put_data(&mut self, src: &mut BytesMut, n: usize);
    /// Appends a payload piece the sink may keep without copying.
    fn put_bytes(&mut self, b: Bytes);
}

impl FrameSink for BytesMut {
    fn len(&self) -> usize {
        BytesMut::len(self)
    }

    fn put_header(&mut self, header: &[u8; HEADER_LEN]) {
        self.put_slice(header);
    }

    fn put_data(&mut self, src: &mut BytesMut, n: usize) {
        self.put_slice(&src[..n]);
        src.advance(n);
    }

    fn put_bytes(&mut self, b: Bytes) {
        self.put_slice(&b);
    }
}

/// Frames as a queue of byte chunks, for `writev`.
///
/// ```
/// use braid_proto::mux::{Chunks, FrameSink};
/// use bytes::BytesMut;
/// let mut chunks = Chunks::default();
/// chunks.put_header(&[0; 12]);
/// let mut data = BytesMut::from(&vec![1u8; 10_000][..]);
/// chunks.put_data(&mut data, 10_000);
/// chunks.finish();
/// assert_eq!(chunks.len(), 10_012);
/// assert_eq!(chunks.chunks().len(), 2);
/// ```
#[derive(Debug, Default)]
pub struct Chunks {
    small: BytesMut,
    chunks: VecDeque<Bytes>,
    len: usize,
}

impl Chunks {
    /// Moves buffered headers and small payloads into the chunk queue; call before writing.
    pub fn finish(&mut self) {
        if !self.small.is_empty() {
            self.chunks.push_back(self.small.split().freeze());
        }
    }

    /// The chunks, in wire order.
    pub fn chunks(&self) -> &VecDeque<Bytes> {
        &self.chunks
    }

    /// Removes `n` written bytes from the front.
    pub fn advance(&mut self, mut n: usize) {
        self.len -= n;
        while n > 0 {
            let Some(front) = self.chunks.front_mut() else {
                return;
            };
            if front.len() > n {
                front.advance(n);
                return;
            }
            n -= front.len();
            self.chunks.pop_front();
        }
    }
}

impl FrameSink for Chunks {
    fn len(&self) -> usize {
        self.len
    }

    fn put_header(&mut self, header: &[u8; HEADER_LEN]) {
        if self.small.capacity() - self.small.len() < HEADER_LEN {
            self.small.reserve(16 * 1024);
        }
        self.small.put_slice(header);
        self.len += HEADER_LEN;
    }

    fn put_data(&mut self, src: &mut BytesMut, n: usize) {
        self.len += n;
        if n < COPY_BELOW {
            self.small.put_slice(&src[..n]);
            src.advance(n);
        } else {
            self.finish();
            self.chunks.push_back(src.split_to(n).freeze());
        }
    }

    fn put_bytes(&mut self, b: Bytes) {
        self.len += b.len();
        if b.len() < COPY_BELOW {
            self.small.put_slice(&b);
        } else {
            self.finish();
            self.chunks.push_back(b);
        }
    }
}
