//! Plaintext links with `engine.crc`: a link that corrupts bytes is dropped (and redialled)
//! and the stream arrives intact over the others, in both directions (the server checksums its chunks
//! because the client asked for it in its `Hello`).

mod common;

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use braid::client::{ClientConfig, connect};
use braid::secure::{Key, Security};
use common::*;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

/// Copies `from` to `to`, flipping one bit of the byte at offset `at` (counting from the
/// start of this direction) and every `every` bytes after it.
async fn corrupting_copy(
    mut from: tokio::net::tcp::OwnedReadHalf,
    mut to: tokio::net::tcp::OwnedWriteHalf,
    at: u64,
    every: u64,
    flips: Arc<AtomicUsize>,
) {
    let mut buf = vec![0u8; 64 * 1024];
    let (mut pos, mut next) = (0u64, at);
    loop {
        let n = match from.read(&mut buf).await {
            Ok(0) | Err(_) => break,
            Ok(n) => n,
        };
        while next < pos + n as u64 {
            buf[(next - pos) as usize] ^= 0x10;
            flips.fetch_add(1, Ordering::Relaxed);
            next += every;
        }
        pos += n as u64;
        if to.write_all(&buf[..n]).await.is_err() {
            break;
        }
    }
    let _ = to.shutdown().await;
}

/// A TCP proxy to `target` that corrupts one direction (client to server if `upstream`);
/// returns its address and the number of bits it flipped.
async fn corrupting_proxy(target: SocketAddr, upstream: bool) -> (SocketAddr, Arc<AtomicUsize>) {
    let l = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = l.local_addr().unwrap();
    let flips = Arc::new(AtomicUsize::new(0));
    let f = flips.clone();
    tokio::spawn(async move {
        while let Ok((c, _)) = l.accept().await {
            let Ok(s) = TcpStream::connect(target).await else {
                continue;
            };
            let (cr, cw) = c.into_split();
            let (sr, sw) = s.into_split();
            // Past the handshakes, in the middle of the data; the other way is left alone.
            let (up, down) = if upstream {
                (300_000, u64::MAX)
            } else {
                (u64::MAX, 300_000)
            };
            tokio::spawn(corrupting_copy(cr, sw, up, 700_000, f.clone()));
            tokio::spawn(corrupting_copy(sr, cw, down, 700_000, f.clone()));
        }
    });
    (addr, flips)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn corrupted_chunks_are_caught_both_ways_and_resent() {
    init_logs();
    let key = Key::generate();
    let mut sc = server_config(&key);
    sc.security = Security::Plaintext;
    let (addr, _server) = echo_server(sc).await;
    let (up, up_flips) = corrupting_proxy(addr, true).await;
    let (down, down_flips) = corrupting_proxy(addr, false).await;
    let mut cc = ClientConfig::new(key);
    cc.security = Security::Plaintext;
    cc.engine.crc = true;
    // Only corrupting links: each carries plenty in the direction it corrupts.
    let specs = [
        format!("tcp://{up}").parse().unwrap(),
        format!("tcp://{down}").parse().unwrap(),
    ];
    let conn = connect(&specs, cc).await.unwrap();
    for _ in 0..500 {
        if conn.handle().links().len() >= 2 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let (mut r, mut w) = conn.into_split();
    let len = 20_000_000;
    let (sent, got) = tokio::time::timeout(Duration::from_secs(60), async {
        tokio::join!(write_stream(&mut w, 7, len), read_hash(&mut r))
    })
    .await
    .expect("echo took over 60 s");
    let (sent, got) = (sent.unwrap(), got.unwrap());
    assert_eq!(got.0, len);
    assert_eq!(sent, got.1, "corrupted bytes were delivered");
    let flips = [
        up_flips.load(Ordering::Relaxed),
        down_flips.load(Ordering::Relaxed),
    ];
    assert!(
        flips[0] > 0 && flips[1] > 0,
        "the proxied links carried too little to be corrupted both ways: {flips:?}"
    );
}
