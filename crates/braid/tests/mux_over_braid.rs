//! The mux session suite over a real braid aggregated `Connection`: three loopback TCP links
//! (`tcp://127.0.0.1:PORT?count=3`) carry one yamux session. Open/accept both ways, echo of
//! 1 B to a few MiB (64 MiB in release), half-close, reset, many streams, go-away, ping, and a
//! link killed while several streams run.

mod common;
mod mux_support;

use std::sync::atomic::Ordering;
use std::time::Duration;

use braid::client::{ClientConfig, connect_link};
use braid::mux::{Config, Session, SessionError};
use braid::secure::Key;
use common::{connection_pair, echo_server_with, init_logs, killable_link, server_config};
use mux_support::{echo_check, echo_serve, half_closed_exchange, payload, within};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

const LINKS: usize = 3;

/// The settings `braid serve`/`connect` use for the session inside a connection.
fn config() -> Config {
    braid::service::session_config()
}

/// A client and a server session over one aggregated connection of three links.
async fn session_pair() -> (Session, Session) {
    let (c, s) = connection_pair(LINKS).await;
    (Session::client(c, config()), Session::server(s, config()))
}

/// Accepts every stream of `session` and echoes it.
fn spawn_echo_acceptor(session: Session) {
    tokio::spawn(async move {
        while let Some(st) = session.accept().await {
            tokio::spawn(echo_serve(st));
        }
    });
}

fn sizes() -> Vec<usize> {
    let mut s = vec![1, 1000, 256 * 1024 + 1, 4 * 1024 * 1024];
    if !cfg!(debug_assertions) {
        s.push(64 * 1024 * 1024);
    }
    s
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn client_opens_and_echoes_1_byte_to_mebibytes() {
    init_logs();
    within(180, async {
        let (client, server) = session_pair().await;
        spawn_echo_acceptor(server);
        for (i, n) in sizes().into_iter().enumerate() {
            let st = client.open().await.unwrap();
            assert_eq!(st.id() % 2, 1);
            echo_check(st, payload(i as u64, n)).await;
        }
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn server_opens_and_echoes_1_byte_to_mebibytes() {
    init_logs();
    within(180, async {
        let (client, server) = session_pair().await;
        spawn_echo_acceptor(client);
        for (i, n) in sizes().into_iter().enumerate() {
            let st = server.open().await.unwrap();
            assert_eq!(st.id() % 2, 0);
            echo_check(st, payload(100 + i as u64, n)).await;
        }
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn half_close_both_ways() {
    init_logs();
    within(30, async {
        let (client, server) = session_pair().await;
        // The client half-closes first; the server answers after reading to the end.
        let mut st = client.open().await.unwrap();
        half_closed_exchange(
            &mut st,
            async { server.accept().await.unwrap() },
            b"request",
            b"response",
        )
        .await;
        assert!(
            st.write_all(b"late").await.is_err(),
            "writing after FIN fails"
        );

        // The server opens and half-closes first.
        let mut st = server.open().await.unwrap();
        half_closed_exchange(
            &mut st,
            async { client.accept().await.unwrap() },
            b"ping",
            b"pong",
        )
        .await;
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reset_both_ways() {
    init_logs();
    within(30, async {
        let (client, server) = session_pair().await;
        let mut one = [0u8; 1];
        // The client resets: the server's read fails.
        let mut st = client.open().await.unwrap();
        st.write_all(b"x").await.unwrap();
        let mut acc = server.accept().await.unwrap();
        acc.read_exact(&mut one).await.unwrap();
        st.reset();
        let err = acc.read(&mut one).await.unwrap_err();
        assert_eq!(err.kind(), std::io::ErrorKind::ConnectionReset);
        assert!(st.write_all(b"y").await.is_err());

        // The server resets: the client's read fails.
        let mut st = client.open().await.unwrap();
        st.write_all(b"z").await.unwrap();
        let mut acc = server.accept().await.unwrap();
        acc.read_exact(&mut one).await.unwrap();
        acc.reset();
        let err = st.read(&mut one).await.unwrap_err();
        assert_eq!(err.kind(), std::io::ErrorKind::ConnectionReset);

        // The session is fine.
        let st = client.open().await.unwrap();
        spawn_echo_acceptor(server);
        echo_check(st, payload(7, 5000)).await;
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn many_streams_both_ways() {
    init_logs();
    within(120, async {
        let (client, server) = session_pair().await;
        spawn_echo_acceptor(server.clone());
        spawn_echo_acceptor(client.clone());
        let mut tasks = Vec::new();
        for i in 0..200u64 {
            let (side, seed) = if i % 2 == 0 {
                (&client, i)
            } else {
                (&server, 1000 + i)
            };
            let st = side.open().await.unwrap();
            tasks.push(tokio::spawn(echo_check(
                st,
                payload(seed, 1000 + i as usize * 37),
            )));
        }
        for t in tasks {
            t.await.unwrap();
        }
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn go_away_drains_then_the_aggregated_connection_closes() {
    init_logs();
    within(30, async {
        let (c, s) = connection_pair(LINKS).await;
        let (ch, sh) = (c.handle(), s.handle());
        let client = Session::client(c, config());
        let server = Session::server(s, config());
        let mut st = client.open().await.unwrap();
        st.write_all(b"before").await.unwrap();
        let mut acc = server.accept().await.unwrap();
        server.go_away();
        assert!(matches!(server.open().await, Err(SessionError::GoingAway)));
        for _ in 0..200 {
            if client.open().await.is_err() {
                break;
            }
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        assert!(client.open().await.is_err());
        // The existing stream finishes both ways.
        let mut b = [0u8; 6];
        acc.read_exact(&mut b).await.unwrap();
        acc.write_all(b"after").await.unwrap();
        acc.shutdown().await.unwrap();
        st.shutdown().await.unwrap();
        let mut got = Vec::new();
        st.read_to_end(&mut got).await.unwrap();
        assert_eq!(got, b"after");
        let mut rest = Vec::new();
        acc.read_to_end(&mut rest).await.unwrap();
        drop((st, acc));
        server.closed().await;
        client.closed().await;
        // Both sessions shut their end of the braid connection down: it closes cleanly,
        // everything acknowledged.
        assert_eq!(ch.closed().await, braid::ConnectionState::Closed);
        assert_eq!(sh.closed().await, braid::ConnectionState::Closed);
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ping_measures_rtt_both_ways() {
    init_logs();
    within(30, async {
        let (client, server) = session_pair().await;
        let rtt = client.ping().await.unwrap();
        assert!(rtt < Duration::from_secs(5));
        // The session's own start-up ping may be answered last: some RTT is recorded.
        assert!(client.rtt().is_some());
        assert!(server.ping().await.unwrap() < Duration::from_secs(5));
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn keepalive_pings_cross_the_aggregated_connection() {
    init_logs();
    within(30, async {
        let (c, s) = connection_pair(LINKS).await;
        let mut cc = config();
        cc.keepalive = Some(Duration::from_millis(50));
        cc.ping_timeout = Duration::from_secs(5);
        let client = Session::client(c, cc);
        let _server = Session::server(s, config());
        for _ in 0..300 {
            if client.rtt().is_some() {
                return;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        panic!("no keepalive RTT measured");
    })
    .await;
}

/// Several bulk streams each way while one of the three links dies: every stream's bytes
/// arrive intact (the engine resends the dead link's frames on the others).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn killing_a_link_mid_transfer_loses_nothing_on_any_stream() {
    init_logs();
    within(180, async {
        let key = Key::generate();
        let (addr, _server_task) = echo_server_with(server_config(&key), |conn| async move {
            let session = Session::server(conn, config());
            while let Some(st) = session.accept().await {
                tokio::spawn(echo_serve(st));
            }
        })
        .await;
        let (first, k0) = killable_link(addr).await;
        let conn = connect_link(first, ClientConfig::new(key)).await.unwrap();
        let handle = conn.handle();
        let mut switches = vec![k0];
        for _ in 1..LINKS {
            let (link, k) = killable_link(addr).await;
            handle.add_raw_link(link).unwrap();
            switches.push(k);
        }
        while handle.links().len() < LINKS {
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        let session = Session::client(conn, config());
        let per_stream = if cfg!(debug_assertions) {
            6 * 1024 * 1024
        } else {
            32 * 1024 * 1024
        };
        let streams = 4;
        // Kill once a third of the echoes came back.
        let kill_at = (streams * per_stream / 3) as u64;
        let h2 = handle.clone();
        let killer = tokio::spawn(async move {
            while h2.stats().bytes_read < kill_at {
                tokio::time::sleep(Duration::from_millis(2)).await;
            }
            switches[1].store(true, Ordering::Relaxed);
            h2.stats().bytes_read
        });
        let mut tasks = Vec::new();
        for i in 0..streams {
            let st = session.open().await.unwrap();
            tasks.push(tokio::spawn(echo_check(
                st,
                payload(50 + i as u64, per_stream),
            )));
        }
        for t in tasks {
            t.await.unwrap();
        }
        let killed_at = killer.await.unwrap();
        assert!(
            killed_at < (streams * per_stream) as u64,
            "the link died only after the transfer"
        );
        assert!(
            handle.links().len() < LINKS,
            "the killed link is still listed: {:?}",
            handle.links()
        );
    })
    .await;
}

/// The same with a link removed through the API (as `braid links remove` does) instead of
/// killed: streams both ways carry on over the remaining links.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn removing_a_link_mid_transfer_loses_nothing_on_any_stream() {
    init_logs();
    within(180, async {
        let (c, s) = connection_pair(LINKS).await;
        let handle = c.handle();
        let client = Session::client(c, config());
        let server = Session::server(s, config());
        spawn_echo_acceptor(server.clone());
        spawn_echo_acceptor(client.clone());
        let per_stream = if cfg!(debug_assertions) {
            4 * 1024 * 1024
        } else {
            32 * 1024 * 1024
        };
        let remove_at = (4 * per_stream / 3) as u64;
        let h2 = handle.clone();
        let remover = tokio::spawn(async move {
            while h2.stats().bytes_read < remove_at {
                tokio::time::sleep(Duration::from_millis(2)).await;
            }
            let victim = h2.links()[0].id;
            h2.remove_link(victim).unwrap();
            victim
        });
        let mut tasks = Vec::new();
        for i in 0..4u64 {
            let side = if i % 2 == 0 { &client } else { &server };
            let st = side.open().await.unwrap();
            tasks.push(tokio::spawn(echo_check(st, payload(70 + i, per_stream))));
        }
        for t in tasks {
            t.await.unwrap();
        }
        let victim = remover.await.unwrap();
        // Removal is graceful: the link drains (no new data), then leaves the list.
        let removed = handle.links().into_iter().find(|l| l.id == victim);
        assert!(
            removed.is_none_or(|l| l.stats.state != Some(braid::proto::agg::LinkState::Active)),
            "removed link {victim} still active: {:?}",
            handle.links()
        );
    })
    .await;
}
