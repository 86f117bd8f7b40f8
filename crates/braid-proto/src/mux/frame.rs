//! The yamux frame header: 12 bytes, big-endian.
//!
//! ```text
//!  0        1        2                 4                                 8                                12
//! +--------+--------+--------+--------+--------+--------+--------+--------+--------+--------+--------+--------+
//! |version |  type  |      flags      |             stream id             |              length               |
//! +--------+--------+--------+--------+--------+--------+--------+--------+--------+--------+--------+--------+
//! ```
//!
//! `length` is the payload size for [`FrameType::Data`], the window delta for
//! [`FrameType::WindowUpdate`], the opaque value for [`FrameType::Ping`] and the error code for
//! [`FrameType::GoAway`]; only Data frames carry a payload.
//!
//! Decoding never panics: [`Header::decode`] takes exactly 12 bytes and returns a typed header or
//! a [`FrameError`].

use thiserror::Error;

/// Size of an encoded header.
pub const HEADER_LEN: usize = 12;

/// The only protocol version.
pub const VERSION: u8 = 0;

/// A stream identifier. Client-opened streams are odd, server-opened even, 0 is the session.
pub type StreamId = u32;

/// Frame types.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum FrameType {
    /// Stream data; `length` bytes of payload follow.
    Data,
    /// Grants the sender `length` more bytes of stream window.
    WindowUpdate,
    /// Liveness and RTT probe; `length` is an opaque value echoed back with ACK.
    Ping,
    /// Session termination; `length` is a [`GoAwayCode`].
    GoAway,
}

impl FrameType {
    fn from_u8(b: u8) -> Option<Self> {
        Some(match b {
            0 => FrameType::Data,
            1 => FrameType::WindowUpdate,
            2 => FrameType::Ping,
            3 => FrameType::GoAway,
            _ => return None,
        })
    }

    fn as_u8(self) -> u8 {
        match self {
            FrameType::Data => 0,
            FrameType::WindowUpdate => 1,
            FrameType::Ping => 2,
            FrameType::GoAway => 3,
        }
    }
}

/// Header flags (a bit set).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub struct Flags(pub u16);

impl Flags {
    /// No flag.
    pub const NONE: Flags = Flags(0);
    /// Opens a stream (or asks for a ping answer).
    pub const SYN: Flags = Flags(1);
    /// Acknowledges a stream (or answers a ping).
    pub const ACK: Flags = Flags(2);
    /// Half-closes the sender's direction of the stream.
    pub const FIN: Flags = Flags(4);
    /// Resets the stream at once.
    pub const RST: Flags = Flags(8);

    /// Whether all flags of `other` are set.
    pub const fn contains(self, other: Flags) -> bool {
        self.0 & other.0 == other.0
    }
}

impl std::ops::BitOr for Flags {
    type Output = Flags;
    fn bitor(self, rhs: Flags) -> Flags {
        Flags(self.0 | rhs.0)
    }
}

impl std::ops::BitOrAssign for Flags {
    fn bitor_assign(&mut self, rhs: Flags) {
        self.0 |= rhs.0;
    }
}

/// GoAway codes.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum GoAwayCode {
    /// Normal termination: the sender opens no more streams and accepts none; existing streams
    /// may finish (drain).
    Normal,
    /// The sender saw a protocol error.
    ProtocolError,
    /// The sender had an internal error.
    InternalError,
    /// A code this implementation does not know.
    Other(u32),
}

impl GoAwayCode {
    /// The wire value.
    pub fn as_u32(self) -> u32 {
        match self {
            GoAwayCode::Normal => 0,
            GoAwayCode::ProtocolError => 1,
            GoAwayCode::InternalError => 2,
            GoAwayCode::Other(c) => c,
        }
    }

    /// From the wire value.
    pub fn from_u32(c: u32) -> Self {
        match c {
            0 => GoAwayCode::Normal,
            1 => GoAwayCode::ProtocolError,
            2 => GoAwayCode::InternalError,
            c => GoAwayCode::Other(c),
        }
    }
}

/// A decoded frame header.
///
/// ```
/// use braid_proto::mux::frame::{Flags, FrameType, Header};
/// let h = Header { ty: FrameType::Data, flags: Flags::SYN, stream_id: 1, length: 5 };
/// let bytes = h.encode();
/// assert_eq!(bytes, [0, 0, 0, 1, 0, 0, 0, 1, 0, 0, 0, 5]);
/// assert_eq!(Header::decode(&bytes), Ok(h));
/// ```
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct Header {
    /// Frame type.
    pub ty: FrameType,
    /// Flags.
    pub flags: Flags,
    /// Stream id (0 for Ping and GoAway).
    pub stream_id: StreamId,
    /// Payload length, window delta, ping value or go-away code, depending on `ty`.
    pub length: u32,
}

/// A header that cannot be decoded.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Error)]
#[non_exhaustive]
pub enum FrameError {
    /// The version byte is not 0.
    #[error("unsupported yamux version {0}")]
    Version(u8),
    /// The type byte is not one of the four types.
    #[error("unknown frame type {0}")]
    Type(u8),
}

impl Header {
    /// A Data header.
    pub fn data(stream_id: StreamId, flags: Flags, len: u32) -> Self {
        Header {
            ty: FrameType::Data,
            flags,
            stream_id,
            length: len,
        }
    }

    /// A WindowUpdate header.
    pub fn window_update(stream_id: StreamId, flags: Flags, delta: u32) -> Self {
        Header {
            ty: FrameType::WindowUpdate,
            flags,
            stream_id,
            length: delta,
        }
    }

    /// A Ping header.
    pub fn ping(flags: Flags, opaque: u32) -> Self {
        Header {
            ty: FrameType::Ping,
            flags,
            stream_id: 0,
            length: opaque,
        }
    }

    /// A GoAway header.
    pub fn go_away(code: GoAwayCode) -> Self {
        Header {
            ty: FrameType::GoAway,
            flags: Flags::NONE,
            stream_id: 0,
            length: code.as_u32(),
        }
    }

    /// Decodes a header. Never panics.
    ///
    /// # Errors
    /// [`FrameError`] on a version other than 0 or an unknown type.
    pub fn decode(b: &[u8; HEADER_LEN]) -> Result<Header, FrameError> {
        if b[0] != VERSION {
            return Err(FrameError::Version(b[0]));
        }
        let ty = FrameType::from_u8(b[1]).ok_or(FrameError::Type(b[1]))?;
        let flags = Flags(u16::from_be_bytes([b[2], b[3]]));
        let stream_id = u32::from_be_bytes([b[4], b[5], b[6], b[7]]);
        let length = u32::from_be_bytes([b[8], b[9], b[10], b[11]]);
        Ok(Header {
            ty,
            flags,
            stream_id,
            length,
        })
    }

    /// Encodes the header.
    pub fn encode(&self) -> [u8; HEADER_LEN] {
        let mut b = [0u8; HEADER_LEN];
        b[0] = VERSION;
        b[1] = self.ty.as_u8();
        b[2..4].copy_from_slice(&self.flags.0.to_be_bytes());
        b[4..8].copy_from_slice(&self.stream_id.to_be_bytes());
        b[8..12].copy_from_slice(&self.length.to_be_bytes());
        b
    }

    /// The payload length that follows this header on the wire (only Data has one).
    pub fn payload_len(&self) -> u32 {
        if self.ty == FrameType::Data {
            self.length
        } else {
            0
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn any_type() -> impl Strategy<Value = FrameType> {
        prop_oneof![
            Just(FrameType::Data),
            Just(FrameType::WindowUpdate),
            Just(FrameType::Ping),
            Just(FrameType::GoAway)
        ]
    }

    proptest! {
        #[test]
        fn header_round_trips(ty in any_type(), flags: u16, stream_id: u32, length: u32) {
            let h = Header { ty, flags: Flags(flags), stream_id, length };
            prop_assert_eq!(Header::decode(&h.encode()), Ok(h));
        }

        #[test]
        fn decode_never_panics_and_reencodes(bytes: [u8; 12]) {
            if let Ok(h) = Header::decode(&bytes) {
                prop_assert_eq!(h.encode(), bytes);
            }
        }

        #[test]
        fn go_away_code_round_trips(c: u32) {
            prop_assert_eq!(GoAwayCode::from_u32(c).as_u32(), c);
        }
    }

    #[test]
    fn rejects_bad_version_and_type() {
        let mut b = Header::ping(Flags::SYN, 7).encode();
        b[0] = 1;
        assert_eq!(Header::decode(&b), Err(FrameError::Version(1)));
        b[0] = 0;
        b[1] = 4;
        assert_eq!(Header::decode(&b), Err(FrameError::Type(4)));
    }
}
