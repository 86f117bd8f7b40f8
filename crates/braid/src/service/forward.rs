//! The `forward` service: each stream becomes one TCP connection to the server's target.

use std::future::Future;
use std::io;
use std::sync::Arc;

use tokio::io::{AsyncRead, AsyncWrite, AsyncWriteExt};
use tokio::net::TcpStream;

use super::{Incoming, Status};

/// The name of the forwarding service.
///
/// ```
/// assert_eq!(braid::service::FORWARD, "forward");
/// ```
pub const FORWARD: &str = "forward";

/// A `forward` service handler: for each stream, connects to `target` (`HOST:PORT`), answers
/// [`Status::OK`] once connected or [`Status::UNAVAILABLE`] with the reason, then
/// [`bridge`]s the two until both directions have ended. Arguments must be empty (a later
/// `-L`-style forward may name its target there); anything else is [`Status::REFUSED`].
///
/// ```
/// let services = braid::service::Services::new()
///     .with(braid::service::FORWARD, braid::service::forward("127.0.0.1:22"));
/// ```
pub fn forward(
    target: impl Into<String>,
) -> impl Fn(Incoming) -> std::pin::Pin<Box<dyn Future<Output = ()> + Send>> + Send + Sync + 'static
{
    let target: Arc<str> = target.into().into();
    move |inc: Incoming| {
        let target = target.clone();
        Box::pin(async move {
            let peer: Arc<str> = inc.peer.clone();
            if !inc.request().args().is_empty() {
                tracing::warn!(%peer, "forward: arguments are not supported");
                let _ = inc
                    .refuse(Status::REFUSED, "forward takes no arguments")
                    .await;
                return;
            }
            let tcp = match TcpStream::connect(&*target).await {
                Ok(t) => t,
                Err(e) => {
                    let msg = format!("connecting to {target}: {e}");
                    tracing::warn!(%peer, "forward: {msg}");
                    let _ = inc.refuse(Status::UNAVAILABLE, &msg).await;
                    return;
                }
            };
            let _ = tcp.set_nodelay(true);
            let mut stream = match inc.accept().await {
                Ok(s) => s,
                Err(e) => {
                    tracing::debug!(%peer, "forward: stream failed before the reply: {e}");
                    return;
                }
            };
            let id = stream.id();
            match bridge(&mut stream, tcp).await {
                Ok((up, down)) => {
                    tracing::info!(%peer, stream = id, "forwarded to {target}: {up} bytes in, {down} out")
                }
                Err(e) => {
                    // The peer learns of the failure as a reset, not as a clean end of stream.
                    stream.reset();
                    tracing::info!(%peer, stream = id, "forward to {target} failed: {e}")
                }
            }
        })
    }
}

/// Copies `a` to `b` and `b` to `a` until both directions ended, half-closing each direction
/// when its source ends; returns the bytes copied (a→b, b→a).
///
/// `b` may stop taking data before `a` stops sending (a server that answers early and hangs
/// up): what `b` still sends is delivered to `a` all the same, then `a`'s direction ends
/// cleanly, and the rest of what `a` sends is dropped. Only a failure towards `a` (or of
/// reading `b`) is an error.
///
/// # Errors
/// The first error copying `b` to `a`; the other direction is then abandoned.
///
/// ```no_run
/// # async fn run(stream: braid::mux::Stream) -> std::io::Result<()> {
/// let tcp = tokio::net::TcpStream::connect("127.0.0.1:22").await?;
/// let (sent, received) = braid::service::bridge(stream, tcp).await?;
/// # Ok(()) }
/// ```
pub async fn bridge<A, B>(a: A, b: B) -> io::Result<(u64, u64)>
where
    A: AsyncRead + AsyncWrite,
    B: AsyncRead + AsyncWrite,
{
    let (mut ar, mut aw) = tokio::io::split(a);
    let (mut br, mut bw) = tokio::io::split(b);
    let ab = async {
        let r = tokio::io::copy(&mut ar, &mut bw).await;
        // Best effort: the far side may have closed already.
        let _ = bw.shutdown().await;
        r
    };
    let ba = async {
        let n = tokio::io::copy(&mut br, &mut aw).await?;
        let _ = aw.shutdown().await;
        Ok::<u64, io::Error>(n)
    };
    tokio::pin!(ab, ba);
    let mut up = None;
    let down = loop {
        tokio::select! {
            r = &mut ab, if up.is_none() => up = Some(r),
            r = &mut ba => break r?,
        }
    };
    let up = match up {
        Some(r) => r,
        None => ab.await,
    };
    // `b` stopped taking data: what it sent was delivered, the stream ended cleanly.
    Ok((up.unwrap_or(0), down))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::pin::Pin;
    use std::task::{Context, Poll};
    use tokio::io::{AsyncReadExt, AsyncWriteExt, ReadBuf};

    /// A target that has its whole answer ready and takes no more input after `takes` bytes
    /// (writes then fail as a socket whose peer hung up).
    struct EarlyAnswer {
        answer: Vec<u8>,
        at: usize,
        takes: usize,
    }

    impl AsyncRead for EarlyAnswer {
        fn poll_read(
            mut self: Pin<&mut Self>,
            _: &mut Context<'_>,
            buf: &mut ReadBuf<'_>,
        ) -> Poll<io::Result<()>> {
            let n = (self.answer.len() - self.at).min(buf.remaining()).min(4096);
            let at = self.at;
            buf.put_slice(&self.answer[at..at + n]);
            self.at += n;
            Poll::Ready(Ok(()))
        }
    }

    impl AsyncWrite for EarlyAnswer {
        fn poll_write(
            mut self: Pin<&mut Self>,
            _: &mut Context<'_>,
            buf: &[u8],
        ) -> Poll<io::Result<usize>> {
            if self.takes == 0 {
                return Poll::Ready(Err(io::ErrorKind::BrokenPipe.into()));
            }
            let n = buf.len().min(self.takes);
            self.takes -= n;
            Poll::Ready(Ok(n))
        }
        fn poll_flush(self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<io::Result<()>> {
            Poll::Ready(Ok(()))
        }
        fn poll_shutdown(self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<io::Result<()>> {
            Poll::Ready(Err(io::ErrorKind::NotConnected.into()))
        }
    }

    #[tokio::test]
    async fn a_target_that_stops_taking_data_still_delivers_its_answer() {
        // The client keeps sending after the target stopped taking data: the target's whole
        // answer still reaches the client, with a clean end (the bridge used to fail at the
        // first refused write and abandon the answer).
        let answer: Vec<u8> = (0..300_000u32).map(|i| (i % 251) as u8).collect();
        let target = EarlyAnswer {
            answer: answer.clone(),
            at: 0,
            takes: 1000,
        };
        let (client, ours) = tokio::io::duplex(64 * 1024);
        let (mut cr, mut cw) = tokio::io::split(client);
        let sender = tokio::spawn(async move {
            let chunk = [1u8; 16 * 1024];
            for _ in 0..64 {
                if cw.write_all(&chunk).await.is_err() {
                    break;
                }
            }
            let _ = cw.shutdown().await;
        });
        let bridged = tokio::spawn(bridge(ours, target));
        let mut got = Vec::new();
        cr.read_to_end(&mut got).await.unwrap();
        assert!(got == answer, "{} bytes of the answer", got.len());
        sender.await.unwrap();
        let (up, down) = bridged.await.unwrap().unwrap();
        assert_eq!(down, answer.len() as u64);
        assert!(up <= 1000);
    }
}
