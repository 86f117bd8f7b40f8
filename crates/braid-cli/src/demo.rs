//! `braid demo`: one process, no root: a server and a client over 4 loopback links with
//! different in-process rate limits (token buckets), a transfer, one link killed and later
//! restored, per-link shares printed as it runs, bytes verified, figures at the end.

use std::io;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll, ready};
use std::time::{Duration, Instant};

use anyhow::Context as _;
use braid::client::{ClientConfig, connect_link};
use braid::secure::Key;
use braid::server::{Listener, ServerConfig};
use braid::spec::ListenSpec;
use braid::transport::RawLink;
use rand::{RngCore, SeedableRng};
use sha2::{Digest, Sha256};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt, ReadBuf};
use tokio::net::TcpStream;

use crate::common::runtime;

/// Arguments of `braid demo`.
#[derive(clap::Args, Debug)]
pub struct DemoArgs {
    /// MiB to transfer.
    #[arg(long, default_value_t = 256)]
    pub mib: u64,
    /// Run the simulator's demo scenario instead (virtual time).
    #[arg(long)]
    pub sim: bool,
}

/// Link rate limits in MiB/s.
const RATES: [f64; 4] = [40.0, 20.0, 10.0, 5.0];
/// Which link is killed mid-way, and for how long.
const KILLED: usize = 1;
const OUTAGE: Duration = Duration::from_millis(1500);

/// A token bucket shared by the sockets of one link.
struct Bucket {
    rate: f64,
    burst: f64,
    state: Mutex<(f64, Instant)>,
}

impl Bucket {
    fn new(mib_per_s: f64) -> Arc<Self> {
        let rate = mib_per_s * 1024.0 * 1024.0;
        Arc::new(Bucket {
            rate,
            burst: (rate / 100.0).max(16384.0),
            state: Mutex::new((0.0, Instant::now())),
        })
    }

    /// Takes up to `want` tokens, or says how long to wait for some.
    fn take(&self, want: usize) -> Result<usize, Duration> {
        let mut s = self.state.lock().unwrap_or_else(|p| p.into_inner());
        let now = Instant::now();
        s.0 = (s.0 + (now - s.1).as_secs_f64() * self.rate).min(self.burst);
        s.1 = now;
        if s.0 >= 1.0 {
            let n = want.min(s.0 as usize);
            s.0 -= n as f64;
            Ok(n)
        } else {
            let need = (want as f64).min(self.burst / 4.0) - s.0;
            Err(Duration::from_secs_f64(need / self.rate))
        }
    }
}

/// A writer limited by a bucket, which fails once `killed` is set.
struct Shaped<W> {
    inner: W,
    bucket: Arc<Bucket>,
    killed: Arc<AtomicBool>,
    sleep: Option<Pin<Box<tokio::time::Sleep>>>,
    granted: usize,
}

impl<W: AsyncWrite + Unpin> AsyncWrite for Shaped<W> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        loop {
            if self.killed.load(Ordering::Relaxed) {
                return Poll::Ready(Err(io::Error::new(
                    io::ErrorKind::BrokenPipe,
                    "link killed by the demo",
                )));
            }
            if let Some(s) = self.sleep.as_mut() {
                ready!(s.as_mut().poll(cx));
                self.sleep = None;
            }
            if self.granted == 0 {
                match self.bucket.take(buf.len()) {
                    Ok(n) => self.granted = n,
                    Err(wait) => {
                        self.sleep = Some(Box::pin(tokio::time::sleep(wait)));
                        continue;
                    }
                }
            }
            let n = self.granted.min(buf.len());
            let this = &mut *self;
            let written = ready!(Pin::new(&mut this.inner).poll_write(cx, &buf[..n]))?;
            this.granted -= written;
            return Poll::Ready(Ok(written));
        }
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }
}

/// A reader that reports the end of the link once `killed` is set.
struct Killable<R> {
    inner: R,
    killed: Arc<AtomicBool>,
}

impl<R: AsyncRead + Unpin> AsyncRead for Killable<R> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        if self.killed.load(Ordering::Relaxed) {
            return Poll::Ready(Err(io::Error::new(
                io::ErrorKind::BrokenPipe,
                "link killed by the demo",
            )));
        }
        Pin::new(&mut self.inner).poll_read(cx, buf)
    }
}

async fn shaped_link(
    addr: std::net::SocketAddr,
    bucket: Arc<Bucket>,
    killed: Arc<AtomicBool>,
) -> anyhow::Result<RawLink> {
    let s = TcpStream::connect(addr).await?;
    let raw = RawLink::from_tcp(s);
    Ok(RawLink {
        read: Box::new(Killable {
            inner: raw.read,
            killed: killed.clone(),
        }),
        write: Box::new(Shaped {
            inner: raw.write,
            bucket,
            killed,
            sleep: None,
            granted: 0,
        }),
        peer: raw.peer,
        // Each link is shaped on its own, as if it took its own network: they share no
        // bottleneck (and so no window).
        path: None,
    })
}

fn data_block(rng: &mut rand::rngs::StdRng, buf: &mut [u8]) {
    rng.fill_bytes(buf);
}

pub fn run(args: DemoArgs) -> anyhow::Result<()> {
    if args.sim {
        return crate::sim::demo();
    }
    crate::common::init_logging("braid=error");
    runtime()?.block_on(demo(args.mib.max(1)))
}

async fn demo(mib: u64) -> anyhow::Result<()> {
    let total = mib * 1024 * 1024;
    let key = Key::generate();
    let mut listener =
        Listener::bind(&["127.0.0.1:0".parse()?], ServerConfig::new(key.clone())).await?;
    let ListenSpec::Tcp(addr) = listener.local_specs()[0].clone() else {
        anyhow::bail!("unexpected listener");
    };
    outln!(
        "braid demo: {mib} MiB from a client to a server over 4 encrypted loopback links limited to {} MiB/s (sum {} MiB/s)",
        RATES
            .iter()
            .map(|r| format!("{r}"))
            .collect::<Vec<_>>()
            .join("/"),
        RATES.iter().sum::<f64>()
    )?;
    let server = tokio::spawn(async move {
        let mut conn = listener.accept().await.context("no connection")?;
        let mut hash = Sha256::new();
        let mut n = 0u64;
        let mut buf = vec![0u8; 256 * 1024];
        loop {
            let k = conn.read(&mut buf).await?;
            if k == 0 {
                break;
            }
            hash.update(&buf[..k]);
            n += k as u64;
        }
        conn.write_all(&hash.clone().finalize()).await?;
        conn.shutdown().await?;
        anyhow::Ok((n, hash.finalize()))
    });

    let buckets: Vec<Arc<Bucket>> = RATES.iter().map(|&r| Bucket::new(r)).collect();
    let kills: Vec<Arc<AtomicBool>> = (0..4).map(|_| Arc::new(AtomicBool::new(false))).collect();
    let first = shaped_link(addr, buckets[0].clone(), kills[0].clone()).await?;
    let conn = connect_link(first, ClientConfig::new(key.clone())).await?;
    let handle = conn.handle();
    for i in 1..4 {
        handle.add_raw_link(shaped_link(addr, buckets[i].clone(), kills[i].clone()).await?)?;
    }
    let (mut rd, mut wr) = conn.into_split();
    let start = Instant::now();
    let writer = tokio::spawn(async move {
        let mut rng = rand::rngs::StdRng::seed_from_u64(7);
        let mut hash = Sha256::new();
        let mut buf = vec![0u8; 1 << 20];
        let mut sent = 0u64;
        while sent < total {
            let n = (total - sent).min(buf.len() as u64) as usize;
            data_block(&mut rng, &mut buf[..n]);
            hash.update(&buf[..n]);
            wr.write_all(&buf[..n]).await?;
            sent += n as u64;
        }
        wr.shutdown().await?;
        anyhow::Ok(hash.finalize())
    });

    // Watch: per-link shares every half second; kill and restore one link.
    let mut last: std::collections::HashMap<u64, u64> = Default::default();
    let mut killed_at = None;
    let mut restored = false;
    let mut tick = tokio::time::interval(Duration::from_millis(500));
    tick.tick().await;
    let mut peer_of_bucket: Vec<String> = Vec::new();
    for l in handle.links() {
        peer_of_bucket.push(l.peer.clone());
    }
    let mut writer = writer;
    let digest_sent = loop {
        tokio::select! {
            r = &mut writer => break r??,
            _ = tick.tick() => {}
        }
        let t = start.elapsed();
        let links = handle.links();
        let mut rates = Vec::new();
        let mut sum = 0.0;
        for l in &links {
            let prev = last.insert(l.id.0, l.stats.bytes_sent).unwrap_or(0);
            let r = (l.stats.bytes_sent.saturating_sub(prev)) as f64 / 0.5 / (1024.0 * 1024.0);
            sum += r;
            rates.push((l.id.0, r));
        }
        let shares: Vec<String> = rates
            .iter()
            .map(|(id, r)| {
                format!(
                    "link{id} {r:5.1} MiB/s ({:3.0}%)",
                    if sum > 0.0 { 100.0 * r / sum } else { 0.0 }
                )
            })
            .collect();
        let done = handle.stats().bytes_acked;
        outln!(
            "{:5.1}s {:5.1}% total {sum:5.1} MiB/s | {}",
            t.as_secs_f64(),
            100.0 * done as f64 / total as f64,
            shares.join(" | ")
        )?;
        if killed_at.is_none() && done >= total / 4 {
            outln!("       >>> killing the {} MiB/s link", RATES[KILLED])?;
            kills[KILLED].store(true, Ordering::Relaxed);
            killed_at = Some(Instant::now());
        }
        if let Some(k) = killed_at {
            if !restored && k.elapsed() >= OUTAGE {
                outln!("       >>> restoring the {} MiB/s link", RATES[KILLED])?;
                let fresh = Arc::new(AtomicBool::new(false));
                handle.add_raw_link(shaped_link(addr, buckets[KILLED].clone(), fresh).await?)?;
                restored = true;
            }
        }
    };
    let mut echo = Vec::new();
    rd.read_to_end(&mut echo).await?;
    let elapsed = start.elapsed();
    let (received, digest_recv) = server.await??;
    let stats = handle.stats();
    outln!()?;
    outln!("sent      {total} bytes, sha256 {}", hex(&digest_sent))?;
    outln!("received  {received} bytes, sha256 {}", hex(&digest_recv))?;
    anyhow::ensure!(
        received == total && digest_sent == digest_recv && echo == digest_recv.as_slice(),
        "data mismatch"
    );
    let goodput = total as f64 / elapsed.as_secs_f64() / (1024.0 * 1024.0);
    outln!("verified: every byte arrived, in order, once")?;
    outln!(
        "time {:.2}s, goodput {goodput:.1} MiB/s with one of {} MiB/s links down for {:.1}s; resent {} bytes; links died {}",
        elapsed.as_secs_f64(),
        RATES.iter().sum::<f64>(),
        OUTAGE.as_secs_f64(),
        stats.bytes_resent,
        stats.links_died,
    )
}

fn hex(b: &[u8]) -> String {
    b.iter().map(|x| format!("{x:02x}")).collect()
}
