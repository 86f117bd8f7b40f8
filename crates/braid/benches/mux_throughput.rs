//! Stream multiplexer benchmarks, side by side with raw TCP and the `yamux` crate over loopback,
//! in one run, reporting ratios.
//!
//! ```text
//! cargo bench -p braid --bench mux_throughput            # full run (~1-2 min)
//! cargo bench -p braid --bench mux_throughput -- quick   # shorter measurements
//! ```
//!
//! Everything runs in one process on a 2-worker tokio runtime: both ends of every connection
//! share the machine, as in an in-process loopback test.

#[path = "../tests/mux_support/mod.rs"]
mod mux_support;

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use braid::mux::{Config, Session};
use mux_support::{YamuxPeer, YamuxStream, tcp_pair};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};

const CHUNK: usize = 256 * 1024;

/// CPU time (user + system, all threads) of this process, from `/proc/self/stat`.
fn cpu_time() -> Duration {
    let stat = std::fs::read_to_string("/proc/self/stat").unwrap_or_default();
    // Fields after the command name (which may hold spaces): utime and stime are the 12th and
    // 13th, in clock ticks of 1/100 s.
    let rest = stat.rsplit(')').next().unwrap_or("");
    let f: Vec<u64> = rest
        .split_whitespace()
        .skip(11)
        .take(2)
        .map(|x| x.parse().unwrap_or(0))
        .collect();
    Duration::from_millis(f.iter().sum::<u64>() * 10)
}

/// CPU time the process spent during the last measured window (set by `bulk` and
/// `braid_zero_copy`): throughput per CPU-second is steadier than throughput alone on a machine
/// shared with other work.
static LAST_CPU_MS: AtomicU64 = AtomicU64::new(0);

fn last_cpu() -> Duration {
    Duration::from_millis(LAST_CPU_MS.load(Ordering::Relaxed))
}

fn record_cpu(before: Duration) {
    LAST_CPU_MS.store(
        cpu_time().saturating_sub(before).as_millis() as u64,
        Ordering::Relaxed,
    );
}

fn braid_config() -> Config {
    let mut c = Config::default();
    c.keepalive = None;
    c.max_streams = 40_000;
    c.max_pending_accept = 40_000;
    c.max_pending_open = 40_000;
    // Every stream's initial window counts against the session window (10 GiB for 40,000
    // streams): no session cap, like the yamux side's `set_max_connection_receive_window(None)`.
    c.max_session_window = u64::MAX;
    c.send_buffer = 1048576;
    if let Some(w) = std::env::var("MUX_BENCH_WINDOW")
        .ok()
        .and_then(|v| v.parse().ok())
    {
        c.max_stream_window = w;
    }
    c
}

fn yamux_config() -> yamux::Config {
    let mut c = yamux::Config::default();
    // Its default 1 GiB connection window only allows 4096 streams.
    c.set_max_connection_receive_window(None);
    c.set_max_num_streams(40_000);
    c
}

/// Opens `n` stream pairs between two ends of one transport.
enum Kind {
    Braid,
    Yamux,
}

struct Pairs {
    client: Vec<Box<dyn Io>>,
    server: Vec<Box<dyn Io>>,
    _keep: Box<dyn std::any::Any + Send>,
}

trait Io: AsyncRead + AsyncWrite + Unpin + Send + 'static {}
impl<T: AsyncRead + AsyncWrite + Unpin + Send + 'static> Io for T {}

async fn streams(kind: &Kind, n: usize) -> Pairs {
    let (c, s) = tcp_pair().await;
    match kind {
        Kind::Braid => {
            let client = Session::client(c, braid_config());
            let server = Session::server(s, braid_config());
            let mut cs: Vec<Box<dyn Io>> = Vec::new();
            let mut ss: Vec<Box<dyn Io>> = Vec::new();
            for _ in 0..n {
                let mut st = client.open().await.unwrap();
                st.write_all(&[0]).await.unwrap();
                cs.push(Box::new(st));
                let mut acc = server.accept().await.unwrap();
                let mut b = [0u8; 1];
                acc.read_exact(&mut b).await.unwrap();
                // Answer, so the yamux crate's ACK goes out (it ACKs lazily, with the first
                // frame, and stops opening at 256 un-ACKed streams).
                acc.write_all(&b).await.unwrap();
                let last = cs.last_mut().unwrap();
                last.read_exact(&mut b).await.unwrap();
                ss.push(Box::new(acc));
            }
            Pairs {
                client: cs,
                server: ss,
                _keep: Box::new((client, server)),
            }
        }
        Kind::Yamux => {
            let client = YamuxPeer::spawn_with(c, yamux::Mode::Client, yamux_config());
            let mut server = YamuxPeer::spawn_with(s, yamux::Mode::Server, yamux_config());
            let mut cs: Vec<Box<dyn Io>> = Vec::new();
            let mut ss: Vec<Box<dyn Io>> = Vec::new();
            for _ in 0..n {
                let mut st: YamuxStream = client.open().await;
                st.write_all(&[0]).await.unwrap();
                cs.push(Box::new(st));
                let mut acc = server.accept().await.unwrap();
                let mut b = [0u8; 1];
                acc.read_exact(&mut b).await.unwrap();
                // Answer, so the yamux crate's ACK goes out (it ACKs lazily, with the first
                // frame, and stops opening at 256 un-ACKed streams).
                acc.write_all(&b).await.unwrap();
                let last = cs.last_mut().unwrap();
                last.read_exact(&mut b).await.unwrap();
                ss.push(Box::new(acc));
            }
            Pairs {
                client: cs,
                server: ss,
                _keep: Box::new((client, server)),
            }
        }
    }
}

/// A bulk writer: `CHUNK`-byte blocks until `stop`, then a shutdown.
async fn write_until(mut w: Box<dyn Io>, stop: Arc<AtomicBool>) -> Box<dyn Io> {
    let buf = vec![0x5au8; CHUNK];
    while !stop.load(Ordering::Relaxed) {
        if w.write_all(&buf).await.is_err() {
            break;
        }
    }
    let _ = w.shutdown().await;
    w
}

/// A bulk reader: reads to the end (or an error), adding what it reads to `counter`.
async fn read_counting(mut r: Box<dyn Io>, counter: Arc<AtomicU64>) -> Box<dyn Io> {
    let mut buf = vec![0u8; CHUNK];
    while let Ok(n @ 1..) = r.read(&mut buf).await {
        counter.fetch_add(n as u64, Ordering::Relaxed);
    }
    r
}

/// Waits for each task, at most 10 s each (a stuck contender must not hang the bench).
async fn join_all<T>(tasks: Vec<tokio::task::JoinHandle<T>>) {
    for t in tasks {
        let _ = tokio::time::timeout(Duration::from_secs(10), t).await;
    }
}

/// Bulk: every client stream writes as fast as it can for `dur`; returns bytes received per
/// stream during the measured window (after a warm-up).
async fn bulk(client: Vec<Box<dyn Io>>, server: Vec<Box<dyn Io>>, dur: Duration) -> Vec<u64> {
    let stop = Arc::new(AtomicBool::new(false));
    let counters: Vec<Arc<AtomicU64>> = (0..server.len())
        .map(|_| Arc::new(AtomicU64::new(0)))
        .collect();
    let tasks: Vec<_> = client
        .into_iter()
        .map(|w| tokio::spawn(write_until(w, stop.clone())))
        .collect();
    let readers: Vec<_> = server
        .into_iter()
        .zip(counters.iter().cloned())
        .map(|(r, counter)| tokio::spawn(read_counting(r, counter)))
        .collect();
    tokio::time::sleep(Duration::from_millis(300)).await;
    let cpu = cpu_time();
    let before: Vec<u64> = counters.iter().map(|c| c.load(Ordering::Relaxed)).collect();
    tokio::time::sleep(dur).await;
    let after: Vec<u64> = counters.iter().map(|c| c.load(Ordering::Relaxed)).collect();
    record_cpu(cpu);
    stop.store(true, Ordering::Relaxed);
    join_all(tasks).await;
    join_all(readers).await;
    before.iter().zip(after).map(|(b, a)| a - b).collect()
}

/// One braid stream with the zero-copy API: `write_chunk` of a shared block, `read_chunk`.
async fn braid_zero_copy(dur: Duration) -> u64 {
    let (c, s) = tcp_pair().await;
    let client = Session::client(c, braid_config());
    let server = Session::server(s, braid_config());
    let mut w = client.open().await.unwrap();
    w.write_all(&[0]).await.unwrap();
    let mut r = server.accept().await.unwrap();
    let mut b = [0u8; 1];
    r.read_exact(&mut b).await.unwrap();
    let stop = Arc::new(AtomicBool::new(false));
    let counter = Arc::new(AtomicU64::new(0));
    let writer = {
        let stop = stop.clone();
        tokio::spawn(async move {
            let block = bytes::Bytes::from(vec![0x5au8; CHUNK]);
            while !stop.load(Ordering::Relaxed) {
                if w.write_chunk(block.clone()).await.is_err() {
                    break;
                }
            }
            let _ = w.shutdown().await;
            w
        })
    };
    let reader = {
        let counter = counter.clone();
        tokio::spawn(async move {
            while let Ok(Some(chunk)) = r.read_chunk(usize::MAX).await {
                counter.fetch_add(chunk.len() as u64, Ordering::Relaxed);
            }
            r
        })
    };
    tokio::time::sleep(Duration::from_millis(300)).await;
    let cpu = cpu_time();
    let before = counter.load(Ordering::Relaxed);
    tokio::time::sleep(dur).await;
    let after = counter.load(Ordering::Relaxed);
    record_cpu(cpu);
    stop.store(true, Ordering::Relaxed);
    let _ = tokio::time::timeout(Duration::from_secs(10), writer).await;
    let _ = tokio::time::timeout(Duration::from_secs(10), reader).await;
    after - before
}

/// What runs over the loopback socket(s) in a split-ends run.
#[derive(Clone, Copy, PartialEq)]
enum Contender {
    /// `n` raw TCP connections.
    Raw,
    /// `n` braid streams over one TCP connection.
    Braid,
    /// `n` yamux-crate streams over one TCP connection.
    Yamux,
}

/// A connected pair of blocking loopback sockets with TCP_NODELAY and cubic congestion
/// control (this kernel defaults to bbr; every contender gets cubic).
fn std_pair() -> (std::net::TcpStream, std::net::TcpStream) {
    let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let c = std::net::TcpStream::connect(l.local_addr().unwrap()).unwrap();
    let s = l.accept().unwrap().0;
    for x in [&c, &s] {
        x.set_nodelay(true).unwrap();
        x.set_nonblocking(true).unwrap();
        socket2::SockRef::from(x)
            .set_tcp_congestion(b"cubic")
            .expect("cubic congestion control");
    }
    (c, s)
}

/// Runs `f` on a new thread with its own single-threaded tokio runtime.
fn on_own_thread<F, Fut>(name: &str, f: F) -> std::thread::JoinHandle<()>
where
    F: FnOnce() -> Fut + Send + 'static,
    Fut: std::future::Future<Output = ()>,
{
    // Named, so profiles tell the two ends apart (`perf report --sort comm`).
    std::thread::Builder::new()
        .name(name.into())
        .spawn(move || {
            tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .unwrap()
                .block_on(f())
        })
        .unwrap()
}

/// One side of [`split_bulk`] on its own thread (`sender` or `receiver`): sets up its ends
/// of the streams, waits at `ready` for the other side, counts itself in `started`, then runs
/// `task(i, end)` for every stream until they end.
fn split_side<F, Fut>(
    kind: Contender,
    socks: Vec<std::net::TcpStream>,
    n: usize,
    client: bool,
    (ready, started): (Arc<tokio::sync::Barrier>, Arc<AtomicU64>),
    task: F,
) -> std::thread::JoinHandle<()>
where
    F: Fn(usize, Box<dyn Io>) -> Fut + Send + 'static,
    Fut: std::future::Future<Output = Box<dyn Io>> + Send + 'static,
{
    let name = if client { "sender" } else { "receiver" };
    on_own_thread(name, move || async move {
        let (ends, keep) = split_end(kind, socks, n, client).await;
        ready.wait().await;
        started.fetch_add(1, Ordering::Relaxed);
        let tasks: Vec<_> = ends
            .into_iter()
            .enumerate()
            .map(|(i, end)| tokio::spawn(task(i, end)))
            .collect();
        join_all(tasks).await;
        drop(keep);
    })
}

/// One end of a split-ends run: the contender's streams (or raw sockets) over `socks`, each
/// stream opened (client) or accepted (server) and one byte exchanged both ways (so the
/// yamux crate's lazy ACK goes out), and whatever must live as long as they do.
async fn split_end(
    kind: Contender,
    socks: Vec<std::net::TcpStream>,
    n: usize,
    client: bool,
) -> (Vec<Box<dyn Io>>, Option<Box<dyn std::any::Any>>) {
    async fn exchange<S: AsyncRead + AsyncWrite + Unpin>(st: &mut S, client: bool) {
        let mut b = [0u8; 1];
        if client {
            st.write_all(&b).await.unwrap();
            st.read_exact(&mut b).await.unwrap();
        } else {
            st.read_exact(&mut b).await.unwrap();
            st.write_all(&b).await.unwrap();
        }
    }
    let mut socks = socks
        .into_iter()
        .map(|s| tokio::net::TcpStream::from_std(s).unwrap());
    let mut ends: Vec<Box<dyn Io>> = Vec::new();
    let keep: Option<Box<dyn std::any::Any>> = match kind {
        Contender::Raw => {
            ends.extend(socks.map(|s| Box::new(s) as Box<dyn Io>));
            None
        }
        Contender::Braid => {
            let io = socks.next().unwrap();
            let sess = if client {
                Session::client(io, braid_config())
            } else {
                Session::server(io, braid_config())
            };
            for _ in 0..n {
                let mut st = if client {
                    sess.open().await.unwrap()
                } else {
                    sess.accept().await.unwrap()
                };
                exchange(&mut st, client).await;
                ends.push(Box::new(st));
            }
            Some(Box::new(sess))
        }
        Contender::Yamux => {
            let mode = if client {
                yamux::Mode::Client
            } else {
                yamux::Mode::Server
            };
            let mut peer = YamuxPeer::spawn_with(socks.next().unwrap(), mode, yamux_config());
            for _ in 0..n {
                let mut st = if client {
                    peer.open().await
                } else {
                    peer.accept().await.unwrap()
                };
                exchange(&mut st, client).await;
                ends.push(Box::new(st));
            }
            Some(Box::new(peer))
        }
    };
    (ends, keep)
}

/// Bulk with the two ends apart, as two processes would be: the sending end on one thread,
/// the receiving end on another, each with its own single-threaded runtime (on this 2-core
/// machine, one core each). In one shared 2-worker runtime, where tasks land decides the
/// result: one raw TCP connection swings 26-60 Gbit/s between rounds as its sender and
/// receiver share a worker or not. Returns bytes received per stream during the measured
/// window; `LAST_CPU_MS` gets the CPU time of the window.
fn split_bulk(kind: Contender, n: usize, dur: Duration) -> Vec<u64> {
    let pairs: Vec<_> = (0..if kind == Contender::Raw { n } else { 1 })
        .map(|_| std_pair())
        .collect();
    let (cs, ss): (Vec<_>, Vec<_>) = pairs.into_iter().unzip();
    let stop = Arc::new(AtomicBool::new(false));
    let counters: Vec<Arc<AtomicU64>> = (0..n).map(|_| Arc::new(AtomicU64::new(0))).collect();
    // Both ends set up before either starts (waiting asynchronously: each end's runtime must
    // keep running its session meanwhile); `started` tells this thread.
    let ready = Arc::new(tokio::sync::Barrier::new(2));
    let started = Arc::new(AtomicU64::new(0));
    let sender = {
        let stop = stop.clone();
        let side = (ready.clone(), started.clone());
        split_side(kind, cs, n, true, side, move |_, w| {
            write_until(w, stop.clone())
        })
    };
    let receiver = {
        let counters = counters.clone();
        let side = (ready.clone(), started.clone());
        split_side(kind, ss, n, false, side, move |i, r| {
            read_counting(r, counters[i].clone())
        })
    };
    let t0 = Instant::now();
    while started.load(Ordering::Relaxed) < 2 {
        assert!(
            t0.elapsed() < Duration::from_secs(30),
            "split bulk setup hung"
        );
        std::thread::sleep(Duration::from_millis(1));
    }
    std::thread::sleep(Duration::from_millis(300));
    let cpu = cpu_time();
    let before: Vec<u64> = counters.iter().map(|c| c.load(Ordering::Relaxed)).collect();
    std::thread::sleep(dur);
    let after: Vec<u64> = counters.iter().map(|c| c.load(Ordering::Relaxed)).collect();
    record_cpu(cpu);
    stop.store(true, Ordering::Relaxed);
    sender.join().unwrap();
    receiver.join().unwrap();
    before.iter().zip(after).map(|(b, a)| a - b).collect()
}

fn median(v: &mut [f64]) -> f64 {
    if v.is_empty() {
        return f64::NAN;
    }
    v.sort_by(|a, b| a.total_cmp(b));
    v[v.len() / 2]
}

/// One contender's measurements over the rounds of a section.
#[derive(Default)]
struct Runs {
    gbit: Vec<f64>,
    /// Gbit moved per CPU-second the whole process used (both ends, all threads).
    per_cpu: Vec<f64>,
}

impl Runs {
    fn push(&mut self, bytes: u64, dur: Duration) {
        self.gbit.push(gbit(bytes, dur));
        let cpu = last_cpu().max(Duration::from_millis(10));
        self.per_cpu
            .push(bytes as f64 * 8.0 / 1e9 / cpu.as_secs_f64());
    }

    fn median(&self) -> f64 {
        median(&mut self.gbit.clone())
    }

    fn efficiency(&self) -> f64 {
        median(&mut self.per_cpu.clone())
    }
}

/// Median of per-round ratios `a[i] / b[i]`, and the ratios themselves (rounds where both were
/// measured): each round measures the baseline right before the contender, so the ratio of one
/// round is steadier than the ratio of two medians on a noisy machine.
fn ratios(a: &[f64], b: &[f64]) -> (f64, Vec<f64>) {
    let r: Vec<f64> = a.iter().zip(b).map(|(x, y)| x / y).collect();
    (median(&mut r.clone()), r)
}

fn pct(r: &[f64]) -> String {
    let v: Vec<String> = r.iter().map(|x| format!("{:.0}%", x * 100.0)).collect();
    v.join(" ")
}

fn gbit(bytes: u64, dur: Duration) -> f64 {
    bytes as f64 * 8.0 / dur.as_secs_f64() / 1e9
}

async fn raw_tcp(n: usize, dur: Duration) -> Vec<u64> {
    let mut cs: Vec<Box<dyn Io>> = Vec::new();
    let mut ss: Vec<Box<dyn Io>> = Vec::new();
    for _ in 0..n {
        let (c, s) = tcp_pair().await;
        cs.push(Box::new(c));
        ss.push(Box::new(s));
    }
    bulk(cs, ss, dur).await
}

fn fairness(per: &[u64]) -> (f64, f64) {
    let mean = per.iter().sum::<u64>() as f64 / per.len() as f64;
    let min = *per.iter().min().unwrap_or(&0) as f64 / mean;
    let max = *per.iter().max().unwrap_or(&0) as f64 / mean;
    (min, max)
}

fn rss_bytes() -> u64 {
    let statm = std::fs::read_to_string("/proc/self/statm").unwrap_or_default();
    let pages: u64 = statm
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or(0);
    pages * 4096
}

async fn idle_rss(kind: &Kind, n: usize) -> f64 {
    // Warm the allocator and runtime with a small run first.
    drop(streams(kind, 10).await);
    let before = rss_bytes();
    let pairs = streams(kind, n).await;
    tokio::time::sleep(Duration::from_millis(200)).await;
    let after = rss_bytes();
    drop(pairs);
    (after.saturating_sub(before)) as f64 / n as f64
}

/// Open + first byte: open a stream, write 1 byte, the server accepts and echoes it.
async fn open_latency(kind: &Kind, n: usize) -> (Duration, Duration) {
    let (c, s) = tcp_pair().await;
    let mut samples = Vec::with_capacity(n);
    match kind {
        Kind::Braid => {
            let client = Session::client(c, braid_config());
            let server = Session::server(s, braid_config());
            tokio::spawn(async move {
                while let Some(mut st) = server.accept().await {
                    tokio::spawn(async move {
                        let mut b = [0u8; 1];
                        if st.read_exact(&mut b).await.is_ok() {
                            let _ = st.write_all(&b).await;
                        }
                    });
                }
            });
            for _ in 0..n {
                let t = Instant::now();
                let mut st = client.open().await.unwrap();
                st.write_all(&[1]).await.unwrap();
                let mut b = [0u8; 1];
                st.read_exact(&mut b).await.unwrap();
                samples.push(t.elapsed());
            }
        }
        Kind::Yamux => {
            let client = YamuxPeer::spawn_with(c, yamux::Mode::Client, yamux_config());
            let mut server = YamuxPeer::spawn_with(s, yamux::Mode::Server, yamux_config());
            tokio::spawn(async move {
                while let Some(mut st) = server.accept().await {
                    tokio::spawn(async move {
                        let mut b = [0u8; 1];
                        if st.read_exact(&mut b).await.is_ok() {
                            let _ = st.write_all(&b).await;
                        }
                    });
                }
            });
            for _ in 0..n {
                let t = Instant::now();
                let mut st = client.open().await;
                st.write_all(&[1]).await.unwrap();
                let mut b = [0u8; 1];
                st.read_exact(&mut b).await.unwrap();
                samples.push(t.elapsed());
            }
        }
    }
    percentiles(&mut samples)
}

fn percentiles(samples: &mut [Duration]) -> (Duration, Duration) {
    samples.sort();
    let p = |q: f64| samples[((samples.len() as f64 - 1.0) * q) as usize];
    (p(0.5), p(0.99))
}

/// 10,000 streams at once, each echoing 1 KiB; returns the time until all completed.
async fn many_echo(kind: &Kind, n: usize) -> Duration {
    let pairs = streams(kind, 0).await;
    drop(pairs);
    let (c, s) = tcp_pair().await;
    let t = Instant::now();
    let mut tasks = Vec::new();
    macro_rules! run {
        ($open:expr) => {
            for i in 0..n {
                let mut st = $open;
                tasks.push(tokio::spawn(async move {
                    let data = vec![i as u8; 1024];
                    st.write_all(&data).await.unwrap();
                    let mut back = vec![0u8; 1024];
                    st.read_exact(&mut back).await.unwrap();
                    assert_eq!(back, data);
                }));
            }
        };
    }
    match kind {
        Kind::Braid => {
            let client = Session::client(c, braid_config());
            let server = Session::server(s, braid_config());
            tokio::spawn(async move {
                while let Some(mut st) = server.accept().await {
                    tokio::spawn(async move {
                        let mut b = vec![0u8; 1024];
                        if st.read_exact(&mut b).await.is_ok() {
                            let _ = st.write_all(&b).await;
                        }
                    });
                }
            });
            run!(client.open().await.unwrap());
            for t in tasks.drain(..) {
                t.await.unwrap();
            }
        }
        Kind::Yamux => {
            let client = YamuxPeer::spawn_with(c, yamux::Mode::Client, yamux_config());
            let mut server = YamuxPeer::spawn_with(s, yamux::Mode::Server, yamux_config());
            tokio::spawn(async move {
                while let Some(mut st) = server.accept().await {
                    tokio::spawn(async move {
                        let mut b = vec![0u8; 1024];
                        if st.read_exact(&mut b).await.is_ok() {
                            let _ = st.write_all(&b).await;
                        }
                    });
                }
            });
            run!(client.open().await);
            for t in tasks.drain(..) {
                t.await.unwrap();
            }
        }
    }
    t.elapsed()
}

/// Small-message round trips (64 B) on one stream while `bulk_streams` others run bulk.
async fn rtt_under_load(kind: &Kind, bulk_streams: usize, n: usize) -> (Duration, Duration) {
    let mut pairs = streams(kind, bulk_streams + 1).await;
    let mut ping_c = pairs.client.pop().unwrap();
    let mut ping_s = pairs.server.pop().unwrap();
    let stop = Arc::new(AtomicBool::new(false));
    let mut tasks = Vec::new();
    for mut w in pairs.client.drain(..) {
        let stop = stop.clone();
        tasks.push(tokio::spawn(async move {
            let buf = vec![1u8; CHUNK];
            while !stop.load(Ordering::Relaxed) {
                if w.write_all(&buf).await.is_err() {
                    break;
                }
            }
            w
        }));
    }
    for mut r in pairs.server.drain(..) {
        let stop = stop.clone();
        tasks.push(tokio::spawn(async move {
            let mut buf = vec![0u8; CHUNK];
            while !stop.load(Ordering::Relaxed) {
                if matches!(r.read(&mut buf).await, Ok(0) | Err(_)) {
                    break;
                }
            }
            r
        }));
    }
    let echo = tokio::spawn(async move {
        let mut b = [0u8; 64];
        while ping_s.read_exact(&mut b).await.is_ok() {
            if ping_s.write_all(&b).await.is_err() {
                break;
            }
        }
    });
    tokio::time::sleep(Duration::from_millis(200)).await;
    let mut samples = Vec::with_capacity(n);
    let msg = [7u8; 64];
    let mut back = [0u8; 64];
    for _ in 0..n {
        let t = Instant::now();
        ping_c.write_all(&msg).await.unwrap();
        ping_c.read_exact(&mut back).await.unwrap();
        samples.push(t.elapsed());
    }
    stop.store(true, Ordering::Relaxed);
    drop(ping_c);
    echo.abort();
    for t in tasks {
        t.abort();
    }
    drop(pairs);
    percentiles(&mut samples)
}

fn us(d: Duration) -> f64 {
    d.as_secs_f64() * 1e6
}

fn main() {
    let quick = std::env::args().any(|a| a == "quick");
    // Optional section filter: `-- bulk1 bulk100 idle open echo rtt`.
    let only: Vec<String> = std::env::args()
        .skip(1)
        .filter(|a| {
            ["split", "idle", "bulk1", "bulk100", "open", "echo", "rtt"].contains(&a.as_str())
        })
        .collect();
    // `MUX_BENCH_ONLY=raw|braid|braid-chunks|yamux`: run only that contender in bulk1 and
    // bulk100 (for profiling).
    let profile = std::env::var("MUX_BENCH_ONLY").ok();
    let run = |name: &str| only.is_empty() || only.iter().any(|o| o == name);
    let dur = if quick {
        Duration::from_millis(700)
    } else {
        Duration::from_secs(3)
    };
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    // First: RSS growth is only meaningful before other sections' memory was freed into
    // the allocator (it would be reused, and the growth undercounted).
    if run("idle") {
        rt.block_on(async {
            println!("## 10,000 idle streams: RSS per stream (both ends in this process)");
            let b = idle_rss(&Kind::Braid, 10_000).await;
            let y = idle_rss(&Kind::Yamux, 10_000).await;
            println!("braid {:.0} B/stream | yamux {:.0} B/stream\n", b, y);
        });
    }
    if run("split") {
        println!("# bulk with each end on its own thread and runtime (like two processes), cubic");
        let rounds = if quick { 3 } else { 5 };
        for n in [1usize, 100] {
            println!("\n## {n} bulk stream(s), one session, vs {n} raw TCP connection(s)");
            let (mut raw, mut br, mut ya) = (Runs::default(), Runs::default(), Runs::default());
            let (mut bfair, mut yfair) = (Vec::new(), Vec::new());
            for _ in 0..rounds {
                for (kind, runs) in [
                    (Contender::Raw, &mut raw),
                    (Contender::Braid, &mut br),
                    (Contender::Yamux, &mut ya),
                ] {
                    if profile.as_deref().is_some_and(|p| {
                        p != match kind {
                            Contender::Raw => "raw",
                            Contender::Braid => "braid",
                            Contender::Yamux => "yamux",
                        }
                    }) {
                        continue;
                    }
                    let per = split_bulk(kind, n, dur);
                    runs.push(per.iter().sum(), dur);
                    if std::env::var("MUX_BENCH_DEBUG").is_ok() && n > 1 {
                        let mean = per.iter().sum::<u64>() as f64 / per.len() as f64;
                        let v: Vec<String> = per
                            .iter()
                            .map(|x| format!("{:.2}", *x as f64 / mean))
                            .collect();
                        eprintln!("per-stream share: {}", v.join(" "));
                    }
                    match kind {
                        Contender::Braid => bfair.push(fairness(&per)),
                        Contender::Yamux => yfair.push(fairness(&per)),
                        Contender::Raw => {}
                    }
                }
            }
            println!(
                "rounds (Gbit/s): raw {:.2?} braid {:.2?} yamux {:.2?}",
                raw.gbit, br.gbit, ya.gbit
            );
            let (b, bs) = ratios(&br.gbit, &raw.gbit);
            let (y, ys) = ratios(&ya.gbit, &raw.gbit);
            let (by, _) = ratios(&br.gbit, &ya.gbit);
            let (be, _) = ratios(&br.per_cpu, &raw.per_cpu);
            let (ye, _) = ratios(&ya.per_cpu, &raw.per_cpu);
            println!(
                "braid {:.0}% of raw TCP ({}) | yamux {:.0}% ({}) | braid/yamux {by:.2}x",
                b * 100.0,
                pct(&bs),
                y * 100.0,
                pct(&ys)
            );
            println!(
                "Gbit per CPU-second, ratio to raw: braid {:.0}% | yamux {:.0}% (medians: raw {:.1}, braid {:.1}, yamux {:.1})",
                be * 100.0,
                ye * 100.0,
                raw.efficiency(),
                br.efficiency(),
                ya.efficiency()
            );
            if n > 1 {
                let worst = |f: &[(f64, f64)]| {
                    (
                        f.iter().map(|x| x.0).fold(f64::INFINITY, f64::min),
                        f.iter().map(|x| x.1).fold(0.0, f64::max),
                    )
                };
                let ((bmin, bmax), (ymin, ymax)) = (worst(&bfair), worst(&yfair));
                println!(
                    "per-stream min/max of mean (worst round): braid {bmin:.2}/{bmax:.2} | yamux {ymin:.2}/{ymax:.2}"
                );
            }
        }
        println!();
    }
    rt.block_on(async {
        println!("# mux benchmarks (loopback TCP, 2 tokio workers, measure {dur:?})");

        if run("bulk1") {
        println!("\n## one bulk stream (median of interleaved rounds)");
        // Interleaved rounds, median of each: the machine is shared and noisy.
        let rounds = if quick { 3 } else { 5 };
        let (mut raw, mut br, mut zc, mut ya) = (Runs::default(), Runs::default(), Runs::default(), Runs::default());
        for _ in 0..rounds {
            if profile.is_none() || profile.as_deref() == Some("raw") {
                raw.push(raw_tcp(1, dur).await.iter().sum(), dur);
            }
            if profile.is_none() || profile.as_deref() == Some("braid") {
                let pairs = streams(&Kind::Braid, 1).await;
                br.push(bulk(pairs.client, pairs.server, dur).await.iter().sum(), dur);
            }
            if profile.is_none() || profile.as_deref() == Some("braid-chunks") {
                zc.push(braid_zero_copy(dur).await, dur);
            }
            if profile.is_none() || profile.as_deref() == Some("yamux") {
                let pairs = streams(&Kind::Yamux, 1).await;
                ya.push(bulk(pairs.client, pairs.server, dur).await.iter().sum(), dur);
            }
        }
        println!(
            "rounds (Gbit/s): raw {:.2?} braid {:.2?} braid-chunks {:.2?} yamux {:.2?}",
            raw.gbit, br.gbit, zc.gbit, ya.gbit
        );
        let (raw_g, br_g, zc_g, ya_g) = (raw.median(), br.median(), zc.median(), ya.median());
        let (br_r, br_rs) = ratios(&br.gbit, &raw.gbit);
        let (zc_r, zc_rs) = ratios(&zc.gbit, &raw.gbit);
        let (ya_r, ya_rs) = ratios(&ya.gbit, &raw.gbit);
        let (by_r, by_rs) = ratios(&br.gbit, &ya.gbit);
        println!(
            "medians: raw TCP {raw_g:.2} Gbit/s | braid {br_g:.2} | braid zero-copy {zc_g:.2} | yamux {ya_g:.2}"
        );
        println!(
            "braid AsyncRead/AsyncWrite: {:.0}% of raw TCP (median of per-round ratios: {}) | {:.2}x yamux ({})",
            br_r * 100.0,
            pct(&br_rs),
            by_r,
            by_rs.iter().map(|x| format!("{x:.2}x")).collect::<Vec<_>>().join(" ")
        );
        println!(
            "braid zero-copy API (write_chunk/read_chunk): {:.0}% of raw TCP ({}) | yamux {:.0}% of raw TCP ({})",
            zc_r * 100.0,
            pct(&zc_rs),
            ya_r * 100.0,
            pct(&ya_rs)
        );
        let (br_e, _) = ratios(&br.per_cpu, &raw.per_cpu);
        let (zc_e, _) = ratios(&zc.per_cpu, &raw.per_cpu);
        let (ya_e, _) = ratios(&ya.per_cpu, &raw.per_cpu);
        println!(
            "Gbit per CPU-second (both ends), median of per-round ratios to raw: braid {:.0}% | braid zero-copy {:.0}% | yamux {:.0}% (medians: raw {:.1}, braid {:.1}, braid zero-copy {:.1}, yamux {:.1})",
            br_e * 100.0,
            zc_e * 100.0,
            ya_e * 100.0,
            raw.efficiency(),
            br.efficiency(),
            zc.efficiency(),
            ya.efficiency()
        );
        }

        if run("bulk100") {
        println!("\n## 100 concurrent bulk streams, one session (median of interleaved rounds)");
        println!("baselines: 1 raw TCP connection, and 100 raw TCP connections at once");
        let rounds = if quick { 3 } else { 5 };
        let (mut raw1, mut raw100, mut br, mut ya) = (Runs::default(), Runs::default(), Runs::default(), Runs::default());
        let (mut bfair, mut yfair) = (Vec::new(), Vec::new());
        for _ in 0..rounds {
            if profile.is_none() || profile.as_deref() == Some("raw") {
                raw1.push(raw_tcp(1, dur).await.iter().sum(), dur);
                // Right before braid: the ratio that matters most is taken back to back.
                raw100.push(raw_tcp(100, dur).await.iter().sum(), dur);
            }
            if profile.is_none() || profile.as_deref() == Some("braid") {
                let pairs = streams(&Kind::Braid, 100).await;
                let per = bulk(pairs.client, pairs.server, dur).await;
                br.push(per.iter().sum(), dur);
                if std::env::var("MUX_BENCH_DEBUG").is_ok() {
                    let mean = per.iter().sum::<u64>() as f64 / per.len() as f64;
                    let v: Vec<String> = per.iter().map(|x| format!("{:.2}", *x as f64 / mean)).collect();
                    eprintln!("per-stream share: {}", v.join(" "));
                }
                bfair.push(fairness(&per));
            }
            if profile.is_none() || profile.as_deref() == Some("yamux") {
                let pairs = streams(&Kind::Yamux, 100).await;
                let per = bulk(pairs.client, pairs.server, dur).await;
                ya.push(per.iter().sum(), dur);
                yfair.push(fairness(&per));
            }
        }
        println!(
            "rounds (Gbit/s): 1 raw {:.2?} 100 raw {:.2?} braid {:.2?} yamux {:.2?}",
            raw1.gbit, raw100.gbit, br.gbit, ya.gbit
        );
        let (raw1_g, raw100_g, br_g, ya_g) = (raw1.median(), raw100.median(), br.median(), ya.median());
        let worst = |f: &[(f64, f64)]| {
            (
                f.iter().map(|x| x.0).fold(f64::INFINITY, f64::min),
                f.iter().map(|x| x.1).fold(0.0, f64::max),
            )
        };
        let ((bmin, bmax), (ymin, ymax)) = (worst(&bfair), worst(&yfair));
        let (b100, b100s) = ratios(&br.gbit, &raw100.gbit);
        let (b1, b1s) = ratios(&br.gbit, &raw1.gbit);
        let (y100, y100s) = ratios(&ya.gbit, &raw100.gbit);
        let (by, bys) = ratios(&br.gbit, &ya.gbit);
        println!(
            "medians: 1 raw TCP {raw1_g:.2} Gbit/s | 100 raw TCP {raw100_g:.2} | braid {br_g:.2} | yamux {ya_g:.2}"
        );
        println!(
            "braid: {:.0}% of 100 raw TCP (median of per-round ratios: {}) | {:.0}% of 1 raw TCP ({}) | per-stream min/max of mean (worst round) {bmin:.2}/{bmax:.2}",
            b100 * 100.0,
            pct(&b100s),
            b1 * 100.0,
            pct(&b1s)
        );
        println!(
            "yamux: {:.0}% of 100 raw TCP ({}) | per-stream min/max of mean (worst round) {ymin:.2}/{ymax:.2} | braid/yamux {by:.2}x ({})",
            y100 * 100.0,
            pct(&y100s),
            bys.iter().map(|x| format!("{x:.2}x")).collect::<Vec<_>>().join(" ")
        );
        let (be, _) = ratios(&br.per_cpu, &raw100.per_cpu);
        let (ye, _) = ratios(&ya.per_cpu, &raw100.per_cpu);
        println!(
            "Gbit per CPU-second (both ends), median of per-round ratios to 100 raw: braid {:.0}% | yamux {:.0}% (medians: 100 raw {:.1}, 1 raw {:.1}, braid {:.1}, yamux {:.1})",
            be * 100.0,
            ye * 100.0,
            raw100.efficiency(),
            raw1.efficiency(),
            br.efficiency(),
            ya.efficiency()
        );
        }

        if run("open") {
        println!("\n## stream open + first byte echoed (sequential, 1000 streams)");
        let (b50, b99) = open_latency(&Kind::Braid, 1000).await;
        let (y50, y99) = open_latency(&Kind::Yamux, 1000).await;
        println!(
            "braid p50 {:.0} us p99 {:.0} us | yamux p50 {:.0} us p99 {:.0} us",
            us(b50), us(b99), us(y50), us(y99)
        );

        }

        if run("echo") {
        println!("\n## 10,000 streams each echoing 1 KiB, all at once");
        let b = many_echo(&Kind::Braid, 10_000).await;
        let y = many_echo(&Kind::Yamux, 10_000).await;
        println!("braid {:.0} ms | yamux {:.0} ms", b.as_secs_f64() * 1e3, y.as_secs_f64() * 1e3);

        }

        if run("rtt") {
        println!("\n## 64 B round trip: idle, and under 4 bulk streams on the same session");
        let (bi50, bi99) = rtt_under_load(&Kind::Braid, 0, 2000).await;
        let (bl50, bl99) = rtt_under_load(&Kind::Braid, 4, 2000).await;
        let (yi50, yi99) = rtt_under_load(&Kind::Yamux, 0, 2000).await;
        let (yl50, yl99) = rtt_under_load(&Kind::Yamux, 4, 2000).await;
        println!(
            "braid idle p50 {:.0} us p99 {:.0} us, loaded p50 {:.0} us p99 {:.0} us",
            us(bi50), us(bi99), us(bl50), us(bl99)
        );
        println!(
            "yamux idle p50 {:.0} us p99 {:.0} us, loaded p50 {:.0} us p99 {:.0} us",
            us(yi50), us(yi99), us(yl50), us(yl99)
        );
        }
    });
    rt.shutdown_timeout(Duration::from_secs(1));
}
