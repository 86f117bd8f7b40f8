//! Two connections wired back to back in virtual time, driven by [`Op`]s: the harness of the
//! property tests and of the `mux_session` fuzz target. Data written is a pattern the reader
//! checks, and invariants are checked after each step.

use std::time::Duration;

use bytes::BytesMut;

use super::{Chunks, Config, Connection, Side, StreamError, StreamId};
use crate::Time;

/// One step of a scenario. `stream` indexes the side's open handles (modulo their count).
#[derive(Clone, Debug)]
#[cfg_attr(feature = "arbitrary", derive(arbitrary::Arbitrary))]
#[allow(missing_docs)]
pub enum Op {
    Open {
        client: bool,
    },
    Accept {
        client: bool,
    },
    Write {
        client: bool,
        stream: u8,
        len: u16,
    },
    Read {
        client: bool,
        stream: u8,
        len: u16,
    },
    Finish {
        client: bool,
        stream: u8,
    },
    Reset {
        client: bool,
        stream: u8,
    },
    Release {
        client: bool,
        stream: u8,
    },
    Ping {
        client: bool,
    },
    GoAway {
        client: bool,
    },
    /// Moves up to `max` wire bytes towards one side (0: everything).
    Deliver {
        to_client: bool,
        max: u16,
    },
    Advance {
        ms: u16,
    },
    /// Injects raw bytes towards one side (likely a protocol error).
    Garbage {
        to_client: bool,
        bytes: [u8; 12],
    },
}

#[derive(Debug, Default)]
struct Handle {
    id: StreamId,
    written: u64,
    read: u64,
}

#[derive(Debug)]
struct End {
    conn: Connection,
    handles: Vec<Handle>,
    /// Bytes in flight towards this end.
    inbox: BytesMut,
}

/// A client and a server connected by two in-memory pipes.
#[derive(Debug)]
pub struct Pair {
    now: Time,
    client: End,
    server: End,
    /// Set when garbage was injected: the byte pattern may legitimately break.
    tainted: bool,
}

fn pattern(id: StreamId, offset: u64) -> u8 {
    (offset.wrapping_mul(31) ^ u64::from(id)) as u8
}

impl Pair {
    /// A fresh pair with this configuration on both ends.
    pub fn new(config: Config) -> Self {
        let now = Time::ZERO;
        let end = |side| End {
            conn: Connection::new(side, config.clone(), now),
            handles: Vec::new(),
            inbox: BytesMut::new(),
        };
        Pair {
            now,
            client: end(Side::Client),
            server: end(Side::Server),
            tainted: false,
        }
    }

    fn end(&mut self, client: bool) -> &mut End {
        if client {
            &mut self.client
        } else {
            &mut self.server
        }
    }

    /// Applies one step, then checks invariants. Panics on a violated invariant.
    pub fn apply(&mut self, op: Op) {
        let now = self.now;
        match op {
            Op::Open { client } => {
                let e = self.end(client);
                if let Ok(id) = e.conn.open() {
                    e.handles.push(Handle {
                        id,
                        ..Handle::default()
                    });
                }
            }
            Op::Accept { client } => {
                let e = self.end(client);
                if let Some(id) = e.conn.accept() {
                    e.handles.push(Handle {
                        id,
                        ..Handle::default()
                    });
                }
            }
            Op::Write {
                client,
                stream,
                len,
            } => {
                let e = self.end(client);
                if let Some(h) = pick(&mut e.handles, stream) {
                    let data: Vec<u8> = (0..u64::from(len))
                        .map(|i| pattern(h.id, h.written + i))
                        .collect();
                    if let Ok(n) = e.conn.write(h.id, &data) {
                        assert!(n <= data.len());
                        h.written += n as u64;
                    }
                }
            }
            Op::Read {
                client,
                stream,
                len,
            } => {
                let tainted = self.tainted;
                let e = self.end(client);
                if let Some(h) = pick(&mut e.handles, stream) {
                    let mut buf = vec![0u8; usize::from(len)];
                    match e.conn.read(now, h.id, &mut buf) {
                        Ok(n) => {
                            if !tainted {
                                for (i, &b) in buf[..n].iter().enumerate() {
                                    assert_eq!(
                                        b,
                                        pattern(h.id, h.read + i as u64),
                                        "stream {}",
                                        h.id
                                    );
                                }
                            }
                            h.read += n as u64;
                        }
                        Err(StreamError::Unknown) => panic!("held stream {} is unknown", h.id),
                        Err(_) => {}
                    }
                }
            }
            Op::Finish { client, stream } => {
                let e = self.end(client);
                if let Some(h) = pick(&mut e.handles, stream) {
                    let _ = e.conn.finish(h.id);
                }
            }
            Op::Reset { client, stream } => {
                let e = self.end(client);
                if let Some(h) = pick(&mut e.handles, stream) {
                    let _ = e.conn.reset(h.id);
                }
            }
            Op::Release { client, stream } => {
                let e = self.end(client);
                if !e.handles.is_empty() {
                    let i = usize::from(stream) % e.handles.len();
                    let h = e.handles.swap_remove(i);
                    e.conn.release(h.id);
                }
            }
            Op::Ping { client } => {
                let _ = self.end(client).conn.ping(now);
            }
            Op::GoAway { client } => self.end(client).conn.go_away(),
            Op::Deliver { to_client, max } => self.deliver(to_client, usize::from(max)),
            Op::Advance { ms } => {
                self.now += Duration::from_millis(u64::from(ms));
                let now = self.now;
                for e in [&mut self.client, &mut self.server] {
                    if e.conn.poll_timeout().is_some_and(|t| t <= now) {
                        e.conn.handle_timeout(now);
                    }
                }
            }
            Op::Garbage { to_client, bytes } => {
                self.tainted = true;
                self.end(to_client).inbox.extend_from_slice(&bytes);
            }
        }
        self.check();
    }

    fn deliver(&mut self, to_client: bool, max: usize) {
        let now = self.now;
        let (from, to) = if to_client {
            (&mut self.server, &mut self.client)
        } else {
            (&mut self.client, &mut self.server)
        };
        // One direction gathers chunks (vectored writes), the other a flat buffer.
        if to_client {
            let mut out = Chunks::default();
            from.conn.poll_transmit(now, &mut out, 256 * 1024);
            out.finish();
            for c in out.chunks() {
                to.inbox.extend_from_slice(c);
            }
        } else {
            let mut out = BytesMut::new();
            from.conn.poll_transmit(now, &mut out, 256 * 1024);
            to.inbox.extend_from_slice(&out);
        }
        let n = if max == 0 {
            to.inbox.len()
        } else {
            max.min(to.inbox.len())
        };
        let mut chunk = to.inbox.split_to(n);
        let _ = to.conn.handle_input(now, &mut chunk);
        // A partial frame stays unconsumed in `chunk`: put it back in front.
        if !chunk.is_empty() && to.conn.error().is_none() {
            chunk.extend_from_slice(&to.inbox);
            to.inbox = chunk;
        }
        while to.conn.poll_event().is_some() {}
        while from.conn.poll_event().is_some() {}
    }

    /// Delivers everything both ways until quiet (bounded).
    pub fn settle(&mut self) {
        for _ in 0..64 {
            self.deliver(false, 0);
            self.deliver(true, 0);
            if self.client.inbox.is_empty() && self.server.inbox.is_empty() {
                let mut probe = BytesMut::new();
                let a = self
                    .client
                    .conn
                    .poll_transmit(self.now, &mut probe, 1 << 30);
                self.server.inbox.extend_from_slice(&probe);
                probe.clear();
                let b = self
                    .server
                    .conn
                    .poll_transmit(self.now, &mut probe, 1 << 30);
                self.client.inbox.extend_from_slice(&probe);
                if a == 0 && b == 0 {
                    break;
                }
            }
        }
        self.check();
    }

    fn check(&self) {
        self.client.conn.check_invariants();
        self.server.conn.check_invariants();
        for e in [&self.client, &self.server] {
            for h in &e.handles {
                if e.conn.error().is_none() {
                    assert!(
                        e.conn.stream_state(h.id).is_some(),
                        "held stream {} forgotten",
                        h.id
                    );
                }
            }
        }
    }

    /// The client connection.
    pub fn client(&self) -> &Connection {
        &self.client.conn
    }

    /// The server connection.
    pub fn server(&self) -> &Connection {
        &self.server.conn
    }
}

fn pick(handles: &mut [Handle], i: u8) -> Option<&mut Handle> {
    if handles.is_empty() {
        return None;
    }
    let n = handles.len();
    handles.get_mut(usize::from(i) % n)
}
