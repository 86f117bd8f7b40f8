//! braid's mux against itself: limits, drain, close with reason, stalled readers, many streams,
//! and a transport other than TCP (an in-memory duplex pipe).

mod mux_support;

use std::time::Duration;

use braid::mux::{Config, ConnectionError, GoAwayCode, Session, SessionError};
use braid_proto::mux::INITIAL_WINDOW;
use mux_support::{payload, tcp_pair, within};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

fn config() -> Config {
    let mut c = Config::default();
    c.keepalive = None;
    c
}

async fn pair_with(client: Config, server: Config) -> (Session, Session) {
    let (c, s) = tcp_pair().await;
    (Session::client(c, client), Session::server(s, server))
}

#[tokio::test]
async fn echo_over_an_in_memory_duplex() {
    within(60, async {
        let (a, b) = tokio::io::duplex(64 * 1024);
        let client = Session::client(a, config());
        let server = Session::server(b, config());
        tokio::spawn(async move {
            while let Some(mut st) = server.accept().await {
                tokio::spawn(async move {
                    let (mut r, mut w) = tokio::io::split(&mut st);
                    tokio::io::copy(&mut r, &mut w).await.unwrap();
                    w.shutdown().await.unwrap();
                });
            }
        });
        let data = payload(1, 3 * 1024 * 1024 + 7);
        let st = client.open().await.unwrap();
        let (mut r, mut w) = tokio::io::split(st);
        let d = data.clone();
        let writer = tokio::spawn(async move {
            w.write_all(&d).await.unwrap();
            w.shutdown().await.unwrap();
            w
        });
        let mut got = Vec::new();
        r.read_to_end(&mut got).await.unwrap();
        assert!(got == data);
        writer.await.unwrap();
    })
    .await;
}

#[tokio::test]
async fn streams_beyond_the_accept_backlog_are_reset_and_the_session_survives() {
    within(30, async {
        let mut sc = config();
        sc.max_pending_accept = 4;
        let (client, server) = pair_with(config(), sc).await;
        let mut streams = Vec::new();
        for _ in 0..6 {
            let mut st = client.open().await.unwrap();
            st.write_all(b"x").await.unwrap();
            streams.push(st);
        }
        // The 5th and 6th are refused with RST.
        let mut reset = 0;
        for st in &mut streams[4..] {
            let mut b = [0u8; 1];
            if let Err(e) = st.read(&mut b).await {
                assert_eq!(e.kind(), std::io::ErrorKind::ConnectionReset);
                reset += 1;
            }
        }
        assert_eq!(reset, 2);
        for _ in 0..4 {
            let mut st = server.accept().await.unwrap();
            let mut b = [0u8; 1];
            st.read_exact(&mut b).await.unwrap();
            st.write_all(b"y").await.unwrap();
        }
        for st in &mut streams[..4] {
            let mut b = [0u8; 1];
            st.read_exact(&mut b).await.unwrap();
            assert_eq!(&b, b"y");
        }
        // New streams still work.
        let mut st = client.open().await.unwrap();
        st.write_all(b"z").await.unwrap();
        let mut acc = server.accept().await.unwrap();
        let mut b = [0u8; 1];
        acc.read_exact(&mut b).await.unwrap();
    })
    .await;
}

#[tokio::test]
async fn max_streams_refuses_the_excess() {
    within(30, async {
        let mut sc = config();
        sc.max_streams = 2;
        let (client, server) = pair_with(config(), sc).await;
        let mut a = client.open().await.unwrap();
        let mut b = client.open().await.unwrap();
        let mut c = client.open().await.unwrap();
        for s in [&mut a, &mut b, &mut c] {
            s.write_all(b"1").await.unwrap();
        }
        let mut one = [0u8; 1];
        let err = c.read(&mut one).await.unwrap_err();
        assert_eq!(err.kind(), std::io::ErrorKind::ConnectionReset);
        let _x = server.accept().await.unwrap();
        let _y = server.accept().await.unwrap();
    })
    .await;
}

#[tokio::test]
async fn go_away_drains_existing_streams_then_ends() {
    within(30, async {
        let (client, server) = pair_with(config(), config()).await;
        let mut st = client.open().await.unwrap();
        st.write_all(b"before").await.unwrap();
        let mut acc = server.accept().await.unwrap();
        server.go_away();
        // No new streams either way.
        assert!(matches!(server.open().await, Err(SessionError::GoingAway)));
        for _ in 0..100 {
            if matches!(client.open().await, Err(SessionError::GoingAway)) {
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
        // Drained: the server ends the connection, and the client sees it.
        server.closed().await;
        client.closed().await;
    })
    .await;
}

#[tokio::test]
async fn close_with_a_reason_fails_streams_on_both_sides() {
    within(30, async {
        let (client, server) = pair_with(config(), config()).await;
        let mut st = client.open().await.unwrap();
        st.write_all(b"x").await.unwrap();
        let mut acc = server.accept().await.unwrap();
        server.close(GoAwayCode::InternalError);
        match server.closed().await {
            SessionError::Closed(ConnectionError::LocallyClosed(GoAwayCode::InternalError)) => {}
            other => panic!("unexpected {other:?}"),
        }
        let mut b = [0u8; 1];
        assert!(acc.read(&mut b).await.is_err() || b == *b"x");
        // The client's stream ends: either an error or end of stream, never a hang.
        let r = st.read(&mut b).await;
        assert!(matches!(r, Err(_) | Ok(0)));
        client.closed().await;
        assert!(client.accept().await.is_none());
    })
    .await;
}

#[tokio::test]
async fn stalled_reader_blocks_only_its_own_stream() {
    within(60, async {
        let (client, server) = pair_with(config(), config()).await;
        let mut stalled = client.open().await.unwrap();
        let mut busy = client.open().await.unwrap();
        stalled.write_all(b"s").await.unwrap();
        busy.write_all(b"b").await.unwrap();
        let _stalled_acc = server.accept().await.unwrap(); // never read
        let mut busy_acc = server.accept().await.unwrap();
        // Fill the stalled stream's window completely.
        let filler = tokio::spawn(async move {
            let chunk = vec![0u8; 64 * 1024];
            loop {
                if tokio::time::timeout(Duration::from_millis(300), stalled.write_all(&chunk))
                    .await
                    .is_err()
                {
                    return stalled; // blocked on the window
                }
            }
        });
        let _stalled = filler.await.unwrap();
        // The other stream still carries 8 MiB.
        let data = payload(2, 8 * 1024 * 1024);
        let d = data.clone();
        let w = tokio::spawn(async move {
            busy.write_all(&d).await.unwrap();
            busy.shutdown().await.unwrap();
            busy
        });
        let mut got = vec![0u8; 1];
        busy_acc.read_exact(&mut got).await.unwrap();
        let mut rest = Vec::new();
        busy_acc.read_to_end(&mut rest).await.unwrap();
        assert!(rest == data);
        w.await.unwrap();
        // And pings are answered while a stream is blocked.
        client.ping().await.unwrap();
    })
    .await;
}

#[tokio::test]
async fn keepalive_measures_rtt_and_a_silent_peer_times_out() {
    within(30, async {
        let mut cc = config();
        cc.keepalive = Some(Duration::from_millis(20));
        cc.ping_timeout = Duration::from_millis(300);
        // A peer that never answers: a raw socket nobody reads.
        let (c, _silent) = tcp_pair().await;
        let client = Session::client(c, cc);
        match client.closed().await {
            SessionError::Closed(ConnectionError::KeepaliveTimeout) => {}
            other => panic!("unexpected {other:?}"),
        }
    })
    .await;
}

#[tokio::test]
async fn thousands_of_streams_each_echo() {
    within(120, async {
        // Each stream's initial window counts against the session window: 20,000 of them
        // take 5 GiB of it (a bound on memory, not an allocation).
        let window = 20_000 * u64::from(INITIAL_WINDOW) + (128 << 20);
        let mut c = config();
        c.max_pending_open = 10_000;
        c.max_streams = 20_000;
        c.max_session_window = window;
        let mut s = config();
        s.max_pending_accept = 10_000;
        s.max_streams = 20_000;
        s.max_session_window = window;
        let (client, server) = pair_with(c, s).await;
        tokio::spawn(async move {
            while let Some(mut st) = server.accept().await {
                tokio::spawn(async move {
                    let mut b = vec![0u8; 1024];
                    st.read_exact(&mut b).await.unwrap();
                    st.write_all(&b).await.unwrap();
                });
            }
        });
        let n = if cfg!(debug_assertions) {
            2_000
        } else {
            10_000
        };
        let mut tasks = Vec::new();
        for i in 0..n {
            let mut st = client.open().await.unwrap();
            tasks.push(tokio::spawn(async move {
                let data = payload(i, 1024);
                st.write_all(&data).await.unwrap();
                let mut back = vec![0u8; 1024];
                st.read_exact(&mut back).await.unwrap();
                assert_eq!(back, data);
            }));
        }
        for t in tasks {
            t.await.unwrap();
        }
        // Dropped streams are forgotten once both sides finished.
        for _ in 0..200 {
            if client.stream_count() == 0 {
                break;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        assert_eq!(client.stream_count(), 0);
    })
    .await;
}

#[tokio::test]
async fn dropping_the_session_handle_drains_and_closes() {
    within(30, async {
        let (client, server) = pair_with(config(), config()).await;
        let mut st = client.open().await.unwrap();
        drop(client);
        st.write_all(b"still works").await.unwrap();
        st.shutdown().await.unwrap();
        let mut acc = server.accept().await.unwrap();
        let mut got = Vec::new();
        acc.read_to_end(&mut got).await.unwrap();
        assert_eq!(got, b"still works");
        drop(acc);
        drop(st);
        server.closed().await;
    })
    .await;
}

#[tokio::test]
async fn read_chunk_returns_data_without_copy_and_none_at_end() {
    within(30, async {
        let (client, server) = pair_with(config(), config()).await;
        let mut st = client.open().await.unwrap();
        st.write_all(&payload(4, 100_000)).await.unwrap();
        st.shutdown().await.unwrap();
        let mut acc = server.accept().await.unwrap();
        let mut got = Vec::new();
        while let Some(chunk) = acc.read_chunk(10_000).await.unwrap() {
            assert!(chunk.len() <= 10_000);
            got.extend_from_slice(&chunk);
        }
        assert!(got == payload(4, 100_000));
    })
    .await;
}

#[tokio::test]
async fn a_peer_speaking_garbage_gets_go_away_protocol_error() {
    within(30, async {
        let (mut raw, s) = tcp_pair().await;
        let server = Session::server(s, config());
        raw.write_all(&[9u8; 12]).await.unwrap(); // version 9
        let mut got = Vec::new();
        raw.read_to_end(&mut got).await.unwrap();
        // Frames: the start-up ping, then GoAway with code 1 (protocol error).
        let frames: Vec<&[u8]> = got.chunks(12).collect();
        let last = frames.last().unwrap();
        assert_eq!(&last[..2], &[0, 3], "a GoAway frame");
        assert_eq!(&last[8..12], &1u32.to_be_bytes());
        match server.closed().await {
            SessionError::Closed(ConnectionError::PeerMisbehaved(_)) => {}
            other => panic!("unexpected {other:?}"),
        }
    })
    .await;
}

#[tokio::test]
async fn a_vanished_peer_fails_streams_instead_of_hanging() {
    within(30, async {
        let (c, mut raw) = tcp_pair().await;
        let client = Session::client(c, config());
        let mut st = client.open().await.unwrap();
        st.write_all(b"hello").await.unwrap();
        let mut some = [0u8; 12];
        raw.read_exact(&mut some).await.unwrap();
        // The peer's socket goes away without a GoAway.
        drop(raw);
        let mut buf = [0u8; 16];
        let r = st.read(&mut buf).await;
        assert!(r.is_err(), "a read on a dead session fails: {r:?}");
        client.closed().await;
        assert!(client.open().await.is_err());
        assert!(st.write_all(b"more").await.is_err());
    })
    .await;
}

#[tokio::test]
async fn keeps_reading_while_its_writes_are_blocked() {
    within(60, async {
        // A peer that floods pings and never reads: our answers back up, yet we must keep
        // consuming its input (both sides blocked on writes is rust-yamux#227's deadlock).
        let (mut raw, s) = tcp_pair().await;
        let server = Session::server(s, config());
        let mut ping = [0u8; 12];
        ping[1] = 2; // Ping
        ping[3] = 1; // SYN
        let flood: Vec<u8> = ping.iter().copied().cycle().take(12 * 1_000_000).collect();
        raw.write_all(&flood).await.unwrap(); // completes only if the session keeps reading
        // A stream opened after the flood still arrives.
        let mut syn = [0u8; 12];
        syn[1] = 1; // WindowUpdate
        syn[3] = 1; // SYN
        syn[7] = 1; // stream 1
        raw.write_all(&syn).await.unwrap();
        let st = server.accept().await.unwrap();
        assert_eq!(st.id(), 1);
    })
    .await;
}

/// A vectored transport that takes a few bytes at a time and often is not ready: large
/// writes that go straight to the transport leave remainders the driver must send first.
struct Choppy {
    inner: tokio::net::TcpStream,
    seed: u64,
}

impl Choppy {
    fn next(&mut self) -> u64 {
        self.seed ^= self.seed << 13;
        self.seed ^= self.seed >> 7;
        self.seed ^= self.seed << 17;
        self.seed
    }
}

impl tokio::io::AsyncRead for Choppy {
    fn poll_read(
        self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
        buf: &mut tokio::io::ReadBuf<'_>,
    ) -> std::task::Poll<std::io::Result<()>> {
        std::pin::Pin::new(&mut self.get_mut().inner).poll_read(cx, buf)
    }
}

impl tokio::io::AsyncWrite for Choppy {
    fn poll_write(
        self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
        buf: &[u8],
    ) -> std::task::Poll<std::io::Result<usize>> {
        self.poll_write_vectored(cx, &[std::io::IoSlice::new(buf)])
    }

    fn poll_write_vectored(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
        bufs: &[std::io::IoSlice<'_>],
    ) -> std::task::Poll<std::io::Result<usize>> {
        let r = self.next();
        if r % 4 == 0 {
            cx.waker().wake_by_ref();
            return std::task::Poll::Pending;
        }
        // A few bytes (inside a frame header) or up to ~40 KiB, cut anywhere.
        let mut limit = if r % 3 == 0 {
            (r >> 8) as usize % 24 + 1
        } else {
            (r >> 8) as usize % 40_000 + 1
        };
        let mut cut = Vec::new();
        for b in bufs {
            if limit == 0 {
                break;
            }
            let k = b.len().min(limit);
            cut.push(std::io::IoSlice::new(&b[..k]));
            limit -= k;
        }
        std::pin::Pin::new(&mut self.inner).poll_write_vectored(cx, &cut)
    }

    fn is_write_vectored(&self) -> bool {
        true
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

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn large_writes_over_a_choppy_transport_arrive_intact_and_in_order() {
    within(120, async {
        let (c, s) = tcp_pair().await;
        let client = Session::client(
            Choppy {
                inner: c,
                seed: 0x9e37_79b9_7f4a_7c15,
            },
            config(),
        );
        let server = Session::server(
            Choppy {
                inner: s,
                seed: 0x2545_f491_4f6c_dd1d,
            },
            config(),
        );
        tokio::spawn(async move {
            while let Some(mut st) = server.accept().await {
                tokio::spawn(async move {
                    let (mut r, mut w) = tokio::io::split(&mut st);
                    tokio::io::copy(&mut r, &mut w).await.unwrap();
                    w.shutdown().await.unwrap();
                });
            }
        });
        let mut tasks = Vec::new();
        for i in 0..6u64 {
            let st = client.open().await.unwrap();
            tasks.push(tokio::spawn(async move {
                let data = payload(i, 2 * 1024 * 1024 + 1000 * i as usize);
                let (mut r, mut w) = tokio::io::split(st);
                let d = data.clone();
                let writer = tokio::spawn(async move {
                    // Writes of many sizes: direct (large) and queued (small) ones mixed.
                    let mut at = 0;
                    let mut k = 0;
                    while at < d.len() {
                        let n = [300_000, 70_000, 5_000, 20_000, 1][k % 5].min(d.len() - at);
                        w.write_all(&d[at..at + n]).await.unwrap();
                        at += n;
                        k += 1;
                    }
                    w.shutdown().await.unwrap();
                    w
                });
                let mut got = Vec::new();
                r.read_to_end(&mut got).await.unwrap();
                assert!(got == data, "stream {i} corrupted");
                writer.await.unwrap();
            }));
        }
        for t in tasks {
            t.await.unwrap();
        }
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn writers_waiting_for_the_transport_survive_cancelled_writes() {
    within(120, async {
        // Many large writers take turns at the transport; some give up waiting (a write
        // cancelled by a timeout) right when their turn comes. The others must not wait for
        // them, and every byte still arrives once and in order.
        let (client, server) = pair_with(config(), config()).await;
        tokio::spawn(async move {
            while let Some(mut st) = server.accept().await {
                tokio::spawn(async move {
                    let (mut r, mut w) = tokio::io::split(&mut st);
                    tokio::io::copy(&mut r, &mut w).await.unwrap();
                    w.shutdown().await.unwrap();
                });
            }
        });
        let mut tasks = Vec::new();
        for i in 0..24u64 {
            let st = client.open().await.unwrap();
            tasks.push(tokio::spawn(async move {
                let data = payload(i, 3 * 1024 * 1024);
                let (mut r, mut w) = tokio::io::split(st);
                let d = data.clone();
                let writer = tokio::spawn(async move {
                    let mut at = 0;
                    let mut k = 0u64;
                    while at < d.len() {
                        let end = (at + 200_000).min(d.len());
                        k += 1;
                        if (k + i) % 3 == 0 {
                            // Written in full or not at all: a cancelled `write` took nothing.
                            let t = Duration::from_micros(20 + 37 * (k % 7));
                            if let Ok(n) = tokio::time::timeout(t, w.write(&d[at..end])).await {
                                at += n.unwrap();
                            }
                        } else {
                            at += w.write(&d[at..end]).await.unwrap();
                        }
                    }
                    w.shutdown().await.unwrap();
                    w
                });
                let mut got = Vec::new();
                r.read_to_end(&mut got).await.unwrap();
                assert!(got == data, "stream {i} corrupted");
                writer.await.unwrap();
            }));
        }
        for t in tasks {
            t.await.unwrap();
        }
    })
    .await;
}

/// The server lets go of its session while a stream the client opened still waits to be
/// accepted: the client's stream is reset (not left waiting for an ACK forever) and both
/// sessions end.
#[tokio::test]
async fn a_stream_never_accepted_is_reset_when_the_session_is_dropped() {
    let (c, s) = mux_support::tcp_pair().await;
    let mut config = braid::mux::Config::default();
    config.keepalive = None;
    let client = braid::mux::Session::client(c, config.clone());
    let server = braid::mux::Session::server(s, config);
    let mut st = client.open().await.unwrap();
    st.write_all(b"request").await.unwrap();
    for _ in 0..200 {
        if server.stream_count() == 1 {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(10)).await;
    }
    assert_eq!(server.stream_count(), 1, "the stream reached the server");
    drop(server);
    let mut b = [0u8; 16];
    let read = tokio::time::timeout(std::time::Duration::from_secs(5), st.read(&mut b))
        .await
        .expect("the client's stream ends");
    assert!(read.is_err(), "reset, not a clean end: {read:?}");
    tokio::time::timeout(std::time::Duration::from_secs(5), client.closed())
        .await
        .expect("the client's session ends");
}
