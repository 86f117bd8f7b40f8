//! Applications over streams: the first bytes of an application stream: the opener's [`Request`] naming the service, the
//! acceptor's [`Reply`] with a [`Status`]. Wire format in `docs/PROTOCOL.md`, "Applications
//! over streams".
//!
//! ```text
//!   Request  = version:u8 (1) | name_len:u8 (1..=32) | name | args_len:u16 BE (..=1024) | args
//!   Reply    = status:u8 | msg_len:u16 BE (..=1024) | message (UTF-8)
//! ```
//!
//! Sans-I/O: [`Request::decode`] and [`Reply::decode`] take the bytes received so far and
//! either return the value and its length or say how many bytes they need in all
//! ([`Decoded::Need`]), so a reader can fetch exactly the header and nothing of what follows.
//! Decoding never panics: every length is checked before it is used.

/// The header version this implementation speaks.
pub const VERSION: u8 = 1;
/// Longest service name, in bytes.
pub const MAX_NAME: usize = 32;
/// Longest service argument block, in bytes.
pub const MAX_ARGS: usize = 1024;
/// Longest reply message, in bytes.
pub const MAX_MESSAGE: usize = 1024;

/// Why a header could not be read.
///
/// ```
/// use braid_proto::service::{HeaderError, Request};
/// assert!(matches!(Request::new("no spaces", b""), Err(HeaderError::BadName)));
/// ```
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum HeaderError {
    /// The peer speaks a header version we do not.
    #[error("unsupported stream header version {0} (we speak {VERSION})")]
    Version(u8),
    /// The service name is empty, too long or not `[a-z0-9._-]`.
    #[error("invalid service name")]
    BadName,
    /// A length field is over its limit.
    #[error("{0} field of {1} bytes is over the limit")]
    TooLong(&'static str, usize),
    /// The reply message is not UTF-8.
    #[error("reply message is not UTF-8")]
    BadMessage,
}

/// The outcome of decoding from the bytes received so far.
///
/// ```
/// use braid_proto::service::{Decoded, Request};
/// assert_eq!(Request::decode(&[1, 7, b'f']).unwrap(), Decoded::Need(11));
/// ```
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Decoded<T> {
    /// A whole value and the number of bytes it took.
    Done(T, usize),
    /// At least this many bytes in all are needed to go on.
    Need(usize),
}

/// A service name's characters: lowercase ASCII letters, digits, `.`, `_`, `-`.
fn valid_name(name: &[u8]) -> bool {
    !name.is_empty()
        && name.len() <= MAX_NAME
        && name
            .iter()
            .all(|&c| c.is_ascii_lowercase() || c.is_ascii_digit() || b"._-".contains(&c))
}

/// What the opener of a stream asks for: a service by name, with optional arguments.
///
/// ```
/// use braid_proto::service::Request;
/// let req = Request::new("forward", b"")?;
/// assert_eq!(req.encode(), [1, 7, b'f', b'o', b'r', b'w', b'a', b'r', b'd', 0, 0]);
/// # Ok::<(), braid_proto::service::HeaderError>(())
/// ```
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Request {
    service: String,
    args: Vec<u8>,
}

impl Request {
    /// A request for `service` with `args` (service-defined, may be empty).
    ///
    /// # Errors
    /// [`HeaderError::BadName`] or [`HeaderError::TooLong`] for arguments over [`MAX_ARGS`].
    ///
    /// ```
    /// let req = braid_proto::service::Request::new("speedtest", b"10s")?;
    /// assert_eq!(req.service(), "speedtest");
    /// # Ok::<(), braid_proto::service::HeaderError>(())
    /// ```
    pub fn new(service: &str, args: &[u8]) -> Result<Self, HeaderError> {
        if !valid_name(service.as_bytes()) {
            return Err(HeaderError::BadName);
        }
        if args.len() > MAX_ARGS {
            return Err(HeaderError::TooLong("args", args.len()));
        }
        Ok(Request {
            service: service.to_string(),
            args: args.to_vec(),
        })
    }

    /// The service's name.
    ///
    /// ```
    /// let req = braid_proto::service::Request::new("forward", b"")?;
    /// assert_eq!(req.service(), "forward");
    /// # Ok::<(), braid_proto::service::HeaderError>(())
    /// ```
    pub fn service(&self) -> &str {
        &self.service
    }

    /// The arguments the opener passed.
    ///
    /// ```
    /// let req = braid_proto::service::Request::new("file", b"name.iso")?;
    /// assert_eq!(req.args(), b"name.iso");
    /// # Ok::<(), braid_proto::service::HeaderError>(())
    /// ```
    pub fn args(&self) -> &[u8] {
        &self.args
    }

    /// The request's bytes on the wire.
    ///
    /// ```
    /// let bytes = braid_proto::service::Request::new("x", b"")?.encode();
    /// assert_eq!(bytes, [1, 1, b'x', 0, 0]);
    /// # Ok::<(), braid_proto::service::HeaderError>(())
    /// ```
    pub fn encode(&self) -> Vec<u8> {
        let mut b = Vec::with_capacity(4 + self.service.len() + self.args.len());
        b.push(VERSION);
        b.push(self.service.len() as u8);
        b.extend_from_slice(self.service.as_bytes());
        b.extend_from_slice(&(self.args.len() as u16).to_be_bytes());
        b.extend_from_slice(&self.args);
        b
    }

    /// Decodes a request from the start of `buf` (the bytes received so far).
    ///
    /// # Errors
    /// A wrong version, a bad name or a length over its limit.
    ///
    /// ```
    /// use braid_proto::service::{Decoded, Request};
    /// let wire = Request::new("forward", b"")?.encode();
    /// let Decoded::Done(req, used) = Request::decode(&wire)? else { panic!() };
    /// assert_eq!((req.service(), used), ("forward", wire.len()));
    /// # Ok::<(), braid_proto::service::HeaderError>(())
    /// ```
    pub fn decode(buf: &[u8]) -> Result<Decoded<Self>, HeaderError> {
        let Some(&version) = buf.first() else {
            return Ok(Decoded::Need(1));
        };
        if version != VERSION {
            return Err(HeaderError::Version(version));
        }
        let Some(&n) = buf.get(1) else {
            return Ok(Decoded::Need(2));
        };
        let n = usize::from(n);
        if n == 0 || n > MAX_NAME {
            return Err(HeaderError::BadName);
        }
        let Some(len) = buf.get(2 + n..4 + n) else {
            return Ok(Decoded::Need(4 + n));
        };
        let name = &buf[2..2 + n];
        if !valid_name(name) {
            return Err(HeaderError::BadName);
        }
        let args_len = usize::from(u16::from_be_bytes([len[0], len[1]]));
        if args_len > MAX_ARGS {
            return Err(HeaderError::TooLong("args", args_len));
        }
        let total = 4 + n + args_len;
        let Some(args) = buf.get(4 + n..total) else {
            return Ok(Decoded::Need(total));
        };
        let service = String::from_utf8(name.to_vec()).map_err(|_| HeaderError::BadName)?;
        Ok(Decoded::Done(
            Request {
                service,
                args: args.to_vec(),
            },
            total,
        ))
    }
}

/// The acceptor's answer: a status code. Codes other than [`Status::OK`] end the stream.
///
/// ```
/// use braid_proto::service::Status;
/// assert!(Status::OK.is_ok());
/// assert_eq!(Status::UNKNOWN_SERVICE.to_string(), "unknown service (1)");
/// ```
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct Status(pub u8);

impl Status {
    /// Accepted: the service's own bytes follow.
    pub const OK: Status = Status(0);
    /// No service of that name on this server.
    pub const UNKNOWN_SERVICE: Status = Status(1);
    /// The request header was malformed or of an unsupported version.
    pub const BAD_REQUEST: Status = Status(2);
    /// The service exists but cannot serve this request now (e.g. its target is unreachable).
    pub const UNAVAILABLE: Status = Status(3);
    /// The service refuses these arguments or this peer.
    pub const REFUSED: Status = Status(4);

    /// Whether this is [`Status::OK`].
    ///
    /// ```
    /// assert!(!braid_proto::service::Status::REFUSED.is_ok());
    /// ```
    pub fn is_ok(self) -> bool {
        self == Status::OK
    }
}

impl std::fmt::Display for Status {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let name = match *self {
            Status::OK => "ok",
            Status::UNKNOWN_SERVICE => "unknown service",
            Status::BAD_REQUEST => "bad request",
            Status::UNAVAILABLE => "unavailable",
            Status::REFUSED => "refused",
            _ => "error",
        };
        write!(f, "{name} ({})", self.0)
    }
}

/// The acceptor's reply to a [`Request`].
///
/// ```
/// use braid_proto::service::{Reply, Status};
/// let r = Reply::new(Status::UNKNOWN_SERVICE, "no service \"file\"");
/// assert_eq!(&r.encode()[..3], &[1, 0, 17]);
/// ```
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Reply {
    /// The outcome.
    pub status: Status,
    /// A human-readable explanation (empty when accepted); cut to [`MAX_MESSAGE`] bytes.
    pub message: String,
}

impl Reply {
    /// A reply; `message` is cut to [`MAX_MESSAGE`] bytes at a character boundary.
    ///
    /// ```
    /// let ok = braid_proto::service::Reply::new(braid_proto::service::Status::OK, "");
    /// assert_eq!(ok.encode(), [0, 0, 0]);
    /// ```
    pub fn new(status: Status, message: &str) -> Self {
        let mut end = message.len().min(MAX_MESSAGE);
        while !message.is_char_boundary(end) {
            end -= 1;
        }
        Reply {
            status,
            message: message[..end].to_string(),
        }
    }

    /// The reply's bytes on the wire.
    ///
    /// ```
    /// let r = braid_proto::service::Reply::new(braid_proto::service::Status::REFUSED, "no");
    /// assert_eq!(r.encode(), [4, 0, 2, b'n', b'o']);
    /// ```
    pub fn encode(&self) -> Vec<u8> {
        let mut b = Vec::with_capacity(3 + self.message.len());
        b.push(self.status.0);
        b.extend_from_slice(&(self.message.len() as u16).to_be_bytes());
        b.extend_from_slice(self.message.as_bytes());
        b
    }

    /// Decodes a reply from the start of `buf` (the bytes received so far).
    ///
    /// # Errors
    /// A message over [`MAX_MESSAGE`] or not UTF-8.
    ///
    /// ```
    /// use braid_proto::service::{Decoded, Reply, Status};
    /// let Decoded::Done(r, 3) = Reply::decode(&[0, 0, 0, 42])? else { panic!() };
    /// assert_eq!(r.status, Status::OK);
    /// # Ok::<(), braid_proto::service::HeaderError>(())
    /// ```
    pub fn decode(buf: &[u8]) -> Result<Decoded<Self>, HeaderError> {
        let Some(head) = buf.get(..3) else {
            return Ok(Decoded::Need(3));
        };
        let n = usize::from(u16::from_be_bytes([head[1], head[2]]));
        if n > MAX_MESSAGE {
            return Err(HeaderError::TooLong("message", n));
        }
        let Some(msg) = buf.get(3..3 + n) else {
            return Ok(Decoded::Need(3 + n));
        };
        let message = String::from_utf8(msg.to_vec()).map_err(|_| HeaderError::BadMessage)?;
        Ok(Decoded::Done(
            Reply {
                status: Status(head[0]),
                message,
            },
            3 + n,
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn decode_all<T>(
        f: fn(&[u8]) -> Result<Decoded<T>, HeaderError>,
        wire: &[u8],
    ) -> Result<T, HeaderError> {
        // Fed one byte more at a time, as a reader would: Need never asks for less than given.
        let mut have = 0;
        loop {
            match f(&wire[..have])? {
                Decoded::Done(v, used) => {
                    assert_eq!(used, have);
                    return Ok(v);
                }
                Decoded::Need(n) => {
                    assert!(n > have);
                    if n > wire.len() {
                        return Err(HeaderError::TooLong("truncated", n));
                    }
                    have = n;
                }
            }
        }
    }

    #[test]
    fn requests_and_replies_round_trip() {
        for (name, args) in [
            ("forward", &b""[..]),
            ("a", b"x"),
            ("file.v2_x-y", &[7; MAX_ARGS]),
        ] {
            let req = Request::new(name, args).unwrap();
            let mut wire = req.encode();
            assert_eq!(decode_all(Request::decode, &wire).unwrap(), req);
            wire.extend_from_slice(b"service bytes");
            let Ok(Decoded::Done(_, used)) = Request::decode(&wire) else {
                panic!()
            };
            assert_eq!(used, wire.len() - 13, "takes exactly the header");
        }
        let rep = Reply::new(Status(200), "é".repeat(600).as_str());
        assert!(rep.message.len() <= MAX_MESSAGE);
        assert_eq!(decode_all(Reply::decode, &rep.encode()).unwrap(), rep);
    }

    #[test]
    fn malformed_requests_are_errors_not_panics() {
        let cases: Vec<Vec<u8>> = vec![
            vec![2, 1, b'x', 0, 0],
            vec![1, 0, 0, 0],
            vec![1, 33],
            vec![1, 1, b'X', 0, 0],
            vec![1, 1, b'x', 0xff, 0xff],
        ];
        for c in cases {
            assert!(Request::decode(&c).is_err(), "{c:?}");
        }
        for c in [vec![0, 0xff, 0xff], vec![1, 0, 1, 0xff]] {
            assert!(Reply::decode(&c).is_err(), "{c:?}");
        }
        assert!(Request::new("", b"").is_err());
        assert!(Request::new(&"x".repeat(MAX_NAME + 1), b"").is_err());
        assert!(Request::new("x", &[0; MAX_ARGS + 1]).is_err());
    }

    #[test]
    fn every_prefix_of_every_byte_string_decodes_without_panic() {
        let mut x = 0x9e37_79b9_u32;
        for _ in 0..20_000 {
            let len = (x % 40) as usize;
            let mut b = Vec::with_capacity(len);
            for _ in 0..len {
                x ^= x << 13;
                x ^= x >> 17;
                x ^= x << 5;
                b.push(if x % 3 == 0 { 1 } else { x as u8 });
            }
            let _ = Request::decode(&b);
            let _ = Reply::decode(&b);
        }
    }
}
