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
/// # Errors
/// The first error of either direction; the other direction is then abandoned.
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
        let n = tokio::io::copy(&mut ar, &mut bw).await?;
        // Best effort: the far side may have closed already.
        let _ = bw.shutdown().await;
        Ok::<u64, io::Error>(n)
    };
    let ba = async {
        let n = tokio::io::copy(&mut br, &mut aw).await?;
        let _ = aw.shutdown().await;
        Ok::<u64, io::Error>(n)
    };
    tokio::try_join!(ab, ba)
}
