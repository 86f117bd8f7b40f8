//! Link and listener specs: the URL-like strings users give on the command line.
//!
//! | spec | link |
//! | --- | --- |
//! | `tcp://HOST:PORT?bind=IP&dev=IFACE&count=N&recycle=BYTES&cc=NAME` | TCP socket(s) |
//! | `HOST:PORT` | same as `tcp://HOST:PORT` |
//! | `unix:PATH` | a Unix stream socket |
//! | `exec:COMMAND ARGS` | the command's stdin/stdout (run by `sh -c`) |
//!
//! Option values are percent-encoded like a URL's query: `%26` is a `&`, `%25` a `%`, `%20` a
//! space. `Display` writes a spec so that `FromStr` reads back the same one.
//!
//! ```
//! use braid::spec::LinkSpec;
//! let spec: LinkSpec = "tcp://127.0.0.1:7700?count=4&cc=cubic".parse().unwrap();
//! match &spec {
//!     LinkSpec::Tcp(tcp) => {
//!         assert_eq!(tcp.count, 4);
//!         assert_eq!(tcp.cc.as_deref(), Some("cubic"));
//!     }
//!     _ => unreachable!(),
//! }
//! assert_eq!(spec.to_string(), "tcp://127.0.0.1:7700?count=4&cc=cubic");
//! ```

use std::fmt;
use std::net::{IpAddr, SocketAddr};
use std::path::PathBuf;
use std::str::FromStr;

/// Why a spec does not parse.
///
/// ```
/// let e = "udp://x:1".parse::<braid::spec::LinkSpec>().unwrap_err();
/// assert!(matches!(e, braid::spec::SpecError::UnknownKind(_)));
/// ```
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum SpecError {
    /// The scheme is none of `tcp://`, `unix:`, `exec:`.
    #[error("unknown link kind in {0:?} (expected tcp://HOST:PORT, unix:PATH or exec:COMMAND)")]
    UnknownKind(String),
    /// `HOST:PORT` is malformed.
    #[error("bad address {0:?} (expected HOST:PORT, IPv6 in brackets)")]
    BadAddress(String),
    /// An option is unknown or its value malformed (or empty).
    #[error("bad option {0:?}: {1}")]
    BadOption(String, &'static str),
    /// `unix:` or `exec:` without a path or command.
    #[error("empty {0} in spec")]
    Empty(&'static str),
}

/// A TCP link spec: where to connect and how to set up each socket.
///
/// ```
/// let mut t = braid::spec::TcpSpec::new("server", 7700);
/// t.count = 4;
/// assert_eq!(braid::spec::LinkSpec::Tcp(t).to_string(), "tcp://server:7700?count=4");
/// ```
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct TcpSpec {
    /// Host name or IP literal (without brackets).
    pub host: String,
    /// Port.
    pub port: u16,
    /// Source address to bind before connecting (`bind=IP`).
    pub bind: Option<IpAddr>,
    /// Interface to pin the socket to with `SO_BINDTODEVICE` (`dev=IFACE`).
    pub dev: Option<String>,
    /// Parallel sockets on this path (`count=N`, default 1).
    pub count: u32,
    /// Close and redial the socket after this many bytes sent (`recycle=BYTES`).
    pub recycle: Option<u64>,
    /// TCP congestion control algorithm (`cc=NAME`, Linux).
    pub cc: Option<String>,
}

impl TcpSpec {
    /// A spec for `host:port` with default options.
    ///
    /// ```
    /// let t = braid::spec::TcpSpec::new("localhost", 7700);
    /// assert_eq!(t.count, 1);
    /// ```
    pub fn new(host: impl Into<String>, port: u16) -> Self {
        TcpSpec {
            host: host.into(),
            port,
            bind: None,
            dev: None,
            count: 1,
            recycle: None,
            cc: None,
        }
    }
}

/// Where a link goes.
///
/// ```
/// let s: braid::spec::LinkSpec = "exec:ssh host nc 127.0.0.1 7700".parse().unwrap();
/// assert!(matches!(s, braid::spec::LinkSpec::Exec(_)));
/// ```
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum LinkSpec {
    /// `tcp://HOST:PORT?...`
    Tcp(TcpSpec),
    /// `unix:PATH`
    Unix(PathBuf),
    /// `exec:COMMAND ARGS`: the command line, run by `sh -c`.
    Exec(String),
}

impl LinkSpec {
    /// How many parallel links this spec stands for (`count=N` for TCP, else 1).
    ///
    /// ```
    /// let s: braid::spec::LinkSpec = "unix:/tmp/x".parse().unwrap();
    /// assert_eq!(s.count(), 1);
    /// ```
    pub fn count(&self) -> u32 {
        match self {
            LinkSpec::Tcp(t) => t.count,
            _ => 1,
        }
    }

    /// Bytes after which a link of this spec is replaced by a fresh one (`recycle=`).
    ///
    /// ```
    /// let s: braid::spec::LinkSpec = "tcp://h:1?recycle=1MiB".parse().unwrap();
    /// assert_eq!(s.recycle(), Some(1 << 20));
    /// ```
    pub fn recycle(&self) -> Option<u64> {
        match self {
            LinkSpec::Tcp(t) => t.recycle,
            _ => None,
        }
    }
}

/// Parses `HOST:PORT` (IPv6 in brackets) into host and port.
fn parse_host_port(s: &str) -> Result<(String, u16), SpecError> {
    let bad = || SpecError::BadAddress(s.to_string());
    let (host, port) = if let Some(rest) = s.strip_prefix('[') {
        let (h, p) = rest.split_once("]:").ok_or_else(bad)?;
        (h, p)
    } else {
        let (h, p) = s.rsplit_once(':').ok_or_else(bad)?;
        if h.contains(':') {
            return Err(bad());
        }
        (h, p)
    };
    if host.is_empty() {
        return Err(bad());
    }
    let port = port.parse().map_err(|_| bad())?;
    Ok((host.to_string(), port))
}

/// Parses a byte count with an optional unit: `4096`, `64K`, `64KiB`, `4M`, `4MiB`, `1G`, `1GiB`.
///
/// ```
/// assert_eq!(braid::spec::parse_bytes("4MiB"), Some(4 << 20));
/// assert_eq!(braid::spec::parse_bytes("100"), Some(100));
/// assert_eq!(braid::spec::parse_bytes("x"), None);
/// ```
pub fn parse_bytes(s: &str) -> Option<u64> {
    let s = s.trim();
    let split = s.find(|c: char| !c.is_ascii_digit()).unwrap_or(s.len());
    let (num, unit) = s.split_at(split);
    let n: u64 = num.parse().ok()?;
    let mult: u64 = match unit.trim() {
        "" | "B" => 1,
        "K" | "k" | "KiB" | "KB" => 1 << 10,
        "M" | "MiB" | "MB" => 1 << 20,
        "G" | "GiB" | "GB" => 1 << 30,
        _ => return None,
    };
    n.checked_mul(mult)
}

impl FromStr for LinkSpec {
    type Err = SpecError;

    fn from_str(s: &str) -> Result<Self, SpecError> {
        if let Some(path) = s.strip_prefix("unix:") {
            if path.is_empty() {
                return Err(SpecError::Empty("path"));
            }
            return Ok(LinkSpec::Unix(PathBuf::from(path)));
        }
        if let Some(cmd) = s.strip_prefix("exec:") {
            if cmd.trim().is_empty() {
                return Err(SpecError::Empty("command"));
            }
            return Ok(LinkSpec::Exec(cmd.trim().to_string()));
        }
        let rest = match s.strip_prefix("tcp://") {
            Some(r) => r,
            None if !s.contains("://") => s,
            None => return Err(SpecError::UnknownKind(s.to_string())),
        };
        let (addr, query) = match rest.split_once('?') {
            Some((a, q)) => (a, Some(q)),
            None => (rest, None),
        };
        let (host, port) = parse_host_port(addr)?;
        let mut t = TcpSpec::new(host, port);
        for kv in query
            .into_iter()
            .flat_map(|q| q.split('&'))
            .filter(|kv| !kv.is_empty())
        {
            let (k, v) = kv
                .split_once('=')
                .ok_or(SpecError::BadOption(kv.to_string(), "expected KEY=VALUE"))?;
            let bad = |why| SpecError::BadOption(kv.to_string(), why);
            // Decoded when a known option takes it: an unknown key is reported as such.
            let v = match v {
                "" => Err(bad("empty value")),
                v => percent_decode(v).map_err(bad),
            };
            match k {
                "bind" => t.bind = Some(v?.parse().map_err(|_| bad("not an IP address"))?),
                "dev" => t.dev = Some(v?),
                "count" => {
                    t.count = v?
                        .parse()
                        .ok()
                        .filter(|n| (1..=64).contains(n))
                        .ok_or(bad("expected 1..=64"))?
                }
                "recycle" => {
                    t.recycle = Some(
                        parse_bytes(&v?)
                            .filter(|&n| n >= 64 * 1024)
                            .ok_or(bad("expected a byte count of at least 64KiB"))?,
                    )
                }
                "cc" => t.cc = Some(v?),
                _ => return Err(bad("unknown option (bind, dev, count, recycle, cc)")),
            }
        }
        Ok(LinkSpec::Tcp(t))
    }
}

/// Decodes an option value's `%XX` escapes.
fn percent_decode(v: &str) -> Result<String, &'static str> {
    let mut out = Vec::with_capacity(v.len());
    let mut bytes = v.bytes();
    while let Some(b) = bytes.next() {
        if b != b'%' {
            out.push(b);
            continue;
        }
        let hex = [bytes.next(), bytes.next()];
        let digit = |d: Option<u8>| (d? as char).to_digit(16);
        match hex.map(digit) {
            [Some(hi), Some(lo)] => out.push((hi * 16 + lo) as u8),
            _ => return Err("a % must start an escape like %26"),
        }
    }
    String::from_utf8(out).map_err(|_| "escapes do not decode to UTF-8")
}

/// An option value with `%`, `&`, and what is not printable ASCII (spaces included) escaped.
fn percent_encode(v: &str) -> String {
    let mut out = String::with_capacity(v.len());
    for b in v.bytes() {
        if b.is_ascii_graphic() && b != b'%' && b != b'&' {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

fn fmt_host(f: &mut fmt::Formatter<'_>, host: &str, port: u16) -> fmt::Result {
    if host.contains(':') {
        write!(f, "[{host}]:{port}")
    } else {
        write!(f, "{host}:{port}")
    }
}

impl fmt::Display for LinkSpec {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            LinkSpec::Unix(p) => write!(f, "unix:{}", p.display()),
            LinkSpec::Exec(c) => write!(f, "exec:{c}"),
            LinkSpec::Tcp(t) => {
                f.write_str("tcp://")?;
                fmt_host(f, &t.host, t.port)?;
                let mut opts = Vec::new();
                if let Some(b) = t.bind {
                    opts.push(format!("bind={b}"));
                }
                if let Some(d) = &t.dev {
                    opts.push(format!("dev={}", percent_encode(d)));
                }
                if t.count != 1 {
                    opts.push(format!("count={}", t.count));
                }
                if let Some(r) = t.recycle {
                    opts.push(format!("recycle={r}"));
                }
                if let Some(c) = &t.cc {
                    opts.push(format!("cc={}", percent_encode(c)));
                }
                if !opts.is_empty() {
                    write!(f, "?{}", opts.join("&"))?;
                }
                Ok(())
            }
        }
    }
}

/// A TCP destination, `HOST:PORT` (IPv6 in brackets): what `braid serve --forward` connects
/// each forwarded stream to. Only the syntax is checked; the name is resolved on each connect.
///
/// ```
/// use braid::spec::HostPort;
/// let t: HostPort = "[::1]:22".parse().unwrap();
/// assert_eq!((t.host.as_str(), t.port), ("::1", 22));
/// assert_eq!(t.to_string(), "[::1]:22");
/// assert!("localhost".parse::<HostPort>().is_err());
/// assert!("localhost:0".parse::<HostPort>().is_err());
/// ```
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct HostPort {
    /// Host name or IP literal (without brackets).
    pub host: String,
    /// Port, never 0.
    pub port: u16,
}

impl FromStr for HostPort {
    type Err = SpecError;

    fn from_str(s: &str) -> Result<Self, SpecError> {
        match parse_host_port(s)? {
            (_, 0) => Err(SpecError::BadAddress(s.to_string())),
            (host, port) => Ok(HostPort { host, port }),
        }
    }
}

impl fmt::Display for HostPort {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt_host(f, &self.host, self.port)
    }
}

/// Where a server (or `braid connect --listen`) accepts links.
///
/// ```
/// use braid::spec::ListenSpec;
/// let l: ListenSpec = "tcp://127.0.0.1:7700".parse().unwrap();
/// assert_eq!(l, ListenSpec::Tcp("127.0.0.1:7700".parse().unwrap()));
/// let u: ListenSpec = "unix:/tmp/braid.sock".parse().unwrap();
/// assert!(matches!(u, ListenSpec::Unix(_)));
/// ```
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum ListenSpec {
    /// `tcp://IP:PORT` or `IP:PORT` (port 0 picks a free port).
    Tcp(SocketAddr),
    /// `unix:PATH`
    Unix(PathBuf),
}

impl FromStr for ListenSpec {
    type Err = SpecError;

    fn from_str(s: &str) -> Result<Self, SpecError> {
        if let Some(path) = s.strip_prefix("unix:") {
            if path.is_empty() {
                return Err(SpecError::Empty("path"));
            }
            return Ok(ListenSpec::Unix(PathBuf::from(path)));
        }
        let addr = s.strip_prefix("tcp://").unwrap_or(s);
        if addr.contains("://") {
            return Err(SpecError::UnknownKind(s.to_string()));
        }
        addr.parse()
            .map(ListenSpec::Tcp)
            .map_err(|_| SpecError::BadAddress(s.to_string()))
    }
}

impl fmt::Display for ListenSpec {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ListenSpec::Tcp(a) => write!(f, "tcp://{a}"),
            ListenSpec::Unix(p) => write!(f, "unix:{}", p.display()),
        }
    }
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::*;

    #[test]
    fn tcp_with_all_options_round_trips() {
        let s = "tcp://[::1]:7700?bind=::1&dev=eth0&count=3&recycle=65536&cc=cubic";
        let spec: LinkSpec = s.parse().unwrap();
        let LinkSpec::Tcp(t) = &spec else { panic!() };
        assert_eq!(t.host, "::1");
        assert_eq!(t.port, 7700);
        assert_eq!(t.dev.as_deref(), Some("eth0"));
        assert_eq!(t.count, 3);
        assert_eq!(t.recycle, Some(65536));
        assert_eq!(spec.to_string(), s);
        assert_eq!(spec.to_string().parse::<LinkSpec>().unwrap(), spec);
    }

    #[test]
    fn bare_host_port_is_tcp() {
        let spec: LinkSpec = "example.org:22".parse().unwrap();
        assert_eq!(spec, LinkSpec::Tcp(TcpSpec::new("example.org", 22)));
    }

    #[test]
    fn unix_and_exec() {
        assert_eq!(
            "unix:/run/b.sock".parse::<LinkSpec>().unwrap(),
            LinkSpec::Unix("/run/b.sock".into())
        );
        assert_eq!(
            "exec:ssh host nc 127.0.0.1 7700"
                .parse::<LinkSpec>()
                .unwrap(),
            LinkSpec::Exec("ssh host nc 127.0.0.1 7700".into())
        );
    }

    #[test]
    fn bad_specs_are_errors() {
        for s in [
            "udp://h:1",
            "tcp://h",
            "tcp://h:99999",
            "tcp://h:1?count=0",
            "tcp://h:1?nope=1",
            "tcp://h:1?bind=notanip",
            "tcp://h:1?recycle=12",
            "unix:",
            "exec: ",
            "tcp://:1",
            "tcp://a:b:1",
            "nothing",
        ] {
            assert!(s.parse::<LinkSpec>().is_err(), "{s} should not parse");
        }
    }

    /// Empty values used to be reported as unknown options (`dev=`, `cc=`).
    #[test]
    fn an_empty_option_value_is_named_as_such() {
        for s in [
            "tcp://h:1?dev=",
            "tcp://h:1?cc=",
            "tcp://h:1?bind=",
            "h:1?count=",
        ] {
            let e = s.parse::<LinkSpec>().unwrap_err();
            assert!(
                matches!(&e, SpecError::BadOption(_, why) if *why == "empty value"),
                "{s}: {e}"
            );
        }
    }

    #[test]
    fn bad_escapes_are_errors() {
        for s in ["h:1?dev=%", "h:1?dev=a%2", "h:1?dev=%zz", "h:1?cc=%ff"] {
            assert!(
                matches!(s.parse::<LinkSpec>(), Err(SpecError::BadOption(..))),
                "{s} should not parse"
            );
        }
        let spec: LinkSpec = "h:1?dev=a%26b%20c".parse().unwrap();
        let LinkSpec::Tcp(t) = spec else { panic!() };
        assert_eq!(t.dev.as_deref(), Some("a&b c"));
    }

    /// Values with `&`, `=`, `%` or spaces used to print as specs that did not parse back.
    #[test]
    fn values_with_separators_round_trip() {
        for v in [
            "a&b", "a=b", "a b", "100%", "%26", "é", "a?b#c", "=&=", "\t",
        ] {
            let mut t = TcpSpec::new("h", 1);
            t.dev = Some(v.to_string());
            t.cc = Some(format!("{v}{v}"));
            let spec = LinkSpec::Tcp(t);
            let text = spec.to_string();
            assert_eq!(
                text.parse::<LinkSpec>(),
                Ok(spec),
                "{v:?} printed as {text}"
            );
        }
        for c in ["a & b", "x=1 && y", "echo '?dev=&'"] {
            let spec = LinkSpec::Exec(c.to_string());
            assert_eq!(spec.to_string().parse::<LinkSpec>(), Ok(spec));
        }
    }

    fn tcp_spec() -> impl Strategy<Value = LinkSpec> {
        let host = prop_oneof![
            "[a-z0-9.&=%_-]{1,20}",
            any::<std::net::Ipv6Addr>().prop_map(|a| a.to_string()),
        ];
        let value = "\\PC{1,12}";
        (
            host,
            any::<u16>(),
            proptest::option::of(any::<IpAddr>()),
            proptest::option::of(value),
            1..=64u32,
            proptest::option::of(64u64 * 1024..u64::MAX),
            proptest::option::of(value),
        )
            .prop_map(|(host, port, bind, dev, count, recycle, cc)| {
                let mut t = TcpSpec::new(host, port);
                (t.bind, t.dev, t.count, t.recycle, t.cc) = (bind, dev, count, recycle, cc);
                LinkSpec::Tcp(t)
            })
    }

    fn link_spec() -> impl Strategy<Value = LinkSpec> {
        prop_oneof![
            tcp_spec(),
            "[^\\x00]{1,30}".prop_map(|p| LinkSpec::Unix(p.into())),
            "\\S\\PC{0,30}\\S".prop_map(LinkSpec::Exec),
        ]
    }

    proptest::proptest! {
        /// Whatever `Display` prints, `FromStr` reads back as the same spec.
        #[test]
        fn display_round_trips_through_from_str(spec in link_spec()) {
            let text = spec.to_string();
            proptest::prop_assert_eq!(text.parse::<LinkSpec>(), Ok(spec), "{}", text);
        }
    }

    #[test]
    fn forward_targets() {
        for s in [
            "h",
            "h:",
            ":1",
            "h:0",
            "h:65536",
            "::1:22",
            "[::1]",
            "h:1?dev=x",
            "a b",
        ] {
            assert!(s.parse::<HostPort>().is_err(), "{s} should not parse");
        }
        for s in ["example.org:22", "127.0.0.1:1", "[::1]:65535"] {
            assert_eq!(s.parse::<HostPort>().unwrap().to_string(), s);
        }
    }

    #[test]
    fn listen_specs() {
        assert!("0.0.0.0:0".parse::<ListenSpec>().is_ok());
        assert!("tcp://[::1]:7700".parse::<ListenSpec>().is_ok());
        assert!("tcp://host:7700".parse::<ListenSpec>().is_err());
    }
}
