//! One connection over several loopback links: bulk both ways, a link killed, a link added.

mod common;

use std::sync::atomic::Ordering;
use std::time::Duration;

use braid::ConnectionEvent;
use braid::client::{ClientConfig, connect, connect_link};
use braid::secure::Key;
use common::*;

const MB: u64 = 1_000_000;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hundred_mb_each_way_over_four_links() {
    init_logs();
    let key = Key::generate();
    let (addr, _server) = echo_server(server_config(&key)).await;
    let spec = format!("tcp://{addr}?count=4").parse().unwrap();
    let conn = connect(&[spec], ClientConfig::new(key)).await.unwrap();
    let handle = conn.handle();
    let monitor = LinkMonitor::new(handle.clone());
    // `connect` returns with the first link; start once all four are up.
    for _ in 0..500 {
        if handle.links().len() >= 4 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    assert_eq!(handle.links().len(), 4, "links did not come up");
    // Let every link get a round-trip sample (the first keepalive ping, 100 ms) before the
    // transfer: on loopback it can be over before a link the scheduler knows nothing about
    // is needed at all.
    tokio::time::sleep(Duration::from_millis(250)).await;
    let (mut r, mut w) = conn.into_split();
    let len = 100 * MB;
    let t = tokio::time::timeout(Duration::from_secs(120), async {
        let (sent, got) = tokio::join!(write_stream(&mut w, 1, len), read_hash(&mut r));
        (sent.unwrap(), got.unwrap())
    })
    .await
    .expect("transfer took over 120 s");
    assert_eq!(t.1.0, len);
    assert_eq!(t.0, t.1.1, "echoed bytes differ");
    // Four links; one more if the loaded machine starved a link into a false timeout and
    // it was redialled (nothing is lost then either, the hashes above prove it).
    let links = monitor.seen();
    assert!((4..=6).contains(&links.len()), "{links:?}");
    let carried = links
        .iter()
        .filter(|l| handle.link_stats(**l).is_some_and(|s| s.bytes_sent > 0))
        .count();
    assert!(carried >= 4, "only {carried} of {links:?} carried data");
}

/// Both ends send different streams at once: each side checks what the other sent.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn different_streams_each_way_at_once() {
    init_logs();
    let key = Key::generate();
    let mut l =
        braid::server::Listener::bind(&["127.0.0.1:0".parse().unwrap()], server_config(&key))
            .await
            .unwrap();
    let braid::spec::ListenSpec::Tcp(addr) = l.local_specs()[0].clone() else {
        panic!()
    };
    let len = 100 * MB;
    let server = tokio::spawn(async move {
        let conn = l.accept().await.unwrap();
        let (mut r, mut w) = conn.into_split();
        let (sent, got) = tokio::join!(write_stream(&mut w, 2, len), read_hash(&mut r));
        (sent.unwrap(), got.unwrap())
    });
    let spec = format!("tcp://{addr}?count=4").parse().unwrap();
    let conn = connect(&[spec], ClientConfig::new(key)).await.unwrap();
    let (mut r, mut w) = conn.into_split();
    let (sent, got) = tokio::time::timeout(Duration::from_secs(120), async {
        tokio::join!(write_stream(&mut w, 1, len), read_hash(&mut r))
    })
    .await
    .unwrap();
    let (server_sent, server_got) = server.await.unwrap();
    assert_eq!(server_got, (len, sent.unwrap()));
    assert_eq!(got.unwrap(), (len, server_sent));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn killing_a_link_mid_transfer_loses_nothing() {
    init_logs();
    let key = Key::generate();
    let (addr, _server) = echo_server(server_config(&key)).await;
    let (first, _k0) = killable_link(addr).await;
    let conn = connect_link(first, ClientConfig::new(key)).await.unwrap();
    let handle = conn.handle();
    let mut events = handle.events();
    let mut switches = Vec::new();
    for _ in 0..3 {
        let (link, k) = killable_link(addr).await;
        handle.add_raw_link(link).unwrap();
        switches.push(k);
    }
    let (mut r, mut w) = conn.into_split();
    let len = 60 * MB;
    let h2 = handle.clone();
    let killer = tokio::spawn(async move {
        while h2.stats().bytes_read < len / 3 {
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        switches[0].store(true, Ordering::Relaxed);
    });
    let (sent, got) = tokio::time::timeout(Duration::from_secs(120), async {
        tokio::join!(write_stream(&mut w, 3, len), read_hash(&mut r))
    })
    .await
    .unwrap();
    killer.await.unwrap();
    assert_eq!(got.unwrap(), (len, sent.unwrap()));
    let mut downs = 0;
    while let Ok(ev) = events.try_recv() {
        if matches!(ev, ConnectionEvent::LinkDown { .. }) {
            downs += 1;
        }
    }
    assert!(downs >= 1, "the killed link was not reported down");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_link_added_mid_transfer_carries_data() {
    init_logs();
    let key = Key::generate();
    let (addr, _server) = echo_server(server_config(&key)).await;
    let spec: braid::spec::LinkSpec = format!("tcp://{addr}").parse().unwrap();
    let conn = connect(std::slice::from_ref(&spec), ClientConfig::new(key))
        .await
        .unwrap();
    let handle = conn.handle();
    let first = handle.links()[0].id;
    let monitor = LinkMonitor::new(handle.clone());
    let (mut r, mut w) = conn.into_split();
    let len = 60 * MB;
    // A quarter in, the writer waits until the new link is in the connection and has been
    // measured (a round trip), so the rest of the transfer can use it however fast loopback is.
    let h2 = handle.clone();
    let add_link = Box::pin(async move {
        h2.add_link(spec).unwrap();
        for _ in 0..500 {
            let measured = h2
                .links()
                .iter()
                .any(|l| l.id != first && l.stats.srtt > Duration::ZERO);
            if measured {
                return;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        panic!("the added link never joined");
    });
    let (sent, got) = tokio::time::timeout(Duration::from_secs(120), async {
        tokio::join!(
            write_stream_pausing(&mut w, 4, len, Some((len / 4, add_link))),
            read_hash(&mut r)
        )
    })
    .await
    .unwrap();
    assert_eq!(got.unwrap(), (len, sent.unwrap()));
    // The added link (or, on a starved machine, its redialled successor) carried data.
    let added: Vec<_> = monitor.seen().into_iter().filter(|&l| l != first).collect();
    assert!(!added.is_empty());
    let stats: Vec<_> = added.iter().filter_map(|l| handle.link_stats(*l)).collect();
    assert!(
        stats.iter().any(|s| s.bytes_sent > 0),
        "the added link carried nothing: {stats:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unix_and_tcp_links_join_one_connection() {
    init_logs();
    let key = Key::generate();
    let dir = std::env::temp_dir().join(format!("braid-lt-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let sock = dir.join("s.sock");
    let mut l = braid::server::Listener::bind(
        &[
            braid::spec::ListenSpec::Unix(sock.clone()),
            "127.0.0.1:0".parse().unwrap(),
        ],
        server_config(&key),
    )
    .await
    .unwrap();
    let braid::spec::ListenSpec::Tcp(addr) = l.local_specs()[1].clone() else {
        panic!()
    };
    tokio::spawn(async move {
        while let Some(conn) = l.accept().await {
            tokio::spawn(async move {
                let (mut r, mut w) = conn.into_split();
                let _ = tokio::io::copy(&mut r, &mut w).await;
                let _ = tokio::io::AsyncWriteExt::shutdown(&mut w).await;
            });
        }
    });
    let specs = vec![
        braid::spec::LinkSpec::Unix(sock.clone()),
        format!("tcp://{addr}?count=2&cc=cubic").parse().unwrap(),
    ];
    let mut config = ClientConfig::new(key);
    config.dial_timeout = Duration::from_secs(5);
    let conn = connect(&specs, config).await.unwrap();
    let handle = conn.handle();
    while handle.links().len() < 3 {
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    assert!(handle.links().iter().any(|l| l.peer.starts_with("unix:")));
    let (mut r, mut w) = conn.into_split();
    let len = 10 * MB;
    let (sent, got) = tokio::join!(write_stream(&mut w, 5, len), read_hash(&mut r));
    assert_eq!(got.unwrap(), (len, sent.unwrap()));
    let _ = std::fs::remove_dir_all(&dir);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn recycled_links_are_replaced_and_nothing_is_lost() {
    init_logs();
    let key = Key::generate();
    let (addr, _server) = echo_server(server_config(&key)).await;
    let spec = format!("tcp://{addr}?count=2&recycle=256KiB")
        .parse()
        .unwrap();
    let conn = connect(&[spec], ClientConfig::new(key)).await.unwrap();
    // Count links from the connection's events: they come and go faster than polling sees.
    let mut events = conn.handle().events();
    let ups = tokio::spawn(async move {
        let mut n = 0;
        loop {
            match events.recv().await {
                Ok(ConnectionEvent::LinkUp { .. }) => n += 1,
                Ok(ConnectionEvent::Closed | ConnectionEvent::Failed(_))
                | Err(tokio::sync::broadcast::error::RecvError::Closed) => return n,
                _ => {}
            }
        }
    });
    let (mut r, mut w) = conn.into_split();
    let len = 8 * MB;
    let (sent, got) = tokio::time::timeout(Duration::from_secs(60), async {
        tokio::join!(write_stream(&mut w, 7, len), read_hash(&mut r))
    })
    .await
    .unwrap();
    assert_eq!(got.unwrap(), (len, sent.unwrap()));
    drop((r, w));
    // 8 MB over sockets replaced every 256 KiB: many links came and went (the first one
    // came up before the events were subscribed to).
    let ups = tokio::time::timeout(Duration::from_secs(40), ups)
        .await
        .expect("connection did not close")
        .unwrap();
    assert!(ups >= 8, "only {ups} links came up after the first");
}

/// An `exec:` link whose command (a small Python relay) carries the bytes to the server.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn exec_links_carry_a_connection() {
    init_logs();
    if std::process::Command::new("python3")
        .arg("-V")
        .output()
        .is_err()
    {
        eprintln!("SKIPPED: python3 not installed");
        return;
    }
    let key = Key::generate();
    let (addr, _server) = echo_server(server_config(&key)).await;
    let relay = format!(
        "exec:python3 -c 'import socket,sys,threading\n\
         s=socket.create_connection((\"127.0.0.1\",{port}))\n\
         def up():\n\
         \x20 while True:\n\
         \x20   b=sys.stdin.buffer.raw.read(65536)\n\
         \x20   if not b: break\n\
         \x20   s.sendall(b)\n\
         \x20 s.shutdown(socket.SHUT_WR)\n\
         threading.Thread(target=up,daemon=True).start()\n\
         while True:\n\
         \x20 b=s.recv(65536)\n\
         \x20 if not b: break\n\
         \x20 sys.stdout.buffer.write(b); sys.stdout.buffer.flush()\n'",
        port = addr.port()
    );
    let specs = vec![relay.parse().unwrap(), relay.parse().unwrap()];
    let conn = connect(&specs, ClientConfig::new(key)).await.unwrap();
    let handle = conn.handle();
    while handle.links().len() < 2 {
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    assert!(handle.links().iter().all(|l| l.peer.starts_with("exec:")));
    let (mut r, mut w) = conn.into_split();
    let len = 4 * MB;
    let (sent, got) = tokio::time::timeout(Duration::from_secs(60), async {
        tokio::join!(write_stream(&mut w, 8, len), read_hash(&mut r))
    })
    .await
    .unwrap();
    assert_eq!(got.unwrap(), (len, sent.unwrap()));
}

/// `write_chunk`/`read_chunk` move buffers without copying: one buffer larger than the send
/// buffer goes out in parts, and the echo comes back intact through `read_chunk`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn chunk_api_round_trips_buffers_larger_than_the_send_buffer() {
    init_logs();
    let key = Key::generate();
    let (addr, _server) = echo_server(server_config(&key)).await;
    let spec = format!("tcp://{addr}?count=3").parse().unwrap();
    let conn = connect(&[spec], ClientConfig::new(key)).await.unwrap();
    let (mut r, mut w) = conn.into_split();
    // 40 MB in one buffer (the send buffer holds 16 MiB), then small ones.
    let big: Vec<u8> = (0..40_000_000u32)
        .map(|i| (i.wrapping_mul(2_654_435_761) >> 24) as u8)
        .collect();
    let mut want = big.clone();
    let writer = async {
        w.write_chunk(bytes::Bytes::from(big)).await.unwrap();
        for i in 0..100u8 {
            w.write_chunk(bytes::Bytes::from(vec![i; 1000]))
                .await
                .unwrap();
        }
        tokio::io::AsyncWriteExt::shutdown(&mut w).await.unwrap();
    };
    for i in 0..100u8 {
        want.extend_from_slice(&[i; 1000]);
    }
    let reader = async {
        let mut got = Vec::with_capacity(want.len());
        while let Some(b) = r.read_chunk(1 << 20).await.unwrap() {
            assert!(!b.is_empty() && b.len() <= 1 << 20);
            got.extend_from_slice(&b);
        }
        got
    };
    let ((), got) = tokio::time::timeout(Duration::from_secs(60), async {
        tokio::join!(writer, reader)
    })
    .await
    .expect("transfer took over 60 s");
    assert_eq!(got.len(), want.len());
    assert!(got == want, "echoed bytes differ");
}

/// A write that fits in the send buffer is taken whole, also when the one before it ended in
/// the middle of a staging block (it used to be cut at the block's end, and so was every
/// later write of a block's size: twice the writes for the same bytes).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_large_write_is_taken_whole_after_an_odd_sized_one() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    init_logs();
    let (mut client, mut server) = connection_pair(1).await;
    let mut sent = Vec::new();
    for (i, len) in [100_000usize, 256 * 1024, 256 * 1024, 300_000]
        .into_iter()
        .enumerate()
    {
        let buf = vec![i as u8 + 1; len];
        let n = client.write(&buf).await.unwrap();
        assert_eq!(n, len, "write {i} of {len} bytes was cut to {n}");
        sent.extend_from_slice(&buf);
    }
    client.shutdown().await.unwrap();
    let mut got = Vec::new();
    tokio::time::timeout(Duration::from_secs(30), server.read_to_end(&mut got))
        .await
        .expect("read took over 30 s")
        .unwrap();
    assert!(got == sent, "received bytes differ");
}
