//! Request/response in lock step (like ssh's channel windows): small writes one way gate bulk
//! writes the other way, so any small write left unsent stalls the whole exchange.

mod common;

use std::time::Duration;

use braid::client::{ClientConfig, connect};
use braid::secure::Key;
use common::*;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

const ROUNDS: usize = 400;
const BLOCK: usize = 32 * 1024;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn small_writes_gating_bulk_never_stall() {
    lockstep(BLOCK, ROUNDS, Duration::ZERO).await;
}

/// Like an ssh handshake: small messages back and forth over 4 links.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn small_messages_back_and_forth_never_stall() {
    lockstep(44, 2000, Duration::ZERO).await;
}

/// The same with pauses, so links go idle and keepalives run in between.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn small_messages_with_pauses_never_stall() {
    lockstep(44, 150, Duration::from_millis(7)).await;
}

async fn lockstep(block_len: usize, rounds: usize, pause: Duration) {
    init_logs();
    let key = Key::generate();
    let mut l =
        braid::server::Listener::bind(&["127.0.0.1:0".parse().unwrap()], server_config(&key))
            .await
            .unwrap();
    let braid::spec::ListenSpec::Tcp(addr) = l.local_specs()[0].clone() else {
        panic!()
    };
    let (htx, hrx) = tokio::sync::oneshot::channel();
    let server = tokio::spawn(async move {
        let mut conn = l.accept().await.unwrap();
        let _ = htx.send(conn.handle());
        let block = vec![7u8; block_len];
        let mut ack = [0u8; 1];
        for _ in 0..rounds {
            conn.write_all(&block).await.unwrap();
            conn.read_exact(&mut ack).await.unwrap();
        }
        conn.shutdown().await.unwrap();
    });
    let spec = format!("tcp://{addr}?count=4").parse().unwrap();
    let mut conn = connect(&[spec], ClientConfig::new(key)).await.unwrap();
    let server_handle = hrx.await.unwrap();
    let client_handle = conn.handle();
    let mut buf = vec![0u8; block_len];
    for round in 0..rounds {
        tokio::time::timeout(Duration::from_secs(3), conn.read_exact(&mut buf))
            .await
            .unwrap_or_else(|_| {
                for (who, h) in [("server", &server_handle), ("client", &client_handle)] {
                    eprintln!("{who}: {:?}", h.stats());
                    for l in h.links() {
                        eprintln!("{who}   {}: {:?}", l.id, l.stats);
                    }
                }
                panic!("stalled in round {round}")
            })
            .unwrap();
        if !pause.is_zero() {
            tokio::time::sleep(pause).await;
        }
        conn.write_all(&[1]).await.unwrap();
    }
    server.await.unwrap();
}
