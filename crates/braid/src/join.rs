//! Joining a link to a connection: the security handshake, then the braid `Hello`/`Welcome`
//! inside the secured channel.

use std::sync::Arc;

use bytes::{Bytes, BytesMut};

use crate::connection::{Inner, LinkSettings, Side};
use crate::driver::{LinkEnd, NewLink, ToDriver};
use crate::proto::agg::ConnectionId;
use crate::proto::agg::frame::RefuseCode;
use crate::proto::agg::handshake::{self, HandshakeError, Hello};
use crate::secure::{self, AuthError, LinkReader, Role, SecureLink, Security};
use crate::spec::LinkSpec;
use crate::transport::{DialError, RawLink};

/// Why a link could not join a connection. The link is dropped; others are unaffected.
///
/// ```
/// # fn f(e: braid::JoinError) {
/// if let braid::JoinError::Auth(a) = &e { eprintln!("security handshake failed: {a}"); }
/// # }
/// ```
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum JoinError {
    /// Dialling failed.
    #[error(transparent)]
    Dial(#[from] DialError),
    /// The security handshake failed (wrong key, not a braid peer, timeout...).
    #[error("security handshake: {0}")]
    Auth(#[from] AuthError),
    /// The braid handshake failed (wrong version, refused, malformed).
    #[error("braid handshake: {0}")]
    Handshake(#[from] HandshakeError),
    /// The link closed during the braid handshake.
    #[error("link closed during the braid handshake")]
    Closed,
    /// The peer answered for another connection.
    #[error("peer answered for another connection")]
    WrongConnection,
    /// The connection is over or full.
    #[error("connection is over or has no room for the link")]
    ConnectionOver,
}

/// The most handshake bytes buffered before a `Hello`/`Welcome` is complete.
const MAX_HANDSHAKE_BYTES: usize = 4096;

async fn read_until<T>(
    reader: &mut LinkReader,
    buf: &mut BytesMut,
    mut parse: impl FnMut(&mut BytesMut) -> Result<Option<T>, HandshakeError>,
) -> Result<T, JoinError> {
    loop {
        if let Some(t) = parse(buf)? {
            return Ok(t);
        }
        if buf.len() > MAX_HANDSHAKE_BYTES {
            return Err(JoinError::Closed);
        }
        match reader.read().await? {
            Some(b) => buf.extend_from_slice(&b),
            None => return Err(JoinError::Closed),
        }
    }
}

/// Client side of both handshakes; returns the link, the connection id the server chose (or
/// confirmed) and the bytes read past the `Welcome`.
pub(crate) async fn client_join(
    raw: RawLink,
    conn: ConnectionId,
    s: &LinkSettings,
) -> Result<(SecureLink, ConnectionId, Bytes), JoinError> {
    let fut = async {
        let mut link = secure::handshake(
            raw,
            &s.key,
            Role::Initiator,
            s.security,
            s.handshake_timeout,
        )
        .await?;
        let mut out = BytesMut::new();
        handshake::client_hello(
            conn,
            s.checksum && s.security == Security::Plaintext,
            &mut out,
        );
        let hello_sent = std::time::Instant::now();
        link.writer.write_all(&out).await.map_err(AuthError::Io)?;
        let mut buf = BytesMut::new();
        let (id, _index) = read_until(&mut link.reader, &mut buf, handshake::read_welcome).await?;
        // Hello to Welcome: one round trip on the established link (the security handshake's
        // own would also time a command link's start, e.g. ssh connecting).
        link.rtt = Some(hello_sent.elapsed());
        if !conn.is_new() && id != conn {
            return Err(JoinError::WrongConnection);
        }
        Ok((link, id, buf.freeze()))
    };
    tokio::time::timeout(s.handshake_timeout, fut)
        .await
        .map_err(|_| JoinError::Auth(AuthError::Timeout))?
}

/// Server side up to the `Hello`: the secured link, what it asked for, bytes after it.
pub(crate) async fn server_hello(
    raw: RawLink,
    s: &LinkSettings,
) -> Result<(SecureLink, Hello, Bytes), JoinError> {
    let fut = async {
        let mut link = secure::handshake(
            raw,
            &s.key,
            Role::Responder,
            s.security,
            s.handshake_timeout,
        )
        .await?;
        let mut buf = BytesMut::new();
        match read_until(&mut link.reader, &mut buf, handshake::read_hello).await {
            Ok(hello) => {
                // Our last handshake message to the Hello that answers it: a round trip
                // (and the client's work on that message).
                link.rtt = Some(link.sent_last().elapsed());
                Ok((link, hello, buf.freeze()))
            }
            Err(JoinError::Handshake(HandshakeError::Version(v))) => {
                refuse(&mut link, RefuseCode::Version).await;
                Err(JoinError::Handshake(HandshakeError::Version(v)))
            }
            Err(e) => Err(e),
        }
    };
    tokio::time::timeout(s.handshake_timeout, fut)
        .await
        .map_err(|_| JoinError::Auth(AuthError::Timeout))?
}

/// Sends `Refuse` (best effort).
pub(crate) async fn refuse(link: &mut SecureLink, code: RefuseCode) {
    let mut out = BytesMut::new();
    handshake::refuse(code, &mut out);
    let _ = link.writer.write_all(&out).await;
    let _ = link.writer.shutdown().await;
}

/// Sends `Welcome` and hands the link to the connection's driver.
pub(crate) async fn admit(
    inner: &Arc<Inner>,
    mut link: SecureLink,
    leftover: Bytes,
    spec: Option<LinkSpec>,
    ended: Option<tokio::sync::oneshot::Sender<LinkEnd>>,
) -> Result<(), JoinError> {
    let links = inner.lock().links.len();
    if inner.is_over() || links >= inner.settings.max_links {
        refuse(&mut link, RefuseCode::Limit).await;
        return Err(JoinError::ConnectionOver);
    }
    let index = links as u32;
    if inner.side == Side::Server {
        let mut out = BytesMut::new();
        handshake::welcome(inner.id, index, &mut out);
        link.writer.write_all(&out).await.map_err(AuthError::Io)?;
    }
    // Bytes read past the handshake go back to the reader, which hands the engine whole
    // frames from there on.
    link.reader.unread(&leftover);
    let leftover = Bytes::new();
    let (tx, rx) = tokio::sync::oneshot::channel();
    inner
        .to_driver
        .send(ToDriver::Add(Box::new(NewLink {
            link,
            leftover,
            spec,
            ended,
            added: Some(tx),
        })))
        .await
        .map_err(|_| JoinError::ConnectionOver)?;
    rx.await.map(|_| ()).map_err(|_| JoinError::ConnectionOver)
}

/// Joins `raw` to the existing connection `inner`, in the role that connection plays.
pub(crate) async fn join_existing(
    inner: &Arc<Inner>,
    raw: RawLink,
    slot: Option<(LinkSpec, tokio::sync::oneshot::Sender<LinkEnd>)>,
) -> Result<(), JoinError> {
    let (spec, ended) = match slot {
        Some((s, e)) => (Some(s), Some(e)),
        None => (None, None),
    };
    match inner.side {
        Side::Client => {
            let (link, _, leftover) = client_join(raw, inner.id, &inner.settings).await?;
            admit(inner, link, leftover, spec, ended).await
        }
        Side::Server => {
            let (mut link, hello, leftover) = server_hello(raw, &inner.settings).await?;
            if hello.conn != inner.id {
                refuse(&mut link, RefuseCode::UnknownConnection).await;
                return Err(JoinError::WrongConnection);
            }
            admit(inner, link, leftover, spec, ended).await
        }
    }
}

#[cfg(test)]
mod tests {
    use std::time::{Duration, Instant};

    use super::*;
    use crate::secure::Key;

    /// Both ends time a round trip of the handshake for the engine
    /// (`Connection::handshake_rtt`): the client from its `Hello` to the `Welcome`, the
    /// server from its last Noise message to the `Hello`.
    #[tokio::test]
    async fn both_ends_time_the_handshake_round_trip() {
        let s = crate::client::ClientConfig::new(Key::generate()).settings();
        let (a, b) = tokio::io::duplex(1 << 16);
        let (a, b) = (RawLink::from_stream(a, "a"), RawLink::from_stream(b, "b"));
        let id = ConnectionId([7; 16]);
        let start = Instant::now();
        let server = async {
            let (mut link, hello, _) = server_hello(b, &s).await.unwrap();
            assert!(hello.conn.is_new());
            // The server takes its time to answer: the client's round trip includes it.
            tokio::time::sleep(Duration::from_millis(30)).await;
            let mut out = BytesMut::new();
            handshake::welcome(id, 0, &mut out);
            link.writer.write_all(&out).await.unwrap();
            link
        };
        let (client, server) = tokio::join!(client_join(a, ConnectionId::NEW, &s), server);
        let (client, got, _) = client.unwrap();
        let whole = start.elapsed();
        assert_eq!(got, id);
        let c = client.rtt.expect("the client timed Hello to Welcome");
        assert!(c >= Duration::from_millis(30) && c <= whole, "{c:?}");
        let s = server
            .rtt
            .expect("the server timed its last message to the Hello");
        assert!(
            s < Duration::from_millis(30),
            "{s:?}: the Welcome's delay is not in it"
        );
    }
}
