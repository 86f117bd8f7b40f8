//! Reading the stream header from a stream: exactly its bytes, using the sans-I/O decoders of
//! [`braid_proto::service`].

use tokio::io::{AsyncRead, AsyncReadExt};

use braid_proto::service::{Decoded, HeaderError, Reply, Request};

/// Why a header could not be read from a stream.
///
/// ```no_run
/// # async fn f(mut stream: braid::mux::Stream) {
/// match braid::service::read_request(&mut stream).await {
///     Err(braid::service::ReadError::Header(e)) => eprintln!("peer sent a bad header: {e}"),
///     Err(e) => eprintln!("stream failed: {e}"),
///     Ok(req) => println!("wants {}", req.service()),
/// }
/// # }
/// ```
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ReadError {
    /// The peer sent a malformed header.
    #[error(transparent)]
    Header(#[from] HeaderError),
    /// The stream failed or ended inside the header.
    #[error("reading the stream header: {0}")]
    Io(#[from] std::io::Error),
}

async fn read_with<R, T>(
    r: &mut R,
    decode: fn(&[u8]) -> Result<Decoded<T>, HeaderError>,
) -> Result<T, ReadError>
where
    R: AsyncRead + Unpin,
{
    let mut buf = Vec::new();
    loop {
        match decode(&buf)? {
            Decoded::Done(v, _) => return Ok(v),
            Decoded::Need(n) => {
                let have = buf.len();
                buf.resize(n, 0);
                r.read_exact(&mut buf[have..]).await?;
            }
        }
    }
}

/// Reads one [`Request`] from `r`, exactly its bytes and no more.
///
/// # Errors
/// A malformed header, or the stream failing or ending first.
///
/// # Cancel safety
/// Not cancel safe: a cancelled read leaves the stream inside the header.
///
/// ```
/// # #[tokio::main(flavor = "current_thread")]
/// # async fn main() -> Result<(), braid::service::ReadError> {
/// use braid::service::{Request, read_request};
/// let wire = Request::new("forward", b"")?.encode();
/// let req = read_request(&mut wire.as_slice()).await?;
/// assert_eq!(req.service(), "forward");
/// # Ok(()) }
/// ```
pub async fn read_request<R: AsyncRead + Unpin>(r: &mut R) -> Result<Request, ReadError> {
    read_with(r, Request::decode).await
}

/// Reads one [`Reply`] from `r`, exactly its bytes and no more.
///
/// # Errors
/// A malformed reply, or the stream failing or ending first.
///
/// # Cancel safety
/// Not cancel safe.
///
/// ```
/// # #[tokio::main(flavor = "current_thread")]
/// # async fn main() -> Result<(), braid::service::ReadError> {
/// use braid::service::{Reply, Status, read_reply};
/// let wire = Reply::new(Status::OK, "").encode();
/// assert!(read_reply(&mut wire.as_slice()).await?.status.is_ok());
/// # Ok(()) }
/// ```
pub async fn read_reply<R: AsyncRead + Unpin>(r: &mut R) -> Result<Reply, ReadError> {
    read_with(r, Reply::decode).await
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn reads_exactly_the_header_and_fails_on_a_short_stream() {
        let mut wire = Request::new("forward", b"abc").unwrap().encode();
        wire.extend_from_slice(b"rest");
        let mut rd = wire.as_slice();
        let req = read_request(&mut rd).await.unwrap();
        assert_eq!((req.service(), req.args()), ("forward", &b"abc"[..]));
        assert_eq!(rd, b"rest");
        let short = [1u8, 7, b'f'];
        assert!(matches!(
            read_request(&mut &short[..]).await,
            Err(ReadError::Io(_))
        ));
        assert!(matches!(
            read_request(&mut &[9u8, 1, b'x', 0, 0][..]).await,
            Err(ReadError::Header(HeaderError::Version(9)))
        ));
        assert!(matches!(
            read_reply(&mut &[0u8, 0][..]).await,
            Err(ReadError::Io(_))
        ));
    }
}
