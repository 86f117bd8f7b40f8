//! The first bytes of an application stream: the opener's [`Request`] naming the service, the
//! acceptor's [`Reply`] with a [`Status`]. Wire format in `docs/PROTOCOL.md`, "Applications
//! over streams".
//!
//! ```text
//!   Request  = version:u8 (1) | name_len:u8 (1..=32) | name | args_len:u16 BE (..=1024) | args
//!   Reply    = status:u8 | msg_len:u16 BE (..=1024) | message (UTF-8)
//! ```
//!
//! Decoding never panics: every length is checked before it is used.

use tokio::io::{AsyncRead, AsyncReadExt};

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
/// use braid::service::{HeaderError, Request};
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
    /// The stream failed or ended inside the header.
    #[error("reading the stream header: {0}")]
    Io(#[from] std::io::Error),
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
/// use braid::service::Request;
/// let req = Request::new("forward", b"")?;
/// assert_eq!(req.encode(), [1, 7, b'f', b'o', b'r', b'w', b'a', b'r', b'd', 0, 0]);
/// # Ok::<(), braid::service::HeaderError>(())
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
    /// let req = braid::service::Request::new("speedtest", b"10s")?;
    /// assert_eq!(req.service(), "speedtest");
    /// # Ok::<(), braid::service::HeaderError>(())
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
    /// let req = braid::service::Request::new("forward", b"")?;
    /// assert_eq!(req.service(), "forward");
    /// # Ok::<(), braid::service::HeaderError>(())
    /// ```
    pub fn service(&self) -> &str {
        &self.service
    }

    /// The arguments the opener passed.
    ///
    /// ```
    /// let req = braid::service::Request::new("file", b"name.iso")?;
    /// assert_eq!(req.args(), b"name.iso");
    /// # Ok::<(), braid::service::HeaderError>(())
    /// ```
    pub fn args(&self) -> &[u8] {
        &self.args
    }

    /// The request's bytes on the wire.
    ///
    /// ```
    /// let bytes = braid::service::Request::new("x", b"")?.encode();
    /// assert_eq!(bytes, [1, 1, b'x', 0, 0]);
    /// # Ok::<(), braid::service::HeaderError>(())
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

    /// Reads one request from `r`, exactly its bytes and no more.
    ///
    /// # Errors
    /// A wrong version, a bad name, a length over its limit, or the stream failing.
    ///
    /// # Cancel safety
    /// Not cancel safe: a cancelled read leaves the stream inside the header.
    ///
    /// ```
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() -> Result<(), braid::service::HeaderError> {
    /// use braid::service::Request;
    /// let wire = Request::new("forward", b"")?.encode();
    /// let req = Request::read_from(&mut wire.as_slice()).await?;
    /// assert_eq!(req.service(), "forward");
    /// # Ok(()) }
    /// ```
    pub async fn read_from<R: AsyncRead + Unpin>(r: &mut R) -> Result<Self, HeaderError> {
        let version = r.read_u8().await?;
        if version != VERSION {
            return Err(HeaderError::Version(version));
        }
        let n = r.read_u8().await? as usize;
        let mut name = vec![0u8; n];
        r.read_exact(&mut name).await?;
        if !valid_name(&name) {
            return Err(HeaderError::BadName);
        }
        let args_len = r.read_u16().await? as usize;
        if args_len > MAX_ARGS {
            return Err(HeaderError::TooLong("args", args_len));
        }
        let mut args = vec![0u8; args_len];
        r.read_exact(&mut args).await?;
        let service = String::from_utf8(name).map_err(|_| HeaderError::BadName)?;
        Ok(Request { service, args })
    }
}

/// The acceptor's answer: a status code. Codes other than [`Status::OK`] end the stream.
///
/// ```
/// use braid::service::Status;
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
    /// assert!(!braid::service::Status::REFUSED.is_ok());
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
/// use braid::service::{Reply, Status};
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
    /// let ok = braid::service::Reply::new(braid::service::Status::OK, "");
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
    /// let r = braid::service::Reply::new(braid::service::Status::REFUSED, "no");
    /// assert_eq!(r.encode(), [4, 0, 2, b'n', b'o']);
    /// ```
    pub fn encode(&self) -> Vec<u8> {
        let mut b = Vec::with_capacity(3 + self.message.len());
        b.push(self.status.0);
        b.extend_from_slice(&(self.message.len() as u16).to_be_bytes());
        b.extend_from_slice(self.message.as_bytes());
        b
    }

    /// Reads one reply from `r`, exactly its bytes and no more.
    ///
    /// # Errors
    /// A message over [`MAX_MESSAGE`] or not UTF-8, or the stream failing.
    ///
    /// # Cancel safety
    /// Not cancel safe.
    ///
    /// ```
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() -> Result<(), braid::service::HeaderError> {
    /// use braid::service::{Reply, Status};
    /// let wire = Reply::new(Status::OK, "").encode();
    /// assert!(Reply::read_from(&mut wire.as_slice()).await?.status.is_ok());
    /// # Ok(()) }
    /// ```
    pub async fn read_from<R: AsyncRead + Unpin>(r: &mut R) -> Result<Self, HeaderError> {
        let status = Status(r.read_u8().await?);
        let n = r.read_u16().await? as usize;
        if n > MAX_MESSAGE {
            return Err(HeaderError::TooLong("message", n));
        }
        let mut msg = vec![0u8; n];
        r.read_exact(&mut msg).await?;
        let message = String::from_utf8(msg).map_err(|_| HeaderError::BadMessage)?;
        Ok(Reply { status, message })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn requests_and_replies_round_trip() {
        for (name, args) in [
            ("forward", &b""[..]),
            ("a", b"x"),
            ("file.v2_x-y", &[7; MAX_ARGS]),
        ] {
            let req = Request::new(name, args).unwrap();
            let wire = req.encode();
            let mut rd = wire.as_slice();
            assert_eq!(Request::read_from(&mut rd).await.unwrap(), req);
            assert!(rd.is_empty(), "read exactly the header");
        }
        let rep = Reply::new(Status(200), "é".repeat(600).as_str());
        assert!(rep.message.len() <= MAX_MESSAGE);
        let wire = rep.encode();
        assert_eq!(Reply::read_from(&mut wire.as_slice()).await.unwrap(), rep);
    }

    #[tokio::test]
    async fn malformed_requests_are_errors_not_panics() {
        let cases: Vec<Vec<u8>> = vec![
            vec![],
            vec![2, 1, b'x', 0, 0],
            vec![1, 0, 0, 0],
            vec![1, 33],
            vec![1, 1, b'X', 0, 0],
            vec![1, 1, b'x', 0xff, 0xff],
            vec![1, 1, b'x', 0],
            vec![1, 5, b'x'],
        ];
        for c in cases {
            assert!(
                Request::read_from(&mut c.as_slice()).await.is_err(),
                "{c:?}"
            );
        }
        for c in [
            vec![],
            vec![0, 0xff, 0xff],
            vec![1, 0, 1, 0xff],
            vec![1, 0, 2, b'a'],
        ] {
            assert!(Reply::read_from(&mut c.as_slice()).await.is_err(), "{c:?}");
        }
        assert!(Request::new("", b"").is_err());
        assert!(Request::new(&"x".repeat(MAX_NAME + 1), b"").is_err());
        assert!(Request::new("x", &[0; MAX_ARGS + 1]).is_err());
    }
}
