//! Applications over streams: services named in each stream's header, over one mux session
//! inside a braid aggregated connection of three loopback links.

mod common;
mod mux_support;

use std::sync::Arc;
use std::time::Duration;

use braid::mux::Session;
use braid::service::{self, Incoming, OpenError, Request, Services, Status};
use common::{connection_pair, init_logs};
use mux_support::{payload, within};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpListener;

/// A TCP target that echoes each connection back, half-closing after the client's FIN.
async fn tcp_echo_target() -> String {
    let l = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = l.local_addr().unwrap().to_string();
    tokio::spawn(async move {
        while let Ok((s, _)) = l.accept().await {
            tokio::spawn(async move {
                let (mut r, mut w) = s.into_split();
                let _ = tokio::io::copy(&mut r, &mut w).await;
                let _ = w.shutdown().await;
            });
        }
    });
    addr
}

/// A client session to a server connection serving `services`.
async fn client_to(services: Services) -> Session {
    let (c, s) = connection_pair(3).await;
    tokio::spawn(service::serve_connection(s, Arc::new(services)));
    Session::client(c, service::session_config())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn forward_streams_each_reach_the_target_with_half_close() {
    init_logs();
    within(60, async {
        let target = tcp_echo_target().await;
        let session =
            client_to(Services::new().with(service::FORWARD, service::forward(target))).await;
        let mut tasks = Vec::new();
        for i in 0..8u64 {
            let st = service::open(&session, service::FORWARD, b"")
                .await
                .unwrap();
            tasks.push(tokio::spawn(async move {
                let data = payload(i, 300_000 + i as usize);
                let (mut r, mut w) = tokio::io::split(st);
                let d = data.clone();
                let writer = tokio::spawn(async move {
                    w.write_all(&d).await.unwrap();
                    w.shutdown().await.unwrap();
                });
                let mut got = Vec::new();
                r.read_to_end(&mut got).await.unwrap();
                writer.await.unwrap();
                assert!(got == data, "stream {i} differs");
            }));
        }
        for t in tasks {
            t.await.unwrap();
        }
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unknown_service_is_refused_with_its_code_and_the_session_lives_on() {
    init_logs();
    within(30, async {
        let services = Services::new().with("hello", |inc: Incoming| async move {
            if let Ok(mut s) = inc.accept().await {
                let _ = s.write_all(b"hello").await;
                let _ = s.shutdown().await;
            }
        });
        let session = client_to(services).await;
        match service::open(&session, "file", b"").await {
            Err(OpenError::Refused(reply)) => {
                assert_eq!(reply.status, Status::UNKNOWN_SERVICE);
                assert!(reply.message.contains("\"file\""), "{}", reply.message);
                assert!(reply.message.contains("hello"), "{}", reply.message);
            }
            other => panic!("unexpected {other:?}"),
        }
        let mut st = service::open(&session, "hello", b"").await.unwrap();
        let mut got = Vec::new();
        st.read_to_end(&mut got).await.unwrap();
        assert_eq!(got, b"hello");
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unreachable_forward_target_is_reported_unavailable() {
    init_logs();
    within(30, async {
        // A port nobody listens on: bind, learn it, close.
        let dead = {
            let l = TcpListener::bind("127.0.0.1:0").await.unwrap();
            l.local_addr().unwrap().to_string()
        };
        let session =
            client_to(Services::new().with(service::FORWARD, service::forward(dead.clone()))).await;
        match service::open(&session, service::FORWARD, b"").await {
            Err(OpenError::Refused(reply)) => {
                assert_eq!(reply.status, Status::UNAVAILABLE);
                assert!(reply.message.contains(&dead), "{}", reply.message);
            }
            other => panic!("unexpected {other:?}"),
        }
        // Arguments to `forward` are refused.
        match service::open(&session, service::FORWARD, b"10.0.0.1:22").await {
            Err(OpenError::Refused(reply)) => assert_eq!(reply.status, Status::REFUSED),
            other => panic!("unexpected {other:?}"),
        }
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_or_missing_headers_get_an_error_reply_or_a_reset() {
    init_logs();
    within(30, async {
        let mut services = Services::new().with("x", |_| async {});
        services.header_timeout = Duration::from_millis(300);
        let session = client_to(services).await;
        // A header of version 9: BAD_REQUEST, then end of stream.
        let mut st = session.open().await.unwrap();
        st.write_all(&[9, 1, b'x', 0, 0]).await.unwrap();
        let reply = braid::service::read_reply(&mut st).await.unwrap();
        assert_eq!(reply.status, Status::BAD_REQUEST);
        assert!(reply.message.contains("version 9"), "{}", reply.message);
        let mut rest = Vec::new();
        st.read_to_end(&mut rest).await.unwrap();
        assert!(rest.is_empty());
        // A stream that never sends its header is reset after the timeout.
        let mut st = session.open().await.unwrap();
        st.write_all(&Request::new("x", b"").unwrap().encode()[..2])
            .await
            .unwrap();
        let mut b = [0u8; 1];
        let err = st.read(&mut b).await.unwrap_err();
        assert_eq!(err.kind(), std::io::ErrorKind::ConnectionReset);
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_without_the_mux_is_sent_away_and_the_connection_closes() {
    init_logs();
    within(30, async {
        let (mut c, s) = connection_pair(3).await;
        let served = tokio::spawn(service::serve_connection(s, Arc::new(Services::new())));
        // Raw bytes where yamux frames belong: version byte b'h' is a protocol error.
        c.write_all(b"hello world!").await.unwrap();
        c.shutdown().await.unwrap();
        let mut got = Vec::new();
        c.read_to_end(&mut got).await.unwrap();
        // The server's frames end with GoAway(protocol error).
        let last = got.chunks(12).last().unwrap();
        assert_eq!(&last[..2], &[0, 3], "a GoAway frame: {got:?}");
        assert_eq!(&last[8..12], &1u32.to_be_bytes());
        served.await.unwrap();
    })
    .await;
}
