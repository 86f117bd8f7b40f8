//! Helpers shared by the runtime's integration tests.
#![allow(dead_code)]

use std::io;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::task::{Context, Poll};

use braid::secure::Key;
use braid::server::{Listener, ServerConfig};
use braid::spec::ListenSpec;
use braid::transport::RawLink;
use rand::{RngCore, SeedableRng};
use sha2::{Digest, Sha256};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt, ReadBuf};

pub fn init_logs() {
    let _ = tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("braid=info")),
        )
        .with_test_writer()
        .try_init();
}

/// Writes `len` pseudo-random bytes from `seed`, then shuts down; returns their SHA-256.
pub async fn write_stream<W: AsyncWrite + Unpin>(
    w: &mut W,
    seed: u64,
    len: u64,
) -> io::Result<[u8; 32]> {
    write_stream_pausing(w, seed, len, None).await
}

/// A point in a written stream where the writer waits for something.
pub type Pause = (
    u64,
    std::pin::Pin<Box<dyn std::future::Future<Output = ()> + Send>>,
);

/// Like [`write_stream`], but after `pause.0` bytes it waits for `pause.1` before writing
/// the rest (so a test can change the links mid-transfer at a known point).
pub async fn write_stream_pausing<W: AsyncWrite + Unpin>(
    w: &mut W,
    seed: u64,
    len: u64,
    mut pause: Option<Pause>,
) -> io::Result<[u8; 32]> {
    let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(seed);
    let mut hash = Sha256::new();
    let mut buf = vec![0u8; 256 * 1024];
    let mut sent = 0u64;
    while sent < len {
        if pause.as_ref().is_some_and(|(at, _)| sent >= *at) {
            let (_, wait) = pause.take().expect("checked");
            wait.await;
        }
        let until = pause.as_ref().map_or(len, |(at, _)| *at);
        let n = (until - sent).min(buf.len() as u64) as usize;
        rng.fill_bytes(&mut buf[..n]);
        hash.update(&buf[..n]);
        w.write_all(&buf[..n]).await?;
        sent += n as u64;
    }
    w.shutdown().await?;
    Ok(hash.finalize().into())
}

/// The SHA-256 of what `write_stream(seed, len)` sends.
pub fn stream_hash(seed: u64, len: u64) -> [u8; 32] {
    let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(seed);
    let mut hash = Sha256::new();
    let mut buf = vec![0u8; 256 * 1024];
    let mut done = 0u64;
    while done < len {
        let n = (len - done).min(buf.len() as u64) as usize;
        rng.fill_bytes(&mut buf[..n]);
        hash.update(&buf[..n]);
        done += n as u64;
    }
    hash.finalize().into()
}

/// Reads to the end; returns the byte count and SHA-256.
pub async fn read_hash<R: AsyncRead + Unpin>(r: &mut R) -> io::Result<(u64, [u8; 32])> {
    let mut hash = Sha256::new();
    let mut buf = vec![0u8; 256 * 1024];
    let mut n = 0u64;
    loop {
        let k = r.read(&mut buf).await?;
        if k == 0 {
            return Ok((n, hash.finalize().into()));
        }
        hash.update(&buf[..k]);
        n += k as u64;
    }
}

/// A server on a free loopback port that echoes every connection back.
pub async fn echo_server(config: ServerConfig) -> (SocketAddr, tokio::task::JoinHandle<()>) {
    echo_server_with(config, |conn| async move {
        let (mut r, mut w) = conn.into_split();
        let _ = tokio::io::copy(&mut r, &mut w).await;
        let _ = w.shutdown().await;
    })
    .await
}

/// A server on a free loopback port that runs `serve` on every connection in its own task.
pub async fn echo_server_with<F, Fut>(
    config: ServerConfig,
    serve: F,
) -> (SocketAddr, tokio::task::JoinHandle<()>)
where
    F: Fn(braid::Connection) -> Fut + Send + 'static,
    Fut: std::future::Future<Output = ()> + Send + 'static,
{
    let mut l = Listener::bind(&["127.0.0.1:0".parse().unwrap()], config)
        .await
        .unwrap();
    let ListenSpec::Tcp(addr) = l.local_specs()[0].clone() else {
        panic!()
    };
    let task = tokio::spawn(async move {
        while let Some(conn) = l.accept().await {
            tokio::spawn(serve(conn));
        }
    });
    (addr, task)
}

/// A fresh key and a server config with short timeouts for tests.
pub fn server_config(key: &Key) -> ServerConfig {
    let mut c = ServerConfig::new(key.clone());
    c.handshake_timeout = std::time::Duration::from_millis(800);
    c
}

/// Read and write halves that fail once the switch is set, like a socket that died.
pub struct Killable<T> {
    inner: T,
    dead: Arc<AtomicBool>,
}

fn killed() -> io::Error {
    io::Error::new(io::ErrorKind::ConnectionReset, "killed by the test")
}

impl<T: AsyncRead + Unpin> AsyncRead for Killable<T> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        if self.dead.load(Ordering::Relaxed) {
            return Poll::Ready(Err(killed()));
        }
        Pin::new(&mut self.inner).poll_read(cx, buf)
    }
}

impl<T: AsyncWrite + Unpin> AsyncWrite for Killable<T> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        if self.dead.load(Ordering::Relaxed) {
            return Poll::Ready(Err(killed()));
        }
        Pin::new(&mut self.inner).poll_write(cx, buf)
    }
    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_flush(cx)
    }
    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }
}

/// A TCP link to `addr` that dies when the returned switch is set.
pub async fn killable_link(addr: SocketAddr) -> (RawLink, Arc<AtomicBool>) {
    let s = tokio::net::TcpStream::connect(addr).await.unwrap();
    let raw = RawLink::from_tcp(s);
    let dead = Arc::new(AtomicBool::new(false));
    (
        RawLink {
            read: Box::new(Killable {
                inner: raw.read,
                dead: dead.clone(),
            }),
            write: Box::new(Killable {
                inner: raw.write,
                dead: dead.clone(),
            }),
            peer: raw.peer,
            path: raw.path,
        },
        dead,
    )
}

/// Records every link id seen on a connection until dropped.
pub struct LinkMonitor {
    seen: Arc<std::sync::Mutex<std::collections::BTreeSet<braid::proto::agg::LinkId>>>,
    task: tokio::task::JoinHandle<()>,
}

impl LinkMonitor {
    pub fn new(h: braid::ConnectionHandle) -> Self {
        let seen = Arc::new(std::sync::Mutex::new(std::collections::BTreeSet::new()));
        let s2 = seen.clone();
        let task = tokio::spawn(async move {
            loop {
                for l in h.links() {
                    s2.lock().unwrap().insert(l.id);
                }
                tokio::time::sleep(std::time::Duration::from_millis(5)).await;
            }
        });
        LinkMonitor { seen, task }
    }

    pub fn seen(&self) -> Vec<braid::proto::agg::LinkId> {
        self.seen.lock().unwrap().iter().copied().collect()
    }
}

impl Drop for LinkMonitor {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// A listener on a free loopback port and the client and server ends of one aggregated
/// connection to it, dialled as `tcp://127.0.0.1:PORT?count={links}`.
pub async fn connection_pair(links: usize) -> (braid::Connection, braid::Connection) {
    let key = Key::generate();
    let mut l = Listener::bind(&["127.0.0.1:0".parse().unwrap()], server_config(&key))
        .await
        .unwrap();
    let ListenSpec::Tcp(addr) = l.local_specs()[0].clone() else {
        panic!()
    };
    let specs = [format!("tcp://{addr}?count={links}").parse().unwrap()];
    let client = braid::client::connect(&specs, braid::client::ClientConfig::new(key));
    let (client, server) = tokio::join!(client, l.accept());
    let client = client.unwrap();
    let server = server.unwrap();
    // The listener may go: accepted connections live on without it.
    tokio::spawn(async move { while l.accept().await.is_some() {} });
    while client.handle().links().len() < links {
        tokio::time::sleep(std::time::Duration::from_millis(5)).await;
    }
    (client, server)
}

/// The security handshake of an encrypted link to a server holding `key`, as its initiator.
#[allow(dead_code)]
pub async fn secure_initiator(s: tokio::net::TcpStream, key: &Key) -> braid::secure::SecureLink {
    braid::secure::handshake(
        RawLink::from_tcp(s),
        key,
        braid::secure::Role::Initiator,
        braid::secure::Security::Encrypted,
        std::time::Duration::from_secs(5),
    )
    .await
    .unwrap()
}

/// Asks over `link` (past its security handshake) for a new connection: sends `Hello(NEW)`,
/// reads the `Welcome`; returns the bytes read past it (the first engine frames).
#[allow(dead_code)]
pub async fn hello_new(link: &mut braid::secure::SecureLink) -> bytes::BytesMut {
    use braid::proto::agg::{ConnectionId, handshake};
    let mut out = bytes::BytesMut::new();
    handshake::client_hello(ConnectionId::NEW, false, &mut out);
    link.writer.write_all(&out).await.unwrap();
    let mut buf = bytes::BytesMut::new();
    loop {
        if handshake::read_welcome(&mut buf).unwrap().is_some() {
            return buf;
        }
        buf.extend_from_slice(&link.reader.read().await.unwrap().unwrap());
    }
}
