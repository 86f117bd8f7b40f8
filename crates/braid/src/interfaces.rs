//! Interface mode: one link per (local interface with a usable address × address of the
//! server), kept in step with the interfaces as they come and go.

use std::collections::BTreeSet;
use std::net::{IpAddr, SocketAddr};
use std::time::Duration;

use crate::Connection;
use crate::client::{ClientConfig, ConnectError, connect};
use crate::spec::{LinkSpec, TcpSpec};

/// A local address usable as a link's source, on the named interface.
///
/// ```
/// let a = braid::interfaces::LocalAddr { iface: "eth0".into(), ip: "192.0.2.7".parse().unwrap() };
/// assert_eq!(a.iface, "eth0");
/// ```
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub struct LocalAddr {
    /// Interface name.
    pub iface: String,
    /// Address on it.
    pub ip: IpAddr,
}

/// The local interface addresses now (loopback included; the pairing filters).
///
/// ```
/// let addrs = braid::interfaces::local_addrs();
/// assert!(addrs.iter().all(|a| !a.iface.is_empty()));
/// ```
pub fn local_addrs() -> Vec<LocalAddr> {
    if_addrs::get_if_addrs()
        .map(|v| {
            v.into_iter()
                .map(|i| LocalAddr {
                    iface: i.name.clone(),
                    ip: i.ip(),
                })
                .collect()
        })
        .unwrap_or_default()
}

fn usable(local: IpAddr, remote: IpAddr) -> bool {
    if local.is_ipv4() != remote.is_ipv4() || local.is_unspecified() {
        return false;
    }
    if local.is_loopback() != remote.is_loopback() {
        return false;
    }
    match local {
        // Link-local sources need a scope and rarely reach a server; skip them.
        IpAddr::V6(v6) => (v6.segments()[0] & 0xffc0) != 0xfe80,
        IpAddr::V4(v4) => !v4.is_link_local(),
    }
}

/// The link specs for `remotes` over `locals`: one per usable (local address, remote
/// address) pair, each bound to its source address.
///
/// ```
/// use braid::interfaces::{link_specs, LocalAddr};
/// let locals = vec![
///     LocalAddr { iface: "eth0".into(), ip: "192.0.2.7".parse().unwrap() },
///     LocalAddr { iface: "wlan0".into(), ip: "198.51.100.9".parse().unwrap() },
///     LocalAddr { iface: "lo".into(), ip: "127.0.0.1".parse().unwrap() },
/// ];
/// let specs = link_specs(&locals, &["203.0.113.1:7700".parse().unwrap()]);
/// assert_eq!(specs.len(), 2);
/// assert_eq!(specs[0].to_string(), "tcp://203.0.113.1:7700?bind=192.0.2.7");
/// ```
pub fn link_specs(locals: &[LocalAddr], remotes: &[SocketAddr]) -> Vec<LinkSpec> {
    let mut out = BTreeSet::new();
    for r in remotes {
        for l in locals.iter().filter(|l| usable(l.ip, r.ip())) {
            let mut t = TcpSpec::new(r.ip().to_string(), r.port());
            t.bind = Some(l.ip);
            out.insert(LinkSpec::Tcp(t).to_string());
        }
    }
    out.into_iter().filter_map(|s| s.parse().ok()).collect()
}

/// Connects to `host:port` over every usable local interface, and keeps doing so: every
/// `rescan`, a new or returning interface address gets a link and a vanished one's links are
/// removed.
///
/// # Errors
/// [`ConnectError::NoSpecs`] when no interface can reach the host, or the error of
/// [`connect`].
///
/// ```no_run
/// # #[tokio::main] async fn main() -> Result<(), Box<dyn std::error::Error>> {
/// let key = braid::secure::Key::generate();
/// let conn = braid::interfaces::connect_interfaces(
///     "server.example", 7700, braid::client::ClientConfig::new(key), std::time::Duration::from_secs(2),
/// ).await?;
/// # drop(conn); Ok(()) }
/// ```
pub async fn connect_interfaces(
    host: &str,
    port: u16,
    config: ClientConfig,
    rescan: Duration,
) -> Result<Connection, ConnectError> {
    let remotes: Vec<SocketAddr> = tokio::net::lookup_host((host, port))
        .await
        .map_err(ConnectError::Accept)?
        .collect();
    let specs = link_specs(&local_addrs(), &remotes);
    tracing::info!("interface mode: {} link(s) to {host}:{port}", specs.len());
    let conn = connect(&specs, config).await?;
    let handle = conn.handle();
    let mut current: BTreeSet<String> = specs.iter().map(|s| s.to_string()).collect();
    let host = host.to_string();
    tokio::spawn(async move {
        let mut tick = tokio::time::interval(rescan);
        loop {
            tick.tick().await;
            if handle.0.is_over() {
                return;
            }
            let remotes: Vec<SocketAddr> =
                match tokio::net::lookup_host((host.as_str(), port)).await {
                    Ok(r) => r.collect(),
                    Err(_) => continue,
                };
            let now: BTreeSet<String> = link_specs(&local_addrs(), &remotes)
                .iter()
                .map(|s| s.to_string())
                .collect();
            for gone in current.difference(&now) {
                tracing::info!("interface address gone: dropping {gone}");
                if let Ok(spec) = gone.parse() {
                    handle.remove_spec(&spec);
                }
            }
            for new in now.difference(&current) {
                tracing::info!("new interface address: adding {new}");
                if let Ok(spec) = new.parse() {
                    let _ = handle.add_link(spec);
                }
            }
            current = now;
        }
    });
    Ok(conn)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pairs_families_and_skips_link_local_and_loopback() {
        let locals = vec![
            LocalAddr {
                iface: "eth0".into(),
                ip: "192.0.2.7".parse().unwrap(),
            },
            LocalAddr {
                iface: "eth0".into(),
                ip: "fe80::1".parse().unwrap(),
            },
            LocalAddr {
                iface: "eth0".into(),
                ip: "2001:db8::7".parse().unwrap(),
            },
            LocalAddr {
                iface: "lo".into(),
                ip: "127.0.0.1".parse().unwrap(),
            },
        ];
        let remotes = [
            "203.0.113.1:7700".parse().unwrap(),
            "[2001:db8::1]:7700".parse().unwrap(),
        ];
        let specs: Vec<String> = link_specs(&locals, &remotes)
            .iter()
            .map(|s| s.to_string())
            .collect();
        assert_eq!(
            specs,
            vec![
                "tcp://203.0.113.1:7700?bind=192.0.2.7".to_string(),
                "tcp://[2001:db8::1]:7700?bind=2001:db8::7".to_string(),
            ]
        );
        let lo = link_specs(&locals, &["127.0.0.1:7700".parse().unwrap()]);
        assert_eq!(lo.len(), 1);
    }
}
