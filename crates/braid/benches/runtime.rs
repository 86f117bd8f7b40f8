//! Runtime benchmarks on loopback, with raw TCP measured in the same run:
//!
//! - bulk throughput of one aggregated connection over 1 and 4 links, plaintext and
//!   encrypted, and CPU seconds per GB (both ends in this process, each on its own thread
//!   and single-threaded runtime, as two processes would be); through
//!   `AsyncRead`/`AsyncWrite`, and ("chunks") through `write_chunk`/`read_chunk`;
//! - 64-byte echo round trips through an idle connection.
//!
//! Senders use cubic congestion control (raw TCP and braid links alike). The application
//! writes 256 KiB at a time, to raw TCP and to braid alike.
//!
//! `cargo bench -p braid --bench runtime`. `BENCH_MB` sets the transfer size (default 1000),
//! `BENCH_ROUNDS` how many braid runs per line (default 5; each sits between two raw TCP
//! runs and is compared with their mean; medians are printed, and the % is the median of the
//! per-round ratios), `BENCH_ONLY=text` runs only matching lines (`BENCH_ONLY==name` exactly
//! that one), `BENCH_NO_RAW=1` skips the baseline (to profile braid alone),
//! `BENCH_NO_BRAID=1` skips braid (to profile the baseline), `BENCH_VERBOSE=1` prints every
//! round (and, for braid, each end's thread CPU time and the links' shares of the bytes).
//! `BENCH_COUNT=N` runs the "4 links" lines over N links instead; `BENCH_WARM_MB=N` has each
//! braid run first send N MB and wait for them to be acknowledged, so that the measured
//! transfer starts on a warm connection (a fresh one is the default). A round during which other processes used a fifth of a CPU or more, or whose two
//! raw TCP runs differ by more than 15% (this shared machine switches between a fast and a
//! slow mode), is repeated, and so is one in the slow mode (raw TCP under 60% of the fastest
//! clean raw TCP run so far), at most `2 * BENCH_ROUNDS` extra times; a line with no clean
//! round, or only slow-mode ones, says so.

use std::time::{Duration, Instant};

use braid::client::{ClientConfig, connect};
use braid::secure::{Key, Security};
use braid::server::{Listener, ServerConfig};
use braid::spec::ListenSpec;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

/// Every sending socket uses cubic, for raw TCP and braid alike (this kernel defaults to bbr,
/// whose pacing adds its own cost; the brief asks for cubic everywhere).
fn cubic(s: &TcpStream) {
    socket2::SockRef::from(s)
        .set_tcp_congestion(b"cubic")
        .expect("cubic congestion control");
}

/// CPU seconds (user + system) this process used so far.
/// CPU time of the calling thread, from `/proc/thread-self/schedstat` (nanoseconds on CPU).
fn thread_cpu() -> Duration {
    let ns = std::fs::read_to_string("/proc/thread-self/schedstat")
        .ok()
        .and_then(|s| s.split_whitespace().next()?.parse().ok())
        .unwrap_or(0);
    Duration::from_nanos(ns)
}

fn env_u64(name: &str) -> Option<u64> {
    std::env::var(name).ok().and_then(|v| v.parse().ok())
}

fn cpu_seconds() -> f64 {
    let stat = std::fs::read_to_string("/proc/self/stat").unwrap_or_default();
    let fields: Vec<&str> = stat
        .rsplit_once(')')
        .map(|(_, rest)| rest.split_whitespace().collect())
        .unwrap_or_default();
    let ticks = |i: usize| {
        fields
            .get(i)
            .and_then(|v| v.parse::<f64>().ok())
            .unwrap_or(0.0)
    };
    (ticks(11) + ticks(12)) / 100.0
}

#[derive(Clone)]
struct Figure {
    gbit: f64,
    cpu_per_gb: f64,
    /// CPU seconds per second that other processes used meanwhile (a shared machine).
    others: f64,
}

/// A braid run between two raw TCP runs (the one before it and the one after, which is the
/// next round's first).
struct Round {
    /// The mean of the two raw TCP runs.
    raw: Figure,
    braid: Figure,
    /// The two raw TCP runs agreed within 15%: the machine did not switch between its fast
    /// and slow modes (raw TCP at 37-58 or 12-15 Gbit/s) around the braid run.
    steady: bool,
}

impl Round {
    fn new(before: &Figure, braid: Figure, after: &Figure) -> Self {
        let mean = |a: f64, b: f64| (a + b) / 2.0;
        Round {
            raw: Figure {
                gbit: mean(before.gbit, after.gbit),
                cpu_per_gb: mean(before.cpu_per_gb, after.cpu_per_gb),
                others: before.others.max(after.others),
            },
            braid,
            steady: (before.gbit - after.gbit).abs() <= 0.15 * before.gbit.max(after.gbit),
        }
    }

    /// Nothing else ran meanwhile (other processes used under a fifth of a CPU), and the
    /// machine stayed in one mode.
    fn clean(&self) -> bool {
        self.steady && self.raw.others < 0.2 && self.braid.others < 0.2
    }
}

/// Busy CPU seconds of the whole machine so far (`/proc/stat`: all but idle and iowait).
fn machine_busy_seconds() -> f64 {
    let stat = std::fs::read_to_string("/proc/stat").unwrap_or_default();
    let v: Vec<f64> = stat
        .lines()
        .next()
        .unwrap_or("")
        .split_whitespace()
        .skip(1)
        .filter_map(|x| x.parse().ok())
        .collect();
    let total: f64 = v.iter().sum();
    let idle = v.get(3).copied().unwrap_or(0.0) + v.get(4).copied().unwrap_or(0.0);
    (total - idle) / 100.0
}

/// Starts measuring; `finish` gives the figure.
struct Meter {
    start: Instant,
    cpu: f64,
    busy: f64,
}

impl Meter {
    fn start() -> Self {
        Meter {
            start: Instant::now(),
            cpu: cpu_seconds(),
            busy: machine_busy_seconds(),
        }
    }

    fn finish(self, bytes: u64) -> Figure {
        let elapsed = self.start.elapsed().as_secs_f64();
        let cpu = cpu_seconds() - self.cpu;
        let others = ((machine_busy_seconds() - self.busy) - cpu).max(0.0) / elapsed;
        Figure {
            gbit: bytes as f64 * 8.0 / elapsed / 1e9,
            cpu_per_gb: cpu / (bytes as f64 / 1e9),
            others,
        }
    }
}

async fn sink<R: AsyncReadExt + Unpin>(mut r: R) -> u64 {
    let mut buf = vec![0u8; 256 * 1024];
    let mut n = 0u64;
    loop {
        match r.read(&mut buf).await {
            Ok(0) | Err(_) => return n,
            Ok(k) => n += k as u64,
        }
    }
}

/// Writes `total` bytes, 256 KiB at a time.
async fn write_n<W: AsyncWriteExt + Unpin>(w: &mut W, total: u64) {
    let buf = vec![0x5au8; 256 * 1024];
    let mut sent = 0u64;
    while sent < total {
        let k = (total - sent).min(buf.len() as u64) as usize;
        w.write_all(&buf[..k]).await.unwrap();
        sent += k as u64;
    }
}

async fn pump<W: AsyncWriteExt + Unpin>(mut w: W, total: u64) {
    write_n(&mut w, total).await;
    w.shutdown().await.unwrap();
}

/// The figure with the median throughput (and the median CPU cost next to it).
fn median_figure(v: &mut [Figure]) -> Figure {
    v.sort_by(|a, b| a.gbit.total_cmp(&b.gbit));
    let gbit = v[v.len() / 2].gbit;
    v.sort_by(|a, b| a.cpu_per_gb.total_cmp(&b.cpu_per_gb));
    Figure {
        gbit,
        cpu_per_gb: v[v.len() / 2].cpu_per_gb,
        others: v.iter().map(|f| f.others).fold(0.0, f64::max),
    }
}

/// Runs the receiving end and the sending end apart, each on its own thread with its own
/// single-threaded runtime, as two processes would (on this 2-core machine, a core each).
/// In one shared multi-threaded runtime, where tasks land decided the result: raw TCP swung
/// 12-52 Gbit/s between rounds as its sender and receiver shared a worker or not.
///
/// `server` publishes its address and returns the bytes it received; `client` gets the
/// address and a signal that the server has everything, and returns a `Meter` started right
/// before it sent (its runtime keeps running until the server is done).
fn apart<S, SF, C, CF>(name: &str, server: S, client: C) -> (u64, Meter)
where
    S: FnOnce(std::sync::mpsc::Sender<std::net::SocketAddr>) -> SF + Send + 'static,
    SF: std::future::Future<Output = u64>,
    C: FnOnce(std::net::SocketAddr, tokio::sync::oneshot::Receiver<()>) -> CF + Send + 'static,
    CF: std::future::Future<Output = Meter>,
{
    fn runtime() -> tokio::runtime::Runtime {
        tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap()
    }
    let (addr_tx, addr_rx) = std::sync::mpsc::channel();
    let (done_tx, done_rx) = tokio::sync::oneshot::channel();
    // Named, so profiles tell the two ends (and the lines) apart (`perf report --sort comm`):
    // `raw-sender`, `braid4-receiver`, ...
    let server = std::thread::Builder::new()
        .name(format!("{name}-receiver"))
        .spawn(move || {
            runtime().block_on(async move {
                let n = server(addr_tx).await;
                let _ = done_tx.send(());
                n
            })
        })
        .unwrap();
    let addr = addr_rx
        .recv_timeout(Duration::from_secs(30))
        .expect("server address");
    let client = std::thread::Builder::new()
        .name(format!("{name}-sender"))
        .spawn(move || runtime().block_on(client(addr, done_rx)))
        .unwrap();
    let meter = client.join().unwrap();
    (server.join().unwrap(), meter)
}

/// `total` bytes over `conns` TCP connections at once (an equal share each), from one
/// sending thread to one receiving thread.
fn raw_tcp(total: u64, conns: u64) -> Figure {
    let (got, m) = apart(
        if conns == 1 { "raw" } else { "raw4" },
        move |addr| async move {
            let l = TcpListener::bind("127.0.0.1:0").await.unwrap();
            addr.send(l.local_addr().unwrap()).unwrap();
            let mut sinks = Vec::new();
            for _ in 0..conns {
                sinks.push(tokio::spawn(sink(l.accept().await.unwrap().0)));
            }
            let mut n = 0;
            for s in sinks {
                n += s.await.unwrap();
            }
            n
        },
        move |addr, done| async move {
            let mut socks = Vec::new();
            for _ in 0..conns {
                let s = TcpStream::connect(addr).await.unwrap();
                s.set_nodelay(true).unwrap();
                cubic(&s);
                socks.push(s);
            }
            let m = Meter::start();
            let pumps: Vec<_> = socks
                .into_iter()
                .enumerate()
                .map(|(i, s)| {
                    let share = total / conns + u64::from((i as u64) < total % conns);
                    tokio::spawn(pump(s, share))
                })
                .collect();
            for p in pumps {
                p.await.unwrap();
            }
            let _ = done.await;
            m
        },
    );
    assert_eq!(got, total);
    m.finish(total)
}

async fn braid_server(security: Security, key: &Key) -> (std::net::SocketAddr, Listener) {
    let mut c = ServerConfig::new(key.clone());
    c.security = security;
    let l = Listener::bind(&["127.0.0.1:0".parse().unwrap()], c)
        .await
        .unwrap();
    let ListenSpec::Tcp(addr) = l.local_specs()[0].clone() else {
        unreachable!()
    };
    (addr, l)
}

/// How the application moves bytes through braid.
#[derive(Clone, Copy)]
enum Api {
    /// `AsyncRead`/`AsyncWrite` with 256 KiB buffers (a copy each way).
    Io,
    /// `Connection::write_chunk` of one shared 256 KiB buffer, `read_chunk` (no copies).
    Chunks,
    /// No braid: as many plain TCP connections as links, written and read by one thread
    /// each end (what the kernel alone makes of the same number of sockets).
    RawTcp,
}

async fn chunk_sink(mut conn: braid::Connection) -> u64 {
    let mut n = 0u64;
    while let Ok(Some(b)) = conn.read_chunk(1 << 20).await {
        n += b.len() as u64;
    }
    n
}

async fn chunk_pump(mut conn: braid::Connection, total: u64) {
    let block = bytes::Bytes::from(vec![0x5au8; 256 * 1024]);
    let mut sent = 0u64;
    while sent < total {
        let k = (total - sent).min(block.len() as u64) as usize;
        conn.write_chunk(block.slice(..k)).await.unwrap();
        sent += k as u64;
    }
    conn.shutdown().await.unwrap();
}

fn braid_bulk(links: u32, security: Security, crc: bool, api: Api, total: u64) -> Figure {
    let key = Key::generate();
    let server_key = key.clone();
    let (got, m) = apart(
        &format!("braid{links}"),
        move |addr| async move {
            let (a, mut l) = braid_server(security, &server_key).await;
            addr.send(a).unwrap();
            let conn = l.accept().await.unwrap();
            let cpu = thread_cpu();
            let n = match api {
                Api::Io => sink(conn).await,
                Api::Chunks => chunk_sink(conn).await,
                Api::RawTcp => unreachable!("not a braid line"),
            };
            if std::env::var("BENCH_VERBOSE").is_ok() {
                println!(
                    "    receiver thread: {:.1} ms of CPU (warm-up included)",
                    (thread_cpu() - cpu).as_secs_f64() * 1e3
                );
            }
            n
        },
        move |addr, done| async move {
            let mut c = ClientConfig::new(key);
            c.security = security;
            c.engine.crc = crc;
            if let Some(us) = std::env::var("BENCH_WINDOW_RTT_US")
                .ok()
                .and_then(|v| v.parse().ok())
            {
                c.engine.window_rtt_floor = Duration::from_micros(us);
            }
            if let Some(b) = std::env::var("BENCH_SEND_BUFFER")
                .ok()
                .and_then(|v| v.parse().ok())
            {
                c.engine.send_buffer = b;
            }
            if let Some(b) = std::env::var("BENCH_UNSENT")
                .ok()
                .and_then(|v| v.parse().ok())
            {
                c.engine.unsent_limit = b;
            }
            let links = match env_u64("BENCH_COUNT") {
                Some(n) if links > 1 => n as u32,
                _ => links,
            };
            let spec = format!("tcp://{addr}?count={links}&cc=cubic")
                .parse()
                .unwrap();
            let conn = connect(&[spec], c).await.unwrap();
            while conn.handle().links().len() < links as usize {
                tokio::time::sleep(Duration::from_millis(5)).await;
            }
            let handle = conn.handle();
            let mut conn = conn;
            let warm = env_u64("BENCH_WARM_MB").unwrap_or(0) * 1_000_000;
            if warm > 0 {
                write_n(&mut conn, warm).await;
                while handle.stats().send_buffered > 0 {
                    tokio::time::sleep(Duration::from_millis(1)).await;
                }
            }
            let before: Vec<u64> = handle.links().iter().map(|l| l.stats.bytes_sent).collect();
            let m = Meter::start();
            let cpu = thread_cpu();
            match api {
                Api::Io => pump(conn, total).await,
                Api::Chunks => chunk_pump(conn, total).await,
                Api::RawTcp => unreachable!("not a braid line"),
            }
            if std::env::var("BENCH_VERBOSE").is_ok() {
                println!(
                    "    sender thread: {:.1} ms of CPU",
                    (thread_cpu() - cpu).as_secs_f64() * 1e3
                );
            }
            if links > 1 && std::env::var("BENCH_VERBOSE").is_ok() {
                // Links are only listed while the connection lives: read before the end.
                let shares: Vec<String> = (handle.links().iter().enumerate())
                    .map(|(i, l)| {
                        let sent = (l.stats.bytes_sent)
                            .saturating_sub(before.get(i).copied().unwrap_or(0));
                        format!("{:.1}%", sent as f64 * 100.0 / total as f64)
                    })
                    .collect();
                println!("    links' shares of the bytes sent: {}", shares.join(" "));
            }
            let _ = done.await;
            m
        },
    );
    assert_eq!(
        got,
        total + env_u64("BENCH_WARM_MB").unwrap_or(0) * 1_000_000
    );
    m.finish(total)
}

/// Median and 99th percentile of `rounds` 64-byte echo round trips.
async fn echo<S: AsyncReadExt + AsyncWriteExt + Unpin>(s: &mut S, rounds: usize) -> (f64, f64) {
    let msg = [7u8; 64];
    let mut back = [0u8; 64];
    let mut samples = Vec::with_capacity(rounds);
    for _ in 0..rounds {
        let t = Instant::now();
        s.write_all(&msg).await.unwrap();
        s.read_exact(&mut back).await.unwrap();
        samples.push(t.elapsed().as_secs_f64() * 1e3);
        // Idle between requests, as an interactive session is.
        tokio::time::sleep(Duration::from_millis(1)).await;
    }
    samples.sort_by(f64::total_cmp);
    (samples[rounds / 2], samples[rounds * 99 / 100])
}

async fn raw_echo(rounds: usize) -> (f64, f64) {
    let l = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = l.local_addr().unwrap();
    tokio::spawn(async move {
        let (s, _) = l.accept().await.unwrap();
        s.set_nodelay(true).unwrap();
        let (mut r, mut w) = s.into_split();
        let _ = tokio::io::copy(&mut r, &mut w).await;
    });
    let mut s = TcpStream::connect(addr).await.unwrap();
    s.set_nodelay(true).unwrap();
    echo(&mut s, rounds).await
}

async fn braid_echo(links: u32, rounds: usize) -> (f64, f64) {
    let key = Key::generate();
    let (addr, mut l) = braid_server(Security::Encrypted, &key).await;
    tokio::spawn(async move {
        let conn = l.accept().await.unwrap();
        let (mut r, mut w) = conn.into_split();
        let _ = tokio::io::copy(&mut r, &mut w).await;
    });
    let spec = format!("tcp://{addr}?count={links}").parse().unwrap();
    let mut conn = connect(&[spec], ClientConfig::new(key)).await.unwrap();
    echo(&mut conn, rounds).await
}

/// The rounds that count: clean ones in the machine's fast mode. This shared VM sometimes
/// runs loopback TCP at a third of its speed for seconds at a time (the same raw TCP run at
/// 12-15 instead of 37-58 Gbit/s, at 3x the CPU per byte); braid's ratio is higher then,
/// so such rounds (raw TCP under 60% of the fastest clean raw TCP run so far, `fastest`, or
/// of the line's) would flatter it.
fn counted(rounds: &[Round], fastest: f64) -> Vec<&Round> {
    let best = rounds
        .iter()
        .filter(|r| r.clean())
        .map(|r| r.raw.gbit)
        .fold(fastest, f64::max);
    rounds
        .iter()
        .filter(|r| r.clean() && r.raw.gbit >= 0.6 * best)
        .collect()
}

fn main() {
    let mb: u64 = std::env::var("BENCH_MB")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(1000);
    let total = mb * 1_000_000;
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async {
        println!(
            "loopback bulk, {mb} MB one way; each end on its own thread and runtime, as two processes ({} cores)",
            std::thread::available_parallelism().map_or(0, |n| n.get())
        );
        println!(
            "{:<34} {:>10} {:>10} {:>12}",
            "", "Gbit/s", "% raw", "CPU s/GB"
        );
        // Raw TCP swings by 2-3x between runs on a shared machine: each contender runs right
        // after its own raw TCP baseline, `rounds` times, and the medians are reported.
        let rounds: usize = std::env::var("BENCH_ROUNDS")
            .ok()
            .and_then(|v| v.parse().ok())
            .unwrap_or(5);
        // The fastest clean raw TCP run so far (see `counted`).
        let mut fastest = 0.0f64;
        for (name, links, sec, crc, api) in [
            ("braid plaintext, 1 link", 1, Security::Plaintext, false, Api::Io),
            ("braid plaintext, 4 links", 4, Security::Plaintext, false, Api::Io),
            ("braid plaintext+checksum, 1 link", 1, Security::Plaintext, true, Api::Io),
            ("braid encrypted, 1 link", 1, Security::Encrypted, false, Api::Io),
            ("braid encrypted, 4 links", 4, Security::Encrypted, false, Api::Io),
            ("braid plaintext, 1 link, chunks", 1, Security::Plaintext, false, Api::Chunks),
            ("braid encrypted, 1 link, chunks", 1, Security::Encrypted, false, Api::Chunks),
            ("braid plaintext, 4 links, chunks", 4, Security::Plaintext, false, Api::Chunks),
            ("raw TCP, 4 connections", 4, Security::Plaintext, false, Api::RawTcp),
        ] {
            // `BENCH_ONLY=text` runs the lines containing it; `BENCH_ONLY==line` that line.
            if std::env::var("BENCH_ONLY").is_ok_and(|o| match o.strip_prefix('=') {
                Some(exact) => name != exact,
                None => !name.contains(&o),
            }) {
                continue;
            }
            let mut rounds_done = Vec::new();
            let baseline = || {
                if std::env::var("BENCH_NO_RAW").is_ok() {
                    // For profiling braid alone: ratios are then meaningless.
                    Figure {
                        gbit: 1.0,
                        cpu_per_gb: 0.0,
                        others: 0.0,
                    }
                } else {
                    raw_tcp(total, 1)
                }
            };
            // Each braid run sits between two raw TCP runs. Rounds during which other
            // processes took a fifth of a CPU or more, or the two raw runs disagree (the
            // machine changed mode), do not count (up to `rounds` extra attempts).
            let mut before = baseline();
            for _ in 0..3 * rounds {
                if counted(&rounds_done, fastest).len() >= rounds {
                    break;
                }
                let braid = if std::env::var("BENCH_NO_BRAID").is_ok() {
                    before.clone()
                } else {
                    match api {
                        Api::RawTcp => raw_tcp(total, links.into()),
                        _ => braid_bulk(links, sec, crc, api, total),
                    }
                };
                let after = baseline();
                let round = Round::new(&before, braid, &after);
                if std::env::var("BENCH_VERBOSE").is_ok() {
                    println!(
                        "    round: raw {:.2} / {:.2} Gbit/s, braid {:.2} Gbit/s (other processes: {:.2} / {:.2} CPUs){}",
                        before.gbit,
                        after.gbit,
                        round.braid.gbit,
                        round.raw.others,
                        round.braid.others,
                        if round.steady { "" } else { " mode changed" }
                    );
                }
                rounds_done.push(round);
                before = after;
            }
            let fast = counted(&rounds_done, fastest);
            let clean: Vec<&Round> = rounds_done.iter().filter(|r| r.clean()).collect();
            let slow = clean.len() - fast.len();
            fastest = clean.iter().map(|r| r.raw.gbit).fold(fastest, f64::max);
            let (used, note) = if fast.is_empty() && !clean.is_empty() {
                (
                    clean,
                    " SLOW MODE: raw TCP ran under 60% of its fastest in every round".to_string(),
                )
            } else if fast.is_empty() {
                (
                    rounds_done.iter().collect::<Vec<_>>(),
                    " UNSTEADY: other processes were busy or raw TCP changed speed in every round"
                        .to_string(),
                )
            } else if slow > 0 {
                (fast, format!(", {slow} slow-mode round(s) left out"))
            } else {
                (fast, String::new())
            };
            let mut ratios: Vec<f64> = used.iter().map(|r| r.braid.gbit / r.raw.gbit).collect();
            let mut raws: Vec<Figure> = used.iter().map(|r| r.raw.clone()).collect();
            let mut braids: Vec<Figure> = used.iter().map(|r| r.braid.clone()).collect();
            let raw = median_figure(&mut raws);
            let f = median_figure(&mut braids);
            ratios.sort_by(f64::total_cmp);
            println!(
                "{:<34} {:>10.2} {:>10} {:>12.2}",
                "  raw TCP, 1 connection", raw.gbit, "100%", raw.cpu_per_gb
            );
            println!(
                "{:<34} {:>10.2} {:>9.0}% {:>12.2}   (ratios {}){note}",
                name,
                f.gbit,
                100.0 * ratios[ratios.len() / 2],
                f.cpu_per_gb,
                ratios
                    .iter()
                    .map(|r| format!("{:.0}%", r * 100.0))
                    .collect::<Vec<_>>()
                    .join(" ")
            );
        }
        if std::env::var("BENCH_ONLY").is_ok() {
            return;
        }
        let rounds = 2000;
        println!();
        println!("64-byte echo through an idle connection, {rounds} round trips (1 ms apart)");
        println!("{:<34} {:>12} {:>12}", "", "median ms", "p99 ms");
        let (m, p) = raw_echo(rounds).await;
        println!("{:<34} {:>12.3} {:>12.3}", "raw TCP", m, p);
        for links in [1, 4] {
            let (bm, bp) = braid_echo(links, rounds).await;
            println!(
                "{:<34} {:>12.3} {:>12.3}   (+{:.3} ms median)",
                format!("braid encrypted, {links} link(s)"),
                bm,
                bp,
                bm - m
            );
        }
    });
}
