//! Hostile peers against the server's connection teardown: a finished or failed connection
//! lets go of its sockets and tasks, whatever the peer does afterwards.
//!
//! The tests count the process's open files and tokio tasks, so they take turns (`TURN`).

mod common;

use std::net::SocketAddr;
use std::time::Duration;

use braid::proto::agg::frame::{DecodeOutcome, Frame};
use braid::secure::{Key, SecureLink};
use bytes::{Bytes, BytesMut};
use common::*;
use tokio::net::{TcpSocket, TcpStream};
use tokio::sync::mpsc;

/// One test at a time: each counts the process's open files and live tasks.
static TURN: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

fn open_fds() -> usize {
    std::fs::read_dir("/proc/self/fd").unwrap().count()
}

fn alive_tasks() -> usize {
    tokio::runtime::Handle::current()
        .metrics()
        .num_alive_tasks()
}

/// An echo server that also hands the test a handle of every connection.
async fn server(key: &Key) -> (SocketAddr, mpsc::UnboundedReceiver<braid::ConnectionHandle>) {
    let (tx, rx) = mpsc::unbounded_channel();
    let (addr, task) = echo_server_with(server_config(key), move |conn| {
        let tx = tx.clone();
        async move {
            let _ = tx.send(conn.handle());
            let (mut r, mut w) = conn.into_split();
            let _ = tokio::io::copy(&mut r, &mut w).await;
            let _ = tokio::io::AsyncWriteExt::shutdown(&mut w).await;
        }
    })
    .await;
    std::mem::forget(task);
    (addr, rx)
}

/// Security handshake, `Hello` for a new connection, `Welcome`; returns the link and the
/// bytes read past the `Welcome`.
async fn join_new(s: TcpStream, key: &Key) -> (SecureLink, BytesMut) {
    let mut link = secure_initiator(s, key).await;
    let buf = hello_new(&mut link).await;
    (link, buf)
}

async fn send(link: &mut SecureLink, f: Frame) {
    let mut out = BytesMut::new();
    f.encode(&mut out);
    link.writer.write_all(&out).await.unwrap();
}

async fn next_frame(link: &mut SecureLink, buf: &mut BytesMut) -> Option<Frame> {
    loop {
        if let Some(DecodeOutcome::Frame(f)) = Frame::decode(buf).unwrap() {
            return Some(f);
        }
        match link.reader.read().await {
            Ok(Some(b)) => buf.extend_from_slice(&b),
            _ => return None,
        }
    }
}

/// A peer (holding the key) finishes its connection cleanly, then keeps its TCP socket open
/// and says nothing more. Once the connection is over, the server lets go of the link within
/// the drain time (until session 5 its reader task waited on the socket for ever: a socket
/// and a task leaked per such connection).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_silent_peer_after_a_clean_close_leaves_no_socket_or_task_behind() {
    let _turn = TURN.lock().await;
    let key = Key::generate();
    let (addr, mut handles) = server(&key).await;
    tokio::time::sleep(Duration::from_millis(200)).await;
    let (fds0, tasks0) = (open_fds(), alive_tasks());
    const N: usize = 5;
    let mut peers = Vec::new();
    for _ in 0..N {
        let s = TcpStream::connect(addr).await.unwrap();
        let (mut link, mut buf) = join_new(s, &key).await;
        let h = handles.recv().await.unwrap();
        // Our stream: empty, finished.
        send(
            &mut link,
            Frame::Data {
                seq: 0,
                flags: 0x02,
                payload: Bytes::new(),
            },
        )
        .await;
        // Acknowledge the server's end of stream (the echo finishes at once), answer pings,
        // until the server closes its side of the link.
        let mut data_frames = 0u64;
        while let Some(f) = next_frame(&mut link, &mut buf).await {
            match f {
                Frame::Data {
                    seq,
                    flags,
                    payload,
                } => {
                    data_frames += 1;
                    if flags & 0x02 != 0 {
                        send(
                            &mut link,
                            Frame::Ack {
                                link_frames: data_frames,
                                cumulative: seq + payload.len() as u64 + 1,
                                window_end: 1 << 24,
                            },
                        )
                        .await;
                    }
                }
                Frame::Ping { token } => send(&mut link, Frame::Pong { token }).await,
                _ => {}
            }
        }
        // The server says the connection closed cleanly and its driver is done.
        let state = tokio::time::timeout(Duration::from_secs(5), h.closed())
            .await
            .expect("connection did not end");
        assert_eq!(state, braid::ConnectionState::Closed);
        drop(h);
        // Keep the socket open and silent.
        peers.push(link);
    }
    // Well past every drain timeout of the link tasks (2 s).
    tokio::time::sleep(Duration::from_secs(6)).await;
    let (fds1, tasks1) = (open_fds(), alive_tasks());
    assert_eq!(
        fds1,
        fds0 + N,
        "server sockets of {N} finished connections are still open"
    );
    assert_eq!(
        tasks1, tasks0,
        "link tasks of finished connections still alive"
    );
}

/// A peer that stops reading (its link's writer blocks with a batch queued), then resets the
/// connection and goes away: the failed connection ends (until session 5 the driver waited
/// for that writer's `WriteDone`, which never came: `closed()` never returned and the
/// connection's tasks and buffers stayed).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_reset_while_a_write_is_blocked_still_ends_the_connection() {
    let _turn = TURN.lock().await;
    let key = Key::generate();
    let (addr, mut handles) = server(&key).await;
    let sock = TcpSocket::new_v4().unwrap();
    sock.set_recv_buffer_size(4096).unwrap();
    let s = sock.connect(addr).await.unwrap();
    let (mut link, _buf) = join_new(s, &key).await;
    let h = handles.recv().await.unwrap();
    // 1 MiB for the server to echo; we read none of it.
    send(
        &mut link,
        Frame::Data {
            seq: 0,
            flags: 0,
            payload: Bytes::from(vec![7u8; 1 << 20]),
        },
    )
    .await;
    // Keep the link alive (anything received counts) while the server's writer blocks.
    for _ in 0..20 {
        send(&mut link, Frame::Pong { token: 12345 }).await;
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
    assert_eq!(h.state(), braid::ConnectionState::Open);
    send(&mut link, Frame::Reset { code: 7 }).await;
    tokio::time::sleep(Duration::from_millis(200)).await;
    // The peer goes away entirely.
    drop(link);
    let r = tokio::time::timeout(Duration::from_secs(10), h.closed()).await;
    assert!(
        r.is_ok(),
        "the reset connection never finished (state {:?})",
        h.state()
    );
}

/// A listener's control handle that outlives the listener cannot start accept loops nobody
/// would ever stop (before, such a loop kept its socket listening for the process's life).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_control_handle_cannot_add_listeners_after_the_listener_is_gone() {
    let _turn = TURN.lock().await;
    let key = Key::generate();
    let listener =
        braid::server::Listener::bind(&["tcp://127.0.0.1:0".parse().unwrap()], server_config(&key))
            .await
            .unwrap();
    let control = listener.control();
    let extra = control
        .add_listener(&"tcp://127.0.0.1:0".parse().unwrap())
        .await
        .unwrap();
    drop(listener);
    let e = control
        .add_listener(&"tcp://127.0.0.1:0".parse().unwrap())
        .await
        .unwrap_err();
    assert_eq!(e.kind(), std::io::ErrorKind::NotConnected);
    // The loop added while the listener lived was stopped with it.
    let addr: SocketAddr = extra
        .to_string()
        .trim_start_matches("tcp://")
        .parse()
        .unwrap();
    let mut refused = false;
    for _ in 0..50 {
        if TcpStream::connect(addr).await.is_err() {
            refused = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert!(refused, "{addr} still accepts connections");
}
