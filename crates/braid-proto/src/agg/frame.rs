//! The aggregation protocol's link frames: typed, with a no-panic decoder.
//!
//! Every frame starts with a one-byte type; all integers are big-endian. The layout of each
//! frame is in `docs/PROTOCOL.md`. Decoding never panics: once a length is checked, every
//! accessor is in bounds, and any malformed input becomes a [`FrameError`].

use bytes::{Buf, BufMut, Bytes, BytesMut};

/// Protocol version carried in the first frame of every link.
pub const VERSION: u8 = 1;

/// Magic bytes at the start of a `Hello`, so garbage on a port is recognised at once.
pub const MAGIC: [u8; 5] = *b"braid";

/// Largest chunk payload a receiver accepts (1 MiB); larger is a protocol error.
pub const MAX_CHUNK: usize = 1 << 20;

/// Bytes of a `Data` frame header without checksum.
pub const DATA_HEADER_LEN: usize = 1 + 1 + 8 + 4;
/// Bytes of a `Data` frame header with a CRC32C.
pub const DATA_HEADER_CRC_LEN: usize = DATA_HEADER_LEN + 4;

/// A connection's identity: 16 random bytes chosen by the server when the first link arrives.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct ConnectionId(pub [u8; 16]);

impl ConnectionId {
    /// The all-zero id a client sends to ask for a new connection.
    pub const NEW: ConnectionId = ConnectionId([0; 16]);

    /// Whether this is the "new connection" request.
    pub fn is_new(&self) -> bool {
        *self == Self::NEW
    }
}

impl std::fmt::Display for ConnectionId {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        for b in &self.0[..8] {
            write!(f, "{b:02x}")?;
        }
        Ok(())
    }
}

/// Flag bits of a `Data` frame.
pub mod data_flags {
    /// A CRC32C of the header and payload follows the length.
    pub const CRC: u8 = 0x01;
    /// This chunk ends the sender's stream (half-close): nothing follows `seq + len`.
    pub const FIN: u8 = 0x02;
}

/// Flag bits of a `Hello` frame.
pub mod hello_flags {
    /// The sender checksums its data chunks.
    pub const CRC: u8 = 0x01;
}

/// Why a server refuses a link (carried in `Refuse`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[repr(u8)]
#[non_exhaustive]
pub enum RefuseCode {
    /// The protocol version is not supported.
    Version = 1,
    /// The connection id names no live connection.
    UnknownConnection = 2,
    /// A configured limit (connections, links per connection) is reached.
    Limit = 3,
    /// Authentication failed.
    Unauthorized = 4,
    /// Any other reason.
    Other = 255,
}

impl RefuseCode {
    fn from_u8(v: u8) -> Self {
        match v {
            1 => Self::Version,
            2 => Self::UnknownConnection,
            3 => Self::Limit,
            4 => Self::Unauthorized,
            _ => Self::Other,
        }
    }
}

/// One decoded link frame.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Frame {
    /// First frame from the side that plays client in the braid handshake.
    Hello {
        /// Protocol version.
        version: u8,
        /// [`hello_flags`].
        flags: u8,
        /// The connection to join, or [`ConnectionId::NEW`].
        conn: ConnectionId,
    },
    /// The server admits the link into `conn`.
    Welcome {
        /// Protocol version the server speaks.
        version: u8,
        /// The connection the link now belongs to.
        conn: ConnectionId,
        /// Index of this link within the connection (for logs).
        link: u32,
    },
    /// The server refuses the link; it closes after this frame.
    Refuse {
        /// Why.
        code: RefuseCode,
    },
    /// A chunk of the connection's byte stream.
    Data {
        /// Byte offset of the first payload byte in the sender's stream.
        seq: u64,
        /// [`data_flags`].
        flags: u8,
        /// The bytes.
        payload: Bytes,
    },
    /// Receiver state, sent on the link whose data it acknowledges.
    Ack {
        /// Number of `Data` frames received on this link so far.
        link_frames: u64,
        /// Every byte below this offset was received.
        cumulative: u64,
        /// The sender may send bytes below this offset.
        window_end: u64,
    },
    /// Keepalive probe; the peer answers `Pong` with the same token on the same link.
    Ping {
        /// Opaque.
        token: u64,
    },
    /// Answer to `Ping`.
    Pong {
        /// The ping's token.
        token: u64,
    },
    /// Abortive close of the whole connection.
    Reset {
        /// Application-defined reason.
        code: u32,
    },
    /// The sender will send no more data on this link (graceful link leave).
    LinkClose,
}

const T_HELLO: u8 = 0x10;
const T_WELCOME: u8 = 0x11;
const T_REFUSE: u8 = 0x12;
const T_DATA: u8 = 0x01;
const T_ACK: u8 = 0x02;
const T_PING: u8 = 0x04;
const T_PONG: u8 = 0x05;
const T_RESET: u8 = 0x06;
const T_LINK_CLOSE: u8 = 0x07;

/// Why a byte sequence is not a valid frame. The link it arrived on is dropped.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum FrameError {
    /// Unknown frame type byte.
    #[error("unknown frame type 0x{0:02x}")]
    UnknownType(u8),
    /// A `Hello` without the magic: not a braid peer.
    #[error("bad magic: not a braid peer")]
    BadMagic,
    /// A chunk larger than [`MAX_CHUNK`].
    #[error("chunk of {0} bytes exceeds the 1 MiB limit")]
    ChunkTooLarge(u32),
    /// Unknown flag bits.
    #[error("unknown flags 0x{0:02x}")]
    BadFlags(u8),
    /// `seq + len` overflows.
    #[error("chunk offset overflows")]
    Overflow,
    /// The checksum does not match (only reported by [`Frame::decode`] callers that check it).
    #[error("checksum mismatch")]
    Checksum,
}

impl Frame {
    /// Appends the encoding of this frame to `out`.
    pub fn encode(&self, out: &mut impl BufMut) {
        match self {
            Frame::Hello {
                version,
                flags,
                conn,
            } => {
                out.put_u8(T_HELLO);
                out.put_slice(&MAGIC);
                out.put_u8(*version);
                out.put_u8(*flags);
                out.put_slice(&conn.0);
            }
            Frame::Welcome {
                version,
                conn,
                link,
            } => {
                out.put_u8(T_WELCOME);
                out.put_u8(*version);
                out.put_slice(&conn.0);
                out.put_u32(*link);
            }
            Frame::Refuse { code } => {
                out.put_u8(T_REFUSE);
                out.put_u8(*code as u8);
            }
            Frame::Data {
                seq,
                flags,
                payload,
            } => {
                encode_data_header(out, *seq, *flags, payload);
                out.put_slice(payload);
            }
            Frame::Ack {
                link_frames,
                cumulative,
                window_end,
            } => {
                out.put_u8(T_ACK);
                out.put_u64(*link_frames);
                out.put_u64(*cumulative);
                out.put_u64(*window_end);
            }
            Frame::Ping { token } => {
                out.put_u8(T_PING);
                out.put_u64(*token);
            }
            Frame::Pong { token } => {
                out.put_u8(T_PONG);
                out.put_u64(*token);
            }
            Frame::Reset { code } => {
                out.put_u8(T_RESET);
                out.put_u32(*code);
            }
            Frame::LinkClose => out.put_u8(T_LINK_CLOSE),
        }
    }

    /// Decodes one frame from the front of `buf`, splitting it off (payloads are zero-copy).
    ///
    /// Returns `Ok(None)` when `buf` holds only part of a frame (nothing is consumed then).
    /// A `Data` frame with the CRC flag is verified here: a mismatch consumes the frame and
    /// returns [`DecodeOutcome::Corrupt`] so the receiver can ask for it again.
    pub fn decode(buf: &mut BytesMut) -> Result<Option<DecodeOutcome>, FrameError> {
        let Some(need) = frame_len(buf)? else {
            return Ok(None);
        };
        let ty = buf[0];
        if buf.len() < need {
            return Ok(None);
        }
        let mut f = buf.split_to(need);
        f.advance(1);
        let frame = match ty {
            T_HELLO => {
                if f[..5] != MAGIC {
                    return Err(FrameError::BadMagic);
                }
                f.advance(5);
                let version = f.get_u8();
                let flags = f.get_u8();
                let mut conn = [0u8; 16];
                f.copy_to_slice(&mut conn);
                Frame::Hello {
                    version,
                    flags,
                    conn: ConnectionId(conn),
                }
            }
            T_WELCOME => {
                let version = f.get_u8();
                let mut conn = [0u8; 16];
                f.copy_to_slice(&mut conn);
                Frame::Welcome {
                    version,
                    conn: ConnectionId(conn),
                    link: f.get_u32(),
                }
            }
            T_REFUSE => Frame::Refuse {
                code: RefuseCode::from_u8(f.get_u8()),
            },
            T_DATA => {
                let flags = f.get_u8();
                let seq = f.get_u64();
                let _len = f.get_u32();
                if flags & data_flags::CRC != 0 {
                    let want = f.get_u32();
                    let got = data_crc(seq, flags, &f);
                    if want != got {
                        return Ok(Some(DecodeOutcome::Corrupt {
                            seq,
                            len: f.len() as u32,
                        }));
                    }
                }
                Frame::Data {
                    seq,
                    flags,
                    payload: f.freeze(),
                }
            }
            T_ACK => Frame::Ack {
                link_frames: f.get_u64(),
                cumulative: f.get_u64(),
                window_end: f.get_u64(),
            },
            T_PING => Frame::Ping { token: f.get_u64() },
            T_PONG => Frame::Pong { token: f.get_u64() },
            T_RESET => Frame::Reset { code: f.get_u32() },
            T_LINK_CLOSE => Frame::LinkClose,
            _ => unreachable!("type checked above"),
        };
        Ok(Some(DecodeOutcome::Frame(frame)))
    }
}

/// The length of the frame at the front of `buf`, once its header is complete (`Ok(None)`
/// before that). Checks what the header alone can show (type, flags, chunk size).
pub fn frame_len(buf: &[u8]) -> Result<Option<usize>, FrameError> {
    let Some(&ty) = buf.first() else {
        return Ok(None);
    };
    let need = match ty {
        T_HELLO => 1 + 5 + 1 + 1 + 16,
        T_WELCOME => 1 + 1 + 16 + 4,
        T_REFUSE => 2,
        T_DATA => {
            if buf.len() < DATA_HEADER_LEN {
                return Ok(None);
            }
            let flags = buf[1];
            if flags & !(data_flags::CRC | data_flags::FIN) != 0 {
                return Err(FrameError::BadFlags(flags));
            }
            let len = u32::from_be_bytes([buf[10], buf[11], buf[12], buf[13]]);
            if len as usize > MAX_CHUNK {
                return Err(FrameError::ChunkTooLarge(len));
            }
            let seq = u64::from_be_bytes(buf[2..10].try_into().expect("8 bytes"));
            if seq.checked_add(len as u64).is_none() {
                return Err(FrameError::Overflow);
            }
            let hdr = if flags & data_flags::CRC != 0 {
                DATA_HEADER_CRC_LEN
            } else {
                DATA_HEADER_LEN
            };
            hdr + len as usize
        }
        T_ACK => 1 + 24,
        T_PING | T_PONG => 9,
        T_RESET => 5,
        T_LINK_CLOSE => 1,
        other => return Err(FrameError::UnknownType(other)),
    };
    Ok(Some(need))
}

/// The length of the longest prefix of `buf` made of whole frames, so a reader can hand the
/// engine complete frames only (and the engine can take its buffer without copying; see
/// `Connection::handle_input_buf`). Malformed input counts as whole: the engine reports it.
pub fn whole_frames_len(buf: &[u8]) -> usize {
    let mut at = 0;
    while at < buf.len() {
        match frame_len(&buf[at..]) {
            Ok(Some(n)) if at + n <= buf.len() => at += n,
            Ok(_) => return at,
            Err(_) => return buf.len(),
        }
    }
    at
}

/// What [`Frame::decode`] found.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum DecodeOutcome {
    /// A valid frame.
    Frame(Frame),
    /// A checksummed `Data` frame whose checksum did not match; it was consumed.
    Corrupt {
        /// The offset the (possibly corrupt) header claims.
        seq: u64,
        /// The payload length.
        len: u32,
    },
}

/// CRC32C over the data header fields and the payload.
pub fn data_crc(seq: u64, flags: u8, payload: &[u8]) -> u32 {
    let mut hdr = [0u8; 13];
    hdr[0] = flags;
    hdr[1..9].copy_from_slice(&seq.to_be_bytes());
    hdr[9..13].copy_from_slice(&(payload.len() as u32).to_be_bytes());
    // crc-fast folds with carry-less multiplication (VPCLMULQDQ/PMULL) where the CPU has it:
    // 2-3x the crc32-instruction loop, and this runs over every byte twice.
    let mut d = crc_fast::Digest::new(crc_fast::CrcAlgorithm::Crc32Iscsi);
    d.update(&hdr);
    d.update(payload);
    d.finalize() as u32
}

/// Appends a `Data` header for `payload` (the payload itself is written by the caller, so it
/// can go out with a vectored write). A CRC is computed when `flags` has [`data_flags::CRC`].
pub fn encode_data_header(out: &mut impl BufMut, seq: u64, flags: u8, payload: &[u8]) {
    out.put_u8(T_DATA);
    out.put_u8(flags);
    out.put_u64(seq);
    out.put_u32(payload.len() as u32);
    if flags & data_flags::CRC != 0 {
        out.put_u32(data_crc(seq, flags, payload));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn data_crc_is_crc32c_of_header_then_payload() {
        // The CRC-32C check value (RFC 3720 Castagnoli), and the header + payload layout the
        // spec gives, so a change of CRC library cannot change the wire.
        let mut d = crc_fast::Digest::new(crc_fast::CrcAlgorithm::Crc32Iscsi);
        d.update(b"123456789");
        assert_eq!(d.finalize(), 0xE306_9283);
        assert_eq!(data_crc(0x0102_0304_0506_0708, 0x03, b"abc"), 0xCAAC_5BD4);
    }
    use proptest::prelude::*;

    fn arb_frame() -> impl Strategy<Value = Frame> {
        prop_oneof![
            (any::<u8>(), any::<u8>(), any::<[u8; 16]>()).prop_map(|(v, f, c)| Frame::Hello {
                version: v,
                flags: f,
                conn: ConnectionId(c)
            }),
            (any::<u8>(), any::<[u8; 16]>(), any::<u32>()).prop_map(|(v, c, l)| Frame::Welcome {
                version: v,
                conn: ConnectionId(c),
                link: l
            }),
            (
                0u64..u64::MAX / 2,
                0u8..4,
                proptest::collection::vec(any::<u8>(), 0..3000)
            )
                .prop_map(|(s, f, p)| Frame::Data {
                    seq: s,
                    flags: f,
                    payload: Bytes::from(p)
                }),
            (any::<u64>(), any::<u64>(), any::<u64>()).prop_map(|(a, b, c)| Frame::Ack {
                link_frames: a,
                cumulative: b,
                window_end: c
            }),
            any::<u64>().prop_map(|t| Frame::Ping { token: t }),
            any::<u64>().prop_map(|t| Frame::Pong { token: t }),
            any::<u32>().prop_map(|c| Frame::Reset { code: c }),
            Just(Frame::LinkClose),
        ]
    }

    proptest! {
        #[test]
        fn roundtrip(frames in proptest::collection::vec(arb_frame(), 1..8), split in 0usize..64) {
            let mut wire = BytesMut::new();
            for f in &frames {
                f.encode(&mut wire);
            }
            // Feed in two parts to exercise partial frames.
            let split = split.min(wire.len());
            let rest = wire.split_off(split);
            let mut buf = wire;
            let mut out = Vec::new();
            while let Some(DecodeOutcome::Frame(f)) = Frame::decode(&mut buf).unwrap() {
                out.push(f);
            }
            buf.extend_from_slice(&rest);
            while let Some(o) = Frame::decode(&mut buf).unwrap() {
                match o {
                    DecodeOutcome::Frame(f) => out.push(f),
                    DecodeOutcome::Corrupt { .. } => panic!("corrupt"),
                }
            }
            prop_assert!(buf.is_empty());
            prop_assert_eq!(out, frames);
        }

        #[test]
        fn garbage_never_panics(bytes in proptest::collection::vec(any::<u8>(), 0..200)) {
            let mut buf = BytesMut::from(&bytes[..]);
            for _ in 0..200 {
                match Frame::decode(&mut buf) {
                    Ok(Some(_)) => continue,
                    _ => break,
                }
            }
        }
    }

    #[test]
    fn corrupt_chunk_is_reported() {
        let mut wire = BytesMut::new();
        Frame::Data {
            seq: 7,
            flags: data_flags::CRC,
            payload: Bytes::from_static(b"hello"),
        }
        .encode(&mut wire);
        let n = wire.len();
        wire[n - 1] ^= 1;
        assert_eq!(
            Frame::decode(&mut wire).unwrap(),
            Some(DecodeOutcome::Corrupt { seq: 7, len: 5 })
        );
        assert!(wire.is_empty());
    }

    #[test]
    fn oversized_chunk_is_rejected_before_buffering() {
        let mut wire = BytesMut::new();
        wire.put_u8(T_DATA);
        wire.put_u8(0);
        wire.put_u64(0);
        wire.put_u32(MAX_CHUNK as u32 + 1);
        assert_eq!(
            Frame::decode(&mut wire),
            Err(FrameError::ChunkTooLarge(MAX_CHUNK as u32 + 1))
        );
    }

    #[test]
    fn garbage_hello_is_bad_magic() {
        let mut wire = BytesMut::from(&b"\x10GET / HTTP/1.1\r\nHost: x\r\n\r\n"[..]);
        assert_eq!(Frame::decode(&mut wire), Err(FrameError::BadMagic));
    }
}
