//! Hostile and broken peers: each is dropped with one clear log line naming the peer, and the
//! server keeps serving a good client afterwards.

mod common;

use std::io::Write;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex, OnceLock};
use std::time::Duration;

use braid::client::{ClientConfig, connect};
use braid::proto::agg::ConnectionId;
use braid::proto::agg::frame::Frame;
use braid::proto::agg::handshake;
use braid::secure::{Key, SecureLink, Security};
use braid::transport::RawLink;
use bytes::BytesMut;
use common::*;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

/// Everything the library logs in this test binary.
fn logs() -> &'static Arc<Mutex<Vec<u8>>> {
    static LOGS: OnceLock<Arc<Mutex<Vec<u8>>>> = OnceLock::new();
    LOGS.get_or_init(|| {
        let buf = Arc::new(Mutex::new(Vec::new()));
        let b2 = buf.clone();
        let _ = tracing_subscriber::fmt()
            .with_env_filter("braid=debug")
            .with_ansi(false)
            .with_writer(move || LogWriter(b2.clone()))
            .try_init();
        buf
    })
}

struct LogWriter(Arc<Mutex<Vec<u8>>>);
impl Write for LogWriter {
    fn write(&mut self, b: &[u8]) -> std::io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(b);
        Ok(b.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

/// Waits (up to 5 s) for a log line containing all of `parts`.
async fn expect_log(parts: &[&str]) {
    for _ in 0..500 {
        let text = String::from_utf8_lossy(&logs().lock().unwrap()).to_string();
        if text.lines().any(|l| parts.iter().all(|p| l.contains(p))) {
            return;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    panic!("no log line with {parts:?}");
}

async fn server(config: braid::server::ServerConfig) -> SocketAddr {
    logs();
    let (addr, task) = echo_server(config).await;
    std::mem::forget(task);
    addr
}

/// A good client still gets its bytes echoed.
async fn good_client(addr: SocketAddr, key: &Key) {
    let spec = format!("tcp://{addr}?count=2").parse().unwrap();
    let conn = tokio::time::timeout(
        Duration::from_secs(10),
        connect(&[spec], ClientConfig::new(key.clone())),
    )
    .await
    .expect("good client timed out")
    .expect("good client refused");
    let (mut r, mut w) = conn.into_split();
    let (sent, got) = tokio::join!(write_stream(&mut w, 9, 1 << 20), read_hash(&mut r));
    assert_eq!(got.unwrap(), (1 << 20, sent.unwrap()));
}

/// The server closes `s` within `within`.
async fn closed_within(s: &mut TcpStream, within: Duration) {
    let mut buf = [0u8; 1024];
    let r = tokio::time::timeout(within, async {
        loop {
            match s.read(&mut buf).await {
                Ok(0) | Err(_) => return,
                Ok(_) => {}
            }
        }
    })
    .await;
    assert!(r.is_ok(), "server kept the link open");
}

fn peer_of(s: &TcpStream) -> String {
    format!("tcp://{}", s.local_addr().unwrap())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn garbage_is_dropped() {
    let key = Key::generate();
    let addr = server(server_config(&key)).await;
    let mut s = TcpStream::connect(addr).await.unwrap();
    let peer = peer_of(&s);
    s.write_all(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
        .await
        .unwrap();
    closed_within(&mut s, Duration::from_secs(3)).await;
    expect_log(&["link rejected", "not a braid peer", &peer]).await;
    good_client(addr, &key).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn wrong_key_is_refused() {
    let key = Key::generate();
    let addr = server(server_config(&key)).await;
    let spec = format!("tcp://{addr}").parse().unwrap();
    let r = connect(&[spec], ClientConfig::new(Key::generate())).await;
    assert!(r.is_err(), "a client with the wrong key got in");
    expect_log(&["link rejected", "wrong key"]).await;
    good_client(addr, &key).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn plaintext_client_against_encrypted_server_is_refused() {
    let key = Key::generate();
    let addr = server(server_config(&key)).await;
    let spec = format!("tcp://{addr}").parse().unwrap();
    let mut c = ClientConfig::new(key.clone());
    c.security = Security::Plaintext;
    assert!(connect(&[spec], c).await.is_err());
    expect_log(&["link rejected", "security mode mismatch"]).await;
    good_client(addr, &key).await;
}

/// Opens a link that passes the security handshake (the peer holds the key).
async fn secured(addr: SocketAddr, key: &Key) -> (SecureLink, String) {
    let s = TcpStream::connect(addr).await.unwrap();
    let peer = peer_of(&s);
    (secure_initiator(s, key).await, peer)
}

async fn link_dropped(link: &mut SecureLink) {
    let r = tokio::time::timeout(Duration::from_secs(5), async {
        loop {
            match link.reader.read().await {
                Ok(Some(_)) => {}
                _ => return,
            }
        }
    })
    .await;
    assert!(r.is_ok(), "server kept the link open");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn wrong_version_is_refused() {
    let key = Key::generate();
    let addr = server(server_config(&key)).await;
    let (mut link, peer) = secured(addr, &key).await;
    let mut out = BytesMut::new();
    Frame::Hello {
        version: 9,
        flags: 0,
        conn: ConnectionId::NEW,
    }
    .encode(&mut out);
    link.writer.write_all(&out).await.unwrap();
    let mut buf = BytesMut::new();
    while let Ok(Some(b)) = link.reader.read().await {
        buf.extend_from_slice(&b);
    }
    assert!(
        matches!(
            handshake::read_welcome(&mut buf),
            Err(handshake::HandshakeError::Refused(_))
        ),
        "expected Refuse"
    );
    expect_log(&["link rejected", "version 9", &peer]).await;
    good_client(addr, &key).await;
}

/// Joins a new connection with a proper handshake, then sends `bad`.
async fn join_then_send(addr: SocketAddr, key: &Key, bad: &[u8]) -> String {
    let (mut link, peer) = secured(addr, key).await;
    hello_new(&mut link).await;
    link.writer.write_all(bad).await.unwrap();
    link_dropped(&mut link).await;
    peer
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn oversized_frame_drops_the_link() {
    let key = Key::generate();
    let addr = server(server_config(&key)).await;
    // A Data frame header announcing a 2 MiB chunk.
    let mut bad = vec![0x01, 0x00];
    bad.extend_from_slice(&0u64.to_be_bytes());
    bad.extend_from_slice(&(2u32 << 20).to_be_bytes());
    let peer = join_then_send(addr, &key, &bad).await;
    expect_log(&["link dead", "exceeds", &peer]).await;
    good_client(addr, &key).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn malformed_frame_drops_the_link() {
    let key = Key::generate();
    let addr = server(server_config(&key)).await;
    let peer = join_then_send(addr, &key, &[0x77, 1, 2, 3]).await;
    expect_log(&["link dead", "unknown frame type", &peer]).await;
    good_client(addr, &key).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stalled_handshakes_time_out() {
    let key = Key::generate();
    let addr = server(server_config(&key)).await;
    let mut stalls = Vec::new();
    for _ in 0..20 {
        stalls.push(TcpStream::connect(addr).await.unwrap());
    }
    // Served while the stalled links hang.
    good_client(addr, &key).await;
    let peer = peer_of(&stalls[0]);
    for s in &mut stalls {
        closed_within(s, Duration::from_secs(3)).await;
    }
    expect_log(&["link rejected", "timed out", &peer]).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn flood_of_links_is_bounded() {
    let key = Key::generate();
    let mut config = server_config(&key);
    config.max_pending_handshakes = 8;
    let addr = server(config).await;
    let mut flood = Vec::new();
    for _ in 0..200 {
        flood.push(TcpStream::connect(addr).await.unwrap());
    }
    // Links past the pending limit are dropped at once.
    let last = flood.last_mut().unwrap();
    let peer = peer_of(last);
    closed_within(last, Duration::from_millis(500)).await;
    expect_log(&["too many pending handshakes", &peer]).await;
    // Once the stalled ones time out, a good client is served.
    tokio::time::sleep(Duration::from_millis(1000)).await;
    good_client(addr, &key).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn connection_and_link_limits_hold() {
    let key = Key::generate();
    let mut config = server_config(&key);
    config.max_connections = 2;
    config.max_links_per_connection = 2;
    let addr = server(config).await;
    let spec: braid::spec::LinkSpec = format!("tcp://{addr}?count=4").parse().unwrap();
    let a = connect(std::slice::from_ref(&spec), ClientConfig::new(key.clone()))
        .await
        .unwrap();
    let b = connect(std::slice::from_ref(&spec), ClientConfig::new(key.clone()))
        .await
        .unwrap();
    assert!(
        connect(std::slice::from_ref(&spec), ClientConfig::new(key.clone()))
            .await
            .is_err()
    );
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert_eq!(a.handle().links().len(), 2);
    let (mut r, mut w) = a.into_split();
    let (sent, got) = tokio::join!(write_stream(&mut w, 1, 1 << 20), read_hash(&mut r));
    assert_eq!(got.unwrap(), (1 << 20, sent.unwrap()));
    drop(b);
}

/// A link whose bytes are altered in flight dies; its data goes over the others intact.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tampered_link_dies_and_the_stream_stays_intact() {
    logs();
    let key = Key::generate();
    let (addr, _server) = echo_server(server_config(&key)).await;
    let first = RawLink::from_tcp(TcpStream::connect(addr).await.unwrap());
    let conn = braid::client::connect_link(first, ClientConfig::new(key))
        .await
        .unwrap();
    let h = conn.handle();
    let flip = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let s = TcpStream::connect(addr).await.unwrap();
    let raw = RawLink::from_tcp(s);
    h.add_raw_link(RawLink {
        read: raw.read,
        write: Box::new(Flipper {
            inner: raw.write,
            armed: flip.clone(),
        }),
        peer: raw.peer,
        path: raw.path,
    })
    .unwrap();
    while h.links().len() < 2 {
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    // The next large write on the second link gets one bit flipped.
    flip.store(true, std::sync::atomic::Ordering::Relaxed);
    let (mut r, mut w) = conn.into_split();
    let len = 30_000_000;
    let (sent, got) = tokio::time::timeout(Duration::from_secs(60), async {
        tokio::join!(write_stream(&mut w, 6, len), read_hash(&mut r))
    })
    .await
    .unwrap();
    assert_eq!(got.unwrap(), (len, sent.unwrap()));
    expect_log(&["tampered"]).await;
}

/// Flips one bit of the next write once armed.
struct Flipper {
    inner: braid::transport::BoxWrite,
    armed: Arc<std::sync::atomic::AtomicBool>,
}

impl tokio::io::AsyncWrite for Flipper {
    fn poll_write(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
        buf: &[u8],
    ) -> std::task::Poll<std::io::Result<usize>> {
        if buf.len() > 100 && self.armed.swap(false, std::sync::atomic::Ordering::Relaxed) {
            let mut copy = buf.to_vec();
            copy[50] ^= 0x20;
            return std::pin::Pin::new(&mut self.inner).poll_write(cx, &copy);
        }
        std::pin::Pin::new(&mut self.inner).poll_write(cx, buf)
    }
    fn poll_flush(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<std::io::Result<()>> {
        std::pin::Pin::new(&mut self.inner).poll_flush(cx)
    }
    fn poll_shutdown(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<std::io::Result<()>> {
        std::pin::Pin::new(&mut self.inner).poll_shutdown(cx)
    }
}
