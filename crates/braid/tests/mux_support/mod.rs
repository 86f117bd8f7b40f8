//! Helpers shared by the mux integration tests and benchmarks: loopback TCP pairs, a task that
//! drives a `yamux` crate connection, deterministic payloads.
#![allow(dead_code)]

use std::future::{Future, poll_fn};
use std::task::Poll;
use std::time::Duration;

use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{mpsc, oneshot};
use tokio_util::compat::{Compat, FuturesAsyncReadCompatExt, TokioAsyncReadCompatExt};

/// A connected pair of loopback TCP sockets (client, server), with TCP_NODELAY.
pub async fn tcp_pair() -> (TcpStream, TcpStream) {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let (client, server) = tokio::join!(TcpStream::connect(addr), listener.accept());
    let client = client.unwrap();
    let server = server.unwrap().0;
    client.set_nodelay(true).unwrap();
    server.set_nodelay(true).unwrap();
    (client, server)
}

/// Runs `fut` with a deadline; a hang fails the test instead of the CI run.
pub async fn within<F: Future>(secs: u64, fut: F) -> F::Output {
    tokio::time::timeout(Duration::from_secs(secs), fut)
        .await
        .expect("test timed out")
}

/// Deterministic payload: byte i of stream `seed`.
pub fn payload(seed: u64, len: usize) -> Vec<u8> {
    (0..len as u64)
        .map(|i| (i.wrapping_mul(2654435761) >> 7 ^ seed) as u8)
        .collect()
}

/// A yamux-crate stream with tokio's I/O traits.
pub type YamuxStream = Compat<yamux::Stream>;

enum Cmd {
    Open(oneshot::Sender<yamux::Result<yamux::Stream>>),
    Close(oneshot::Sender<()>),
}

/// A `yamux::Connection` driven by its own task.
pub struct YamuxPeer {
    cmds: mpsc::UnboundedSender<Cmd>,
    inbound: mpsc::UnboundedReceiver<yamux::Stream>,
    /// Resolves when the connection ended (with its error, if any).
    pub ended: Option<oneshot::Receiver<Option<String>>>,
}

impl YamuxPeer {
    pub fn spawn(io: TcpStream, mode: yamux::Mode) -> Self {
        Self::spawn_with(io, mode, yamux::Config::default())
    }

    pub fn spawn_with(io: TcpStream, mode: yamux::Mode, config: yamux::Config) -> Self {
        let (cmds, mut cmd_rx) = mpsc::unbounded_channel::<Cmd>();
        let (in_tx, inbound) = mpsc::unbounded_channel();
        let (end_tx, ended) = oneshot::channel();
        let mut conn = yamux::Connection::new(io.compat(), config, mode);
        tokio::spawn(async move {
            let mut opening: Vec<oneshot::Sender<yamux::Result<yamux::Stream>>> = Vec::new();
            let mut closing: Option<oneshot::Sender<()>> = None;
            let result = poll_fn(|cx| {
                loop {
                    if closing.is_some() {
                        return match conn.poll_close(cx) {
                            Poll::Ready(r) => {
                                if let Some(tx) = closing.take() {
                                    let _ = tx.send(());
                                }
                                Poll::Ready(r.err().map(|e| e.to_string()))
                            }
                            Poll::Pending => Poll::Pending,
                        };
                    }
                    let mut progress = false;
                    while let Poll::Ready(Some(cmd)) = cmd_rx.poll_recv(cx) {
                        match cmd {
                            Cmd::Open(tx) => opening.push(tx),
                            Cmd::Close(tx) => closing = Some(tx),
                        }
                        progress = true;
                    }
                    if !opening.is_empty() {
                        if let Poll::Ready(r) = conn.poll_new_outbound(cx) {
                            let _ = opening.remove(0).send(r);
                            progress = true;
                        }
                    }
                    match conn.poll_next_inbound(cx) {
                        Poll::Ready(Some(Ok(s))) => {
                            let _ = in_tx.send(s);
                            progress = true;
                        }
                        Poll::Ready(Some(Err(e))) => return Poll::Ready(Some(e.to_string())),
                        Poll::Ready(None) => return Poll::Ready(None),
                        Poll::Pending => {}
                    }
                    if !progress {
                        return Poll::Pending;
                    }
                }
            })
            .await;
            let _ = end_tx.send(result);
        });
        YamuxPeer {
            cmds,
            inbound,
            ended: Some(ended),
        }
    }

    pub async fn open(&self) -> YamuxStream {
        let (tx, rx) = oneshot::channel();
        assert!(self.cmds.send(Cmd::Open(tx)).is_ok(), "yamux task gone");
        rx.await
            .expect("yamux task gone")
            .expect("yamux open failed")
            .compat()
    }

    pub async fn accept(&mut self) -> Option<YamuxStream> {
        self.inbound
            .recv()
            .await
            .map(FuturesAsyncReadCompatExt::compat)
    }

    pub async fn close(&self) {
        let (tx, rx) = oneshot::channel();
        if self.cmds.send(Cmd::Close(tx)).is_ok() {
            let _ = rx.await;
        }
    }
}

/// Writes `data`, half-closes, reads the echo to the end and checks it.
pub async fn echo_check<S: AsyncRead + AsyncWrite + Unpin + Send + 'static>(
    stream: S,
    data: Vec<u8>,
) {
    let (mut r, mut w) = tokio::io::split(stream);
    let expect = data.clone();
    let writer = tokio::spawn(async move {
        w.write_all(&data).await.unwrap();
        w.shutdown().await.unwrap();
        w
    });
    let mut got = Vec::with_capacity(expect.len());
    r.read_to_end(&mut got).await.unwrap();
    let _w = writer.await.unwrap();
    assert_eq!(got.len(), expect.len());
    assert!(got == expect, "echo differs");
}

/// Echoes everything back, then half-closes.
pub async fn echo_serve<S: AsyncRead + AsyncWrite + Unpin>(stream: S) {
    let (mut r, mut w) = tokio::io::split(stream);
    tokio::io::copy(&mut r, &mut w).await.unwrap();
    w.shutdown().await.unwrap();
}

/// One half-closed exchange: `first` sends `request` and half-closes; the stream `accept`
/// yields (the other end) reads it to the end, answers `response` and half-closes; `first`
/// reads the answer to the end. Returns the other end.
pub async fn half_closed_exchange<A, B>(
    first: &mut A,
    accept: impl Future<Output = B>,
    request: &[u8],
    response: &[u8],
) -> B
where
    A: AsyncRead + AsyncWrite + Unpin,
    B: AsyncRead + AsyncWrite + Unpin,
{
    first.write_all(request).await.unwrap();
    first.shutdown().await.unwrap();
    let mut second = accept.await;
    let mut got = Vec::new();
    second.read_to_end(&mut got).await.unwrap();
    assert_eq!(got, request);
    second.write_all(response).await.unwrap();
    second.shutdown().await.unwrap();
    let mut back = Vec::new();
    first.read_to_end(&mut back).await.unwrap();
    assert_eq!(back, response);
    second
}
