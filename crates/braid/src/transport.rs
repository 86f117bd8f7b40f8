//! Raw links: dialling and accepting the byte pipes that become braid links.
//!
//! A [`RawLink`] is any reliable, ordered, full-duplex byte pipe, as two boxed halves. Nothing
//! here is braid-specific: security and the braid handshake run on top (see
//! [`crate::secure`]).
//!
//! TCP sockets are set up so that the engine, not the kernel, decides where data goes:
//! `TCP_NODELAY`, and `TCP_NOTSENT_LOWAT` so that a socket reports itself writable only when
//! little unsent data is queued in it.

use std::io;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::pin::Pin;
use std::process::Stdio;
use std::task::{Context, Poll};
use std::time::Duration;

use socket2::{Domain, Protocol, SockRef, Socket, Type};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::{TcpListener, TcpSocket, TcpStream, UnixListener, UnixStream};
use tokio::process::{Child, ChildStdout, Command};

use crate::spec::{LinkSpec, ListenSpec, TcpSpec};

/// The read half of a raw link.
///
/// ```
/// let (a, _b) = tokio::io::duplex(64);
/// let _r: braid::transport::BoxRead = Box::new(a);
/// ```
pub type BoxRead = Box<dyn AsyncRead + Send + Unpin>;
/// The write half of a raw link.
///
/// ```
/// let (a, _b) = tokio::io::duplex(64);
/// let _w: braid::transport::BoxWrite = Box::new(a);
/// ```
pub type BoxWrite = Box<dyn AsyncWrite + Send + Unpin>;

/// Unsent bytes a TCP socket may hold before it stops reporting itself writable.
///
/// ```
/// assert!(braid::transport::DEFAULT_NOTSENT_LOWAT >= 16 * 1024);
/// ```
pub const DEFAULT_NOTSENT_LOWAT: u32 = 128 * 1024;

/// A reliable ordered byte pipe: the two halves and a description of the peer for logs.
///
/// ```
/// # #[tokio::main(flavor = "current_thread")] async fn main() {
/// let (a, b) = tokio::io::duplex(1024);
/// let link = braid::transport::RawLink::from_stream(a, "in-memory");
/// assert_eq!(link.peer, "in-memory");
/// # drop(b); }
/// ```
pub struct RawLink {
    /// Bytes from the peer.
    pub read: BoxRead,
    /// Bytes to the peer.
    pub write: BoxWrite,
    /// The peer, for logs (`tcp://1.2.3.4:5`, `unix:/path`, `exec:cmd`).
    pub peer: String,
    /// The network path the link takes, if known: links of one connection with the same
    /// path share its bottleneck, and so one in-flight window besides their own (see
    /// [`braid_proto::agg::PathId`]). [`RawLink::from_tcp`] sets the local and remote
    /// addresses (and the device the socket is bound to); Unix sockets share `unix` (the
    /// host); `None`, as for `exec:` links and [`RawLink::from_stream`], is a path of its own.
    pub path: Option<String>,
}

impl std::fmt::Debug for RawLink {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RawLink").field("peer", &self.peer).finish()
    }
}

impl RawLink {
    /// Wraps any duplex stream (split with [`tokio::io::split`]).
    ///
    /// ```
    /// # #[tokio::main(flavor = "current_thread")] async fn main() {
    /// let (a, _b) = tokio::io::duplex(1024);
    /// let _link = braid::transport::RawLink::from_stream(a, "pipe");
    /// # }
    /// ```
    pub fn from_stream<S>(stream: S, peer: impl Into<String>) -> Self
    where
        S: AsyncRead + AsyncWrite + Send + 'static,
    {
        let (r, w) = tokio::io::split(stream);
        RawLink {
            read: Box::new(r),
            write: Box::new(w),
            peer: peer.into(),
            path: None,
        }
    }

    /// Wraps a connected TCP stream, applying braid's socket options.
    ///
    /// ```no_run
    /// # #[tokio::main(flavor = "current_thread")] async fn main() -> std::io::Result<()> {
    /// let s = tokio::net::TcpStream::connect("127.0.0.1:7700").await?;
    /// let _link = braid::transport::RawLink::from_tcp(s);
    /// # Ok(()) }
    /// ```
    pub fn from_tcp(stream: TcpStream) -> Self {
        let peer = match stream.peer_addr() {
            Ok(a) => format!("tcp://{a}"),
            Err(_) => "tcp://?".to_string(),
        };
        tune_tcp(&SockRef::from(&stream));
        let path = tcp_path(&stream);
        let (r, w) = stream.into_split();
        RawLink {
            read: Box::new(r),
            write: Box::new(w),
            peer,
            path,
        }
    }

    fn from_unix(stream: UnixStream, peer: String) -> Self {
        let (r, w) = stream.into_split();
        RawLink {
            read: Box::new(r),
            write: Box::new(w),
            peer,
            path: Some("unix".into()),
        }
    }
}

/// A TCP socket's path: its local and remote addresses (not ports), and the device it is
/// bound to, if any.
fn tcp_path(stream: &TcpStream) -> Option<String> {
    let (local, remote) = (stream.local_addr().ok()?, stream.peer_addr().ok()?);
    #[cfg(any(target_os = "linux", target_os = "android"))]
    let dev = SockRef::from(stream).device().ok().flatten();
    #[cfg(not(any(target_os = "linux", target_os = "android")))]
    let dev: Option<Vec<u8>> = None;
    let dev = dev.map(|d| String::from_utf8_lossy(&d).into_owned());
    Some(format!(
        "tcp {} {} {}",
        local.ip(),
        remote.ip(),
        dev.unwrap_or_default()
    ))
}

/// Why a link could not be dialled.
///
/// ```
/// let e = braid::transport::DialError::Timeout("tcp://h:1".into());
/// assert_eq!(e.to_string(), "timed out connecting to tcp://h:1");
/// ```
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum DialError {
    /// The host name did not resolve.
    #[error("cannot resolve {host}: {source}")]
    Resolve {
        /// The host.
        host: String,
        /// Why.
        source: io::Error,
    },
    /// Setting a socket option failed (`dev=` needs CAP_NET_RAW, `cc=` a loaded module).
    #[error("cannot set {option} on socket: {source}")]
    SocketOption {
        /// The option.
        option: &'static str,
        /// Why.
        source: io::Error,
    },
    /// Connecting (or spawning the command) failed.
    #[error("cannot reach {peer}: {source}")]
    Connect {
        /// The peer.
        peer: String,
        /// Why.
        source: io::Error,
    },
    /// Connecting took longer than the timeout.
    #[error("timed out connecting to {0}")]
    Timeout(String),
}

/// Makes `path` free for a new Unix socket: a socket nobody answers on any more (left by a
/// process that is gone) is removed. A socket someone still answers on is theirs
/// ([`io::ErrorKind::AddrInUse`]: taking the path over would cut them off, and our drop would
/// later delete their file), and any other file is not ours to delete
/// ([`io::ErrorKind::AlreadyExists`]).
///
/// ```
/// let path = std::env::temp_dir().join(format!("braid-free-{}", std::process::id()));
/// std::fs::write(&path, b"notes")?;
/// let e = braid::transport::free_unix_path(&path).unwrap_err();
/// assert_eq!(e.kind(), std::io::ErrorKind::AlreadyExists);
/// # std::fs::remove_file(&path)?;
/// # Ok::<(), std::io::Error>(())
/// ```
pub fn free_unix_path(path: &std::path::Path) -> io::Result<()> {
    use std::os::unix::fs::FileTypeExt;
    let Ok(meta) = std::fs::symlink_metadata(path) else {
        return Ok(());
    };
    if !meta.file_type().is_socket() {
        return Err(io::Error::new(
            io::ErrorKind::AlreadyExists,
            format!("{} exists and is not a socket", path.display()),
        ));
    }
    if std::os::unix::net::UnixStream::connect(path).is_ok() {
        return Err(io::Error::new(
            io::ErrorKind::AddrInUse,
            format!("{} is in use by another process", path.display()),
        ));
    }
    std::fs::remove_file(path)
}

/// Makes `dir` a directory only this process's user can use, for sockets that take commands:
/// creates it with mode 0700, or checks that the existing one is a real directory (not a
/// symlink), owned by this user, that no other user may enter. Anything else would let another
/// local user replace or spoof the sockets in it (a `/tmp/braid-UID` made in advance by
/// someone else, say).
///
/// # Errors
/// Creating the directory failed, or [`io::ErrorKind::PermissionDenied`] saying what is
/// wrong with the existing one.
///
/// ```
/// use std::os::unix::fs::PermissionsExt;
/// let dir = std::env::temp_dir().join(format!("braid-private-{}", std::process::id()));
/// braid::transport::private_dir(&dir)?;
/// assert_eq!(std::fs::metadata(&dir)?.permissions().mode() & 0o777, 0o700);
/// std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(0o755))?;
/// let e = braid::transport::private_dir(&dir).unwrap_err();
/// assert_eq!(e.kind(), std::io::ErrorKind::PermissionDenied);
/// # std::fs::remove_dir(&dir)?;
/// # Ok::<(), std::io::Error>(())
/// ```
pub fn private_dir(dir: &std::path::Path) -> io::Result<()> {
    use std::os::unix::fs::{DirBuilderExt, MetadataExt};
    match std::fs::DirBuilder::new().mode(0o700).create(dir) {
        Err(e) if e.kind() != io::ErrorKind::AlreadyExists => return Err(e),
        _ => {}
    }
    // Not followed: a symlink could lead anywhere, and whoever made it can change it.
    let meta = std::fs::symlink_metadata(dir)?;
    let uid = process_uid()?;
    let why = if meta.file_type().is_symlink() {
        "is a symlink".to_string()
    } else if !meta.is_dir() {
        "is not a directory".to_string()
    } else if meta.uid() != uid {
        format!(
            "belongs to uid {}, not to this user (uid {uid})",
            meta.uid()
        )
    } else if meta.mode() & 0o077 != 0 {
        format!(
            "is open to other users (mode {:o}; chmod 700 it)",
            meta.mode() & 0o777
        )
    } else {
        return Ok(());
    };
    Err(io::Error::new(
        io::ErrorKind::PermissionDenied,
        format!("{} {why}", dir.display()),
    ))
}

/// This process's (effective) uid: the owner of `/proc/self` (Linux), which needs no unsafe
/// `getuid()`.
///
/// # Errors
/// `/proc` is not mounted.
pub fn process_uid() -> io::Result<u32> {
    use std::os::unix::fs::MetadataExt;
    std::fs::metadata("/proc/self").map(|m| m.uid())
}

fn tune_tcp(sock: &SockRef<'_>) {
    let _ = sock.set_tcp_nodelay(true);
    #[cfg(any(target_os = "linux", target_os = "android"))]
    let _ = sock.set_tcp_notsent_lowat(DEFAULT_NOTSENT_LOWAT);
}

/// Dials one link of `spec` (one socket even when the spec says `count=N`: the caller dials
/// `count` times).
///
/// # Errors
/// [`DialError`] when the name does not resolve, a socket option is refused, or the peer
/// cannot be reached within `timeout`.
///
/// ```no_run
/// # #[tokio::main(flavor = "current_thread")] async fn main() -> Result<(), braid::transport::DialError> {
/// use std::time::Duration;
/// let spec = "tcp://127.0.0.1:7700?cc=cubic".parse().unwrap();
/// let link = braid::transport::dial(&spec, Duration::from_secs(5)).await?;
/// println!("connected to {}", link.peer);
/// # Ok(()) }
/// ```
pub async fn dial(spec: &LinkSpec, timeout: Duration) -> Result<RawLink, DialError> {
    let peer = spec.to_string();
    let fut = async {
        match spec {
            LinkSpec::Tcp(t) => dial_tcp(t).await,
            LinkSpec::Unix(path) => UnixStream::connect(path)
                .await
                .map(|s| RawLink::from_unix(s, format!("unix:{}", path.display())))
                .map_err(|source| DialError::Connect {
                    peer: peer.clone(),
                    source,
                }),
            LinkSpec::Exec(cmd) => spawn_exec(cmd).map_err(|source| DialError::Connect {
                peer: peer.clone(),
                source,
            }),
        }
    };
    tokio::time::timeout(timeout, fut)
        .await
        .map_err(|_| DialError::Timeout(peer.clone()))?
}

async fn dial_tcp(t: &TcpSpec) -> Result<RawLink, DialError> {
    let addrs: Vec<SocketAddr> = tokio::net::lookup_host((t.host.as_str(), t.port))
        .await
        .map_err(|source| DialError::Resolve {
            host: t.host.clone(),
            source,
        })?
        .filter(|a| t.bind.is_none_or(|b| b.is_ipv4() == a.is_ipv4()))
        .collect();
    let mut last = None;
    for addr in addrs {
        let sock = tcp_socket(t, addr)?;
        match sock.connect(addr).await {
            Ok(stream) => return Ok(RawLink::from_tcp(stream)),
            Err(e) => last = Some((addr, e)),
        }
    }
    Err(match last {
        Some((addr, source)) => DialError::Connect {
            peer: format!("tcp://{addr}"),
            source,
        },
        None => DialError::Resolve {
            host: t.host.clone(),
            source: io::Error::new(io::ErrorKind::NotFound, "no usable address"),
        },
    })
}

fn tcp_socket(t: &TcpSpec, addr: SocketAddr) -> Result<TcpSocket, DialError> {
    let opt = |option| move |source| DialError::SocketOption { option, source };
    let sock = Socket::new(Domain::for_address(addr), Type::STREAM, Some(Protocol::TCP))
        .map_err(opt("socket"))?;
    sock.set_nonblocking(true).map_err(opt("O_NONBLOCK"))?;
    #[cfg(any(target_os = "linux", target_os = "android"))]
    {
        if let Some(dev) = &t.dev {
            sock.bind_device(Some(dev.as_bytes()))
                .map_err(opt("SO_BINDTODEVICE"))?;
        }
        if let Some(cc) = &t.cc {
            sock.set_tcp_congestion(cc.as_bytes())
                .map_err(opt("TCP_CONGESTION"))?;
        }
    }
    if let Some(ip) = t.bind {
        sock.bind(&SocketAddr::new(ip, 0).into())
            .map_err(opt("bind"))?;
    }
    tune_tcp(&SockRef::from(&sock));
    let std: std::net::TcpStream = sock.into();
    Ok(TcpSocket::from_std_stream(std))
}

/// The stdout of a spawned link command; keeps the child alive (and kills it on drop).
struct ExecRead {
    out: ChildStdout,
    _child: Child,
}

impl AsyncRead for ExecRead {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        Pin::new(&mut self.out).poll_read(cx, buf)
    }
}

fn spawn_exec(cmd: &str) -> io::Result<RawLink> {
    let mut child = Command::new("sh")
        .arg("-c")
        .arg(cmd)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .kill_on_drop(true)
        .spawn()?;
    let stdin = child
        .stdin
        .take()
        .ok_or_else(|| io::Error::other("no stdin"))?;
    let stdout = child
        .stdout
        .take()
        .ok_or_else(|| io::Error::other("no stdout"))?;
    Ok(RawLink {
        read: Box::new(ExecRead {
            out: stdout,
            _child: child,
        }),
        write: Box::new(stdin),
        peer: format!("exec:{cmd}"),
        path: None,
    })
}

/// A bound listener for raw links (TCP or Unix).
///
/// ```
/// # #[tokio::main(flavor = "current_thread")] async fn main() -> std::io::Result<()> {
/// use braid::transport::LinkListener;
/// let l = LinkListener::bind(&"127.0.0.1:0".parse().unwrap()).await?;
/// println!("listening on {}", l.local_spec());
/// # Ok(()) }
/// ```
#[derive(Debug)]
pub struct LinkListener {
    inner: ListenerInner,
}

#[derive(Debug)]
enum ListenerInner {
    Tcp(TcpListener),
    Unix(UnixListener, PathBuf),
}

impl LinkListener {
    /// Binds `spec`. A stale Unix socket file at the path is replaced.
    ///
    /// # Errors
    /// The I/O error of binding.
    ///
    /// ```
    /// # #[tokio::main(flavor = "current_thread")] async fn main() -> std::io::Result<()> {
    /// let dir = std::env::temp_dir().join(format!("braid-doc-{}", std::process::id()));
    /// std::fs::create_dir_all(&dir)?;
    /// let spec = braid::spec::ListenSpec::Unix(dir.join("l.sock"));
    /// let l = braid::transport::LinkListener::bind(&spec).await?;
    /// drop(l); // removes the socket file
    /// # std::fs::remove_dir_all(&dir)?;
    /// # Ok(()) }
    /// ```
    pub async fn bind(spec: &ListenSpec) -> io::Result<Self> {
        let inner = match spec {
            ListenSpec::Tcp(addr) => ListenerInner::Tcp(TcpListener::bind(addr).await?),
            ListenSpec::Unix(path) => {
                free_unix_path(path)?;
                ListenerInner::Unix(UnixListener::bind(path)?, path.clone())
            }
        };
        Ok(LinkListener { inner })
    }

    /// The spec this listener is reachable at (with the real port when bound to port 0).
    ///
    /// ```
    /// # #[tokio::main(flavor = "current_thread")] async fn main() -> std::io::Result<()> {
    /// let l = braid::transport::LinkListener::bind(&"127.0.0.1:0".parse().unwrap()).await?;
    /// assert!(matches!(l.local_spec(), braid::spec::ListenSpec::Tcp(a) if a.port() != 0));
    /// # Ok(()) }
    /// ```
    pub fn local_spec(&self) -> ListenSpec {
        match &self.inner {
            ListenerInner::Tcp(l) => ListenSpec::Tcp(
                l.local_addr()
                    .unwrap_or_else(|_| SocketAddr::from(([0, 0, 0, 0], 0))),
            ),
            ListenerInner::Unix(_, p) => ListenSpec::Unix(p.clone()),
        }
    }

    /// Accepts the next raw link.
    ///
    /// # Errors
    /// The I/O error of `accept` (e.g. too many open files); the listener stays usable.
    ///
    /// # Cancel safety
    /// Cancel safe, like tokio's `accept`.
    ///
    /// ```no_run
    /// # #[tokio::main(flavor = "current_thread")] async fn main() -> std::io::Result<()> {
    /// let l = braid::transport::LinkListener::bind(&"127.0.0.1:7700".parse().unwrap()).await?;
    /// let link = l.accept().await?;
    /// println!("link from {}", link.peer);
    /// # Ok(()) }
    /// ```
    pub async fn accept(&self) -> io::Result<RawLink> {
        match &self.inner {
            ListenerInner::Tcp(l) => Ok(RawLink::from_tcp(l.accept().await?.0)),
            ListenerInner::Unix(l, p) => {
                let (s, _) = l.accept().await?;
                Ok(RawLink::from_unix(s, format!("unix:{}", p.display())))
            }
        }
    }
}

impl Drop for LinkListener {
    fn drop(&mut self) {
        if let ListenerInner::Unix(_, p) = &self.inner {
            let _ = std::fs::remove_file(p);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    #[tokio::test]
    async fn a_unix_path_in_use_is_not_taken_over() {
        let dir = std::env::temp_dir().join(format!("braid-inuse-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let spec = ListenSpec::Unix(dir.join("l.sock"));
        let first = LinkListener::bind(&spec).await.unwrap();
        let Err(e) = LinkListener::bind(&spec).await else {
            panic!("a path in use is refused")
        };
        assert_eq!(e.kind(), io::ErrorKind::AddrInUse);
        drop(first);
        // A stale socket (its listener gone, the file left behind) is replaced.
        let stale = dir.join("stale.sock");
        drop(std::os::unix::net::UnixListener::bind(&stale).unwrap());
        assert!(stale.exists());
        assert!(LinkListener::bind(&ListenSpec::Unix(stale)).await.is_ok());
        let _ = std::fs::remove_dir_all(&dir);
    }

    async fn echo_once(l: LinkListener) {
        let mut link = l.accept().await.unwrap();
        let mut buf = [0u8; 5];
        link.read.read_exact(&mut buf).await.unwrap();
        link.write.write_all(&buf).await.unwrap();
    }

    #[tokio::test]
    async fn tcp_dial_with_options() {
        let l = LinkListener::bind(&"127.0.0.1:0".parse().unwrap())
            .await
            .unwrap();
        let ListenSpec::Tcp(addr) = l.local_spec() else {
            panic!()
        };
        let server = tokio::spawn(echo_once(l));
        let spec: LinkSpec = format!("tcp://127.0.0.1:{}?bind=127.0.0.1&cc=cubic", addr.port())
            .parse()
            .unwrap();
        let mut link = match dial(&spec, Duration::from_secs(5)).await {
            Ok(l) => l,
            // cubic may be unavailable in odd kernels; then dial without it.
            Err(DialError::SocketOption { .. }) => {
                let spec: LinkSpec = format!("tcp://127.0.0.1:{}", addr.port()).parse().unwrap();
                dial(&spec, Duration::from_secs(5)).await.unwrap()
            }
            Err(e) => panic!("{e}"),
        };
        link.write.write_all(b"hello").await.unwrap();
        let mut buf = [0u8; 5];
        link.read.read_exact(&mut buf).await.unwrap();
        assert_eq!(&buf, b"hello");
        server.await.unwrap();
    }

    #[tokio::test]
    async fn unix_dial_and_accept() {
        let dir = std::env::temp_dir().join(format!("braid-t-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("u.sock");
        let l = LinkListener::bind(&ListenSpec::Unix(path.clone()))
            .await
            .unwrap();
        let server = tokio::spawn(echo_once(l));
        let mut link = dial(&LinkSpec::Unix(path.clone()), Duration::from_secs(5))
            .await
            .unwrap();
        link.write.write_all(b"hello").await.unwrap();
        let mut buf = [0u8; 5];
        link.read.read_exact(&mut buf).await.unwrap();
        assert_eq!(&buf, b"hello");
        server.await.unwrap();
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[tokio::test]
    async fn exec_link_is_the_commands_stdio() {
        let mut link = dial(&LinkSpec::Exec("cat".into()), Duration::from_secs(5))
            .await
            .unwrap();
        link.write.write_all(b"hello").await.unwrap();
        let mut buf = [0u8; 5];
        link.read.read_exact(&mut buf).await.unwrap();
        assert_eq!(&buf, b"hello");
    }

    #[tokio::test]
    async fn refused_is_an_error_not_a_hang() {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let port = l.local_addr().unwrap().port();
        drop(l);
        let spec: LinkSpec = format!("127.0.0.1:{port}").parse().unwrap();
        assert!(dial(&spec, Duration::from_secs(5)).await.is_err());
    }
}
