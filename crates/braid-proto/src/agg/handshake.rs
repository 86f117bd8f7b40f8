//! The link handshake: how a link says which connection it belongs to before it carries data.
//!
//! The side that plays client (independent of who dialled the socket) sends `Hello` with the
//! protocol version and the connection id to join ([`ConnectionId::NEW`] for a new
//! connection). The server answers `Welcome` (the link is admitted; data may flow at once) or
//! `Refuse` (then closes). Authentication is the caller's: the runtime runs its encrypted,
//! key-proving handshake *before* this one, so a `Hello` is only ever read from a peer that
//! holds the key. A link carries no data until the server has sent `Welcome` and the client
//! has read it.
//!
//! ```
//! use braid_proto::agg::handshake::{client_hello, read_hello, read_welcome, welcome, Hello};
//! use braid_proto::agg::ConnectionId;
//! use bytes::BytesMut;
//!
//! let mut wire = BytesMut::new();
//! client_hello(ConnectionId::NEW, false, &mut wire);
//! let hello = read_hello(&mut wire).unwrap().unwrap();
//! assert!(hello.conn.is_new());
//! let id = ConnectionId([7; 16]);
//! welcome(id, 0, &mut wire);
//! assert_eq!(read_welcome(&mut wire).unwrap(), Some((id, 0)));
//! ```

use bytes::BytesMut;

use super::frame::{self, ConnectionId, DecodeOutcome, Frame, FrameError, RefuseCode, VERSION};

/// What a client asked for in its `Hello`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Hello {
    /// The connection to join, or [`ConnectionId::NEW`].
    pub conn: ConnectionId,
    /// The client checksums its chunks.
    pub crc: bool,
}

/// Why a handshake failed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum HandshakeError {
    /// The bytes are not a braid frame.
    #[error("malformed handshake: {0}")]
    Malformed(#[from] FrameError),
    /// A valid frame, but not the one expected at this point.
    #[error("unexpected frame in handshake: {0}")]
    Unexpected(&'static str),
    /// The peer speaks another protocol version.
    #[error("unsupported protocol version {0} (this side speaks {VERSION})")]
    Version(u8),
    /// The server refused the link.
    #[error("refused by server: {0:?}")]
    Refused(RefuseCode),
}

/// Appends a `Hello` for `conn`.
pub fn client_hello(conn: ConnectionId, crc: bool, out: &mut BytesMut) {
    let flags = if crc { frame::hello_flags::CRC } else { 0 };
    Frame::Hello {
        version: VERSION,
        flags,
        conn,
    }
    .encode(out);
}

/// Server side: reads the `Hello` from the front of `buf` (`Ok(None)`: need more bytes).
/// Bytes after it stay in `buf`.
pub fn read_hello(buf: &mut BytesMut) -> Result<Option<Hello>, HandshakeError> {
    match Frame::decode(buf)? {
        None => Ok(None),
        Some(DecodeOutcome::Frame(Frame::Hello {
            version,
            flags,
            conn,
        })) => {
            if version != VERSION {
                return Err(HandshakeError::Version(version));
            }
            Ok(Some(Hello {
                conn,
                crc: flags & frame::hello_flags::CRC != 0,
            }))
        }
        Some(_) => Err(HandshakeError::Unexpected("expected Hello")),
    }
}

/// Appends the server's `Welcome`.
pub fn welcome(conn: ConnectionId, link: u32, out: &mut BytesMut) {
    Frame::Welcome {
        version: VERSION,
        conn,
        link,
    }
    .encode(out);
}

/// Appends the server's `Refuse`.
pub fn refuse(code: RefuseCode, out: &mut BytesMut) {
    Frame::Refuse { code }.encode(out);
}

/// Client side: reads the server's answer from the front of `buf` (`Ok(None)`: need more
/// bytes). On `Welcome` returns the connection id and link index; bytes after it (the first
/// engine frames) stay in `buf` and go to the engine.
pub fn read_welcome(buf: &mut BytesMut) -> Result<Option<(ConnectionId, u32)>, HandshakeError> {
    match Frame::decode(buf)? {
        None => Ok(None),
        Some(DecodeOutcome::Frame(Frame::Welcome {
            version,
            conn,
            link,
        })) => {
            if version != VERSION {
                return Err(HandshakeError::Version(version));
            }
            Ok(Some((conn, link)))
        }
        Some(DecodeOutcome::Frame(Frame::Refuse { code })) => Err(HandshakeError::Refused(code)),
        Some(_) => Err(HandshakeError::Unexpected("expected Welcome or Refuse")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn refuse_is_an_error() {
        let mut b = BytesMut::new();
        refuse(RefuseCode::Limit, &mut b);
        assert_eq!(
            read_welcome(&mut b),
            Err(HandshakeError::Refused(RefuseCode::Limit))
        );
    }

    #[test]
    fn wrong_version_is_rejected() {
        let mut b = BytesMut::new();
        Frame::Hello {
            version: 9,
            flags: 0,
            conn: ConnectionId::NEW,
        }
        .encode(&mut b);
        assert_eq!(read_hello(&mut b), Err(HandshakeError::Version(9)));
    }

    #[test]
    fn partial_hello_waits() {
        let mut full = BytesMut::new();
        client_hello(ConnectionId([1; 16]), true, &mut full);
        let mut b = BytesMut::from(&full[..10]);
        assert_eq!(read_hello(&mut b), Ok(None));
        b.extend_from_slice(&full[10..]);
        assert_eq!(
            read_hello(&mut b),
            Ok(Some(Hello {
                conn: ConnectionId([1; 16]),
                crc: true
            }))
        );
    }
}
