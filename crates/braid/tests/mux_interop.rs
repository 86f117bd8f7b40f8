//! braid's mux against the `yamux` crate over loopback TCP, braid as client and as server.

mod mux_support;

use std::time::Duration;

use braid::mux::{Config, Session};
use mux_support::{
    YamuxPeer, echo_check, echo_serve, half_closed_exchange, payload, tcp_pair, within,
};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

fn sizes() -> Vec<usize> {
    let mut s = vec![1, 1000, 256 * 1024 + 1, 4 * 1024 * 1024];
    if !cfg!(debug_assertions) {
        s.push(64 * 1024 * 1024);
    }
    s
}

fn test_config() -> Config {
    let mut c = Config::default();
    c.keepalive = None;
    c
}

#[tokio::test]
async fn braid_client_echo_against_yamux_server() {
    within(120, async {
        let (c, s) = tcp_pair().await;
        let mut peer = YamuxPeer::spawn(s, yamux::Mode::Server);
        tokio::spawn(async move {
            while let Some(st) = peer.accept().await {
                tokio::spawn(echo_serve(st));
            }
        });
        let session = Session::client(c, test_config());
        for (i, n) in sizes().into_iter().enumerate() {
            let stream = session.open().await.unwrap();
            echo_check(stream, payload(i as u64, n)).await;
        }
    })
    .await;
}

#[tokio::test]
async fn yamux_client_echo_against_braid_server() {
    within(120, async {
        let (c, s) = tcp_pair().await;
        let session = Session::server(s, test_config());
        tokio::spawn(async move {
            while let Some(st) = session.accept().await {
                tokio::spawn(echo_serve(st));
            }
        });
        let peer = YamuxPeer::spawn(c, yamux::Mode::Client);
        for (i, n) in sizes().into_iter().enumerate() {
            let stream = peer.open().await;
            echo_check(stream, payload(i as u64, n)).await;
        }
    })
    .await;
}

#[tokio::test]
async fn braid_server_opens_streams_to_yamux_client() {
    within(30, async {
        let (c, s) = tcp_pair().await;
        let mut peer = YamuxPeer::spawn(c, yamux::Mode::Client);
        tokio::spawn(async move {
            while let Some(st) = peer.accept().await {
                tokio::spawn(echo_serve(st));
            }
        });
        let session = Session::server(s, test_config());
        let stream = session.open().await.unwrap();
        assert_eq!(stream.id() % 2, 0);
        echo_check(stream, payload(9, 100_000)).await;
    })
    .await;
}

#[tokio::test]
async fn yamux_server_opens_streams_to_braid_client() {
    within(30, async {
        let (c, s) = tcp_pair().await;
        let session = Session::client(c, test_config());
        let peer = YamuxPeer::spawn(s, yamux::Mode::Server);
        let opener = tokio::spawn(async move {
            let st = peer.open().await;
            echo_check(st, payload(3, 70_000)).await;
            peer
        });
        let st = session.accept().await.unwrap();
        assert_eq!(st.id() % 2, 0);
        echo_serve(st).await;
        opener.await.unwrap();
    })
    .await;
}

#[tokio::test]
async fn half_close_both_ways() {
    within(30, async {
        let (c, s) = tcp_pair().await;
        let mut peer = YamuxPeer::spawn(s, yamux::Mode::Server);
        let session = Session::client(c, test_config());
        // braid half-closes first; yamux answers after reading to the end.
        let mut st = session.open().await.unwrap();
        half_closed_exchange(
            &mut st,
            async { peer.accept().await.unwrap() },
            b"request",
            b"response",
        )
        .await;
        assert!(
            st.write_all(b"late").await.is_err(),
            "writing after FIN fails"
        );

        // yamux half-closes first.
        let mut ys = peer.open().await;
        half_closed_exchange(
            &mut ys,
            async { session.accept().await.unwrap() },
            b"ping",
            b"pong",
        )
        .await;
    })
    .await;
}

#[tokio::test]
async fn reset_both_ways() {
    within(30, async {
        let (c, s) = tcp_pair().await;
        let mut peer = YamuxPeer::spawn(s, yamux::Mode::Server);
        let session = Session::client(c, test_config());
        // braid resets: yamux sees the stream end.
        let mut st = session.open().await.unwrap();
        st.write_all(b"x").await.unwrap();
        let mut ys = peer.accept().await.unwrap();
        let mut one = [0u8; 1];
        ys.read_exact(&mut one).await.unwrap();
        st.reset();
        let mut rest = Vec::new();
        let r = ys.read_to_end(&mut rest).await;
        assert!(r.is_err() || rest.is_empty());
        assert!(st.write_all(b"y").await.is_err());

        // yamux drops an open stream (its reset): braid's read fails with ConnectionReset.
        let mut st = session.open().await.unwrap();
        st.write_all(b"z").await.unwrap();
        let mut ys = peer.accept().await.unwrap();
        ys.read_exact(&mut one).await.unwrap();
        drop(ys);
        let mut buf = [0u8; 8];
        let err = st.read(&mut buf).await.unwrap_err();
        assert_eq!(err.kind(), std::io::ErrorKind::ConnectionReset);
        // The session is fine.
        let st = session.open().await.unwrap();
        let ys = peer.accept().await;
        drop((st, ys));
    })
    .await;
}

#[tokio::test]
async fn window_grows_beyond_the_initial_256k() {
    within(60, async {
        let (c, s) = tcp_pair().await;
        let mut peer = YamuxPeer::spawn(s, yamux::Mode::Server);
        let session = Session::client(c, test_config());
        let mut st = session.open().await.unwrap();
        st.write_all(b"go").await.unwrap();
        let mut ys = peer.accept().await.unwrap();
        let mut go = [0u8; 2];
        ys.read_exact(&mut go).await.unwrap();
        // yamux sends 16 MiB; braid reads as fast as it can: its window must grow.
        let data = payload(5, 16 * 1024 * 1024);
        let expect = data.clone();
        let writer = tokio::spawn(async move {
            ys.write_all(&data).await.unwrap();
            ys.shutdown().await.unwrap();
            ys
        });
        let mut got = Vec::new();
        st.read_to_end(&mut got).await.unwrap();
        assert!(got == expect);
        let _ys = writer.await.unwrap();
        // A window bigger than 256 KiB lets the peer have more than 256 KiB in flight: the
        // stream's window is visible through Debug only, so check the data path instead.
        assert_eq!(got.len(), 16 * 1024 * 1024);
    })
    .await;
}

#[tokio::test]
async fn ping_rtt_against_yamux() {
    within(30, async {
        let (c, s) = tcp_pair().await;
        let _peer = YamuxPeer::spawn(s, yamux::Mode::Server);
        let session = Session::client(c, test_config());
        let rtt = session.ping().await.unwrap();
        assert!(rtt < Duration::from_secs(5));
        assert_eq!(session.rtt(), Some(rtt));
    })
    .await;
}

#[tokio::test]
async fn keepalive_pings_are_answered_by_yamux() {
    within(30, async {
        let (c, s) = tcp_pair().await;
        let _peer = YamuxPeer::spawn(s, yamux::Mode::Server);
        let mut config = test_config();
        config.keepalive = Some(Duration::from_millis(50));
        config.ping_timeout = Duration::from_secs(5);
        let session = Session::client(c, config);
        for _ in 0..200 {
            if session.rtt().is_some() {
                return;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        panic!("no keepalive RTT measured");
    })
    .await;
}

#[tokio::test]
async fn braid_go_away_ends_the_yamux_connection_cleanly() {
    within(30, async {
        let (c, s) = tcp_pair().await;
        let mut peer = YamuxPeer::spawn(s, yamux::Mode::Server);
        let session = Session::client(c, test_config());
        session.go_away();
        assert!(session.open().await.is_err());
        let ended = peer.ended.take().unwrap().await.unwrap();
        assert_eq!(ended, None, "yamux saw a clean end");
        session.closed().await;
    })
    .await;
}

#[tokio::test]
async fn yamux_close_is_seen_by_braid() {
    within(30, async {
        let (c, s) = tcp_pair().await;
        let peer = YamuxPeer::spawn(s, yamux::Mode::Server);
        let session = Session::client(c, test_config());
        let st = session.open().await.unwrap();
        peer.close().await;
        // The peer went away: no more inbound streams and opening fails.
        assert!(session.accept().await.is_none());
        session.closed().await;
        assert!(session.open().await.is_err());
        drop(st);
    })
    .await;
}

#[tokio::test]
async fn many_streams_both_ways() {
    within(60, async {
        let (c, s) = tcp_pair().await;
        let mut peer = YamuxPeer::spawn(s, yamux::Mode::Server);
        tokio::spawn(async move {
            while let Some(st) = peer.accept().await {
                tokio::spawn(echo_serve(st));
            }
        });
        let session = Session::client(c, test_config());
        let mut tasks = Vec::new();
        for i in 0..200u64 {
            let st = session.open().await.unwrap();
            tasks.push(tokio::spawn(echo_check(
                st,
                payload(i, 1000 + i as usize * 37),
            )));
        }
        for t in tasks {
            t.await.unwrap();
        }
    })
    .await;
}
